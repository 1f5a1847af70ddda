"""CPU per message, per relay process: what throughput costs, less exposed to a noisy machine.

    .venv/bin/python bench/cpu.py --size 10240 --messages 4000 --runs 3 [--lint-off]

Throughput on a shared 2-core machine moves with the neighbours (steal time); the CPU time a
process spends on a fixed number of messages moves much less. For each run: `relay serve`
(as bench/e2e.py's relay peer) takes `--messages` messages from smtp-source (`--sessions`
sessions, 20 by default, one message each) and forwards them to smtp-sink; the user+system CPU of each relay process
(the listener, the delivery process, the lint process) is read from /proc before and after,
and divided by the message count (and its system share, `sys`: system calls and wake-ups). Prints one line per run, the medians, and a JSON line.
With `--lint-off`, a second relay with `content.mode: off` runs interleaved: the lint's CPU.
With `--frontend-probe`, another relay whose plain listeners are served by the probe in
bench/frontend_probe/ (a bare asyncio.Protocol calling the same acceptance steps, in place of
aiosmtpd) runs interleaved: what replacing aiosmtpd could give, at most.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e import DOMAIN, FRONTEND_PROBE, RelayPeer  # noqa: E402
from loadgen import free_port, measure, start_sink  # noqa: E402
from postfix_bench import gen_rsa_key  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def processes(session: int) -> dict[str, int]:
    """The relay's processes (its session, as RelayPeer starts it), named by role."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[3]) != session:   # field 6: session id
            continue
        role = ("lint" if b"relay.lint.process" in cmdline else
                "listener" if int(entry) == session else "delivery")
        found[role] = int(entry)
    return found


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user + system, system) CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK, int(fields[12]) / TICK


def steal() -> float:
    return int(Path("/proc/stat").read_text().split("\n", 1)[0].split()[8]) / TICK


def run_once(peer: RelayPeer, sink, messages: int, size: int, sessions: int) -> dict[str, float]:
    pids = processes(peer.proc.pid)
    before = {role: cpu_seconds(pid) for role, pid in pids.items()}
    stolen = steal()
    r = measure(peer.port, sink, messages, size, sessions=sessions, sender=f"bench@{DOMAIN}")
    peer.wait_empty()
    used = {}
    for role, pid in pids.items():
        (cpu, system), (cpu0, system0) = cpu_seconds(pid), before[role]
        used[role] = (cpu - cpu0) * 1000 / messages
        used[f"{role} sys"] = (system - system0) * 1000 / messages
    used["total"] = sum(v for k, v in used.items() if not k.endswith(" sys"))
    used["msg/s"] = r["msgs_per_s"]
    used["steal %"] = 100 * (steal() - stolen) / (2 * r["elapsed_s"])
    return used


def load_arguments(doc: str, runs: int) -> argparse.ArgumentParser:
    """The options of a run of relay alone under smtp-source (this script, threads.py)."""
    ap = argparse.ArgumentParser(description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=10240)
    ap.add_argument("--messages", type=int, default=4000)
    ap.add_argument("--runs", type=int, default=runs)
    ap.add_argument("--sessions", type=int, default=20)
    return ap


def bench_sink(prefix: str):
    """A work directory, a DKIM key in it, and smtp-sink on a free port: (work, key, port, sink)."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    key = work / "dkim.pem"
    gen_rsa_key(key, work / "dkim.pub.pem")
    up = free_port()
    return work, key, up, start_sink(up, workdir=work / "sink")


def main(argv=None) -> int:
    ap = load_arguments(__doc__, runs=3)
    ap.add_argument("--lint-off", action="store_true")
    ap.add_argument("--frontend-probe", action="store_true")
    args = ap.parse_args(argv)
    work, key, up, sink = bench_sink("relay-cpu-")
    peers = {"relay": RelayPeer(up, work / "relay", key)}
    if args.lint_off:
        peers["lint-off"] = RelayPeer(up, work / "lint-off", key, extra="content: {mode: off}")
    if args.frontend_probe:
        peers["probe"] = RelayPeer(up, work / "probe", key, env=FRONTEND_PROBE)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in peers}
    try:
        for peer in peers.values():
            peer.__enter__()
            measure(peer.port, sink, 300, args.size, sessions=20, sender=f"bench@{DOMAIN}")
            peer.wait_empty()
        for run in range(args.runs):
            for name in (list(peers) if run % 2 == 0 else list(reversed(peers))):
                used = run_once(peers[name], sink, args.messages, args.size, args.sessions)
                results[name].append(used)
                print(f"run {run + 1} {name:8s} " + "  ".join(
                    f"{k} {v:.3f}" for k, v in used.items()), file=sys.stderr, flush=True)
    finally:
        for peer in peers.values():
            peer.__exit__(None, None, None)
        sink.stop()
    summary = {name: {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}
               for name, runs in results.items()}
    for name, med in summary.items():
        print(f"median {name:8s} ms CPU a message: " + "  ".join(
            f"{k} {v}" for k, v in med.items()), file=sys.stderr)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
