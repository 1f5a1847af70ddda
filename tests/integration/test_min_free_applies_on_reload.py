"""`spool.min_free` is a threshold: `relay reload` applies it at once (other spool keys wait
for a restart). Set far above what the disk has, new mail gets 452 4.3.1; lowered by a
reload, the same client is accepted again."""
from __future__ import annotations

import smtplib

import yaml

from relay import config as config_module
from tests.conftest import base_config


def mail_from(port: int) -> tuple[int, str]:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("erp.test")
        code, text = client.mail("billing@acme.fr")
    return code, text.decode()


def test_a_reload_moves_min_free(make_relay, tmp_path, upstream, server_cert, dkim_keys):
    relay = make_relay(**{"spool.min_free": "1000000GB"})
    port = relay.port("local")
    code, text = mail_from(port)
    assert (code, text[:5]) == (452, "4.3.1"), text

    lowered = base_config(tmp_path, upstream.port, server_cert, dkim_keys, **{"spool.min_free": "1MB"})
    relay.relay.reread = lambda: config_module.parse(yaml.safe_dump(lowered), tmp_path)
    assert relay.call(relay.relay.reload())
    assert mail_from(port)[0] == 250
