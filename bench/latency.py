"""Acceptance latency: how long an application waits for relay's 250, at a steady load.

    .venv/bin/python bench/latency.py --rate 240 --seconds 20 --runs 3

One `relay serve` (as bench/e2e.py runs it: RSA-2048 DKIM, fsync before 250) forwarding to
smtp-sink. An open-loop client opens `--rate` connections a second, evenly spaced (each:
EHLO, MAIL, RCPT, DATA with a 10 KB message, QUIT, as applications do), whatever the answers
take, and times each from connect to the 250 after the final dot. Run it at half of the
maximum rate bench/e2e.py measures (the latency a business sees on a busy day, not at
saturation, where it only measures the queue of waiting sessions). Prints p50 / p90 / p99 /
max per run, their medians, and JSON last.
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
sys.path.insert(0, str(HERE))

from e2e import DOMAIN, RelayPeer, log  # noqa: E402
from loadgen import free_port, make_message, median, start_sink  # noqa: E402
from postfix_bench import gen_rsa_key  # noqa: E402


async def one(port: int, data: bytes) -> float:
    """Connect to the 250 after the data, in seconds."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        async def reply() -> bytes:
            while True:
                line = await reader.readline()
                if not line:
                    raise ConnectionError("relay closed the connection")
                if line[3:4] != b"-":
                    return line
        await reply()                                            # 220
        for command in (b"EHLO bench-client.example", f"MAIL FROM:<bench@{DOMAIN}>".encode(),
                        b"RCPT TO:<rcpt@sink.example>", b"DATA"):
            writer.write(command + b"\r\n")
            code = await reply()
            if code[:1] not in (b"2", b"3"):
                raise RuntimeError(f"{command!r}: {code!r}")
        writer.write(data)
        code = await reply()
        took = time.perf_counter() - started
        if not code.startswith(b"250"):
            raise RuntimeError(f"DATA: {code!r}")
        writer.write(b"QUIT\r\n")
        await reply()
        return took
    finally:
        writer.close()


async def steady(port: int, rate: float, seconds: float, data: bytes) -> list[float]:
    """Open-loop: a new session every 1/rate s, however long the others take."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = []
    for n in range(int(rate * seconds)):
        delay = start + n / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(port, data)))
    return list(await asyncio.gather(*tasks))


def wire(size: int) -> bytes:
    """The message as DATA sends it: CRLF, dot-stuffed, the final dot."""
    text = make_message(size, sender=f"bench@{DOMAIN}").replace(b"\n", b"\r\n")
    return text.replace(b"\r\n.", b"\r\n..") + b".\r\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, required=True, help="sessions per second")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size", type=int, default=10240)
    args = ap.parse_args(argv)
    data = wire(args.size)
    runs = []
    with tempfile.TemporaryDirectory(prefix="relay-latency-") as tmp:
        work = Path(tmp)
        key, pub = work / "dkim.pem", work / "dkim.pub.pem"
        gen_rsa_key(key, pub)
        up = free_port()
        with start_sink(up, workdir=work / "sink"), RelayPeer(up, work / "relay", key) as peer:
            asyncio.run(steady(peer.port, args.rate, 2, data))                     # warm-up
            for run in range(args.runs):
                took = sorted(asyncio.run(steady(peer.port, args.rate, args.seconds, data)))
                q = statistics.quantiles(took, n=100)
                ms = {"p50": round(q[49] * 1000, 1), "p90": round(q[89] * 1000, 1),
                      "p99": round(q[98] * 1000, 1), "max": round(took[-1] * 1000, 1)}
                runs.append(ms)
                log(f"run {run + 1}: {len(took)} sessions at {args.rate:g}/s: " +
                    ", ".join(f"{k} {v} ms" for k, v in ms.items()))
    medians = {k: median(r[k] for r in runs) for k in runs[0]}
    log("medians: " + ", ".join(f"{k} {v} ms" for k, v in medians.items()))
    print(json.dumps({"rate": args.rate, "size": args.size, "runs": runs, "median": medians}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
