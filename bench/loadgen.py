"""Generic SMTP throughput measuring helpers (stdlib only).

Load generator: Postfix's ``smtp-source``; upstream: Postfix's ``smtp-sink``
(Debian: /usr/sbin, package ``postfix``). Nothing here knows about the relay
under test: anything that accepts SMTP on 127.0.0.1:<target_port> and relays to
the sink's port can be measured.

    from bench.loadgen import start_sink, measure, median

    sink = start_sink(32025)                  # counting sink on 127.0.0.1:32025
    try:
        r = measure(31025, sink, messages=2000, size_bytes=10240, sessions=20)
        print(r["msgs_per_s"], r["elapsed_s"])
    finally:
        sink.stop()

How counting at the sink works
------------------------------
``smtp-sink -c`` prints running counters ``sess=N quit=N mesg=N`` followed by a
bare CR, each time a session ends, QUIT is received, or the terminating "." of
a message is received. The sink's stdout is redirected to a regular file
(never a pipe, so the sink can never block on a slow reader) and ``count()``
reads the last complete record from the file's tail and returns ``mesg``: the
number of messages whose DATA was fully received by the sink since it started.
``measure()`` records the count before injecting and polls (default every
5 ms) until it has grown by ``messages``; elapsed time = start of injection ->
first poll that sees the last message. The counter is cumulative for the
sink's lifetime, so one sink serves warm-up and all runs.

For content checks, ``start_sink(port, dump_dir=...)`` adds ``-d`` so every
received transaction is written to its own file (much slower: use only for a
small verification batch); ``read_dumps()`` returns the messages and
``check_dkim()`` verifies DKIM-Signature headers (relaxed/relaxed, rsa-sha256;
body hash in Python, RSA check with the ``openssl`` CLI).
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import os
import pwd
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

SMTP_SINK = shutil.which("smtp-sink", path="/usr/sbin:/usr/bin:/usr/local/sbin") or "/usr/sbin/smtp-sink"
SMTP_SOURCE = shutil.which("smtp-source", path="/usr/sbin:/usr/bin:/usr/local/sbin") or "/usr/sbin/smtp-source"

DEFAULT_SENDER = "bench@bench.example"
DEFAULT_RECIPIENT = "rcpt@sink.example"


class LoadgenError(RuntimeError):
    pass


def median(values) -> float:
    """Median of a non-empty iterable of numbers."""
    vals = list(values)
    if not vals:
        raise ValueError("median of empty sequence")
    return float(statistics.median(vals))


def stop_relay(proc: subprocess.Popen) -> None:
    """SIGTERM (relay drains), then its whole process group if it does not stop in 60 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def free_port() -> int:
    """An unused TCP port on 127.0.0.1 (racy, but fine for a benchmark)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_banner(port: int, deadline_s: float = 10.0, proc: subprocess.Popen | None = None,
                host: str = "127.0.0.1") -> None:
    """Poll host:port until it accepts and sends a line starting with '220'."""
    deadline = time.monotonic() + deadline_s
    delay, last = 0.005, None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise LoadgenError(f"process exited ({proc.returncode}) before {host}:{port} was ready")
        try:
            with socket.create_connection((host, port), timeout=2.0) as s:
                s.settimeout(max(0.1, deadline - time.monotonic()))
                data = b""
                while b"\n" not in data:
                    chunk = s.recv(512)
                    if not chunk:
                        break
                    data += chunk
                if data.startswith(b"220"):
                    try:
                        s.sendall(b"QUIT\r\n")
                    except OSError:
                        pass
                    return
                last = f"banner {data[:80]!r}"
        except OSError as e:
            last = e
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    raise LoadgenError(f"{host}:{port} not ready after {deadline_s}s: {last}")


def _cpu_times() -> tuple[int, int]:
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    return idle, sum(vals[:8])


def cpu_idle_fraction(sample_s: float = 0.5) -> float:
    """Machine-wide idle fraction (0..1) over sample_s, from /proc/stat."""
    i0, t0 = _cpu_times()
    time.sleep(sample_s)
    i1, t1 = _cpu_times()
    return (i1 - i0) / max(1, t1 - t0)


def wait_machine_idle(min_idle: float = 0.9, max_wait_s: float = 60.0,
                      sample_s: float = 0.5) -> float:
    """Wait (up to max_wait_s) until the machine is >= min_idle idle, so a run
    does not share the 2 cores with someone else's load. Returns the last idle
    fraction seen (check it: it is below min_idle if the wait timed out)."""
    deadline = time.monotonic() + max_wait_s
    while True:
        idle = cpu_idle_fraction(sample_s)
        if idle >= min_idle or time.monotonic() >= deadline:
            return idle


_CLK = os.sysconf("SC_CLK_TCK")


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, utime+stime+cutime+cstime in clock ticks)."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                st = f.read()
        except OSError:
            continue
        f = st[st.rindex(b")") + 2:].split()
        out[int(d)] = (int(f[1]), int(f[11]) + int(f[12]) + int(f[13]) + int(f[14]))
    return out


def _has_env(pid: int, markers: list[bytes]) -> bool:
    if not markers:
        return False
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
    except OSError:
        return False
    return any(m in env for m in markers)


class ForeignCpu:
    """Estimate CPU time used *by other people's processes* during a window, to
    flag runs that shared the machine with someone else's load.

    "Ours" = this process and its descendants, plus any process whose
    environment contains one of own_env ("KEY=VALUE", e.g. Postfix's
    MAIL_CONFIG=<config dir>, which all daemons of a private instance carry).
    Foreign CPU = growth of utime+stime+cutime+cstime of every other process
    alive at the end (the c* fields catch children that ran and were reaped in
    between); kernel threads are not counted. Processes that lived only inside the window and whose parent is
    gone are missed, so this is a lower bound."""

    def __init__(self, own_env: list[str] | tuple[str, ...] = ()):
        self.markers = [m.encode() for m in own_env]
        self.me = os.getpid()
        self.start = _proc_table()
        self.steal0 = _steal_ticks()
        self.t0 = time.monotonic()

    def _ours(self, pid: int, table: dict[int, tuple[int, int]]) -> bool:
        p, seen = pid, 0
        while p > 1 and seen < 64:
            if p == self.me:
                return True
            p = table.get(p, (0, 0))[0]
            seen += 1
        return _has_env(pid, self.markers)

    def stop(self) -> dict:
        end = _proc_table()
        wall = time.monotonic() - self.t0
        ticks = 0
        for pid, (_pp, t) in end.items():
            if pid in (1, 2) or _pp == 2 or self._ours(pid, end):
                # init's c* times include reaped orphans of ours (e.g. postfix daemons);
                # kernel threads (ppid 2) mostly do our block I/O and loopback softirqs
                continue
            ticks += max(0, t - self.start.get(pid, (0, 0))[1]) if pid in self.start else t
        secs = ticks / _CLK
        capacity = max(1e-9, wall * (os.cpu_count() or 1))
        return {"foreign_cpu_s": round(secs, 2),
                "foreign_cpu_frac": round(secs / capacity, 3),
                # the hypervisor's: CPU time this VM was ready to use and did not get (a
                # shared cloud machine); runs with more than a few % are disturbed
                "steal_frac": round((_steal_ticks() - self.steal0) / _CLK / capacity, 3)}


def _steal_ticks() -> int:
    """The machine's `steal` ticks so far (/proc/stat, the 8th field of the cpu line)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return int(fields[8]) if len(fields) > 8 else 0


# --------------------------------------------------------------------------- sink
_REC = re.compile(rb"sess=(\d+) quit=(\d+) mesg=(\d+)")


class Sink:
    """A running ``smtp-sink -c`` on 127.0.0.1:port. See module doc for counting."""

    def __init__(self, port: int, *, workdir: str | os.PathLike | None = None,
                 dump_dir: str | os.PathLike | None = None, backlog: int = 256,
                 max_concurrency: int = 512, user: str = "nobody",
                 extra_args: tuple[str, ...] = ()):
        self.port = int(port)
        self.backlog = int(backlog)
        self.max_concurrency = int(max_concurrency)
        self.user = user
        self.extra_args = tuple(extra_args)
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"sink{port}-"))
        self.dump_dir = Path(dump_dir) if dump_dir is not None else None
        self.counter_path = self.workdir / f"smtp-sink-{self.port}.counters"
        self.stderr_path = self.workdir / f"smtp-sink-{self.port}.stderr"
        self.proc: subprocess.Popen | None = None
        self._fd: int | None = None

    def start(self, deadline_s: float = 10.0) -> "Sink":
        if not os.access(SMTP_SINK, os.X_OK):
            raise LoadgenError(f"{SMTP_SINK} not found (install Debian package postfix)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [SMTP_SINK, "-c", "-m", str(self.max_concurrency)]
        if os.geteuid() == 0:
            # smtp-sink refuses to run as root without -u; it drops to `user` after bind
            cmd += ["-u", self.user]
        if self.dump_dir is not None:
            self.dump_dir.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                pw = pwd.getpwnam(self.user)
                os.chown(self.dump_dir, pw.pw_uid, pw.pw_gid)  # sink writes as `user`
            cmd += ["-d", str(self.dump_dir) + "/%Y%m%d%H%M%S."]
        cmd += list(self.extra_args)
        cmd += [f"127.0.0.1:{self.port}", str(self.backlog)]
        with open(self.counter_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         start_new_session=True)
        self._fd = os.open(self.counter_path, os.O_RDONLY)
        try:
            wait_banner(self.port, deadline_s, proc=self.proc)
        except LoadgenError as e:
            err = self.stderr_path.read_text(errors="replace")
            self.stop()
            raise LoadgenError(f"smtp-sink did not start: {e}\n{err}") from None
        return self

    def counters(self) -> tuple[int, int, int]:
        """(sessions_ended, quits, messages) from the last complete counter record."""
        if self._fd is None:
            raise LoadgenError("sink not started")
        size = os.fstat(self._fd).st_size
        if size == 0:
            return (0, 0, 0)
        start = max(0, size - 512)
        buf = os.pread(self._fd, size - start, start)
        end = buf.rfind(b"\r")
        if end < 0:
            return (0, 0, 0)
        recs = _REC.findall(buf[:end])
        if not recs:
            return (0, 0, 0)
        s, q, m = recs[-1]
        return (int(s), int(q), int(m))

    def count(self) -> int:
        """Messages fully received (final '.') since the sink started."""
        return self.counters()[2]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_count(self, target: int, deadline_s: float, poll_s: float = 0.005) -> float:
        """Poll until count() >= target; returns time.monotonic() of that poll."""
        deadline = time.monotonic() + deadline_s
        while True:
            now = time.monotonic()
            if self.count() >= target:
                return now
            if now > deadline:
                raise LoadgenError(f"sink on port {self.port}: count {self.count()} < {target} "
                                   f"after {deadline_s:.0f}s")
            if not self.alive():
                raise LoadgenError(f"smtp-sink on port {self.port} died: "
                                   + self.stderr_path.read_text(errors="replace"))
            time.sleep(poll_s)

    def stop(self) -> None:
        main = threading.current_thread() is threading.main_thread()
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM}) if main else None
        try:
            self._stop()
        finally:
            if main:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def _stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    try:
                        os.killpg(self.proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    self.proc.wait(5)
            self.proc = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def cleanup(self) -> None:
        """stop() and remove the sink's own temporary workdir (if it created one)."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "Sink":
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()


def start_sink(port: int, *, workdir: str | os.PathLike | None = None,
               dump_dir: str | os.PathLike | None = None, backlog: int = 256,
               max_concurrency: int = 512, user: str = "nobody",
               extra_args: tuple[str, ...] = (), deadline_s: float = 10.0) -> Sink:
    """Start ``smtp-sink -c`` on 127.0.0.1:port and wait (poll) for its 220 banner.

    dump_dir: if given, also dump every message to its own file there (slow).
    user: privileges smtp-sink drops to when started as root (it requires -u then).
    Returns a started Sink; call .stop() (or .cleanup()) when done."""
    return Sink(port, workdir=workdir, dump_dir=dump_dir, backlog=backlog,
                max_concurrency=max_concurrency, user=user,
                extra_args=extra_args).start(deadline_s)


# ------------------------------------------------------------------------ message
_WORDS = ("the of and to in is that for it as was with be by on not he this are or his "
          "from at which but have an they you were her she there been one all we their "
          "has would when if so no will can more about out up into do any your what "
          "some could them than other only then its time these two may first new "
          "message relay throughput benchmark signing domain header body queue server "
          "client transfer delivery network latency report invoice meeting schedule").split()


def make_message(size_bytes: int, sender: str = DEFAULT_SENDER,
                 recipient: str = DEFAULT_RECIPIENT, subject: str | None = None,
                 seed: int = 1) -> bytes:
    """A realistic RFC 5322 message (LF line endings, as smtp-source -F wants)
    whose *body* is exactly ``size_bytes`` bytes on the wire (smtp-source sends
    each line + CRLF). Lines are <= 76 chars of plain words; no line starts with
    '.', so no dot-stuffing changes the size. Headers (~350 bytes) come on top,
    like smtp-source -l which also counts payload only."""
    rng = random.Random(seed)
    dom = sender.rsplit("@", 1)[-1]
    headers = [
        f"From: Bench Sender <{sender}>",
        f"To: <{recipient}>",
        f"Subject: {subject or f'Benchmark message, {size_bytes} byte body'}",
        f"Date: {email.utils.formatdate(localtime=False)}",
        f"Message-ID: <{uuid.uuid4().hex}@{dom}>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "Content-Transfer-Encoding: 7bit",
    ]
    # line lengths (chars, excluding CRLF) summing with +2 each to size_bytes
    lengths: list[int] = []
    remaining = max(0, int(size_bytes))
    while remaining >= 78:
        lengths.append(76)
        remaining -= 78
    if remaining >= 2:
        lengths.append(remaining - 2)
    elif remaining == 1:
        if lengths:
            lengths[-1] -= 1
            lengths.append(0)
        # size 1 can't be expressed with CRLF lines; body will be empty
    lines = []
    for n in lengths:
        s = ""
        while len(s) < n:
            s += rng.choice(_WORDS) + " "
        s = s[:n].rstrip(" ")
        s = s + "x" * (n - len(s))  # keep exact length without trailing space
        lines.append(s)
    text = "\n".join(headers) + "\n\n" + "".join(l + "\n" for l in lines)
    return text.encode("ascii")


def write_message_file(path: str | os.PathLike, size_bytes: int, **kw) -> Path:
    p = Path(path)
    p.write_bytes(make_message(size_bytes, **kw))
    return p


# ------------------------------------------------------------------------ measure
def _kill_group(p: subprocess.Popen) -> None:
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()


_spawn_lock = threading.Lock()


def _run_source(args: list[str], timeout: float, running: list | None = None,
                stop: threading.Event | None = None) -> None:
    with _spawn_lock:  # measure() sets `stop` under the same lock before killing
        if stop is not None and stop.is_set():
            return
        p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True)
        if running is not None:
            running.append(p)  # so measure() can kill it on error / Ctrl-C
    try:
        out, err = p.communicate(timeout=timeout)
    except BaseException:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()
        raise
    if p.returncode != 0:
        raise LoadgenError(f"smtp-source failed ({p.returncode}): {err.decode(errors='replace')}"
                           f"{out.decode(errors='replace')}")


def measure(target_port: int | list[int], sink: Sink, messages: int, size_bytes: int,
            sessions: int = 20, per_session: int | None = 1, *,
            sender: str = DEFAULT_SENDER, recipient: str = DEFAULT_RECIPIENT,
            message_file: str | os.PathLike | None = None, timeout: float | None = None,
            poll_s: float = 0.005, host: str = "127.0.0.1",
            own_env: list[str] | tuple[str, ...] = ()) -> dict:
    """Inject ``messages`` messages into host:target_port with smtp-source and
    wait until ``sink`` has counted all of them. A list of ports shares the messages and
    the sessions between them (one smtp-source each; one message per connection only).

    size_bytes: body size on the wire (a realistic prepared message with From
        in ``sender``'s domain is sent via ``smtp-source -F``; pass
        message_file to send your own file instead).
    sessions: parallel SMTP sessions (smtp-source -s).
    per_session: messages per SMTP connection. 1 = new connection per message
        (plain smtp-source); None = keep each of the `sessions` connections open
        for all its messages (smtp-source -d, ~messages/sessions each);
        k > 1 = `sessions` workers, each running `smtp-source -d -s 1 -m k`
        repeatedly until all messages are sent.
    timeout: overall deadline in seconds (default 60 + messages/20).
    own_env: "KEY=VALUE" markers of processes that belong to the system under
        test although they are not our descendants (see ForeignCpu).

    Returns dict(messages, size_bytes, sessions, per_session, elapsed_s,
    msgs_per_s, inject_s, mbytes_per_s, sink_count, foreign_cpu_s,
    foreign_cpu_frac, steal_frac). foreign_cpu_frac is the share of the machine's CPU
    capacity used by unrelated processes during the run: if it is not ~0 the
    run was disturbed by other load; steal_frac, the share the hypervisor gave other
    machines while this one wanted it (on a shared cloud VM, the larger disturbance). elapsed_s runs from just before
    smtp-source starts until the poll that sees the last message counted at the
    sink; inject_s is when smtp-source(s) finished (all messages accepted by the
    target). Raises LoadgenError on smtp-source failure, sink death or timeout."""
    if messages <= 0:
        raise ValueError("messages must be > 0")
    if not os.access(SMTP_SOURCE, os.X_OK):
        raise LoadgenError(f"{SMTP_SOURCE} not found (install Debian package postfix)")
    timeout = float(timeout) if timeout is not None else 60.0 + messages / 20.0
    tmpdir = None
    if message_file is None:
        tmpdir = tempfile.mkdtemp(prefix="loadgen-msg-")
        message_file = write_message_file(Path(tmpdir) / "message.eml", size_bytes,
                                          sender=sender, recipient=recipient)
    base = [SMTP_SOURCE, "-F", str(message_file), "-f", sender, "-t", recipient,
            "-M", "bench-client.example"]
    ports = [target_port] if isinstance(target_port, int) else list(target_port)
    target = f"{host}:{ports[0]}"
    sessions = max(1, min(int(sessions), messages))
    if per_session is not None and per_session <= 0:
        per_session = None
    if len(ports) > 1 and per_session != 1:
        raise ValueError("several targets: one message per connection only (per_session=1)")

    # state shared with the smtp-source worker threads
    errors: list[BaseException] = []
    stop = threading.Event()
    lock = threading.Lock()
    remaining = [messages]
    running: list[subprocess.Popen] = []  # smtp-source processes (own sessions)

    def pool_worker(k: int) -> None:
        while not stop.is_set():
            with lock:
                n = min(k, remaining[0])
                remaining[0] -= n
            if n <= 0:
                return
            try:
                _run_source(base + ["-d", "-s", "1", "-m", str(n), target], timeout,
                            running, stop)
            except BaseException as e:  # noqa: BLE001
                errors.append(e)
                stop.set()
                return

    def single(args: list[str]) -> None:
        try:
            _run_source(args, timeout, running, stop)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
            stop.set()

    before = sink.count()
    goal = before + messages
    threads: list[threading.Thread] = []
    if per_session == 1:
        shares = [messages // len(ports) + (i < messages % len(ports)) for i in range(len(ports))]
        plan = [base + ["-s", str(max(1, sessions // len(ports))), "-m", str(n), f"{host}:{port}"]
                for port, n in zip(ports, shares)]
    elif per_session is None or per_session >= -(-messages // sessions):
        plan = [base + ["-d", "-s", str(sessions), "-m", str(messages), target]]
    else:
        plan = None
    foreign = ForeignCpu(own_env)
    t0 = time.monotonic()
    try:
        if plan is not None:
            threads = [threading.Thread(target=single, args=(command,), daemon=True)
                       for command in plan]
        else:
            threads = [threading.Thread(target=pool_worker, args=(per_session,), daemon=True)
                       for _ in range(sessions)]
        for t in threads:
            t.start()
        deadline = t0 + timeout
        t_inject = None
        t_done = None
        while True:
            now = time.monotonic()
            if t_inject is None and not any(t.is_alive() for t in threads):
                t_inject = now
            if errors:
                raise errors[0]
            if sink.count() >= goal:
                t_done = now
                break
            if now > deadline:
                raise LoadgenError(f"timeout after {timeout:.0f}s: sink counted "
                                   f"{sink.count() - before}/{messages}")
            if not sink.alive():
                raise LoadgenError("smtp-sink died during measurement")
            time.sleep(poll_s)
        for t in threads:
            t.join(max(0.1, deadline - time.monotonic()))
        if errors:
            raise errors[0]
        if t_inject is None:
            t_inject = time.monotonic()
    finally:
        with _spawn_lock:
            stop.set()
        for p in list(running):  # no-op for finished ones; kills leftovers on error/^C
            _kill_group(p)
        for t in threads:
            t.join(5)
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)
    elapsed = t_done - t0
    return {
        "messages": messages,
        "size_bytes": size_bytes,
        "sessions": sessions,
        "per_session": per_session,
        "elapsed_s": round(elapsed, 4),
        "inject_s": round(min(t_inject, t_done) - t0, 4),
        "msgs_per_s": round(messages / elapsed, 2),
        "mbytes_per_s": round(messages * size_bytes / elapsed / 1e6, 3),
        "sink_count": sink.count() - before,
        **foreign.stop(),
    }


# ------------------------------------------------------------ dumps / DKIM check
def read_dumps(dump_dir: str | os.PathLike) -> list[bytes]:
    """Messages dumped by ``smtp-sink -d`` into dump_dir, with smtp-sink's own
    X-Client-*/X-*-Args/Received prefix removed; CRLF line endings."""
    out = []
    for f in sorted(Path(dump_dir).iterdir()):
        if not f.is_file():
            continue
        lines = f.read_bytes().split(b"\n")
        i = 0
        while i < len(lines) and not lines[i].startswith(b"Received:"):
            i += 1
        i += 1
        while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
            i += 1
        msg = lines[i:]
        # smtp-sink appends one empty line after each message
        if msg and msg[-1] == b"":
            msg = msg[:-1]
        if msg and msg[-1] == b"":
            msg = msg[:-1]
        out.append(b"".join(l.rstrip(b"\r") + b"\r\n" for l in msg))
    return out


def _split_message(raw: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """-> ([(name, full_header_bytes_with_CRLFs)], body) for a CRLF message."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        head, body = raw, b""
    headers: list[tuple[bytes, bytes]] = []
    for line in (head + b"\r\n").split(b"\r\n")[:-1]:
        if line[:1] in (b" ", b"\t") and headers:
            name, val = headers[-1]
            headers[-1] = (name, val + b"\r\n" + line)
        else:
            headers.append((line.split(b":", 1)[0].strip(), line))
    return headers, body


def _relaxed_header(h: bytes) -> bytes:
    name, _, value = h.partition(b":")
    value = re.sub(rb"\r\n", b"", value)
    value = re.sub(rb"[ \t]+", b" ", value).strip(b" ")
    return name.strip().lower() + b":" + value


def _relaxed_body(body: bytes) -> bytes:
    lines = body.split(b"\r\n")
    if lines and lines[-1] == b"":
        lines = lines[:-1]
    lines = [re.sub(rb"[ \t]+", b" ", l).rstrip(b" ") for l in lines]
    while lines and lines[-1] == b"":
        lines.pop()
    return b"".join(l + b"\r\n" for l in lines)


def _dkim_tags(value: bytes) -> dict[str, str]:
    tags = {}
    for part in value.decode("ascii", "replace").split(";"):
        if "=" in part:
            k, v = part.split("=", 1)
            tags[k.strip()] = re.sub(r"\s+", "", v)
    return tags


def check_dkim(raw: bytes, domain: str | None = None, selector: str | None = None,
               public_key_pem: str | os.PathLike | None = None) -> dict:
    """Check the (first) DKIM-Signature of a CRLF message.

    Returns dict(signed, d, s, a, c, body_hash_ok, signature_ok, error). With
    public_key_pem the RSA-SHA256 signature over the relaxed header set is
    verified with ``openssl dgst -verify`` (otherwise signature_ok is None).
    Only relaxed/relaxed and rsa-sha256 are verified (what we configure)."""
    res = {"signed": False, "d": None, "s": None, "a": None, "c": None,
           "body_hash_ok": False, "signature_ok": None, "error": None}
    headers, body = _split_message(raw)
    sigs = [h for n, h in headers if n.lower() == b"dkim-signature"]
    if not sigs:
        res["error"] = "no DKIM-Signature header"
        return res
    sig = sigs[0]
    tags = _dkim_tags(sig.partition(b":")[2])
    res.update(signed=True, d=tags.get("d"), s=tags.get("s"), a=tags.get("a"), c=tags.get("c"))
    problems = []
    if domain is not None and tags.get("d") != domain:
        problems.append(f"d={tags.get('d')} != {domain}")
    if selector is not None and tags.get("s") != selector:
        problems.append(f"s={tags.get('s')} != {selector}")
    if tags.get("a") != "rsa-sha256" or tags.get("c") != "relaxed/relaxed":
        problems.append(f"unsupported a={tags.get('a')} c={tags.get('c')}")
        res["error"] = "; ".join(problems)
        return res
    cbody = _relaxed_body(body)
    if "l" in tags:
        cbody = cbody[: int(tags["l"])]
    bh = base64.b64encode(hashlib.sha256(cbody).digest()).decode()
    res["body_hash_ok"] = bh == tags.get("bh")
    if not res["body_hash_ok"]:
        problems.append("body hash mismatch")
    if public_key_pem is not None:
        # header hash input: h= headers (bottom-up instance selection), then the
        # signature header itself with b= emptied and no trailing CRLF
        avail: dict[bytes, list[bytes]] = {}
        for n, h in headers:
            if h is sig:
                continue
            avail.setdefault(n.lower(), []).append(h)
        data = b""
        for name in tags.get("h", "").split(":"):
            lst = avail.get(name.strip().lower().encode())
            if lst:
                data += _relaxed_header(lst.pop()) + b"\r\n"
        sig_nob = re.sub(rb"((?:^|;)[ \t\r\n]*b[ \t\r\n]*=)[^;]*", rb"\1",
                         sig.partition(b":")[2])
        data += _relaxed_header(b"DKIM-Signature:" + sig_nob)
        with tempfile.TemporaryDirectory(prefix="dkimchk-") as td:
            Path(td, "data").write_bytes(data)
            Path(td, "sig").write_bytes(base64.b64decode(tags.get("b", "")))
            r = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(public_key_pem),
                                "-signature", str(Path(td, "sig")), str(Path(td, "data"))],
                               capture_output=True, text=True)
        res["signature_ok"] = r.returncode == 0 and "Verified OK" in r.stdout
        if not res["signature_ok"]:
            problems.append("RSA signature does not verify")
    res["error"] = "; ".join(problems) or None
    return res
