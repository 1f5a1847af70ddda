"""End-to-end throughput: relay vs. Postfix + OpenDKIM, side by side in the same run.

    sudo bash bench/setup_debian.sh                     # once: postfix, opendkim
    sudo .venv/bin/python bench/e2e.py --sizes 10240,102400 --runs 3

For each message size, each run measures both peers back to back (their order alternates
between runs), so both see the same machine: smtp-source -> peer -> smtp-sink, counting at
the sink. The peers:

- relay: `relay serve` with a trusted `tls: none` listener on loopback, one RSA-2048 DKIM
  key, the durable SQLite spool, and a route to the sink (tls: none, 8 connections); the
  deliverability lint on, as by default (`content.mode: warn`); with `--lint-off`, a second
  relay with `content.mode: off` is measured in the same runs: the lint's cost; with
  `--frontend-probe`, a relay whose SMTP sessions are bench/frontend_probe's bare
  asyncio.Protocol instead of aiosmtpd (a probe: what replacing aiosmtpd could give);
- postfix: Postfix + OpenDKIM (milter, relaxed/relaxed, RSA-2048) relaying to the same sink
  (bench/postfix_peer.py).

Before the runs, a small batch through each peer goes to a dumping sink and every message
is checked for a valid DKIM signature (body hash and RSA), so neither peer is measured
doing less than the other. Prints one line per run, then medians and the ratio
relay/postfix; the last line is JSON.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from loadgen import (check_dkim, free_port, measure, median, read_dumps,  # noqa: E402
                     start_sink, wait_banner, wait_machine_idle)
from postfix_bench import gen_rsa_key, wait_queue_empty  # noqa: E402
from postfix_peer import PostfixPeer  # noqa: E402

DOMAIN, SELECTOR = "bench.example", "bench"
RELAY_MARK = "RELAY_BENCH_PEER=1"
# bench/frontend_probe: relay's plain listeners served without aiosmtpd (a measurement probe)
FRONTEND_PROBE = {"PYTHONPATH": str(Path(__file__).resolve().parent / "frontend_probe"),
                  "RELAY_FRONTEND_PROBE": "1"}


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


class RelayPeer:
    """`relay serve` on a trusted loopback listener, forwarding to `upstream_port`."""

    def __init__(self, upstream_port: int, workdir: Path, key: Path,
                 limits: str = "{bulk: {recipients_threshold: 100000000}}", extra: str = "",
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.env = env or {}                # more environment for `relay serve`
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "relay.yaml"
        self.config.write_text(f"""
server:
  hostname: relay.bench
  listeners: [{{name: local, address: 127.0.0.1, port: {self.port}, tls: none}}]
  max_message_size: 50MB
dns: {{nameservers: ["127.0.0.1:9"], timeout: 1s}}   # no DNS leaves the machine
# the same message to the same recipient, thousands of times, is one "campaign": measure the
# transactional path, as Postfix has no mass-send pacing to compare with
limits: {limits}
spool: {{path: {workdir / 'spool'}}}
users:
  - {{username: bench, networks: [127.0.0.0/8], senders: [{DOMAIN}]}}
domains:
  {DOMAIN}: {{route: sink, dkim: [{{selector: {SELECTOR}, private_key: {key}}}]}}
routes:
  sink: {{host: 127.0.0.1, port: {upstream_port}, tls: none, max_connections: 8}}
{extra}""")
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "RelayPeer":
        relay = Path(sys.executable).parent / "relay"
        env = dict(os.environ, **dict([RELAY_MARK.split("=")]), **self.env)
        with open(self.workdir / "relay.log", "ab") as out:
            self.proc = subprocess.Popen([str(relay), "serve", "-c", str(self.config)],
                                         stdout=out, stderr=out, env=env, start_new_session=True)
        wait_banner(self.port, 20, proc=self.proc)
        return self

    def queued(self) -> int:
        with sqlite3.connect(self.workdir / "spool" / "relay.sqlite3") as conn:
            return conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0]

    def wait_empty(self, deadline_s: float = 60) -> None:
        deadline = time.monotonic() + deadline_s
        while self.queued():
            if time.monotonic() > deadline:
                raise RuntimeError(f"relay spool not empty after {deadline_s}s")
            time.sleep(0.02)

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def verify(work: Path, key: Path, pub: Path, size: int) -> None:
    """A small batch through each peer into a dumping sink; every message must verify."""
    for name in ("relay", "postfix"):
        up = free_port()
        dumps = work / f"dump-{name}"
        sink = start_sink(up, workdir=work / f"verify-sink-{name}", dump_dir=dumps)
        try:
            peer = (RelayPeer(up, work / "verify-relay-peer", key) if name == "relay" else
                    PostfixPeer(free_port(), up, work / "verify-postfix", key, DOMAIN, SELECTOR))
            with peer:
                port = peer.port if name == "relay" else peer.listen_port
                measure(port, sink, 10, size, sessions=5, sender=f"bench@{DOMAIN}")
        finally:
            sink.stop()
        messages = read_dumps(dumps)
        for raw in messages:
            result = check_dkim(raw, domain=DOMAIN, selector=SELECTOR, public_key_pem=pub)
            if not (result["signed"] and result["body_hash_ok"] and result["signature_ok"]):
                raise RuntimeError(f"{name}: a message is not correctly signed: {result}")
        log(f"verify: {name}: {len(messages)} messages, DKIM verified")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10240,102400", help="message body sizes, bytes")
    ap.add_argument("--messages", type=int, default=2000, help="messages per run (10 KB)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--workdir-base", default="/var/lib/relay-bench")
    ap.add_argument("--lint-off", action="store_true",
                    help="also measure a relay with content.mode: off, in the same runs: the "
                         "cost of the deliverability lint (on by default, mode warn)")
    ap.add_argument("--frontend-probe", action="store_true",
                    help="also measure a relay whose SMTP sessions are bench/frontend_probe's "
                         "(no aiosmtpd), in the same runs")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        log("bench/e2e.py must run as root (Postfix's master); see bench/setup_debian.sh")
        return 2

    base = Path(args.workdir_base)
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o755)
    work = base / f"e2e-{os.getpid()}"
    work.mkdir()
    os.chmod(work, 0o755)
    key, pub = work / "dkim.pem", work / "dkim.pub.pem"
    gen_rsa_key(key, pub)
    sizes = [int(s) for s in args.sizes.split(",")]
    verify(work, key, pub, sizes[0])

    summary = {}
    up = free_port()
    sink = start_sink(up, workdir=work / "sink")
    own = [RELAY_MARK]
    try:
        with RelayPeer(up, work / "relay", key) as relay, \
                PostfixPeer(free_port(), up, work / "postfix", key, DOMAIN, SELECTOR) as postfix, \
                contextlib.ExitStack() as more:
            own.append(f"MAIL_CONFIG={postfix.config_dir}")
            peers = {"relay": (relay.port, relay.wait_empty),
                     "postfix": (postfix.listen_port, lambda: wait_queue_empty(postfix))}
            if args.lint_off:
                quiet = more.enter_context(RelayPeer(up, work / "relay-lint-off", key,
                                                     extra="content: {mode: off}"))
                peers["relay-lint-off"] = (quiet.port, quiet.wait_empty)
            if args.frontend_probe:
                probe = more.enter_context(RelayPeer(up, work / "relay-probe", key,
                                                     env=FRONTEND_PROBE))
                peers["relay-probe"] = (probe.port, probe.wait_empty)
            for size in sizes:
                count = args.messages if size <= 20000 else max(args.messages // 2, 200)
                kw = dict(sessions=args.sessions, sender=f"bench@{DOMAIN}", own_env=own)
                for name, (port, drained) in peers.items():
                    measure(port, sink, args.warmup, size, **kw)
                    drained()
                rates: dict[str, list[float]] = {name: [] for name in peers}
                for run in range(args.runs):
                    order = list(peers) if run % 2 == 0 else list(reversed(peers))
                    for name in order:
                        wait_machine_idle(0.9, 30)
                        port, drained = peers[name]
                        r = measure(port, sink, count, size, **kw)
                        drained()
                        rates[name].append(r["msgs_per_s"])
                        log(f"size {size} run {run + 1} {name:14s} {count} msgs in "
                            f"{r['elapsed_s']:.2f}s = {r['msgs_per_s']:.1f} msg/s "
                            f"(other load {r['foreign_cpu_frac']:.1%}, steal {r['steal_frac']:.1%})")
                med = {name: median(v) for name, v in rates.items()}
                summary[size] = {**rates, **{f"{name}_median": m for name, m in med.items()},
                                 "ratio": round(med["relay"] / med["postfix"], 2)}
                log(f"size {size}: relay median {med['relay']:.1f} msg/s, postfix median "
                    f"{med['postfix']:.1f} msg/s, ratio {summary[size]['ratio']:.2f}")
                if args.frontend_probe:
                    ratio = summary[size]["probe_ratio"] = round(med["relay-probe"] / med["postfix"], 2)
                    log(f"size {size}: relay with the frontend probe {med['relay-probe']:.1f} "
                        f"msg/s, ratio {ratio:.2f}")
                if args.lint_off:
                    cost = summary[size]["lint_cost"] = round(1 - med["relay"] / med["relay-lint-off"], 3)
                    log(f"size {size}: relay with content.mode off {med['relay-lint-off']:.1f} "
                        f"msg/s: the lint (warn) costs {cost:.1%}")
    finally:
        sink.stop()
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
