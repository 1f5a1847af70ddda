"""How exactly the bulk pace holds when messages carry many recipients each (issue 11).

    .venv/bin/python bench/recipient_pace.py --messages 12 --recipients 1000 --rate 6000/min

An application sends `--messages` bulk messages of `--recipients` recipients each (one
transaction per message, `unsubscribe: off`, so each message stays one message) to a relay
whose `limits.bulk.rate` is `--rate`. The governor grants recipients, not messages: each
message leaves in transactions that fit the window. A recording SMTP sink (aiosmtpd, in this
process) notes when each transaction arrives and how many recipients it carries. Reported:
recipients per whole minute since the first transaction (min, median, max over the full minutes),
the most recipients in any sliding window of the rate's period (must not exceed the rate),
the transactions' sizes and the time to drain.
"""
from __future__ import annotations

import argparse
import json
import shutil
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from bisect import bisect_right
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from aiosmtpd.controller import Controller  # noqa: E402
from loadgen import free_port, make_message, stop_relay, wait_banner  # noqa: E402

from relay.signing import dkim  # noqa: E402
from relay.units import parse_rate  # noqa: E402

DOMAIN = "bench.example"


class Recorder:
    """An SMTP sink that notes (time of MAIL FROM, recipients) of every transaction: MAIL is
    when relay hands the granted recipients to the route (a transaction of 1,000 RCPTs and
    its DATA take seconds, which would smear a window measured at the end)."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, int]] = []
        self.lock = threading.Lock()

    async def handle_MAIL(self, server, session, envelope, address, options):
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        envelope.started = time.monotonic()
        return "250 2.1.0 Ok"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.arrivals.append((envelope.started, len(envelope.rcpt_tos)))
        return "250 2.0.0 Ok"

    def total(self) -> int:
        with self.lock:
            return sum(n for _, n in self.arrivals)


def most_in_any_window(arrivals: list[tuple[float, int]], period: float) -> int:
    """The most recipients that arrived within any `period` seconds (windows start at an
    arrival: the maximum of a step function is reached at one of them)."""
    times = [t for t, _ in arrivals]
    counts = [n for _, n in arrivals]
    best = 0
    for i, start in enumerate(times):
        end = bisect_right(times, start + period - 1e-9)
        best = max(best, sum(counts[i:end]))
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=12)
    ap.add_argument("--recipients", type=int, default=1000, help="recipients per message")
    ap.add_argument("--rate", default="6000/min", help="limits.bulk.rate")
    ap.add_argument("--size", type=int, default=10240)
    args = ap.parse_args(argv)
    rate = parse_rate(args.rate)

    recorder = Recorder()
    sink_port, relay_port = free_port(), free_port()
    sink = Controller(recorder, hostname="127.0.0.1", port=sink_port)
    sink.start()
    work = Path(tempfile.mkdtemp(prefix="relay-pace-"))
    key = work / "dkim.pem"
    key.write_bytes(dkim.generate_key())
    (work / "relay.yaml").write_text(f"""
server:
  hostname: relay.bench
  listeners: [{{name: local, address: 127.0.0.1, port: {relay_port}, tls: none}}]
  max_recipients: {args.recipients}
dns: {{nameservers: ["127.0.0.1:9"], timeout: 1s}}
spool: {{path: {work / 'spool'}}}
limits: {{bulk: {{recipients_threshold: 100, window: 24h, rate: {args.rate}, unsubscribe: "off"}}}}
users: [{{username: app, networks: [127.0.0.0/8], senders: [{DOMAIN}]}}]
domains: {{{DOMAIN}: {{route: sink, dkim: [{{selector: b1, private_key: {key}}}]}}}}
routes: {{sink: {{host: 127.0.0.1, port: {sink_port}, tls: none, max_connections: 4}}}}
""")
    relay = Path(sys.executable).parent / "relay"
    with open(work / "relay.log", "wb") as log:
        proc = subprocess.Popen([str(relay), "serve", "-c", str(work / "relay.yaml")],
                                stdout=log, stderr=log, start_new_session=True)
    try:
        wait_banner(relay_port, 20, proc=proc)
        body = make_message(args.size, sender=f"news@{DOMAIN}", recipient="list@sink.example",
                            subject="Our newsletter").replace(b"\n", b"\r\n")
        wanted = args.messages * args.recipients
        t0 = time.monotonic()
        with smtplib.SMTP("127.0.0.1", relay_port, timeout=120) as client:
            for m in range(args.messages):
                rcpts = [f"r{m}-{i}@sink.example" for i in range(args.recipients)]
                if client.sendmail(f"news@{DOMAIN}", rcpts, body):
                    raise SystemExit("refused recipients")
        deadline = time.monotonic() + 4 * 3600
        while recorder.total() < wanted and time.monotonic() < deadline:
            time.sleep(0.2)
        drained = time.monotonic() - t0
        arrivals = sorted(recorder.arrivals)
        first = arrivals[0][0]
        minutes: dict[int, int] = {}
        for t, n in arrivals:
            minutes[int((t - first) // 60)] = minutes.get(int((t - first) // 60), 0) + n
        full = [minutes.get(k, 0) for k in range(int((arrivals[-1][0] - first) // 60))]
        sizes = [n for _, n in arrivals]
        result = {"messages": args.messages, "recipients_per_message": args.recipients,
                  "rate": args.rate, "delivered": recorder.total(), "drain_s": round(drained, 1),
                  "transactions": len(arrivals),
                  "transaction_rcpts_min_median_max": [min(sizes), statistics.median(sizes), max(sizes)],
                  "per_full_minute_min_median_max": ([min(full), statistics.median(full), max(full)]
                                                     if full else None),
                  "per_minute": [minutes[k] for k in sorted(minutes)],
                  "most_in_any_window": most_in_any_window(arrivals, rate.period),
                  "window_limit": rate.count}
        print(json.dumps(result))
    finally:
        stop_relay(proc)
        sink.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
