"""TLS policy for both sides, and the listeners' certificate.

`apply_policy` is the one TLS policy of relay, for the listeners (`server_context`) and for
the routes' client contexts (`outbound/upstream.py`): TLS 1.2 or later, and for TLS 1.2 only
AEAD cipher suites with forward secrecy (ECDHE/DHE with AES-GCM or ChaCha20-Poly1305), as
RFC 9325 §4.2 recommends. TLS 1.3's suites are all of that kind and keep OpenSSL's defaults.
The certificate is the configured one, or a self-signed one made on first start.
"""
from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from relay.config import TLSConfig
from relay.errors import ConfigError

log = logging.getLogger("relay")

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2     # SSLv3, TLS 1.0 and 1.1 are gone (RFC 8996)
# No RC4, 3DES, NULL, EXPORT, anonymous, MD5, CBC (SHA-1 or SHA-2) or static RSA key
# exchange; SECLEVEL=2: no key below 2048 bits (RSA/DH) or 224 bits (EC)
CIPHERS = ("ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"
           ":!aNULL:!eNULL:!PSK:!SRP:!DSS:@SECLEVEL=2")


def apply_policy(context: ssl.SSLContext) -> ssl.SSLContext:
    """Restrict `context` to relay's TLS policy (see the module docstring); returns it."""
    context.minimum_version = MINIMUM_VERSION
    context.set_ciphers(CIPHERS)
    return context


def server_context(tls: TLSConfig, state_dir: Path, hostname: str) -> ssl.SSLContext:
    """The listeners' TLS context; an unusable file is a ConfigError naming its key."""
    if tls.self_signed:
        cert, key = ensure_self_signed(state_dir / "tls", hostname)
    else:
        cert, key = tls.certificate, tls.private_key
        for name, path in (("certificate", cert), ("private_key", key)):
            if not os.access(path, os.R_OK):
                raise ConfigError([f"server.tls.{name}: cannot read {path}"])
    context = apply_policy(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE     # our order (strongest first) decides
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError([f"server.tls: {cert} and {key} are not a usable certificate and key ({exc})"]) from None
    return context


def ensure_self_signed(directory: Path, hostname: str) -> tuple[Path, Path]:
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.timezone.utc)
    alt_names: list[x509.GeneralName] = [x509.DNSName(hostname), x509.DNSName("localhost"),
                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .sign(key, hashes.SHA256()))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    log.warning("generated a self-signed TLS certificate in %s (development only)", directory)
    return cert_path, key_path
