"""`edgegw provision`: write a gateway's config and identity for a site, like a config flow.

The flow (Home Assistant's config flow is the model): gather the answers (flags, or prompts in
the CLI), probe everything that can be probed *before* anything is written (the config the
answers make must pass `parse_config`; a certificate must fit the key, the id and the CA), and
only then write, atomically, the key first and the config last. An existing identity is never
replaced silently: a directory that already holds another gateway's key or config is refused
unless `force` is given, and what `force` replaces is kept beside it
(``gateway.replaced-STAMP.key``).
Provisioning again with the same id keeps the key (so the certificate the PKI issued stays
valid) and the config's other sections (buses, devices, lighting), and changes only what the
answers change.

Files in the gateway's directory (default /etc/edgegw)::

    config.yaml   0644  the gateway config (DESIGN 4.2), mqtt.tls pointing at the files below
    gateway.key   0600  EC P-256 private key, PKCS#8 PEM
    gateway.csr   0644  the certificate signing request for the city PKI
    gateway.crt   0644  the certificate the PKI issued (installed with --cert)
    ca.crt        0644  the CA that signs the broker's and the gateways' certificates (--ca)
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from gateway.config import MQTT_URL_RE, NAME_RE, parse_config
from gateway.errors import ConfigError, GatewayError
from gateway.files import PUBLIC_MODE, SECRET_MODE, fsync_dir, mode_of, write_atomic
from provisioning.identity import (
    CertInfo,
    IdentityError,
    IdentityPaths,
    csr_subject,
    csr_to_pem,
    generate_key,
    key_to_pem,
    load_certs,
    load_csr,
    load_key,
    make_csr,
    read_identity_id,
    same_public_key,
    verify_certificate,
)

DEFAULT_OUT_DIR = Path("/etc/edgegw")
DEFAULT_STORE_PATH = "/var/lib/edgegw/store.db"
DEFAULT_TOPIC_PREFIX = "city/v1"


class ProvisionError(GatewayError):
    """Provisioning refused or failed; `hint` says what to do about it."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class IdentityConflict(ProvisionError):
    """The directory holds another gateway's identity and `force` was not given."""


class BadAnswer(ProvisionError, ValueError):
    """An answer (a flag, a prompt, a certificate or CA file given) is not valid."""


class MissingAnswers(ProvisionError, ValueError):
    """Required answers (gateway id, site, broker URL) were neither given nor found."""

    def __init__(self, missing: list[str]) -> None:
        self.missing = missing
        super().__init__(f"missing: {', '.join(missing)}",
                         hint="give them as flags, or run on a terminal to be asked")


class Action(StrEnum):
    CREATED = "created"
    REPLACED = "replaced"        # overwritten with new content
    UPDATED = "updated"          # same identity, content changed
    KEPT = "kept"                # left as it was
    MOVED_ASIDE = "moved aside"  # an old identity file kept under a new name (--force)


@dataclass(frozen=True, slots=True, kw_only=True)
class FileChange:
    path: Path
    action: Action
    what: str
    mode: int | None = None


# ----------------------------------------------------------------------------- validation
def check_gateway_id(value: str) -> str:
    v = value.strip()
    if not re.match(NAME_RE, v) or len(v) > 64:
        raise ValueError(f"{value!r} is not a gateway id: use letters, digits, '-', '_', '.' "
                         "(up to 64, starting with a letter or digit), e.g. gw-d1-0042")
    return v


def check_site(value: str) -> str:
    v = value.strip()
    if not v or len(v) > 64:
        raise ValueError("the site must be 1..64 characters, e.g. district-1")
    return v


def parse_groups(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    out = tuple(g.strip() for g in items if g.strip())
    for g in out:
        if not re.match(NAME_RE, g):
            raise ValueError(f"group {g!r}: use letters, digits, '-', '_', '.'")
    return out


def check_timezone(value: str) -> str:
    v = value.strip()
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}: use an IANA name like "
                         "Asia/Ho_Chi_Minh or Europe/Paris") from None
    return v


def check_broker_url(value: str) -> str:
    v = value.strip()
    if not re.match(MQTT_URL_RE, v):
        raise ValueError(f"{value!r} is not a broker URL: write mqtts://HOST:PORT "
                         "(or mqtt://HOST:PORT for a broker without TLS)")
    return v.rstrip("/")


def check_lat(value: float) -> float:
    if not -90 <= value <= 90:
        raise ValueError(f"latitude {value} is outside -90..90")
    return value


def check_lon(value: float) -> float:
    if not -180 <= value <= 180:
        raise ValueError(f"longitude {value} is outside -180..180")
    return value


# ------------------------------------------------------------------------------- requests
@dataclass(frozen=True, slots=True, kw_only=True)
class ProvisionRequest:
    """The technician's answers. None means "keep what the existing config says"."""

    out_dir: Path = DEFAULT_OUT_DIR
    gateway_id: str | None = None
    site: str | None = None
    groups: tuple[str, ...] | None = None
    lat: float | None = None
    lon: float | None = None
    timezone: str | None = None
    broker: str | None = None
    topic_prefix: str | None = None
    store_path: str | None = None
    cert: Path | None = None          # a certificate to install (PEM)
    ca: Path | None = None            # a CA (bundle) to install (PEM)
    force: bool = False
    # an account of the technician's page (the page is switched on with it)
    web_user: str | None = None
    web_role: str = "technician"
    web_password: str | None = None
    web_listen: str | None = None     # HOST:PORT (default 0.0.0.0:8443)


@dataclass(frozen=True, slots=True, kw_only=True)
class Existing:
    """What a gateway directory already holds."""

    paths: IdentityPaths
    config: dict[str, Any] | None            # the raw YAML mapping of config.yaml
    config_error: str | None                 # config.yaml exists but cannot be read as YAML
    config_id: str | None                    # gateway.id in config.yaml
    has_key: bool
    key_id: str | None                       # the id the key's certificate or CSR names

    @property
    def identity_id(self) -> str | None:
        return self.config_id or self.key_id

    def value(self, *keys: str) -> Any:
        node: Any = self.config
        for k in keys:
            if not isinstance(node, Mapping):
                return None
            node = node.get(k)
        return node


def inspect_existing(out_dir: Path) -> Existing:
    paths = IdentityPaths(out_dir)
    raw: dict[str, Any] | None = None
    error: str | None = None
    try:
        text = paths.config.read_text()
    except FileNotFoundError:
        text = None
    except OSError as err:
        text, error = None, f"cannot read {paths.config}: {err.strerror}"
    if text is not None:
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as err:
            error = f"{paths.config} is not valid YAML: {err}"
        else:
            if isinstance(loaded, dict):
                raw = loaded
            elif loaded is not None:
                error = f"{paths.config} is not a YAML mapping"
    config_id = None
    if raw is not None and isinstance(raw.get("gateway"), Mapping):
        gid = raw["gateway"].get("id")
        config_id = str(gid) if gid is not None else None
    has_key = paths.key.exists()
    return Existing(paths=paths, config=raw, config_error=error, config_id=config_id,
                    has_key=has_key, key_id=read_identity_id(paths) if has_key else None)


def missing_answers(req: ProvisionRequest, existing: Existing) -> list[str]:
    """The required answers neither in `req` nor in the existing config (flag names)."""
    missing = []
    if req.gateway_id is None and existing.config_id is None:
        missing.append("--id")
    if req.site is None and not existing.value("gateway", "site"):
        missing.append("--site")
    if req.broker is None and existing.value("mqtt", "url") is None:
        missing.append("--broker")
    return missing


@dataclass(frozen=True, slots=True, kw_only=True)
class ProvisionResult:
    gateway_id: str
    site: str
    paths: IdentityPaths
    changes: tuple[FileChange, ...]
    tls: bool                                 # the broker URL is mqtts
    cert: CertInfo | None                     # the installed certificate, if any
    has_ca: bool
    kept_sections: tuple[str, ...] = ()       # config sections carried over (buses, devices...)
    notes: tuple[str, ...] = field(default=())

    @property
    def needs_certificate(self) -> bool:
        return self.tls and self.cert is None


# --------------------------------------------------------------------------------- the flow
def _stamp(now: dt.datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%S")


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise BadAnswer(f"cannot read the {what} {path}: {err.strerror}",
                             hint="check the path you gave") from err


def _load_existing_key(existing: Existing) -> PrivateKeyTypes:
    try:
        return load_key(existing.paths.key.read_bytes(), source=str(existing.paths.key))
    except OSError as err:
        raise ProvisionError(f"cannot read the gateway key {existing.paths.key}: {err.strerror}",
                             hint="run edgegw provision as the user that owns /etc/edgegw "
                                  "(usually with sudo)") from err
    except IdentityError as err:
        raise ProvisionError(str(err), hint="the key file is damaged: re-provision with --force "
                                            "(a new key and CSR; the PKI must issue a new "
                                            "certificate)") from err


def _conflict(existing: Existing, gateway_id: str) -> str | None:
    """Why writing `gateway_id` here would replace another identity (None if it would not)."""
    p = existing.paths
    if existing.config_error is not None:
        return f"{existing.config_error}; its identity cannot be checked"
    if existing.config_id is not None and existing.config_id != gateway_id:
        return f"{p.out_dir} holds gateway {existing.config_id!r} ({p.config})"
    if existing.has_key:
        if existing.key_id is not None and existing.key_id != gateway_id:
            return f"{p.key} is the key of gateway {existing.key_id!r}"
        if existing.key_id is None and existing.config_id is None:
            return f"{p.key} exists, with no config, CSR or certificate saying whose it is"
    return None


def build_config(
    *,
    base: Mapping[str, Any] | None,
    gateway_id: str,
    site: str,
    groups: tuple[str, ...],
    location: dict[str, Any] | None,
    broker: str,
    topic_prefix: str,
    store_path: str,
    tls: dict[str, str] | None,
) -> dict[str, Any]:
    """The config mapping: the answers over `base` (an existing config), other keys kept."""
    raw: dict[str, Any] = dict(base or {})
    gw: dict[str, Any] = dict(raw.get("gateway") or {}) if isinstance(
        raw.get("gateway"), Mapping) else {}
    gw.update({"id": gateway_id, "site": site, "groups": list(groups)})
    if location is not None:
        gw["location"] = location
    mqtt: dict[str, Any] = dict(raw.get("mqtt") or {}) if isinstance(
        raw.get("mqtt"), Mapping) else {}
    mqtt["url"] = broker
    mqtt["topic_prefix"] = topic_prefix
    if tls:
        mqtt["tls"] = tls
    else:
        mqtt.pop("tls", None)
    store: dict[str, Any] = dict(raw.get("store") or {}) if isinstance(
        raw.get("store"), Mapping) else {}
    store["path"] = store_path
    # identity first, then the rest in the order the file had it
    out: dict[str, Any] = {"gateway": gw, "mqtt": mqtt, "store": store}
    for k, v in raw.items():
        if k not in out:
            out[k] = v
    return out


def render_config(raw: Mapping[str, Any], *, now: dt.datetime) -> str:
    header = (f"# edgegw gateway config, written by `edgegw provision` on {now:%Y-%m-%d %H:%M} "
              "UTC.\n# Add buses and devices below (`edgegw scan` proposes device entries);\n"
              "# run `edgegw check --config THIS_FILE` after every change.\n")
    return header + yaml.safe_dump(dict(raw), sort_keys=False, default_flow_style=False,
                                   allow_unicode=True, width=100)


def provision(req: ProvisionRequest, *, now: dt.datetime | None = None) -> ProvisionResult:
    """Run the flow: answers -> probes -> atomic writes. See the module docstring.

    Raises MissingAnswers, IdentityConflict, or ProvisionError (with a hint); nothing is written
    when any of them is raised.
    """
    now = now or dt.datetime.now(dt.UTC)
    existing = inspect_existing(req.out_dir)
    paths = existing.paths
    missing = missing_answers(req, existing)
    if missing:
        raise MissingAnswers(missing)

    # ---- answers: given, else the existing config's, else defaults
    try:
        gateway_id = check_gateway_id(req.gateway_id or str(existing.config_id))
        site = check_site(req.site if req.site is not None
                          else str(existing.value("gateway", "site")))
        broker = check_broker_url(req.broker if req.broker is not None
                                  else str(existing.value("mqtt", "url")))
        old_groups = existing.value("gateway", "groups")
        groups = parse_groups(req.groups if req.groups is not None else (
            old_groups if isinstance(old_groups, list) and old_groups else [site]))
        location = _location(req, existing)
    except ValueError as err:
        raise BadAnswer(str(err), hint="correct the value and run again") from err
    if isinstance(existing.value("mqtt", "url"), list) and req.broker is None:
        raise BadAnswer("the existing config lists several broker URLs",
                             hint="give --broker URL (edit mqtt.url afterwards to add more)")
    topic_prefix = req.topic_prefix or str(existing.value("mqtt", "topic_prefix")
                                           or DEFAULT_TOPIC_PREFIX)
    store_path = req.store_path or str(existing.value("store", "path") or DEFAULT_STORE_PATH)
    tls_url = broker.startswith("mqtts://")

    # ---- identity: same id keeps the key; another id needs --force
    if existing.config_error is not None and existing.config_error.startswith("cannot read"):
        raise ProvisionError(existing.config_error,
                             hint="run edgegw provision with sudo (the gateway's files belong "
                                  "to root and the service user)")
    conflict = _conflict(existing, gateway_id)
    if conflict is not None and not req.force:
        old = existing.identity_id
        keep_hint = (f"to change only the site, broker or location, run again with --id {old}; "
                     if old else "")
        raise IdentityConflict(
            f"refusing to replace an existing identity: {conflict}",
            hint=f"{keep_hint}to make this gateway {gateway_id!r} on purpose, add --force "
                 "(the old files are kept as *.replaced-DATE.*; the PKI must then issue a new "
                 "certificate)")
    replacing = conflict is not None
    key: PrivateKeyTypes
    new_key = replacing or not existing.has_key
    key = generate_key() if new_key else _load_existing_key(existing)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ProvisionError(f"{paths.key} is not an EC key",
                             hint="re-provision with --force to make a new EC P-256 key")

    # ---- certificate and CA: checked before anything is written
    ca_pem = _read(req.ca, "CA file") if req.ca is not None else None
    installed_ca = None
    if ca_pem is None and paths.ca.exists():   # the city's CA: not part of the identity
        installed_ca = _read(paths.ca, "installed CA")
    cert_pem: bytes | None = None
    cert: CertInfo | None = None
    if req.cert is not None:
        cert_pem = _read(req.cert, "certificate")
        try:
            cert = verify_certificate(cert_pem, key=key, gateway_id=gateway_id,
                                      ca_pem=ca_pem or installed_ca, now=now,
                                      source=str(req.cert))
        except IdentityError as err:
            raise BadAnswer(str(err), hint=(
                f"install the certificate the PKI issued for {paths.csr} (CN={gateway_id}); "
                "if the CSR was made again since, send the new one")) from err
    elif paths.cert.exists() and not new_key:
        try:
            cert = verify_certificate(paths.cert.read_bytes(), key=key, gateway_id=gateway_id,
                                      now=now, source=str(paths.cert))
        except (IdentityError, OSError):
            cert = None     # stale (another key, expired): the config stops pointing at it
    if ca_pem is not None:
        try:
            load_certs(ca_pem, source=str(req.ca))
        except IdentityError as err:
            raise BadAnswer(str(err), hint="give the CA certificate in PEM form") from err
    has_ca = ca_pem is not None or installed_ca is not None

    # ---- the config the answers make must be valid before it is written
    tls: dict[str, str] | None = None
    if tls_url:
        tls = {}
        if has_ca:
            tls["ca"] = str(paths.ca.absolute())
        if cert is not None:
            tls["cert"] = str(paths.cert.absolute())
            tls["key"] = str(paths.key.absolute())
    base = existing.config if existing.config_error is None else None
    raw = build_config(base=base, gateway_id=gateway_id, site=site, groups=groups,
                       location=location, broker=broker, topic_prefix=topic_prefix,
                       store_path=store_path, tls=tls or None)
    web_account = _web_account(req, raw, paths.out_dir)
    text = render_config(raw, now=now)
    try:
        parse_config(text, source=str(paths.config), base_dir=paths.out_dir)
    except ConfigError as err:
        raise ProvisionError(
            f"the config would be invalid, so nothing was written:\n{err}",
            hint=f"fix the existing sections of {paths.config} (edgegw config validate "
                 f"--config {paths.config}) and run again") from err
    kept = tuple(k for k in raw if k not in ("gateway", "mqtt", "store"))

    # ---- write: old identity aside (force), key, CSR, cert, CA, config last
    changes: list[FileChange] = []
    try:
        paths.out_dir.mkdir(parents=True, exist_ok=True)
        if replacing:
            changes += _move_aside(paths, now, cert_too=req.cert is None)
        if new_key:
            write_atomic(paths.key, key_to_pem(key), mode=SECRET_MODE)
            changes.append(FileChange(path=paths.key, action=Action.CREATED,
                                      what="private key (EC P-256)", mode=SECRET_MODE))
        else:
            changes.append(FileChange(path=paths.key, action=Action.KEPT,
                                      what="private key", mode=mode_of(paths.key)))
        changes.append(_write_csr(paths, key, gateway_id=gateway_id, site=site,
                                  fresh=new_key))
        if cert_pem is not None:
            action = Action.REPLACED if paths.cert.exists() else Action.CREATED
            write_atomic(paths.cert, cert_pem, mode=PUBLIC_MODE)
            changes.append(FileChange(path=paths.cert, action=action,
                                      what="gateway certificate", mode=PUBLIC_MODE))
        if ca_pem is not None:
            action = Action.REPLACED if paths.ca.exists() else Action.CREATED
            write_atomic(paths.ca, ca_pem, mode=PUBLIC_MODE)
            changes.append(FileChange(path=paths.ca, action=action, what="CA certificate",
                                      mode=PUBLIC_MODE))
        if web_account is not None:
            changes.append(_write_web_account(*web_account))
        changes.append(_write_config(paths, text, raw, existing))
    except OSError as err:
        raise ProvisionError(
            f"cannot write to {paths.out_dir}: {err.strerror} ({err.filename})",
            hint="run edgegw provision with sudo, or give --out-dir a directory you can "
                 "write") from err
    notes = []
    if not new_key and mode_of(paths.key) & 0o077:
        notes.append(f"{paths.key} is readable by others (mode {mode_of(paths.key):o}): "
                     f"run chmod 600 {paths.key}")
    if not tls_url:
        notes.append("the broker URL is plain mqtt://: telemetry and commands travel "
                     "unencrypted; city brokers use mqtts://")
    return ProvisionResult(gateway_id=gateway_id, site=site, paths=paths,
                           changes=tuple(changes), tls=tls_url, cert=cert, has_ca=has_ca,
                           kept_sections=kept, notes=tuple(notes))


def _web_account(req: ProvisionRequest, raw: dict[str, Any],
                 out_dir: Path) -> tuple[Path, str, str, str] | None:
    """(accounts file, name, role, password) to write, the ``web:`` section added to ``raw``
    when the config has none (the page is on once it has an account); None without
    ``--web-user``. Every answer is checked here, before anything is written."""
    if req.web_user is None:
        if req.web_listen is not None:
            raise BadAnswer("--web-listen needs --web-user (the page needs an account)",
                            hint="add --web-user NAME")
        return None
    from gateway.web.accounts import Role, check_name, check_password

    if req.web_role not in {r.value for r in Role}:
        raise BadAnswer(f"--web-role {req.web_role!r}: technician or viewer",
                        hint="correct the value and run again")
    role = Role(req.web_role)
    try:
        name = check_name(req.web_user)
        if req.web_password is None:
            raise ValueError("a password is needed for the web user (asked on a terminal, "
                             "or --web-password-file FILE)")
        password = check_password(name, req.web_password)
    except ValueError as err:
        raise BadAnswer(str(err), hint="correct the value and run again") from err
    web = raw.get("web")
    web = dict(web) if isinstance(web, Mapping) else {"listen": "0.0.0.0:8443",
                                                       "users": "web-users"}
    if req.web_listen is not None:
        web["listen"] = req.web_listen
    raw["web"] = web
    users = Path(str(web.get("users") or "web-users"))
    if not users.is_absolute():
        users = out_dir / users
    return users, name, role.value, password


def _write_web_account(users: Path, name: str, role: str, password: str) -> FileChange:
    from gateway.web.accounts import Role, set_account

    try:
        existed = set_account(users, name, Role(role), password)
    except ConfigError as err:
        raise ProvisionError(f"{users}: {err}",
                             hint=f"fix or remove {users} (it holds the page's accounts)"
                             ) from err
    return FileChange(path=users, action=Action.UPDATED if existed else Action.CREATED,
                      what=f"web account {name} ({role}), argon2id", mode=SECRET_MODE)


def _location(req: ProvisionRequest, existing: Existing) -> dict[str, Any] | None:
    old = existing.value("gateway", "location")
    old = dict(old) if isinstance(old, Mapping) else None
    if (req.lat is None) != (req.lon is None):
        raise ValueError("give both --lat and --lon (or neither)")
    if req.lat is not None and req.lon is not None:
        loc: dict[str, Any] = {"lat": check_lat(req.lat), "lon": check_lon(req.lon)}
        loc["timezone"] = check_timezone(req.timezone or str((old or {}).get("timezone")
                                                             or "UTC"))
        return loc
    if req.timezone is not None:
        if old is None:
            raise ValueError("--timezone needs the location too: give --lat and --lon")
        return {**old, "timezone": check_timezone(req.timezone)}
    return old


def _move_aside(paths: IdentityPaths, now: dt.datetime, *, cert_too: bool) -> list[FileChange]:
    out = []
    files = [(paths.key, "old private key"), (paths.csr, "old CSR"), (paths.config, "old config")]
    if cert_too:
        files.append((paths.cert, "old certificate"))
    for path, what in files:
        if path.exists():
            # gateway.key -> gateway.replaced-STAMP.key: still *.key, so deploy's
            # fix-permissions still treats it as a secret
            aside = path.with_name(f"{path.stem}.replaced-{_stamp(now)}{path.suffix}")
            path.rename(aside)          # a rename keeps the key's 0600
            out.append(FileChange(path=aside, action=Action.MOVED_ASIDE, what=what))
    if out:
        fsync_dir(paths.out_dir)
    return out


def _write_csr(paths: IdentityPaths, key: ec.EllipticCurvePrivateKey, *, gateway_id: str,
               site: str, fresh: bool) -> FileChange:
    if not fresh and paths.csr.exists():
        try:
            csr = load_csr(paths.csr.read_bytes())
        except (IdentityError, OSError):
            csr = None
        if (csr is not None and csr_subject(csr) == (gateway_id, site)
                and same_public_key(csr.public_key(), key.public_key())):
            return FileChange(path=paths.csr, action=Action.KEPT,
                              what="certificate signing request", mode=PUBLIC_MODE)
    action = Action.REPLACED if paths.csr.exists() else Action.CREATED
    write_atomic(paths.csr, csr_to_pem(make_csr(key, gateway_id=gateway_id, site=site)),
                 mode=PUBLIC_MODE)
    return FileChange(path=paths.csr, action=action,
                      what=f"certificate signing request (CN={gateway_id}, O={site})",
                      mode=PUBLIC_MODE)


def _write_config(paths: IdentityPaths, text: str, raw: Mapping[str, Any],
                  existing: Existing) -> FileChange:
    if existing.config is not None and existing.config == dict(raw):
        return FileChange(path=paths.config, action=Action.KEPT, what="config (unchanged)",
                          mode=PUBLIC_MODE)
    action = Action.UPDATED if paths.config.exists() else Action.CREATED
    if paths.config.exists():
        # comments of a hand-edited file do not survive the rewrite: keep the previous one
        write_atomic(paths.config.with_name(paths.config.name + ".prev"),
                     paths.config.read_bytes(), mode=PUBLIC_MODE)
    write_atomic(paths.config, text.encode(), mode=PUBLIC_MODE)
    return FileChange(path=paths.config, action=action, what="config", mode=PUBLIC_MODE)
