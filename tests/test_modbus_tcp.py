"""drivers.modbus.tcp, the lean Modbus TCP client, against the pymodbus server of the simulators:
every table read and written, exception answers, timeouts and retries, a late answer, a lost
connection. (The bus tests in test_modbus_bus.py run it too, through ModbusBus.)"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from drivers.modbus.registers import DataType, PointSpec, Table
from drivers.modbus.tcp import ConnectionLost, ModbusTcpClient
from simulators.devices import Fault, SimulatedDevice
from simulators.modbus_server import ModbusTcpSim

POINTS = [
    PointSpec(name="h0", table=Table.HOLDING, address=0, type=DataType.UINT16, writable=True),
    PointSpec(name="h1", table=Table.HOLDING, address=1, type=DataType.INT16, writable=True),
    PointSpec(name="h2", table=Table.HOLDING, address=2, type=DataType.UINT16, writable=True),
    PointSpec(name="i0", table=Table.INPUT, address=0, type=DataType.UINT16),
    PointSpec(name="c0", table=Table.COIL, address=0, type=DataType.BOOL, writable=True),
    PointSpec(name="c1", table=Table.COIL, address=1, type=DataType.BOOL, writable=True),
    PointSpec(name="d0", table=Table.DISCRETE, address=0, type=DataType.BOOL),
]
VALUES = {"h0": 1234, "h1": -2, "h2": 65535, "i0": 42, "c0": True, "c1": False, "d0": True}


@pytest.fixture
async def sim() -> AsyncIterator[ModbusTcpSim]:
    devs = [SimulatedDevice(POINTS, unit=1, name="a", values=VALUES, strict_addresses=True),
            SimulatedDevice(POINTS, unit=2, name="b", values={**VALUES, "h0": 7})]
    async with ModbusTcpSim(devs) as s:
        yield s


async def connected(sim: ModbusTcpSim, **kw: float) -> ModbusTcpClient:
    c = ModbusTcpClient("127.0.0.1", sim.port, timeout=kw.get("timeout", 1.0),
                        retries=int(kw.get("retries", 0)))
    assert await c.connect()
    assert c.connected
    return c


async def test_reads_every_table_and_writes_come_back(sim: ModbusTcpSim) -> None:
    c = await connected(sim)
    try:
        rr = await c.read_holding_registers(0, count=3, device_id=1)
        assert not rr.isError() and rr.registers == [1234, 0xFFFE, 65535]
        assert (await c.read_holding_registers(0, count=1, device_id=2)).registers == [7]
        assert (await c.read_input_registers(0, count=1, device_id=1)).registers == [42]
        assert (await c.read_coils(0, count=2, device_id=1)).bits[:2] == [1, 0]
        assert (await c.read_discrete_inputs(0, count=1, device_id=1)).bits[:1] == [1]

        assert not (await c.write_register(1, -300, device_id=1)).isError()   # as int16
        assert sim.device("a").peek("h1") == -300
        assert not (await c.write_registers(0, [1, 2, 3], device_id=1)).isError()
        assert [sim.device("a").peek(n) for n in ("h0", "h1", "h2")] == [1, 2, 3]
        assert not (await c.write_coil(1, True, device_id=1)).isError()
        assert (await c.read_coils(0, count=2, device_id=1)).bits[:2] == [1, 1]
        assert sim.device("b").peek("h0") == 7          # the other unit untouched
    finally:
        c.close()
    assert not c.connected


async def test_an_exception_answer_is_a_response_with_its_code(sim: ModbusTcpSim) -> None:
    c = await connected(sim)
    try:
        rr = await c.read_holding_registers(50, count=2, device_id=1)   # strict: no such register
        assert rr.isError() and rr.exception_code == 2
        sim.device("b").fault = Fault.exception(6)
        rr = await c.read_holding_registers(0, count=1, device_id=2)
        assert rr.isError() and rr.exception_code == 6
        assert (await c.read_holding_registers(0, count=1, device_id=1)).registers == [1234]
    finally:
        c.close()


async def test_a_silent_unit_times_out_and_the_stream_stays_in_step(sim: ModbusTcpSim) -> None:
    c = await connected(sim, timeout=0.15, retries=2)
    try:
        sim.device("b").fault = Fault.silent()
        with pytest.raises(TimeoutError, match=r"unit 2 after 3 tries"):
            await c.read_holding_registers(0, count=1, device_id=2)
        assert c.connected
        assert (await c.read_holding_registers(0, count=1, device_id=1)).registers == [1234]
    finally:
        c.close()


async def test_a_late_answer_is_not_taken_for_the_next_one(sim: ModbusTcpSim) -> None:
    """The answer to a try that timed out arrives during the next transaction: it carries the
    old transaction id and is dropped, so the next read gets its own registers."""
    c = await connected(sim, timeout=0.1)
    try:
        sim.device("b").fault = Fault.slow(0.3)
        with pytest.raises(TimeoutError):
            await c.read_holding_registers(0, count=1, device_id=2)       # answers 7, late
        sim.device("b").fault = Fault.slow(0.3)
        c.timeout = 1.0
        rr = await c.read_holding_registers(2, count=1, device_id=2)      # 65535, also slow
        assert rr.registers == [65535]
    finally:
        c.close()


async def test_a_closed_connection_fails_the_waiting_read(sim: ModbusTcpSim) -> None:
    c = await connected(sim, timeout=5.0)
    sim.device("b").fault = Fault.silent()
    read = asyncio.ensure_future(c.read_holding_registers(0, count=1, device_id=2))
    await asyncio.sleep(0.1)
    await sim.close()
    with pytest.raises(ConnectionLost):
        async with asyncio.timeout(5):
            await read
    assert not c.connected
    with pytest.raises(ConnectionLost, match="not connected"):
        await c.read_holding_registers(0, count=1, device_id=1)


async def test_connecting_to_nothing_says_why() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]          # bound, not listening: refused
        c = ModbusTcpClient("127.0.0.1", port, timeout=1.0)
        with pytest.raises(OSError, match=r"refused|Connect call failed"):
            await c.connect()
    assert not c.connected


async def test_a_timeout_right_after_quick_answers_still_fires(sim: ModbusTcpSim) -> None:
    """One timer serves many tries: after quick answers the timer set for the first of them
    fires too early for the silent try and must set itself again, not give up."""
    c = await connected(sim, timeout=0.3)
    try:
        for _ in range(20):
            assert (await c.read_holding_registers(0, count=1, device_id=1)).registers == [1234]
        await asyncio.sleep(0.2)          # the first read's timer now falls due mid-way
        sim.device("b").fault = Fault.silent()
        with pytest.raises(TimeoutError, match="after 1 tries"):
            async with asyncio.timeout(5):
                await c.read_holding_registers(0, count=1, device_id=2)
        sim.device("b").fault = Fault()
        assert (await c.read_holding_registers(0, count=1, device_id=2)).registers == [7]
    finally:
        c.close()


async def test_frames_are_logged_at_debug(sim: ModbusTcpSim, caplog: pytest.LogCaptureFixture
                                          ) -> None:
    """`edgegw run -vv` shows each frame, as pymodbus did: what a technician compares with a
    device's manual."""
    c = await connected(sim)
    try:
        with caplog.at_level(logging.DEBUG, logger="drivers.modbus.tcp"):
            await c.read_holding_registers(2, count=1, device_id=1)
    finally:
        c.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "drivers.modbus.tcp"]
    assert any(line.endswith("send " + f"{c._tid:04x}"[:2] + " " + f"{c._tid:04x}"[2:]
                             + " 00 00 00 06 01 03 00 02 00 01") for line in lines), lines
    assert any(line.endswith("00 00 00 05 01 03 02 ff ff") for line in lines), lines


# ---------------------------------------------------------------- devices that bend the rules
Answer = Callable[[int, int, bytes, int], bytes | None]    # (tid, unit, pdu, n) -> frame or none


@contextlib.asynccontextmanager
async def raw_device(answer: Answer) -> AsyncIterator[int]:
    """A Modbus TCP 'device' written byte by byte: `answer` gets each request (its transaction id,
    unit, PDU and number) and returns the bytes to send back, or None for silence."""
    n = 0
    handlers: list[tuple[asyncio.Task[Any], asyncio.StreamWriter]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal n
        task = asyncio.current_task()
        assert task is not None
        handlers.append((task, writer))
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                tid, _proto, length, unit = struct.unpack(">HHHB", await reader.readexactly(7))
                pdu = await reader.readexactly(length - 1)
                n += 1
                out = answer(tid, unit, pdu, n)
                if out is not None:
                    writer.write(out)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task, writer in handlers:
            task.cancel()
            writer.close()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await task
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await server.wait_closed()


def frame(tid: int, unit: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def registers(*values: int) -> bytes:
    return bytes([3, 2 * len(values)]) + struct.pack(f">{len(values)}H", *values)


async def test_noise_that_looks_like_a_header_costs_one_try() -> None:
    """Six bytes of noise that parse as a header announcing 254 bytes must not swallow the
    answers after them (they did, for 25 tries in a row, before each try cleared the buffer)."""
    def answer(tid: int, unit: int, pdu: bytes, n: int) -> bytes:
        return bytes.fromhex("00 00 00 00 00 fe") if n == 1 else frame(tid, unit, registers(42))

    async with raw_device(answer) as port:
        c = ModbusTcpClient("127.0.0.1", port, timeout=0.2, retries=0)
        await c.connect()
        try:
            with pytest.raises(TimeoutError):
                await c.read_holding_registers(0, count=1, device_id=1)
            assert (await c.read_holding_registers(0, count=1, device_id=1)).registers == [42]
        finally:
            c.close()


async def test_a_connection_that_answers_nothing_is_dropped() -> None:
    """A half-open connection (a NAT that forgot it, a hung gateway) looks open for ~15 min:
    after 3 + retries requests in a row with no answer at all the client closes it, so the bus
    reconnects; an answer in between starts the count again."""
    silent = True

    def answer(tid: int, unit: int, pdu: bytes, n: int) -> bytes | None:
        return None if silent else frame(tid, unit, registers(7))

    async with raw_device(answer) as port:
        c = ModbusTcpClient("127.0.0.1", port, timeout=0.05, retries=1)
        await c.connect()
        for _ in range(3):
            with pytest.raises(TimeoutError):
                await c.read_holding_registers(0, count=1, device_id=1)
        silent = False
        assert (await c.read_holding_registers(0, count=1, device_id=1)).registers == [7]
        silent = True
        for _ in range(3):
            with pytest.raises(TimeoutError):
                await c.read_holding_registers(0, count=1, device_id=1)
        assert c.connected
        with pytest.raises(ConnectionLost, match="no answer to 4 requests in a row"):
            await c.read_holding_registers(0, count=1, device_id=1)
        assert not c.connected


async def test_transaction_id_zero_and_exception_code_zero() -> None:
    """Some devices answer every request with transaction id 0 (pymodbus takes those: so do
    we); an exception answer is an error even when its code is 0."""
    def answer(tid: int, unit: int, pdu: bytes, n: int) -> bytes:
        if pdu[0] == 6:
            return frame(0, unit, bytes([0x86, 0]))
        return frame(0, unit, registers(1, 2))

    async with raw_device(answer) as port:
        c = ModbusTcpClient("127.0.0.1", port, timeout=1.0, retries=0)
        await c.connect()
        try:
            assert (await c.read_holding_registers(0, count=2, device_id=3)).registers == [1, 2]
            rr = await c.write_register(0, 5, device_id=3)
            assert rr.isError() and rr.exception_code == 0
        finally:
            c.close()


async def test_requests_modbus_cannot_carry_are_refused_before_the_wire() -> None:
    sent: list[bytes] = []

    def answer(tid: int, unit: int, pdu: bytes, n: int) -> bytes:
        sent.append(pdu)
        return frame(tid, unit, registers(0))

    async with raw_device(answer) as port:
        c = ModbusTcpClient("127.0.0.1", port, timeout=1.0, retries=0)
        await c.connect()
        try:
            with pytest.raises(ValueError, match=r"124 registers .* allows 1\.\.123"):
                await c.write_registers(0, [0] * 124, device_id=1)
            with pytest.raises(ValueError, match=r"allows 1\.\.125"):
                await c.read_holding_registers(0, count=126, device_id=1)
            with pytest.raises(ValueError, match=r"outside 0\.\.65535"):
                await c.read_input_registers(65535, count=2, device_id=1)
            assert (await c.read_holding_registers(0, count=1, device_id=1)).registers == [0]
        finally:
            c.close()
    assert len(sent) == 1
