"""The agent's exception tree.

::

    GatewayError
    ├── ConfigError (ValueError)          a config file or a config value is wrong
    ├── DeviceError                        a field device misbehaved
    │   ├── DeviceTimeout (TimeoutError)   no answer in time
    │   ├── DeviceException                a Modbus exception response (carries the code)
    │   └── BusError (ConnectionError)     the bus itself is unusable (port gone, TCP refused)
    ├── WriteRejected (ValueError)         a write refused before it reached the wire
    ├── NotFound (KeyError)                no such device, point or lighting group
    ├── Unsupported (NotImplementedError)  the gateway is not set up for this
    ├── BadValue (ValueError)              a value refused at run time
    ├── StoreError                         the on-disk store failed (``fault`` says how)
    └── LinkError (ConnectionError)        the MQTT link failed

Drivers raise the `drivers.errors` leaves, which subclass these same bases; messages name the
resource and the operation (``modbus rs485-1 unit 3: read holding 100..124 timed out after 0.5 s``).
"""

from __future__ import annotations

from enum import StrEnum

from drivers.errors import (
    BadValue,
    BusError,
    DeviceError,
    DeviceException,
    DeviceTimeout,
    DriverError,
    NotFound,
    Unsupported,
    WriteRejected,
)

GatewayError = DriverError

__all__ = [
    "BadValue",
    "BusError",
    "ConfigError",
    "DeviceError",
    "DeviceException",
    "DeviceTimeout",
    "GatewayError",
    "LinkError",
    "NotFound",
    "StoreError",
    "StoreFault",
    "Unsupported",
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


class StoreFault(StrEnum):
    """What went wrong with the store, as the platform and ``edgegw status`` name it."""

    FULL = "full"                  # no space left on the device (or SQLite's own limit)
    IO_ERROR = "io_error"          # the card or the filesystem failed an operation
    STALLED = "stalled"            # an operation did not finish within store.stall_timeout
    READ_ONLY = "read_only"        # the file or its filesystem cannot be written
    CORRUPT = "corrupt"            # not a database, a damaged page, an emptied file
    MISSING = "missing"            # the file vanished under the running agent
    UNAVAILABLE = "unavailable"    # cannot be opened or created (permissions, no directory)
    OTHER = "other"


class StoreError(GatewayError):
    """The on-disk store could not be read or written; ``fault`` classifies why."""

    def __init__(self, message: str, *, fault: StoreFault = StoreFault.OTHER) -> None:
        super().__init__(message)
        self.fault = fault


class LinkError(GatewayError, ConnectionError):
    """The MQTT link failed."""
