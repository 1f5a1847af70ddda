"""A private Postfix + OpenDKIM signing relay, for benchmarking (stdlib only).

    from bench.postfix_peer import PostfixPeer

    with PostfixPeer(listen_port=31025, upstream_port=32025,
                     workdir="/var/lib/relay-bench/x",  # not under /tmp: see below
                     key_pem_path="/var/lib/relay-bench/dkim.key",
                     domain="bench.example", selector="bench") as peer:
        ...  # SMTP on 127.0.0.1:31025, signed mail goes to 127.0.0.1:32025

The instance is fully private: its own config_directory, queue_directory and
data_directory under ``workdir`` (``workdir/postfix/...``), its own OpenDKIM
config and milter socket (``workdir/opendkim/...``; unix socket by default,
``milter_socket="inet"`` for a loopback TCP socket). It never touches /etc/postfix or
/etc/opendkim.conf and binds to 127.0.0.1 only.

Requirements: root (Postfix's master must start as root and drop to the
``postfix`` user), Debian packages postfix + opendkim (see setup_debian.sh).

Pitfalls handled here:
  * every path component of ``workdir`` must be traversable (o+x) by the
    ``postfix`` and ``opendkim`` users: tempfile.mkdtemp() creates 0700 dirs,
    so ``workdir`` is chmod'ed 0755 (its parents are checked and reported);
  * no ancestor of ``workdir`` may be world-writable: OpenDKIM refuses its own
    config file under /tmp or /var/tmp ("/tmp can be read or written by other
    users", exit 78). Use e.g. /var/lib/relay-bench/<run> (postfix_bench.py does);
  * Postfix's queue dirs get their ownership/modes from ``postfix start``
    (postfix-script runs ``postfix check``/post-install create-missing using
    /etc/postfix/postfix-files); the config dir must be root-owned;
  * OpenDKIM refuses a private key readable by group/others (RequireSafeKeys),
    so the key is *copied* into workdir, owned by opendkim, mode 0600;
  * milter transport: ``milter_socket="unix"`` (default, as Debian's packaged
    opendkim.conf) or ``"inet"`` (127.0.0.1:milter_port). Over loopback TCP the
    Postfix<->libmilter exchange hits a Nagle/delayed-ACK stall of ~88 ms per
    message on Linux, independent of message size and load (one session:
    ~11 msg/s over inet vs ~180 msg/s over unix), which caps throughput at
    ~sessions/0.09 s. The unix socket lives in workdir/opendkim/sock/
    (opendkim:postfix 0750; the socket itself 0777 via UMask 000);
  * no syslog in containers: Postfix logs via postlogd to ``maillog_file``
    (workdir/postfix/maillog), OpenDKIM runs in the foreground with its
    stderr in workdir/opendkim/opendkim.log.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"
OPENDKIM = "/usr/sbin/opendkim"


class PeerError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, deadline_s: float = 20.0, banner: bytes | None = None,
              host: str = "127.0.0.1", proc: subprocess.Popen | None = None) -> None:
    """Poll until host:port accepts a TCP connection (and, if ``banner`` is given,
    the first line the server sends starts with it). Raises PeerError on timeout or
    if ``proc`` exits meanwhile."""
    deadline = time.monotonic() + deadline_s
    last_err: object = None
    delay = 0.005
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise PeerError(f"process exited with {proc.returncode} before port {port} was ready")
        try:
            with socket.create_connection((host, port), timeout=2.0) as s:
                if banner is None:
                    return
                s.settimeout(max(0.1, deadline - time.monotonic()))
                data = b""
                while b"\n" not in data:
                    chunk = s.recv(512)
                    if not chunk:
                        break
                    data += chunk
                if data.startswith(banner):
                    try:
                        s.sendall(b"QUIT\r\n")
                    except OSError:
                        pass
                    return
                last_err = f"unexpected banner {data[:80]!r}"
        except OSError as e:
            last_err = e
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    raise PeerError(f"port {host}:{port} not ready after {deadline_s}s: {last_err}")


def wait_unix(path: str | os.PathLike, deadline_s: float = 20.0,
              proc: subprocess.Popen | None = None) -> None:
    """Poll until the UNIX-domain socket at path accepts a connection."""
    deadline = time.monotonic() + deadline_s
    last_err: object = None
    delay = 0.005
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise PeerError(f"process exited with {proc.returncode} before {path} was ready")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(2.0)
                s.connect(str(path))
                return
        except OSError as e:
            last_err = e
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    raise PeerError(f"unix socket {path} not ready after {deadline_s}s: {last_err}")


def wait_port_closed(port: int, deadline_s: float = 10.0, host: str = "127.0.0.1") -> bool:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                pass
        except OSError:
            return True
        time.sleep(0.02)
    return False


@contextlib.contextmanager
def signals_deferred():
    """Block SIGINT/SIGTERM (main thread) for the duration, so a Ctrl-C cannot
    cut a cleanup in half; a pending signal is delivered on exit. Do not start
    long-lived daemons inside (children inherit the blocked mask)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie counts as dead
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state != b"Z"
    except OSError:
        return False


def _pids_with_env(key: str, value: str) -> list[int]:
    """PIDs whose environment has key=value (how we find the daemons of *our*
    Postfix instance: `postfix -c DIR` exports MAIL_CONFIG=DIR to master, and
    master's children inherit it)."""
    needle = f"{key}={value}".encode()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if needle in env:
            out.append(int(d))
    return out


class PostfixPeer:
    """Private Postfix (smtpd on 127.0.0.1:listen_port, relayhost
    [127.0.0.1]:upstream_port) with an OpenDKIM signing milter on a loopback inet
    socket. Use as a context manager or call start()/stop()."""

    def __init__(self, listen_port: int, upstream_port: int, workdir: str | os.PathLike,
                 key_pem_path: str | os.PathLike, domain: str, selector: str, *,
                 milter_socket: str = "unix", milter_port: int | None = None,
                 process_limit: int = 50,
                 smtp_concurrency: int = 20, in_flow_delay: str = "1s",
                 extra_main_cf: dict[str, str] | None = None,
                 start_timeout: float = 30.0):
        self.listen_port = int(listen_port)
        self.upstream_port = int(upstream_port)
        self.workdir = Path(workdir).resolve()
        self.key_pem_path = Path(key_pem_path)
        self.domain = domain
        self.selector = selector
        if milter_socket not in ("unix", "inet"):
            raise ValueError("milter_socket must be 'unix' or 'inet'")
        self.milter_socket = milter_socket
        self.milter_port = (milter_port or _free_port()) if milter_socket == "inet" else None
        self.process_limit = int(process_limit)
        self.smtp_concurrency = int(smtp_concurrency)
        self.in_flow_delay = in_flow_delay
        self.extra_main_cf = dict(extra_main_cf or {})
        self.start_timeout = start_timeout

        self.pf_dir = self.workdir / "postfix"
        self.config_dir = self.pf_dir / "etc"
        self.queue_dir = self.pf_dir / "spool"
        self.data_dir = self.pf_dir / "data"
        self.maillog = self.pf_dir / "maillog"
        self.dk_dir = self.workdir / "opendkim"
        self.dk_conf = self.dk_dir / "opendkim.conf"
        self.dk_key = self.dk_dir / f"{selector}.private"
        self.dk_log = self.dk_dir / "opendkim.log"
        self.dk_pidfile = self.dk_dir / "opendkim.pid"
        self.dk_sock_dir = self.dk_dir / "sock"
        self.dk_sock = self.dk_sock_dir / "opendkim.sock"

        self._dkim_proc: subprocess.Popen | None = None
        self._dk_log_fh = None
        self._postfix_started = False
        self._master_pid: int | None = None

    # ------------------------------------------------------------------ config
    def _main_cf(self) -> str:
        p = {
            "compatibility_level": "3.6",
            "config_directory": str(self.config_dir),
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "command_directory": "/usr/sbin",
            "daemon_directory": "/usr/lib/postfix/sbin",
            "meta_directory": "/etc/postfix",
            "shlib_directory": "/usr/lib/postfix",
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "maillog_file": str(self.maillog),
            "syslog_name": f"postfix-bench{self.listen_port}",
            # identity / networking: loopback only, no DNS needed
            "myhostname": f"relay.{self.domain}",
            "mydomain": self.domain,
            "myorigin": "$mydomain",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "mynetworks_style": "host",
            "smtpd_banner": "$myhostname ESMTP",
            "biff": "no",
            "append_dot_mydomain": "no",
            "readme_directory": "no",
            # pure relay: no local delivery, everything goes to the relayhost
            "mydestination": "",
            "local_recipient_maps": "",
            "local_transport": "error:local delivery is disabled",
            "alias_maps": "",
            "alias_database": "",
            "relay_domains": "",
            "relayhost": f"[127.0.0.1]:{self.upstream_port}",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "smtpd_recipient_restrictions": "",
            "content_filter": "",
            "header_checks": "",
            "body_checks": "",
            "smtpd_tls_security_level": "none",
            "smtp_tls_security_level": "none",
            "smtputf8_enable": "no",
            "message_size_limit": "52428800",
            "notify_classes": "",
            # throughput tuning for a 2-core box
            "default_process_limit": str(self.process_limit),
            "smtpd_client_connection_count_limit": str(self.process_limit),
            "smtp_destination_concurrency_limit": str(self.smtp_concurrency),
            "smtp_connection_cache_on_demand": "yes",
            "smtp_connection_cache_destinations": f"[127.0.0.1]:{self.upstream_port}",
            "smtp_connection_cache_time_limit": "2s",
            "in_flow_delay": self.in_flow_delay,
            "default_destination_rate_delay": "0s",
            # DKIM signing milter
            "smtpd_milters": self.milter_address(),
            "non_smtpd_milters": "$smtpd_milters",
            "milter_default_action": "tempfail",
            "milter_protocol": "6",
        }
        p.update(self.extra_main_cf)
        return "".join(f"{k} = {v}\n" for k, v in p.items())

    def _master_cf(self) -> str:
        # chroot = n everywhere (no chroot jail to populate), wakeup/limits as stock.
        return f"""\
# service type  private unpriv  chroot  wakeup  maxproc command
127.0.0.1:{self.listen_port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

    def milter_address(self) -> str:
        """The milter address in Postfix notation (smtpd_milters)."""
        if self.milter_socket == "inet":
            return f"inet:127.0.0.1:{self.milter_port}"
        return f"unix:{self.dk_sock}"

    def _opendkim_conf(self) -> str:
        if self.milter_socket == "inet":
            sock, umask = f"inet:{self.milter_port}@127.0.0.1", "007"
        else:
            # socket mode 0777, but its directory is opendkim:postfix 0750, so only
            # the postfix user (and opendkim, root) can reach it
            sock, umask = f"local:{self.dk_sock}", "000"
        return f"""\
Syslog                  no
LogWhy                  no
UMask                   {umask}
Mode                    s
Domain                  {self.domain}
Selector                {self.selector}
KeyFile                 {self.dk_key}
Canonicalization        relaxed/relaxed
SignatureAlgorithm      rsa-sha256
OversignHeaders         From
InternalHosts           127.0.0.1
Socket                  {sock}
PidFile                 {self.dk_pidfile}
UserID                  opendkim:opendkim
Background              no
AutoRestart             no
SoftwareHeader          no
"""

    def _prepare(self) -> None:
        if os.geteuid() != 0:
            raise PeerError("PostfixPeer must run as root (Postfix master starts as root)")
        for exe in (POSTFIX, OPENDKIM):
            if not os.access(exe, os.X_OK):
                raise PeerError(f"{exe} not found; run bench/setup_debian.sh")
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o755)
        # every ancestor must be traversable by the postfix/opendkim users
        # OpenDKIM refuses a config/key file below a world-writable directory
        # (e.g. /tmp, /var/tmp): "... can be read or written by other users".
        for anc in [self.workdir, *self.workdir.parents]:
            mode = os.stat(anc).st_mode
            if not mode & 0o001:
                raise PeerError(f"{anc} is not o+x; postfix/opendkim users cannot reach workdir")
            if mode & 0o002:
                raise PeerError(f"workdir ancestor {anc} is world-writable; opendkim refuses "
                                "config/key files below it. Use e.g. /var/lib/relay-bench/...")
        if self.pf_dir.exists():
            shutil.rmtree(self.pf_dir)  # fresh queue each start
        for d in (self.pf_dir, self.config_dir, self.dk_dir):
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, 0, 0)
            os.chmod(d, 0o755)
        self.queue_dir.mkdir(mode=0o755, exist_ok=True)  # subdirs made by postfix check
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        pf = pwd.getpwnam("postfix")
        os.chown(self.data_dir, pf.pw_uid, pf.pw_gid)
        (self.config_dir / "main.cf").write_text(self._main_cf())
        (self.config_dir / "master.cf").write_text(self._master_cf())

        dk = pwd.getpwnam("opendkim")
        dk_gid = grp.getgrnam("opendkim").gr_gid
        os.chown(self.dk_dir, dk.pw_uid, dk_gid)  # pid file written after setuid
        self.dk_sock_dir.mkdir(exist_ok=True)
        os.chown(self.dk_sock_dir, dk.pw_uid, pf.pw_gid)
        os.chmod(self.dk_sock_dir, 0o750)
        if self.dk_sock.exists() or self.dk_sock.is_symlink():
            self.dk_sock.unlink()
        shutil.copyfile(self.key_pem_path, self.dk_key)
        os.chown(self.dk_key, dk.pw_uid, dk_gid)
        os.chmod(self.dk_key, 0o600)
        self.dk_conf.write_text(self._opendkim_conf())

    # ------------------------------------------------------------------- start
    def start(self) -> "PostfixPeer":
        try:
            self._prepare()
            self._start_opendkim()
            self._start_postfix()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_opendkim(self) -> None:
        self._dk_log_fh = open(self.dk_log, "ab")
        self._dkim_proc = subprocess.Popen(
            [OPENDKIM, "-f", "-x", str(self.dk_conf)],
            stdin=subprocess.DEVNULL, stdout=self._dk_log_fh, stderr=subprocess.STDOUT,
            start_new_session=True)
        try:
            if self.milter_socket == "inet":
                wait_port(self.milter_port, self.start_timeout, proc=self._dkim_proc)
            else:
                wait_unix(self.dk_sock, self.start_timeout, proc=self._dkim_proc)
        except PeerError as e:
            raise PeerError(f"opendkim did not come up: {e}\n{self._tail(self.dk_log)}") from None

    def _postfix_cmd(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = dict(os.environ)
        env.pop("MAIL_CONFIG", None)
        r = subprocess.run([POSTFIX, "-c", str(self.config_dir), *args],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env,
                           timeout=60)
        if check and r.returncode != 0:
            raise PeerError(f"postfix {' '.join(args)} failed ({r.returncode}): "
                            f"{r.stdout}{r.stderr}\n{self._tail(self.maillog)}")
        return r

    def _start_postfix(self) -> None:
        self._postfix_started = True  # before: an interrupted start must still be stopped
        self._postfix_cmd("start")
        try:
            # our own banner, so a foreign server on the same port is not mistaken for us
            wait_port(self.listen_port, self.start_timeout,
                      banner=f"220 relay.{self.domain} ESMTP".encode())
        except PeerError as e:
            raise PeerError(f"postfix did not come up: {e}\n{self._tail(self.maillog)}") from None
        self._master_pid = self._read_master_pid()

    def _read_master_pid(self) -> int | None:
        try:
            return int((self.data_dir / "master.lock").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    # -------------------------------------------------------------------- stop
    def stop(self, timeout: float = 15.0) -> None:
        """Stop Postfix (``postfix stop``, then wait for master and all of this
        instance's daemons to exit; SIGKILL stragglers) and OpenDKIM (SIGTERM,
        then SIGKILL). Idempotent; leaves nothing running. SIGINT/SIGTERM are
        deferred until it is done."""
        with signals_deferred():
            self._stop(timeout)

    def _stop(self, timeout: float) -> None:
        errors = []
        if self._postfix_started:
            try:
                self._stop_postfix(timeout)
            except Exception as e:  # keep going: opendkim must be stopped too
                errors.append(e)
            self._postfix_started = False
        if self._dkim_proc is not None:
            p = self._dkim_proc
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    p.wait(timeout)
                except subprocess.TimeoutExpired:
                    try:
                        os.killpg(p.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    p.wait(5)
            self._dkim_proc = None
        if self._dk_log_fh is not None:
            self._dk_log_fh.close()
            self._dk_log_fh = None
        if errors:
            raise errors[0]

    def _stop_postfix(self, timeout: float) -> None:
        master = self._master_pid or self._read_master_pid()
        self._postfix_cmd("stop", check=False)
        deadline = time.monotonic() + timeout
        cfg = str(self.config_dir)
        while time.monotonic() < deadline:
            alive = [p for p in _pids_with_env("MAIL_CONFIG", cfg) if _pid_alive(p)]
            if master is not None and _pid_alive(master):
                alive.append(master)
            if not alive:
                break
            time.sleep(0.05)
        else:
            # `postfix stop` did not finish in time: kill exactly this instance's pids
            for pid in set(_pids_with_env("MAIL_CONFIG", cfg) + ([master] if master else [])):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        wait_port_closed(self.listen_port, 5.0)

    # ------------------------------------------------------------------ helpers
    def queue_size(self) -> int:
        """Number of queue files in incoming/active/deferred/hold (0 == drained)."""
        n = 0
        for sub in ("incoming", "active", "deferred", "hold", "maildrop"):
            for _root, _dirs, files in os.walk(self.queue_dir / sub):
                n += len(files)
        return n

    @staticmethod
    def _tail(path: Path, n: int = 30) -> str:
        try:
            lines = Path(path).read_text(errors="replace").splitlines()[-n:]
        except OSError:
            return f"(no {path})"
        return f"--- tail {path} ---\n" + "\n".join(lines)

    def logs(self) -> str:
        return self._tail(self.maillog) + "\n" + self._tail(self.dk_log)

    def __enter__(self) -> "PostfixPeer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (f"PostfixPeer(listen=127.0.0.1:{self.listen_port}, "
                f"upstream=127.0.0.1:{self.upstream_port}, milter={self.milter_address()}, "
                f"workdir={self.workdir})")
