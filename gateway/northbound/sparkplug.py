"""The Sparkplug B format (Eclipse Sparkplug 3.0; ``mqtt.format: sparkplug``).

The gateway is a Sparkplug *edge node* (``spBv1.0/{group_id}/.../{edge_node_id}``); each
configured Modbus or serial device is a Sparkplug *device* named like the device. The gateway's
own points (health, each lighting group's level and counters) are node metrics. Payloads are
protobuf messages of the specification's ``sparkplug_b.proto``.

Session (specification chapter 5):

- each CONNECT carries the will ``NDEATH`` with ``bdSeq`` (Int64, one more than the previous
  CONNECT's, 0 after 255; kept in the store across restarts);
- after connecting the node subscribes to ``NCMD`` and ``DCMD`` (and to ``spBv1.0/STATE/{host}``
  with a primary host configured), then publishes ``NBIRTH`` (``seq`` 0, the same ``bdSeq``,
  ``Node Control/Rebirth`` false, every node metric with its current value) and a ``DBIRTH`` per
  device (every metric, name and alias, datatype, current value, ``engUnit`` property), QoS 0;
- with ``mqtt.sparkplug.primary_host`` set, nothing is born and nothing sent until that host's
  ``STATE`` says it is online (data waits in the store meanwhile, as the specification
  intends); an offline ``STATE`` (timestamp not older than the last online one) makes the node
  publish ``NDEATH``, disconnect and start over with the next broker URL;
- ``Node Control/Rebirth`` (``NCMD``) stops the data, sends the births again (same ``bdSeq``,
  ``seq`` from 0), then data goes on; a point the catalogue learns later also makes a rebirth;
- data: ``DDATA`` per device and ``NDATA`` for the node, by alias only, each metric with its
  own timestamp; a reading of bad quality is ``is_null`` with the property ``Quality`` = 0 (BAD);
  data older than ``historical_after`` seconds when it is sent (the backlog after an outage)
  has ``is_historical`` true; ``seq`` runs 0-255 over every message of the session;
- a device whose every point times out (or is unavailable) gets ``DDEATH``; its next good
  reading brings a ``DBIRTH`` first. Readings of a dead device are not sent (its ``DDEATH``
  already marks them stale);
- events (alarms and notices) are the node metric ``Event`` (String, JSON ``{"type",
  "device", "severity", "detail"}``), with the event's time;
- a clean stop publishes ``NDEATH`` before disconnecting.

Commands (``NCMD``): ``Node Control/Rebirth``; ``Commands/<name>`` (String) runs our command
``<name>`` with the JSON arguments in the value (or a whole request ``{"id", "args"}``, or a
signed request), answered by the node metric ``Command Response`` (String, JSON: our response
with ``cmd``); ``Lighting/<group>/Override Level`` (Int32) sets an override of
``override_duration_s`` at ``override_priority``, ``Lighting/<group>/Clear Override``
(Boolean true) clears it. ``DCMD``: a device metric that is a writable point is written
(``write_point``); an error is answered in ``Command Response``.

Data messages are published with QoS 1 by default (``mqtt.sparkplug.data_qos``), so that what
is stored is deleted only once the broker has it; the specification asks for QoS 0, which
``data_qos: 0`` gives, at the price of that guarantee.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from drivers.modbus.registers import DataType as RegType
from drivers.sample import Quality as SampleQuality
from gateway.codec import Catalogue, DecodedPoint, PointDef, PointKind
from gateway.commands.dispatcher import COMMANDS
from gateway.errors import LinkError
from gateway.link import MqttLink, Will
from gateway.northbound import Context, Northbound, stable_id
from gateway.northbound.sparkplug_pb import DataType, Payload, Quality
from gateway.outbox import Outgoing
from gateway.signing import is_signed
from gateway.store import Lane

__all__ = ["NAMESPACE", "Sparkplug", "metric_value"]

log = logging.getLogger("edgegw.uplink")

NAMESPACE = "spBv1.0"
OWN_DEVICES = ("gateway", "lighting")
_BDSEQ_KEY = "sparkplug.bdseq"
_EXTRA_ALIAS = 1 << 40                 # aliases of metrics outside the catalogue
_DEAD = (SampleQuality.TIMEOUT, SampleQuality.UNAVAILABLE)
_INT_TYPES = {RegType.INT16: DataType.INT16, RegType.UINT16: DataType.UINT16,
              RegType.INT32: DataType.INT32, RegType.UINT32: DataType.UINT64,
              RegType.INT64: DataType.INT64, RegType.UINT64: DataType.UINT64}
_KIND_TYPES = {PointKind.FLOAT: DataType.DOUBLE, PointKind.INT: DataType.INT64,
               PointKind.BOOL: DataType.BOOLEAN, PointKind.STR: DataType.STRING}


class _Gate:
    """Data messages share the session; births take it alone (no data between an NBIRTH and
    its DBIRTHs, none interleaved with a rebirth)."""

    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self._sharing = 0
        self._exclusive = False

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: not self._exclusive)
            self._sharing += 1
        try:
            yield
        finally:
            async with self._cond:
                self._sharing -= 1
                self._cond.notify_all()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: not self._exclusive)
            self._exclusive = True
            await self._cond.wait_for(lambda: self._sharing == 0)
        try:
            yield
        finally:
            async with self._cond:
                self._exclusive = False
                self._cond.notify_all()


class Sparkplug(Northbound):
    name = "sparkplug"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        sp = self.cfg.mqtt.sparkplug
        self.group_id = (sp.group_id if sp is not None and sp.group_id else
                         _token(self.cfg.gateway.site) or "edgegw")
        self.node_id = sp.edge_node_id if sp is not None and sp.edge_node_id else (
            self.cfg.gateway.id)
        self.primary_host = sp.primary_host if sp is not None else None
        self.data_qos = sp.data_qos if sp is not None else 1
        self.historical_after = sp.historical_after if sp is not None else 30.0
        self.override_duration_s = sp.override_duration_s if sp is not None else 3600
        self.override_priority = sp.override_priority if sp is not None else 50
        self._wall = ctx.wall_clock or time.time
        self._gate = _Gate()
        self._seq = 0
        self._bdseq = self._load_bdseq()
        self._candidate: int | None = None
        self._born = False                   # the births of this session are out
        self._born_catalogue: tuple[int, int] | None = None
        self._host_online = self.primary_host is None
        self._host_ts: int | None = None
        self._link: MqttLink | None = None
        self._dead: set[str] = set()
        self._groups = _lighting_groups(self.cfg.lighting)
        self._types = _configured_types(self.cfg)
        self._writable = {(d.name, p.name) for d in self.cfg.devices for p in d.points
                          if p.writable}
        self._extra = self._extra_metrics()

    # ------------------------------------------------------------------ topics
    def topic(self, verb: str, device: str | None = None) -> str:
        t = f"{NAMESPACE}/{self.group_id}/{verb}/{self.node_id}"
        return t if device is None else f"{t}/{device}"

    @property
    def state_topic(self) -> str:
        return f"{NAMESPACE}/STATE/{self.primary_host}"

    def subscriptions(self) -> list[str]:
        subs = [self.topic("NCMD"), self.topic("DCMD") + "/+"]
        if self.primary_host is not None:
            subs.append(self.state_topic)
        return subs

    # ------------------------------------------------------------------ session
    def _load_bdseq(self) -> int:
        raw = self.ctx.outbox.kv_get(_BDSEQ_KEY)
        try:
            return int(raw.decode()) if raw else -1
        except ValueError:
            return -1

    def will(self) -> Will:
        """The will of the next CONNECT: the bdSeq after the last session's (a connection that
        never came up does not use a number up)."""
        self._candidate = (self._bdseq + 1) % 256
        self._born = False
        if self.primary_host is not None:
            self._host_online = False        # it must be seen online in this session
        return Will(self.topic("NDEATH"), self._ndeath(self._candidate), retain=False)

    def goodbye(self) -> bytes:
        return self._ndeath(self._bdseq)

    def _ndeath(self, bdseq: int) -> bytes:
        p = Payload()
        p.timestamp = self._now_ms()
        _add(p, "bdSeq", None, DataType.INT64, bdseq, self._now_ms())
        return bytes(p.SerializeToString())

    async def on_connect(self, link: MqttLink) -> None:
        self._link = link
        if self._candidate is not None:      # a new session: its will's bdSeq is in force
            self._bdseq, self._candidate = self._candidate, None
            self.ctx.outbox.kv_set(_BDSEQ_KEY, str(self._bdseq).encode())
            self._dead.clear()
        if self._host_online:
            await self._births(link)
        else:
            log.info("sparkplug: waiting for the primary host %s to be online before the "
                     "births", self.primary_host)

    def needs_rebirth(self) -> bool:
        return self._born and self._born_catalogue != self._catalogue_id()

    def may_send(self) -> bool:
        return self._born

    def _catalogue_id(self) -> tuple[int, int] | None:
        cat = self.ctx.outbox.catalogue
        return (cat.epoch, cat.version) if cat is not None else None

    def _now_ms(self) -> int:
        return int(self._wall() * 1000)

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = (self._seq + 1) % 256
        return seq

    async def _publish(self, link: MqttLink, topic: str, payload: Any, *, qos: int) -> None:
        """Number a message and publish it: ``seq`` is taken and the message handed to the
        client in one step, so the numbers are in the order the broker receives them."""
        payload.seq = self._next_seq()
        await link.publish(topic, payload.SerializeToString(), qos=qos)

    # ------------------------------------------------------------------ births
    async def _births(self, link: MqttLink) -> None:
        async with self._gate.exclusive():
            self._born = False
            cat = self.ctx.outbox.catalogue
            now = self._now_ms()
            self._seq = 0
            nbirth = Payload()
            nbirth.timestamp = now
            _add(nbirth, "bdSeq", None, DataType.INT64, self._bdseq, now)
            _add(nbirth, "Node Control/Rebirth", None, DataType.BOOLEAN, False, now)
            for name, (alias, dtype, value) in self._extra.items():
                _add(nbirth, name, alias, dtype, value() if callable(value) else value, now)
            devices: dict[str, list[tuple[int, PointDef]]] = defaultdict(list)
            for pid, d in enumerate(cat.points if cat is not None else ()):
                devices[d.device].append((pid, d))
            for own in OWN_DEVICES:
                for pid, d in devices.pop(own, []):
                    self._birth_metric(nbirth, pid, d, now)
            await self._publish(link, self.topic("NBIRTH"), nbirth, qos=0)
            for device in [d.name for d in self.cfg.devices] + sorted(
                    set(devices) - {d.name for d in self.cfg.devices}):
                if device in devices:
                    await self._dbirth(link, device, devices[device], now)
            self._born = True
            self._born_catalogue = (cat.epoch, cat.version) if cat is not None else None
        self.ctx.outbox.changed.set()          # data may go now

    async def _dbirth(self, link: MqttLink, device: str, points: list[tuple[int, PointDef]],
                      now: int, *, fresh: Mapping[str, DecodedPoint] | None = None) -> None:
        p = Payload()
        p.timestamp = now
        for pid, d in points:
            self._birth_metric(p, pid, d, now, fresh=fresh)
        await self._publish(link, self.topic("DBIRTH", device), p, qos=0)
        self._dead.discard(device)

    def _birth_metric(self, payload: Any, pid: int, d: PointDef, now: int, *,
                      fresh: Mapping[str, DecodedPoint] | None = None) -> None:
        dtype = self._types.get((d.device, d.point)) or _KIND_TYPES[d.kind]
        m = payload.metrics.add()
        m.name = _metric_name(d.device, d.point)
        m.alias = pid
        m.datatype = dtype
        value: Any = None
        quality = SampleQuality.UNAVAILABLE
        ts = now
        got = fresh.get(d.point) if fresh is not None else None
        if got is not None:
            value, quality, ts = got.value, got.quality, got.ts
        elif self.ctx.latest is not None:
            last = self.ctx.latest.get(d.device, d.point)
            if last is not None:
                value, quality, ts = last.value, last.quality, last.ts
        m.timestamp = ts
        if d.unit:
            _property(m, "engUnit", DataType.STRING, d.unit)
        if quality is SampleQuality.GOOD and value is not None:
            metric_value(m, dtype, value)
        else:
            m.is_null = True
            _property(m, "Quality", DataType.INT32, Quality.BAD)

    def _extra_metrics(self) -> dict[str, tuple[int, DataType, Any]]:
        """Node metrics beside the catalogue's: properties, commands, the responses."""
        detail = self.ctx.birth_detail
        out: dict[str, tuple[int, DataType, Any]] = {}

        def add(name: str, dtype: DataType, value: Any) -> None:
            out[name] = (_EXTRA_ALIAS + len(out), dtype, value)

        add("Properties/Gateway", DataType.STRING, self.cfg.gateway.id)
        add("Properties/Site", DataType.STRING, self.cfg.gateway.site)
        add("Properties/Groups", DataType.STRING, ",".join(self.cfg.gateway.groups))
        add("Properties/Config Hash", DataType.STRING, self.cfg.digest())
        add("Properties/Version", DataType.STRING, lambda: str(detail().get("version", "")))
        add("Properties/Rules Version", DataType.STRING,
            lambda: str(detail().get("rules_version") or ""))
        add("Properties/Clock Trusted", DataType.BOOLEAN,
            lambda: bool(detail().get("clock_trusted")))
        for cmd in sorted(COMMANDS):
            add(f"Commands/{cmd}", DataType.STRING, "")
        add("Command Response", DataType.STRING, "")
        add("Event", DataType.STRING, "")
        for g in self._groups:
            add(f"Lighting/{g}/Override Level", DataType.INT32, 0)
            add(f"Lighting/{g}/Clear Override", DataType.BOOLEAN, False)
        return out

    # ------------------------------------------------------------------ data
    async def send(self, link: MqttLink, rec: Outgoing) -> None:
        async with self._gate.shared():
            if not self._born:
                raise LinkError("sparkplug: not born in this session")
            if rec.lane is Lane.EVENTS:
                await self._send_event(link, rec)
            else:
                await self._send_batch(link, rec)

    async def _send_event(self, link: MqttLink, rec: Outgoing) -> None:
        ev = self.event_of(rec)
        if ev is None:
            return
        p = Payload()
        p.timestamp = self._now_ms()
        body = {"type": ev.type, "device": ev.device, "detail": dict(ev.detail)}
        if ev.severity is not None:
            body["severity"] = str(ev.severity.value)
        m = p.metrics.add()
        m.alias = self._extra["Event"][0]
        m.timestamp = ev.ts
        m.string_value = json.dumps(body, default=str)
        if ev.ts < self._now_ms() - self.historical_after * 1000:
            m.is_historical = True
        await self._publish(link, self.topic("NDATA"), p, qos=self.data_qos)

    async def _send_batch(self, link: MqttLink, rec: Outgoing) -> None:
        points = self.points_of(rec)
        cat = self.ctx.outbox.catalogue
        if points is None or cat is None:
            return
        now = self._now_ms()
        historical_before = now - self.historical_after * 1000
        by_device: dict[str, list[DecodedPoint]] = defaultdict(list)
        for pt in points:
            by_device[pt.device].append(pt)
        node: list[DecodedPoint] = []
        for own in OWN_DEVICES:
            node += by_device.pop(own, [])
        if node:
            await self._data(link, self.topic("NDATA"), node, cat, now, historical_before)
        for device, pts in by_device.items():
            # the device's state is its newest reading's: all timed out or unavailable is dead
            newest = max(pt.ts for pt in pts)
            if all(pt.quality in _DEAD for pt in pts if pt.ts == newest):
                if device not in self._dead:
                    before = [pt for pt in pts if pt.ts < newest]
                    if before:
                        await self._data(link, self.topic("DDATA", device), before, cat, now,
                                          historical_before)
                    p = Payload()
                    p.timestamp = now
                    await self._publish(link, self.topic("DDEATH", device), p,
                                        qos=self.data_qos)
                    self._dead.add(device)
                continue                          # stale with its DDEATH: nothing to add
            if device in self._dead:
                latest = {pt.point: pt for pt in pts}
                mine = [(pid, d) for pid, d in enumerate(cat.points) if d.device == device]
                await self._dbirth(link, device, mine, now, fresh=latest)
            await self._data(link, self.topic("DDATA", device), pts, cat, now,
                             historical_before)

    async def _data(self, link: MqttLink, topic: str, pts: Iterable[DecodedPoint],
                    cat: Catalogue, now: int, historical_before: float) -> None:
        p = Payload()
        p.timestamp = now
        for pt in pts:
            pid = cat.id_of(pt.device, pt.point)
            if pid is None:
                continue
            d = cat[pid]
            m = p.metrics.add()
            m.alias = pid
            m.timestamp = pt.ts
            if pt.ts < historical_before:
                m.is_historical = True
            if pt.quality is SampleQuality.GOOD and pt.value is not None:
                metric_value(m, self._types.get((d.device, d.point)) or _KIND_TYPES[d.kind],
                             pt.value)
            else:
                m.is_null = True
                _property(m, "Quality", DataType.INT32, Quality.BAD)
        if len(p.metrics):
            await self._publish(link, topic, p, qos=self.data_qos)

    # ------------------------------------------------------------------ incoming
    async def on_message(self, link: MqttLink, topic: str, payload: bytes) -> None:
        try:
            if self.primary_host is not None and topic == self.state_topic:
                await self._host_state(link, payload)
            elif topic == self.topic("NCMD"):
                await self._ncmd(link, _parse(payload))
            elif topic.startswith(self.topic("DCMD") + "/"):
                device = topic[len(self.topic("DCMD")) + 1:]
                await self._dcmd(link, device, _parse(payload))
        except _BadPayload as err:
            log.warning("sparkplug: %s: %s", topic, err)
            await self._respond(link, {"id": None, "ok": False, "error": {
                "code": "malformed", "message": f"{topic}: {err}"}})
        except LinkError as err:
            log.warning("sparkplug: answer to %s not sent: %s", topic, err)

    async def _host_state(self, link: MqttLink, payload: bytes) -> None:
        try:
            state = json.loads(payload)
            online, ts = bool(state["online"]), int(state["timestamp"])
        except (ValueError, KeyError, TypeError) as err:
            log.warning("sparkplug: STATE of %s unreadable (%s); ignored", self.primary_host,
                        err)
            return
        if self._host_ts is not None and ts < self._host_ts:
            return                              # an older session's message
        if online:
            self._host_ts = ts
            if not self._host_online:
                self._host_online = True
                log.info("sparkplug: primary host %s is online", self.primary_host)
                await self._births(link)
        elif self._host_online:
            self._host_online = False
            log.warning("sparkplug: primary host %s went offline: NDEATH and reconnect",
                        self.primary_host)
            async with self._gate.exclusive():
                self._born = False
                with contextlib.suppress(LinkError):
                    await link.publish(self.topic("NDEATH"), self._ndeath(self._bdseq),
                                       qos=1)
            link.reconnect(f"primary host {self.primary_host} is offline")

    async def _ncmd(self, link: MqttLink, p: Any) -> None:
        by_alias = {alias: name for name, (alias, _, _) in self._extra.items()}
        for m in p.metrics:
            name = m.name or by_alias.get(m.alias, "")
            value = _value_of(m)
            if name == "Node Control/Rebirth":
                if value is True:
                    log.info("sparkplug: rebirth requested")
                    await self._births(link)
            elif name.startswith("Commands/"):
                await self._command(link, name.removeprefix("Commands/"), value, m, p)
            elif name.startswith("Lighting/") and name.endswith("/Override Level"):
                group = name.removeprefix("Lighting/").removesuffix("/Override Level")
                await self._run(link, "set_override", {
                    "group": group, "level": value, "duration_s": self.override_duration_s,
                    "priority": self.override_priority}, key=(p.timestamp, name, value))
            elif name.startswith("Lighting/") and name.endswith("/Clear Override"):
                if value is True:
                    group = name.removeprefix("Lighting/").removesuffix("/Clear Override")
                    await self._run(link, "clear_override", {"group": group},
                                    key=(p.timestamp, name))
            else:
                await self._respond(link, {"id": None, "ok": False, "error": {
                    "code": "unknown_command",
                    "message": f"NCMD metric {name or m.alias!r} is not a command here"}})

    async def _command(self, link: MqttLink, cmd: str, value: Any, m: Any, p: Any) -> None:
        if not isinstance(value, str):
            await self._respond(link, {"id": None, "cmd": cmd, "ok": False, "error": {
                "code": "malformed", "message": f"Commands/{cmd} takes a String (JSON)"}})
            return
        try:
            body = json.loads(value) if value.strip() else {}
        except ValueError as err:
            await self._respond(link, {"id": None, "cmd": cmd, "ok": False, "error": {
                "code": "malformed", "message": f"Commands/{cmd}: not JSON: {err}"}})
            return
        if not isinstance(body, dict):
            body = {}
        if is_signed(body):
            rid = str(body.get("id"))
            response = await self.run_command(self.topic("NCMD"), rid, cmd, None,
                                              request=body)
        elif "args" in body and isinstance(body.get("args"), dict):
            rid = str(body.get("id") or f"spb-{stable_id(p.timestamp, cmd, body)}")
            response = await self.run_command(self.topic("NCMD"), rid, cmd, body["args"])
        else:
            rid = f"spb-{stable_id(p.timestamp, m.timestamp, cmd, body)}"
            response = await self.run_command(self.topic("NCMD"), rid, cmd, body)
        await self._respond(link, {**response, "cmd": cmd})

    async def _run(self, link: MqttLink, cmd: str, args: dict[str, Any], *,
                   key: tuple[Any, ...]) -> None:
        rid = f"spb-{stable_id(cmd, *key)}"
        response = await self.run_command(self.topic("NCMD"), rid, cmd, args)
        await self._respond(link, {**response, "cmd": cmd})

    async def _dcmd(self, link: MqttLink, device: str, p: Any) -> None:
        cat = self.ctx.outbox.catalogue
        for m in p.metrics:
            point: str | None = None
            if m.name:
                point = m.name
            elif cat is not None and 0 <= m.alias < len(cat) and cat[m.alias].device == device:
                point = cat[m.alias].point
            if point is None or (device, point) not in self._writable:
                await self._respond(link, {"id": None, "cmd": "write_point", "ok": False,
                                           "error": {"code": "not_found", "message": (
                                               f"DCMD {device}/{point or m.alias}: not a "
                                               "writable point of this gateway")}})
                continue
            d = cat[cat.id_of(device, point) or 0] if cat is not None else None
            dtype = self._types.get((device, point)) or (_KIND_TYPES[d.kind] if d else None)
            value = _value_of(m, dtype)
            await self._run(link, "write_point", {"device": device, "point": point,
                                                  "value": value},
                            key=(p.timestamp, device, point, value))

    async def _respond(self, link: MqttLink, response: dict[str, Any]) -> None:
        if not self._born:
            return
        async with self._gate.shared():
            p = Payload()
            now = self._now_ms()
            p.timestamp = now
            m = p.metrics.add()
            m.alias = self._extra["Command Response"][0]
            m.timestamp = now
            m.string_value = json.dumps(response, default=str)
            await self._publish(link, self.topic("NDATA"), p, qos=1)


# ---------------------------------------------------------------------------------- helpers
class _BadPayload(Exception):
    pass


def _parse(payload: bytes) -> Any:
    try:
        return Payload.FromString(payload)
    except Exception as err:        # protobuf's DecodeError, and nothing else can happen
        raise _BadPayload(f"not a Sparkplug B payload ({err})") from None


def _token(text: str) -> str:
    """A Sparkplug id token from free text: no '/', '+', '#'."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-")


def _metric_name(device: str, point: str) -> str:
    if device == "gateway":
        return f"Health/{point}"
    if device == "lighting":
        return "Lighting/" + point.replace(".", "/")
    return point


def _lighting_groups(lighting: Any) -> list[str]:
    groups = lighting.get("groups") if isinstance(lighting, dict) else None
    return [g["name"] for g in groups or [] if isinstance(g, dict)
            and isinstance(g.get("name"), str)]


def _configured_types(cfg: Any) -> dict[tuple[str, str], DataType]:
    """Exact integer widths where the register type gives them (no scaling)."""
    out: dict[tuple[str, str], DataType] = {}
    for d in cfg.devices:
        for p in d.points:
            if p.type in _INT_TYPES and p.scale == 1 and p.offset == 0:
                out[(d.name, p.name)] = _INT_TYPES[p.type]
            elif p.type is RegType.BOOL:
                out[(d.name, p.name)] = DataType.BOOLEAN
            elif p.type is RegType.STRING:
                out[(d.name, p.name)] = DataType.STRING
    return out


def _add(payload: Any, name: str, alias: int | None, dtype: DataType, value: Any,
         ts: int) -> None:
    m = payload.metrics.add()
    m.name = name
    if alias is not None:
        m.alias = alias
    m.datatype = dtype
    m.timestamp = ts
    metric_value(m, dtype, value)


def _property(metric: Any, key: str, dtype: DataType, value: Any) -> None:
    props = metric.properties
    props.keys.append(key)
    v = props.values.add()
    v.type = dtype
    if dtype is DataType.STRING:
        v.string_value = str(value)
    else:
        v.int_value = int(value) & 0xFFFFFFFF


_WIDTH = {DataType.INT8: 8, DataType.INT16: 16, DataType.INT32: 32, DataType.INT64: 64,
          DataType.UINT8: 8, DataType.UINT16: 16, DataType.UINT32: 32, DataType.UINT64: 64}


def metric_value(m: Any, dtype: DataType, value: Any) -> None:
    """Set a metric's value by its datatype (signed integers as two's complement, as the
    specification's reference implementations encode them)."""
    if dtype is DataType.BOOLEAN:
        m.boolean_value = bool(value)
    elif dtype in (DataType.STRING, DataType.TEXT):
        m.string_value = str(value)
    elif dtype is DataType.FLOAT:
        m.float_value = float(value)
    elif dtype is DataType.DOUBLE:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"a Double metric takes a number, not {value!r}")
        m.double_value = float(value)
    elif dtype in _WIDTH:
        v = int(value)
        if dtype in (DataType.INT64, DataType.UINT64):
            m.long_value = v & 0xFFFF_FFFF_FFFF_FFFF
        else:
            m.int_value = v & 0xFFFF_FFFF
    else:
        raise TypeError(f"no value encoding for datatype {dtype}")


def _value_of(m: Any, dtype: int | None = None) -> Any:
    """A received metric's value, signed integers decoded by their datatype (the metric's,
    else ``dtype``: a command need not repeat the datatype its birth declared)."""
    which = m.WhichOneof("value")
    if which is None:
        return None
    v = getattr(m, which)
    dtype = m.datatype or dtype
    if which in ("int_value", "long_value") and dtype in (DataType.INT8, DataType.INT16,
                                                          DataType.INT32, DataType.INT64):
        bits = 32 if which == "int_value" else 64
        if v >= 1 << (bits - 1):
            v -= 1 << bits
    return v
