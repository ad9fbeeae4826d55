"""The GPIO driver: pin names, the devices on the simulated backend, and the RPi.GPIO and lgpio
backends against stand-ins for those libraries (they only load on a Raspberry Pi). The
stand-ins follow the libraries' documented calls and keep the pins' levels, so a backend that
drives the wrong level, forgets a pull or loses an edge fails here; what they cannot show is
the kernel's side, which `edgegw check` on a real cabinet does."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from drivers.gpio import (
    DigitalInput,
    GpioUnavailable,
    LgpioBackend,
    MockBackend,
    PinFactoryName,
    PwmOutput,
    RelayOutput,
    RPiGpioBackend,
    detect_pin_factory,
    make_pin_factory,
    parse_pin,
)
from gateway.config import parse_config
from gateway.errors import ConfigError


# -------------------------------------------------------------------------------- pin names
@pytest.mark.parametrize(("written", "bcm"), [
    (17, 17), ("17", 17), ("GPIO17", 17), ("gpio4", 4), ("BCM27", 27), ("BOARD11", 17),
    ("J8:40", 21), ("board3", 2), (0, 0),
])
def test_pin_names(written: int | str, bcm: int) -> None:
    assert parse_pin(written) == bcm


@pytest.mark.parametrize(("written", "message"), [
    (28, "GPIO 28 is not on the 40-pin header"), ("GPIO40", "GPIO 40 is not on the 40-pin"),
    ("BOARD1", "'BOARD1' is a power or ground pin, not a GPIO"),
    ("J8:41", "'J8:41' is not on the 40-pin header"), ("WPI3", "'WPI3' is not a pin name"),
    (True, "True is not a pin"), (-1, "GPIO -1 is not on the 40-pin header"),
])
def test_bad_pin_names_say_what_to_write(written: int | str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_pin(written)


BASE = "gateway: {id: gw-1}\nstore: {path: /tmp/x.db}\n"


def test_the_config_checks_pins_and_refuses_one_used_twice() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + "gpio:\n  factory: mock\n  outputs:\n"
                     "    - {name: relay-1, pin: GPIO17}\n    - {name: relay-2, pin: BOARD1}\n"
                     "  inputs:\n    - {name: pir-1, pin: BOARD11}\n")
    text = str(info.value)
    assert "gpio.outputs[1].pin: 'BOARD1' is a power or ground pin, not a GPIO" in text
    with pytest.raises(ConfigError) as info2:
        parse_config(BASE + "gpio:\n  factory: mock\n  outputs: [{name: relay-1, pin: 17}]\n"
                     "  inputs: [{name: pir-1, pin: BOARD11}]\n")
    assert "gpio.inputs[0].pin: GPIO 17 is already used by relay-1" in str(info2.value)


# ---------------------------------------------------------------------- devices, simulated
def test_relay_levels_active_low_and_anti_chatter() -> None:
    pins = MockBackend()
    relay = RelayOutput("relay-1", "GPIO17", pins, min_switch_interval=5.0)
    low = RelayOutput("relay-2", 18, pins, active_high=False, min_switch_interval=0)
    assert (pins.pins[17].level, pins.pins[18].level) == (False, True)   # both off at start
    assert relay.set_level(60, now=100.0) and pins.pins[17].level is True
    assert relay.read_level() == 100.0
    assert relay.set_level(0, now=102.0) is False          # deferred: 2 s after switching
    assert relay.set_level(0, now=105.0) and relay.read_level() == 0.0 and relay.switches == 2
    assert low.set_level(100, now=0) and pins.pins[18].level is False and low.read_level() == 100


def test_pwm_duty() -> None:
    pins = MockBackend()
    pwm = PwmOutput("dim-1", 12, pins, frequency=200)
    assert pwm.set_level(37.5, now=0) and pins.pins[12].duty == 0.375
    assert pins.pins[12].frequency == 200
    pwm.set_level(140, now=0)
    assert pwm.read_level() == 100.0


def test_inputs_report_changes_with_their_pull() -> None:
    pins = MockBackend()
    seen: list[tuple[str, bool]] = []
    pir = DigitalInput("pir-1", 22, pins, on_change=lambda a: seen.append(("pir", a)))
    door = DigitalInput("door", 23, pins, pull_up=True,
                        on_change=lambda a: seen.append(("door", a)))
    assert not pir.active and not door.active              # pulled down / up: inactive
    pir.mock_pin.drive_high()
    door.mock_pin.drive_low()                              # a contact to ground
    pir.mock_pin.drive_high()                              # no edge: no call
    door.mock_pin.drive_high()
    assert seen == [("pir", True), ("door", True), ("door", False)]
    assert pir.active and not door.active


def test_a_pin_has_one_user_until_closed() -> None:
    pins = MockBackend()
    relay = RelayOutput("relay-1", 17, pins)
    with pytest.raises(GpioUnavailable, match="GPIO 17 is already in use"):
        DigitalInput("pir-1", "BOARD11", pins)
    relay.close()
    DigitalInput("pir-1", "BOARD11", pins)


# ------------------------------------------------------------------- RPi.GPIO, a stand-in
class FakeRPiGPIO(types.ModuleType):
    """RPi.GPIO's calls as its documentation gives them; levels per pin; edges on `set`."""

    BCM, OUT, IN, HIGH, LOW, BOTH, PUD_UP, PUD_DOWN = 11, 0, 1, 1, 0, 33, 22, 21

    def __init__(self) -> None:
        super().__init__("RPi.GPIO")
        self.calls: list[tuple[Any, ...]] = []
        self.levels: dict[int, int] = {}
        self.edges: dict[int, Callable[[int], None]] = {}
        self.pwms: dict[int, Any] = {}

    def setwarnings(self, on: bool) -> None:
        self.calls.append(("setwarnings", on))

    def setmode(self, mode: int) -> None:
        self.calls.append(("setmode", mode))

    def setup(self, pin: int, direction: int, initial: int | None = None,
              pull_up_down: int | None = None) -> None:
        self.calls.append(("setup", pin, direction, initial, pull_up_down))
        if direction == self.OUT:
            self.levels[pin] = initial or 0
        else:
            self.levels[pin] = 1 if pull_up_down == self.PUD_UP else 0

    def output(self, pin: int, level: int) -> None:
        self.levels[pin] = level

    def input(self, pin: int) -> int:
        return self.levels[pin]

    def add_event_detect(self, pin: int, edge: int, callback: Callable[[int], None]) -> None:
        assert edge == self.BOTH
        self.edges[pin] = callback

    def remove_event_detect(self, pin: int) -> None:
        del self.edges[pin]

    def cleanup(self, pin: int) -> None:
        self.calls.append(("cleanup", pin))

    def PWM(self, pin: int, frequency: int) -> Any:
        fake = self

        class Pwm:
            def __init__(self) -> None:
                self.duty: float | None = None
                fake.pwms[pin] = self
                fake.calls.append(("PWM", pin, frequency))

            def start(self, duty: float) -> None:
                self.duty = duty

            def ChangeDutyCycle(self, duty: float) -> None:
                self.duty = duty

            def stop(self) -> None:
                fake.calls.append(("pwm-stop", pin))
        return Pwm()

    def set(self, pin: int, level: int) -> None:
        """The outside world moves an input."""
        self.levels[pin] = level
        if pin in self.edges:
            self.edges[pin](pin)


@pytest.fixture
def rpi(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRPiGPIO]:
    fake = FakeRPiGPIO()
    pkg = types.ModuleType("RPi")
    pkg.GPIO = fake  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "RPi", pkg)
    monkeypatch.setitem(sys.modules, "RPi.GPIO", fake)
    yield fake


def test_rpigpio_backend(rpi: FakeRPiGPIO) -> None:
    pins = make_pin_factory("rpigpio")
    assert isinstance(pins, RPiGpioBackend)
    assert rpi.calls[:2] == [("setwarnings", False), ("setmode", rpi.BCM)]
    relay = RelayOutput("relay-1", 17, pins, active_high=False, min_switch_interval=0)
    assert ("setup", 17, rpi.OUT, rpi.HIGH, None) in rpi.calls     # active-low: off is high
    relay.set_level(100, now=0)
    assert rpi.levels[17] == 0 and relay.read_level() == 100.0
    pwm = PwmOutput("dim-1", 18, pins, frequency=500)
    pwm.set_level(25, now=0)
    assert ("PWM", 18, 500) in rpi.calls and rpi.pwms[18].duty == 25.0
    seen: list[bool] = []
    door = DigitalInput("door", "BOARD15", pins, pull_up=True, on_change=seen.append)
    assert ("setup", 22, rpi.IN, None, rpi.PUD_UP) in rpi.calls and not door.active
    rpi.set(22, 0)
    rpi.set(22, 0)                                       # a bounce: the level did not change
    rpi.set(22, 1)
    assert seen == [True, False]
    with pytest.raises(GpioUnavailable, match="door is a real pin, not a simulated one"):
        door.mock_pin  # noqa: B018
    for dev in (relay, pwm, door):
        dev.close()
    assert {("cleanup", 17), ("cleanup", 18), ("cleanup", 22), ("pwm-stop", 18)} <= set(
        rpi.calls)
    assert rpi.edges == {}


def test_rpigpio_without_edge_detection_says_to_use_lgpio(rpi: FakeRPiGPIO) -> None:
    """RPi.GPIO 0.7 watches edges through sysfs, which kernels 6.6+ no longer have."""
    def refuse(pin: int, edge: int, callback: Callable[[int], None]) -> None:
        raise RuntimeError("Failed to add edge detection")
    rpi.add_event_detect = refuse  # type: ignore[method-assign]
    pins = make_pin_factory("rpigpio")
    with pytest.raises(GpioUnavailable, match=r"GPIO 22: RPi.GPIO cannot watch its edges "
                                              r"here .*use `factory: lgpio`"):
        DigitalInput("pir-1", 22, pins, on_change=print)
    assert ("cleanup", 22) in rpi.calls
    DigitalInput("pir-1", 22, pins)                      # the pin was given back


# ---------------------------------------------------------------------- lgpio, a stand-in
class FakeLgpio(types.ModuleType):
    """lgpio's calls (gpiochip_open, gpio_claim_*, gpio_write/read, tx_pwm, callback)."""

    SET_PULL_UP, SET_PULL_DOWN, BOTH_EDGES = 32, 64, 3

    class error(Exception):
        pass

    def __init__(self) -> None:
        super().__init__("lgpio")
        self.levels: dict[int, int] = {}
        self.claimed: dict[int, str] = {}
        self.pwm: dict[int, tuple[float, float]] = {}
        self.callbacks: dict[int, Callable[[int, int, int, int], None]] = {}

    def gpiochip_open(self, chip: int) -> int:
        assert chip == 0
        return 7

    SET_PULL_NONE = 128

    def _claim(self, pin: int, how: str) -> None:
        if self.claimed.get(pin) == "someone else":      # another process holds the line
            raise self.error("GPIO busy")
        self.claimed[pin] = how                          # this handle may claim it again

    def gpio_claim_output(self, h: int, pin: int, level: int) -> int:
        self._claim(pin, "out")
        self.levels[pin] = level
        return 0

    def gpio_claim_input(self, h: int, pin: int, flags: int) -> int:
        self._claim(pin, "in" if flags != self.SET_PULL_NONE else "released")
        self.levels[pin] = 1 if flags == self.SET_PULL_UP else 0
        return 0

    def gpio_claim_alert(self, h: int, pin: int, edges: int, flags: int) -> int:
        assert edges == self.BOTH_EDGES
        self._claim(pin, "alert")
        self.levels[pin] = 1 if flags == self.SET_PULL_UP else 0
        return 0

    def gpio_write(self, h: int, pin: int, level: int) -> int:
        self.levels[pin] = level
        return 0

    def gpio_read(self, h: int, pin: int) -> int:
        return self.levels[pin]

    def tx_pwm(self, h: int, pin: int, freq: float, duty: float) -> int:
        self.pwm[pin] = (freq, duty)
        return 0

    def gpio_free(self, h: int, pin: int) -> int:
        assert self.claimed.pop(pin) == "released", "freed while still driven"
        return 0

    def callback(self, h: int, pin: int, edges: int, func: Callable[[int, int, int, int], None]
                 ) -> Any:
        fake = self
        self.callbacks[pin] = func

        class Cb:
            def cancel(self) -> None:
                del fake.callbacks[pin]
        return Cb()

    def set(self, pin: int, level: int) -> None:
        self.levels[pin] = level
        if pin in self.callbacks:
            self.callbacks[pin](0, pin, level, 123)


@pytest.fixture
def lg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeLgpio]:
    fake = FakeLgpio()
    monkeypatch.setitem(sys.modules, "lgpio", fake)
    monkeypatch.setenv("LG_WD", str(tmp_path))
    yield fake


def test_lgpio_backend(lg: FakeLgpio) -> None:
    pins = make_pin_factory("lgpio")
    assert isinstance(pins, LgpioBackend)
    relay = RelayOutput("relay-1", 17, pins, min_switch_interval=0)
    assert lg.claimed[17] == "out" and lg.levels[17] == 0
    relay.set_level(100, now=0)
    assert lg.levels[17] == 1 and relay.read_level() == 100.0
    pwm = PwmOutput("dim-1", 18, pins, frequency=800)
    assert lg.pwm[18] == (800, 0)                          # running from the claim, at 0 %
    pwm.set_level(40, now=0)
    assert lg.pwm[18] == (800, 40.0)
    with pytest.raises(GpioUnavailable, match=r"lgpio's PWM runs at 0\.1\.\.10000 Hz, not 20000"):
        PwmOutput("fast", 19, pins, frequency=20_000)
    PwmOutput("slow", 19, pins, frequency=50).close()     # the refusal kept no claim
    seen: list[bool] = []
    pir = DigitalInput("pir-1", 22, pins, on_change=seen.append)
    lg.set(22, 1)
    lg.callbacks[22](0, 22, 2, 124)                      # a watchdog time-out: not an edge
    lg.set(22, 1)                                        # a bounce: no change, no report
    lg.set(22, 0)
    assert seen == [True, False] and lg.claimed[22] == "alert"
    plain = DigitalInput("door", 23, pins, pull_up=True)
    assert lg.claimed[23] == "in" and not plain.active
    with pytest.raises(GpioUnavailable, match="GPIO 17 is already in use"):
        RelayOutput("again", 17, pins)
    lg.claimed[24] = "someone else"                     # another process holds the line
    with pytest.raises(GpioUnavailable, match=r"GPIO 24: claiming it as an output failed "
                                              r"\(GPIO busy\)"):
        RelayOutput("busy", 24, pins)
    del lg.claimed[24]
    RelayOutput("free-now", 24, pins).close()            # the failed claim was given back
    for dev in (relay, pwm, pir, plain):
        dev.close()
    assert set(lg.claimed) == set() and lg.callbacks == {} and lg.pwm[18] == (0, 0)


# --------------------------------------------------------------------------- choosing one
def test_real_backends_off_a_pi_fail_with_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "RPi", None)        # not installed here
    with pytest.raises(GpioUnavailable, match=r"rpigpio is not usable here \(\w*Error.*"
                                              r"Available: `rpigpio`.*`mock` for simulation"):
        make_pin_factory(PinFactoryName.RPIGPIO)


def test_auto_detects_the_board(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\x00")
    assert detect_pin_factory(str(model)) is PinFactoryName.LGPIO
    model.write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\x00")
    assert detect_pin_factory(str(model)) is PinFactoryName.RPIGPIO
    with pytest.raises(GpioUnavailable, match="found no Raspberry Pi here"):
        detect_pin_factory(str(tmp_path / "absent"))
