"""The gateway's identity: an EC P-256 key pair, its certificate signing request, and the
certificate (and CA) the city's PKI issues for it.

The key never leaves the gateway. The CSR names the gateway (CN = gateway id, O = site, and the
id again as a DNS subject alternative name, which many PKIs insist on); the certificate that
comes back is checked before it is installed: it must carry this gateway's public key and id,
be in its validity period, and (when a CA is given) be issued by that CA. Pure functions over
bytes: reading and writing files is `provisioning.provision`'s job.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.x509.oid import NameOID

from gateway.errors import GatewayError

KEY_FILE = "gateway.key"
CSR_FILE = "gateway.csr"
CERT_FILE = "gateway.crt"
CA_FILE = "ca.crt"
CONFIG_FILE = "config.yaml"


class IdentityError(GatewayError, ValueError):
    """A key, CSR or certificate is unusable for this gateway (the message says why)."""


@dataclass(frozen=True, slots=True)
class IdentityPaths:
    """Where a gateway's config and identity live inside its directory (/etc/edgegw)."""

    out_dir: Path

    @property
    def config(self) -> Path:
        return self.out_dir / CONFIG_FILE

    @property
    def key(self) -> Path:
        return self.out_dir / KEY_FILE

    @property
    def csr(self) -> Path:
        return self.out_dir / CSR_FILE

    @property
    def cert(self) -> Path:
        return self.out_dir / CERT_FILE

    @property
    def ca(self) -> Path:
        return self.out_dir / CA_FILE


@dataclass(frozen=True, slots=True, kw_only=True)
class CertInfo:
    """What a technician (and the commissioning report) needs to know about a certificate."""

    subject_cn: str | None
    subject: str
    issuer: str
    serial: str
    not_before: dt.datetime
    not_after: dt.datetime
    sha256: str                      # fingerprint, hex with colons

    def days_left(self, now: dt.datetime | None = None) -> float:
        now = now or dt.datetime.now(dt.UTC)
        return (self.not_after - now).total_seconds() / 86400


# ------------------------------------------------------------------------------------- keys
def generate_key() -> ec.EllipticCurvePrivateKey:
    """A new EC P-256 private key (small, fast on a Pi, accepted by every MQTT broker)."""
    return ec.generate_private_key(ec.SECP256R1())


def key_to_pem(key: PrivateKeyTypes) -> bytes:
    """PKCS#8 PEM, unencrypted: the agent starts unattended, so the file mode protects it."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_key(pem: bytes, *, source: str = "key") -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as err:
        raise IdentityError(f"{source}: not an unencrypted PEM private key ({err})") from err


def _public_der(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def same_public_key(a: PublicKeyTypes, b: PublicKeyTypes) -> bool:
    return _public_der(a) == _public_der(b)


# -------------------------------------------------------------------------------------- CSR
def make_csr(key: ec.EllipticCurvePrivateKey, *, gateway_id: str,
             site: str) -> x509.CertificateSigningRequest:
    """The request the city PKI signs: CN = gateway id, O = site, SAN DNS = gateway id."""
    if not gateway_id or not site:
        raise IdentityError("a CSR needs a gateway id and a site")
    subject = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, gateway_id),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, site),
    ])
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(subject)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(gateway_id)]),
                           critical=False)
            .sign(key, hashes.SHA256()))


def csr_to_pem(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.PEM)


def load_csr(pem: bytes, *, source: str = "CSR") -> x509.CertificateSigningRequest:
    try:
        return x509.load_pem_x509_csr(pem)
    except ValueError as err:
        raise IdentityError(f"{source}: not a PEM certificate signing request ({err})") from err


def _attr(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    values = name.get_attributes_for_oid(oid)
    if not values:
        return None
    value = values[0].value
    return value if isinstance(value, str) else value.decode(errors="replace")


def csr_subject(csr: x509.CertificateSigningRequest) -> tuple[str | None, str | None]:
    """(CN, O) of a CSR: the gateway id and site it was made for."""
    return (_attr(csr.subject, NameOID.COMMON_NAME),
            _attr(csr.subject, NameOID.ORGANIZATION_NAME))


# ------------------------------------------------------------------------------ certificates
def load_certs(pem: bytes, *, source: str = "certificate") -> list[x509.Certificate]:
    """Every certificate of a PEM file (a CA file may be a bundle)."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as err:
        raise IdentityError(f"{source}: not a PEM certificate ({err})") from err
    if not certs:
        raise IdentityError(f"{source}: no certificate in the file")
    return certs


def cert_info(cert: x509.Certificate) -> CertInfo:
    fp = cert.fingerprint(hashes.SHA256()).hex()
    return CertInfo(
        subject_cn=_attr(cert.subject, NameOID.COMMON_NAME),
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=format(cert.serial_number, "x"),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        sha256=":".join(fp[i:i + 2] for i in range(0, len(fp), 2)),
    )


def issued_by(cert: x509.Certificate, cas: list[x509.Certificate]) -> bool:
    """True if one of `cas` signed `cert` directly (issuer name and signature both match)."""
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False


def verify_certificate(
    cert_pem: bytes,
    *,
    key: PrivateKeyTypes,
    gateway_id: str,
    ca_pem: bytes | None = None,
    now: dt.datetime | None = None,
    source: str = "certificate",
) -> CertInfo:
    """Check that a certificate is this gateway's, before installing it; IdentityError if not.

    The first certificate of the file is the gateway's (any others are intermediates, which
    count as issuers too). It must hold the public key of `key`, name `gateway_id` as its CN,
    be valid at `now`, and be issued by a certificate of `ca_pem` (or an intermediate) when a
    CA is given.
    """
    certs = load_certs(cert_pem, source=source)
    leaf = certs[0]
    info = cert_info(leaf)
    if not same_public_key(leaf.public_key(), key.public_key()):
        raise IdentityError(
            f"{source} ({info.subject}) does not belong to this gateway's key: it was issued "
            "for another key pair (another gateway, or a CSR made before a re-provisioning)")
    if info.subject_cn != gateway_id:
        raise IdentityError(f"{source} is for {info.subject_cn!r}, not for gateway "
                            f"{gateway_id!r}")
    now = now or dt.datetime.now(dt.UTC)
    if now < info.not_before:
        raise IdentityError(
            f"{source} is not valid before {info.not_before:%Y-%m-%d %H:%M} UTC and the clock "
            f"says {now:%Y-%m-%d %H:%M} UTC (is the clock right?)")
    if now > info.not_after:
        raise IdentityError(f"{source} expired on {info.not_after:%Y-%m-%d} UTC")
    if ca_pem is not None:
        cas = load_certs(ca_pem, source="CA") + certs[1:]
        if not issued_by(leaf, cas):
            raise IdentityError(f"{source} was not issued by the CA given ({info.issuer} "
                                "signed it): wrong CA file?")
    return info


def read_identity_id(paths: IdentityPaths) -> str | None:
    """The gateway id an existing key was made for, from its certificate or its CSR."""
    for path, loader in ((paths.cert, "cert"), (paths.csr, "csr")):
        try:
            data = Path(path).read_bytes()
        except OSError:
            continue
        try:
            if loader == "cert":
                return cert_info(load_certs(data)[0]).subject_cn
            return csr_subject(load_csr(data))[0]
        except IdentityError:
            continue
    return None
