"""A lean Modbus TCP client: what a TCP bus needs (read the four tables, write coils and
registers), over one asyncio connection, one transaction at a time (the bus serialises them).

Why not pymodbus' client here: on every transaction it formats the answer with ``str()`` for a
debug line and keeps a ring of raw frames for its error dumps, whatever the log level, and runs
its transaction manager's bookkeeping around each request; on the peer bench that was about a
quarter of the agent's CPU. Modbus TCP framing (the MBAP header) is simple enough to own:
``transaction id, protocol 0, length, unit`` then the PDU. Serial (RTU) buses still use
pymodbus, whose RTU framer and inter-frame timing we do not want to re-implement.

Errors: :class:`ConnectionLost` (the connection closed or was never open), :class:`ProtocolError`
(a well-framed answer that is not the answer to our request), ``TimeoutError`` (no answer after
``retries + 1`` tries; bytes that are not a Modbus TCP frame are dropped, so noise ends as a
timeout, as with pymodbus). The bus counts the last two as the device's timeouts. A Modbus
exception answer is not an error here: it comes back as a :class:`Response` whose ``isError()``
is true and ``exception_code`` says which, as pymodbus' responses do.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from drivers.modbus.registers import (
    MAX_BITS_PER_READ,
    MAX_REGISTERS_PER_READ,
    MAX_REGISTERS_PER_WRITE,
)

READ_COILS = 1
READ_DISCRETE = 2
READ_HOLDING = 3
READ_INPUT = 4
WRITE_COIL = 5
WRITE_REGISTER = 6
WRITE_REGISTERS = 16

log = logging.getLogger(__name__)     # frames at DEBUG (`edgegw run -vv`)

_MBAP = struct.Struct(">HHHB")      # transaction id, protocol id (0), length, unit id
_HEAD = struct.Struct(">HHH")
_REQ = struct.Struct(">BHH")        # function, address, count (or value)
_MAX_LENGTH = 254                   # unit id + the longest PDU (253 bytes)
_SILENT_CALLS = 3                   # requests in a row with no answer at all: reconnect (+retries)


_Coro = Coroutine[Any, Any, "Response"]


class ModbusTcpError(Exception):
    """The transaction failed below Modbus' own exception answers."""


class ConnectionLost(ModbusTcpError):
    """The connection is closed (by the device, the network or us) or was never opened."""


class ProtocolError(ModbusTcpError):
    """An answer that does not parse as the answer to our request."""


@dataclass(slots=True)
class Response:
    """A device's answer: registers for reads of holding/input registers, bits (0/1) for coils and
    discrete inputs (whole bytes: the caller keeps the ``count`` it asked for), or an exception
    code."""

    function: int
    registers: list[int] = field(default_factory=list)
    bits: list[int] = field(default_factory=list)
    exception: bool = False         # an exception answer (function | 0x80)
    exception_code: int = 0

    def isError(self) -> bool:      # the name pymodbus' responses use
        return self.exception


class ModbusTcpClient:
    """One connection to a Modbus TCP endpoint (a device or a gateway to an RS-485 line)."""

    def __init__(self, host: str, port: int = 502, *, timeout: float = 1.0,
                 retries: int = 1) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.retries = retries      # more tries after a timeout; the bus sets it per call
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._tid = 0
        # the transaction waiting for its answer: (transaction id, unit, function, future)
        self._waiting: tuple[int, int, int, asyncio.Future[Response]] | None = None
        self._deadline = 0.0        # when the waiting try times out (loop time)
        self._silent = 0            # requests in a row that got no answer at all
        self._timer: asyncio.TimerHandle | None = None

    @property
    def connected(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    async def connect(self) -> bool:
        """Open the connection (raises OSError saying why it could not)."""
        if self.connected:
            return True
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                transport, _ = await loop.create_connection(
                    lambda: _Protocol(self), self.host, self.port)
        except TimeoutError:
            raise OSError(f"no answer to the connection within {self.timeout:g} s") from None
        self._transport = transport    # type: ignore[assignment]
        self._buf.clear()
        self._silent = 0
        return True

    def close(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._fail(ConnectionLost("connection closed"))

    # ------------------------------------------------------------------ requests
    # Each raises ValueError, before anything is sent, for a request Modbus cannot carry.
    def read_coils(self, address: int, *, count: int = 1, device_id: int = 1) -> _Coro:
        return self.execute(device_id, _read(READ_COILS, address, count, MAX_BITS_PER_READ))

    def read_discrete_inputs(self, address: int, *, count: int = 1, device_id: int = 1) -> _Coro:
        return self.execute(device_id, _read(READ_DISCRETE, address, count, MAX_BITS_PER_READ))

    def read_holding_registers(self, address: int, *, count: int = 1, device_id: int = 1
                               ) -> _Coro:
        return self.execute(device_id, _read(READ_HOLDING, address, count, MAX_REGISTERS_PER_READ))

    def read_input_registers(self, address: int, *, count: int = 1, device_id: int = 1
                             ) -> _Coro:
        return self.execute(device_id, _read(READ_INPUT, address, count, MAX_REGISTERS_PER_READ))

    def write_coil(self, address: int, value: bool, *, device_id: int = 1) -> _Coro:
        _check_span(address, 1, 1)
        return self.execute(device_id, _REQ.pack(WRITE_COIL, address, 0xFF00 if value else 0))

    def write_register(self, address: int, value: int, *, device_id: int = 1) -> _Coro:
        _check_span(address, 1, 1)
        return self.execute(device_id, _REQ.pack(WRITE_REGISTER, address, value & 0xFFFF))

    def write_registers(self, address: int, values: list[int], *, device_id: int = 1) -> _Coro:
        n = len(values)
        _check_span(address, n, MAX_REGISTERS_PER_WRITE)
        pdu = struct.pack(f">BHHB{n}H", WRITE_REGISTERS, address, n, 2 * n,
                          *(v & 0xFFFF for v in values))
        return self.execute(device_id, pdu)

    async def execute(self, unit: int, pdu: bytes) -> Response:
        """Send ``pdu`` to ``unit`` and wait for its answer, tried ``retries + 1`` times."""
        loop = asyncio.get_running_loop()
        for _ in range(self.retries + 1):
            transport = self._transport
            if transport is None or transport.is_closing():
                raise ConnectionLost("not connected")
            # a fresh start for each try: what is left of an answer that came too late (or of
            # noise that looked like a header and waits for bytes that never come) must not
            # swallow this try's answer
            self._buf.clear()
            self._tid = tid = self._tid % 0xFFFF + 1
            fut: asyncio.Future[Response] = loop.create_future()
            self._waiting = (tid, unit, pdu[0], fut)
            frame = _MBAP.pack(tid, 0, len(pdu) + 1, unit) + pdu
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s:%d send %s", self.host, self.port, frame.hex(" "))
            transport.write(frame)
            self._arm(loop, loop.time() + self.timeout)
            try:
                answer = await fut
            except TimeoutError:
                continue
            finally:
                if self._waiting is not None and self._waiting[3] is fut:
                    self._waiting = None
            self._silent = 0
            return answer
        # A connection that answers nothing at all (a NAT or firewall that forgot it, a hung
        # gateway) looks open until the kernel gives up retransmitting, ~15 min: after a few
        # requests in a row with no answer from any unit, drop it; the bus reconnects
        self._silent += 1
        if self._silent >= _SILENT_CALLS + self.retries:
            silent = self._silent
            self.close()
            raise ConnectionLost(f"no answer to {silent} requests in a row: connection dropped")
        raise TimeoutError(f"no answer from unit {unit} after {self.retries + 1} tries")

    def _arm(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """The waiting try times out at ``deadline``. One timer serves many tries: answers
        come in milliseconds, so the timer set for an earlier try is usually still pending
        and, when it fires, sees the new deadline and sets itself again (instead of a timer
        made and cancelled for every transaction)."""
        self._deadline = deadline
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(deadline, self._check_deadline, loop)

    def _check_deadline(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        waiting = self._waiting
        if waiting is None or waiting[3].done():
            return
        if loop.time() >= self._deadline:
            waiting[3].set_exception(TimeoutError())
        else:
            self._timer = loop.call_at(self._deadline, self._check_deadline, loop)

    # ------------------------------------------------------------------ the stream
    def _received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while len(buf) >= 6:
            tid, proto, length = _HEAD.unpack_from(buf)
            if proto != 0 or not 2 <= length <= _MAX_LENGTH:
                # not a Modbus TCP header: noise (a gateway passing on a garbled RS-485
                # frame). Drop what came; the try waiting for an answer times out and is tried
                # again, the stream in step again with the next answer
                log.debug("%s:%d dropped %d bytes that are not Modbus TCP: %s", self.host,
                          self.port, len(buf), bytes(buf[:64]).hex(" "))
                buf.clear()
                return
            end = 6 + length
            if len(buf) < end:
                return
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s:%d recv %s", self.host, self.port, buf[:end].hex(" "))
            unit = buf[6]
            pdu = bytes(buf[7:end])
            del buf[:end]
            waiting = self._waiting
            # tid 0: some devices and gateways answer every request with transaction id 0
            # (pymodbus takes those too); one request is in flight, so it is this one's
            if waiting is None or (tid != waiting[0] and tid != 0) or waiting[3].done():
                continue           # a late answer to a try that timed out: dropped
            if waiting[1] != unit:
                waiting[3].set_exception(
                    ProtocolError(f"answer from unit {unit}, asked unit {waiting[1]}"))
                continue
            try:
                waiting[3].set_result(_parse(waiting[2], pdu))
            except ProtocolError as err:
                waiting[3].set_exception(err)

    def _connection_lost(self, transport: asyncio.BaseTransport, exc: Exception | None) -> None:
        if transport is not self._transport:
            return             # an earlier connection, closed by us: its end is no news
        self._transport = None
        self._fail(ConnectionLost(f"connection lost: {exc}" if exc else "connection closed"))

    def _fail(self, err: Exception) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is not None and not waiting[3].done():
            waiting[3].set_exception(err)


def _check_span(address: int, count: int, limit: int) -> None:
    if not 1 <= count <= limit:
        raise ValueError(f"{count} registers or bits in one request (Modbus allows 1..{limit})")
    if address < 0 or address + count > 0x10000:
        raise ValueError(f"addresses {address}..{address + count - 1} are outside 0..65535")


def _read(function: int, address: int, count: int, limit: int) -> bytes:
    _check_span(address, count, limit)
    return _REQ.pack(function, address, count)


def _parse(function: int, pdu: bytes) -> Response:
    """The answer's PDU -> a Response; ProtocolError when it is not an answer to ``function``."""
    if not pdu:
        raise ProtocolError("empty answer")
    fc = pdu[0]
    if fc == function | 0x80:
        if len(pdu) != 2:
            raise ProtocolError(f"exception answer of {len(pdu)} bytes")
        return Response(function, exception=True, exception_code=pdu[1])
    if fc != function:
        raise ProtocolError(f"answer to function {fc}, asked {function}")
    if function in (READ_HOLDING, READ_INPUT, READ_COILS, READ_DISCRETE):
        if len(pdu) < 2 or pdu[1] != len(pdu) - 2:
            raise ProtocolError(f"byte count {pdu[1] if len(pdu) > 1 else None} in an answer "
                                f"of {len(pdu)} bytes")
        data = pdu[2:]
        if function in (READ_HOLDING, READ_INPUT):
            if len(data) % 2:
                raise ProtocolError(f"odd byte count {len(data)} for registers")
            return Response(function, registers=list(struct.unpack(f">{len(data) // 2}H", data)))
        return Response(function, bits=[(byte >> i) & 1 for byte in data for i in range(8)])
    if len(pdu) != 5:            # writes echo address and value (or count)
        raise ProtocolError(f"write answer of {len(pdu)} bytes")
    return Response(function)


class _Protocol(asyncio.Protocol):
    def __init__(self, client: ModbusTcpClient) -> None:
        self._client = client
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._client._received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._client._connection_lost(self._transport, exc)
