"""deploy/Dockerfile: a slim image that runs relay as a non-root user, checks its own health
on the metrics listener, keeps the spool and keys in volumes, exposes the ports the compose
configuration listens on; .dockerignore keeps out everything the build does not copy."""
import json
import re
import shlex
import tomllib

from tests.deploy.support import COMPOSE_RELAY_YAML, DEPLOY, ROOT, kubernetes_pod, load_yaml

DOCKERFILE = DEPLOY / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", "\n".join(
        line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")))
    found = []
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def args(word: str) -> list[str]:
    """The arguments of the final stage's instructions called `word`, JSON or shell form."""
    out = []
    for instruction, rest in final_stage():
        if instruction == word:
            out += json.loads(rest) if rest.startswith("[") else shlex.split(rest)
    return out


def compose_config() -> dict:
    return load_yaml(COMPOSE_RELAY_YAML)


def test_runs_on_a_slim_python_image():
    """Both stages are python:*-slim."""
    bases = [rest.split()[0] for word, rest in instructions() if word == "FROM"]
    assert bases and all(re.fullmatch(r"python:3\.\d+-slim", base) for base in bases), bases


def test_runs_as_a_non_root_user():
    """The final USER is neither root nor uid 0, and it is the uid the Kubernetes pod runs as."""
    [user] = [rest for word, rest in final_stage() if word == "USER"][-1:]
    name = user.split(":")[0]
    assert name not in ("root", "0")
    pod = kubernetes_pod("relay")
    assert name == str(pod["securityContext"]["runAsUser"])


def test_healthcheck_asks_the_metrics_listener():
    """HEALTHCHECK GETs /healthz on the metrics port of the compose configuration, with
    Python (the slim image has no curl)."""
    [check] = [rest for word, rest in final_stage() if word == "HEALTHCHECK"]
    metrics = compose_config()["metrics"]
    assert f"127.0.0.1:{metrics['port']}/healthz" in check
    assert metrics["address"] in ("0.0.0.0", "127.0.0.1", "::")
    command = json.loads(check[check.index("CMD") + 3:].strip())
    assert command[:2] == ["python", "-c"] and "urllib" in command[2]
    compile(command[2], "HEALTHCHECK", "exec")


def test_spool_and_keys_are_volumes():
    """The spool and the DKIM keys are volumes, where relay.yaml puts them."""
    volumes = set(args("VOLUME"))
    assert {"/var/lib/relay", "/etc/relay/dkim"} <= volumes
    assert compose_config()["spool"]["path"] in volumes


def test_exposes_the_ports_relay_listens_on():
    """EXPOSE lists exactly the compose configuration's listeners, HTTP and metrics ports, and
    the Kubernetes container ports are the same."""
    config = compose_config()
    ports = {listener["port"] for listener in config["server"]["listeners"]}
    ports |= {config["http"]["port"], config["metrics"]["port"]}
    exposed = {int(port.split("/")[0]) for port in args("EXPOSE")}
    assert exposed == ports
    assert all(port > 1024 for port in exposed)                # a non-root process binds them
    [container] = kubernetes_pod("relay")["containers"]
    assert {p["containerPort"] for p in container["ports"]} == exposed


def test_entrypoint_serves_the_mounted_configuration():
    """ENTRYPOINT is relay and CMD serves /etc/relay/relay.yaml."""
    assert args("ENTRYPOINT") == ["relay"]
    assert args("CMD") == ["serve", "-c", "/etc/relay/relay.yaml"]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or one of its parent
    directories decides; `!` re-includes."""
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.lstrip("!").strip("/")
        regex = re.escape(glob).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, candidate) for candidate in candidates):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_what_the_build_copies_and_nothing_else():
    """Everything the build stage COPYs (the package, its data files, pyproject.toml and the
    README it names) is in the build context; the virtualenv, git, the local spool, tests
    and bytecode are not."""
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    copied = [src for word, rest in instructions() if word == "COPY" and "--from" not in rest
              for src in shlex.split(rest)[:-1]]
    assert set(copied) >= {"pyproject.toml", "README.md", "relay"}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["readme"] in copied
    needed = ["pyproject.toml", "README.md"]
    needed += [str(p.relative_to(ROOT)) for p in (ROOT / "relay").rglob("*.py")]
    for package, files in project["tool"]["setuptools"]["package-data"].items():
        needed += [f"{package}/{name}" for name in files]
    for path in needed:
        assert (ROOT / path).exists(), path
        assert not _ignored(path, patterns), f"{path} is left out of the build context"
    for path in (".venv/bin/python", ".git/HEAD", "relay-data/relay.sqlite3", "tests/conftest.py",
                 "relay/__pycache__/cli.cpython-312.pyc", "deploy/compose.yaml"):
        assert _ignored(path, patterns), f"{path} would be sent to the Docker daemon"
