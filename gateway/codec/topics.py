"""MQTT topics: building them and telling them apart (DESIGN.md 4.3)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gateway.codec.errors import DecodeError


class TopicKind(StrEnum):
    TELEMETRY = "telemetry"
    EVENTS = "events"
    STATE = "state"
    CMD_REQ = "cmd/req"
    CMD_RES = "cmd/res"
    GROUP_CMD_REQ = "groups/cmd/req"


@dataclass(frozen=True, slots=True)
class Topics:
    """The topics of one gateway (DESIGN.md 4.3)."""

    prefix: str
    gateway: str

    @property
    def telemetry(self) -> str:
        return f"{self.prefix}/{self.gateway}/telemetry"

    @property
    def events(self) -> str:
        return f"{self.prefix}/{self.gateway}/events"

    @property
    def state(self) -> str:
        return f"{self.prefix}/{self.gateway}/state"

    @property
    def cmd_req(self) -> str:
        return f"{self.prefix}/{self.gateway}/cmd/req"

    @property
    def cmd_res(self) -> str:
        return f"{self.prefix}/{self.gateway}/cmd/res"

    def group_cmd_req(self, group: str) -> str:
        return f"{self.prefix}/groups/{group}/cmd/req"


@dataclass(frozen=True, slots=True)
class TopicRef:
    """A parsed topic: exactly one of ``gateway`` and ``group`` is set."""

    kind: TopicKind
    prefix: str
    gateway: str | None = None
    group: str | None = None


_LEAF = {"telemetry": TopicKind.TELEMETRY, "events": TopicKind.EVENTS, "state": TopicKind.STATE}


def parse_topic(topic: str, *, prefix: str | None = None) -> TopicRef:
    """Recognise one of DESIGN.md 4.3's topics. With ``prefix`` (which may contain slashes) the
    topic must be under it; without, the prefix is whatever precedes the gateway id (a prefix
    ending in ``groups`` is then ambiguous: pass it). Raises DecodeError for any other topic."""
    if prefix is not None:
        p = prefix.rstrip("/")
        if not topic.startswith(p + "/"):
            raise DecodeError(f"topic {topic!r} is not under the prefix {p!r}")
        parts = topic[len(p) + 1:].split("/")
        if len(parts) == 4 and parts[0] == "groups" and parts[2:] == ["cmd", "req"] \
                and parts[1]:
            return TopicRef(kind=TopicKind.GROUP_CMD_REQ, prefix=p, group=parts[1])
        if len(parts) == 2 and parts[0] and parts[1] in _LEAF:
            return TopicRef(kind=_LEAF[parts[1]], prefix=p, gateway=parts[0])
        if len(parts) == 3 and parts[0] and parts[1] == "cmd" and parts[2] in ("req", "res"):
            kind = TopicKind.CMD_REQ if parts[2] == "req" else TopicKind.CMD_RES
            return TopicRef(kind=kind, prefix=p, gateway=parts[0])
        raise DecodeError(f"topic {topic!r} is not one of the gateway topics under {p!r}")
    parts = topic.split("/")
    if len(parts) >= 2 and parts[-1] in _LEAF and parts[-2]:
        return TopicRef(kind=_LEAF[parts[-1]], prefix="/".join(parts[:-2]), gateway=parts[-2])
    if len(parts) >= 3 and parts[-2] == "cmd" and parts[-1] in ("req", "res") and parts[-3]:
        if parts[-1] == "req" and len(parts) >= 4 and parts[-4] == "groups":
            return TopicRef(kind=TopicKind.GROUP_CMD_REQ, prefix="/".join(parts[:-4]),
                            group=parts[-3])
        kind = TopicKind.CMD_REQ if parts[-1] == "req" else TopicKind.CMD_RES
        return TopicRef(kind=kind, prefix="/".join(parts[:-3]), gateway=parts[-3])
    raise DecodeError(f"topic {topic!r} is not a gateway topic (…/telemetry, …/events, "
                      "…/state, …/cmd/req, …/cmd/res, …/groups/G/cmd/req)")
