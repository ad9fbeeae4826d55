"""Bus scan: which unit ids answer on a bus. Any answer counts, an exception response too."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerType

from drivers.errors import BusError
from drivers.modbus.bus import BusKind, BusSettings


@dataclass(frozen=True, slots=True)
class ProbeResult:
    unit: int
    answered: bool
    detail: str              # "registers", "exception 2 (illegal data address)", "no answer"


def _client(s: BusSettings, timeout: float) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
    if s.kind is BusKind.TCP:
        return AsyncModbusTcpClient(s.host, port=s.port, timeout=timeout, retries=0,
                                    reconnect_delay=0)
    return AsyncModbusSerialClient(s.serial_port, framer=FramerType.RTU, baudrate=s.baudrate,
                                   parity=s.parity, stopbits=s.stopbits, bytesize=s.bytesize,
                                   timeout=timeout, retries=0, reconnect_delay=0)


async def probe_units(
    settings: BusSettings,
    units: Iterable[int],
    *,
    unit_timeout: float = 0.3,
    on_progress: Callable[[ProbeResult], None] | None = None,
) -> list[ProbeResult]:
    """Ask each unit for one register (holding 0, then input 0); report who answered."""
    client = _client(settings, unit_timeout)
    try:
        if not await client.connect():
            where = (f"{settings.host}:{settings.port}" if settings.kind is BusKind.TCP
                     else settings.serial_port)
            raise BusError(f"modbus {settings.name}: cannot connect to {where}")
        results = []
        for unit in units:
            result = ProbeResult(unit, False, "no answer")
            for fn in (client.read_holding_registers, client.read_input_registers):
                try:
                    rr = await asyncio.wait_for(fn(0, count=1, device_id=unit),
                                                timeout=unit_timeout * 2 + 0.5)
                except (TimeoutError, ModbusException):
                    if not client.connected:
                        await client.connect()
                    break        # silence: the unit is not there, do not try the next table
                if rr.isError():
                    result = ProbeResult(unit, True, f"exception {rr.exception_code}")
                    continue     # maybe it has input registers only
                result = ProbeResult(unit, True, "registers")
                break
            results.append(result)
            if on_progress is not None:
                on_progress(result)
        return results
    finally:
        client.close()
