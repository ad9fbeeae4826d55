"""The ThingsBoard format: the gateway MQTT API of ThingsBoard (``mqtt.format: thingsboard``).

The gateway is a ThingsBoard device with "Is gateway" set; it authenticates with its access token
as the MQTT user name (``mqtt.username``), or with its X.509 certificate (``mqtt.tls``). Each
configured device becomes a ThingsBoard device named by ``mqtt.thingsboard.device_name``
(``{gateway}.{device}`` unless configured: device names are global in a tenant).

Sent (all QoS 1):

- on each connection: ``v1/gateway/connect`` ``{"device", "type"}`` per device, the devices'
  static data as client attributes on ``v1/gateway/attributes`` (``{name: {bus, unit, profile,
  gateway, units}}``), the gateway's own client attributes on ``v1/devices/me/attributes``
  (version, site, groups, config hash, rules version), and a request for the shared attribute
  ``lighting_rules`` (the rules the platform wants: applied when they differ);
- telemetry: ``v1/gateway/telemetry`` ``{name: [{"ts", "values"}]}``; the gateway's own points
  (health, each lighting group's level and counters) on ``v1/devices/me/telemetry``
  ``[{"ts", "values"}]``. A point read with bad quality sends no value but
  ``{point}_quality`` (``timeout``, ``exception``, ...), and ``{point}_quality: "good"`` once
  it reads again;
- events: as telemetry of their device (or of the gateway) with the keys ``event``,
  ``event_severity`` and ``event_detail`` (a JSON string); ``device_offline`` and
  ``device_online`` also set the device's client attribute ``online``;
- at a clean stop, ``v1/gateway/disconnect`` per device.

Received:

- server-side RPC to a device (``v1/gateway/rpc``): the method is one of our commands
  (``read_point``, ``write_point``, ...), ``device`` filled in; answered on ``v1/gateway/rpc``
  ``{"device", "id", "data"}``;
- server-side RPC to the gateway (``v1/devices/me/rpc/request/{id}``): any command
  (``set_override``, ``get_state``, ...); answered on ``v1/devices/me/rpc/response/{id}``;
- shared attributes of the gateway (``v1/devices/me/attributes``): ``lighting_rules`` runs
  ``set_rules``; the outcome is the client attribute ``lighting_rules_status``;
- shared attributes of a device (``v1/gateway/attributes``): an attribute named like a writable
  point writes it (``write_point``); the outcome is the client attribute ``{point}_write``.

``data`` of an answer is our ``result``, or ``{"error": {"code", "message"}}``. With signed
commands required, ``params`` carries the whole signed request (``{"signed": ...}``).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from typing import Any

from drivers.sample import Quality
from gateway.errors import LinkError
from gateway.link import MqttLink
from gateway.northbound import Context, Northbound, stable_id
from gateway.outbox import Outgoing
from gateway.signing import is_signed
from gateway.store import Lane

__all__ = ["ThingsBoard"]

log = logging.getLogger("edgegw.uplink")

CONNECT = "v1/gateway/connect"
DISCONNECT = "v1/gateway/disconnect"
TELEMETRY = "v1/gateway/telemetry"
ATTRIBUTES = "v1/gateway/attributes"
RPC = "v1/gateway/rpc"
ME_TELEMETRY = "v1/devices/me/telemetry"
ME_ATTRIBUTES = "v1/devices/me/attributes"
ME_RPC_REQUEST = "v1/devices/me/rpc/request/"
ME_RPC_RESPONSE = "v1/devices/me/rpc/response/"
ME_ATTR_REQUEST = "v1/devices/me/attributes/request/"
ME_ATTR_RESPONSE = "v1/devices/me/attributes/response/"
RULES_ATTRIBUTE = "lighting_rules"
OWN_DEVICES = ("gateway", "lighting")     # the agent's own points: the gateway's telemetry
_MAX_TS_ENTRIES = 500                      # one telemetry message carries at most this many


class ThingsBoard(Northbound):
    name = "thingsboard"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        tb = self.cfg.mqtt.thingsboard
        template = tb.device_name if tb is not None else "{gateway}.{device}"
        self._names = {d.name: template.format(gateway=self.cfg.gateway.id, device=d.name)
                       for d in self.cfg.devices}
        self._devices = {tb_name: dev for dev, tb_name in self._names.items()}
        self._bad: set[tuple[str, str]] = set()      # points whose last quality sent was bad
        self._attr_request = 0

    def tb_name(self, device: str) -> str:
        return self._names.get(device, f"{self.cfg.gateway.id}.{device}")

    def subscriptions(self) -> list[str]:
        return [RPC, ATTRIBUTES, ME_RPC_REQUEST + "+", ME_ATTRIBUTES, ME_ATTR_RESPONSE + "+"]

    # ------------------------------------------------------------------ births
    async def on_connect(self, link: MqttLink) -> None:
        cfg = self.cfg
        for d in cfg.devices:
            await link.publish(CONNECT, _json({"device": self._names[d.name],
                                               "type": _device_type(d.profile)}))
        statics: dict[str, Any] = {}
        for d in cfg.devices:
            statics[self._names[d.name]] = {
                "gateway": cfg.gateway.id, "site": cfg.gateway.site, "bus": d.bus,
                "unit": d.unit, "profile": d.profile or "inline", "edgegw_device": d.name,
                "units": {p.name: p.unit for p in d.points if p.unit},
                "writable": sorted(p.name for p in d.points if p.writable)}
        if statics:
            await link.publish(ATTRIBUTES, _json(statics))
        own = {"gateway": cfg.gateway.id, "site": cfg.gateway.site,
               "groups": list(cfg.gateway.groups), "config_hash": cfg.digest(),
               "format": "edgegw/thingsboard", **self.ctx.birth_detail()}
        await link.publish(ME_ATTRIBUTES, _json(own))
        # the rules the platform wants (a shared attribute): applied if they differ
        self._attr_request += 1
        await link.publish(ME_ATTR_REQUEST + str(self._attr_request),
                           _json({"sharedKeys": RULES_ATTRIBUTE}))

    async def farewell(self, link: MqttLink) -> None:
        for name in self._names.values():
            await link.publish(DISCONNECT, _json({"device": name}))

    # ------------------------------------------------------------------ records
    async def send(self, link: MqttLink, rec: Outgoing) -> None:
        if rec.lane is Lane.EVENTS:
            await self._send_event(link, rec)
            return
        points = self.points_of(rec)
        if points is None:
            return
        devices: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
        own: dict[int, dict[str, Any]] = {}
        for p in points:
            rows = own if p.device in OWN_DEVICES else devices[p.device]
            values = rows.setdefault(p.ts, {})
            key = p.point if p.device != "lighting" else f"lighting.{p.point}"
            if p.quality is Quality.GOOD:
                values[key] = _plain(p.value)
                if (p.device, p.point) in self._bad:
                    self._bad.discard((p.device, p.point))
                    values[f"{key}_quality"] = "good"
            else:
                self._bad.add((p.device, p.point))
                values[f"{key}_quality"] = str(p.quality.value).lower()
        if devices:
            body: dict[str, list[dict[str, Any]]] = {
                self.tb_name(dev): [{"ts": ts, "values": v} for ts, v in sorted(rows.items())]
                for dev, rows in devices.items()}
            for chunk in _chunks(body):
                await link.publish(TELEMETRY, _json(chunk))
        if own:
            entries = [{"ts": ts, "values": v} for ts, v in sorted(own.items())]
            for i in range(0, len(entries), _MAX_TS_ENTRIES):
                await link.publish(ME_TELEMETRY, _json(entries[i:i + _MAX_TS_ENTRIES]))

    async def _send_event(self, link: MqttLink, rec: Outgoing) -> None:
        ev = self.event_of(rec)
        if ev is None:
            return
        values: dict[str, Any] = {"event": ev.type,
                                  "event_detail": json.dumps(dict(ev.detail), default=str)}
        if ev.severity is not None:
            values["event_severity"] = str(ev.severity.value)
        entry = {"ts": ev.ts, "values": values}
        if ev.device is not None and ev.device in self._names:
            name = self._names[ev.device]
            await link.publish(TELEMETRY, _json({name: [entry]}))
            if ev.type in ("device_offline", "device_online"):
                await link.publish(ATTRIBUTES, _json(
                    {name: {"online": ev.type == "device_online"}}))
        else:
            if ev.device is not None:
                values["event_device"] = ev.device
            await link.publish(ME_TELEMETRY, _json(entry))

    # ------------------------------------------------------------------ commands
    async def on_message(self, link: MqttLink, topic: str, payload: bytes) -> None:
        try:
            obj = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as err:
            log.warning("thingsboard: %s: not JSON (%s); ignored", topic, err)
            return
        try:
            if topic == RPC:
                await self._device_rpc(link, obj)
            elif topic.startswith(ME_RPC_REQUEST):
                await self._gateway_rpc(link, topic[len(ME_RPC_REQUEST):], obj)
            elif topic == ME_ATTRIBUTES:
                await self._shared_attributes(link, obj)
            elif topic.startswith(ME_ATTR_RESPONSE):
                shared = obj.get("shared") if isinstance(obj, dict) else None
                if isinstance(shared, dict) and RULES_ATTRIBUTE in shared:
                    await self._shared_attributes(link, {RULES_ATTRIBUTE: shared[
                        RULES_ATTRIBUTE]}, only_if_changed=True)
            elif topic == ATTRIBUTES:
                await self._device_attributes(link, obj)
        except LinkError as err:
            log.warning("thingsboard: answer to %s not sent: %s", topic, err)

    async def _device_rpc(self, link: MqttLink, obj: Any) -> None:
        name = obj.get("device") if isinstance(obj, dict) else None
        data = obj.get("data") if isinstance(obj, dict) else None
        if not isinstance(name, str) or not isinstance(data, dict):
            log.warning("thingsboard: RPC without device or data: %.200r", obj)
            return
        rid = data.get("id")
        device = self._devices.get(name)
        if device is None:
            answer: dict[str, Any] = {"error": {"code": "not_found",
                                                "message": f"no device {name!r} here"}}
        else:
            answer = await self._rpc(RPC, f"{name}/{rid}", data, device=device)
        await link.publish(RPC, _json({"device": name, "id": rid, "data": answer}))

    async def _gateway_rpc(self, link: MqttLink, rid: str, obj: Any) -> None:
        if not isinstance(obj, dict):
            obj = {}
        answer = await self._rpc(ME_RPC_REQUEST + rid, rid, obj, device=None)
        await link.publish(ME_RPC_RESPONSE + rid, _json(answer))

    async def _rpc(self, source: str, tb_id: str, data: dict[str, Any], *,
                   device: str | None) -> dict[str, Any]:
        method, params = data.get("method"), data.get("params")
        if isinstance(params, str):          # ThingsBoard widgets may send params as text
            try:
                params = json.loads(params) if params.strip() else {}
            except ValueError:
                params = {"value": params}
        if params is None:
            params = {}
        if not isinstance(method, str) or not isinstance(params, dict):
            return {"error": {"code": "malformed",
                              "message": "an RPC needs a method and params as an object"}}
        rid = f"tb-{stable_id(source, tb_id, method, params)}"
        if is_signed(params):
            response = await self.run_command(source, rid, method, None, request=params)
        else:
            args = dict(params)
            if device is not None:
                args.setdefault("device", device)
            response = await self.run_command(source, rid, method, args)
        return _answer(response)

    async def _shared_attributes(self, link: MqttLink, obj: Any, *,
                                 only_if_changed: bool = False) -> None:
        if not isinstance(obj, dict) or RULES_ATTRIBUTE not in obj:
            return
        rules = obj[RULES_ATTRIBUTE]
        if isinstance(rules, str):
            try:
                rules = json.loads(rules)
            except ValueError as err:
                await link.publish(ME_ATTRIBUTES, _json({"lighting_rules_status": {
                    "ok": False, "error": {"code": "bad_args",
                                           "message": f"lighting_rules is not JSON: {err}"}}}))
                return
        if only_if_changed:
            current = await self.run_command(ME_ATTRIBUTES, f"tb-rules-{stable_id(rules)}-get",
                                             "get_rules", None)
            if current.get("ok") and (current.get("result") or {}).get("lighting") == rules:
                return
        rid = f"tb-rules-{stable_id(rules)}"
        response = await self.run_command(ME_ATTRIBUTES, rid, "set_rules", {"lighting": rules})
        status: dict[str, Any] = {"ok": bool(response.get("ok"))}
        if response.get("ok"):
            status["version"] = (response.get("result") or {}).get("version")
        else:
            status["error"] = response.get("error")
        await link.publish(ME_ATTRIBUTES, _json({"lighting_rules_status": status}))

    async def _device_attributes(self, link: MqttLink, obj: Any) -> None:
        name = obj.get("device") if isinstance(obj, dict) else None
        data = obj.get("data") if isinstance(obj, dict) else None
        device = self._devices.get(name) if isinstance(name, str) else None
        if device is None or not isinstance(data, dict):
            return
        writable = {p.name for p in self.cfg.device(device).points if p.writable}
        results: dict[str, Any] = {}
        for point, value in data.items():
            if point not in writable:
                continue
            rid = f"tb-attr-{stable_id(name, point, value)}"
            response = await self.run_command(ATTRIBUTES, rid, "write_point",
                                              {"device": device, "point": point,
                                               "value": value})
            results[f"{point}_write"] = _answer(response)
        if results:
            await link.publish(ATTRIBUTES, _json({name: results}))


def _answer(response: dict[str, Any]) -> dict[str, Any]:
    if response.get("ok"):
        result = response.get("result")
        return result if isinstance(result, dict) else {"result": result}
    return {"error": response.get("error") or {"code": "internal", "message": "?"}}


def _device_type(profile: str | None) -> str:
    if not profile:
        return "edgegw-device"
    return profile.removeprefix("builtin:").rsplit("/", 1)[-1].removesuffix(".yaml")


def _plain(value: Any) -> Any:
    """A value ThingsBoard's JSON takes: a float that is not finite goes as text."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return str(value)
    return value


def _chunks(body: dict[str, list[dict[str, Any]]]) -> list[dict[str, list[dict[str, Any]]]]:
    """Split a large telemetry message into messages of at most _MAX_TS_ENTRIES entries."""
    out: list[dict[str, list[dict[str, Any]]]] = []
    cur: dict[str, list[dict[str, Any]]] = {}
    n = 0
    for name, rows in body.items():
        for i in range(0, len(rows), _MAX_TS_ENTRIES):
            part = rows[i:i + _MAX_TS_ENTRIES]
            if n and n + len(part) > _MAX_TS_ENTRIES:
                out.append(cur)
                cur, n = {}, 0
            cur.setdefault(name, []).extend(part)
            n += len(part)
    if cur:
        out.append(cur)
    return out


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), default=str).encode()
