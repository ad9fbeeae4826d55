"""policies.validation: the models every config, rule file and command goes through.

The error shapes (type, loc, msg, ctx) are the ones policies.common.describe_error turns into the
texts operators read, so they are checked here one by one; the config, lighting and alert tests
check the texts themselves.
"""

from __future__ import annotations

import datetime as dt
import enum
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import pytest

from policies.validation import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

ROOT = Path(__file__).resolve().parent.parent


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Scalars(_M):
    i: int = 0
    f: float = 0.0
    s: str = ""
    b: bool = False
    lit: Literal["x", "y"] = "x"
    color: Color = Color.RED
    day: dt.date | None = None
    at: dt.time | None = None
    when: dt.datetime | None = None
    path: Path | None = None


def errors(model: type[BaseModel], data: Any) -> list[tuple[str, tuple[Any, ...], str]]:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return [(e["type"], e["loc"], e["msg"]) for e in info.value.errors()]


@pytest.mark.parametrize(("field", "raw", "value"), [
    ("i", "2", 2), ("i", " 3 ", 3), ("i", 4.0, 4), ("i", True, 1), ("i", "5.0", 5),
    ("f", 3, 3.0), ("f", "1.5", 1.5), ("f", True, 1.0),
    ("s", b"abc", "abc"),
    ("b", "yes", True), ("b", "off", False), ("b", 1, True), ("b", 0.0, False),
    ("color", "blue", Color.BLUE), ("color", Color.BLUE, Color.BLUE),
    ("day", "2026-12-24", dt.date(2026, 12, 24)), ("at", "18:30", dt.time(18, 30)),
    ("when", "2026-01-01T00:00:00Z", dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),
    ("path", "/tmp/x", Path("/tmp/x")),
])
def test_lax_conversions_follow_pydantic(field: str, raw: Any, value: Any) -> None:
    got = getattr(Scalars.model_validate({field: raw}), field)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize(("field", "raw", "typ", "msg"), [
    ("i", 1.5, "int_from_float",
     "Input should be a valid integer, got a number with a fractional part"),
    ("i", "x", "int_parsing",
     "Input should be a valid integer, unable to parse string as an integer"),
    ("i", None, "int_type", "Input should be a valid integer"),
    ("f", "x", "float_parsing",
     "Input should be a valid number, unable to parse string as a number"),
    ("f", [1], "float_type", "Input should be a valid number"),
    ("s", 1, "string_type", "Input should be a valid string"),
    ("b", 2, "bool_parsing", "Input should be a valid boolean, unable to interpret input"),
    ("b", None, "bool_type", "Input should be a valid boolean"),
    ("lit", "z", "literal_error", "Input should be 'x' or 'y'"),
    ("color", "green", "enum", "Input should be 'red' or 'blue'"),
])
def test_bad_scalars_give_pydantic_shaped_errors(field: str, raw: Any, typ: str,
                                                 msg: str) -> None:
    assert errors(Scalars, {field: raw}) == [(typ, (field,), msg)]


class Limits(_M):
    n: int = Field(ge=1, le=10)
    x: float | None = Field(default=None, gt=0, lt=1)
    name: str = Field(default="a", pattern=r"^[a-z]+$", min_length=1, max_length=3)
    items: list[Annotated[str, Field(min_length=2)]] = Field(default=[], max_length=2)


def test_constraints() -> None:
    assert errors(Limits, {"n": 0}) == [
        ("greater_than_equal", ("n",), "Input should be greater than or equal to 1")]
    assert errors(Limits, {"n": 11, "x": 1}) == [
        ("less_than_equal", ("n",), "Input should be less than or equal to 10"),
        ("less_than", ("x",), "Input should be less than 1")]
    assert errors(Limits, {"n": 1, "x": 0}) == [
        ("greater_than", ("x",), "Input should be greater than 0")]
    assert Limits(n=1, x=None).x is None               # None skips the number's bounds
    assert errors(Limits, {"n": 1, "name": "abcd"}) == [
        ("string_too_long", ("name",), "String should have at most 3 characters")]
    assert errors(Limits, {"n": 1, "name": ""}) == [
        ("string_too_short", ("name",), "String should have at least 1 character")]
    assert errors(Limits, {"n": 1, "name": "A"}) == [
        ("string_pattern_mismatch", ("name",), "String should match pattern '^[a-z]+$'")]
    assert errors(Limits, {"n": 1, "items": ["ok", "x", "no"]}) == [
        ("string_too_short", ("items", 1), "String should have at least 2 characters")]
    assert errors(Limits, {"n": 1, "items": ["ok", "ok", "ok"]}) == [
        ("too_long", ("items",), "List should have at most 2 items after validation, not 3")]


class Inner(_M):
    a: int


class Outer(_M):
    inner: Inner
    inners: tuple[Inner, ...] = ()
    table: dict[str, float] = {}
    tags: set[str] = set()


def test_nesting_missing_extra_and_paths() -> None:
    assert errors(Outer, {"inner": {}, "inners": [{"a": 1}, {"a": "x"}], "zz": 1,
                          "table": {"k": "v"}}) == [
        ("missing", ("inner", "a"), "Field required"),
        ("int_parsing", ("inners", 1, "a"),
         "Input should be a valid integer, unable to parse string as an integer"),
        ("float_parsing", ("table", "k"),
         "Input should be a valid number, unable to parse string as a number"),
        ("extra_forbidden", ("zz",), "Extra inputs are not permitted")]
    assert errors(Outer, {"inner": [1]}) == [
        ("model_type", ("inner",), "Input should be a valid dictionary or instance of Inner")]
    assert errors(Outer, {"inner": {"a": 1}, "inners": "ab"}) == [
        ("tuple_type", ("inners",), "Input should be a valid tuple")]
    out = Outer.model_validate({"inner": {"a": 1}, "inners": [{"a": 2}], "tags": ["x", "x"]})
    assert out.inners == (Inner(a=2),) and out.tags == {"x"}
    assert Outer.model_validate({"inner": Inner(a=5)}).inner.a == 5


def test_defaults_are_not_shared_between_instances() -> None:
    a, b = Outer(inner={"a": 1}), Outer(inner={"a": 2})
    assert a.table == {} and a.table is not b.table


class Union1(_M):
    v: int | str = 0
    maybe: list[str] | str | None = None


def test_unions_take_the_exact_type_first_then_convert() -> None:
    assert Union1(v="5").v == "5"           # a str is a str, not an int
    assert Union1(v=5).v == 5
    assert Union1(v=True).v == 1            # no exact match: converted by the first that can
    assert Union1(maybe="a").maybe == "a" and Union1(maybe=["a"]).maybe == ["a"]
    assert errors(Union1, {"v": None}) == [
        ("int_type", ("v", "int"), "Input should be a valid integer"),
        ("string_type", ("v", "str"), "Input should be a valid string")]


class Rtu(_M):
    type: Literal["rtu"]
    port: str


class Tcp(_M):
    type: Literal["tcp"]
    host: str


class Buses(_M):
    buses: list[Annotated[Rtu | Tcp, Field(discriminator="type")]] = []


def test_discriminated_union() -> None:
    got = Buses.model_validate({"buses": [{"type": "tcp", "host": "h"}, {"type": "rtu",
                                                                         "port": "p"}]})
    assert [type(b) for b in got.buses] == [Tcp, Rtu]
    with pytest.raises(ValidationError) as info:
        Buses.model_validate({"buses": [{"type": "udp"}, {"host": "h"}, {"type": "tcp"}, 5]})
    errs = info.value.errors()
    assert [(e["type"], e["loc"]) for e in errs] == [
        ("union_tag_invalid", ("buses", 0)), ("union_tag_not_found", ("buses", 1)),
        ("missing", ("buses", 2, "tcp", "host")), ("model_attributes_type", ("buses", 3))]
    assert errs[0]["ctx"] == {"discriminator": "'type'", "tag": "udp",
                              "expected_tags": "'rtu', 'tcp'"}


def _kind(v: Any) -> str:
    return "name" if isinstance(v, str) else "inline"


class Group(_M):
    program: Annotated[Annotated[str, Tag("name")] | Annotated[Inner, Tag("inline")],
                       Discriminator(_kind)]


def test_a_discriminator_function_picks_the_member() -> None:
    assert Group(program="night").program == "night"
    assert Group(program={"a": 3}).program == Inner(a=3)
    assert errors(Group, {"program": {"a": "x"}})[0][1] == ("program", "inline", "a")


def _percent(v: Any) -> Any:
    return float(v.removesuffix("%")) if isinstance(v, str) and v.endswith("%") else v


def _even(v: int) -> int:
    if v % 2:
        raise ValueError("must be even")
    return v


class Validated(_M):
    level: Annotated[float, BeforeValidator(_percent), Field(ge=0, le=100)] = 0.0
    even: Annotated[int, AfterValidator(_even)] = 0
    lo: float = 0.0
    hi: float = 1.0

    @field_validator("lo", "hi")
    @classmethod
    def _finite(cls, v: float) -> float:
        if v != v:
            raise ValueError("not a number")
        return v

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return {"level": v} if isinstance(v, (int, float, str)) else v

    @model_validator(mode="after")
    def _order(self) -> Validated:
        if self.lo > self.hi:
            raise ValueError(f"lo {self.lo} is above hi {self.hi}")
        return self


def test_validators() -> None:
    assert Validated.model_validate("60%").level == 60.0
    assert errors(Validated, {"level": "150%"}) == [
        ("less_than_equal", ("level",), "Input should be less than or equal to 100")]
    assert errors(Validated, {"even": 3}) == [("value_error", ("even",),
                                               "Value error, must be even")]
    assert errors(Validated, {"lo": "nan"}) == [("value_error", ("lo",),
                                                 "Value error, not a number")]
    assert errors(Validated, {"lo": 2, "hi": 1}) == [
        ("value_error", (), "Value error, lo 2.0 is above hi 1.0")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
    n: int = 0
    x: float = 0.0
    v: bool | int | float | str = 0


def test_strict_models_convert_nothing() -> None:
    assert errors(Strict, {"n": "1"})[0][0] == "int_type"
    assert errors(Strict, {"n": True})[0][0] == "int_type"
    assert Strict(x=1).x == 1.0                          # an int is a number
    assert errors(Strict, {"x": float("inf")})[0][0] == "finite_number"
    assert type(Strict(v=1).v) is int and type(Strict(v=True).v) is bool
    assert [e[1] for e in errors(Strict, {"v": None})] == [
        ("v", "bool"), ("v", "int"), ("v", "float"), ("v", "str")]


class Aliased(_M):
    start: str = Field(alias="from")
    end: str = Field(default="z", alias="to")
    note: str = Field(default="", exclude=True)


def test_aliases_and_excluded_fields() -> None:
    a = Aliased.model_validate({"from": "a"})
    assert (a.start, a.end) == ("a", "z")
    assert errors(Aliased, {"start": "a"}) == [
        ("missing", ("from",), "Field required"),
        ("extra_forbidden", ("start",), "Extra inputs are not permitted")]
    assert a.model_dump() == {"start": "a", "end": "z"}
    assert a.model_dump(by_alias=True) == {"from": "a", "to": "z"}


def test_frozen_equal_hashable_copyable_picklable() -> None:
    a = Inner(a=1)
    with pytest.raises(ValidationError, match="Instance is frozen"):
        a.a = 2  # type: ignore[misc]
    assert a == Inner(a=1) and a != Inner(a=2) and hash(a) == hash(Inner(a=1))
    b = a.model_copy(update={"a": 7})
    assert (a.a, b.a) == (1, 7) and b.model_fields_set == {"a"}
    assert pickle.loads(pickle.dumps(b)) == b
    assert repr(b) == "Inner(a=7)"
    assert Outer(inner={"a": 1}).model_fields_set == {"inner"}


def test_dump_modes() -> None:
    s = Scalars(color="blue", day="2026-12-24", at="18:30", path="/x",
                when=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    js = s.model_dump(mode="json")
    assert js["color"] == "blue" and js["day"] == "2026-12-24" and js["at"] == "18:30:00"
    assert js["path"] == "/x" and js["when"] == "2026-01-01T00:00:00Z"
    assert s.model_dump()["color"] is Color.BLUE
    assert s.model_dump(mode="json", exclude_defaults=True) == {
        "color": "blue", "day": "2026-12-24", "at": "18:30:00",
        "when": "2026-01-01T00:00:00Z", "path": "/x"}
    out = Outer(inner={"a": 1}, inners=[{"a": 2}])
    assert out.model_dump(mode="json")["inners"] == [{"a": 2}]
    assert out.model_dump()["inners"] == ({"a": 2},)
    assert Inner(a=3).model_dump_json() == '{"a":3}'


def test_json_schema() -> None:
    schema = Buses.model_json_schema()
    bus = schema["properties"]["buses"]["items"]
    assert bus["discriminator"] == {"propertyName": "type", "mapping": {
        "rtu": "#/$defs/Rtu", "tcp": "#/$defs/Tcp"}}
    assert schema["$defs"]["Tcp"]["required"] == ["type", "host"]
    assert schema["$defs"]["Tcp"]["additionalProperties"] is False
    lim = Limits.model_json_schema()["properties"]
    assert lim["n"] == {"type": "integer", "minimum": 1, "maximum": 10, "title": "N"}
    assert lim["x"]["anyOf"][0] == {"type": "number", "exclusiveMinimum": 0,
                                    "exclusiveMaximum": 1}
    assert lim["name"]["pattern"] == "^[a-z]+$" and lim["name"]["default"] == "a"


def test_an_unsupported_type_is_refused_when_first_used() -> None:
    class Odd(_M):
        x: complex = 0j

    with pytest.raises(TypeError, match=r"Odd\.x: the type .*complex.* is not supported"):
        Odd()


def test_the_agent_runs_without_pydantic() -> None:
    """The agent's config, rules and commands need no pydantic (13 MB of RSS): importing the
    agent, validating the example config and a command, and the CLI (typer from 0.29 builds
    pydantic adapters for every parameter: pyproject caps it) must not load it."""
    code = ("import sys, gateway.runtime, gateway.cli\n"
            "from gateway.config import load_config\n"
            "load_config('examples/street.yaml')\n"
            "from gateway.commands.args import SetOverrideArgs, parse_args\n"
            "parse_args(SetOverrideArgs, 'set_override', {'group': 'a', 'level': 5})\n"
            "sys.argv = ['edgegw', 'config', 'validate', '--config', 'examples/street.yaml']\n"
            "try:\n    gateway.cli.main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('pydantic', 'pydantic_core')))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_hostile_input_is_an_error_not_a_crash() -> None:
    """Keys YAML and msgpack allow but a path cannot print (None, 1.5, bytes) come back as
    their repr; an integer no float holds is a number error (it was an OverflowError)."""
    with pytest.raises(ValidationError) as info:
        Outer.model_validate({"inner": {"a": 1}, None: 1, 1.5: 2, b"k": 3,
                              "table": {None: 1.0}})
    locs = [e["loc"] for e in info.value.errors()]
    assert ("None",) in locs and ("1.5",) in locs and ("b'k'",) in locs
    assert ("table", "None", "[key]") in locs
    assert errors(Scalars, {"f": 10**400}) == [
        ("finite_number", ("f",), "Input should be a finite number")]
    from gateway.commands.args import SetOverrideArgs, parse_args
    from gateway.commands.codes import CommandFailure

    with pytest.raises(CommandFailure, match="level"):
        parse_args(SetOverrideArgs, "set_override", {"group": "g", "level": 10**400})


class Base(_M):
    x: int = 1
    LIMIT: ClassVar[int] = 5


class Child(Base):
    x: int          # annotated again without a default: required here


def test_class_variables_stay_and_a_field_can_become_required() -> None:
    assert Base.LIMIT == 5 and Child.LIMIT == 5 and Base().x == 1
    assert errors(Child, {}) == [("missing", ("x",), "Field required")]


class Twice(_M):
    v: str = ""

    @field_validator("v", mode="before")
    @classmethod
    def _first(cls, v: Any) -> Any:
        return f"{v}-first"

    @field_validator("v", mode="before")
    @classmethod
    def _second(cls, v: Any) -> Any:
        return f"{v}-second"


def test_before_validators_run_last_defined_first() -> None:
    assert Twice(v="x").v == "x-second-first"


class Bag(_M):
    items: frozenset[Any] = frozenset()


def test_a_set_of_unhashable_items_is_an_error() -> None:
    assert errors(Bag, {"items": [{"a": 1}]})[0][:2] == ("frozenset_type", ("items",))
    assert Bag(items=[1, 1, 2]).items == frozenset({1, 2})
