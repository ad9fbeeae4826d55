"""The page's accounts: one file, ``NAME:ROLE:HASH`` a line, mode 0600, written by ``edgegw
provision --web-user NAME`` (there is no default account and no default password).

Passwords are hashed with argon2id (argon2-cffi, the reference implementation's binding) at
OWASP's minimum for interactive log-ins, 19 MiB and 2 passes: memory-hard, yet a Pi verifies one
in a fraction of a second (the page verifies one at a time, off the event loop). The
parameters travel in each hash, so raising them later keeps old hashes valid.

Roles: ``technician`` may change things (overrides, the check and lamp test); ``viewer`` only
looks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from gateway.errors import ConfigError
from gateway.files import SECRET_MODE, write_atomic

__all__ = ["MIN_PASSWORD", "Account", "Role", "check_name", "check_password", "hash_password",
           "read_accounts", "set_account", "verify_password"]

MIN_PASSWORD = 10
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,31}$")
HEADER = ("# edgegw technician's page accounts: NAME:ROLE:ARGON2ID-HASH, one a line, mode 0600.\n"
          "# Add or change one with: edgegw provision --web-user NAME [--web-role viewer]\n")
# argon2id at OWASP's minimum for log-ins (memory in KiB)
TIME_COST, MEMORY_KIB, PARALLELISM = 2, 19 * 1024, 1


class Role(StrEnum):
    TECHNICIAN = "technician"      # may change things
    VIEWER = "viewer"              # may only look


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    role: Role
    hash: str

    def __repr__(self) -> str:          # never the hash, even in a traceback
        return f"Account({self.name!r}, {self.role.value})"


def _hasher() -> object:
    from argon2 import PasswordHasher, Type

    return PasswordHasher(time_cost=TIME_COST, memory_cost=MEMORY_KIB,
                          parallelism=PARALLELISM, type=Type.ID)


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ValueError(f"web user {name!r}: use 1..32 letters, digits, '.', '_', '-'")
    return name


def check_password(name: str, password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"the password must have at least {MIN_PASSWORD} characters")
    if password.strip().lower() == name.lower():
        raise ValueError("the password must not be the user name")
    return password


def hash_password(password: str) -> str:
    from argon2 import PasswordHasher

    h = _hasher()
    assert isinstance(h, PasswordHasher)
    return h.hash(password)


# verifying against this when the name is unknown makes an unknown name cost as much as a
# wrong password (nothing tells which names exist)
_DUMMY: list[str] = []


def verify_password(account: Account | None, password: str) -> bool:
    """Whether ``password`` is the account's (slow on purpose: run it off the loop)."""
    from argon2 import PasswordHasher
    from argon2.exceptions import InvalidHashError, VerificationError

    h = _hasher()
    assert isinstance(h, PasswordHasher)
    if account is None:
        if not _DUMMY:
            _DUMMY.append(h.hash("not an account, not a password"))
        target = _DUMMY[0]
    else:
        target = account.hash
    try:
        ok = bool(h.verify(target, password))
    except (VerificationError, InvalidHashError):
        return False
    return ok and account is not None


def read_accounts(path: str | Path) -> dict[str, Account]:
    """The accounts of the file; ConfigError (naming the line) when it is unusable, or
    readable by others."""
    from gateway.link import check_secret_file

    p = check_secret_file(path, what="web.users")
    out: dict[str, Account] = {}
    for n, line in enumerate(p.read_text().splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.split(":", 2)
        if len(parts) != 3:
            raise ConfigError(str(p), [(f"line {n}", "expected NAME:ROLE:HASH")])
        name, role, hashed = parts
        if not NAME_RE.match(name):
            raise ConfigError(str(p), [(f"line {n}", f"bad user name {name[:40]!r}")])
        try:
            r = Role(role)
        except ValueError:
            raise ConfigError(str(p), [(f"line {n}", f"role {role[:20]!r} is not one of "
                                                     "technician, viewer")]) from None
        if not hashed.startswith("$argon2"):
            raise ConfigError(str(p), [(f"line {n}", "the password is not an argon2 hash "
                                                     "(set it with edgegw provision "
                                                     "--web-user)")])
        out[name] = Account(name, r, hashed)
    return out


def set_account(path: str | Path, name: str, role: Role, password: str) -> bool:
    """Add the account, or change its role and password; the file is written atomically,
    0600 from its first byte. Returns whether the account existed."""
    p = Path(path)
    accounts = read_accounts(p) if p.exists() else {}
    existed = name in accounts
    accounts[check_name(name)] = Account(name, role, hash_password(
        check_password(name, password)))
    body = "".join(f"{a.name}:{a.role.value}:{a.hash}\n" for a in accounts.values())
    write_atomic(p, (HEADER + body).encode(), mode=SECRET_MODE)
    return existed
