"""Reading DMARC aggregate reports from what reporters send: a mail carrying them as
attachments (Google a .zip, Microsoft and Yahoo a .xml.gz), or a bare .xml, .xml.gz or .zip
file. This module owns the unpacking and the XML; what a report holds is `aggregate.py`.

    read_reports(data)     every report in `data`, both schemas: RFC 7489 appendix C (no
                           namespace) and RFC 9990 (urn:ietf:params:xml:ns:dmarc-2.0)

The input comes from anyone (reports reach the feedback listener from the internet), so
(REFERENCE "DMARC aggregate reports"):
  - decompression is bounded: one report may decompress to `max_xml` bytes (32 MiB) at
    most, a zip may hold 10 members, a mail 10 report attachments; the zip's declared sizes
    are checked before reading and the read itself stops at the bound, as sizes can lie;
  - the XML goes through defusedxml and is refused if it declares a DTD or entities (expat
    before 2.6.0, which this Python bundles, is open to entity and quadratic blow-ups); it
    is streamed, each record dropped from the tree once read;
  - nothing is written to disk, so member paths cannot escape anything.

    ValueError
     └── ReportError              a report relay refuses; str() is one sentence naming the
          │                       file or part and what is wrong (it ends up in a 550 reply)
          └── NotAggregateReport  the input holds no DMARC aggregate report at all
"""
from __future__ import annotations

import codecs
import email
import email.message
import email.policy
import enum
import io
import ipaddress
import lzma
import re
import zipfile
import zlib
from collections.abc import Iterator
from xml.etree.ElementTree import Element

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, iterparse

from relay.watch.aggregate import AggregateReport, AuthResult, Row

__all__ = ["MAX_XML", "MAX_MEMBERS", "MAX_ATTACHMENTS", "ReportError", "NotAggregateReport",
           "read_reports"]

MAX_XML = 32 * 1024 * 1024      # the most one report may decompress to
MAX_MEMBERS = 10                # the most members a zip may hold
MAX_ATTACHMENTS = 10            # the most report attachments a mail may carry

NAMESPACE_9990 = "urn:ietf:params:xml:ns:dmarc-2.0"    # RFC 9990 §6 (XSD)
_BOM = b"\xef\xbb\xbf"
_SUFFIXES = (".xml", ".gz", ".zip")                     # .xml.gz ends with .gz
_TYPES = frozenset({"application/zip", "application/x-zip-compressed", "application/gzip",
                    "application/x-gzip", "text/xml", "application/xml"})
_DECLARED_ENCODING = re.compile(rb"""\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)""")
_UTF8_CHUNK = 1024 * 1024
_NUMBER = re.compile(r"[0-9]+")
# What zipfile raises on a damaged archive or member: bad CRC or header, corrupt deflate,
# bzip2 or lzma data, truncation, encryption (no password), an unknown compression method.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError,
               RuntimeError, NotImplementedError, ValueError)


class ReportError(ValueError):
    """A report relay refuses; str() is one sentence naming the file or part."""


class NotAggregateReport(ReportError):
    """The input holds no DMARC aggregate report at all."""


class _Format(enum.Enum):
    ZIP = "zip"
    GZIP = "gzip"
    XML = "xml"


def read_reports(data: bytes, *, max_xml: int = MAX_XML) -> list[AggregateReport]:
    """Every DMARC aggregate report in `data`, a mail or a bare .xml, .xml.gz or .zip file.

    1. a bare file is one source; a mail's sources are its report attachments
    2. each source is unpacked (zip members, gzip) into XML documents, each bounded
    3. each document is parsed, safely, into one AggregateReport

    ReportError when anything is refused (then nothing is returned); NotAggregateReport
    when the input holds no report."""
    sources = [("the file", data)] if _format(data) is not None else _attachments(data)
    return [_parse(where, xml)
            for source, payload in sources
            for where, xml in _documents(source, payload, max_xml)]


def _format(data: bytes) -> _Format | None:
    """What `data` is by its first bytes; None for anything else (then it is a mail)."""
    if data.startswith(b"PK\x03\x04"):
        return _Format.ZIP
    if data.startswith(b"\x1f\x8b"):
        return _Format.GZIP
    if data[_xml_start(data):].startswith(b"<"):
        return _Format.XML
    return None


def _xml_start(data: bytes) -> int:
    """Where the markup starts: after a UTF-8 byte order mark and whitespace. Some reporters
    put blank lines before the XML declaration, where XML allows none, so parsing starts
    here."""
    head = data[:4096]
    return len(head) - len(head.removeprefix(_BOM).lstrip())


def _attachments(data: bytes) -> list[tuple[str, bytes]]:
    """A mail's report parts: by file name (.xml, .xml.gz, .gz, .zip), or by content type.

    compat32 because it never raises on a malformed header and keeps what was sent."""
    try:
        message = email.message_from_bytes(data, policy=email.policy.compat32)
        parts = [part for part in message.walk()
                 if not part.is_multipart() and _is_report_part(part)]
    except RecursionError:       # `email` parses nested parts recursively: ~300 levels deep
        raise NotAggregateReport("the message's MIME parts are nested too deep to read") from None
    if not parts:
        raise NotAggregateReport("the message has no .xml, .xml.gz or .zip attachment")
    if len(parts) > MAX_ATTACHMENTS:
        raise ReportError(f"the message has {len(parts)} report attachments, more than the "
                          f"{MAX_ATTACHMENTS} relay reads from one message")
    return [(_part_name(part), part.get_payload(decode=True) or b"") for part in parts]


def _is_report_part(part: email.message.Message) -> bool:
    filename = (part.get_filename() or "").strip().lower()
    # application/octet-stream is a report part only when its file name says so
    return filename.endswith(_SUFFIXES) or part.get_content_type() in _TYPES


def _part_name(part: email.message.Message) -> str:
    filename = (part.get_filename() or "").strip()
    return f"attachment {filename!r}" if filename else f"the {part.get_content_type()} part"


def _documents(where: str, payload: bytes, max_xml: int) -> Iterator[tuple[str, bytes]]:
    """The XML documents in one file or attachment, one at a time, each at most max_xml."""
    kind = _format(payload)
    if kind is _Format.ZIP:
        yield from _unzip(where, payload, max_xml)
    elif kind is _Format.GZIP:
        yield where, _gunzip(where, payload, max_xml)
    elif kind is _Format.XML:
        if len(payload) > max_xml:
            raise ReportError(f"{where} is larger than the {_size(max_xml)} relay reads")
        yield where, payload
    else:
        raise ReportError(f"{where} is neither XML, gzip nor zip")


def _gunzip(where: str, data: bytes, max_xml: int) -> bytes:
    """The content of a gzip file (members concatenated), never more than max_xml bytes.

    `MAX_WBITS | 16` takes the gzip header and trailer, as some reporters' streams need."""
    chunks, total, rest = [], 0, data
    while rest:
        stream = zlib.decompressobj(zlib.MAX_WBITS | 16)
        try:
            chunk = stream.decompress(rest, max_xml + 1 - total)   # never 0 (= unbounded)
        except zlib.error as exc:
            raise ReportError(f"{where} is not a valid gzip file ({exc})") from None
        total += len(chunk)
        if total > max_xml:
            raise ReportError(f"{where} decompresses to more than the {_size(max_xml)} "
                              "relay reads")
        if not stream.eof:
            raise ReportError(f"{where} is a truncated gzip file")
        chunks.append(chunk)
        rest = stream.unused_data.lstrip(b"\0")     # another member, or padding
    return b"".join(chunks)


def _unzip(where: str, data: bytes, max_xml: int) -> Iterator[tuple[str, bytes]]:
    """The .xml members of a zip, one at a time; other members are not read."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except _ZIP_ERRORS as exc:
        raise ReportError(f"{where} is not a readable zip file ({exc})") from None
    if len(members) > MAX_MEMBERS:
        raise ReportError(f"{where} holds {len(members)} files, more than the {MAX_MEMBERS} "
                          "relay reads from one zip")
    # macOS's Archive Utility adds __MACOSX/._name.xml resource forks beside each file
    wanted = [m for m in members if m.filename.lower().endswith(".xml") and not m.is_dir()
              and not m.filename.startswith("__MACOSX/")]
    if not wanted:
        raise NotAggregateReport(f"{where} holds no .xml file")
    for member in wanted:
        yield _read_member(archive, member, f"member {member.filename!r} of {where}", max_xml)


def _read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, where: str,
                 max_xml: int) -> tuple[str, bytes]:
    if member.file_size > max_xml:
        raise ReportError(f"{where} would decompress to {member.file_size:,} bytes, more "
                          f"than the {_size(max_xml)} relay reads")
    try:
        with archive.open(member) as stream:
            xml = stream.read(max_xml + 1)      # bounded even if file_size lies
    except _ZIP_ERRORS as exc:
        raise ReportError(f"{where} is corrupt ({exc})") from None
    if len(xml) > max_xml:
        raise ReportError(f"{where} decompresses to more than the {_size(max_xml)} relay reads")
    return where, xml


def _parse(where: str, xml: bytes) -> AggregateReport:
    """One XML document as a report: checked, streamed, then read element by element."""
    _check_utf8(where, xml)
    try:
        root, schema, rows = _stream(where, xml)
    except DefusedXmlException:
        raise ReportError(f"{where} declares a DTD or entities, which relay refuses") from None
    except ParseError as exc:
        raise ReportError(f"{where} is malformed XML ({exc})") from None
    except LookupError as exc:       # an encoding="..." Python does not know
        raise ReportError(f"{where} declares an unknown encoding ({exc})") from None
    return _report(where, root, schema, tuple(rows))


def _check_utf8(where: str, xml: bytes) -> None:
    """Refuse invalid UTF-8 by line and column, unless the declaration names another
    encoding (expat decodes that one). Decoded by chunks, so memory stays small."""
    declared = _DECLARED_ENCODING.match(xml[:512].removeprefix(_BOM))
    if declared and declared.group(1).lower() not in (b"utf-8", b"utf8"):
        return
    position = 0
    while position < len(xml):
        final = position + _UTF8_CHUNK >= len(xml)
        try:
            _, used = codecs.utf_8_decode(xml[position:position + _UTF8_CHUNK], "strict", final)
        except UnicodeDecodeError as exc:
            offset = position + exc.start
            line = xml.count(b"\n", 0, offset) + 1
            column = offset - xml.rfind(b"\n", 0, offset)
            raise ReportError(f"{where} is not valid UTF-8 (byte 0x{xml[offset]:02x} at line "
                              f"{line}, column {column})") from None
        position += used


def _stream(where: str, xml: bytes) -> tuple[Element, str, list[Row]]:
    """The root (records removed), the schema and the rows, reading the XML as a stream:
    each record becomes a Row and leaves the tree, so a 32 MiB report stays small."""
    root: Element | None = None
    schema, rows, depth = "7489", [], 0
    source = io.BytesIO(xml)        # shares xml's buffer: no copy
    source.seek(_xml_start(xml))
    for event, element in iterparse(source, ("start", "end"), forbid_dtd=True):
        if event == "start":
            depth += 1
            namespace, _, element.tag = element.tag.rpartition("}")   # match by local name
            if root is None:
                root = element
                schema = "9990" if namespace == "{" + NAMESPACE_9990 else "7489"
                if element.tag != "feedback":
                    raise NotAggregateReport(f"{where} is not a DMARC aggregate report (its "
                                             f"root element is <{element.tag}>, not <feedback>)")
            continue
        depth -= 1
        if depth == 1 and element.tag == "record":
            rows.append(_row(element, f"record {len(rows) + 1} of {where}"))
            root.remove(element)
    assert root is not None         # iterparse raises ParseError on a document without one
    return root, schema, rows


def _report(where: str, root: Element, schema: str, rows: tuple[Row, ...]) -> AggregateReport:
    """The report's metadata and published policy (RFC 7489 appendix C, RFC 9990 §3)."""
    report_id = _text(root, "report_metadata/report_id")
    if not report_id:
        raise ReportError(f"{where} has no report_id")
    domain = _text(root, "policy_published/domain").lower()
    if not domain:
        raise ReportError(f"{where} names no policy domain (policy_published/domain)")
    begin, end = (_number(root, f"report_metadata/date_range/{edge}", where, "a Unix time")
                  for edge in ("begin", "end"))
    if begin > end:
        raise ReportError(f"{where} has a date_range that begins after it ends "
                          f"({begin} > {end})")
    contact = _text(root, "report_metadata/email")
    policy = root.find("policy_published")
    return AggregateReport(
        org_name=_text(root, "report_metadata/org_name") or _domain_of(contact) or "unknown",
        email=contact, report_id=report_id, begin=begin, end=end, domain=domain,
        policy=_lower(policy, "p") or "none", subdomain_policy=_lower(policy, "sp"),
        adkim=_lower(policy, "adkim") or "r", aspf=_lower(policy, "aspf") or "r",
        testing=_lower(policy, "testing") == "y", schema=schema, rows=rows)


def _row(record: Element, where: str) -> Row:
    """One record (RFC 7489 appendix C "RecordType"); a missing policy-evaluated DKIM or
    SPF result counts as "fail": only a pass that was reported aligns."""
    source_ip = _text(record, "row/source_ip")
    try:
        ipaddress.ip_address(source_ip)
    except ValueError:
        raise ReportError(f"{where} has source_ip {source_ip!r}, which is not an IP "
                          "address") from None
    evaluated = record.find("row/policy_evaluated")
    return Row(
        source_ip=source_ip,
        count=_number(record, "row/count", where, "a whole number of messages"),
        disposition=_lower(evaluated, "disposition") or "none",
        dkim=_lower(evaluated, "dkim") or "fail", spf=_lower(evaluated, "spf") or "fail",
        header_from=_lower(record, "identifiers/header_from"),
        envelope_from=_lower(record, "identifiers/envelope_from"),
        dkim_results=tuple(_dkim(e) for e in record.iterfind("auth_results/dkim")),
        spf_results=tuple(_spf(e) for e in record.iterfind("auth_results/spf")),
        reasons=tuple(reason for e in record.iterfind("row/policy_evaluated/reason")
                      if (reason := _lower(e, "type"))))


def _dkim(element: Element) -> AuthResult:
    """One DKIM signature's result; the selector as written (RFC 6376 s=)."""
    return AuthResult(domain=_lower(element, "domain"), result=_lower(element, "result") or "none",
                      selector=_text(element, "selector"))


def _spf(element: Element) -> AuthResult:
    """One SPF check's result and scope (mfrom | helo)."""
    return AuthResult(domain=_lower(element, "domain"), result=_lower(element, "result") or "none",
                      scope=_lower(element, "scope"))


def _number(element: Element, path: str, where: str, what: str) -> int:
    """A whole number, as XML Schema's unsignedInt/integer is written (no sign: none of these
    may be negative)."""
    text = _text(element, path)
    if not _NUMBER.fullmatch(text):
        name = path.removeprefix("report_metadata/").removeprefix("row/")
        raise ReportError(f"{where} has {name} {text!r}, which is not {what}")
    return int(text)


def _text(element: Element | None, path: str) -> str:
    return "" if element is None else (element.findtext(path) or "").strip()


def _lower(element: Element | None, path: str) -> str:
    return _text(element, path).lower()


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip(" <>").lower() if "@" in address else ""


def _size(limit: int) -> str:
    mib = 1024 * 1024
    return f"{limit // mib} MiB" if limit % mib == 0 else f"{limit:,} bytes"
