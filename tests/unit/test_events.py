"""relay.events: the message event log and the format of the whole log.

`emit` writes one INFO record on `relay.events` whose message is logfmt (`queued id=X
reply="250 2.0.0 Ok"`), quoting a value where it needs it and dropping None fields;
`JsonFormatter` turns any record into one JSON object per line (events as flat fields,
other lines as `msg`); `configure` points the root logger at stderr in either format.
"""
from __future__ import annotations

import io
import json
import logging
import re
import sys
from datetime import datetime, timezone

import pytest

from relay import events
from relay.events import Event, JsonFormatter, configure, emit

T = datetime(2026, 11, 22, 18, 0, 1, 125000, tzinfo=timezone.utc).timestamp()   # .125 is exact
ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture
def rendered(caplog):
    """rendered(event, **fields) -> the message emit() logged for it."""
    caplog.set_level(logging.INFO, logger="relay.events")

    def render(event: Event, **fields: object) -> str:
        caplog.clear()
        emit(event, **fields)
        [record] = caplog.records
        assert record.name == "relay.events" and record.levelno == logging.INFO
        return record.getMessage()
    return render


@pytest.fixture
def json_lines():
    """A JsonFormatter handler on the root logger; json_lines() -> the objects written so far."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)

    def lines() -> list[dict]:
        text = stream.getvalue()
        assert text.endswith("\n")
        return [json.loads(line) for line in text.splitlines()]
    yield lines
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def root_logging():
    """Restore the root logger's handlers and level after a test that calls configure()
    (basicConfig(force=True) replaces them, pytest's own capture handlers included)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.handlers[:] = handlers
    root.setLevel(level)


def record(msg: str = "hello", created: float = T, **kwargs) -> logging.LogRecord:
    rec = logging.LogRecord("relay.test", logging.INFO, __file__, 1, msg, (), None, **kwargs)
    rec.created = created
    return rec


# --- emit: the readable message -----------------------------------------------------------

def test_emit_renders_the_event_then_its_fields_in_logfmt(rendered):
    """The event name, then key=value in the order given; a value with a space is quoted."""
    assert rendered(Event.QUEUED, id="01JD", domain="acme.fr", reply="250 2.0.0 Ok") == \
        'queued id=01JD domain=acme.fr reply="250 2.0.0 Ok"'


def test_plain_values_are_not_quoted(rendered):
    """Numbers, enums and printable non-ASCII text without specials stay bare."""
    assert rendered(Event.DSN_SENT, id="Q1", rcpts=2, delay=1.5, domain="café.fr",
                    kind=Event.BOUNCED) == "dsn_sent id=Q1 rcpts=2 delay=1.5 domain=café.fr kind=bounced"


@pytest.mark.parametrize("value, shown", [
    ('say "hi"', r'"say \"hi\""'),
    ("a=b", '"a=b"'),
    ("C:\\spool", r'"C:\\spool"'),
    ("", '""'),
    ("two\nlines", r'"two\nlines"'),
    ("tab\there", r'"tab\there"'),
    ("nul\x00esc\x1b", r'"nul\u0000esc\u001b"'),
    ("Réponse à 5.1.1", '"Réponse à 5.1.1"'),
], ids=["quote", "equals", "backslash", "empty", "newline", "tab", "control", "non-ascii-space"])
def test_values_that_need_it_are_quoted_and_escaped(rendered, value, shown):
    """Spaces, quotes, `=`, backslashes, control characters and the empty string make a value
    a JSON string: the line stays one line and splits back into its fields."""
    message = rendered(Event.REJECTED, reply=value, id="Q1")
    assert message == f"rejected reply={shown} id=Q1"
    assert "\n" not in message


@pytest.mark.parametrize("char", ["\x7f", "\x85", "\u2028", "\u202e"],
                         ids=["DEL", "NEL", "line-separator", "bidi-override"])
def test_every_non_printable_character_is_escaped(rendered, char):
    """A value from a client or an upstream (a command, a reply) cannot put an invisible,
    line-breaking or text-reversing character into the log: whatever is not printable is
    escaped, so the rendered message is printable apart from its spaces."""
    message = rendered(Event.REJECTED, command=f"MAIL{char}FROM")
    assert message.startswith('rejected command="MAIL')
    assert message.replace(" ", "").isprintable(), repr(message)


def test_none_fields_are_dropped(rendered):
    """A field given as None is left out, not shown as `None`."""
    assert rendered(Event.DSN_SENT, id="Q1", to=None, rcpts=2) == "dsn_sent id=Q1 rcpts=2"
    assert rendered(Event.REJECTED, id=None, command="RCPT") == "rejected command=RCPT"


def test_emit_writes_nothing_when_info_is_disabled(caplog):
    """Below INFO's threshold emit does no work and logs nothing."""
    caplog.set_level(logging.WARNING, logger="relay.events")
    emit(Event.QUEUED, id="Q1")
    assert caplog.records == []


def test_every_event_kind_is_a_lowercase_word():
    """The closed set of kinds, as they appear in both formats."""
    assert {e.value for e in Event} == {
        "received", "rejected", "queued", "attempt", "delivered", "deferred", "bounced",
        "expired", "dsn_sent", "deleted", "suppressed", "complained", "paused", "resumed",
        "blocklist_listed", "blocklist_cleared", "blocklist_refused", "dmarc_report",
        "retried", "unsuppressed"}


# --- JsonFormatter ---------------------------------------------------------------------------

def test_an_event_is_one_json_object_with_flat_fields(json_lines):
    """time, level, logger, event, then the fields themselves (numbers stay numbers, None
    fields are dropped), and no `msg`."""
    emit(Event.DELIVERED, id="Q1", domain="acme.fr", route="brevo", reply="250 2.0.0 Ok",
         rcpts=3, to=None)
    [line] = json_lines()
    assert ISO_MS.fullmatch(line.pop("time"))
    assert line == {"level": "info", "logger": "relay.events", "event": "delivered", "id": "Q1",
                    "domain": "acme.fr", "route": "brevo", "reply": "250 2.0.0 Ok", "rcpts": 3}


def test_values_json_cannot_hold_are_written_as_text(json_lines, tmp_path):
    """A field that is not a JSON type (a path, an exception) is its str(); non-ASCII text
    is written as is."""
    emit(Event.DELETED, id="Q1", path=tmp_path, error=ValueError("bad"), domain="café.fr")
    [line] = json_lines()
    assert (line["path"], line["error"], line["domain"]) == (str(tmp_path), "bad", "café.fr")


def test_an_ordinary_log_line_carries_msg(json_lines):
    """A record that is not an event has its formatted message as `msg` and no `event`."""
    logging.getLogger("relay.spool").warning("disk %s is %d%% full", "/var/spool", 95)
    [line] = json_lines()
    assert set(line) == {"time", "level", "logger", "msg"}
    assert (line["level"], line["logger"], line["msg"]) == (
        "warning", "relay.spool", "disk /var/spool is 95% full")


def test_an_exception_adds_exc_with_the_traceback_on_the_same_line(json_lines):
    """exc_info adds `exc`: the formatted traceback, escaped so the object stays one line."""
    try:
        raise ValueError("spool unwritable")
    except ValueError:
        logging.getLogger("relay.app").exception("delivery loop crashed")
    [line] = json_lines()
    assert (line["level"], line["msg"]) == ("error", "delivery loop crashed")
    assert line["exc"].startswith("Traceback (most recent call last):")
    assert line["exc"].endswith("ValueError: spool unwritable")


def test_time_is_iso_8601_utc_with_milliseconds():
    """`created` becomes YYYY-MM-DDTHH:MM:SS.mmmZ in UTC, whatever the local time zone."""
    line = json.loads(JsonFormatter().format(record(created=T)))
    assert line["time"] == "2026-11-22T18:00:01.125Z"


def test_milliseconds_are_truncated_never_carried_into_the_next_second():
    """999.9 ms is .999 of the same second, not .1000 nor the next second."""
    line = json.loads(JsonFormatter().format(record(created=T - 0.125 + 0.9999)))
    assert line["time"] == "2026-11-22T18:00:01.999Z"
    line = json.loads(JsonFormatter().format(record(created=T - 0.125)))
    assert line["time"] == "2026-11-22T18:00:01.000Z"


# --- configure ---------------------------------------------------------------------------------

def test_configure_json_writes_json_lines_to_stderr(root_logging, capsys):
    """configure("json"): every logger, events included, writes JSON objects to stderr."""
    configure("json")
    logging.getLogger("relay.app").info("started")
    emit(Event.QUEUED, id="Q1", reply="250 2.0.0 Ok")
    out = capsys.readouterr()
    assert out.out == ""
    first, second = [json.loads(line) for line in out.err.splitlines()]
    assert (first["logger"], first["msg"]) == ("relay.app", "started")
    assert (second["event"], second["id"], second["reply"]) == ("queued", "Q1", "250 2.0.0 Ok")


def test_configure_text_writes_readable_lines_to_stderr(root_logging, capsys):
    """configure("text") (the default): `<date> <time> LEVEL logger: message`, the event in
    logfmt."""
    configure()
    emit(Event.QUEUED, id="Q1", reply="250 2.0.0 Ok")
    err = capsys.readouterr().err
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(,\d{3})? INFO relay\.events: "
                        r'queued id=Q1 reply="250 2\.0\.0 Ok"\n', err), err


def test_configure_sets_the_level_and_verbose_means_debug(root_logging, capsys):
    """level="warning" hides info (events included); verbose shows debug."""
    configure("text", level="warning")
    logging.getLogger("relay.app").info("hidden")
    emit(Event.QUEUED, id="Q1")
    logging.getLogger("relay.app").warning("shown")
    assert [line.split(": ", 1)[1] for line in capsys.readouterr().err.splitlines()] == ["shown"]

    configure("json", verbose=True)
    logging.getLogger("relay.app").debug("details")
    [line] = capsys.readouterr().err.splitlines()
    assert json.loads(line)["level"] == "debug"


def test_configure_replaces_the_previous_handlers(root_logging, capsys):
    """Configuring twice leaves one handler: each line is written once, in the last format."""
    configure("text")
    configure("json")
    logging.getLogger("relay.app").warning("once")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["msg"] == "once"
    assert len(logging.getLogger().handlers) == 1
    assert logging.getLogger().handlers[0].stream is sys.stderr
    assert isinstance(logging.getLogger().handlers[0].formatter, events.JsonFormatter)


class Writes(io.StringIO):
    """A stream that remembers each write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def turn_handler() -> tuple[events.TurnHandler, Writes]:
    stream = Writes()
    handler = events.TurnHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler, stream


def test_lines_of_one_loop_turn_are_written_together_at_its_end():
    import asyncio
    handler, stream = turn_handler()

    async def turn() -> list[str]:
        for n in range(3):
            handler.handle(record(f"line {n}"))
        written_meanwhile = list(stream.writes)
        await asyncio.sleep(0)                 # the turn ends
        await asyncio.sleep(0)
        return written_meanwhile
    assert asyncio.run(turn()) == []
    assert stream.writes == ["line 0\nline 1\nline 2\n"]


def test_lines_with_no_loop_running_are_written_at_once():
    handler, stream = turn_handler()
    handler.handle(record("first"))
    handler.handle(record("second"))
    assert stream.writes == ["first\n", "second\n"]


def test_lines_waiting_when_the_loop_stops_are_written_by_flush():
    """logging.shutdown (at exit) flushes every handler: a line logged in the last turn of a
    loop that stopped before the turn ended is not lost."""
    import asyncio
    handler, stream = turn_handler()

    async def last_words() -> None:
        handler.handle(record("relay stopped"))
    loop = asyncio.new_event_loop()
    loop.run_until_complete(last_words())
    loop.close()                                  # the scheduled write never ran
    assert stream.getvalue() in ("", "relay stopped\n")
    handler.flush()
    assert stream.getvalue() == "relay stopped\n"


def test_configure_writes_through_a_turn_handler(root_logging):
    configure("json", "info")
    assert [type(h) for h in logging.getLogger().handlers] == [events.TurnHandler]


def test_recent_keeps_the_newest_and_says_what_is_new_since_a_cursor():
    from relay.events import Recent
    recent = Recent(size=3)
    for i in range(5):
        recent.add(float(i), "queued" if i % 2 else "delivered", {"domain": f"d{i % 2}.fr", "n": i})
    assert [e[2]["n"] for e in recent.latest(10)] == [4, 3, 2]
    assert [e[2]["n"] for e in recent.latest(10, kind="queued")] == [3]
    assert [e[2]["n"] for e in recent.latest(10, domain="d0.fr")] == [4, 2]
    assert [e[2]["n"] for e in recent.newer_than(3)] == [3, 4]
    assert [e[2]["n"] for e in recent.newer_than(0)] == [2, 3, 4]      # the older are gone
    assert recent.newer_than(5) == []
