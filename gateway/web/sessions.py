"""Log-in attempts and sessions of the page, in memory (a restart logs everyone out; nothing
secret is written to disk).

- :class:`LoginLimiter`: at most ``per_minute`` failed log-ins per client address in any
  minute, and four times that from everywhere together (so a flood costs at most a few
  password checks a second); the next attempt is refused without checking the password.
- :class:`Sessions`: a random 256-bit token in a ``Secure; HttpOnly; SameSite=Strict`` cookie;
  a session ends after ``idle`` seconds without a request, and ``max_age`` after the log-in
  whatever happens. Each carries its own CSRF token, which every form and every state change
  must echo.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.web.accounts import Role

__all__ = ["LoginLimiter", "Session", "Sessions"]

WINDOW = 60.0


class LoginLimiter:
    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic,
                 max_addresses: int = 1024) -> None:
        self.per_minute = per_minute
        self.total_per_minute = per_minute * 4
        self._clock = clock
        self._by_address: OrderedDict[str, deque[float]] = OrderedDict()
        self._all: deque[float] = deque()
        self._max_addresses = max_addresses
        self.refused = 0

    def _trim(self, q: deque[float], now: float) -> None:
        while q and now - q[0] >= WINDOW:
            q.popleft()

    def retry_after(self, address: str, *, count: bool = True) -> float:
        """0 when an attempt from ``address`` may be checked now, else seconds to wait (a
        refused attempt is counted unless ``count`` is False)."""
        now = self._clock()
        self._trim(self._all, now)
        q = self._by_address.get(address)
        if q is not None:
            self._trim(q, now)
        waits = []
        if q is not None and len(q) >= self.per_minute:
            waits.append(WINDOW - (now - q[0]))
        if len(self._all) >= self.total_per_minute:
            waits.append(WINDOW - (now - self._all[0]))
        if waits:
            self.refused += count
            return max(1.0, max(waits))
        return 0.0

    def failed(self, address: str) -> None:
        now = self._clock()
        q = self._by_address.pop(address, None) or deque()
        q.append(now)
        self._by_address[address] = q
        self._all.append(now)
        while len(self._by_address) > self._max_addresses:
            self._by_address.popitem(last=False)

    def succeeded(self, address: str) -> None:
        self._by_address.pop(address, None)


@dataclass
class Session:
    token: str
    user: str
    role: Role
    csrf: str
    created: float
    last_seen: float
    data: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:          # never the tokens
        return f"Session({self.user!r}, {self.role.value})"

    def csrf_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.csrf.encode())

    @property
    def may_change(self) -> bool:
        return self.role is Role.TECHNICIAN


class Sessions:
    def __init__(self, *, idle: float, max_age: float, limit: int = 64,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.idle = idle
        self.max_age = max_age
        self.limit = limit
        self._clock = clock
        self._by_token: OrderedDict[str, Session] = OrderedDict()

    def new(self, user: str, role: Role) -> Session:
        now = self._clock()
        s = Session(token=secrets.token_urlsafe(32), user=user, role=role,
                    csrf=secrets.token_urlsafe(24), created=now, last_seen=now)
        self._by_token[s.token] = s
        while len(self._by_token) > self.limit:        # the oldest log-in goes first
            self._by_token.popitem(last=False)
        return s

    def get(self, token: str | None) -> Session | None:
        """The live session of ``token`` (its idle timer restarted), or None."""
        if not token:
            return None
        s = self._by_token.get(token)
        if s is None:
            return None
        now = self._clock()
        if now - s.last_seen > self.idle or now - s.created > self.max_age:
            del self._by_token[token]
            return None
        s.last_seen = now
        return s

    def alive(self, s: Session) -> bool:
        """Whether ``s`` is still in force, without counting as activity (the live stream
        checks this: watching the page is not using it)."""
        now = self._clock()
        if (s.token not in self._by_token or now - s.last_seen > self.idle
                or now - s.created > self.max_age):
            self._by_token.pop(s.token, None)
            return False
        return True

    def drop(self, token: str | None) -> None:
        if token:
            self._by_token.pop(token, None)

    def __len__(self) -> int:
        return len(self._by_token)
