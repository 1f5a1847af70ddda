"""relay.watch.dmarc_reports: DMARC aggregate reports read from a mail or a bare .xml,
.xml.gz or .zip file, both schemas, and hostile input refused with a reason."""
from __future__ import annotations

import gzip
import io
import struct
import subprocess
import sys
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest

from relay.watch.aggregate import AggregateReport, AuthResult, Row
from relay.watch.dmarc_reports import MAX_XML, NotAggregateReport, ReportError, read_reports

ROOT = Path(__file__).parents[3]
DATA = ROOT / "tests" / "data" / "dmarc"
GOOGLE_ZIP = "google.com!acme.fr!1764547200!1764633599.zip"
MICROSOFT_GZ = "enterprise.protection.outlook.com!acme.fr!1764547200!1764633600.xml.gz"
BEGIN = 1764547200


def sample(name: str) -> bytes:
    return (DATA / name).read_bytes()


def read_one(data: bytes) -> AggregateReport:
    [report] = read_reports(data)
    return report


def by_ip(report: AggregateReport) -> dict[str, Row]:
    return {row.source_ip: row for row in report.rows}


def zipped(*members: tuple[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members:
            archive.writestr(name, content)
    return out.getvalue()


def mail(*attachments: tuple[bytes, str, str | None]) -> bytes:
    """A mail with a text body and (content, content type, filename) attachments."""
    message = EmailMessage()
    message["From"] = "noreply-dmarc-support@google.com"
    message["To"] = "dmarc@acme.fr"
    message["Subject"] = "Report domain: acme.fr Submitter: google.com Report-ID: 1"
    message.set_content("This is an aggregate report.\n")
    for content, content_type, filename in attachments:
        maintype, subtype = content_type.split("/")
        message.add_attachment(content, maintype=maintype, subtype=subtype, filename=filename)
    return message.as_bytes()


# --- what the samples say -------------------------------------------------------------------

def test_google_zip():
    """Google's zip: the reporter, the period, the published policy and every source's row,
    with its aligned results and raw auth results."""
    report = read_one(sample(GOOGLE_ZIP))
    assert (report.org_name, report.email, report.report_id) == (
        "google.com", "noreply-dmarc-support@google.com", "11841324781232425786")
    assert (report.begin, report.end, report.domain) == (BEGIN, 1764633599, "acme.fr")
    assert (report.policy, report.subdomain_policy, report.adkim, report.aspf) == (
        "none", "none", "r", "r")
    assert (report.schema, report.testing) == ("7489", False)
    assert (report.messages, report.aligned, report.failing) == (1594, 1591, 3)
    rows = by_ip(report)
    assert {ip: row.count for ip, row in rows.items()} == {
        "1.179.112.1": 1204, "172.246.240.1": 318, "209.85.220.41": 57, "203.0.113.9": 3,
        "2001:db8::25": 12}
    route = rows["1.179.112.1"]
    assert (route.dkim, route.spf, route.disposition, route.header_from) == (
        "pass", "pass", "none", "acme.fr")
    assert route.dkim_results == (AuthResult("acme.fr", "pass", selector="rsa1"),
                                  AuthResult("acme.fr", "pass", selector="ed1"))
    assert rows["172.246.240.1"].spf_results == (AuthResult("bounce.sendhub.example", "pass"),)
    workspace = rows["209.85.220.41"]
    assert (workspace.dkim, workspace.spf, workspace.aligned) == ("fail", "pass", True)
    assert workspace.dkim_results == (
        AuthResult("acme-fr.20230601.gappssmtp.com", "pass", selector="20230601"),)
    unknown = rows["203.0.113.9"]
    assert (unknown.aligned, unknown.dkim_results) == (False, ())
    assert unknown.spf_results == (AuthResult("acme.fr", "fail"),)
    assert rows["2001:db8::25"].spf_results == (AuthResult("acme.fr", "softfail"),)


def test_google_mail_carries_the_same_report():
    """The mail Google sends, its zip attached in base64, reads as the bare zip does."""
    assert read_reports(sample("google-report.eml")) == read_reports(sample(GOOGLE_ZIP))


def test_microsoft_gzip():
    """Microsoft's .xml.gz: schema attributes on the root, envelope_to and version are
    ignored; envelope_from and SPF scope are kept."""
    report = read_one(sample(MICROSOFT_GZ))
    assert (report.org_name, report.email, report.report_id) == (
        "Enterprise Outlook", "dmarcreport@microsoft.com", "9b1e3c52a0d54e4f8f6c2d7a4b1e0c93")
    assert (report.begin, report.end, report.schema) == (BEGIN, 1764633600, "7489")
    assert [(r.source_ip, r.count, r.aligned) for r in report.rows] == [
        ("1.179.112.1", 211, True), ("172.246.240.1", 64, True), ("203.0.113.9", 5, False)]
    assert (report.messages, report.failing) == (280, 5)
    route = report.rows[1]
    assert (route.envelope_from, route.spf) == ("bounce.sendhub.example", "fail")
    assert route.spf_results == (AuthResult("bounce.sendhub.example", "pass", scope="mfrom"),)


def test_yahoo_bare_xml():
    """Yahoo's bare XML: no sp published reads as no subdomain policy; all three aligned."""
    report = read_one(sample("yahoo-bare.xml"))
    assert (report.org_name, report.report_id, report.domain) == (
        "Yahoo", "1764590403.586716", "acme.fr")
    assert (report.subdomain_policy, report.schema) == ("", "7489")
    assert [(r.source_ip, r.count) for r in report.rows] == [
        ("172.246.240.1", 88), ("209.85.220.41", 4), ("2001:db8::25", 2)]
    assert (report.messages, report.aligned, report.failing) == (94, 94, 0)


def test_rfc9990_namespace_testing_and_reasons():
    """An RFC 9990 report (namespaced) is read as schema 9990 with its testing flag and
    strict DKIM alignment; np, discovery_method and generator are ignored; repeated
    reasons are all kept."""
    report = read_one(sample("rfc9990.xml"))
    assert (report.schema, report.testing, report.org_name) == ("9990", True, "receiver.example")
    assert (report.report_id, report.domain) == ("acme.fr-20251201-7f3c", "acme.fr")
    assert (report.policy, report.subdomain_policy, report.adkim, report.aspf) == (
        "quarantine", "none", "s", "r")
    unknown = by_ip(report)["203.0.113.9"]
    assert (unknown.count, unknown.aligned) == (6, False)
    assert unknown.reasons == ("policy_test_mode", "local_policy")
    assert unknown.dkim_results == (AuthResult("acme.fr", "fail", selector="rsa1"),)
    assert by_ip(report)["1.179.112.1"].envelope_from == "acme.fr"


def test_no_declaration_and_missing_evaluated_results():
    """A report without an XML declaration is read; a policy-evaluated DKIM or SPF result
    that is missing counts as fail, so only a reported pass aligns."""
    report = read_one(sample("no-declaration.xml"))
    assert (report.org_name, report.end) == ("Mail.Ru", 1764633600)
    route, unknown = report.rows
    assert (route.dkim, route.spf, route.aligned) == ("pass", "fail", True)
    assert route.dkim_results == (AuthResult("acme.fr", "pass", selector=""),)
    assert (unknown.dkim, unknown.spf, unknown.aligned) == ("fail", "fail", False)
    assert (unknown.dkim_results, unknown.spf_results) == ((), ())


def test_empty_org_name_falls_back_to_the_email_domain():
    """An empty org_name becomes the (lowercased) domain of the report's email; defaults
    apply to missing adkim and aspf."""
    report = read_one(sample("empty-org.xml"))
    assert (report.org_name, report.email) == (
        "reports.example.net", "DMARC-Reports@Reports.Example.NET")
    assert (report.adkim, report.aspf, report.policy) == ("r", "r", "none")


def test_no_org_name_and_no_email_is_unknown():
    """With neither org_name nor email, the reporter is "unknown"."""
    text = sample("empty-org.xml").replace(
        b"<email>DMARC-Reports@Reports.Example.NET</email>", b"")
    assert read_one(text).org_name == "unknown"


def test_uppercase_and_whitespace_are_normalized():
    """Results, dispositions and domains are lowercased, whitespace stripped; the DKIM
    selector and the report id keep their case."""
    report = read_one(sample("uppercase-results.xml"))
    assert (report.report_id, report.begin, report.end) == (
        "5f2a9d11-acme.fr-1764547200", BEGIN, 1764633599)
    assert (report.domain, report.policy, report.adkim) == ("acme.fr", "none", "r")
    route, unknown = report.rows
    assert route == Row(
        source_ip="1.179.112.1", count=25, disposition="none", dkim="pass", spf="fail",
        header_from="acme.fr", envelope_from="bounce.sendhub.example",
        dkim_results=(AuthResult("acme.fr", "pass", selector="RSA1"),),
        spf_results=(AuthResult("bounce.sendhub.example", "pass", scope="mfrom"),))
    assert unknown.dkim_results == (AuthResult("acme.fr", "none"),)
    assert (unknown.spf_results[0].result, unknown.aligned) == ("fail", False)


# --- mail or bare file ----------------------------------------------------------------------

@pytest.mark.parametrize("content_type, filename", [
    pytest.param("application/octet-stream", MICROSOFT_GZ, id="octet-stream-named-xml.gz"),
    pytest.param("application/gzip", None, id="gzip-unnamed"),
    pytest.param("application/x-gzip", "report", id="x-gzip-named-report"),
])
def test_mail_attachment_found_by_name_or_type(content_type, filename):
    """A mail's attachment is a report by its file name (.xml, .xml.gz, .gz, .zip) or its
    content type (octet-stream only by name)."""
    report = read_one(mail((sample(MICROSOFT_GZ), content_type, filename)))
    assert report.report_id == "9b1e3c52a0d54e4f8f6c2d7a4b1e0c93"


def test_mail_with_several_reports_returns_them_all():
    """Every report attachment of a mail is read, a text/xml one and a zip alike."""
    data = mail((sample("yahoo-bare.xml"), "text/xml", "yahoo.xml"),
                (sample(GOOGLE_ZIP), "application/zip", GOOGLE_ZIP))
    assert [r.org_name for r in read_reports(data)] == ["Yahoo", "google.com"]


def test_bare_xml_after_a_bom_and_blank_lines():
    """A bare file is XML when it starts with "<" after a UTF-8 BOM and whitespace, even
    whitespace before the XML declaration."""
    report = read_one(b"\xef\xbb\xbf\r\n  " + sample("yahoo-bare.xml"))
    assert report.org_name == "Yahoo"


def test_bare_gzip_of_concatenated_members():
    """A bare file is gzip by its magic bytes; concatenated gzip members make one report."""
    xml = sample("yahoo-bare.xml")
    half = len(xml) // 2
    assert read_one(gzip.compress(xml[:half]) + gzip.compress(xml[half:])).org_name == "Yahoo"


@pytest.mark.parametrize("data", [
    pytest.param(b"From: alice@acme.fr\r\nTo: dmarc@acme.fr\r\nSubject: hello\r\n\r\nHi!\r\n",
                 id="plain-mail"),
    pytest.param(mail((b"%PDF-1.7 ...", "application/pdf", "invoice.pdf")), id="pdf"),
    pytest.param(mail((b"\x00\x01", "application/octet-stream", "data.bin")), id="octet-stream"),
    pytest.param(b"", id="empty"),
])
def test_ordinary_mail_is_not_an_aggregate_report(data):
    """A mail without an .xml, .xml.gz or .zip attachment holds no report."""
    with pytest.raises(NotAggregateReport, match="no .xml, .xml.gz or .zip attachment"):
        read_reports(data)


def test_xml_that_is_not_feedback_is_not_an_aggregate_report():
    """XML whose root is not <feedback> (an RSS feed, a failure report...) holds no report."""
    with pytest.raises(NotAggregateReport, match="root element is <rss>, not <feedback>"):
        read_reports(b'<?xml version="1.0"?><rss version="2.0"><channel/></rss>')


def test_attachment_that_is_neither_xml_gzip_nor_zip():
    """A report attachment whose content is no XML, gzip or zip is refused by name."""
    with pytest.raises(ReportError, match=r"^attachment 'report.xml' is neither XML, gzip nor zip$"):
        read_reports(mail((b"\x00garbage", "application/octet-stream", "report.xml")))


def test_mail_with_too_many_report_attachments():
    """A mail carrying more than 10 report attachments is refused before any is read."""
    data = mail(*[(sample("yahoo-bare.xml"), "text/xml", f"{n}.xml") for n in range(11)])
    with pytest.raises(ReportError, match="^the message has 11 report attachments, more than the 10"):
        read_reports(data)


# --- zip ------------------------------------------------------------------------------------

def test_zip_reads_every_xml_member_and_nothing_else():
    """A zip's .xml members are all read; other members and macOS resource forks are not."""
    data = zipped(("a.xml", sample("yahoo-bare.xml")), ("notes.txt", b"not read"),
                  ("__MACOSX/._a.xml", b"\x00\x05\x16\x07"),
                  ("b.XML", sample("no-declaration.xml")))
    assert [r.org_name for r in read_reports(data)] == ["Yahoo", "Mail.Ru"]


def test_zip_with_too_many_members():
    """A zip of more than 10 members is refused before any is read."""
    data = zipped(*((f"{n}.xml", sample("yahoo-bare.xml")) for n in range(11)))
    with pytest.raises(ReportError, match="holds 11 files, more than the 10"):
        read_reports(data)


def test_zip_without_xml_member():
    """A zip without an .xml member holds no report."""
    with pytest.raises(NotAggregateReport, match=r"^the file holds no \.xml file$"):
        read_reports(zipped(("report.csv", b"ip,count\n")))


def test_zip_whose_declared_size_lies():
    """A member that decompresses to more than its central directory says is refused as
    corrupt, not read past what was declared."""
    data = bytearray(zipped(("report.xml", sample("yahoo-bare.xml"))))
    central = data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, 100)      # uncompressed size: 100 bytes
    with pytest.raises(ReportError, match=r"^member 'report.xml' of the file is corrupt \(Bad CRC-32"):
        read_reports(bytes(data))


def test_zip_member_declared_over_the_bound():
    """A member whose declared size is over the bound is refused before it is read."""
    data = zipped(("report.xml", sample("yahoo-bare.xml")))
    with pytest.raises(ReportError, match="would decompress to 2,228 bytes, more than the 1,000 bytes"):
        read_reports(data, max_xml=1000)


@pytest.mark.parametrize("data, message", [
    pytest.param(sample(GOOGLE_ZIP)[:400], r"^the file is not a readable zip file \(",
                 id="truncated-zip"),
    pytest.param(sample(MICROSOFT_GZ)[:300], r"^the file is a truncated gzip file$",
                 id="truncated-gzip"),
    pytest.param(sample(MICROSOFT_GZ)[:-8] + b"\0" * 8,
                 r"^the file is not a valid gzip file \(.*incorrect data check", id="bad-crc-gzip"),
])
def test_corrupt_archives(data, message):
    """A truncated or damaged zip or gzip file is refused, saying so."""
    with pytest.raises(ReportError, match=message):
        read_reports(data)


# --- refused reports ------------------------------------------------------------------------

@pytest.mark.parametrize("old, new, message", [
    pytest.param(b"<report_id>1764590403.586716</report_id>", b"<report_id> </report_id>",
                 r"^the file has no report_id$",
                 id="no-report-id"),
    pytest.param(b"<domain>acme.fr</domain>\n    <adkim>", b"<adkim>",
                 r"^the file names no policy domain \(policy_published/domain\)$",
                 id="no-policy-domain"),
    pytest.param(b"<count>88</count>", b"<count>eighty</count>",
                 r"^record 1 of the file has count 'eighty', which is not a whole number of messages$",
                 id="count-not-a-number"),
    pytest.param(b"<count>4</count>", b"<count>-4</count>",
                 r"^record 2 of the file has count '-4', which is not a whole number of messages$",
                 id="negative-count"),
    pytest.param(b"<begin>1764547200</begin>", b"<begin>1764720000</begin>",
                 r"^the file has a date_range that begins after it ends \(1764720000 > 1764633599\)$",
                 id="begins-after-end"),
    pytest.param(b"<end>1764633599</end>", b"<end>yesterday</end>",
                 r"^the file has date_range/end 'yesterday', which is not a Unix time$",
                 id="end-not-a-number"),
    pytest.param(b"<source_ip>2001:db8::25</source_ip>", b"<source_ip>2001:db8::zz</source_ip>",
                 r"^record 3 of the file has source_ip '2001:db8::zz', which is not an IP address$",
                 id="bad-source-ip"),
    pytest.param(b"</feedback>", b"</feedbak>",
                 r"^the file is malformed XML \(mismatched tag: line 94, column 2\)$",
                 id="malformed"),
])
def test_invalid_report_is_refused(old, new, message):
    """A report without report_id or policy domain, with a bad count, period or source IP,
    or that is not well-formed XML, is refused in one sentence naming the problem."""
    text = sample("yahoo-bare.xml")
    assert old in text
    with pytest.raises(ReportError, match=message) as caught:
        read_reports(text.replace(old, new, 1))
    assert type(caught.value) is ReportError


# --- hostile samples ------------------------------------------------------------------------

HOSTILE = {
    "billion-laughs.xml": r"^the file declares a DTD or entities, which relay refuses$",
    "external-entity.xml": r"^the file declares a DTD or entities, which relay refuses$",
    "invalid-utf8.xml": r"^the file is not valid UTF-8 \(byte 0xe9 at line 4, column 19\)$",
    "zip-bomb.zip": r"^member 'google.com!acme.fr!1764547200!1764633599.xml' of the file "
                    r"would decompress to 167,772,160 bytes, more than the 32 MiB relay reads$",
    "gzip-bomb.xml.gz": r"^the file decompresses to more than the 32 MiB relay reads$",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_sample_is_refused(name):
    """Entities, DTDs, invalid UTF-8 and decompression bombs are refused, saying why."""
    with pytest.raises(ReportError, match=HOSTILE[name]):
        read_reports(sample(name))


def test_hostile_attachment_is_refused_by_name():
    """Inside a mail, the refusal names the attachment."""
    data = mail((sample("gzip-bomb.xml.gz"), "application/gzip", MICROSOFT_GZ))
    with pytest.raises(ReportError, match=f"^attachment '{MICROSOFT_GZ}' decompresses to more"):
        read_reports(data)


def test_bare_xml_over_the_bound():
    """A bare XML file larger than the bound is refused unparsed."""
    with pytest.raises(ReportError, match=r"^the file is larger than the 1,000 bytes relay reads$"):
        read_reports(sample("yahoo-bare.xml"), max_xml=1000)


# Memory is measured in a fresh process as VmHWM, its high-water mark since exec: ru_maxrss
# would also count the pytest process it was forked from (Linux carries it across exec).
PEAK = """
status = open("/proc/self/status").read()
print(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
"""
BOMB = """
import sys
from relay.watch.dmarc_reports import ReportError, read_reports
try:
    read_reports(open(sys.argv[1], "rb").read())
    print("read")
except ReportError as exc:
    print(exc)
"""
LARGE = """
import sys
from relay.watch.dmarc_reports import read_reports
sample = open(sys.argv[1], "rb").read()
head, _, rest = sample.partition(b"<record>")
records = b"<record>" + rest.rpartition(b"</feedback>")[0]
copies = 30 * 1024 * 1024 // len(records)
[report] = read_reports(b"".join([head, *[records] * copies, b"</feedback>"]))
print(len(report.rows), report.messages)
"""
needs_proc = pytest.mark.skipif(not Path("/proc/self/status").exists(),
                                reason="needs Linux's /proc/self/status")


def run_measured(code: str, *args: str) -> tuple[str, int]:
    """What `code` prints, and the peak memory (KiB) of the process that ran it."""
    done = subprocess.run([sys.executable, "-c", code + PEAK, *args], cwd=ROOT,
                          capture_output=True, text=True, check=True, timeout=120)
    output, peak_kib = done.stdout.rsplit("\n", 2)[:2]
    return output, int(peak_kib)


@needs_proc
@pytest.mark.parametrize("name", ["zip-bomb.zip", "gzip-bomb.xml.gz"])
def test_bomb_refused_with_bounded_memory(name):
    """A 160 MiB decompression bomb is refused by a process whose memory never passes
    150 MB: the bound applies while decompressing, not after."""
    assert MAX_XML == 32 * 1024 * 1024
    refusal, peak_kib = run_measured(BOMB, str(DATA / name))
    assert "more than the 32 MiB relay reads" in refusal
    assert peak_kib < 150 * 1024


@needs_proc
def test_large_report_is_streamed_with_bounded_memory():
    """A 30 MiB report (53,016 records) is read by a process whose memory stays under
    150 MB, the XML included: each record leaves the tree once read (were they kept, the
    process would pass 300 MB)."""
    counts, peak_kib = run_measured(LARGE, str(DATA / "yahoo-bare.xml"))
    assert counts == f"{17672 * 3} {17672 * 94}"
    assert peak_kib < 150 * 1024


def test_mime_nested_too_deep_is_no_report():
    """1000 nested multiparts make `email` recurse past Python's limit: that is no report
    (the feedback listener then answers 550, not 451 for an internal error)."""
    opening = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
                       for i in range(1000))
    with pytest.raises(NotAggregateReport, match="nested too deep"):
        read_reports(b"Subject: x\r\n" + opening + b"Content-Type: text/plain\r\n\r\nx\r\n")
