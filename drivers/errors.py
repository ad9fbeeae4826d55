"""Driver-level exceptions; `gateway.errors` re-exports them as part of the agent's one tree."""

from __future__ import annotations


class DriverError(Exception):
    """Root of every error raised on purpose (alias: ``gateway.errors.GatewayError``)."""


class DeviceError(DriverError):
    """A field device misbehaved."""


class DeviceTimeout(DeviceError, TimeoutError):
    """A device did not answer in time."""


class DeviceException(DeviceError):
    """A device answered with a Modbus exception response."""

    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code


class BusError(DeviceError, ConnectionError):
    """The bus itself is unusable: serial port gone, TCP connection refused."""


class WriteRejected(DriverError, ValueError):
    """A write was refused before reaching the wire (not writable, out of range)."""


class NotFound(DriverError, KeyError):
    """No such device, point or lighting group (a name given by a caller)."""

    def __str__(self) -> str:          # KeyError would quote the message
        return str(self.args[0]) if self.args else "not found"


class Unsupported(DriverError, NotImplementedError):
    """The gateway is not set up for this (no lighting groups, no right to set the clock)."""


class BadValue(DriverError, ValueError):
    """A value the gateway refuses (out of a range only known at run time)."""
