"""relay speaks TLS 1.2 or later only, with strong cipher suites, on both sides.

Listeners: a real scanner, Debian's `sslscan`, probes the implicit-TLS and the STARTTLS
listener; neither may accept SSLv2, SSLv3, TLS 1.0 or TLS 1.1, nor any suite sslscan rates
below "strong" for TLS 1.2 (weak, medium, null, anonymous; "acceptable": CBC or no forward
secrecy). TLS 1.3, whose suites are all AEAD with forward secrecy, stays on. Without
sslscan these tests skip, unless RELAY_REQUIRE_TOOLS=1 (CI installs it), when they fail.

Routes: a provider offering only TLS 1.1, or only CBC suites, is refused: the message is
deferred with a reply naming TLS, and nothing is sent over the weaker channel.
"""
import os
import shutil
import ssl
import subprocess
import xml.etree.ElementTree as ET

import pytest

from tests.conftest import message, submit, wait_until
from tests.fakes.misbehaving_upstream import MisbehavingUpstream

OLD_PROTOCOLS = {("ssl", "2"), ("ssl", "3"), ("tls", "1.0"), ("tls", "1.1")}


def _sslscan() -> str:
    path = shutil.which("sslscan")
    if path is None:
        if os.environ.get("RELAY_REQUIRE_TOOLS") == "1":
            pytest.fail("sslscan is required (RELAY_REQUIRE_TOOLS=1): apt-get install sslscan")
        pytest.skip("sslscan is not installed (apt-get install sslscan)")
    return path


def _scan(port: int, starttls: bool) -> ET.Element:
    command = [_sslscan(), "--no-colour", "--no-heartbleed", "--xml=-", f"127.0.0.1:{port}"]
    if starttls:
        command.insert(1, "--starttls-smtp")
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    [test] = ET.fromstring(done.stdout[done.stdout.index("<?xml"):]).iter("ssltest")
    return test


@pytest.mark.parametrize("listener", ["submissions", "submission"])
def test_listener_offers_tls_12_and_13_with_strong_suites_only(make_relay, listener):
    """`submissions` (implicit TLS) and `submission` (STARTTLS), as sslscan sees them."""
    relay = make_relay()
    scan = _scan(relay.port(listener), starttls=listener == "submission")

    enabled = {(p.get("type"), p.get("version")) for p in scan.iter("protocol") if p.get("enabled") == "1"}
    assert enabled == {("tls", "1.2"), ("tls", "1.3")}, enabled
    assert not enabled & OLD_PROTOCOLS
    suites = [(c.get("sslversion"), c.get("cipher"), c.get("strength")) for c in scan.iter("cipher")
              if c.get("status") in ("accepted", "preferred")]
    assert {v for v, _, _ in suites} == {"TLSv1.2", "TLSv1.3"}, suites
    assert not [s for s in suites if s[2] in ("weak", "medium", "null", "anonymous")], suites
    assert all(strength == "strong" for version, _, strength in suites if version == "TLSv1.2"), suites


def _weak_provider_context(ca, **settings) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    for name, value in settings.items():
        if name == "ciphers":
            context.set_ciphers(value)
        else:
            setattr(context, name, value)
    return context


@pytest.mark.parametrize("weakness", [
    # @SECLEVEL=0: this OpenSSL would not even offer TLS 1.1 otherwise
    {"minimum_version": ssl.TLSVersion.TLSv1_1, "maximum_version": ssl.TLSVersion.TLSv1_1,
     "ciphers": "ALL:@SECLEVEL=0"},
    {"maximum_version": ssl.TLSVersion.TLSv1_2, "ciphers": "ECDHE+AES+SHA256:ECDHE+AES+SHA1:!AESGCM"},
], ids=["tls-1.1-only", "cbc-suites-only"])
@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_route_refuses_a_provider_below_the_policy(make_relay, ca, tmp_path, weakness):
    """The route trusts the provider's CA, yet its handshake fails: deferred, never sent."""
    ca_file = tmp_path / "provider-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with MisbehavingUpstream(tls_context=_weak_provider_context(ca, **weakness)) as provider:
        relay = make_relay(**{"routes.provider": {
            "host": "127.0.0.1", "port": provider.port, "tls": "starttls",
            "ca_file": str(ca_file), "max_connections": 1}})
        assert submit(relay.port("local"), "billing@acme.fr", ["client@example.net"], message()) == {}
        [summary] = wait_until(lambda: [s for s in relay.relay.spool.summaries() if s.attempts >= 1],
                               what="a delivery attempt")
        [recipient] = wait_until(lambda: [r for r in relay.relay.spool.get(summary.id).recipients
                                          if r.reply], what="the attempt's outcome")
        relay.stop()

    assert not any(c.upper().startswith(("MAIL", "AUTH")) for s in provider.sessions for c in s)
    reply = recipient.reply
    assert reply.startswith(f"451 4.4.1 127.0.0.1:{provider.port}: TLS failed at STARTTLS: "), reply
