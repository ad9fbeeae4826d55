"""GPIO outputs (relays, PWM dimmers) and inputs (manual switch, motion) through gpiozero.

The pin factory is chosen by config and never falls back silently: `mock` (simulation, with PWM
pins), `rpigpio` (RPi.GPIO, Raspberry Pi up to 4, extra `pi`) or `lgpio` (Raspberry Pi 5).
Asking for a real factory where it cannot work fails with a message that lists what is
available. Relays have a minimum interval between switchings so that a flickering sensor cannot
chatter a contactor.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from drivers.errors import BusError


class PinFactoryName(StrEnum):
    MOCK = "mock"
    RPIGPIO = "rpigpio"
    LGPIO = "lgpio"


class GpioUnavailable(BusError):
    """The requested GPIO backend cannot run here."""


def make_pin_factory(name: PinFactoryName | str) -> Any:
    """A gpiozero pin factory by name; never a silent fall-back to the mock."""
    name = PinFactoryName(name)
    if name is PinFactoryName.MOCK:
        from gpiozero.pins.mock import MockFactory, MockPWMPin

        return MockFactory(pin_class=MockPWMPin)
    try:
        if name is PinFactoryName.RPIGPIO:
            from gpiozero.pins.rpigpio import RPiGPIOFactory

            return RPiGPIOFactory()
        # lgpio drops a notify pipe in the working directory unless told where
        os.environ.setdefault("LG_WD", tempfile.gettempdir())
        from gpiozero.pins.lgpio import LGPIOFactory

        return LGPIOFactory()
    except (ImportError, RuntimeError, OSError) as err:
        raise GpioUnavailable(
            f"gpio: pin factory {name!s} is not usable here ({type(err).__name__}: {err}). "
            "Available: `rpigpio` on a Raspberry Pi up to 4 (pip install 'edgegw[pi]'), "
            "`lgpio` on a Raspberry Pi 5, `mock` for simulation only."
        ) from err


class LevelOutput(Protocol):
    """What the lighting actuators need from an output: a level 0..100 and its read-back."""

    name: str

    def set_level(self, level: float, *, now: float) -> bool:
        """Drive the output; False when deferred (relay anti-chatter)."""
        ...

    def read_level(self) -> float:
        """The level the pin is at now."""
        ...


@dataclass(slots=True)
class RelayOutput:
    """On/off relay: on for any level > 0. Switches at most once per `min_switch_interval`."""

    name: str
    pin: int | str
    factory: Any
    active_high: bool = True
    min_switch_interval: float = 5.0
    _dev: Any = field(init=False, default=None)
    _last_switch: float | None = field(init=False, default=None)
    switches: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        from gpiozero import DigitalOutputDevice

        self._dev = DigitalOutputDevice(self.pin, active_high=self.active_high,
                                        initial_value=False, pin_factory=self.factory)

    def set_level(self, level: float, *, now: float) -> bool:
        want = level > 0
        if bool(self._dev.value) == want:
            return True
        if self._last_switch is not None and now - self._last_switch < self.min_switch_interval:
            return False
        self._dev.value = want
        self._last_switch = now
        self.switches += 1
        return True

    def read_level(self) -> float:
        return 100.0 if self._dev.value else 0.0

    def close(self) -> None:
        self._dev.close()


@dataclass(slots=True)
class PwmOutput:
    """A PWM dimmer input (e.g. a 0-10 V converter driven by PWM): duty = level / 100."""

    name: str
    pin: int | str
    factory: Any
    frequency: int = 1000
    _dev: Any = field(init=False, default=None)

    def __post_init__(self) -> None:
        from gpiozero import PWMOutputDevice

        self._dev = PWMOutputDevice(self.pin, frequency=self.frequency, initial_value=0,
                                    pin_factory=self.factory)

    def set_level(self, level: float, *, now: float) -> bool:
        self._dev.value = max(0.0, min(100.0, level)) / 100.0
        return True

    def read_level(self) -> float:
        return round(float(self._dev.value) * 100.0, 3)

    def close(self) -> None:
        self._dev.close()


@dataclass(slots=True)
class DigitalInput:
    """A contact input: the cabinet's manual switch, a motion sensor (PIR)."""

    name: str
    pin: int | str
    factory: Any
    pull_up: bool = False
    on_change: Callable[[bool], None] | None = None
    _dev: Any = field(init=False, default=None)

    def __post_init__(self) -> None:
        from gpiozero import DigitalInputDevice

        self._dev = DigitalInputDevice(self.pin, pull_up=self.pull_up,
                                       pin_factory=self.factory)
        if self.on_change is not None:
            cb = self.on_change
            self._dev.when_activated = lambda: cb(True)
            self._dev.when_deactivated = lambda: cb(False)

    @property
    def active(self) -> bool:
        return bool(self._dev.value)

    @property
    def mock_pin(self) -> Any:
        """The underlying pin (a MockPin in simulation: `drive_high()` / `drive_low()`)."""
        return self._dev.pin

    def close(self) -> None:
        self._dev.close()


def detect_pin_factory(model_path: str = "/proc/device-tree/model") -> PinFactoryName:
    """The real factory for this board; GpioUnavailable (listing the choices) off a Pi."""
    try:
        with open(model_path, "rb") as f:
            model = f.read().decode(errors="replace").strip("\x00 \n")
    except OSError:
        model = ""
    if "Raspberry Pi 5" in model:
        return PinFactoryName.LGPIO
    if "Raspberry Pi" in model:
        return PinFactoryName.RPIGPIO
    raise GpioUnavailable(
        f"gpio: factory `auto` found no Raspberry Pi here (board: {model or 'unknown'}). "
        "Set gpio.factory to `rpigpio` (Pi up to 4), `lgpio` (Pi 5) or `mock` (simulation).")
