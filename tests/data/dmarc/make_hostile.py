"""Writes the hostile samples that are binary or large once expanded (README.md):
zip-bomb.zip, gzip-bomb.xml.gz and invalid-utf8.xml. Deterministic: run it from anywhere
with `python tests/data/dmarc/make_hostile.py` and the files come out byte for byte the same.
"""
from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

HERE = Path(__file__).parent
BOMB_SIZE = 160 * 1024 * 1024       # 5 times relay's 32 MiB bound on one report
CHUNK = 1024 * 1024
HEAD = b"""<?xml version="1.0" encoding="UTF-8"?>
<feedback>
  <report_metadata>
    <org_name>attacker.example</org_name>
    <email>dmarc@attacker.example</email>
    <report_id>bomb-1</report_id>
    <date_range><begin>1764547200</begin><end>1764633599</end></date_range>
  </report_metadata>
  <policy_published><domain>acme.fr</domain><p>none</p></policy_published>
"""
TAIL = b"</feedback>\n"


def bomb_chunks():
    """A well-formed report padded with whitespace to BOMB_SIZE bytes: deflate squeezes it
    about 1000 to 1, so only the size bound can stop it."""
    yield HEAD
    padding = BOMB_SIZE - len(HEAD) - len(TAIL)
    while padding > 0:
        yield b" " * min(CHUNK, padding)
        padding -= CHUNK
    yield TAIL


def write_zip_bomb(path: Path) -> None:
    member = zipfile.ZipInfo("google.com!acme.fr!1764547200!1764633599.xml", (2025, 12, 2, 0, 0, 0))
    member.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(path, "w", compresslevel=9) as archive:
        with archive.open(member, "w") as out:
            for chunk in bomb_chunks():
                out.write(chunk)


def write_gzip_bomb(path: Path) -> None:
    with path.open("wb") as raw, gzip.GzipFile("report.xml", "wb", 9, raw, mtime=0) as out:
        for chunk in bomb_chunks():
            out.write(chunk)


def write_invalid_utf8(path: Path) -> None:
    """A report whose org_name is Latin-1 ("Société Générale") under a UTF-8 declaration."""
    text = (HERE / "yahoo-bare.xml").read_bytes()
    text = text.replace(b'<?xml version="1.0"?>', b'<?xml version="1.0" encoding="UTF-8"?>')
    path.write_bytes(text.replace(b"<org_name>Yahoo</org_name>",
                                  "<org_name>Société Générale</org_name>".encode("latin-1")))


if __name__ == "__main__":
    write_zip_bomb(HERE / "zip-bomb.zip")
    write_gzip_bomb(HERE / "gzip-bomb.xml.gz")
    write_invalid_utf8(HERE / "invalid-utf8.xml")
