"""The delivery process's cost of one mail transaction: pipelined (RFC 2920) or one command
at a time, through relay's own route client, to smtp-sink on loopback.

    .venv/bin/python bench/upstream_transaction.py --messages 3000 --runs 3

One `SmtpSession` (as a delivery worker holds one) sends `--messages` messages of 10 KB to
one recipient each, first with PIPELINING (smtp-sink offers it), then with the pipelined
path turned off (`pipelining.usable` answering False), alternating `--runs` times. Prints the
process CPU time and the wall time per message of each, and their medians; the last line is
JSON. The client is the only Python here: its CPU is what a transaction costs the delivery
process.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import free_port, start_sink  # noqa: E402

from relay.config import Route  # noqa: E402
from relay.outbound import pipelining  # noqa: E402
from relay.outbound.upstream import SmtpRoute  # noqa: E402

BODY = (b"From: a@bench.example\r\nTo: b@example.net\r\nSubject: bench\r\n\r\n"
        + (b"x" * 76 + b"\r\n") * 131)                # 10 KB, CRLF-clean as relay stores it


async def send(port: int, messages: int) -> tuple[float, float]:
    route = SmtpRoute("sink", Route(host="127.0.0.1", port=port, tls="none"), "relay.bench")
    session = route.session()
    try:
        await session.send("a@bench.example", ["b@example.net"], BODY, [])     # connect, EHLO
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(messages):
            answers = await session.send("a@bench.example", ["b@example.net"], BODY, [])
            assert answers[0].code == 250, answers
        return ((time.process_time() - cpu) / messages * 1e6,
                (time.perf_counter() - wall) / messages * 1e6)
    finally:
        await session.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=3000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    import uvloop
    port = free_port()
    sink = start_sink(port, workdir=Path(tempfile.mkdtemp(prefix="relay-txn-")))
    results: dict[str, list[tuple[float, float]]] = {"pipelined": [], "one at a time": []}
    try:
        for run in range(args.runs):
            for name in results:
                if name == "pipelined":
                    used = uvloop.run(send(port, args.messages))
                else:
                    with mock.patch.object(pipelining, "usable", return_value=False):
                        used = uvloop.run(send(port, args.messages))
                results[name].append(used)
                print(f"run {run + 1} {name:14s} CPU {used[0]:.0f} us, wall {used[1]:.0f} us "
                      "a message", file=sys.stderr, flush=True)
    finally:
        sink.stop()
    summary = {name: {"cpu_us": round(statistics.median(c for c, _ in runs)),
                      "wall_us": round(statistics.median(w for _, w in runs))}
               for name, runs in results.items()}
    for name, med in summary.items():
        print(f"median {name:14s} CPU {med['cpu_us']} us, wall {med['wall_us']} us a message",
              file=sys.stderr)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
