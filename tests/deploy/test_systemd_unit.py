"""deploy/systemd/relay.service: relay runs as its own user with the hardening the issue
lists, binds 25/465/587 through CAP_NET_BIND_SERVICE alone, reloads on SIGHUP, drains on
SIGTERM, and systemd itself accepts the unit."""
import re
import subprocess

from tests.deploy.support import DEPLOY, tool

UNIT = DEPLOY / "systemd" / "relay.service"


def directives() -> dict[str, list[str]]:
    """[Service] key -> its values, in order (systemd keys may repeat)."""
    found: dict[str, list[str]] = {}
    section = None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service":
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def one(key: str) -> str:
    values = directives()[key]
    assert len(values) == 1, f"{key} is set {len(values)} times"
    return values[0]


def seconds(value: str) -> int:
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match, value
    return int(match.group(1)) * (60 if match.group(2) == "min" else 1)


def test_runs_as_its_own_user():
    """A dedicated user (User=relay, or DynamicUser), never root."""
    d = directives()
    assert d.get("DynamicUser") == ["yes"] or d.get("User") == ["relay"]
    assert "root" not in d.get("User", []) + d.get("Group", [])


def test_filesystem_is_read_only_but_the_spool():
    """ProtectSystem=strict, no home, private /tmp, and /var/lib/relay writable."""
    assert one("ProtectSystem") == "strict"
    assert one("ProtectHome") in ("true", "yes", "read-only", "tmpfs")
    assert one("PrivateTmp") in ("true", "yes")
    d = directives()
    assert d.get("StateDirectory") == ["relay"] or "/var/lib/relay" in " ".join(d.get("ReadWritePaths", []))


def test_privileges_are_only_binding_low_ports():
    """No new privileges; the capability set is CAP_NET_BIND_SERVICE alone."""
    assert one("NoNewPrivileges") in ("true", "yes")
    assert one("CapabilityBoundingSet").split() == ["CAP_NET_BIND_SERVICE"]
    assert one("AmbientCapabilities").split() == ["CAP_NET_BIND_SERVICE"]


def test_system_calls_and_sockets_are_restricted():
    """Only IP and Unix sockets; the @system-service system call set."""
    assert set(one("RestrictAddressFamilies").split()) <= {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert "@system-service" in directives()["SystemCallFilter"]


def test_reload_sends_sighup():
    """`systemctl reload relay` sends SIGHUP to relay, which re-reads relay.yaml."""
    assert re.fullmatch(r"/(usr/)?bin/kill -(HUP|s HUP|SIGHUP) \$MAINPID", one("ExecReload"))


def test_stop_drains():
    """SIGTERM to relay alone (it stops its delivery process itself), and more time than
    the 30 s drain before SIGKILL; restart after a failure."""
    assert one("KillSignal") == "SIGTERM"
    assert one("KillMode") == "mixed"
    assert seconds(one("TimeoutStopSec")) > 30
    assert one("Restart") == "on-failure"


def test_secrets_come_from_an_optional_environment_file():
    """Secrets named by *_env keys come from /etc/relay/relay.env."""
    assert one("EnvironmentFile") == "-/etc/relay/relay.env"


def test_the_configuration_is_checked_before_start():
    """ExecStartPre runs `relay check` on the file ExecStart serves."""
    serve = one("ExecStart").split()
    check = one("ExecStartPre").split()
    assert serve[1:3] == ["serve", "-c"] and check[1:3] == ["check", "-c"]
    assert serve[0] == check[0] and serve[3] == check[3]


def test_systemd_accepts_the_unit(tmp_path):
    """`systemd-analyze verify` finds nothing wrong (relay's binary replaced by /bin/true,
    since relay is not installed in /opt here)."""
    analyze = tool("systemd-analyze")
    unit = tmp_path / "relay.service"
    unit.write_text(re.sub(r"/opt/relay/bin/relay", "/bin/true", UNIT.read_text()))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "relay.service" not in result.stderr, result.stderr
