"""How long one governance decision takes on Redis, against the embedded state.

    .venv/bin/python bench/redis_decision.py --decisions 20000

Starts a redis-server of its own on a unix socket (Debian's, as the tests do), and asks
`State.reserve` then `State.record_outcome` for one recipient at a time, as the delivery
process does for each message, under the limits of a realistic config (domain_rate, bulk
pace, a warm-up schedule per mailbox provider). Reports the p50 / p99 / max latency of each
call and the decisions per second, for RedisState (one Lua script each) and SqliteState (in
memory, the outcome through the spool's writer), in the same run.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import redis.asyncio as aioredis  # noqa: E402

from relay.clock import SystemClock  # noqa: E402
from relay.config import Config  # noqa: E402
from relay.spool.store import Spool  # noqa: E402
from relay.state import Outcome  # noqa: E402
from relay.state.redis import RedisState  # noqa: E402
from relay.state.sqlite import SqliteState  # noqa: E402
from tests.fakes.redis_server import RedisServer  # noqa: E402

PROVIDERS = ("google", "microsoft", "yahoo", "other")


def config(directory: Path) -> Config:
    return Config.model_validate({
        "server": {"listeners": [{"name": "local", "port": 0, "tls": "none"}]},
        "spool": {"path": str(directory)},
        "limits": {"domain_rate": {"default": "10000000/h"},
                   "warmup": {"schedule": [10_000_000], "per_provider": True}}})


async def run(state, decisions: int) -> dict:
    reserve, outcome = [], []
    started = time.perf_counter()
    for n in range(decisions):
        provider = PROVIDERS[n % len(PROVIDERS)]
        t0 = time.perf_counter()
        grant = await state.reserve("acme.fr", {provider: 1}, False, f"m{n}")
        t1 = time.perf_counter()
        await state.record_outcome(Outcome(grant.reservation, "acme.fr", {provider: 1}, {provider: 1}))
        t2 = time.perf_counter()
        reserve.append(t1 - t0)
        outcome.append(t2 - t1)
    elapsed = time.perf_counter() - started

    def ms(values: list[float], q: float) -> float:
        return round(statistics.quantiles(values, n=1000)[int(q * 1000) - 1] * 1000, 3)
    return {"decisions_per_s": round(decisions / elapsed),
            "reserve_ms": {"p50": ms(reserve, 0.5), "p99": ms(reserve, 0.99),
                           "max": round(max(reserve) * 1000, 3)},
            "outcome_ms": {"p50": ms(outcome, 0.5), "p99": ms(outcome, 0.99),
                           "max": round(max(outcome) * 1000, 3)}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--decisions", type=int, default=20_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with RedisServer(root / "redis") as server:
            async def both() -> dict:
                results = {}
                spool = Spool(root / "spool")
                spool.start()
                try:
                    results["sqlite"] = await run(
                        SqliteState(spool.db, config(root / "spool"), SystemClock()), args.decisions)
                finally:
                    spool.close()
                node = Spool(root / "node")
                node.start()
                state = RedisState(aioredis.Redis.from_url(server.url), config(root / "r"),
                                   SystemClock(), node.db)
                try:
                    results["redis"] = await run(state, args.decisions)
                finally:
                    await state.close()
                    node.close()
                return results
            results = asyncio.run(both())
    print(json.dumps({"decisions": args.decisions, **results}, indent=1))


if __name__ == "__main__":
    main()
