"""Mass-send benchmark: accept and drain one campaign of N recipients through relay.

    .venv/bin/python bench/bulk_campaign.py --recipients 100000      # and 10000, to compare

An application sends one newsletter to N recipients in transactions of 1,000 recipients
(`server.max_recipients`), over 4 parallel sessions. relay classifies it bulk after 100
recipients, injects its RFC 8058 one-click headers, so every recipient gets its own
DKIM-signed copy, and delivers at a high `limits.bulk.rate` to `smtp-sink` (counting).
Reports the time to accept, the time until the last copy is counted at the sink, and the
peak RSS (VmHWM) of the listener and delivery processes: memory must stay flat in N, since
no per-recipient object is kept beyond what is being accepted or delivered.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from loadgen import free_port, make_message, start_sink, stop_relay, wait_banner  # noqa: E402

from relay.signing import dkim  # noqa: E402

DOMAIN = "bench.example"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def send(port: int, body: bytes, batches: list[range], errors: list) -> None:
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=300) as client:
            client.ehlo("app.bench")
            for batch in batches:
                refused = client.sendmail(f"news@{DOMAIN}", [f"r{i}@sink.example" for i in batch], body)
                if refused:
                    errors.append(refused)
    except Exception as exc:            # noqa: BLE001 - reported, not hidden
        errors.append(repr(exc))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipients", type=int, default=100_000)
    ap.add_argument("--per-transaction", type=int, default=1000)
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--size", type=int, default=10240)
    ap.add_argument("--rate", default="10000000/h",
                    help="limits.bulk.rate; a rate under what relay can deliver makes the "
                         "governor pace the campaign (then see delivery_cpu_s)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (relay.log)")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="relay-bulk-"))
    key = work / "dkim.pem"
    key.write_bytes(dkim.generate_key())
    sink_port, relay_port = free_port(), free_port()
    sink = start_sink(sink_port, workdir=work / "sink")
    (work / "relay.yaml").write_text(f"""
server:
  hostname: relay.bench
  listeners: [{{name: local, address: 127.0.0.1, port: {relay_port}, tls: none}}]
  max_recipients: {args.per_transaction}
dns: {{nameservers: ["127.0.0.1:9"], timeout: 1s}}
spool: {{path: {work / 'spool'}}}
http: {{address: 127.0.0.1, port: 0}}
feedback: {{unsubscribe: {{base_url: "https://relay.bench/unsubscribe", secret_env: RELAY_UNSUB_SECRET}}}}
limits: {{bulk: {{recipients_threshold: 100, window: 24h, rate: {args.rate}, unsubscribe: inject}}}}
users: [{{username: app, networks: [127.0.0.0/8], senders: [{DOMAIN}]}}]
domains: {{{DOMAIN}: {{route: sink, dkim: [{{selector: b1, private_key: {key}}}]}}}}
routes: {{sink: {{host: 127.0.0.1, port: {sink_port}, tls: none, max_connections: 8}}}}
""")
    env = dict(os.environ, RELAY_UNSUB_SECRET="bench-secret-of-at-least-16-bytes")
    relay = Path(sys.executable).parent / "relay"
    with open(work / "relay.log", "wb") as log:
        proc = subprocess.Popen([str(relay), "serve", "-c", str(work / "relay.yaml")], stdout=log,
                                stderr=log, env=env, start_new_session=True)
    try:
        wait_banner(relay_port, 20, proc=proc)
        delivery_pid = children(proc.pid)[0]
        body = make_message(args.size, sender=f"news@{DOMAIN}", recipient="list@sink.example",
                            subject="Our November newsletter").replace(b"\n", b"\r\n")
        batches = [range(i, min(i + args.per_transaction, args.recipients))
                   for i in range(0, args.recipients, args.per_transaction)]
        errors: list = []
        start_count = sink.count()
        t0 = time.monotonic()
        threads = [threading.Thread(target=send, args=(relay_port, body, batches[k::args.sessions], errors))
                   for k in range(args.sessions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        accepted = time.monotonic() - t0
        if errors:
            raise SystemExit(f"refusals: {errors[:3]}")
        sink.wait_count(start_count + args.recipients, deadline_s=3600)
        drained = time.monotonic() - t0
        result = {"recipients": args.recipients, "size": args.size,
                  "accept_s": round(accepted, 1), "drain_s": round(drained, 1),
                  "copies_per_s": round(args.recipients / drained, 1),
                  "peak_rss_listener_mib": round(peak_rss_mib(proc.pid), 1),
                  "peak_rss_delivery_mib": round(peak_rss_mib(delivery_pid), 1),
                  "rate": args.rate, "delivery_cpu_s": round(cpu_seconds(delivery_pid), 1)}
        print(json.dumps(result))
    finally:
        stop_relay(proc)
        sink.stop()
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
