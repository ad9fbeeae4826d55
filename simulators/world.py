"""The simulated outside world that every simulated device measures: clock, sun, weather, water.

A `World` owns a clock (wall time by default; `ManualClock` for tests that step time by hand,
`AcceleratedClock` for a demo night that lasts minutes) and answers "what would a sensor see
now?": illuminance follows the sun's elevation (astral), temperature and humidity follow a daily
cycle, particulates peak with rush hours, street noise is loud by day and quiet at night, and the
water level sits near zero unless a script floods the street.

Scripting, for tests and demos:

- ``world.lux_override = 5.0`` pins the illuminance (``None`` gives the sun back);
- ``world.set_lux_script([(0, 20000), (60, 5), (600, 20000)])`` steps the illuminance at offsets
  (seconds of world time) from the moment of the call; before the first step and when the script
  is cleared (``set_lux_script(None)``) the sun rules; after the last step its value stays;
- ``world.water_level = 35.0`` (cm above the road) and ``world.set_water_script(...)`` likewise.

Noise comes from one seeded `random.Random`, so a seeded world is reproducible in its draws
(though values read by a client still depend on when the client asks).
"""

from __future__ import annotations

import bisect
import math
import random
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import astral
import astral.sun

Clock = Callable[[], datetime]

# (sun elevation in degrees, horizontal illuminance in lux) on a clear day, interpolated in log
# space: full sun ~100 klx, ~400 lx at sunset, ~3 lx at the end of civil dusk (-6 deg), a moonless
# night ~0.1 lx with a little sky glow.
_LUX_CURVE: tuple[tuple[float, float], ...] = (
    (-18.0, 0.1),
    (-12.0, 0.3),
    (-6.0, 3.0),
    (-3.0, 60.0),
    (0.0, 400.0),
    (5.0, 6_000.0),
    (10.0, 15_000.0),
    (20.0, 35_000.0),
    (30.0, 55_000.0),
    (45.0, 78_000.0),
    (60.0, 92_000.0),
    (90.0, 100_000.0),
)
_CURVE_X = [e for e, _ in _LUX_CURVE]
_CURVE_LOG = [math.log(lx) for _, lx in _LUX_CURVE]


def clear_sky_lux(elevation: float) -> float:
    """Illuminance on a clear day for a sun `elevation` (degrees above the horizon)."""
    if elevation <= _CURVE_X[0]:
        return _LUX_CURVE[0][1]
    if elevation >= _CURVE_X[-1]:
        return _LUX_CURVE[-1][1]
    i = bisect.bisect_right(_CURVE_X, elevation)
    x0, x1 = _CURVE_X[i - 1], _CURVE_X[i]
    y0, y1 = _CURVE_LOG[i - 1], _CURVE_LOG[i]
    return math.exp(y0 + (y1 - y0) * (elevation - x0) / (x1 - x0))


def wall_clock() -> datetime:
    """The real time, aware, in UTC."""
    return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told: ``clock.advance(60)``, ``clock.set(dt)``."""

    def __init__(self, start: datetime) -> None:
        self._now = _aware(start)

    def __call__(self) -> datetime:
        return self._now

    def set(self, when: datetime) -> None:
        self._now = _aware(when)

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)


class AcceleratedClock:
    """A clock that starts at `start` and runs `speed` times faster than the wall clock."""

    def __init__(self, start: datetime, speed: float, *,
                 source: Callable[[], float] | None = None) -> None:
        if speed <= 0:
            raise ValueError(f"clock speed must be positive, got {speed}")
        self._start = _aware(start)
        self._speed = speed
        self._source = source or time.monotonic
        self._t0 = self._source()

    def __call__(self) -> datetime:
        return self._start + timedelta(seconds=(self._source() - self._t0) * self._speed)


def _aware(when: datetime) -> datetime:
    if when.tzinfo is None:
        raise ValueError(f"the simulated clock needs an aware datetime, got naive {when}")
    return when.astimezone(UTC)


class _Script:
    """A step function of world time: ``[(offset_s, value), ...]`` from an anchor instant."""

    def __init__(self, anchor: datetime, steps: Sequence[tuple[float, float]]) -> None:
        if not steps:
            raise ValueError("a script needs at least one (offset_s, value) step")
        ordered = sorted((float(t), float(v)) for t, v in steps)
        self.anchor = anchor
        self.offsets = [t for t, _ in ordered]
        self.values = [v for _, v in ordered]

    def at(self, now: datetime) -> float | None:
        elapsed = (now - self.anchor).total_seconds()
        i = bisect.bisect_right(self.offsets, elapsed)
        return None if i == 0 else self.values[i - 1]


class World:
    """One street's environment, read by every simulated sensor on it."""

    def __init__(
        self,
        *,
        lat: float = 10.7769,
        lon: float = 106.7009,
        timezone: str = "Asia/Ho_Chi_Minh",
        clock: Clock | None = None,
        seed: int | None = None,
        temperature_mean: float = 28.0,
        temperature_swing: float = 4.0,
    ) -> None:
        self.lat = lat
        self.lon = lon
        self.tz = ZoneInfo(timezone)
        self.clock: Clock = clock or wall_clock
        self.rng = random.Random(seed)
        self.temperature_mean = temperature_mean
        self.temperature_swing = temperature_swing
        self.lux_override: float | None = None
        self.water_level: float = 0.0           # cm above the road surface
        self._observer = astral.Observer(latitude=lat, longitude=lon)
        self._lux_script: _Script | None = None
        self._water_script: _Script | None = None
        self._pm25_script: _Script | None = None
        self._pm10_script: _Script | None = None

    # ------------------------------------------------------------------------------ time
    def now(self) -> datetime:
        """The world's current time, aware, in UTC."""
        return self.clock()

    def local_hour(self, when: datetime | None = None) -> float:
        """Fractional hour of the civil day in the world's time zone (0 <= h < 24)."""
        local = (when or self.now()).astimezone(self.tz)
        return local.hour + local.minute / 60 + local.second / 3600

    def solar_hour(self, when: datetime | None = None) -> float:
        """Fractional hour of the mean solar day at the world's longitude (noon = sun high)."""
        utc = (when or self.now()).astimezone(UTC)
        return (utc.hour + utc.minute / 60 + utc.second / 3600 + self.lon / 15.0) % 24.0

    # ------------------------------------------------------------------------- scripting
    def set_lux_script(self, steps: Sequence[tuple[float, float]] | None) -> None:
        """Step the illuminance at offsets (s) from now; ``None`` clears the script."""
        self._lux_script = None if steps is None else _Script(self.now(), steps)

    def set_water_script(self, steps: Sequence[tuple[float, float]] | None) -> None:
        """Step the water level (cm) at offsets (s) from now; ``None`` clears the script."""
        self._water_script = None if steps is None else _Script(self.now(), steps)

    def set_pm25_script(self, steps: Sequence[tuple[float, float]] | None) -> None:
        """Step PM2.5 (ug/m3) at offsets (s) from now (a pollution episode); ``None`` clears."""
        self._pm25_script = None if steps is None else _Script(self.now(), steps)

    def set_pm10_script(self, steps: Sequence[tuple[float, float]] | None) -> None:
        """Step PM10 (ug/m3) at offsets (s) from now; ``None`` clears (then 1.6 x PM2.5)."""
        self._pm10_script = None if steps is None else _Script(self.now(), steps)

    # --------------------------------------------------------------------------- physics
    def sun_elevation(self, when: datetime | None = None) -> float:
        """Degrees of the sun above the horizon (negative below), refraction included."""
        try:
            return float(astral.sun.elevation(self._observer, when or self.now()))
        except ValueError:  # astral's polar edge cases: treat as the horizon
            return 0.0

    def illuminance(self, when: datetime | None = None) -> float:
        """Lux on a horizontal surface: the override, the script, or the sun with clouds."""
        when = when or self.now()
        if self.lux_override is not None:
            return self.lux_override
        if self._lux_script is not None and (v := self._lux_script.at(when)) is not None:
            return v
        return clear_sky_lux(self.sun_elevation(when)) * self.rng.uniform(0.93, 1.0)

    def temperature(self, when: datetime | None = None) -> float:
        """Air temperature (degC): coolest near 05:00, warmest near 14:00 solar time."""
        h = self.solar_hour(when)
        cycle = math.cos(2 * math.pi * (h - 14.0) / 24.0)
        return self.temperature_mean + self.temperature_swing * cycle + self.rng.gauss(0, 0.1)

    def humidity(self, when: datetime | None = None) -> float:
        """Relative humidity (%RH): the mirror of temperature, clamped to 5..100."""
        h = self.solar_hour(when)
        cycle = math.cos(2 * math.pi * (h - 14.0) / 24.0)
        return min(100.0, max(5.0, 72.0 - 14.0 * cycle + self.rng.gauss(0, 0.5)))

    def pm25(self, when: datetime | None = None) -> float:
        """Fine particulates (ug/m3): a background plus morning and evening rush peaks."""
        when = when or self.now()
        if self._pm25_script is not None and (v := self._pm25_script.at(when)) is not None:
            return max(0.0, v + self.rng.gauss(0, 1.0))
        h = self.local_hour(when)
        rush = 18.0 * math.exp(-((h - 8.0) ** 2) / 2.0) + 14.0 * math.exp(-((h - 18.0) ** 2) / 2.0)
        return max(0.0, 16.0 + rush + self.rng.gauss(0, 1.5))

    def pm10(self, when: datetime | None = None) -> float:
        """Coarse particulates (ug/m3): the script, else about 1.6 times PM2.5."""
        when = when or self.now()
        if self._pm10_script is not None and (v := self._pm10_script.at(when)) is not None:
            return max(0.0, v + self.rng.gauss(0, 1.5))
        return self.pm25(when) * 1.6 + abs(self.rng.gauss(0, 2.0))

    def noise_db(self, when: datetime | None = None) -> float:
        """Street noise (dB(A)): ~47 at 03:00, ~67 in the afternoon."""
        h = self.local_hour(when)
        cycle = math.cos(2 * math.pi * (h - 15.0) / 24.0)
        return 57.0 + 10.0 * cycle + self.rng.gauss(0, 1.5)

    def water(self, when: datetime | None = None) -> float:
        """Water above the road surface (cm, >= 0): the script, else `water_level`, + ripple."""
        when = when or self.now()
        level = self.water_level
        if self._water_script is not None and (v := self._water_script.at(when)) is not None:
            level = v
        return max(0.0, level + self.rng.gauss(0, 0.1))
