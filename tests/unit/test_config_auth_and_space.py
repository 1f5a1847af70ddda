"""relay.config: a listener's `auth` (required on submission ports, optional where tls is
none), the warning for `networks` users no listener lets in, and `spool.min_free`."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from relay import config
from relay.errors import ConfigError
from relay.units import parse_size

TLS = {"self_signed": True}


def load(listeners: list[dict], **extra) -> config.Config:
    data = {"server": {"listeners": listeners, "tls": TLS, **extra.pop("server", {})}, **extra}
    return config.parse(yaml.safe_dump(data), Path("/etc/relay"))


def test_auth_defaults_to_required_with_tls_and_optional_without():
    loaded = load([{"name": "a", "port": 587, "tls": "starttls"},
                   {"name": "b", "port": 465, "tls": "implicit"},
                   {"name": "c", "port": 2525, "tls": "none"},
                   {"name": "d", "port": 25, "tls": "starttls", "role": "feedback"}])
    assert [l.auth for l in loaded.server.listeners] == ["required", "required", "optional", "optional"]


def test_auth_can_be_set_either_way():
    loaded = load([{"name": "a", "port": 587, "auth": "optional"},
                   {"name": "c", "port": 2525, "tls": "none", "auth": "required"}])
    assert [l.auth for l in loaded.server.listeners] == ["optional", "required"]


def test_a_feedback_listener_cannot_require_auth():
    with pytest.raises(ConfigError) as error:
        load([{"name": "fb", "port": 25, "role": "feedback", "auth": "required"}])
    assert error.value.errors == ["server.listeners[0].auth: a feedback listener takes reports "
                                  "from anyone; required is only for submission listeners"]


def test_a_bad_auth_value_is_named():
    with pytest.raises(ConfigError) as error:
        load([{"name": "a", "port": 587, "auth": "sometimes"}])
    assert error.value.errors[0].startswith("server.listeners[0].auth: expected one of")


def test_a_networks_user_no_listener_lets_in_is_a_warning():
    users = [{"username": "erp", "networks": ["127.0.0.1/32"], "senders": ["acme.fr"]}]
    only_tls = load([{"name": "a", "port": 587}], users=users)
    assert only_tls.warnings() == [
        "users[0].networks: no submission listener has auth: optional, so clients from "
        "127.0.0.1/32 must still AUTH as erp (add e.g. a tls: none listener on 127.0.0.1)"]
    with_local = load([{"name": "a", "port": 587}, {"name": "l", "port": 2525, "tls": "none"}],
                      users=users)
    assert with_local.warnings() == []


def test_min_free_defaults_to_200mb_or_two_messages_whichever_is_larger():
    small = load([{"name": "a", "port": 587}], server={"max_message_size": "25MB"})
    assert small.spool.min_free is None and small.spool_min_free == parse_size("200MB")
    big = load([{"name": "a", "port": 587}], server={"max_message_size": "150MB"})
    assert big.spool_min_free == 2 * parse_size("150MB")
    set_ = load([{"name": "a", "port": 587}], spool={"min_free": "1GB"})
    assert set_.spool_min_free == parse_size("1GB")


def test_min_free_must_be_a_size():
    with pytest.raises(ConfigError) as error:
        load([{"name": "a", "port": 587}], spool={"min_free": "lots"})
    assert error.value.errors[0].startswith("spool.min_free:")


def test_embedded_default_and_example_keep_networks_users_working(monkeypatch):
    """The embedded default's `local-apps` and the example's `erp-on-this-host` reach a
    tls: none listener, so neither warns."""
    default = config.load(Path(config.__file__).parent / "default.yaml")
    assert default.warnings() == []
    monkeypatch.setenv("BREVO_SMTP_KEY", "k")
    monkeypatch.setenv("RELAY_UNSUB_SECRET", "an-example-secret-of-32-bytes-xx")
    monkeypatch.setenv("RELAY_WEBHOOK_TOKEN", "t")
    example = config.load(Path(__file__).resolve().parents[2] / "config" / "relay.example.yaml")
    assert example.warnings() == []


def test_relay_check_shows_the_min_free_that_applies():
    loaded = load([{"name": "a", "port": 587}], server={"max_message_size": "150MB"})
    assert config.redacted(loaded)["spool"]["min_free"] == 2 * parse_size("150MB")
