"""The page's certificate: ``web.tls: {cert, key}`` when configured, else a self-signed one made
at the agent's first start and kept beside the store (the only place the service may write).

A browser cannot vouch for a self-signed certificate, so the technician compares its SHA-256
fingerprint with the one ``edgegw status`` prints and the commissioning report carries. No
aiohttp here (``edgegw check`` reads the fingerprint too), and ``cryptography`` (7 MB resident)
only to make the certificate, once: the fingerprint needs the standard library alone.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import re
import socket
import ssl
from pathlib import Path

from gateway.config import Config, WebCfg
from gateway.files import PUBLIC_MODE, SECRET_MODE, write_atomic

__all__ = ["SELF_SIGNED_CERT", "SELF_SIGNED_KEY", "ensure_certificate", "fingerprint",
           "make_self_signed", "tls_files", "urls"]

SELF_SIGNED_CERT = "web-selfsigned.crt"
SELF_SIGNED_KEY = "web-selfsigned.key"
VALID_DAYS = 3650          # a cabinet's life; the fingerprint, not the date, is what is checked


def tls_files(cfg: Config) -> tuple[Path, Path, bool]:
    """(certificate, key, self-signed?) the page is served with."""
    web = cfg.web
    if web is not None and web.tls is not None:
        return Path(web.tls.cert), Path(web.tls.key), False
    d = Path(cfg.store.path).parent
    return d / SELF_SIGNED_CERT, d / SELF_SIGNED_KEY, True


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 over the (first) certificate's DER, as browsers show it: ``AB:CD:...`` (32
    pairs). ValueError when there is no PEM certificate."""
    m = re.search(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", cert_pem,
                  re.DOTALL)
    if m is None:
        raise ValueError("no PEM certificate (-----BEGIN CERTIFICATE-----) in the file")
    der = ssl.PEM_cert_to_DER_cert(m.group(0).decode("ascii", "replace"))
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def urls(web: WebCfg) -> list[str]:
    """The page's addresses as a technician types them (0.0.0.0: this machine's name)."""
    out = []
    for listen in web.listens:
        host, _, port = listen.rpartition(":")
        if host in ("0.0.0.0", "[::]", ""):
            host = socket.gethostname()
        out.append(f"https://{host}" + ("" if port == "443" else f":{port}"))
    return out


def make_self_signed(cert_path: Path, key_path: Path, *, gateway_id: str, site: str,
                     now: dt.datetime | None = None) -> None:
    """An EC P-256 key (0600 from its first byte) and a certificate for it, naming the gateway
    (CN), its site (O) and this machine's names and loopback addresses."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, gateway_id),
                      *([x509.NameAttribute(NameOID.ORGANIZATION_NAME, site)] if site else []),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME,
                                         "edgegw technician's page")])
    dns = sorted({gateway_id, socket.gethostname(), "localhost"})
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
    alt += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")]
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    write_atomic(key_path, key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()), mode=SECRET_MODE)
    write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=PUBLIC_MODE)


def ensure_certificate(cfg: Config) -> tuple[Path, Path, str, bool]:
    """(certificate, key, fingerprint, made now?): the self-signed pair is made when missing.
    OSError when it cannot be written; ValueError when a file is not a certificate."""
    cert, key, self_signed = tls_files(cfg)
    made = False
    if self_signed and not (cert.exists() and key.exists()):
        make_self_signed(cert, key, gateway_id=cfg.gateway.id, site=cfg.gateway.site)
        made = True
    return cert, key, fingerprint(cert.read_bytes()), made
