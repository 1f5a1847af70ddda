"""relay.config: the strict, typed model of relay.yaml.

Every error is one line "<yaml path>: <problem>", so an operator can find the key at fault.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from relay import config
from relay.errors import ConfigError

BASE = Path("/etc/relay")

MINIMAL = {
    "server": {"listeners": [{"name": "local", "port": 2525, "tls": "none"}]},
}

FULL = {
    "server": {
        "hostname": "relay.acme.fr",
        "listeners": [{"name": "submission", "port": 587}],
        "tls": {"certificate": "tls/cert.pem", "private_key": "tls/key.pem"},
        "max_message_size": "10MB",
        "timeout": "2m",
    },
    "spool": {"path": "spool", "max_age": "2d", "retry": {"initial": "30s", "max": "2h"}},
    "users": [
        {"username": "app", "password_hash": "scrypt$16384$8$1$c2FsdA$ZGlnZXN0",
         "senders": ["acme.fr"]},
        {"username": "lan", "networks": ["10.0.0.0/8", "2001:db8::/32"], "senders": ["acme.fr"]},
    ],
    "domains": {"acme.fr": {"route": "brevo",
                            "dkim": [{"selector": "rsa1", "private_key": "dkim/acme.pem"}]}},
    "routes": {"brevo": {"host": "smtp-relay.brevo.com", "username": "me",
                         "password_env": "RELAY_TEST_BREVO_KEY", "ca_file": "ca.pem"},
               "files": {"outbox": "outbox"}},
}


def parse(data: dict, base: Path = BASE) -> config.Config:
    return config.parse(yaml.safe_dump(data), base)


def errors_of(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(data)
    assert str(info.value) == "\n".join(info.value.errors)
    return info.value.errors


def with_(base: dict, **changes) -> dict:
    data = copy.deepcopy(base)
    data.update(changes)
    return data


@pytest.fixture
def brevo_key(monkeypatch):
    monkeypatch.setenv("RELAY_TEST_BREVO_KEY", "xkeysib-secret")


# --- values and defaults -------------------------------------------------------------

def test_minimal_config_gets_the_documented_defaults():
    """Only a listener is required; everything else has its default, units already numbers."""
    cfg = parse(MINIMAL)
    assert cfg.server.hostname == "localhost"
    assert cfg.server.listeners[0].address == "127.0.0.1"
    assert cfg.server.max_message_size == 25 * 1024**2
    assert cfg.server.timeout == 300.0
    assert cfg.server.auth_failures.slow_after == 3
    assert cfg.server.auth_failures.window == 900.0
    assert cfg.spool.max_age == 5 * 86400.0
    assert (cfg.spool.retry.initial, cfg.spool.retry.max) == (60.0, 3600.0)
    assert cfg.users == [] and cfg.domains == {} and cfg.routes == {}


def test_units_are_parsed_at_load(brevo_key):
    """Sizes and durations written as strings are numbers on the loaded config."""
    cfg = parse(FULL)
    assert cfg.server.max_message_size == 10 * 1024**2
    assert cfg.server.timeout == 120.0
    assert cfg.spool.max_age == 2 * 86400.0
    assert cfg.spool.retry.initial == 30.0 and cfg.spool.retry.max == 7200.0


def test_config_is_frozen():
    """The loaded config cannot be changed by accident at run time."""
    cfg = parse(MINIMAL)
    with pytest.raises(Exception):
        cfg.server.hostname = "other"  # type: ignore[misc]


def test_embedded_default_config_loads():
    """The default.yaml shipped with relay is itself a valid configuration."""
    text = (Path(config.__file__).parent / "default.yaml").read_text()
    cfg = config.parse(text, Path("/srv"))
    assert cfg.domains["example.com"].route == "outbox"
    assert cfg.routes["outbox"].outbox == Path("/srv/relay-data/outbox")


# --- strictness and error lines ------------------------------------------------------

def test_unknown_top_level_key_is_named():
    """A misspelt key is an error, never silently ignored."""
    assert errors_of(with_(MINIMAL, spoool={})) == ["spoool: unknown key"]


def test_unknown_key_in_a_domain_names_its_full_path(brevo_key):
    """Domain names with dots appear verbatim in the path."""
    data = copy.deepcopy(FULL)
    data["domains"]["acme.fr"]["bogus"] = 1
    assert errors_of(data) == ["domains.acme.fr.bogus: unknown key"]


def test_bad_literal_names_the_list_index_and_the_value():
    """A value outside a closed set names the listener by index and quotes what was given."""
    data = {"server": {"listeners": [{"name": "a", "port": 25, "tls": "ssl"}]}}
    [line] = errors_of(data)
    assert line.startswith("server.listeners[0].tls: ")
    assert "starttls" in line and "implicit" in line and "none" in line
    assert line.endswith("got 'ssl'")


def test_missing_required_key():
    """A missing required key is reported as such, at its path."""
    assert errors_of({"spool": {}}) == ["server: required key is missing"]
    data = {"server": {"listeners": [{"port": 25, "tls": "none"}]}}
    assert errors_of(data) == ["server.listeners[0].name: required key is missing"]


def test_all_errors_are_reported_at_once():
    """One load reports every problem, one line each, with the unit's expected form."""
    data = {"server": {"listeners": [{"port": 25, "tls": "none"}],
                       "max_message_size": "10XB", "timeout": "forever"}}
    lines = errors_of(data)
    assert "server.listeners[0].name: required key is missing" in lines
    assert 'server.max_message_size: expected a size like "25MB", got \'10XB\'' in lines
    assert any(l.startswith('server.timeout: expected a duration like "30s"') for l in lines)
    assert len(lines) == 3


def test_out_of_range_port():
    """Numeric bounds are checked at load."""
    data = {"server": {"listeners": [{"name": "a", "port": 70000, "tls": "none"}]}}
    [line] = errors_of(data)
    assert line.startswith("server.listeners[0].port: ")


def test_not_yaml_and_not_a_mapping():
    """Unparseable YAML or a top level that is not a mapping name the source."""
    with pytest.raises(ConfigError) as info:
        config.parse("a: [", BASE, "conf/relay.yaml")
    assert info.value.errors[0].startswith("conf/relay.yaml: not valid YAML")
    with pytest.raises(ConfigError) as info:
        config.parse("- a\n- b\n", BASE)
    assert info.value.errors == ["relay.yaml: expected a mapping at the top level"]


def test_load_of_a_missing_file(tmp_path):
    """An unreadable file is a ConfigError naming the file, not an OSError."""
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        config.load(path)
    [line] = info.value.errors
    assert line.startswith(f"{path}: cannot read the configuration")


def test_duplicate_listener_names():
    """Listener names identify listeners in logs and metrics, so they must be unique."""
    data = {"server": {"listeners": [{"name": "a", "port": 25, "tls": "none"},
                                     {"name": "a", "port": 26, "tls": "none"}]}}
    assert errors_of(data) == ["server.listeners: listener names must be unique"]


# --- TLS ------------------------------------------------------------------------------

def test_tls_listener_needs_server_tls():
    """A starttls or implicit listener without server.tls is refused."""
    data = {"server": {"listeners": [{"name": "a", "port": 587}]}}
    [line] = errors_of(data)
    assert line.startswith("server.tls: required by listeners")


def test_tls_self_signed_alone_is_valid():
    """self_signed: true needs no certificate files."""
    cfg = parse({"server": {"listeners": [{"name": "a", "port": 587}], "tls": {"self_signed": True}}})
    assert cfg.server.tls.self_signed and cfg.server.tls.certificate is None


def test_tls_certificate_and_key_are_valid():
    """A certificate with its key is valid, and both paths are resolved."""
    cfg = parse({"server": {"listeners": [{"name": "a", "port": 587}],
                            "tls": {"certificate": "c.pem", "private_key": "/abs/k.pem"}}})
    assert cfg.server.tls.certificate == BASE / "c.pem"
    assert cfg.server.tls.private_key == Path("/abs/k.pem")


@pytest.mark.parametrize(("tls", "problem"), [
    ({"self_signed": True, "certificate": "c.pem"}, "set either certificate and private_key, or self_signed: true"),
    ({"self_signed": True, "certificate": "c.pem", "private_key": "k.pem"}, "set either certificate and private_key, or self_signed: true"),
    ({}, "set either certificate and private_key, or self_signed: true"),
    ({"self_signed": False}, "set either certificate and private_key, or self_signed: true"),
    ({"certificate": "c.pem"}, "certificate and private_key go together"),
    ({"private_key": "k.pem"}, "certificate and private_key go together"),
])
def test_tls_needs_exactly_one_source(tls, problem):
    """Either self_signed or a certificate and its key; not both, not neither, not half."""
    data = {"server": {"listeners": [{"name": "a", "port": 587}], "tls": tls}}
    assert errors_of(data) == [f"server.tls: {problem}"]


# --- users, routes, domains -----------------------------------------------------------

def test_user_needs_password_or_networks():
    """A user that can neither authenticate nor be trusted by address is refused."""
    data = with_(MINIMAL, users=[{"username": "u", "senders": ["a.fr"]}])
    assert errors_of(data) == ["users[0]: user u needs a password_hash or networks"]


def test_user_networks_must_be_ip_networks():
    """A typo in a trusted network is an error at load."""
    data = with_(MINIMAL, users=[{"username": "u", "networks": ["10.0.0.0/8", "lan"],
                                  "senders": ["a.fr"]}])
    assert errors_of(data) == ["users[0].networks: 'lan' is not an IP network"]


@pytest.mark.parametrize("route", [{"port": 25}, {"host": "h", "outbox": "out"}])
def test_route_needs_host_or_outbox(route):
    """A route either sends to an SMTP host or writes into an outbox directory, exactly one."""
    data = with_(MINIMAL, routes={"r": route})
    assert errors_of(data) == [
        "routes.r: a route needs either host (an SMTP provider) or outbox (a directory)"]


def test_route_username_needs_password_env():
    """Credentials come from the environment: a username without password_env is refused."""
    data = with_(MINIMAL, routes={"r": {"host": "h", "username": "u"}})
    [line] = errors_of(data)
    assert line.startswith("routes.r: username needs password_env")


def test_route_timeouts_default_per_phase():
    """Shorter than RFC 5321 §4.5.3.2's MTA minimums, longest for the final dot."""
    timeouts = parse(with_(MINIMAL, routes={"r": {"host": "h"}})).routes["r"].timeouts
    assert (timeouts.connect, timeouts.session, timeouts.command, timeouts.data) == (30, 60, 60, 300)


def test_route_timeouts_are_set_per_phase():
    """A phase left out keeps its default."""
    data = with_(MINIMAL, routes={"r": {"host": "h", "timeouts": {"connect": "5s", "data": "10m"}}})
    timeouts = parse(data).routes["r"].timeouts
    assert (timeouts.connect, timeouts.session, timeouts.command, timeouts.data) == (5, 60, 60, 600)


def test_route_timeout_sets_every_phase():
    """`timeout`, the older single key, still works: every phase gets its value."""
    timeouts = parse(with_(MINIMAL, routes={"r": {"host": "h", "timeout": "10s"}})).routes["r"].timeouts
    assert (timeouts.connect, timeouts.session, timeouts.command, timeouts.data) == (10, 10, 10, 10)


@pytest.mark.parametrize("route, error", [
    ({"timeout": "10s", "timeouts": {"data": "1m"}},
     "routes.r.timeout: sets every phase at once; with timeouts, set them there"),
    ({"timeout": "forever"}, 'routes.r.timeout: expected a duration like "30s"'),
    ({"timeout": "0s"}, "routes.r.timeout: must be more than 0s"),
    ({"timeouts": {"connect": "0s"}}, "routes.r.timeouts.connect: Input should be greater than 0"),
    ({"timeouts": {"greeting": "1m"}}, "routes.r.timeouts.greeting: unknown key"),
])
def test_route_timeout_errors_name_the_key(route, error):
    [line] = errors_of(with_(MINIMAL, routes={"r": {"host": "h", **route}}))
    assert line.startswith(error), line


def test_password_env_must_be_set(monkeypatch):
    """A secret missing from the environment is a load error naming the route's key."""
    monkeypatch.delenv("RELAY_TEST_MISSING_SECRET", raising=False)
    data = with_(MINIMAL, routes={"r": {"host": "h", "username": "u",
                                        "password_env": "RELAY_TEST_MISSING_SECRET"}})
    assert errors_of(data) == [
        "routes.r.password_env: environment variable RELAY_TEST_MISSING_SECRET is not set"]


def test_password_env_is_read_from_the_environment(monkeypatch):
    """With the variable set, the route's password is its value."""
    monkeypatch.setenv("RELAY_TEST_SECRET", "hunter2")
    data = with_(MINIMAL, routes={"r": {"host": "h", "username": "u",
                                        "password_env": "RELAY_TEST_SECRET"}})
    assert parse(data).routes["r"].password() == "hunter2"


def test_domain_route_must_exist():
    """A domain naming an undefined route is refused, at the domain's route key."""
    data = with_(MINIMAL, domains={"acme.fr": {"route": "nowhere"}})
    assert errors_of(data) == ["domains.acme.fr.route: no route named 'nowhere'"]


def test_dkim_selector_syntax():
    """A selector must be a DNS label sequence."""
    data = with_(MINIMAL, domains={"acme.fr": {"route": "r", "dkim": [
        {"selector": "bad selector", "private_key": "k.pem"}]}},
        routes={"r": {"outbox": "out"}})
    [line] = errors_of(data)
    assert line.startswith("domains.acme.fr.dkim[0].selector: ")


# --- paths and redaction --------------------------------------------------------------

def test_relative_paths_are_resolved_against_the_config_directory(brevo_key, tmp_path):
    """Every path key is made absolute against the directory holding relay.yaml."""
    path = tmp_path / "conf" / "relay.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(FULL))
    cfg = config.load(path)
    base = path.parent.resolve()
    assert cfg.server.tls.certificate == base / "tls/cert.pem"
    assert cfg.server.tls.private_key == base / "tls/key.pem"
    assert cfg.spool.path == base / "spool"
    assert cfg.domains["acme.fr"].dkim[0].private_key == base / "dkim/acme.pem"
    assert cfg.routes["brevo"].ca_file == base / "ca.pem"
    assert cfg.routes["files"].outbox == base / "outbox"


def test_absolute_paths_are_kept(brevo_key):
    """An absolute path is left as written."""
    data = copy.deepcopy(FULL)
    data["spool"]["path"] = "/var/spool/relay"
    assert parse(data).spool.path == Path("/var/spool/relay")


def test_redacted_hides_password_hashes(brevo_key):
    """`relay check` output never shows a password hash, nor the secret behind password_env."""
    cfg = parse(FULL)
    data = config.redacted(cfg)
    assert data["users"][0]["password_hash"] == "(set)"
    assert data["users"][1]["password_hash"] is None
    text = repr(data)
    assert "scrypt$" not in text
    assert "xkeysib-secret" not in text
    assert data["routes"]["brevo"]["password_env"] == "RELAY_TEST_BREVO_KEY"
    # The config itself is untouched.
    assert cfg.users[0].password_hash.startswith("scrypt$")


def test_off_written_bare_in_yaml_is_the_word_off():
    """YAML 1.1 reads a bare `off` as false: relay's `mode: off` keys mean the word."""
    text = ("server: {listeners: [{name: local, port: 2525, tls: none}]}\n"
            "content: {mode: off}\n"
            "limits: {bulk: {unsubscribe: off}, warmup: {per_provider: no}}\n")
    parsed = config.parse(text, BASE)
    assert parsed.content.mode == "off"
    assert parsed.limits.bulk.unsubscribe == "off"
    assert parsed.limits.warmup.per_provider is False     # a real boolean still reads yes/no


def test_the_content_section_defaults_and_its_errors():
    parsed = parse(MINIMAL)
    assert (parsed.content.mode, parsed.content.max_score, parsed.content.languages) == \
        ("warn", 10.0, ["fr", "en"])
    errors = errors_of(with_(MINIMAL, content={"mode": "refuse", "max_score": 0,
                                               "languages": ["de"]}))
    assert any(e.startswith("content.mode:") for e in errors)
    assert any(e.startswith("content.max_score:") for e in errors)
    assert any(e.startswith("content.languages") for e in errors)


def test_a_freemail_sender_domain_is_warned_about(monkeypatch):
    monkeypatch.setenv("RELAY_TEST_BREVO_KEY", "xkeysib-secret")
    data = with_(FULL, domains={"orange.fr": {"route": "brevo"}, "acme.fr": {"route": "brevo"}})
    warnings = parse(data).warnings()
    assert any(w.startswith("domains.orange.fr: a free mailbox domain") for w in warnings)
    assert not any("acme.fr" in w for w in warnings)
