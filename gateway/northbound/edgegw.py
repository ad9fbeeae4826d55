"""The default format (DESIGN.md 4.3): compact binary batches, JSON events, the retained state
message carrying the point catalogue, commands on ``cmd/req`` answered on ``cmd/res``."""

from __future__ import annotations

import logging

from gateway.codec import Topics, encode_state
from gateway.errors import LinkError
from gateway.link import MqttLink, Will
from gateway.northbound import Context, Northbound
from gateway.outbox import Outgoing
from gateway.store import Lane

__all__ = ["EdgegwFormat"]

log = logging.getLogger("edgegw.uplink")


class EdgegwFormat(Northbound):
    name = "edgegw"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.topics = Topics(self.cfg.mqtt.topic_prefix, self.cfg.gateway.id)
        self._published_catalogue: tuple[int, int] | None = None

    def subscriptions(self) -> list[str]:
        return [self.topics.cmd_req] + [self.topics.group_cmd_req(g)
                                        for g in self.cfg.gateway.groups]

    def will(self) -> Will:
        return Will(self.topics.state, encode_state(online=False))

    def goodbye(self) -> bytes:
        return encode_state(online=False)

    # ------------------------------------------------------------------ birth
    def _catalogue_id(self) -> tuple[int, int] | None:
        cat = self.ctx.outbox.catalogue
        return (cat.epoch, cat.version) if cat is not None else None

    def birth_payload(self) -> bytes:
        cfg = self.cfg
        detail = {"gateway": cfg.gateway.id, "site": cfg.gateway.site,
                  "groups": list(cfg.gateway.groups), "config_hash": cfg.digest(),
                  **self.ctx.birth_detail()}
        return encode_state(online=True, detail=detail, catalogue=self.ctx.outbox.catalogue)

    async def on_connect(self, link: MqttLink) -> None:
        """The retained state message, with the catalogue the telemetry after it needs."""
        version = self._catalogue_id()
        await link.publish(self.topics.state, self.birth_payload(), retain=True)
        self._published_catalogue = version

    def needs_rebirth(self) -> bool:
        return self._published_catalogue != self._catalogue_id()

    # ------------------------------------------------------------------ records
    async def send(self, link: MqttLink, rec: Outgoing) -> None:
        topic = self.topics.events if rec.lane is Lane.EVENTS else self.topics.telemetry
        await link.publish(topic, rec.payload, qos=1)

    # ------------------------------------------------------------------ commands
    async def on_message(self, link: MqttLink, topic: str, payload: bytes) -> None:
        """A command: answered on cmd/res, whatever it is (the dispatcher never raises)."""
        dispatcher = self.ctx.dispatcher
        if dispatcher is None:
            return
        response = await dispatcher.handle(topic, payload)
        try:
            await link.publish(self.topics.cmd_res, response, qos=1)
        except LinkError as err:
            log.warning("command response not sent: %s", err)
