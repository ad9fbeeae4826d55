"""The agent's exception tree.

::

    GatewayError
    ├── ConfigError (ValueError)          a config file or a config value is wrong
    ├── DeviceError                        a field device misbehaved
    │   ├── DeviceTimeout (TimeoutError)   no answer in time
    │   ├── DeviceException                a Modbus exception response (carries the code)
    │   └── BusError (ConnectionError)     the bus itself is unusable (port gone, TCP refused)
    ├── WriteRejected (ValueError)         a write refused before it reached the wire
    ├── StoreError                         the on-disk store failed
    └── LinkError (ConnectionError)        the MQTT link failed

Drivers raise the `drivers.errors` leaves, which subclass these same bases; messages name the
resource and the operation (``modbus rs485-1 unit 3: read holding 100..124 timed out after 0.5 s``).
"""

from __future__ import annotations

from drivers.errors import (
    BusError,
    DeviceError,
    DeviceException,
    DeviceTimeout,
    DriverError,
    WriteRejected,
)

GatewayError = DriverError

__all__ = [
    "BusError",
    "ConfigError",
    "DeviceError",
    "DeviceException",
    "DeviceTimeout",
    "GatewayError",
    "LinkError",
    "StoreError",
    "WriteRejected",
]


class ConfigError(GatewayError, ValueError):
    """A configuration is invalid. `problems` lists each as ``(where, message)``."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = [f"{source}: {where}: {msg}" if where else f"{source}: {msg}"
                 for where, msg in problems]
        super().__init__("\n".join(lines))


class StoreError(GatewayError):
    """The on-disk store could not be read or written."""


class LinkError(GatewayError, ConnectionError):
    """The MQTT link failed."""
