"""An application's minified HTML with a 5,000-character line leaves relay with no line over
998 characters (RFC 5322 §2.1.1): the HTML part is quoted-printable, its content unchanged
once decoded, and relay's DKIM signatures cover the re-encoded message, so a provider has
nothing to fold and nothing breaks them."""
import email
import email.policy

import dkim

from tests.conftest import submit

HTML = "<html><body>" + "<td>cell</td>" * 400 + "</body></html>"        # one 5,226-char line


def test_a_long_html_line_is_re_encoded_before_signing(make_relay, upstream, dkim_dns):
    relay = make_relay()
    data = ("From: Acme <billing@acme.fr>\r\nTo: client@example.net\r\nSubject: Invoice\r\n"
            "MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n"
            "--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nYour invoice.\r\n"
            "--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + HTML + "\r\n--alt--\r\n")
    assert submit(relay.port("local"), "billing@acme.fr", ["client@example.net"], data) == {}
    [received] = upstream.wait_for(lambda msgs: msgs, what="the message at the provider")

    assert max(len(line) for line in received.data.split(b"\r\n")) <= 998
    message = email.message_from_bytes(received.data, policy=email.policy.default)
    plain, html = message.iter_parts()
    assert html["Content-Transfer-Encoding"] == "quoted-printable"
    assert html.get_content() == HTML
    assert plain.get_content().strip() == "Your invoice."
    for idx in range(2):                                     # RSA and Ed25519
        assert dkim.DKIM(received.data).verify(idx=idx, dnsfunc=dkim_dns)
