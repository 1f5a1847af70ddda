"""TLS for the listeners: the configured certificate, or a self-signed one made on first start."""
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


def server_context(tls: TLSConfig, state_dir: Path, hostname: str) -> ssl.SSLContext:
    """The listeners' TLS context; an unusable file is a ConfigError naming its key."""
    if tls.self_signed:
        cert, key = ensure_self_signed(state_dir / "tls", hostname)
    else:
        cert, key = tls.certificate, tls.private_key
        for name, path in (("certificate", cert), ("private_key", key)):
            if not os.access(path, os.R_OK):
                raise ConfigError([f"server.tls.{name}: cannot read {path}"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
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
