"""Fleet throughput: one node on the embedded state, one node on Redis, two nodes on Redis.

    .venv/bin/python bench/fleet.py --runs 3                    # ~3 minutes

smtp-source -> relay node(s) -> smtp-sink, as bench/e2e.py measures relay (10 KB, 20
sessions, one message per connection, RSA-2048 DKIM, fsync before 250), for three set-ups
measured back to back in each run, their order rotating between runs:

- `sqlite-1`: one `relay serve` with `state.backend: sqlite` (the embedded default);
- `redis-1`: one `relay serve` with `state.backend: redis`, on a redis-server this script
  starts (unix socket, as the tests do; no persistence, which a fleet would have: AOF's
  fsync is Redis's own and runs in its own process);
- `redis-2`: two `relay serve` on that Redis, each with its own spool, the sessions and
  messages shared between them (both on this one machine: they share its two cores).

All three govern under the same limits, so every decision does real work: a domain rate,
a warm-up schedule per mailbox provider (caps far above the load), bulk detection. The
cost of Redis is 1 - redis-1 / sqlite-1 (target: at most 10%). Prints a line per
measurement, the medians, and JSON last. For the latency of one decision, see
bench/redis_decision.py.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from e2e import DOMAIN, RELAY_MARK, RelayPeer, log  # noqa: E402
from loadgen import free_port, measure, median, start_sink, wait_machine_idle  # noqa: E402
from postfix_bench import gen_rsa_key  # noqa: E402
from tests.fakes.redis_server import RedisServer  # noqa: E402

LIMITS = ("{bulk: {recipients_threshold: 100000000}, domain_rate: {default: 10000000/h}, "
          "warmup: {schedule: [10000000], per_provider: true}}")
SETUPS = ("sqlite-1", "redis-1", "redis-2")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=10240, help="message body size, bytes")
    ap.add_argument("--messages", type=int, default=2000, help="messages per measurement")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=200)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="relay-fleet-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        key, pub = work / "dkim.pem", work / "dkim.pub.pem"
        gen_rsa_key(key, pub)
        redis = stack.enter_context(RedisServer(work / "redis"))
        os.environ["RELAY_REDIS_URL"] = redis.url
        up = free_port()
        sink = stack.enter_context(start_sink(up, workdir=work / "sink"))

        def node(name: str, backend: str) -> RelayPeer:
            extra = f"state: {{backend: {backend}, node: {name}}}\n"
            return stack.enter_context(RelayPeer(up, work / name, key, LIMITS, extra))
        nodes = {"sqlite-1": [node("sqlite", "sqlite")], "redis-1": [node("a", "redis")]}
        nodes["redis-2"] = nodes["redis-1"] + [node("b", "redis")]
        kw = dict(sessions=args.sessions, sender=f"bench@{DOMAIN}", own_env=[RELAY_MARK])

        def once(setup: str, messages: int) -> dict:
            result = measure([n.port for n in nodes[setup]], sink, messages, args.size, **kw)
            for n in nodes[setup]:
                n.wait_empty()
            return result
        for setup in SETUPS:
            once(setup, args.warmup)
        rates: dict[str, list[float]] = {setup: [] for setup in SETUPS}
        for run in range(args.runs):
            order = SETUPS[run % 3:] + SETUPS[:run % 3]
            for setup in order:
                wait_machine_idle(0.9, 30)
                r = once(setup, args.messages)
                rates[setup].append(r["msgs_per_s"])
                log(f"run {run + 1} {setup:9s} {args.messages} msgs in {r['elapsed_s']:.2f}s = "
                    f"{r['msgs_per_s']:.1f} msg/s (other load {r['foreign_cpu_frac']:.1%})")
        med = {setup: median(v) for setup, v in rates.items()}
        summary = {"size": args.size, "sessions": args.sessions, "rates": rates, "median": med,
                   "redis_cost": round(1 - med["redis-1"] / med["sqlite-1"], 3),
                   "two_nodes_vs_one": round(med["redis-2"] / med["redis-1"], 2)}
        log(f"medians: " + ", ".join(f"{s} {m:.1f} msg/s" for s, m in med.items()) +
            f"; Redis costs {summary['redis_cost']:.1%} of one node's throughput")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
