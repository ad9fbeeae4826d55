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
