"""Command signing: who may command a gateway, proven per request.

When ``commands.require_signature`` is on, a command request must carry a signature made with the
platform's key. Two schemes:

- ``ed25519`` (recommended): the platform holds the private key; each gateway holds only the
  public key. A gateway taken from its cabinet yields nothing that can command another gateway,
  and one signature serves a group command received by every gateway of the group.
- ``hmac-sha256``: a per-gateway shared secret, for platforms that cannot do Ed25519. The gateway
  holds a key that can also *make* signatures, so its disk must be as well guarded as the
  platform's; a group command can only be verified by gateways that share one secret.

The signed request (an extension of DESIGN.md 4.5: unsigned requests keep their shape)::

    {"id": "c-1", "cmd": "set_override",
     "signed": "{\\"id\\":\\"c-1\\",\\"cmd\\":\\"set_override\\",\\"args\\":{...},
                 \\"ts\\":1764032400000,\\"to\\":\\"gw-d1-0042\\"}",
     "sig": "ed25519:<base64 of the 64-byte signature>"}

The signature covers ``SIGNATURE_CONTEXT + signed`` where ``signed`` is taken as the exact bytes
sent (the UTF-8 of the JSON text, or, in a msgpack request, a ``bin`` holding a msgpack body), so
no canonical serialisation is needed on either side. ``signed`` decodes to ``{id, cmd, args, ts,
to}``: ``ts`` is the signing time in Unix milliseconds (checked within a window), ``to`` the
addressee (a gateway id, or ``group:NAME`` for a group topic) so that a command signed for one
gateway or group is refused on any other topic. The outer ``id`` and ``cmd`` are copies for
readers that do not verify (they must match the signed ones); the outer request carries no
``args``. Replays are refused by id in the dispatcher (``gateway.commands``).

Key files: an Ed25519 private key is PKCS#8 PEM, its public key SubjectPublicKeyInfo PEM (a public
key file may hold several keys, for rotation); an HMAC secret is 32 random bytes as 64 hex
digits. Private keys and secrets are written 0600 and refused when readable by others; they are
never logged: objects holding them print only a key id (a hash).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import stat
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack

from gateway.codec import CommandRequest, DecodeError, Encoding, load_any
from gateway.errors import ConfigError, GatewayError
from gateway.files import write_atomic

if TYPE_CHECKING:   # cryptography costs ~7 MB of RSS: imported only where keys are used
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

__all__ = [
    "SIGNATURE_CONTEXT",
    "BadSignature",
    "EnvelopeError",
    "Expired",
    "SignatureError",
    "SignedBody",
    "SigningKey",
    "SigningScheme",
    "Unsigned",
    "Verifier",
    "generate_keypair",
    "generate_secret",
    "is_signed",
    "load_signing_key",
    "load_verifier",
    "open_unverified",
    "sign_request",
    "target_of",
]

SIGNATURE_CONTEXT = b"edgegw/cmd/v1\n"    # domain separation: these signatures mean nothing else
HMAC_SECRET_BYTES = 32
_PEM_PUBLIC = re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.S)
_BODY_KEYS = frozenset({"id", "cmd", "args", "ts", "to"})
_ENVELOPE_KEYS = frozenset({"id", "cmd", "signed", "sig"})


class SigningScheme(StrEnum):
    ED25519 = "ed25519"
    HMAC_SHA256 = "hmac-sha256"


# ====================================================================================== errors
class SignatureError(GatewayError, ValueError):
    """A signed request failed verification, or an unsigned one arrived where one is required.
    The dispatcher maps each leaf to its error code."""


class Unsigned(SignatureError):
    """No signature where one is required (code ``unsigned``)."""


class BadSignature(SignatureError):
    """Wrong key, tampered body, unknown scheme, or signed for another addressee
    (code ``bad_signature``)."""


class Expired(SignatureError):
    """The signing time is outside the accepted window (code ``expired``)."""


class EnvelopeError(SignatureError):
    """The envelope or the signed body is malformed (code ``malformed``)."""


# ======================================================================================== keys
def _key_id(material: bytes) -> str:
    """A short public name for a key: safe to log, useless to an attacker."""
    return hashlib.sha256(b"edgegw-key-id\n" + material).hexdigest()[:16]


def _raw_public(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True, slots=True, repr=False)
class SigningKey:
    """A key that makes signatures (the platform's side). Prints as its scheme and key id only."""

    scheme: SigningScheme
    _ed25519: Ed25519PrivateKey | None = field(default=None, compare=False)
    _secret: bytes | None = field(default=None, compare=False)

    @classmethod
    def from_ed25519(cls, key: Ed25519PrivateKey) -> SigningKey:
        return cls(scheme=SigningScheme.ED25519, _ed25519=key)

    @classmethod
    def from_secret(cls, secret: bytes) -> SigningKey:
        if len(secret) < HMAC_SECRET_BYTES:
            raise ValueError(f"an HMAC secret needs at least {HMAC_SECRET_BYTES} bytes")
        return cls(scheme=SigningScheme.HMAC_SHA256, _secret=bytes(secret))

    @property
    def key_id(self) -> str:
        if self._ed25519 is not None:
            return _key_id(_raw_public(self._ed25519.public_key()))
        return _key_id(self._secret or b"")

    def sign(self, message: bytes) -> bytes:
        """The raw signature of ``SIGNATURE_CONTEXT + message``."""
        data = SIGNATURE_CONTEXT + message
        if self._ed25519 is not None:
            return self._ed25519.sign(data)
        return hmac.new(self._secret or b"", data, hashlib.sha256).digest()

    def __repr__(self) -> str:
        return f"SigningKey({self.scheme.value}, id={self.key_id})"


def _check_private(path: Path, *, what: str) -> bytes:
    """Read a private key file, refusing one that others can read (like mqtt.tls.key)."""
    try:
        st = path.stat()
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(str(path), [("", (
                f"{what} is readable by others (mode {stat.S_IMODE(st.st_mode):o}); "
                f"run: chmod 600 {path}"))])
        return path.read_bytes()
    except OSError as err:
        raise ConfigError(str(path), [("", f"{what}: cannot read: {err.strerror}")]) from err


def _read_secret(data: bytes, path: Path, what: str) -> bytes:
    try:
        secret = bytes.fromhex(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise ConfigError(str(path), [("", f"{what}: expected {2 * HMAC_SECRET_BYTES} hex "
                                           "digits (make one with `generate_secret`)")]) from None
    if len(secret) < HMAC_SECRET_BYTES:
        raise ConfigError(str(path), [("", f"{what}: too short ({len(secret)} bytes, need "
                                           f"at least {HMAC_SECRET_BYTES})")])
    return secret


def load_signing_key(path: str | Path) -> SigningKey:
    """The platform's signing key from a file: an Ed25519 PKCS#8 PEM private key or an HMAC
    secret (hex), told apart by content. Refuses a file readable by group or others."""
    p = Path(path)
    data = _check_private(p, what="signing key")
    if b"-----BEGIN" in data:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as err:
            raise ConfigError(str(p), [("", f"signing key: not a readable unencrypted PEM "
                                            f"private key ({type(err).__name__})")]) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(str(p), [("", "signing key: a PEM private key, but not Ed25519")])
        return SigningKey.from_ed25519(key)
    return SigningKey.from_secret(_read_secret(data, p, "signing key"))


# ====================================================================================== keygen
def _write_key_file(path: Path, data: bytes, *, mode: int, overwrite: bool) -> None:
    """Write atomically with ``mode`` from the first byte; refuse to replace a key unasked."""
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists (pass overwrite=True to replace it)")
    write_atomic(path, data, mode=mode)


def generate_keypair(private_path: str | Path, public_path: str | Path, *,
                     overwrite: bool = False) -> str:
    """Make an Ed25519 key pair: the private key (PKCS#8 PEM, 0600) stays with the platform,
    the public key (PEM, 0644) goes to every gateway. Returns the key id."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    _write_key_file(Path(private_path), private_pem, mode=0o600, overwrite=overwrite)
    _write_key_file(Path(public_path), public_pem, mode=0o644, overwrite=overwrite)
    return _key_id(_raw_public(key.public_key()))


def generate_secret(path: str | Path, *, overwrite: bool = False) -> str:
    """Make an HMAC-SHA256 secret (32 random bytes as hex, 0600). Returns its key id."""
    secret = secrets.token_bytes(HMAC_SECRET_BYTES)
    _write_key_file(Path(path), secret.hex().encode() + b"\n", mode=0o600, overwrite=overwrite)
    return _key_id(secret)


# ===================================================================================== signing
def target_of(*, gateway: str | None = None, group: str | None = None) -> str:
    """The ``to`` of a signed body: a gateway id, or ``group:NAME``."""
    if (gateway is None) == (group is None):
        raise ValueError("give exactly one of gateway or group")
    return gateway if gateway is not None else f"group:{group}"


def sign_request(request: CommandRequest, *, key: SigningKey, to: str,
                 ts_ms: int | None = None, encoding: Encoding = Encoding.JSON) -> bytes:
    """The signed request payload, ready to publish (see the module docstring).

    ``to`` comes from :func:`target_of`; ``ts_ms`` defaults to now.
    """
    if request.id is None:
        raise ValueError("a signed request needs an id (replay protection is by id)")
    body = {"id": request.id, "cmd": request.cmd, "args": dict(request.args),
            "ts": int(time.time() * 1000) if ts_ms is None else int(ts_ms), "to": to}
    signed: bytes | str
    if encoding is Encoding.JSON:
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        signed, sig = text, key.sign(text.encode())
    else:
        packed: bytes = msgpack.packb(body, use_bin_type=True)
        signed, sig = packed, key.sign(packed)
    envelope = {"id": request.id, "cmd": request.cmd, "signed": signed,
                "sig": f"{key.scheme.value}:{base64.b64encode(sig).decode()}"}
    if encoding is Encoding.JSON:
        return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()
    out: bytes = msgpack.packb(envelope, use_bin_type=True)
    return out


# ================================================================================ verification
def is_signed(request: Mapping[str, Any]) -> bool:
    """Whether a decoded request carries a signed envelope (or tries to)."""
    return "sig" in request or "signed" in request


@dataclass(frozen=True, slots=True)
class SignedBody:
    """What a verified request says. ``args`` are exactly the signed ones."""

    id: str | int
    cmd: str
    args: dict[str, Any]
    ts: int
    to: str
    key_id: str


@dataclass(frozen=True, slots=True, repr=False)
class Verifier:
    """Checks signed requests against the configured keys (several for a rotation).

    ``window_s``: a signature is accepted within this many seconds of the gateway's clock, either
    way. With an untrusted clock (no RTC, no time sync yet) the window is anchored instead on the
    newest signing time already accepted (``high_water_ms``): an old captured command stays
    refused, and ``sync_time`` can still get through to fix the clock.
    """

    scheme: SigningScheme
    window_s: float
    _public: tuple[Ed25519PublicKey, ...] = ()
    _secrets: tuple[bytes, ...] = ()

    @classmethod
    def ed25519(cls, keys: Sequence[Ed25519PublicKey], *, window_s: float) -> Verifier:
        if not keys:
            raise ValueError("ed25519 verifier: no public key")
        return cls(scheme=SigningScheme.ED25519, window_s=window_s, _public=tuple(keys))

    @classmethod
    def hmac_sha256(cls, secrets_: Sequence[bytes], *, window_s: float) -> Verifier:
        if not secrets_ or any(len(s) < HMAC_SECRET_BYTES for s in secrets_):
            raise ValueError(f"hmac verifier: need secrets of {HMAC_SECRET_BYTES}+ bytes")
        return cls(scheme=SigningScheme.HMAC_SHA256, window_s=window_s,
                   _secrets=tuple(bytes(s) for s in secrets_))

    @property
    def key_ids(self) -> list[str]:
        return ([_key_id(_raw_public(k)) for k in self._public]
                + [_key_id(s) for s in self._secrets])

    def __repr__(self) -> str:
        return f"Verifier({self.scheme.value}, keys={self.key_ids}, window_s={self.window_s:g})"

    def _check(self, message: bytes, sig: bytes) -> str | None:
        """The id of the key that made ``sig``, or None."""
        from cryptography.exceptions import InvalidSignature

        data = SIGNATURE_CONTEXT + message
        for pub in self._public:
            try:
                pub.verify(sig, data)
            except InvalidSignature:
                continue
            return _key_id(_raw_public(pub))
        for secret in self._secrets:
            if hmac.compare_digest(hmac.new(secret, data, hashlib.sha256).digest(), sig):
                return _key_id(secret)
        return None

    def open(self, request: Mapping[str, Any], *, expected_to: str | None, now_ms: int,
             clock_trusted: bool = True, high_water_ms: int | None = None) -> SignedBody:
        """Verify a decoded request and return its signed content.

        Raises :class:`Unsigned`, :class:`BadSignature`, :class:`Expired` or
        :class:`EnvelopeError`. Nothing inside ``signed`` is parsed before the signature
        over its bytes has been checked.
        """
        if not is_signed(request):
            raise Unsigned("this gateway requires signed commands (see docs/security.md)")
        extra = set(request) - _ENVELOPE_KEYS
        if extra:
            raise EnvelopeError(
                f"a signed request has only id, cmd, signed and sig (the args go inside "
                f"`signed`); unexpected: {', '.join(sorted(map(str, extra)))[:200]}")
        raw_sig, signed = request.get("sig"), request.get("signed")
        if not isinstance(raw_sig, str) or ":" not in raw_sig:
            raise EnvelopeError("sig must be a string \"SCHEME:BASE64\"")
        scheme, _, b64 = raw_sig.partition(":")
        if scheme != self.scheme.value:
            raise BadSignature(f"signed with {scheme[:32]!r}; this gateway accepts "
                               f"{self.scheme.value} signatures only")
        try:
            sig = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise EnvelopeError("sig: the signature is not valid base64") from None
        message = _signed_bytes(signed)
        key_id = self._check(message, sig)
        if key_id is None:
            raise BadSignature("the signature does not match the request (wrong key, or the "
                               "signed body was altered)")
        body = _parse_body(message, text=isinstance(signed, str))
        for outer in ("id", "cmd"):
            if outer in request and request[outer] != body[outer]:
                raise BadSignature(f"the outer {outer} differs from the signed one")
        if expected_to is None or body["to"] != expected_to:
            where = expected_to or "an unexpected topic"
            raise BadSignature(f"signed for {body['to'][:80]!r}, but received for {where!r}")
        self._check_time(body["ts"], now_ms=now_ms, clock_trusted=clock_trusted,
                         high_water_ms=high_water_ms)
        return SignedBody(id=body["id"], cmd=body["cmd"], args=body["args"], ts=body["ts"],
                          to=body["to"], key_id=key_id)

    def _check_time(self, ts: int, *, now_ms: int, clock_trusted: bool,
                    high_water_ms: int | None) -> None:
        window_ms = int(self.window_s * 1000)
        if clock_trusted:
            if abs(now_ms - ts) > window_ms:
                age_s = (now_ms - ts) / 1000
                when = (f"{age_s:.0f} s ago" if age_s > 0
                        else f"{-age_s:.0f} s ahead of the gateway's clock")
                raise Expired(f"signed {when}: outside the {self.window_s:g} s window (check "
                              "the platform's and the gateway's clocks)")
        elif high_water_ms is not None and ts < high_water_ms - window_ms:
            raise Expired(f"signed {(high_water_ms - ts) / 1000:.0f} s before the newest "
                          "command already accepted, and the gateway's clock is not trusted "
                          "yet (send sync_time)")


def open_unverified(request: Mapping[str, Any]) -> SignedBody:
    """The content of a signed envelope *without* checking it: for a gateway that has no
    signing configured (and so requires none) receiving a signed request. Raises
    EnvelopeError when the envelope is malformed."""
    signed = request.get("signed")
    body = _parse_body(_signed_bytes(signed), text=isinstance(signed, str))
    return SignedBody(id=body["id"], cmd=body["cmd"], args=body["args"], ts=body["ts"],
                      to=body["to"], key_id="")


def _signed_bytes(signed: object) -> bytes:
    """The exact bytes a signature covers: the UTF-8 of a text body, or a binary body."""
    if isinstance(signed, str):
        try:
            return signed.encode("utf-8")
        except UnicodeEncodeError:
            raise EnvelopeError("signed: not valid UTF-8 text") from None
    if isinstance(signed, bytes):
        return signed
    raise EnvelopeError("signed must be a string (JSON text) or bytes (msgpack)")


def _parse_body(message: bytes, *, text: bool) -> dict[str, Any]:
    try:
        obj, _ = load_any(message, encoding=Encoding.JSON if text else None)
    except DecodeError:
        raise EnvelopeError("signed: the body is not valid JSON or msgpack") from None
    if not isinstance(obj, dict):
        raise EnvelopeError("signed: the body must be an object {id, cmd, args, ts, to}")
    extra = set(obj) - _BODY_KEYS
    if extra:
        raise EnvelopeError(f"signed: unexpected fields: {', '.join(sorted(map(str, extra)))}"
                            [:200])
    rid, cmd, args, ts, to = (obj.get(k) for k in ("id", "cmd", "args", "ts", "to"))
    if isinstance(rid, bool) or not isinstance(rid, (str, int)):
        raise EnvelopeError("signed: id must be a string or an integer")
    if not isinstance(cmd, str) or not cmd:
        raise EnvelopeError("signed: cmd must be a non-empty string")
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise EnvelopeError("signed: args must be an object")
    if isinstance(ts, bool) or not isinstance(ts, int):
        raise EnvelopeError("signed: ts must be integer Unix milliseconds")
    if not isinstance(to, str) or not to:
        raise EnvelopeError("signed: to must be the gateway id or group:NAME")
    return {"id": rid, "cmd": cmd, "args": args, "ts": ts, "to": to}


def load_verifier(*, scheme: SigningScheme | str, window_s: float,
                  public_key_file: str | Path | None = None,
                  key_file: str | Path | None = None) -> Verifier:
    """The gateway's verifier from its key file: Ed25519 public key(s) (one or more PEM blocks)
    or the HMAC secret (which must be 0600). Raises ConfigError naming the file."""
    scheme = SigningScheme(scheme)
    if scheme is SigningScheme.ED25519:
        if public_key_file is None:
            raise ConfigError("commands.signing", [("commands.signing.public_key_file",
                                                    "ed25519 needs the platform's public key")])
        p = Path(public_key_file)
        try:
            data = p.read_bytes()
        except OSError as err:
            raise ConfigError(str(p), [("", f"public key: cannot read: {err.strerror}")]) \
                from err
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        keys: list[Ed25519PublicKey] = []
        for n, block in enumerate(_PEM_PUBLIC.findall(data), 1):
            try:
                key = serialization.load_pem_public_key(block)
            except ValueError:
                raise ConfigError(str(p), [("", f"public key {n}: not a readable PEM "
                                                "public key")]) from None
            if not isinstance(key, Ed25519PublicKey):
                raise ConfigError(str(p), [("", f"public key {n}: not an Ed25519 key")])
            keys.append(key)
        if not keys:
            raise ConfigError(str(p), [("", "no '-----BEGIN PUBLIC KEY-----' block found")])
        return Verifier.ed25519(keys, window_s=window_s)
    if key_file is None:
        raise ConfigError("commands.signing", [("commands.signing.key_file",
                                                "hmac-sha256 needs the shared secret's file")])
    p = Path(key_file)
    secret = _read_secret(_check_private(p, what="commands.signing.key_file"), p,
                          "commands.signing.key_file")
    return Verifier.hmac_sha256([secret], window_s=window_s)
