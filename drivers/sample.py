"""What every reader produces: one value of one point at one time, with its quality."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Quality(StrEnum):
    GOOD = "good"
    TIMEOUT = "timeout"          # the device did not answer
    EXCEPTION = "exception"      # the device answered with a Modbus exception
    BAD_DATA = "bad_data"        # a frame arrived but could not be decoded (CRC, checksum, garbage)
    UNAVAILABLE = "unavailable"  # the bus is down or the device is backed off


@dataclass(frozen=True, slots=True)
class Sample:
    device: str
    point: str
    ts: int                      # Unix time in milliseconds
    value: float | int | bool | str | None
    quality: Quality = Quality.GOOD
