"""SMTP smuggling: a fake end of data never splits one DATA into two messages.

SMTP smuggling (SEC Consult, December 2023; CVE-2023-51764 Postfix, CVE-2023-51765
sendmail, CVE-2023-51766 Exim, CVE-2024-27305 aiosmtpd) hides a second transaction after
an end-of-data marker that one server honours and the next does not: `<LF>.<LF>`,
`<CR>.<CR>`, `<LF>.<CR><LF>`, `<CR><LF>.<LF>` and the like. relay ends DATA only on
`<CR><LF>.<CR><LF>` (RFC 5321 §4.1.1.4), so everything before it, fake ends and hidden
commands included, is the text of the one message; its bare CR and LF become CRLF before
signing, and the provider gets it dot-stuffed (RFC 5321 §4.5.2). So a downstream server
sees one message per `250` relay gave, the hidden transaction as lines inside it, and no
bare CR or LF it could take for an end of data. Checked on the bytes relay writes to the
provider's socket, through a recording proxy, not only on what the provider parsed.
"""
from __future__ import annotations

import socket
import threading

import pytest

from tests.conftest import message, submit, wait_until
from tests.integration.test_bad_input import RawClient

# Fake ends of data from the SMTP smuggling research, and a few neighbours.
FAKE_ENDS = [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r.\r\n", b"\r\n.\r", b"\n.\r",
             b"\r.\n", b"\r\n\x00.\r\n", b"\r\n.\x00\r\n", b"\n\n.\n\n", b"\r\r\n.\n"]
SMUGGLED = (b"MAIL FROM:<billing@acme.fr>\r\nRCPT TO:<smuggled@example.net>\r\nDATA\r\n"
            b"From: billing@acme.fr\r\nTo: smuggled@example.net\r\nSubject: smuggled\r\n\r\n"
            b"You should never get this as a message of its own.\r\n")


class RecordingProxy:
    """A TCP forwarder in front of the fake provider that keeps every byte relay sends."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sent: list[bytearray] = []            # per connection, relay -> provider
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            record = bytearray()
            with self.lock:
                self.sent.append(record)
            threading.Thread(target=self._pump, args=(client, server, record), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, None), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, record: bytearray | None) -> None:
        try:
            while data := source.recv(65536):
                if record is not None:
                    with self.lock:
                        record += data
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def wire(self) -> bytes:
        with self.lock:
            return b"".join(bytes(r) for r in self.sent)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def proxy(upstream):
    recorder = RecordingProxy(upstream.port)
    yield recorder
    recorder.close()


@pytest.fixture
def relay(make_relay, proxy):
    return make_relay(**{"routes.provider.port": proxy.port})


def assert_crlf_only(data: bytes) -> None:
    """Every CR is followed by LF, every LF preceded by CR."""
    assert data.count(b"\r") == data.count(b"\n") == data.count(b"\r\n"), data


def smuggle(port: int, first: bytes, fake_end: bytes, rcpt: str = "client@example.net",
            byte_by_byte: bool = False) -> list[tuple[int, bytes]]:
    """One transaction whose DATA holds `first`, a fake end and a hidden transaction; then
    QUIT. Every reply after the 354, in order."""
    with RawClient(port) as client:
        client.cmd(b"EHLO app.test")
        assert client.cmd(b"MAIL FROM:<billing@acme.fr>")[0] == 250
        assert client.cmd(b"RCPT TO:<" + rcpt.encode() + b">")[0] == 250
        assert client.cmd(b"DATA")[0] == 354
        data = first + fake_end + SMUGGLED + b"\r\n.\r\nQUIT\r\n"
        if byte_by_byte:                   # fake and real ends split across reads
            client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i in range(len(data)):
                client.send(data[i:i + 1])
        else:
            client.send(data)
        replies = []
        while not replies or replies[-1][0] != 221:
            replies.append(client.reply())
    return replies


def test_a_fake_end_of_data_keeps_the_hidden_transaction_inside_the_message(relay, upstream, proxy):
    """For each fake end (and once more with the bytes sent one by one): one DATA, one reply
    (250), one message at the provider with the hidden MAIL, RCPT and DATA as lines of its
    text; nobody ever hears of smuggled@; relay writes CRLF only, and one end of data per
    message."""
    cases = [(end, False) for end in FAKE_ENDS] + [(b"\n.\n", True), (b"\r\n.\r", True)]
    for i, (fake_end, byte_by_byte) in enumerate(cases):
        first = message(to=f"client+{i}@example.net", body="The first and only message.").encode()
        replies = smuggle(relay.port("local"), first, fake_end, f"client+{i}@example.net",
                          byte_by_byte)
        assert [code for code, _ in replies] == [250, 221], (fake_end, replies)

    upstream.wait_for(lambda msgs: len(msgs) >= len(cases), what="every message")
    wait_until(lambda: relay.relay.spool.summaries() == [], what="an empty spool")
    assert len(upstream.messages) == len(cases)
    for i, (fake_end, _) in enumerate(cases):
        [received] = upstream.delivered_to(f"client+{i}@example.net")
        assert received.rcpt_tos == [f"client+{i}@example.net"], fake_end
        assert b"RCPT TO:<smuggled@example.net>" in received.data, fake_end   # text, not a command
        assert b"You should never get this" in received.data, fake_end
        assert_crlf_only(received.data)
    assert "smuggled@example.net" not in upstream.rcpt_attempts

    wire = proxy.wire()
    assert_crlf_only(wire)                                  # commands and data alike
    assert wire.count(b"\r\n.\r\n") == len(cases)          # one end of data per message


@pytest.mark.parametrize("fake_end", [b"\n.\n", b"\r.\r", b"\r\n.\n"])
def test_a_refused_message_takes_its_hidden_transaction_with_it(relay, upstream, proxy, fake_end):
    """A message relay refuses (no From: 550 5.6.0) is refused whole: the hidden transaction
    after the fake end is neither run nor delivered."""
    first = b"To: client@example.net\r\nSubject: no From\r\n\r\nbody"
    replies = smuggle(relay.port("local"), first, fake_end)
    assert [(code, text[:5]) for code, text in replies] == [(550, b"5.6.0"), (221, b"2.0.0")]
    assert submit(relay.port("local"), "billing@acme.fr", ["marker@example.net"],
                  message(to="marker@example.net")) == {}
    upstream.wait_for(lambda msgs: msgs, what="the marker")
    wait_until(lambda: relay.relay.spool.summaries() == [], what="an empty spool")
    assert [m.rcpt_tos for m in upstream.messages] == [["marker@example.net"]]
    assert "smuggled@example.net" not in upstream.rcpt_attempts


def test_lines_of_a_lone_dot_are_dot_stuffed_on_the_wire(relay, upstream, proxy):
    """A line holding only "." (written with bare LF, bare CR or CRLF, dot-stuffed by the
    client as RFC 5321 §4.5.2 asks) reaches the provider dot-stuffed: `..` on the wire,
    `.` in the message it reads."""
    body = b"one\n.\ntwo\r.\rthree\r\n..\r\nfour\r\n"
    with RawClient(relay.port("local")) as client:
        client.cmd(b"EHLO app.test")
        assert client.cmd(b"MAIL FROM:<billing@acme.fr>")[0] == 250
        assert client.cmd(b"RCPT TO:<client@example.net>")[0] == 250
        assert client.cmd(b"DATA")[0] == 354
        client.send(b"From: billing@acme.fr\r\nSubject: dots\r\n\r\n" + body + b".\r\n")
        assert client.reply()[0] == 250
    [received] = upstream.wait_for(lambda msgs: msgs, what="the message")
    assert received.data.endswith(b"\r\n\r\none\r\n.\r\ntwo\r\n.\r\nthree\r\n.\r\nfour\r\n")
    wire = proxy.wire()
    assert b"\r\none\r\n..\r\ntwo\r\n..\r\nthree\r\n..\r\nfour\r\n.\r\n" in wire
    assert_crlf_only(wire)
