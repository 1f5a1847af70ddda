"""A client whose STARTTLS handshake fails (a scanner, garbage instead of a ClientHello)
costs one info line naming the cause, not an error with a traceback: a port scan must not
flood the log. Other sessions go on."""
from __future__ import annotations

import logging
import socket

from tests.conftest import PASSWORD, message, submit, wait_until


def test_a_failed_starttls_handshake_is_one_info_line(make_relay, client_tls, caplog):
    relay = make_relay()
    caplog.set_level(logging.INFO, logger="relay")
    port = relay.port("submission")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        reader = sock.makefile("rb")
        reader.readline()                                         # 220
        sock.sendall(b"EHLO scanner.test\r\n")
        while reader.readline()[3:4] == b"-":
            pass
        sock.sendall(b"STARTTLS\r\n")
        assert reader.readline().startswith(b"220")
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n" * 20)              # not a TLS ClientHello
        assert reader.read() == b""                               # relay hangs up
    wait_until(lambda: "STARTTLS handshake with 127.0.0.1 failed" in caplog.text,
               what="the info line")
    assert "unexpected error" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]
    assert submit(port, "billing@acme.fr", ["client@example.net"], message(), tls="starttls",
                  context=client_tls, login=("billing-app", PASSWORD)) == {}
