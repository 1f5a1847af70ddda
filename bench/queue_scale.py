"""Does relay's cost grow with its queue? A backlog of a million messages (the provider down
for hours), then the drain once the provider is back.

    .venv/bin/python bench/queue_scale.py --queued 1000000          # ~30 minutes
    .venv/bin/python bench/queue_scale.py --queued 100000 --skip-drain   # a quick look

One `relay serve` (SQLite spool, RSA-2048 DKIM, fsync before 250) whose route points at a
closed port (the provider is down), measured:

1. the queue is built to `--queued` messages through the spool's own API (`Spool.enqueue`,
   2,000 a transaction; `--queued-size` bytes each, one recipient, deferred once, next
   attempt in an hour, as a provider outage leaves them);
2. `--runs` times, interleaved (the machine's noise hits both alike): a relay on an empty
   spool, then a relay on the full one, each started afresh: seconds until it answers SMTP
   (target <= 10 s), then the acceptance rate (smtp-source, 20 sessions, one message per
   connection, 10 KB: the time until smtp-source has had every 250), and the listener's and
   delivery process's RSS sampled meanwhile (target: flat); the medians' ratio full / empty
   is the target (>= 0.90);
3. `relay queue list` (the first page) and `relay queue list --domain` on the full queue:
   seconds;
4. the drain (unless --skip-drain): the relay is stopped, the provider comes back (the route
   now points at smtp-sink) and the whole queue is made due, as the retry time arriving
   would; relay is started and the sink counts until every message has arrived. Messages/s
   at the sink and both processes' RSS every 2 s are written to JSON, and plotted with
   matplotlib into `bench/queue_drain.png`.

Prints a line per step and JSON last.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from e2e import DOMAIN, RelayPeer, log  # noqa: E402
from loadgen import SMTP_SOURCE, free_port, median, start_sink, write_message_file  # noqa: E402
from postfix_bench import gen_rsa_key  # noqa: E402

from relay.model import QueuedMessage, Recipient, RecipientState, new_queue_id  # noqa: E402
from relay.spool.store import Spool  # noqa: E402

BATCH = 2000


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def processes(peer: RelayPeer) -> dict[str, int]:
    children = subprocess.run(["pgrep", "-P", str(peer.proc.pid)], capture_output=True,
                              text=True).stdout.split()
    return {"listener": peer.proc.pid, **({"delivery": int(children[0])} if children else {})}


def accept(port: int, message: Path, count: int, sessions: int, pids: dict[str, int]) -> dict:
    """smtp-source until every message had its 250; RSS sampled every 0.5 s meanwhile."""
    samples: dict[str, list[float]] = {name: [] for name in pids}
    started = time.monotonic()
    source = subprocess.Popen([SMTP_SOURCE, "-F", str(message), "-f", f"bench@{DOMAIN}",
                               "-t", "rcpt@sink.example", "-M", "bench-client.example",
                               "-s", str(sessions), "-m", str(count), f"127.0.0.1:{port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while True:
        for name, pid in pids.items():
            samples[name].append(round(rss_mb(pid), 1))
        try:
            source.wait(timeout=0.5)          # returns within ~50 ms of the end, unlike a sleep
            break
        except subprocess.TimeoutExpired:
            pass
    elapsed = time.monotonic() - started
    if source.returncode != 0:
        raise RuntimeError(f"smtp-source failed: {source.stderr.read().decode()[-500:]}")
    return {"msgs_per_s": round(count / elapsed, 1), "elapsed_s": round(elapsed, 2),
            "rss_mb": {name: [min(v), max(v)] for name, v in samples.items() if v}}


def build_queue(spool_dir: Path, count: int, size: int) -> float:
    """`count` deferred messages, through the spool's API; returns seconds taken."""
    body = (b"From: bench@" + DOMAIN.encode() + b"\r\nTo: rcpt@sink.example\r\n"
            b"Subject: backlog\r\n\r\n" + (b"x" * 74 + b"\r\n") * max(1, size // 76))
    spool = Spool(spool_dir)
    spool.start()
    started = time.monotonic()
    now = time.time()

    async def fill() -> None:
        for first in range(0, count, BATCH):
            batch = [QueuedMessage(new_queue_id(at), f"bench@{DOMAIN}",
                                   [Recipient(f"rcpt{n}@sink.example", RecipientState.QUEUED,
                                              "421 4.4.0 provider down")],
                                   DOMAIN, "sink", body, at, attempts=1, next_attempt=now + 3600)
                     for n in range(first, min(first + BATCH, count))
                     for at in [now - 7200 + n * 3600 / count]]    # its own millisecond
            await spool.enqueue(*batch)
            if (first + len(batch)) % 100_000 == 0:
                log(f"  queue: {first + len(batch):,} messages")
    try:
        asyncio.run(fill())
    finally:
        spool.close()
    return time.monotonic() - started


def timed_cli(config: Path, *args: str) -> float:
    relay = Path(sys.executable).parent / "relay"
    started = time.monotonic()
    subprocess.run([str(relay), "queue", "list", *args, "-c", str(config)], check=True,
                   stdout=subprocess.DEVNULL)
    return round(time.monotonic() - started, 2)


def drain(work: Path, key: Path, spool: Path, queued: int, png: Path) -> dict:
    """The provider back and the queue due: messages/s at the sink, RSS, until empty."""
    with sqlite3.connect(spool / "relay.sqlite3") as conn:
        conn.execute("UPDATE messages SET next_attempt = 0")
    up = free_port()
    timeline = []
    with start_sink(up, workdir=work / "sink") as sink, \
            RelayPeer(up, work / "relay", key) as peer:
        pids = processes(peer)
        started, last, before = time.monotonic(), 0, sink.count()
        while True:
            time.sleep(2)
            now, count = time.monotonic() - started, sink.count() - before
            pids = processes(peer) if "delivery" not in pids else pids
            timeline.append({"t": round(now, 1), "delivered": count,
                             "per_s": round((count - last) / 2, 1),
                             **{f"rss_{n}": round(rss_mb(p), 1) for n, p in pids.items()}})
            last = count
            if count >= queued:
                break
            if now > 4 * 3600:
                raise RuntimeError(f"drain not done after 4 h: {count} of {queued}")
    elapsed = timeline[-1]["t"]
    plot(timeline, png, queued)
    return {"elapsed_s": elapsed, "msgs_per_s": round(queued / elapsed, 1),
            "rss_mb": {n: [min(r[f"rss_{n}"] for r in timeline if f"rss_{n}" in r),
                           max(r[f"rss_{n}"] for r in timeline if f"rss_{n}" in r)]
                       for n in ("listener", "delivery")},
            "timeline": timeline}


def plot(timeline: list[dict], png: Path, queued: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t = [r["t"] / 60 for r in timeline]
    fig, (rate, memory) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    rate.plot(t, [r["per_s"] for r in timeline], color="tab:blue")
    rate.set_ylabel("messages/s at the sink")
    rate.set_title(f"Draining a backlog of {queued:,} messages")
    rate.set_ylim(bottom=0)
    for name, color in (("listener", "tab:green"), ("delivery", "tab:orange")):
        memory.plot(t, [r.get(f"rss_{name}", float("nan")) for r in timeline], color=color,
                    label=f"{name} process")
    memory.set_ylabel("RSS (MB)")
    memory.set_xlabel("minutes")
    highest = max((r.get(f"rss_{name}", 0) for r in timeline for name in ("listener", "delivery")),
                  default=0)
    memory.set_ylim(0, highest * 1.25 or 1)
    memory.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(png, dpi=100)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queued", type=int, default=1_000_000)
    ap.add_argument("--queued-size", type=int, default=4096, help="bytes per queued message")
    ap.add_argument("--messages", type=int, default=4000, help="per acceptance run")
    ap.add_argument("--size", type=int, default=10240, help="body bytes of submitted mail")
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3, help="interleaved acceptance runs each")
    ap.add_argument("--skip-drain", action="store_true")
    ap.add_argument("--png", default=str(HERE / "queue_drain.png"))
    ap.add_argument("--workdir-base", default=None)
    args = ap.parse_args(argv)

    result: dict = {"queued": args.queued, "queued_size": args.queued_size}
    with tempfile.TemporaryDirectory(prefix="relay-queue-", dir=args.workdir_base) as tmp:
        work = Path(tmp)
        key, pub = work / "dkim.pem", work / "dkim.pub.pem"
        gen_rsa_key(key, pub)
        message = write_message_file(work / "message.eml", args.size, sender=f"bench@{DOMAIN}")
        down = free_port()                     # nothing listens there: the provider is down
        empty_dir, full_dir = work / "empty", work / "relay"
        spool = full_dir / "spool"

        def run(label: str, where: Path, cli: bool) -> dict:
            started = time.monotonic()
            with RelayPeer(down, where, key) as peer:
                ready = round(time.monotonic() - started, 2)
                pids = processes(peer)
                accept(peer.port, message, 200, args.sessions, pids)          # warm-up
                measured = accept(peer.port, message, args.messages, args.sessions, pids)
                measured["serving_after_s"] = ready
                if cli:
                    measured["queue_list_s"] = timed_cli(peer.config)
                    measured["queue_list_domain_s"] = timed_cli(peer.config, "--domain", DOMAIN)
            log(f"{label}: serving after {ready} s; {measured['msgs_per_s']} msg/s accepted; "
                f"RSS {measured['rss_mb']}")
            return measured

        took = build_queue(spool, args.queued, args.queued_size)
        log(f"built a queue of {args.queued:,} messages in {took:.0f} s")
        runs: dict[str, list[dict]] = {"empty": [], "full": []}
        for n in range(args.runs):          # interleaved: the machine's noise hits both alike
            runs["empty"].append(run("empty", empty_dir, cli=False))
            runs["full"].append(run("full", full_dir, cli=n == 0))
        for label, measured in runs.items():
            rates = [m["msgs_per_s"] for m in measured]
            result[label] = {"msgs_per_s": median(rates), "runs": measured}
        result["ratio"] = round(result["full"]["msgs_per_s"] / result["empty"]["msgs_per_s"], 3)
        log(f"acceptance with the queue / without (median of {args.runs}): "
            f"{result['full']['msgs_per_s']} / {result['empty']['msgs_per_s']} = "
            f"{result['ratio']:.2f}")
        if not args.skip_drain:
            queued = sqlite3.connect(spool / "relay.sqlite3").execute(
                "SELECT COUNT(*) FROM messages").fetchone()[0]
            result["drain"] = drain(work, key, spool, queued, Path(args.png))
            log(f"drain: {queued:,} messages in {result['drain']['elapsed_s']} s = "
                f"{result['drain']['msgs_per_s']} msg/s; RSS {result['drain']['rss_mb']}")
    timeline = result.get("drain", {}).pop("timeline", None)
    if timeline is not None:
        Path(args.png).with_suffix(".json").write_text(json.dumps(timeline))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
