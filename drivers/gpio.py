"""GPIO outputs (relays, PWM dimmers) and inputs (manual switch, motion) on the gateway's pins.

The backend is chosen by config and never falls back silently: `mock` (simulation, in memory),
`rpigpio` (RPi.GPIO, Raspberry Pi up to 4, extra `pi`) or `lgpio` (Raspberry Pi 5, extra `pi5`).
Asking for a real backend where it cannot work fails with a message that lists what is
available. Relays have a minimum interval between switchings so that a flickering sensor cannot
chatter a contactor.

The backends talk to RPi.GPIO and lgpio directly, as gpiozero's pin factories did: the agent
needs a relay, a PWM duty and an edge callback per pin, and gpiozero cost 3.7 MB of RSS (every
device class, board tables, importlib.metadata...) on a gateway whose budget is 40. Pins are
BCM numbers (``17``), or names: ``GPIO17``, ``BCM17``, ``BOARD11`` or ``J8:11`` (the physical
pin of the 40-pin header, the same on every Pi since the B+).
"""

from __future__ import annotations

import os
import re
import threading
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
    """The requested GPIO backend cannot run here, or a pin cannot be used."""


# ------------------------------------------------------------------------------------ pin names
#: the 40-pin header: physical pin -> BCM GPIO (the other pins are power and ground)
HEADER = {3: 2, 5: 3, 7: 4, 8: 14, 10: 15, 11: 17, 12: 18, 13: 27, 15: 22, 16: 23, 18: 24,
          19: 10, 21: 9, 22: 25, 23: 11, 24: 8, 26: 7, 27: 0, 28: 1, 29: 5, 31: 6, 32: 12,
          33: 13, 35: 19, 36: 16, 37: 26, 38: 20, 40: 21}
MAX_BCM = 27
LGPIO_MAX_PWM_HZ = 10_000          # lgpio's software PWM range is 0.1..10 kHz
PIN_FORMS = "a BCM number (17), GPIO17, BCM17, BOARD11 or J8:11"


def parse_pin(pin: int | str) -> int:
    """The BCM number of a pin as written in the config; ValueError saying what to write."""
    if isinstance(pin, bool):
        raise ValueError(f"{pin!r} is not a pin ({PIN_FORMS})")
    if isinstance(pin, int):
        bcm = pin
    else:
        text = pin.strip().upper()
        m = re.fullmatch(r"(?:GPIO|BCM)?(\d{1,2})", text)
        board = re.fullmatch(r"(?:BOARD|J8:)(\d{1,2})", text)
        if m:
            bcm = int(m.group(1))
        elif board:
            physical = int(board.group(1))
            if physical not in HEADER:
                kind = "not on the 40-pin header" if not 1 <= physical <= 40 else \
                    "a power or ground pin"
                raise ValueError(f"{pin!r} is {kind}, not a GPIO")
            bcm = HEADER[physical]
        else:
            raise ValueError(f"{pin!r} is not a pin name ({PIN_FORMS})")
    if not 0 <= bcm <= MAX_BCM:
        raise ValueError(f"GPIO {bcm} is not on the 40-pin header (GPIO 0..{MAX_BCM})")
    return bcm


# ------------------------------------------------------------------------------------- backends
class PinBackend(Protocol):
    """What the devices below need from a GPIO library; levels are physical (True = high)."""

    name: PinFactoryName

    def claim_output(self, pin: int, level: bool) -> None: ...
    def write(self, pin: int, level: bool) -> None: ...
    def claim_pwm(self, pin: int, frequency: int) -> None: ...
    def write_pwm(self, pin: int, duty: float) -> None: ...     # 0..1
    def claim_input(self, pin: int, *, pull_up: bool,
                    on_edge: Callable[[bool], None] | None) -> None: ...
    def read(self, pin: int) -> bool: ...
    def release(self, pin: int) -> None: ...


class _Claims:
    """One user per pin, named in the error (two outputs on pin 17 is a config mistake)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pins: set[int] = set()

    def take(self, pin: int) -> None:
        with self._lock:
            if pin in self._pins:
                raise GpioUnavailable(f"gpio: GPIO {pin} is already in use")
            self._pins.add(pin)

    def claim(self, pin: int, what: str, fn: Callable[[], None]) -> None:
        """Take `pin` and run the library's claim; a refusal frees it again and says why."""
        self.take(pin)
        try:
            fn()
        except GpioUnavailable:
            self.drop(pin)
            raise
        except Exception as err:          # RuntimeError from RPi.GPIO, lgpio.error...
            self.drop(pin)
            raise GpioUnavailable(f"gpio: GPIO {pin}: {what} failed ({err})") from err

    def drop(self, pin: int) -> None:
        with self._lock:
            self._pins.discard(pin)


@dataclass(eq=False)
class MockPin:
    """A simulated pin. For inputs, `drive_high()` / `drive_low()` play the outside world
    (a motion sensor, a switch): the change callback runs at once in the caller's thread."""

    number: int
    mode: str = "input"
    level: bool = False
    duty: float = 0.0
    frequency: int | None = None
    on_edge: Callable[[bool], None] | None = None

    def drive_high(self) -> None:
        self._drive(True)

    def drive_low(self) -> None:
        self._drive(False)

    def _drive(self, level: bool) -> None:
        if self.mode != "input":
            raise GpioUnavailable(f"gpio: GPIO {self.number} is an output: it cannot be driven")
        changed, self.level = level != self.level, level
        if changed and self.on_edge is not None:
            self.on_edge(level)


class MockBackend:
    """Pins in memory, for the simulators, the demo and the tests."""

    name = PinFactoryName.MOCK

    def __init__(self) -> None:
        self.pins: dict[int, MockPin] = {}
        self._claims = _Claims()

    def pin(self, pin: int) -> MockPin:
        return self.pins.setdefault(pin, MockPin(pin))

    def claim_output(self, pin: int, level: bool) -> None:
        self._claims.take(pin)
        p = self.pin(pin)
        p.mode, p.level, p.on_edge = "output", level, None

    def write(self, pin: int, level: bool) -> None:
        self.pins[pin].level = level

    def claim_pwm(self, pin: int, frequency: int) -> None:
        self._claims.take(pin)
        p = self.pin(pin)
        p.mode, p.level, p.duty, p.frequency = "pwm", False, 0.0, frequency

    def write_pwm(self, pin: int, duty: float) -> None:
        p = self.pins[pin]
        p.duty, p.level = duty, duty > 0

    def claim_input(self, pin: int, *, pull_up: bool,
                    on_edge: Callable[[bool], None] | None) -> None:
        self._claims.take(pin)
        p = self.pin(pin)
        p.mode, p.level, p.on_edge = "input", pull_up, on_edge     # the pull sets the level

    def read(self, pin: int) -> bool:
        return self.pins[pin].level

    def release(self, pin: int) -> None:
        p = self.pins.get(pin)
        if p is not None:
            p.mode, p.on_edge, p.duty = "input", None, 0.0
        self._claims.drop(pin)


class RPiGpioBackend:
    """RPi.GPIO (Raspberry Pi 1 to 4), BCM numbering; edges come from its own thread."""

    name = PinFactoryName.RPIGPIO

    def __init__(self) -> None:
        import RPi.GPIO as gpio  # RuntimeError off a Pi: never at module level

        gpio.setwarnings(False)
        gpio.setmode(gpio.BCM)
        self.gpio: Any = gpio
        self._pwm: dict[int, Any] = {}
        self._edges: set[int] = set()
        self._claims = _Claims()

    def claim_output(self, pin: int, level: bool) -> None:
        g = self.gpio
        self._claims.claim(pin, "setting it up as an output",
                           lambda: g.setup(pin, g.OUT, initial=g.HIGH if level else g.LOW))

    def write(self, pin: int, level: bool) -> None:
        self.gpio.output(pin, self.gpio.HIGH if level else self.gpio.LOW)

    def claim_pwm(self, pin: int, frequency: int) -> None:
        g = self.gpio

        def claim() -> None:
            g.setup(pin, g.OUT, initial=g.LOW)
            pwm = g.PWM(pin, frequency)
            pwm.start(0)
            self._pwm[pin] = pwm
        self._claims.claim(pin, "setting it up for PWM", claim)

    def write_pwm(self, pin: int, duty: float) -> None:
        self._pwm[pin].ChangeDutyCycle(duty * 100.0)

    def claim_input(self, pin: int, *, pull_up: bool,
                    on_edge: Callable[[bool], None] | None) -> None:
        g = self.gpio

        def claim() -> None:
            g.setup(pin, g.IN, pull_up_down=g.PUD_UP if pull_up else g.PUD_DOWN)
            if on_edge is None:
                return
            try:
                g.add_event_detect(pin, g.BOTH, callback=lambda ch: on_edge(bool(g.input(ch))))
            except RuntimeError as err:
                g.cleanup(pin)
                # RPi.GPIO 0.7 uses the sysfs edge interface, gone from kernels 6.6 and later
                raise GpioUnavailable(
                    f"gpio: GPIO {pin}: RPi.GPIO cannot watch its edges here ({err}); on a "
                    "recent kernel use `factory: lgpio` (pip install 'edgegw[pi5]'), which "
                    "drives every Pi") from err
            self._edges.add(pin)
        self._claims.claim(pin, "setting it up as an input", claim)

    def read(self, pin: int) -> bool:
        return bool(self.gpio.input(pin))

    def release(self, pin: int) -> None:
        pwm = self._pwm.pop(pin, None)
        if pwm is not None:
            pwm.stop()
        if pin in self._edges:
            self._edges.discard(pin)
            self.gpio.remove_event_detect(pin)
        self.gpio.cleanup(pin)           # back to an input: the relay driver's pull decides
        self._claims.drop(pin)


class LgpioBackend:
    """lgpio (Raspberry Pi 5, and any Linux GPIO character device), chip 0 as gpiozero used;
    edges come from lgpio's thread."""

    name = PinFactoryName.LGPIO

    def __init__(self, chip: int = 0) -> None:
        import tempfile

        # lgpio drops a notify pipe in the working directory unless told where
        os.environ.setdefault("LG_WD", tempfile.gettempdir())
        import lgpio

        self.lg: Any = lgpio
        self.handle = lgpio.gpiochip_open(chip)
        self._freq: dict[int, int] = {}
        self._callbacks: dict[int, Any] = {}
        self._claims = _Claims()

    def _call(self, what: str, pin: int, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(self.handle, pin, *args)
        except self.lg.error as err:
            raise GpioUnavailable(f"gpio: GPIO {pin}: {what} failed ({err})") from err

    def claim_output(self, pin: int, level: bool) -> None:
        self._claims.claim(pin, "claiming it as an output", lambda: self._call(
            "claiming it as an output", pin, self.lg.gpio_claim_output, int(level)))

    def write(self, pin: int, level: bool) -> None:
        self._call("writing", pin, self.lg.gpio_write, int(level))

    def claim_pwm(self, pin: int, frequency: int) -> None:
        if not 0.1 <= frequency <= LGPIO_MAX_PWM_HZ:
            raise GpioUnavailable(f"gpio: GPIO {pin}: lgpio's PWM runs at 0.1.."
                                  f"{LGPIO_MAX_PWM_HZ} Hz, not {frequency}")

        def claim() -> None:
            self._call("claiming it for PWM", pin, self.lg.gpio_claim_output, 0)
            self._call("starting PWM", pin, self.lg.tx_pwm, frequency, 0)
            self._freq[pin] = frequency
        self._claims.claim(pin, "claiming it for PWM", claim)

    def write_pwm(self, pin: int, duty: float) -> None:
        self._call("setting PWM", pin, self.lg.tx_pwm, self._freq[pin], duty * 100.0)

    def claim_input(self, pin: int, *, pull_up: bool,
                    on_edge: Callable[[bool], None] | None) -> None:
        lg = self.lg
        flags = lg.SET_PULL_UP if pull_up else lg.SET_PULL_DOWN

        def edge(chip: int, gpio: int, level: int, tick: int) -> None:
            if level in (0, 1) and on_edge is not None:   # 2 is a watchdog time-out
                on_edge(level == 1)

        def claim() -> None:
            if on_edge is None:
                self._call("claiming it as an input", pin, lg.gpio_claim_input, flags)
                return
            self._call("claiming it for edges", pin, lg.gpio_claim_alert, lg.BOTH_EDGES, flags)
            self._callbacks[pin] = lg.callback(self.handle, pin, lg.BOTH_EDGES, edge)
        self._claims.claim(pin, "claiming it as an input", claim)

    def read(self, pin: int) -> bool:
        return bool(self._call("reading", pin, self.lg.gpio_read))

    def release(self, pin: int) -> None:
        cb = self._callbacks.pop(pin, None)
        if cb is not None:
            cb.cancel()
        if self._freq.pop(pin, None) is not None:
            self._call("stopping PWM", pin, self.lg.tx_pwm, 0, 0)
        # an input first, as gpiozero did: a freed line may keep driving its last level
        self._call("releasing it", pin, self.lg.gpio_claim_input, self.lg.SET_PULL_NONE)
        self._call("freeing it", pin, self.lg.gpio_free)
        self._claims.drop(pin)


def make_pin_factory(name: PinFactoryName | str) -> PinBackend:
    """A GPIO backend by name; never a silent fall-back to the mock."""
    name = PinFactoryName(name)
    if name is PinFactoryName.MOCK:
        return MockBackend()
    try:
        if name is PinFactoryName.RPIGPIO:
            return RPiGpioBackend()
        return LgpioBackend()
    except Exception as err:       # ImportError, RuntimeError off a Pi, lgpio.error, OSError
        raise GpioUnavailable(
            f"gpio: pin factory {name!s} is not usable here ({type(err).__name__}: {err}). "
            "Available: `rpigpio` on a Raspberry Pi up to 4 (pip install 'edgegw[pi]'), "
            "`lgpio` on a Raspberry Pi 5 (pip install 'edgegw[pi5]'), `mock` for simulation "
            "only."
        ) from err


# -------------------------------------------------------------------------------------- devices
class LevelOutput(Protocol):
    """What the lighting actuators need from an output: a level 0..100 and its read-back."""

    name: str

    def set_level(self, level: float, *, now: float) -> bool:
        """Drive the output; False when deferred (relay anti-chatter)."""
        ...

    def read_level(self) -> float:
        """The level the pin is at now."""
        ...


def _claim(pin: int | str, claim: Callable[[int], None]) -> int:
    try:
        bcm = parse_pin(pin)
    except ValueError as err:
        raise GpioUnavailable(f"gpio: {err}") from None
    claim(bcm)
    return bcm


@dataclass(slots=True)
class RelayOutput:
    """On/off relay: on for any level > 0. Switches at most once per `min_switch_interval`."""

    name: str
    pin: int | str
    factory: PinBackend
    active_high: bool = True
    min_switch_interval: float = 5.0
    _bcm: int = field(init=False, default=-1)
    _last_switch: float | None = field(init=False, default=None)
    switches: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        # off at start: low for an active-high relay, high for an active-low one
        self._bcm = _claim(self.pin, lambda p: self.factory.claim_output(p, not self.active_high))

    @property
    def is_on(self) -> bool:
        return self.factory.read(self._bcm) == self.active_high

    def set_level(self, level: float, *, now: float) -> bool:
        want = level > 0
        if self.is_on == want:
            return True
        if self._last_switch is not None and now - self._last_switch < self.min_switch_interval:
            return False
        self.factory.write(self._bcm, want == self.active_high)
        self._last_switch = now
        self.switches += 1
        return True

    def read_level(self) -> float:
        return 100.0 if self.is_on else 0.0

    def close(self) -> None:
        self.factory.release(self._bcm)


@dataclass(slots=True)
class PwmOutput:
    """A PWM dimmer input (e.g. a 0-10 V converter driven by PWM): duty = level / 100."""

    name: str
    pin: int | str
    factory: PinBackend
    frequency: int = 1000
    _bcm: int = field(init=False, default=-1)
    _duty: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self._bcm = _claim(self.pin, lambda p: self.factory.claim_pwm(p, self.frequency))

    def set_level(self, level: float, *, now: float) -> bool:
        self._duty = max(0.0, min(100.0, level)) / 100.0
        self.factory.write_pwm(self._bcm, self._duty)
        return True

    def read_level(self) -> float:
        return round(self._duty * 100.0, 3)

    def close(self) -> None:
        self.factory.release(self._bcm)


@dataclass(slots=True)
class DigitalInput:
    """A contact input: the cabinet's manual switch, a motion sensor (PIR). Active when high,
    or when low with `pull_up` (a contact to ground)."""

    name: str
    pin: int | str
    factory: PinBackend
    pull_up: bool = False
    on_change: Callable[[bool], None] | None = None
    _bcm: int = field(init=False, default=-1)
    _last: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self._last = self.pull_up           # the pull's level: inactive
        edge = None if self.on_change is None else self._edge
        self._bcm = _claim(self.pin, lambda p: self.factory.claim_input(
            p, pull_up=self.pull_up, on_edge=edge))

    def _edge(self, level: bool) -> None:
        # a bouncing contact gives several edges for one change: report changes only
        if level == self._last:
            return
        self._last = level
        if self.on_change is not None:
            self.on_change(level != self.pull_up)

    @property
    def active(self) -> bool:
        return self.factory.read(self._bcm) != self.pull_up

    @property
    def mock_pin(self) -> MockPin:
        """The simulated pin (`drive_high()` / `drive_low()`); only with the mock backend."""
        if not isinstance(self.factory, MockBackend):
            raise GpioUnavailable(f"gpio: {self.name} is a real pin, not a simulated one")
        return self.factory.pin(self._bcm)

    def close(self) -> None:
        self.factory.release(self._bcm)


def detect_pin_factory(model_path: str = "/proc/device-tree/model") -> PinFactoryName:
    """The real backend for this board; GpioUnavailable (listing the choices) off a Pi."""
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
