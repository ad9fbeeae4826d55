"""Sensors on plain serial lines: SDS011 dust, NMEA 0183 GPS, and regex-configured line protocols.

``framers`` holds the pure, incremental framers (bytes in, frames and counted errors out);
``reader`` the async :class:`SerialReader` that owns one port, survives unplugging and reports
samples, link state and framing quality. Nothing here knows about MQTT, the store or the config
file: the agent maps its ``SerialBus`` config onto :class:`SerialSettings`.
"""

from drivers.serial.framers import (
    DustReading,
    ErrorKind,
    FixQuality,
    Frame,
    FrameError,
    Framer,
    FramerStats,
    GpsFix,
    LineFramer,
    LineReading,
    NmeaFramer,
    Sds011Framer,
)
from drivers.serial.reader import (
    LinkState,
    Parity,
    ReaderStats,
    SerialProtocol,
    SerialReader,
    SerialSettings,
    make_framer,
)

__all__ = [
    "DustReading",
    "ErrorKind",
    "FixQuality",
    "Frame",
    "FrameError",
    "Framer",
    "FramerStats",
    "GpsFix",
    "LineFramer",
    "LineReading",
    "LinkState",
    "NmeaFramer",
    "Parity",
    "ReaderStats",
    "Sds011Framer",
    "SerialProtocol",
    "SerialReader",
    "SerialSettings",
    "make_framer",
]
