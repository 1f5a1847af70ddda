"""The SMTP dialogue as a client sees it, reply by reply: code, enhanced code and text.

These pin what relay's listener answers today (aiosmtpd's SMTP class as `RelaySMTP` adapts
it: relay's named replies, an RFC 2034 enhanced code on every 2xx/4xx/5xx but the greeting
and the HELO/EHLO answers, printable echoes), so that a replacement session can be held to
the same dialogue. Behaviours other tests already pin (AUTH success and failure codes, the
throttle, smuggling, malformed addresses, pipelined transaction codes, the drain's 421,
STARTTLS command injection, control characters in echoes) are not repeated here.

Where today's answer looks wrong, it is still pinned, with a `# looks wrong:` comment: a
replacement may fix it, deliberately, by changing the test.

Everything goes over real sockets, byte for byte, against one relay per module (the
default three listeners: `local` without TLS, `submission` with STARTTLS, `submissions`
with implicit TLS; 127.0.0.1 is the networks user `erp` on `local`), built from the same
pieces as `make_relay`; the few configurations of their own use `make_relay` itself.
"""
from __future__ import annotations

import base64
import re
import select
import socket
import ssl
import time

import pytest
import yaml

from relay import config as config_module
from tests.conftest import PASSWORD, RunningRelay, base_config, message, wait_until
from tests.fakes.dns_server import ZoneResolver
from tests.fakes.upstream import FakeUpstream

CRLF = b"\r\n"
GREETING = "220 relay.test relay"
SIZE = 1048576                                    # base_config's max_message_size: 1MB
HELP_LIST = "Supported commands: AUTH DATA EHLO HELO HELP MAIL NOOP QUIT RCPT RSET VRFY"
MAIL_SYNTAX = "501 5.5.4 Syntax: MAIL FROM: <address> [SP <mail-parameters>]"
RCPT_SYNTAX = "501 5.5.4 Syntax: RCPT TO: <address> [SP <mail-parameters>]"
STARTTLS_FIRST = "530 5.7.0 Must issue a STARTTLS command first"
MALFORMED = "553 5.1.3 Malformed address"
GOODBYE = "502 5.5.1 Too many unrecognized commands, goodbye."
NO_AUTH_THROTTLE = {"slow_after": 1_000_000, "lock_after": 1_000_000}


def b64(data: str | bytes) -> bytes:
    return base64.b64encode(data.encode() if isinstance(data, str) else data)


PLAIN_OK = b64(f"\0billing-app\0{PASSWORD}")


class Dialogue:
    """A client that sends exactly the bytes it is given and reads replies line by line."""

    def __init__(self, port: int, context: ssl.SSLContext | None = None, timeout: float = 5) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = context.wrap_socket(sock, server_hostname="localhost") if context else sock
        self.pending = b""
        self.greeting = self.reply()

    def _line(self) -> str:
        while CRLF not in self.pending:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed; pending {self.pending!r}")
            self.pending += chunk
        line, _, self.pending = self.pending.partition(CRLF)
        return line.decode("utf-8")

    def reply(self) -> list[str]:
        """One reply, all its lines."""
        lines = [self._line()]
        while lines[-1][3:4] == "-":
            lines.append(self._line())
        return lines

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def lines(self, command: bytes) -> list[str]:
        self.send(command + CRLF)
        return self.reply()

    def ask(self, command: bytes) -> str:
        """The one-line reply to `command`."""
        [line] = self.lines(command)
        return line

    def starttls(self, context: ssl.SSLContext) -> None:
        self.sock = context.wrap_socket(self.sock, server_hostname="localhost")

    def until_closed(self) -> bytes:
        """Everything relay writes until it closes the connection (a reset counts as
        closed); fails if it stays open past the socket's timeout."""
        data, self.pending = self.pending, b""
        try:
            while chunk := self.sock.recv(65536):
                data += chunk
        except (ConnectionResetError, ssl.SSLError):
            pass
        except socket.timeout:
            raise AssertionError(f"relay kept the connection open; it wrote {data!r}") from None
        return data

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Dialogue":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _start(tmp_path_factory, server_cert, dkim_keys, upstream_port: int, **overrides) -> RunningRelay:
    """What `make_relay` does, for a relay shared by the module's tests."""
    directory = tmp_path_factory.mktemp("dialogue")
    data = base_config(directory, upstream_port, server_cert, dkim_keys, **overrides)
    return RunningRelay(config_module.parse(yaml.safe_dump(data), directory), None, ZoneResolver({}))


@pytest.fixture(scope="module")
def provider():
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def relay(tmp_path_factory, server_cert, dkim_keys, provider):
    # AUTH failures here are deliberate: never slowed down nor locked out
    running = _start(tmp_path_factory, server_cert, dkim_keys, provider.port,
                     **{"server.auth_failures": NO_AUTH_THROTTLE})
    yield running
    running.stop()


@pytest.fixture(scope="module")
def impatient_relay(tmp_path_factory, server_cert, dkim_keys, provider):
    """server.timeout: 0.5s."""
    running = _start(tmp_path_factory, server_cert, dkim_keys, provider.port,
                     **{"server.timeout": 0.5})
    yield running
    running.stop()


@pytest.fixture
def local(relay):
    """A session on `local` after `EHLO app.test`."""
    with Dialogue(relay.port("local")) as dialogue:
        dialogue.lines(b"EHLO app.test")
        yield dialogue


@pytest.fixture
def tls(relay, client_tls):
    """A session on `submissions` (implicit TLS) after `EHLO app.test`."""
    with Dialogue(relay.port("submissions"), client_tls) as dialogue:
        dialogue.lines(b"EHLO app.test")
        yield dialogue


# --- greeting and HELO/EHLO --------------------------------------------------------------

def test_greeting_is_220_hostname_relay_without_enhanced_code(relay, client_tls):
    for listener, context in (("local", None), ("submission", None), ("submissions", client_tls)):
        with Dialogue(relay.port(listener), context) as dialogue:
            assert dialogue.greeting == [GREETING], listener


def test_ehlo_on_plain_listener_lists_size_8bitmime_smtputf8_pipelining_enhanced_codes_help(relay):
    with Dialogue(relay.port("local")) as dialogue:
        assert dialogue.lines(b"EHLO app.test") == [
            "250-relay.test", f"250-SIZE {SIZE}", "250-8BITMIME", "250-SMTPUTF8",
            "250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250 HELP"]


def test_ehlo_on_starttls_listener_offers_starttls_and_no_auth_before_tls(relay):
    with Dialogue(relay.port("submission")) as dialogue:
        assert dialogue.lines(b"EHLO app.test") == [
            "250-relay.test", f"250-SIZE {SIZE}", "250-8BITMIME", "250-SMTPUTF8", "250-STARTTLS",
            "250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250 HELP"]


def test_ehlo_after_starttls_offers_auth_and_no_starttls(relay, client_tls):
    with Dialogue(relay.port("submission")) as dialogue:
        dialogue.lines(b"EHLO app.test")
        assert dialogue.ask(b"STARTTLS") == "220 2.0.0 Ready to start TLS"
        dialogue.starttls(client_tls)
        assert dialogue.lines(b"EHLO app.test") == [
            "250-relay.test", f"250-SIZE {SIZE}", "250-8BITMIME", "250-SMTPUTF8",
            "250-AUTH LOGIN PLAIN", "250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250 HELP"]


def test_ehlo_on_implicit_tls_offers_auth_and_no_starttls(relay, client_tls):
    with Dialogue(relay.port("submissions"), client_tls) as dialogue:
        assert dialogue.lines(b"EHLO app.test") == [
            "250-relay.test", f"250-SIZE {SIZE}", "250-8BITMIME", "250-SMTPUTF8",
            "250-AUTH LOGIN PLAIN", "250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250 HELP"]


def test_helo_is_250_hostname_without_enhanced_code(relay):
    with Dialogue(relay.port("local")) as dialogue:
        assert dialogue.ask(b"HELO app.test") == "250 relay.test"
        assert dialogue.ask(b"HELO again.test") == "250 relay.test"


def test_helo_and_ehlo_without_argument_are_501_without_enhanced_code(relay):
    with Dialogue(relay.port("local")) as dialogue:
        assert dialogue.ask(b"EHLO") == "501 Syntax: EHLO hostname"
        assert dialogue.ask(b"EHLO   ") == "501 Syntax: EHLO hostname"
        assert dialogue.ask(b"HELO") == "501 Syntax: HELO hostname"
        assert dialogue.ask(b"MAIL FROM:<billing@acme.fr>") == "503 5.5.1 Error: send HELO first"


def test_ehlo_ends_the_transaction_in_progress(local):
    assert local.ask(b"MAIL FROM:<billing@acme.fr>") == "250 2.1.0 Sender OK"
    local.lines(b"EHLO app.test")
    assert local.ask(b"RCPT TO:<client@example.net>") == "503 5.5.1 Error: need MAIL command"
    assert local.ask(b"MAIL FROM:<billing@acme.fr>") == "250 2.1.0 Sender OK"


def test_commands_are_case_insensitive_and_a_space_after_the_colon_is_allowed(relay):
    with Dialogue(relay.port("local")) as dialogue:
        assert dialogue.lines(b"ehlo app.test")[-1] == "250 HELP"
        assert dialogue.ask(b"mail from: <billing@acme.fr>") == "250 2.1.0 Sender OK"
        assert dialogue.ask(b"Rcpt To: <client@example.net>") == "250 2.1.5 Recipient OK"
        assert dialogue.ask(b"rset") == "250 2.0.0 Reset OK"


# --- before HELO ----------------------------------------------------------------------------

def test_mail_rcpt_and_data_before_helo_are_503_send_helo_first(relay):
    with Dialogue(relay.port("local")) as dialogue:
        assert dialogue.ask(b"MAIL FROM:<billing@acme.fr>") == "503 5.5.1 Error: send HELO first"
        assert dialogue.ask(b"RCPT TO:<client@example.net>") == "503 5.5.1 Error: send HELO first"
        assert dialogue.ask(b"DATA") == "503 5.5.1 Error: send HELO first"


def test_noop_rset_vrfy_help_and_quit_need_no_helo(relay):
    with Dialogue(relay.port("local")) as dialogue:
        assert dialogue.ask(b"NOOP") == "250 2.0.0 OK"
        assert dialogue.ask(b"RSET") == "250 2.0.0 Reset OK"
        assert dialogue.ask(b"VRFY <client@example.net>") == \
            "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery"
        assert dialogue.ask(b"HELP") == f"250 2.0.0 {HELP_LIST}"
        assert dialogue.ask(b"QUIT") == "221 2.0.0 Bye"


def test_auth_before_ehlo_is_503_send_ehlo_first(relay, client_tls):
    with Dialogue(relay.port("submissions"), client_tls) as dialogue:
        assert dialogue.ask(b"AUTH PLAIN " + PLAIN_OK) == "503 5.5.1 Error: send EHLO first"


def test_auth_after_helo_is_500_not_recognized(relay, client_tls):
    with Dialogue(relay.port("submissions"), client_tls) as dialogue:
        assert dialogue.ask(b"HELO app.test") == "250 relay.test"
        assert dialogue.ask(b"AUTH PLAIN " + PLAIN_OK) == \
            "500 5.5.2 Error: command 'AUTH' not recognized"


# --- MAIL -----------------------------------------------------------------------------

def test_mail_without_from_is_501_syntax_with_the_parameters_hint(local):
    for command in (b"MAIL", b"MAIL billing@acme.fr", b"MAIL FROM:", b"MAIL TO:<billing@acme.fr>"):
        assert local.ask(command) == MAIL_SYNTAX, command


def test_mail_parameters_after_helo_are_501_syntax_without_the_parameters_hint(relay):
    with Dialogue(relay.port("local")) as dialogue:
        dialogue.ask(b"HELO app.test")
        assert dialogue.ask(b"MAIL FROM:<billing@acme.fr> SIZE=100") == \
            "501 5.5.4 Syntax: MAIL FROM: <address>"
        assert dialogue.ask(b"MAIL FROM:<billing@acme.fr> BODY=8BITMIME") == \
            "501 5.5.4 Syntax: MAIL FROM: <address>"
        assert dialogue.ask(b"MAIL") == "501 5.5.4 Syntax: MAIL FROM: <address>"
        assert dialogue.ask(b"MAIL FROM:<billing@acme.fr>") == "250 2.1.0 Sender OK"


def test_mail_with_an_unknown_parameter_is_555(local):
    for parameter in (b"FOO=BAR", b"RET=HDRS", b"ENVID=x", b"AUTH=<>", b"FOO"):
        assert local.ask(b"MAIL FROM:<billing@acme.fr> " + parameter) == \
            "555 5.5.4 MAIL FROM parameters not recognized or not implemented", parameter


def test_mail_with_a_malformed_parameter_is_501_syntax(local):
    for parameter in (b"SIZE=", b"SIZE=x", b"SIZE", b"FOO-BAR=1"):
        assert local.ask(b"MAIL FROM:<billing@acme.fr> " + parameter) == MAIL_SYNTAX, parameter


def test_mail_body_binarymime_is_501_body_7bit_or_8bitmime(local):
    assert local.ask(b"MAIL FROM:<billing@acme.fr> BODY=BINARYMIME") == \
        "501 5.5.4 Error: BODY can only be one of 7BIT, 8BITMIME"


def test_mail_body_7bit_and_8bitmime_and_smtputf8_are_accepted(local):
    for parameters in (b"BODY=7BIT", b"BODY=8BITMIME", b"body=8bitmime SMTPUTF8 SIZE=100"):
        assert local.ask(b"MAIL FROM:<billing@acme.fr> " + parameters) == "250 2.1.0 Sender OK"
        assert local.ask(b"RSET") == "250 2.0.0 Reset OK"


def test_mail_size_over_the_limit_is_552_and_at_the_limit_is_accepted(local):
    assert local.ask(b"MAIL FROM:<billing@acme.fr> SIZE=%d" % (SIZE + 1)) == \
        "552 5.3.4 Message size exceeds fixed maximum message size"
    assert local.ask(b"MAIL FROM:<billing@acme.fr> SIZE=%d" % SIZE) == "250 2.1.0 Sender OK"


def test_mail_smtputf8_with_an_argument_is_501(local):
    assert local.ask(b"MAIL FROM:<billing@acme.fr> SMTPUTF8=yes") == \
        "501 5.5.4 Error: SMTPUTF8 takes no arguments"


def test_mail_non_ascii_address_without_smtputf8_is_553_5_6_7(local):
    assert local.ask("MAIL FROM:<élodie@acme.fr>".encode()) == \
        "553 5.6.7 Non-ASCII address needs the SMTPUTF8 parameter"


def test_nested_mail_is_503(local):
    assert local.ask(b"MAIL FROM:<billing@acme.fr>") == "250 2.1.0 Sender OK"
    assert local.ask(b"MAIL FROM:<billing@acme.fr>") == "503 5.5.1 Error: nested MAIL command"


def test_an_address_the_email_parser_fails_on_is_malformed_not_an_internal_error(local):
    """A lone "<" makes the email package's parser raise IndexError, "x@[" AttributeError:
    553 5.1.3 like any malformed address (it was 451 4.3.0 and a traceback in the log)."""
    for address in (b"<", b"<x@[", b"x@["):
        assert local.ask(b"MAIL FROM:" + address) == MALFORMED, address
    assert local.ask(b"MAIL FROM:<billing@acme.fr>") == "250 2.1.0 Sender OK"
    assert local.ask(b"RCPT TO:<") == MALFORMED
    assert local.ask(b"VRFY <") == "502 5.5.1 Could not VRFY <"


# --- RCPT -----------------------------------------------------------------------------

def test_rcpt_before_mail_is_503_need_mail(local):
    assert local.ask(b"RCPT TO:<client@example.net>") == "503 5.5.1 Error: need MAIL command"
    assert local.ask(b"RCPT") == "503 5.5.1 Error: need MAIL command"        # checked first


def test_rcpt_without_to_is_501_syntax_with_the_parameters_hint(local):
    local.ask(b"MAIL FROM:<billing@acme.fr>")
    for command in (b"RCPT", b"RCPT client@example.net", b"RCPT TO:",
                    b"RCPT FROM:<client@example.net>"):
        assert local.ask(command) == RCPT_SYNTAX, command


def test_rcpt_with_any_parameter_is_555(local):
    local.ask(b"MAIL FROM:<billing@acme.fr>")
    for parameter in (b"NOTIFY=NEVER", b"ORCPT=rfc822;client@example.net", b"FOO"):
        assert local.ask(b"RCPT TO:<client@example.net> " + parameter) == \
            "555 5.5.4 RCPT TO parameters not recognized or not implemented", parameter
    assert local.ask(b"RCPT TO:<client@example.net>") == "250 2.1.5 Recipient OK"


def test_rcpt_parameters_after_helo_are_501_syntax_without_the_parameters_hint(relay):
    with Dialogue(relay.port("local")) as dialogue:
        dialogue.ask(b"HELO app.test")
        dialogue.ask(b"MAIL FROM:<billing@acme.fr>")
        assert dialogue.ask(b"RCPT TO:<client@example.net> NOTIFY=NEVER") == \
            "501 5.5.4 Syntax: RCPT TO: <address>"


# --- DATA -----------------------------------------------------------------------------

def test_data_before_rcpt_is_503_need_rcpt(local):
    assert local.ask(b"DATA") == "503 5.5.1 Error: need RCPT command"
    local.ask(b"MAIL FROM:<billing@acme.fr>")
    assert local.ask(b"DATA") == "503 5.5.1 Error: need RCPT command"
    assert local.ask(b"DATA now") == "503 5.5.1 Error: need RCPT command"   # checked first


def test_data_with_an_argument_is_501(local):
    local.ask(b"MAIL FROM:<billing@acme.fr>")
    local.ask(b"RCPT TO:<client@example.net>")
    assert local.ask(b"DATA now") == "501 5.5.4 Syntax: DATA"
    assert local.ask(b"RCPT TO:<other@example.net>") == "250 2.1.5 Recipient OK"  # still open


def test_data_is_354_then_250_queued_as_the_queue_id(local):
    local.ask(b"MAIL FROM:<billing@acme.fr>")
    local.ask(b"RCPT TO:<dialogue@example.net>")
    assert local.ask(b"DATA") == "354 End data with <CR><LF>.<CR><LF>"
    local.send(message(to="dialogue@example.net").encode() + b".\r\n")
    assert re.match(r"^250 2\.0\.0 Ok: queued as [0-9A-HJKMNP-TV-Z]{16}$", local.reply()[0])
    assert local.ask(b"RCPT TO:<client@example.net>") == "503 5.5.1 Error: need MAIL command"


def test_data_over_max_message_size_is_552_naming_the_limit_and_ends_the_transaction(local):
    local.ask(b"MAIL FROM:<billing@acme.fr>")
    local.ask(b"RCPT TO:<client@example.net>")
    assert local.ask(b"DATA") == "354 End data with <CR><LF>.<CR><LF>"
    local.send(b"From: billing@acme.fr\r\n\r\n" + (b"x" * 998 + CRLF) * (SIZE // 1000 + 1) + b".\r\n")
    assert local.reply() == [f"552 5.3.4 Message too big for this relay ({SIZE} bytes at most)"]
    assert local.ask(b"RCPT TO:<client@example.net>") == "503 5.5.1 Error: need MAIL command"


# --- RSET, NOOP, QUIT, VRFY, EXPN, HELP ------------------------------------------------------

def test_rset_is_250_reset_ok_and_ends_the_transaction(local):
    local.ask(b"MAIL FROM:<billing@acme.fr>")
    assert local.ask(b"RSET") == "250 2.0.0 Reset OK"
    assert local.ask(b"RCPT TO:<client@example.net>") == "503 5.5.1 Error: need MAIL command"


def test_rset_and_quit_with_an_argument_are_501_and_noop_takes_one(local):
    assert local.ask(b"RSET now") == "501 5.5.4 Syntax: RSET"
    assert local.ask(b"QUIT now") == "501 5.5.4 Syntax: QUIT"
    assert local.ask(b"NOOP anything at all") == "250 2.0.0 OK"
    assert local.ask(b"NOOP") == "250 2.0.0 OK"                # the QUIT above did not close


def test_quit_is_221_bye_then_closes_leaving_pipelined_commands_unanswered(local):
    local.send(b"QUIT\r\nNOOP\r\nRSET\r\n")
    assert local.reply() == ["221 2.0.0 Bye"]
    assert local.until_closed() == b""


def test_vrfy_is_252_cannot_vrfy_501_without_argument_502_for_a_non_address(local):
    assert local.ask(b"VRFY") == "501 5.5.4 Syntax: VRFY <address>"
    for argument in (b"<client@example.net>", b"client@example.net", b"client"):
        assert local.ask(b"VRFY " + argument) == \
            "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery", argument
    assert local.ask(b"VRFY @") == "502 5.5.1 Could not VRFY @"


def test_expn_is_502_not_implemented(local):
    assert local.ask(b"EXPN") == "502 5.5.1 EXPN not implemented"
    assert local.ask(b"EXPN staff") == "502 5.5.1 EXPN not implemented"


def test_help_lists_the_supported_commands(local):
    # not EXPN (aiosmtpd gives it no help text); STARTTLS only where it is not offered (below)
    assert local.ask(b"HELP") == f"250 2.0.0 {HELP_LIST}"
    assert local.ask(b"HELP EHLO") == "250 2.0.0 Syntax: EHLO hostname"
    assert local.ask(b"HELP helo") == "250 2.0.0 Syntax: HELO hostname"


def test_help_with_a_command_gives_its_syntax_with_esmtp_parameters_after_ehlo(local):
    assert local.ask(b"HELP MAIL") == "250 2.0.0 Syntax: MAIL FROM: <address> [SP <mail-parameters>]"
    assert local.ask(b"HELP rcpt") == "250 2.0.0 Syntax: RCPT TO: <address> [SP <mail-parameters>]"
    assert local.ask(b"HELP DATA") == "250 2.0.0 Syntax: DATA"
    assert local.ask(b"HELP AUTH") == "250 2.0.0 Syntax: AUTH <mechanism>"
    assert local.ask(b"HELP VRFY") == "250 2.0.0 Syntax: VRFY <address>"
    assert local.ask(b"HELP NOOP") == "250 2.0.0 Syntax: NOOP [ignored]"
    assert local.ask(b"HELP HELP") == "250 2.0.0 Syntax: HELP [command]"
    local.ask(b"HELO app.test")
    assert local.ask(b"HELP MAIL") == "250 2.0.0 Syntax: MAIL FROM: <address>"


def test_help_with_an_unknown_or_unavailable_command_is_501_and_the_list(local):
    for command in (b"FOO", b"EXPN", b"STARTTLS"):
        assert local.ask(b"HELP " + command) == f"501 5.5.4 {HELP_LIST}", command


def test_help_after_starttls_lists_starttls(relay, client_tls):
    with Dialogue(relay.port("submission")) as dialogue:
        assert dialogue.ask(b"HELP") == STARTTLS_FIRST
        dialogue.ask(b"STARTTLS")
        dialogue.starttls(client_tls)
        # looks wrong: STARTTLS is listed (and its syntax given) once it is no longer offered
        assert dialogue.ask(b"HELP") == \
            "250 2.0.0 Supported commands: AUTH DATA EHLO HELO HELP MAIL NOOP QUIT RCPT RSET STARTTLS VRFY"
        assert dialogue.ask(b"HELP STARTTLS") == "250 2.0.0 Syntax: STARTTLS"


# --- bad lines -----------------------------------------------------------------------

def test_empty_line_and_non_ascii_command_are_500_bad_syntax(local):
    assert local.ask(b"") == "500 5.5.2 Error: bad syntax"
    assert local.ask(b"   ") == "500 5.5.2 Error: command \"\" not recognized"
    assert local.ask("É".encode()) == "500 5.5.2 Error: bad syntax"
    assert local.ask(b"\xff NOOP") == "500 5.5.2 Error: bad syntax"


def test_unknown_command_is_500_naming_it_in_upper_case(local):
    assert local.ask(b"bdat 10 LAST") == '500 5.5.2 Error: command "BDAT" not recognized'
    assert local.ask(b"XCLIENT ADDR=1.2.3.4") == '500 5.5.2 Error: command "XCLIENT" not recognized'


def test_fifth_unknown_command_is_502_goodbye_and_the_connection_closes(local):
    """The budget is the session's: recognised commands in between do not restore it, and
    empty or non-ASCII lines do not spend it."""
    for verb in (b"FOO", b"BAR", b"foo"):
        assert local.ask(verb) == f'500 5.5.2 Error: command "{verb.upper().decode()}" not recognized'
        assert local.ask(b"NOOP") == "250 2.0.0 OK"
        assert local.ask(b"") == "500 5.5.2 Error: bad syntax"
    assert local.ask(b"BAZ") == '500 5.5.2 Error: command "BAZ" not recognized'
    local.send(b"QUX\r\nNOOP\r\nQUIT\r\n")                  # the fifth, and pipelined behind it
    assert local.reply() == [GOODBYE]
    assert local.until_closed() == b""


def test_command_line_limit_is_512_octets_not_counting_crlf(local):
    # looks wrong (lenient): RFC 5321 §4.5.3.1.4 counts the CRLF in its 512 octets
    assert local.ask(b"NOOP " + b"x" * 507) == "250 2.0.0 OK"                  # 512 octets
    assert local.ask(b"NOOP " + b"x" * 508) == "500 5.5.2 Command line too long"
    assert local.ask(b"NOOP") == "250 2.0.0 OK"


def test_mail_line_limit_after_ehlo_is_548_octets_however_many_ehlo_and_sessions(relay):
    """512, plus 26 for SIZE= (RFC 1870) and 10 for SMTPUTF8 (RFC 6531). aiosmtpd added the
    36 octets at every EHLO, to a table its class shares (and any new session cleared):
    each session has its own, made anew at each EHLO."""
    mail = b"MAIL FROM:<billing@acme.fr> "                            # 28 octets
    local, other = Dialogue(relay.port("local")), Dialogue(relay.port("local"))
    try:
        for _ in range(3):
            local.lines(b"EHLO app.test")
            other.lines(b"EHLO app.test")
            assert local.ask(mail + b"X" * (548 - len(mail))) == \
                "555 5.5.4 MAIL FROM parameters not recognized or not implemented"
            assert local.ask(mail + b"X" * (549 - len(mail))) == "500 5.5.2 Command line too long"
        with Dialogue(relay.port("local")) as new:                 # a new session meanwhile
            assert new.ask(b"NOOP") == "250 2.0.0 OK"
        assert local.ask(mail + b"X" * (548 - len(mail))) == \
            "555 5.5.4 MAIL FROM parameters not recognized or not implemented"
    finally:
        local.close()
        other.close()


def test_line_past_64_kib_is_500_too_long_and_the_session_goes_on(local):
    assert local.ask(b"NOOP " + b"x" * 70_000) == "500 5.5.2 Command line too long"
    assert local.ask(b"MAIL FROM:<billing@acme.fr>") == "250 2.1.0 Sender OK"


def test_pipelined_commands_in_one_write_are_answered_in_order(relay):
    with Dialogue(relay.port("local")) as dialogue:
        dialogue.send(b"EHLO app.test\r\nNOOP\r\nHELP\r\nVRFY client\r\nFOO\r\n\r\nRSET\r\n"
                      b"MAIL FROM:<billing@acme.fr>\r\nRCPT TO:<client@example.net>\r\n"
                      b"DATA x\r\nRSET\r\nQUIT\r\n")
        assert dialogue.until_closed().decode().split("\r\n") == [
            "250-relay.test", f"250-SIZE {SIZE}", "250-8BITMIME", "250-SMTPUTF8",
            "250-PIPELINING", "250-ENHANCEDSTATUSCODES", "250 HELP",
            "250 2.0.0 OK",
            f"250 2.0.0 {HELP_LIST}",
            "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery",
            '500 5.5.2 Error: command "FOO" not recognized',
            "500 5.5.2 Error: bad syntax",
            "250 2.0.0 Reset OK",
            "250 2.1.0 Sender OK",
            "250 2.1.5 Recipient OK",
            "501 5.5.4 Syntax: DATA",
            "250 2.0.0 Reset OK",
            "221 2.0.0 Bye",
            ""]


# --- STARTTLS -------------------------------------------------------------------------

def test_starttls_with_an_argument_is_501(relay):
    with Dialogue(relay.port("submission")) as dialogue:
        dialogue.lines(b"EHLO app.test")
        assert dialogue.ask(b"STARTTLS now") == "501 5.5.4 Syntax: STARTTLS"
        assert dialogue.ask(b"NOOP") == "250 2.0.0 OK"                    # still in clear


def test_starttls_where_not_offered_is_454_tls_not_available(relay, client_tls):
    for listener, context in (("local", None), ("submissions", client_tls)):
        with Dialogue(relay.port(listener), context) as dialogue:
            dialogue.lines(b"EHLO app.test")
            assert dialogue.ask(b"STARTTLS") == "454 4.7.0 TLS not available", listener
            assert dialogue.ask(b"STARTTLS now") == "501 5.5.4 Syntax: STARTTLS", listener


def test_starttls_needs_no_ehlo_and_forgets_the_helo(relay, client_tls):
    with Dialogue(relay.port("submission")) as dialogue:
        assert dialogue.ask(b"STARTTLS") == "220 2.0.0 Ready to start TLS"
        dialogue.starttls(client_tls)
        assert dialogue.ask(b"NOOP") == "250 2.0.0 OK"
    with Dialogue(relay.port("submission")) as dialogue:
        dialogue.lines(b"EHLO app.test")
        dialogue.ask(b"STARTTLS")
        dialogue.starttls(client_tls)
        assert dialogue.ask(b"MAIL FROM:<billing@acme.fr>") == "503 5.5.1 Error: send HELO first"
        assert dialogue.ask(b"AUTH PLAIN " + PLAIN_OK) == "503 5.5.1 Error: send EHLO first"


def test_before_starttls_only_noop_ehlo_starttls_and_quit_are_served(relay):
    """Everything else is 530, unknown commands included (which then never reach the
    goodbye); an empty line is still 500."""
    with Dialogue(relay.port("submission")) as dialogue:
        assert dialogue.ask(b"NOOP") == "250 2.0.0 OK"
        for command in (b"HELO app.test", b"MAIL FROM:<billing@acme.fr>", b"RCPT TO:<c@example.net>",
                        b"DATA", b"RSET", b"VRFY client", b"EXPN staff", b"HELP", b"AUTH PLAIN"):
            assert dialogue.ask(command) == STARTTLS_FIRST, command
        for _ in range(6):
            assert dialogue.ask(b"FOO") == STARTTLS_FIRST
        assert dialogue.ask(b"") == "500 5.5.2 Error: bad syntax"
        assert dialogue.lines(b"EHLO app.test")[0] == "250-relay.test"
        assert dialogue.ask(b"QUIT") == "221 2.0.0 Bye"


def test_starttls_a_second_time_is_503_and_the_session_goes_on(relay, client_tls):
    """RFC 3207 §4.2: no longer offered once TLS is on, nor taken (aiosmtpd answered 220 and
    waited for a second handshake inside the first: the session was lost)."""
    with Dialogue(relay.port("submission")) as dialogue:
        dialogue.lines(b"EHLO app.test")
        dialogue.ask(b"STARTTLS")
        dialogue.starttls(client_tls)
        dialogue.lines(b"EHLO app.test")
        assert dialogue.ask(b"STARTTLS") == "503 5.5.1 Error: TLS already active"
        assert dialogue.ask(b"NOOP") == "250 2.0.0 OK"


# --- AUTH -----------------------------------------------------------------------------

def test_auth_on_a_listener_without_tls_is_538_whatever_its_arguments(local):
    for command in (b"AUTH PLAIN " + PLAIN_OK, b"AUTH LOGIN", b"AUTH", b"AUTH FOO"):
        assert local.ask(command) == "538 5.7.11 Encryption required for authentication", command


def test_auth_without_mechanism_is_501_not_enough_value(tls):
    assert tls.ask(b"AUTH") == "501 5.5.4 Not enough value"


def test_auth_with_three_words_is_501_too_many_values(tls):
    assert tls.ask(b"AUTH PLAIN " + PLAIN_OK + b" extra") == "501 5.5.4 Too many values"


def test_auth_with_an_unknown_mechanism_is_504(tls):
    for mechanism in (b"CRAM-MD5", b"XOAUTH2 abc", b"plain"):
        # looks wrong for "plain": RFC 4954 §4 (via SASL) mechanism names are not case-sensitive
        assert tls.ask(b"AUTH " + mechanism) == "504 5.5.4 Unrecognized authentication type", \
            mechanism


def test_auth_plain_with_bad_base64_or_equals_is_501_cannot_decode(tls):
    for response in (b"!!!", b"AGJpbGxpbmctYXBw*", b"="):
        # looks wrong for "=": RFC 4954 §4 makes it an empty initial response (PLAIN would
        # then refuse it anyway, but as empty, not as undecodable)
        assert tls.ask(b"AUTH PLAIN " + response) == \
            "501 5.5.2 Cannot decode the AUTH response", response
    assert tls.ask(b"AUTH PLAIN " + b64("billing-app\0" + PASSWORD)) == \
        "501 5.5.2 Cannot decode the AUTH response"                       # two parts, not three
    assert tls.ask(b"AUTH PLAIN " + PLAIN_OK) == "235 2.7.0 Authentication successful"


def test_auth_plain_without_initial_response_is_334_empty_then_star_aborts(tls):
    assert tls.ask(b"AUTH PLAIN") == "334 "
    assert tls.ask(b"*") == "501 5.7.0 Auth aborted"
    assert tls.ask(b"NOOP") == "250 2.0.0 OK"


def test_auth_plain_challenge_answered(tls):
    assert tls.ask(b"AUTH PLAIN") == "334 "
    assert tls.ask(b"!!!") == "501 5.5.2 Can't decode base64"            # aiosmtpd's wording
    assert tls.ask(b"AUTH PLAIN") == "334 "
    assert tls.ask(b"") == "501 5.5.2 Cannot decode the AUTH response"   # relay's
    assert tls.ask(b"AUTH PLAIN") == "334 "
    assert tls.ask(PLAIN_OK) == "235 2.7.0 Authentication successful"


def test_auth_login_challenges_username_then_password(tls):
    assert tls.ask(b"AUTH LOGIN") == "334 VXNlcm5hbWU6"               # "Username:"
    assert tls.ask(b64("billing-app")) == "334 UGFzc3dvcmQ6"          # "Password:"
    assert tls.ask(b64(PASSWORD)) == "235 2.7.0 Authentication successful"


def test_auth_login_with_initial_username_challenges_the_password_only(tls):
    assert tls.ask(b"AUTH LOGIN " + b64("billing-app")) == "334 UGFzc3dvcmQ6"
    assert tls.ask(b64(PASSWORD)) == "235 2.7.0 Authentication successful"


def test_auth_login_star_or_bad_base64_ends_the_exchange(tls):
    assert tls.ask(b"AUTH LOGIN") == "334 VXNlcm5hbWU6"
    assert tls.ask(b"*") == "501 5.7.0 Auth aborted"
    assert tls.ask(b"AUTH LOGIN") == "334 VXNlcm5hbWU6"
    assert tls.ask(b64("billing-app")) == "334 UGFzc3dvcmQ6"
    assert tls.ask(b"*") == "501 5.7.0 Auth aborted"
    assert tls.ask(b"AUTH LOGIN") == "334 VXNlcm5hbWU6"
    assert tls.ask(b"!!!") == "501 5.5.2 Can't decode base64"
    assert tls.ask(b"AUTH LOGIN !!!") == "501 5.5.2 Cannot decode the AUTH response"
    # looks wrong: RFC 4954 §4 makes "=" an empty initial response
    assert tls.ask(b"AUTH LOGIN =") == "501 5.5.2 Cannot decode the AUTH response"
    assert tls.ask(b"NOOP") == "250 2.0.0 OK"


def test_auth_again_after_success_is_503_already_authenticated_even_after_ehlo(tls):
    assert tls.ask(b"AUTH PLAIN " + PLAIN_OK) == "235 2.7.0 Authentication successful"
    assert tls.ask(b"AUTH PLAIN " + PLAIN_OK) == "503 5.5.1 Already authenticated"
    assert tls.lines(b"EHLO app.test")[4] == "250-AUTH LOGIN PLAIN"     # still offered
    assert tls.ask(b"AUTH LOGIN") == "503 5.5.1 Already authenticated"


def test_auth_line_over_512_octets_is_500_too_long(tls):
    # looks wrong: RFC 4954 §4 allows an AUTH command line of 12288 octets
    assert tls.ask(b"AUTH PLAIN " + b"A" * 600) == "500 5.5.2 Command line too long"
    long_password = b64("\0billing-app\0" + "p" * 400)               # fine as a 334 answer
    assert tls.ask(b"AUTH PLAIN") == "334 "
    assert tls.ask(long_password) == "535 5.7.8 Authentication credentials invalid"


# --- timeouts and admission --------------------------------------------------------------

def _closes_within(dialogue: Dialogue, keep_sending: bytes = b"",
                   deadline: float = 5) -> tuple[float, bytes]:
    """Seconds until relay closes the connection, sending `keep_sending` every 0.1 s
    meanwhile; and what relay wrote."""
    start = time.monotonic()
    received = dialogue.pending
    while time.monotonic() - start < deadline:
        try:
            if keep_sending:
                dialogue.send(keep_sending)
            if select.select([dialogue.sock], [], [], 0.1)[0]:
                chunk = dialogue.sock.recv(65536)
                if not chunk:
                    return time.monotonic() - start, received
                received += chunk
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - start, received
    raise AssertionError(f"still open after {deadline}s; relay wrote {received!r}")


TIMED_OUT = b"421 4.4.2 Timeout exceeded, closing connection\r\n"


def test_an_idle_session_is_told_421_and_closed_after_the_timeout(impatient_relay):
    """RFC 5321 §3.8: the server says why it closes (aiosmtpd closed without a word)."""
    with Dialogue(impatient_relay.port("local")) as dialogue:
        elapsed, said = _closes_within(dialogue)
        assert said == TIMED_OUT
        assert 0.3 < elapsed < 3, elapsed


def test_the_timeout_runs_from_the_last_recognised_command_not_the_last_line(impatient_relay):
    """Empty lines are answered, but do not keep the session alive."""
    with Dialogue(impatient_relay.port("local")) as dialogue:
        assert dialogue.ask(b"NOOP") == "250 2.0.0 OK"
        elapsed, said = _closes_within(dialogue, keep_sending=CRLF)
        assert 0.3 < elapsed < 3, elapsed
        assert said.endswith(TIMED_OUT)
        lines = said[:-len(TIMED_OUT)].decode().split("\r\n")
        assert lines[-1] == "" and set(lines[:-1]) == {"500 5.5.2 Error: bad syntax"}


def test_a_message_still_coming_is_not_cut_off_by_the_timeout_a_stalled_one_is(impatient_relay):
    """During DATA the timeout runs from the last bytes received (RFC 5321 §4.5.3.2.5 times
    each data block, not the whole message): a body sent for three times `server.timeout`
    (0.5 s) is queued; one that stops coming is cut off."""
    with Dialogue(impatient_relay.port("local")) as dialogue:
        dialogue.lines(b"EHLO app.test")
        for stalls in (False, True):
            assert dialogue.ask(b"MAIL FROM:<billing@acme.fr>") == "250 2.1.0 Sender OK"
            assert dialogue.ask(b"RCPT TO:<client@example.net>") == "250 2.1.5 Recipient OK"
            assert dialogue.ask(b"DATA") == "354 End data with <CR><LF>.<CR><LF>"
            dialogue.send(b"From: billing@acme.fr\r\nSubject: slow\r\n\r\n")
            if stalls:
                elapsed, said = _closes_within(dialogue)
                assert said == TIMED_OUT and 0.3 < elapsed < 3, elapsed
                break
            until = time.monotonic() + 1.5
            while time.monotonic() < until:
                dialogue.send(b"a line of the body\r\n")
                select.select([], [], [], 0.1)
            assert re.fullmatch(r"250 2\.0\.0 Ok: queued as \w+", dialogue.ask(b"."))


def test_a_connection_over_the_per_address_limit_is_421_and_closed(make_relay):
    relay = make_relay(**{"server.max_connections_per_ip": 1})
    first = Dialogue(relay.port("local"))
    try:
        second = socket.create_connection(("127.0.0.1", relay.port("local")), timeout=5)
        with second, second.makefile("rb") as reply:
            assert reply.read() == b"421 4.7.0 Too many connections, try again later\r\n"
        assert first.ask(b"NOOP") == "250 2.0.0 OK"
    finally:
        first.close()

    def greeted() -> bool:
        with socket.create_connection(("127.0.0.1", relay.port("local")), timeout=5) as sock:
            return sock.makefile("rb").readline() == GREETING.encode() + CRLF
    wait_until(greeted, what="a new connection to be greeted once the first is gone")
