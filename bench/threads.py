"""Where each relay thread's time goes under load: on a CPU, or runnable and waiting for one.

    .venv/bin/python bench/threads.py --size 10240 --messages 4000 --runs 2 [--sessions 20]

`relay serve` (as bench/e2e.py's relay peer) takes `--messages` messages from smtp-source and
forwards them to smtp-sink. For each thread of each relay process (the listener's event loop,
its signing, spool and reader threads, the delivery process, the lint process), the kernel's
schedstat (/proc/PID/task/TID/schedstat) before and after gives the share of the run's wall
time it spent on a CPU and waiting in a run queue (runnable, not running), and how many
times it was scheduled in per message. With the machine's idle share beside it: a thread that
is on a CPU or waiting for one nearly all the time is the bottleneck, even with CPUs idle.
Prints one block per run; the last line is JSON.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpu import bench_sink, load_arguments, processes  # noqa: E402
from e2e import DOMAIN, RelayPeer  # noqa: E402
from loadgen import measure  # noqa: E402


def schedstats(pid: int) -> dict[tuple[int, str], tuple[float, float, int]]:
    """(seconds on a CPU, seconds waiting in a run queue, times scheduled in), per thread."""
    found = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            on_cpu, waiting, slices = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
        except OSError:                       # the thread ended meanwhile
            continue
        found[(int(tid), comm)] = (int(on_cpu) / 1e9, int(waiting) / 1e9, int(slices))
    return found


def machine() -> list[int]:
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


def run_once(peer: RelayPeer, sink, messages: int, size: int, sessions: int) -> dict:
    pids = processes(peer.proc.pid)
    before = {role: schedstats(pid) for role, pid in pids.items()}
    cpu0, start = machine(), time.monotonic()
    r = measure(peer.port, sink, messages, size, sessions=sessions, sender=f"bench@{DOMAIN}")
    wall = time.monotonic() - start
    cpu1 = machine()
    peer.wait_empty()
    ticks = [b - a for a, b in zip(cpu0, cpu1)]
    threads = []
    for role, pid in pids.items():
        for key, (on_cpu, waiting, slices) in schedstats(pid).items():
            was = before[role].get(key, (0.0, 0.0, 0))
            if on_cpu - was[0] < 0.01 * wall:            # idle threads say nothing
                continue
            threads.append({"process": role, "thread": "main" if key[0] == pid else f"{key[1]} {key[0]}",
                            "on_cpu_%": round(100 * (on_cpu - was[0]) / wall, 1),
                            "run_queue_%": round(100 * (waiting - was[1]) / wall, 1),
                            "slices_per_msg": round((slices - was[2]) / messages, 1)})
    return {"msg/s": r["msgs_per_s"], "idle_%": round(100 * ticks[3] / sum(ticks), 1),
            "steal_%": round(100 * ticks[7] / sum(ticks), 1), "threads": threads}


def main(argv=None) -> int:
    args = load_arguments(__doc__, runs=2).parse_args(argv)
    work, key, up, sink = bench_sink("relay-threads-")
    results = []
    try:
        with RelayPeer(up, work / "relay", key) as peer:
            measure(peer.port, sink, 300, args.size, sessions=20, sender=f"bench@{DOMAIN}")
            peer.wait_empty()
            for run in range(args.runs):
                result = run_once(peer, sink, args.messages, args.size, args.sessions)
                results.append(result)
                print(f"run {run + 1}: {result['msg/s']:.0f} msg/s, machine idle "
                      f"{result['idle_%']}%, steal {result['steal_%']}%", file=sys.stderr)
                for t in result["threads"]:
                    print(f"  {t['process']:9s} {t['thread']:16s} on a CPU {t['on_cpu_%']:5.1f}%"
                          f"  waiting for one {t['run_queue_%']:5.1f}%"
                          f"  scheduled in {t['slices_per_msg']:4.1f} times a message",
                          file=sys.stderr)
    finally:
        sink.stop()
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
