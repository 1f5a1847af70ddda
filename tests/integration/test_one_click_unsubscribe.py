"""`unsubscribe: inject`: each recipient of a bulk campaign gets its own copy carrying
relay's RFC 8058 headers (inside the DKIM signature); a one-click POST to the URL suppresses
that recipient for that sender domain, and RCPT TO it is then refused with 550 5.7.1."""
from __future__ import annotations

import re
import smtplib
import urllib.error
import urllib.request

import dkim
import pytest

from tests.conftest import message, submit

SECRET = "0123456789abcdef-test-secret"


@pytest.fixture
def relay(make_relay, monkeypatch):
    monkeypatch.setenv("RELAY_UNSUB_SECRET", SECRET)
    return make_relay(**{
        "http": {"address": "127.0.0.1", "port": 0},
        "feedback": {"unsubscribe": {"base_url": "http://127.0.0.1/unsubscribe",
                                     "secret_env": "RELAY_UNSUB_SECRET"}},
        "limits": {"bulk": {"recipients_threshold": 1}}})


def post(url: str, body: bytes = b"List-Unsubscribe=One-Click") -> int:
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_injected_one_click_unsubscribe_suppresses_the_recipient(relay, upstream, dkim_dns):
    newsletter = message(subject="Our November news")
    assert submit(relay.port("local"), "billing@acme.fr", ["ann@example.net", "bob@example.net"],
                  newsletter) == {}
    copies = upstream.wait_for(lambda msgs: msgs if len(msgs) == 2 else None, what="two copies")
    links = {}
    for copy in copies:
        assert len(copy.rcpt_tos) == 1                       # one copy per recipient
        assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in copy.data
        [link] = re.findall(rb"List-Unsubscribe: <(http://[^>]+)>", copy.data)
        assert copy.rcpt_tos[0].encode() not in link          # the token is opaque
        h_tag = re.search(rb"h=([^;]+);", copy.data).group(1)
        assert b"list-unsubscribe:list-unsubscribe-post" in h_tag.replace(b"\r\n\t", b"")
        assert dkim.DKIM(copy.data).verify(idx=0, dnsfunc=dkim_dns)
        links[copy.rcpt_tos[0]] = link.decode()

    port = relay.relay.http_port
    ann = links["ann@example.net"].replace("http://127.0.0.1/", f"http://127.0.0.1:{port}/")
    assert post(ann) == 200
    assert post(ann[:-4] + "AAAA") == 404                     # forged token

    with smtplib.SMTP("127.0.0.1", relay.port("local"), timeout=10) as client:
        client.ehlo("app.test")
        client.mail("billing@acme.fr")
        code, text = client.rcpt("ann@example.net")
        assert (code, text) == (550, b"5.7.1 <ann@example.net> unsubscribed from mail of acme.fr")
        assert client.rcpt("bob@example.net")[0] == 250
