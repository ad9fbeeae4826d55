"""TLS with client certificates against a private Mosquitto that requires them."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiomqtt
import pytest

from gateway.runtime import Agent
from simulators.broker import BrokerTls, MosquittoBroker, find_mosquitto
from simulators.runner import open_spec
from tests.certs import TestPki
from tests.helpers import Platform, gateway_config

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "examples" / "sim-street.yaml"


@pytest.fixture
async def tls_broker(tmp_path: Path) -> tuple[MosquittoBroker, TestPki]:  # type: ignore[misc]
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (make test installs it)")
    pki = TestPki(tmp_path / "pki")
    server = pki.server()
    async with MosquittoBroker(tmp_path / "broker",
                               tls=BrokerTls(ca=pki.ca, cert=server.cert, key=server.key)) as b:
        yield b, pki


async def test_gateway_and_platform_talk_over_mutual_tls(
        tls_broker: tuple[MosquittoBroker, TestPki], tmp_path: Path) -> None:
    broker, pki = tls_broker
    assert broker.url.startswith("mqtts://")
    gw = pki.client("gw-tls")
    platform_cert = pki.client("platform")
    async with open_spec(SPEC, ephemeral=True) as sim, \
            Platform(broker.url, ca=str(pki.ca), cert=str(platform_cert.cert),
                     key=str(platform_cert.key)) as platform:
        cfg = gateway_config(sim, broker_url=broker.url, store=tmp_path / "s.db", extra={
            "gateway": {"id": "gw-tls"},
            "mqtt": {"tls": {"ca": str(pki.ca), "cert": str(gw.cert), "key": str(gw.key)}}})
        async with Agent(cfg) as agent:
            assert agent.link is not None
            await asyncio.wait_for(agent.link.connected.wait(), 10)
            await platform.until(lambda: len(platform.of("telemetry")) >= 2)
        assert platform.of("state")[0]["gateway"] == "gw-tls"


async def test_a_client_without_a_certificate_is_refused(
        tls_broker: tuple[MosquittoBroker, TestPki]) -> None:
    broker, pki = tls_broker
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client("127.0.0.1", broker.port, tls_context=ctx, timeout=3):
            pass


# paho leaves its socket for the garbage collector when the TLS handshake fails on the client
# side; that is paho's leak, not ours, and the refusal is what this test checks
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_server_certificate_from_another_ca_is_refused(
        tls_broker: tuple[MosquittoBroker, TestPki], tmp_path: Path) -> None:
    broker, _pki = tls_broker
    other = TestPki(tmp_path / "other")
    gw = other.client("gw-x")
    ctx = ssl.create_default_context(cafile=str(other.ca))
    ctx.load_cert_chain(str(gw.cert), str(gw.key))
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client("127.0.0.1", broker.port, tls_context=ctx, timeout=3):
            pass
