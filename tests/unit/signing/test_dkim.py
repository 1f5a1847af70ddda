"""relay.signing.dkim: relaxed canonicalization (RFC 6376 §3.4) and signatures that an
independent verifier (dkimpy) accepts, for RSA-SHA256, Ed25519-SHA256 (RFC 8463) and both."""
from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import dkim as dkimpy
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from dkim.canonicalization import Relaxed

from relay.signing import dkim
from relay.signing.dkim import KeyError_, Signer, load_key, public_record, txt_strings

NOW = 1_700_000_000

# A throwaway 512-bit RSA key: `cryptography` refuses to generate keys this small.
WEAK_RSA_512 = b"""-----BEGIN PRIVATE KEY-----
MIIBVAIBADANBgkqhkiG9w0BAQEFAASCAT4wggE6AgEAAkEA168S0T55WGOA041/
DC8VufXpV5BK6RRqz+qaEYwVOWXcudQnfx20n+9x2Z+H8uIvCswEZ+uguCn+S2z+
TBonXwIDAQABAkAf89rYzuWRN6SFMsgomO0iEJFSHJlMcG7mgH30rYkTaIMRLASK
ikLAOBRMy0Y6gEvxvhW5Ip7ccOP3YrE1yWWJAiEA+EY8Q2fHzoAqQSAOu73NS4Oa
Yq66s9D3u8ubwv/SG6MCIQDeZTiN7zxyYqsm8ik59DRHzUcA2cxjFGV7DMJsg1jB
FQIgaLdnD58kPUr9h353+GOzxVf6tAiyoslO1Byq0/KGsjUCIC/gwL0lvPCvN0OK
LL/yR/MRSXDwcqT99h74jz7HRCtFAiEAg23JybCkpEdO9yTUkbNTtN0iCFKZJE5A
3UR3yxV9MwY=
-----END PRIVATE KEY-----
"""


# --- fixtures ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def key_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("dkim-unit")
    (directory / "rsa.pem").write_bytes(dkim.generate_key(dkim.RSA_SHA256))
    (directory / "ed.pem").write_bytes(dkim.generate_key(dkim.ED25519_SHA256))
    return directory


@pytest.fixture(scope="module")
def rsa_key(key_dir) -> dkim.SigningKey:
    return load_key("Acme.FR", "rsa1", key_dir / "rsa.pem")


@pytest.fixture(scope="module")
def ed_key(key_dir) -> dkim.SigningKey:
    return load_key("acme.fr", "ed1", key_dir / "ed.pem")


@pytest.fixture(scope="module")
def dns(rsa_key, ed_key):
    """A dkimpy dnsfunc serving the two selectors' public records."""
    records = {f"{k.selector}._domainkey.{k.domain}.": public_record(k) for k in (rsa_key, ed_key)}

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        value = records.get(name.decode())
        return value.encode() if value else None
    return lookup


HEADERS = [
    (b"Received", b" from app ([10.0.0.1]) by relay; Tue, 14 Nov 2023 22:13:20 +0000"),
    (b"From", b" Alice <alice@acme.fr>"),
    (b"To", b" bob@example.com"),
    (b"Subject", b" Hello\r\n  there,\tworld"),          # folded, with WSP runs
    (b"Date", b" Tue, 14 Nov 2023 22:13:20 +0000"),
    (b"Message-ID", b" <1@acme.fr>"),
    (b"Bcc", b" hidden@example.com"),
    (b"MIME-Version", b" 1.0"),
    (b"Content-Type", b" text/plain; charset=utf-8"),
]
BODY = b"Hi Bob,\r\n\r\nSee  you\t soon.  \r\n\r\n\r\n"


def message(signatures: list[bytes], headers=HEADERS, body=BODY) -> bytes:
    return (b"".join(signatures) + b"".join(n + b":" + v + b"\r\n" for n, v in headers)
            + b"\r\n" + body)


def tags_of(signature: bytes) -> dict[str, str]:
    value = signature.split(b":", 1)[1].decode()
    value = re.sub(r"\s+", "", value)
    return dict(t.split("=", 1) for t in value.split(";") if t)


def verify(msg: bytes, dns, idx: int = 0) -> bool:
    """dkimpy's verdict; it raises on a body hash mismatch, which is a failure too."""
    try:
        return dkimpy.DKIM(msg).verify(idx=idx, dnsfunc=dns)
    except dkimpy.ValidationError:
        return False


# --- canonicalization ----------------------------------------------------------------

def test_rfc6376_example_relaxed_headers():
    """RFC 6376 §3.4.5: `A: X` and `B : Y<TAB><CRLF><TAB>Z  ` become `a:X` and `b:Y Z`."""
    assert dkim.relaxed_header(b"A", b" X") == b"a:X"
    assert dkim.relaxed_header(b"B ", b" Y\t\r\n\tZ  ") == b"b:Y Z"


def test_rfc6376_example_relaxed_body():
    """RFC 6376 §3.4.5: ` C <CRLF>D <TAB> E<CRLF><CRLF><CRLF>` becomes ` C<CRLF>D E<CRLF>`."""
    assert dkim.relaxed_body(b" C \r\nD \t E\r\n\r\n\r\n") == b" C\r\nD E\r\n"


@pytest.mark.parametrize("body", [b"", b"\r\n", b"\r\n\r\n\r\n", b"  \r\n\t\r\n"])
def test_empty_body_canonicalizes_to_nothing(body):
    """Relaxed: a body of only empty (or blank) lines is the empty string (RFC 6376 §3.4.4)."""
    assert dkim.relaxed_body(body) == b""
    assert dkim.body_hash(body) == base64.b64encode(hashlib.sha256(b"").digest()).decode()


def test_trailing_empty_lines_are_ignored():
    """Empty lines at the end, including lines holding only whitespace, are ignored."""
    assert dkim.relaxed_body(b"a\r\n\r\n \r\n\t\r\n") == b"a\r\n"
    assert dkim.relaxed_body(b"a\r\n\r\nb\r\n") == b"a\r\n\r\nb\r\n"   # inner empty line kept




def test_bare_cr_ending_the_last_line_is_content():
    """A CR not followed by LF is line content, not a line end: `line<CR><CRLF>` is one
    non-empty line and is kept whole (only CRLF-terminated empty lines are ignored)."""
    assert dkim.relaxed_body(b"line\r\r\n") == b"line\r\r\n"
    assert dkim.relaxed_body(b"a\r\n\r\r\n\r\n") == b"a\r\n\r\r\n"


def test_missing_final_crlf_is_added():
    """A non-empty body that does not end in CRLF is canonicalized with one."""
    assert dkim.relaxed_body(b"last line") == b"last line\r\n"


def test_wsp_runs_become_one_space_and_trailing_wsp_goes():
    """Within a line WSP runs become one SP (leading ones too); at line end they vanish."""
    assert dkim.relaxed_body(b"\t\ta  \t b \t\r\n") == b" a b\r\n"


def test_folded_header_is_unfolded():
    """Folding CRLFs disappear and the WSP around them collapses into one SP."""
    assert dkim.relaxed_header(b"Subject", b" one\r\n two\r\n\t  three ") == b"subject:one two three"
    assert dkim.relaxed_header(b"SUBJECT", b"\tx") == b"subject:x"
    assert dkim.relaxed_header(b"X-Empty", b"") == b"x-empty:"


@pytest.mark.parametrize("body", [
    b"", b"a", b"a\r\n", b" C \r\nD \t E\r\n\r\n\r\n", b"x \t \r\n  \r\ny\r\n\r\n",
    b"\r\n\r\nstart after blank lines\r\n", b"caf\xc3\xa9  au\tlait\r\n",
])
def test_relaxed_body_agrees_with_dkimpy(body):
    """Our relaxed body canonicalization matches dkimpy's on assorted bodies."""
    assert dkim.relaxed_body(body) == Relaxed.canonicalize_body(body)


def test_relaxed_headers_agree_with_dkimpy():
    """Our relaxed header canonicalization matches dkimpy's field by field."""
    ours = [dkim.relaxed_header(n, v) + b"\r\n" for n, v in HEADERS]
    theirs = [n + b":" + v for n, v in Relaxed.canonicalize_headers(list(HEADERS))]
    assert ours == theirs


# --- signatures ----------------------------------------------------------------------

def test_rsa_signature_verifies(rsa_key, dns):
    """An RSA-SHA256 signature verifies with dkimpy against the published record."""
    [sig] = Signer({"acme.fr": [rsa_key]}).sign("acme.fr", HEADERS, BODY, now=NOW)
    assert sig.startswith(b"DKIM-Signature:") and sig.endswith(b"\r\n")
    assert verify(message([sig]), dns)
    tags = tags_of(sig)
    assert tags["a"] == "rsa-sha256" and tags["s"] == "rsa1" and tags["d"] == "acme.fr"
    assert tags["c"] == "relaxed/relaxed" and tags["t"] == str(NOW) and tags["v"] == "1"


def test_ed25519_signature_verifies(ed_key, dns):
    """An Ed25519-SHA256 signature (RFC 8463) verifies with dkimpy."""
    [sig] = Signer({"acme.fr": [ed_key]}).sign("acme.fr", HEADERS, BODY, now=NOW)
    assert tags_of(sig)["a"] == "ed25519-sha256"
    assert verify(message([sig]), dns)


def test_dual_signing_gives_two_valid_signatures(rsa_key, ed_key, dns):
    """With two keys, two DKIM-Signature fields are produced, each verifying on its own."""
    sigs = Signer({"acme.fr": [rsa_key, ed_key]}).sign("acme.fr", HEADERS, BODY, now=NOW)
    assert [tags_of(s)["s"] for s in sigs] == ["rsa1", "ed1"]
    msg = message(sigs)
    assert verify(msg, dns, idx=0)
    assert verify(msg, dns, idx=1)


def test_domain_lookup_is_case_insensitive_and_unknown_domains_get_nothing(rsa_key):
    """Keys are found whatever the domain's case; a domain without keys gets no signature."""
    signer = Signer({"ACME.fr": [rsa_key]})
    assert signer.keys_for("acme.FR") == [rsa_key]
    assert signer.sign("other.fr", HEADERS, BODY, now=NOW) == []


def test_body_ending_in_a_bare_cr_verifies(rsa_key, dns):
    """A body whose last line ends with a stray CR (a common CR CR LF artifact) still
    gets a body hash a verifier agrees with."""
    body = b"Hello\r\r\n"
    [sig] = Signer({"acme.fr": [rsa_key]}).sign("acme.fr", HEADERS, body, now=NOW)
    assert verify(message([sig], body=body), dns)


def test_no_length_tag(rsa_key, ed_key):
    """No l= tag: a body length limit would let anyone append content."""
    for sig in Signer({"acme.fr": [rsa_key, ed_key]}).sign("acme.fr", HEADERS, BODY, now=NOW):
        assert "l" not in tags_of(sig)


def test_body_hash_tag_is_relaxed_sha256(rsa_key):
    """bh= is the base64 SHA-256 of the relaxed body."""
    [sig] = Signer({"acme.fr": [rsa_key]}).sign("acme.fr", HEADERS, BODY, now=NOW)
    expected = base64.b64encode(hashlib.sha256(Relaxed.canonicalize_body(BODY)).digest()).decode()
    assert tags_of(sig)["bh"] == expected


def test_signed_fields_exclude_trace_and_envelope_fields(rsa_key):
    """Received, Return-Path and Bcc are never signed; absent fields are not listed."""
    headers = HEADERS + [(b"Return-Path", b" <bounce@acme.fr>")]
    [sig] = Signer({"acme.fr": [rsa_key]}).sign("acme.fr", headers, BODY, now=NOW)
    h = tags_of(sig)["h"].split(":")
    assert h == ["from", "from", "to", "subject", "date", "message-id", "mime-version",
                 "content-type"]


def test_list_unsubscribe_fields_are_signed(rsa_key, dns):
    """RFC 8058 §4: List-Unsubscribe and List-Unsubscribe-Post are covered when present."""
    headers = HEADERS + [(b"List-Unsubscribe", b" <https://acme.fr/u/tok>"),
                         (b"List-Unsubscribe-Post", b" List-Unsubscribe=One-Click")]
    [sig] = Signer({"acme.fr": [rsa_key]}).sign("acme.fr", headers, BODY, now=NOW)
    h = tags_of(sig)["h"].split(":")
    assert "list-unsubscribe" in h and "list-unsubscribe-post" in h
    assert verify(message([sig], headers), dns)


def test_from_is_over_signed(rsa_key, dns):
    """From is listed once more than present, so a From added later breaks the signature
    whether it is added above or below the original (RFC 6376 §8.15)."""
    [sig] = Signer({"acme.fr": [rsa_key]}).sign("acme.fr", HEADERS, BODY, now=NOW)
    assert tags_of(sig)["h"].split(":").count("from") == 2
    assert verify(message([sig]), dns)
    extra = (b"From", b" Mallory <mallory@evil.example>")
    assert not verify(message([sig], HEADERS + [extra]), dns)
    assert not verify(message([sig], [extra] + HEADERS), dns)


def test_repeated_fields_are_selected_bottom_up(rsa_key, dns):
    """Each instance of a repeated field is listed, and taken from the bottom up (§5.4.2):
    the signature verifies as sent and breaks when the instances are swapped."""
    headers = HEADERS + [(b"To", b" carol@example.com")]
    [sig] = Signer({"acme.fr": [rsa_key]}).sign("acme.fr", headers, BODY, now=NOW)
    assert tags_of(sig)["h"].split(":").count("to") == 2
    assert verify(message([sig], headers), dns)
    swapped = [(n, b" carol@example.com" if n == b"To" and v == b" bob@example.com"
                else b" bob@example.com" if n == b"To" else v) for n, v in headers]
    assert swapped != headers
    assert not verify(message([sig], swapped), dns)


def test_choose_orders_instances_bottom_up_with_null_from():
    """The chosen fields name repeated instances last-first, then a null From instance."""
    chosen = dkim._choose([(b"To", b" a"), (b"From", b" f"), (b"to", b" b"), (b"X-Other", b" x")])
    assert chosen == [(b"from", b" f"), (b"from", None), (b"to", b" b"), (b"to", b" a")]


def test_changes_to_signed_content_break_the_signature(rsa_key, dns):
    """Altering the body or a signed header invalidates the signature."""
    [sig] = Signer({"acme.fr": [rsa_key]}).sign("acme.fr", HEADERS, BODY, now=NOW)
    assert not verify(message([sig], body=BODY.replace(b"Bob", b"Rob")), dns)
    tampered = [(n, b" Goodbye" if n == b"Subject" else v) for n, v in HEADERS]
    assert not verify(message([sig], tampered), dns)


def test_relaxed_changes_and_unsigned_fields_keep_the_signature(rsa_key, dns):
    """Whitespace changes relaxed canonicalization ignores, and new unsigned trace fields,
    leave the signature valid."""
    [sig] = Signer({"acme.fr": [rsa_key]}).sign("acme.fr", HEADERS, BODY, now=NOW)
    rewhitespaced = BODY.replace(b"See  you", b"See \t you") + b"\r\n\r\n"
    refolded = [(n, b" Hello there,\r\n world" if n == b"Subject" else v) for n, v in HEADERS]
    traced = [(b"Received", b" from relay by provider")] + refolded
    assert verify(message([sig], traced, rewhitespaced), dns)


def test_signature_field_lines_are_short(rsa_key):
    """The b= value is folded so the field's lines stay well under 998 octets."""
    [sig] = Signer({"acme.fr": [rsa_key]}).sign("acme.fr", HEADERS, BODY, now=NOW)
    lines = sig[:-2].split(b"\r\n")
    assert len(lines) > 3
    assert all(len(line) <= 100 for line in lines)
    assert all(line[:1] in (b" ", b"\t") for line in lines[1:])


# --- keys ----------------------------------------------------------------------------

def test_load_key_detects_the_algorithm_and_lowercases_the_domain(rsa_key, ed_key):
    """The algorithm comes from the key itself; the domain is stored lower-case."""
    assert (rsa_key.algorithm, rsa_key.domain, rsa_key.selector) == ("rsa-sha256", "acme.fr", "rsa1")
    assert ed_key.algorithm == "ed25519-sha256"


def test_load_key_accepts_a_matching_declared_algorithm(key_dir):
    """A declared algorithm that matches the key is fine."""
    assert load_key("a.fr", "s", key_dir / "ed.pem", "ed25519-sha256").algorithm == "ed25519-sha256"


def test_load_key_missing_file(tmp_path):
    """A missing key file is a KeyError_ naming it."""
    with pytest.raises(KeyError_, match="cannot read .*missing.pem"):
        load_key("a.fr", "s", tmp_path / "missing.pem")


def test_load_key_not_a_key(tmp_path, rsa_key):
    """A file that is not a PEM private key (junk, or a public key) is refused."""
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    public = tmp_path / "public.pem"
    public.write_bytes(rsa_key.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    for path in (junk, public):
        with pytest.raises(KeyError_, match="is not an unencrypted PEM private key"):
            load_key("a.fr", "s", path)


def test_load_key_encrypted_key_is_refused(tmp_path, rsa_key):
    """A passphrase-protected key cannot be used unattended."""
    path = tmp_path / "enc.pem"
    path.write_bytes(rsa_key.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pass")))
    with pytest.raises(KeyError_, match="is not an unencrypted PEM private key"):
        load_key("a.fr", "s", path)


def test_load_key_wrong_declared_algorithm(key_dir):
    """The algorithm in the config must match the key in the file."""
    with pytest.raises(KeyError_, match="holds a rsa-sha256 key, but algorithm says ed25519-sha256"):
        load_key("a.fr", "s", key_dir / "rsa.pem", "ed25519-sha256")
    with pytest.raises(KeyError_, match="holds a ed25519-sha256 key"):
        load_key("a.fr", "s", key_dir / "ed.pem", "rsa-sha256")


def test_load_key_small_rsa_is_refused(tmp_path):
    """RSA under 1024 bits is refused (RFC 8301)."""
    path = tmp_path / "weak.pem"
    path.write_bytes(WEAK_RSA_512)
    with pytest.raises(KeyError_, match="under 1024 bits"):
        load_key("a.fr", "s", path)


def test_load_key_other_key_types_are_refused(tmp_path):
    """Only RSA and Ed25519 can sign DKIM; an EC key is refused."""
    path = tmp_path / "ec.pem"
    path.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(KeyError_, match="only RSA and Ed25519"):
        load_key("a.fr", "s", path)


def test_key_errors_are_value_errors():
    """KeyError_ is a ValueError (and not the builtin KeyError)."""
    assert issubclass(KeyError_, ValueError) and not issubclass(KeyError_, KeyError)


def test_generated_keys_are_pkcs8_pem():
    """generate_key writes unencrypted PKCS#8 PEM of the requested kind and size."""
    pem = dkim.generate_key(dkim.ED25519_SHA256)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert isinstance(serialization.load_pem_private_key(pem, None), ed25519.Ed25519PrivateKey)


def test_public_record_rsa(rsa_key):
    """RSA: `v=DKIM1; k=rsa; p=<base64 DER SubjectPublicKeyInfo>` of the signing key."""
    record = public_record(rsa_key)
    assert record.startswith("v=DKIM1; k=rsa; p=")
    public = serialization.load_der_public_key(base64.b64decode(record.split("p=", 1)[1]))
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.public_numbers() == rsa_key.key.public_key().public_numbers()


def test_public_record_ed25519_is_the_raw_32_byte_key(ed_key):
    """Ed25519 (RFC 8463 §4.2): `k=ed25519; p=<base64 of the raw 32-byte public key>`."""
    record = public_record(ed_key)
    assert record.startswith("v=DKIM1; k=ed25519; p=")
    raw = base64.b64decode(record.split("p=", 1)[1])
    assert len(raw) == 32
    assert raw == ed_key.key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def test_txt_strings_split_at_255():
    """TXT values are cut into character-strings of at most 255 octets, losing nothing."""
    value = "x" * 600
    parts = txt_strings(value)
    assert [len(p) for p in parts] == [255, 255, 90]
    assert "".join(parts) == value
    assert txt_strings("y" * 255) == ["y" * 255]
    assert txt_strings("") == [""]


def test_rsa_2048_record_needs_several_strings(rsa_key):
    """A 2048-bit RSA record (~410 characters) is published as several strings."""
    record = public_record(rsa_key)
    parts = txt_strings(record)
    assert len(parts) >= 2 and all(len(p) <= 255 for p in parts)
    assert "".join(parts) == record
