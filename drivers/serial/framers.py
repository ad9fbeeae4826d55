"""I/O-free, incremental framers for the serial sensor protocols.

Each framer takes bytes as they come off the wire, in chunks of any size, and returns what those
bytes completed: decoded frames and :class:`FrameError` items, in wire order. A framer never
blocks, never reads a clock and never raises on bad input; whatever it cannot use is dropped,
reported once as an error item, and counted by kind, so a reader can report the line's quality.

Resynchronisation, protocol by protocol:

- **SDS011** (10-byte binary frames ``AA C0 ... AB``): a candidate that fails (wrong end byte,
  wrong checksum) is dropped only up to the next ``AA`` inside it, so a real frame that starts
  inside a damaged one is still found.
- **NMEA 0183** (``$...*hh\\r\\n``): bytes before a ``$`` are garbage; a ``$`` that arrives before
  the current sentence's line end (CR, LF or both) means that sentence was cut (partial); lines
  are capped.
- **Lines**: the line end is the only marker: a line is used or reported whole.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from enum import IntEnum, StrEnum
from types import MappingProxyType
from typing import Protocol

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
    "NmeaFramer",
    "Sds011Framer",
    "nmea_checksum",
    "sds011_frame",
]


class ErrorKind(StrEnum):
    """Why bytes were dropped."""

    GARBAGE = "garbage"            # bytes skipped while looking for the start of a frame
    PARTIAL = "partial"            # a frame cut short (by the next frame's start, or a flush)
    BAD_CHECKSUM = "bad_checksum"  # a whole frame whose checksum does not match its content
    TOO_LONG = "too_long"          # a line longer than the cap, dropped up to its end
    MALFORMED = "malformed"        # checksum right (or none), content not understood
    NO_MATCH = "no_match"          # a line that the configured pattern does not match


@dataclass(frozen=True, slots=True)
class FrameError:
    """Bytes that were dropped, why, and a short human-readable detail for logs."""

    kind: ErrorKind
    size: int          # bytes dropped
    detail: str = ""


@dataclass(frozen=True, slots=True)
class FramerStats:
    """What a framer has seen since it was created (counters only grow)."""

    frames: int = 0    # frames decoded and returned
    ignored: int = 0   # valid frames of a kind that carries no reading (SDS011 replies, NMEA GSV)
    errors: Mapping[ErrorKind, int] = field(default_factory=lambda: MappingProxyType({}))
    dropped_bytes: int = 0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


# ------------------------------------------------------------------------------------ frames
@dataclass(frozen=True, slots=True)
class DustReading:
    """One SDS011 measurement, in µg/m³."""

    pm25: float
    pm10: float
    sensor_id: int     # the sensor's 16-bit id (bytes 6-7 of the frame)


class FixQuality(IntEnum):
    """GGA field 6: how the position was obtained."""

    INVALID = 0
    GPS = 1
    DGPS = 2
    PPS = 3
    RTK = 4
    FLOAT_RTK = 5
    ESTIMATED = 6
    MANUAL = 7
    SIMULATION = 8


@dataclass(frozen=True, slots=True)
class GpsFix:
    """One epoch of a GPS receiver: its RMC and GGA sentences merged.

    `utc` is an aware UTC datetime only when the RMC status is ``A`` (valid): a receiver without
    a fix often prints its free-running clock with status ``V``, which must not be trusted.
    The position comes from RMC when it is valid, else from GGA when its fix quality is not
    INVALID; fields that no sentence of the epoch carried are None.
    """

    talker: str                        # "GP", "GN", "GL", ...
    valid: bool                        # RMC status A
    utc: datetime | None
    latitude: float | None             # degrees, north positive
    longitude: float | None            # degrees, east positive
    altitude: float | None = None      # metres above mean sea level (GGA)
    satellites: int | None = None      # satellites in use (GGA)
    fix_quality: FixQuality | None = None
    speed_knots: float | None = None   # speed over ground (RMC)


@dataclass(frozen=True, slots=True)
class LineReading:
    """One matching line: each named group of the pattern that took part, with its value."""

    values: Mapping[str, float | str]
    text: str


Frame = DustReading | GpsFix | LineReading


class Framer(Protocol):
    """What every framer does; the reader holds one per open port."""

    def feed(self, data: bytes) -> Sequence[Frame | FrameError]:
        """Consume `data`; return the frames and errors it completed, in wire order."""
        ...

    def flush(self) -> Sequence[Frame | FrameError]:
        """The line went quiet or was closed: settle whatever is buffered, drop the rest."""
        ...

    def stats(self) -> FramerStats:
        """A snapshot of the counters."""
        ...


class _Counting:
    """Counters and the drop bookkeeping shared by the framers."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._frames = 0
        self._ignored = 0
        self._errors: Counter[ErrorKind] = Counter()
        self._dropped = 0

    def stats(self) -> FramerStats:
        return FramerStats(
            frames=self._frames,
            ignored=self._ignored,
            errors=MappingProxyType(dict(self._errors)),
            dropped_bytes=self._dropped,
        )

    def _error(self, kind: ErrorKind, size: int, detail: str = "") -> FrameError:
        self._errors[kind] += 1
        self._dropped += size
        return FrameError(kind, size, detail)


# ------------------------------------------------------------------------------------ SDS011
SDS011_HEAD = 0xAA
SDS011_TAIL = 0xAB
SDS011_DATA = 0xC0      # measurement report
SDS011_REPLY = 0xC5     # reply to a command (mode, sleep, firmware): valid, carries no reading
SDS011_LEN = 10


def sds011_checksum(payload: bytes) -> int:
    """The SDS011 checksum: the sum of data bytes 2..7 (six bytes), modulo 256."""
    return sum(payload) & 0xFF


def sds011_frame(pm25: float, pm10: float, *, sensor_id: int = 0x1234) -> bytes:
    """A measurement frame as the sensor sends it (values in µg/m³, 0.1 resolution)."""
    a = max(0, min(0xFFFF, round(pm25 * 10)))
    b = max(0, min(0xFFFF, round(pm10 * 10)))
    payload = bytes((a & 0xFF, a >> 8, b & 0xFF, b >> 8, sensor_id & 0xFF, (sensor_id >> 8) & 0xFF))
    return bytes((SDS011_HEAD, SDS011_DATA)) + payload + bytes(
        (sds011_checksum(payload), SDS011_TAIL))


class Sds011Framer(_Counting):
    """Nova SDS011 laser dust sensor: ``AA C0 pm25lo pm25hi pm10lo pm10hi id1 id2 sum AB``."""

    def feed(self, data: bytes) -> list[DustReading | FrameError]:
        buf = self._buf
        buf += data
        out: list[DustReading | FrameError] = []
        n = len(buf)
        i = 0
        garbage_from = 0          # start of the current run of skipped bytes
        while i < n:
            if buf[i] != SDS011_HEAD:
                j = buf.find(SDS011_HEAD, i)
                i = n if j < 0 else j
                continue
            if i + 1 < n and buf[i + 1] not in (SDS011_DATA, SDS011_REPLY):
                i += 1
                continue
            if n - i < SDS011_LEN:
                break             # maybe the start of a frame: wait for the rest
            if i > garbage_from:
                out.append(self._error(ErrorKind.GARBAGE, i - garbage_from,
                                       f"{i - garbage_from} bytes before a frame start"))
            frame = bytes(buf[i: i + SDS011_LEN])
            payload = frame[2:8]
            if frame[9] != SDS011_TAIL:
                kind, detail = ErrorKind.PARTIAL, f"no end byte 0xAB (got 0x{frame[9]:02X})"
            elif sds011_checksum(payload) != frame[8]:
                kind, detail = ErrorKind.BAD_CHECKSUM, (
                    f"checksum 0x{frame[8]:02X}, expected 0x{sds011_checksum(payload):02X}")
            else:
                i += SDS011_LEN
                garbage_from = i
                if frame[1] == SDS011_REPLY:
                    self._ignored += 1
                    continue
                self._frames += 1
                out.append(DustReading(
                    pm25=(payload[0] | payload[1] << 8) / 10,
                    pm10=(payload[2] | payload[3] << 8) / 10,
                    sensor_id=payload[4] | payload[5] << 8,
                ))
                continue
            # Drop the candidate only up to the next possible start inside it.
            nxt = buf.find(SDS011_HEAD, i + 1, i + SDS011_LEN)
            end = nxt if nxt >= 0 else i + SDS011_LEN
            out.append(self._error(kind, end - i, detail))
            i = end
            garbage_from = i
        if i > garbage_from:
            out.append(self._error(ErrorKind.GARBAGE, i - garbage_from,
                                   f"{i - garbage_from} bytes with no frame start"))
        del buf[:i]
        return out

    def flush(self) -> list[DustReading | FrameError]:
        if not self._buf:
            return []
        size = len(self._buf)
        self._buf.clear()
        return [self._error(ErrorKind.PARTIAL, size, f"{size} bytes of an unfinished frame")]


# -------------------------------------------------------------------------------------- NMEA
NMEA_MAX_LINE = 120     # the standard says 82 with CR LF; receivers' proprietary lines run longer
_HEX2 = re.compile(rb"[0-9A-Fa-f]{2}")
_EOL = re.compile(rb"[\r\n]")       # CR LF by the standard; CR or LF alone from some receivers
_EOL_BYTES = b"\r\n"


def nmea_checksum(body: bytes | str) -> int:
    """XOR of every character between ``$`` and ``*``."""
    raw = body.encode("ascii") if isinstance(body, str) else body
    x = 0
    for b in raw:
        x ^= b
    return x


class _Malformed(ValueError):
    """A field of a sentence whose checksum matched could not be parsed."""


@dataclass(frozen=True, slots=True)
class _Rmc:
    talker: str
    tod: time | None
    valid: bool
    day: date | None
    latitude: float | None
    longitude: float | None
    speed_knots: float | None


@dataclass(frozen=True, slots=True)
class _Gga:
    talker: str
    tod: time | None
    quality: FixQuality
    satellites: int | None
    latitude: float | None
    longitude: float | None
    altitude: float | None


@dataclass(slots=True)
class _Epoch:
    tod: time | None
    rmc: _Rmc | None = None
    gga: _Gga | None = None


def _tod(s: str) -> time | None:
    if not s:
        return None
    if len(s) < 6 or not s[:6].isdigit():
        raise _Malformed(f"time {s!r} is not hhmmss[.ss]")
    hh, mm, ss = int(s[0:2]), int(s[2:4]), int(s[4:6])
    micro = 0
    if len(s) > 6:
        if s[6] != "." or not s[7:].isdigit():
            raise _Malformed(f"time {s!r} is not hhmmss[.ss]")
        micro = round(float("0" + s[6:]) * 1_000_000)
        micro = min(micro, 999_999)
    if hh > 23 or mm > 59 or ss > 60:
        raise _Malformed(f"time {s!r} out of range")
    return time(hh, mm, min(ss, 59), micro, tzinfo=UTC)   # a leap second is folded into :59


def _day(s: str) -> date | None:
    if not s:
        return None
    if len(s) != 6 or not s.isdigit():
        raise _Malformed(f"date {s!r} is not ddmmyy")
    dd, mo, yy = int(s[0:2]), int(s[2:4]), int(s[4:6])
    # NMEA's two-digit year: 80..99 is 1980..1999 (GPS started in 1980), the rest 2000..2079.
    year = 1900 + yy if yy >= 80 else 2000 + yy
    try:
        return date(year, mo, dd)
    except ValueError as err:
        raise _Malformed(f"date {s!r}: {err}") from err


_NUM_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")


def _num(s: str, what: str) -> float | None:
    if not s:
        return None
    if not _NUM_RE.fullmatch(s):
        raise _Malformed(f"{what} {s!r} is not a number")
    return float(s)


def _coord(value: str, hemi: str, *, deg_digits: int, what: str) -> float | None:
    """``ddmm.mmmm`` (latitude) or ``dddmm.mmmm`` (longitude) and N/S/E/W -> signed degrees."""
    if not value and not hemi:
        return None
    if (len(value) < deg_digits + 2 or not _NUM_RE.fullmatch(value)
            or not value[:deg_digits + 2].isdigit()):
        raise _Malformed(f"{what} {value!r} is not d{'d' * (deg_digits - 1)}mm.mmmm")
    degrees = int(value[:deg_digits])
    minutes = float(value[deg_digits:])
    limit = 90 if deg_digits == 2 else 180
    if minutes >= 60 or degrees + minutes / 60 > limit:
        raise _Malformed(f"{what} {value!r} out of range")
    sign = {"N": 1, "E": 1, "S": -1, "W": -1}.get(hemi)
    if sign is None or (deg_digits == 2) != (hemi in "NS"):
        raise _Malformed(f"{what} hemisphere {hemi!r}")
    return sign * (degrees + minutes / 60)


def _int(s: str, what: str) -> int | None:
    if not s:
        return None
    if not s.isdigit():
        raise _Malformed(f"{what} {s!r} is not an integer")
    return int(s)


def _parse_rmc(talker: str, f: list[str]) -> _Rmc:
    if len(f) < 10:
        raise _Malformed(f"RMC has {len(f)} fields, needs at least 10")
    if f[2] not in ("A", "V"):
        raise _Malformed(f"RMC status {f[2]!r} is neither A nor V")
    valid = f[2] == "A"
    tod, day = _tod(f[1]), _day(f[9])
    lat = _coord(f[3], f[4], deg_digits=2, what="latitude")
    lon = _coord(f[5], f[6], deg_digits=3, what="longitude")
    if valid and (tod is None or day is None or lat is None or lon is None):
        raise _Malformed("RMC status A without time, date or position")
    return _Rmc(talker, tod, valid, day, lat, lon, _num(f[7], "speed"))


def _parse_gga(talker: str, f: list[str]) -> _Gga:
    if len(f) < 10:
        raise _Malformed(f"GGA has {len(f)} fields, needs at least 10")
    q = _int(f[6], "fix quality")
    try:
        quality = FixQuality(q if q is not None else 0)
    except ValueError as err:
        raise _Malformed(f"GGA fix quality {q} unknown") from err
    lat = _coord(f[2], f[3], deg_digits=2, what="latitude")
    lon = _coord(f[4], f[5], deg_digits=3, what="longitude")
    if quality is not FixQuality.INVALID and (lat is None or lon is None):
        raise _Malformed("GGA with a fix but no position")
    return _Gga(talker, _tod(f[1]), quality, _int(f[7], "satellites"), lat, lon,
                _num(f[9], "altitude"))


def _merge(e: _Epoch) -> GpsFix:
    rmc, gga = e.rmc, e.gga
    valid = rmc is not None and rmc.valid
    utc: datetime | None = None
    lat = lon = None
    if rmc is not None and rmc.valid and rmc.day is not None and rmc.tod is not None:
        utc = datetime.combine(rmc.day, rmc.tod)
        lat, lon = rmc.latitude, rmc.longitude
    elif gga is not None and gga.quality is not FixQuality.INVALID:
        lat, lon = gga.latitude, gga.longitude
    has_fix = gga is not None and gga.quality is not FixQuality.INVALID
    talker = rmc.talker if rmc is not None else gga.talker if gga is not None else ""
    return GpsFix(
        talker=talker,
        valid=valid,
        utc=utc,
        latitude=lat,
        longitude=lon,
        altitude=gga.altitude if gga is not None and has_fix else None,
        satellites=gga.satellites if gga is not None else None,
        fix_quality=gga.quality if gga is not None else None,
        speed_knots=rmc.speed_knots if rmc is not None and valid else None,
    )


class NmeaFramer(_Counting):
    """NMEA 0183 sentences from a GPS receiver -> one :class:`GpsFix` per epoch.

    An epoch is the RMC and GGA sentences that carry the same time of day (any talker: GP, GN,
    GL, GA, BD...). A fix is returned as soon as both sentences of its epoch have arrived, or,
    for a receiver set to print only one of them, when the next epoch's first sentence arrives.
    Other valid sentences (GSV, GSA, VTG, proprietary) are counted as ignored.
    """

    def __init__(self, *, max_line: int = NMEA_MAX_LINE) -> None:
        super().__init__()
        self._max = max_line
        self._epoch: _Epoch | None = None

    def feed(self, data: bytes) -> list[GpsFix | FrameError]:
        buf = self._buf
        buf += data
        out: list[GpsFix | FrameError] = []
        n = len(buf)
        i = 0
        while i < n:
            while i < n and buf[i] in _EOL_BYTES:    # the LF of a CR LF, blank lines: not garbage
                i += 1
            if i == n:
                break
            start = buf.find(b"$", i)
            if start < 0:
                out.append(self._error(ErrorKind.GARBAGE, n - i,
                                       f"{n - i} bytes outside sentences"))
                i = n
                break
            if start > i:
                out.append(self._error(ErrorKind.GARBAGE, start - i,
                                       f"{start - i} bytes before a sentence"))
                i = start
            window_end = min(n, i + self._max)   # a line is at most max_line bytes with its LF
            m = _EOL.search(buf, i + 1, window_end)
            eol = -1 if m is None else m.start()
            nxt = buf.find(b"$", i + 1, window_end if eol < 0 else eol)
            if nxt >= 0:
                out.append(self._error(ErrorKind.PARTIAL, nxt - i,
                                       "sentence cut short by the next '$'"))
                i = nxt
                continue
            if eol < 0:
                if n - i >= self._max:
                    out.append(self._error(ErrorKind.TOO_LONG, self._max,
                                           f"no line end within {self._max} bytes"))
                    i += self._max
                    continue
                break     # wait for the rest of the sentence
            line = bytes(buf[i: eol])
            i = eol + 1
            out.extend(self._sentence(line))
        del buf[:i]
        return out

    def flush(self) -> list[GpsFix | FrameError]:
        out: list[GpsFix | FrameError] = []
        if self._buf:
            out.append(self._error(ErrorKind.PARTIAL, len(self._buf), "unfinished sentence"))
            self._buf.clear()
        if self._epoch is not None:
            out.append(self._emit(self._epoch))
            self._epoch = None
        return out

    def _emit(self, epoch: _Epoch) -> GpsFix:
        self._frames += 1
        return _merge(epoch)

    def _sentence(self, line: bytes) -> list[GpsFix | FrameError]:
        """One sentence, from its '$' up to (without) its line end."""
        size = len(line) + 1
        body_end = line.rfind(b"*")
        if body_end < 0:
            return [self._error(ErrorKind.MALFORMED, size, "sentence without '*hh' checksum")]
        body = line[1:body_end]
        given = line[body_end + 1:]
        expected = int(given, 16) if _HEX2.fullmatch(given) else -1
        actual = nmea_checksum(body)
        if expected != actual:
            return [self._error(ErrorKind.BAD_CHECKSUM, size,
                                f"checksum {given!r}, expected {actual:02X}")]
        try:
            text = body.decode("ascii")
        except UnicodeDecodeError:
            return [self._error(ErrorKind.MALFORMED, size, "non-ASCII bytes in a sentence")]
        fields = text.split(",")
        address = fields[0]
        if (len(address) != 5 or address[0] == "P" or not address[:2].isalpha()
                or address[2:] not in ("RMC", "GGA")):
            self._ignored += 1
            return []
        talker = address[:2]
        parsed: _Rmc | _Gga
        try:
            parsed = _parse_rmc(talker, fields) if address[2:] == "RMC" else _parse_gga(
                talker, fields)
        except _Malformed as err:
            return [self._error(ErrorKind.MALFORMED, size, f"{address}: {err}")]
        return self._add(parsed)

    def _add(self, s: _Rmc | _Gga) -> list[GpsFix | FrameError]:
        out: list[GpsFix | FrameError] = []
        e = self._epoch
        is_rmc = isinstance(s, _Rmc)
        if e is not None and (e.tod != s.tod or (e.rmc if is_rmc else e.gga) is not None):
            out.append(self._emit(e))
            e = None
        if e is None:
            e = _Epoch(s.tod)
        if isinstance(s, _Rmc):
            e.rmc = s
        else:
            e.gga = s
        if e.rmc is not None and e.gga is not None:
            out.append(self._emit(e))
            self._epoch = None
        else:
            self._epoch = e
        return out


# ------------------------------------------------------------------------------------- lines
LINE_MAX = 256
_LINE_END = re.compile(rb"[\r\n]")
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


class LineFramer(_Counting):
    """A generic line protocol: each line (ended by CR, LF or both) must match a pattern.

    The pattern is matched against the whole line (surrounding blanks stripped). Each named group
    that took part becomes a value: a float when it is a decimal number, times its scale plus its
    offset (``R1234`` in mm with scale 0.001 -> 1.234 m), otherwise the text. A group given a scale
    or offset must be numeric, or the line is MALFORMED. Empty lines are skipped silently.
    """

    def __init__(
        self,
        pattern: str | re.Pattern[str],
        *,
        scales: Mapping[str, float] | None = None,
        offsets: Mapping[str, float] | None = None,
        max_line: int = LINE_MAX,
    ) -> None:
        super().__init__()
        self._re = re.compile(pattern) if isinstance(pattern, str) else pattern
        self.groups: tuple[str, ...] = tuple(self._re.groupindex)
        if not self.groups:
            raise ValueError(f"pattern {self._re.pattern!r} has no named group (?P<name>...)")
        self._scales = dict(scales or {})
        self._offsets = dict(offsets or {})
        unknown = (set(self._scales) | set(self._offsets)) - set(self.groups)
        if unknown:
            raise ValueError(
                f"scale/offset for {', '.join(sorted(unknown))}: not a named group of the pattern"
                f" (groups: {', '.join(self.groups)})")
        self._max = max_line
        self._discarding = False     # inside an over-long line: drop up to its end

    def feed(self, data: bytes) -> list[LineReading | FrameError]:
        buf = self._buf
        buf += data
        out: list[LineReading | FrameError] = []
        i = 0
        while True:
            m = _LINE_END.search(buf, i)
            if m is None:
                if not self._discarding and len(buf) - i > self._max:
                    out.append(self._error(ErrorKind.TOO_LONG, len(buf) - i,
                                           f"no line end within {self._max} bytes"))
                    self._discarding = True
                    i = len(buf)
                elif self._discarding:
                    self._dropped += len(buf) - i
                    i = len(buf)
                break
            line = bytes(buf[i: m.start()])
            i = m.end()
            if self._discarding:
                self._dropped += len(line) + 1
                self._discarding = False
                continue
            item = self._line(line)
            if item is not None:
                out.append(item)
        del buf[:i]
        return out

    def flush(self) -> list[LineReading | FrameError]:
        out: list[LineReading | FrameError] = []
        if self._buf and not self._discarding and self._buf.strip():
            out.append(self._error(ErrorKind.PARTIAL, len(self._buf), "line without an end"))
        elif self._buf:
            self._dropped += len(self._buf)
        self._buf.clear()
        self._discarding = False
        return out

    def _line(self, line: bytes) -> LineReading | FrameError | None:
        if len(line) > self._max:
            return self._error(ErrorKind.TOO_LONG, len(line) + 1, f"line of {len(line)} bytes")
        text = line.decode("ascii", errors="replace").strip()
        if not text:
            return None
        m = self._re.fullmatch(text)
        if m is None:
            return self._error(ErrorKind.NO_MATCH, len(line) + 1,
                               f"{text[:40]!r} does not match {self._re.pattern!r}")
        values: dict[str, float | str] = {}
        for name, raw in m.groupdict().items():
            if raw is None:
                continue
            scaled = name in self._scales or name in self._offsets
            if _DECIMAL.fullmatch(raw.strip()):
                v = float(raw) * self._scales.get(name, 1.0) + self._offsets.get(name, 0.0)
                if not math.isfinite(v):
                    return self._error(ErrorKind.MALFORMED, len(line) + 1,
                                       f"{name}={raw!r} is out of range")
                values[name] = v
            elif scaled:
                return self._error(ErrorKind.MALFORMED, len(line) + 1,
                                   f"{name}={raw!r} is not a number but has a scale/offset")
            else:
                values[name] = raw
        self._frames += 1
        return LineReading(MappingProxyType(values), text)
