"""Frozen, validated models built from plain data (YAML, JSON): the part of pydantic's API that
edgegw uses, in one module.

Why not pydantic: on a gateway with a 40 MB budget, importing it and building the first model
cost 13 MB of RSS (pydantic-core, its schema machinery, importlib.metadata, email, zipfile...),
a third of the budget, for validating a config file once at start and a command now and then.
This module keeps the same model code (annotations, ``Field`` constraints, field and model
validators, discriminated unions) and produces errors in pydantic's shape (``type``, ``loc``,
``msg``, ``input``, ``ctx``), so the error texts people read (policies.common.describe_error)
are unchanged. Lax conversions follow pydantic's (``"5"`` -> 5 for an int, ``"yes"`` -> True,
a list for a tuple), unions are tried strictly first then laxly, and ``strict=True`` in a
model's config turns conversions off.

Supported types: bool, int, float, str, bytes, None, Any, Literal, Enum, date, time, datetime,
Path, list/tuple/set/frozenset/dict of those, unions (with ``Field(discriminator=...)`` or
``Discriminator(func)`` + ``Tag``), models, and ``Annotated`` with ``Field``,
``BeforeValidator`` and ``AfterValidator``. Anything else is refused when the model is first
used, so a type this module does not know is a clear error, not a silent pass.
"""

from __future__ import annotations

import copy
import datetime as dt
import enum
import inspect
import json
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path, PurePath
from typing import Annotated, Any, ClassVar, Literal, Self, Union, cast, get_args, get_origin

__all__ = [
    "AfterValidator",
    "BaseModel",
    "BeforeValidator",
    "ConfigDict",
    "Discriminator",
    "Field",
    "FieldInfo",
    "Tag",
    "ValidationError",
    "field_validator",
    "model_validator",
]

_MISSING: Any = type("_Missing", (), {"__repr__": lambda self: "<missing>"})()


# ------------------------------------------------------------------------------------ errors
class ValidationError(ValueError):
    """Every problem found in one input, each a dict: ``type``, ``loc`` (the path as a tuple),
    ``msg``, ``input`` and, for some types, ``ctx``."""

    def __init__(self, title: str, errors: list[dict[str, Any]]) -> None:
        self.title = title
        self._errors = errors
        super().__init__(self._text())

    def errors(self) -> list[dict[str, Any]]:
        return [dict(e) for e in self._errors]

    def error_count(self) -> int:
        return len(self._errors)

    def _text(self) -> str:
        n = len(self._errors)
        lines = [f"{n} validation error{'s' if n != 1 else ''} for {self.title}"]
        for e in self._errors:
            loc = ".".join(str(p) for p in e["loc"])
            if loc:
                lines.append(loc)
            inp = e.get("input")
            lines.append(f"  {e['msg']} [type={e['type']}, input_value={inp!r:.80}, "
                         f"input_type={type(inp).__name__}]")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self._text()


class _Fail(Exception):
    """Raised by a compiled validator: the errors, with paths relative to the value."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors


def _error(typ: str, msg: str, inp: Any, ctx: dict[str, Any] | None = None) -> _Fail:
    e: dict[str, Any] = {"type": typ, "loc": (), "msg": msg, "input": inp}
    if ctx is not None:
        e["ctx"] = ctx
    return _Fail([e])


def _prefix(errors: list[dict[str, Any]], *loc: Any) -> list[dict[str, Any]]:
    return [{**e, "loc": (*loc, *e["loc"])} for e in errors]


def _key(k: Any) -> str | int:
    """A mapping key as an error path item: text and integers as they are, anything else
    (None, 1.5, bytes: YAML and msgpack allow them) as its repr, so paths stay printable."""
    return k if isinstance(k, str) or type(k) is int else repr(k)


def _function_error(err: Exception, inp: Any) -> _Fail:
    if isinstance(err, AssertionError):
        return _error("assertion_error", f"Assertion failed, {err}", inp, {"error": err})
    return _error("value_error", f"Value error, {err}", inp, {"error": err})


def _expected(values: Iterable[Any]) -> str:
    shown = [repr(v.value if isinstance(v, enum.Enum) else v) for v in values]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]


# ------------------------------------------------------------------------------- declarations
def ConfigDict(**kw: Any) -> dict[str, Any]:
    """A model's settings: ``extra`` ("ignore" or "forbid"), ``frozen``, ``strict``,
    ``allow_inf_nan``."""
    unknown = set(kw) - {"extra", "frozen", "strict", "allow_inf_nan", "title"}
    if unknown:
        raise TypeError(f"ConfigDict: unsupported settings {sorted(unknown)}")
    return kw


_CONSTRAINTS = ("ge", "gt", "le", "lt", "min_length", "max_length", "pattern", "allow_inf_nan")


class FieldInfo:
    """A field's default, constraints and options (what ``Field(...)`` returns)."""

    __slots__ = (
        "alias",
        "annotation",
        "constraints",
        "default",
        "default_factory",
        "description",
        "discriminator",
        "exclude",
        "title",
    )

    def __init__(self, default: Any = _MISSING, *, default_factory: Callable[[], Any] | None
                 = None, alias: str | None = None, exclude: bool = False,
                 discriminator: str | None = None, description: str | None = None,
                 title: str | None = None, **constraints: Any) -> None:
        unknown = set(constraints) - set(_CONSTRAINTS)
        if unknown:
            raise TypeError(f"Field: unsupported options {sorted(unknown)}")
        self.default = default
        self.default_factory = default_factory
        self.alias = alias
        self.exclude = exclude
        self.discriminator = discriminator
        self.description = description
        self.title = title
        self.constraints = {k: v for k, v in constraints.items() if v is not None}
        self.annotation: Any = None

    def is_required(self) -> bool:
        return self.default is _MISSING and self.default_factory is None

    def get_default(self) -> Any:
        if self.default_factory is not None:
            return self.default_factory()
        return _copy_default(self.default)

    def __repr__(self) -> str:
        return (f"FieldInfo(annotation={self.annotation!r}, default={self.default!r}, "
                f"constraints={self.constraints!r})")


def Field(default: Any = _MISSING, **kw: Any) -> Any:
    return FieldInfo(default, **kw)


def _copy_default(value: Any) -> Any:
    if isinstance(value, (list, dict, set)):
        return copy.deepcopy(value)
    return value


class BeforeValidator:
    """``Annotated[T, BeforeValidator(f)]``: f(raw) runs before T's validation."""

    def __init__(self, func: Callable[[Any], Any]) -> None:
        self.func = func


class AfterValidator:
    """``Annotated[T, AfterValidator(f)]``: f(value) runs on the validated value."""

    def __init__(self, func: Callable[[Any], Any]) -> None:
        self.func = func


class Tag:
    """A union member's name for a ``Discriminator`` function."""

    def __init__(self, tag: str) -> None:
        self.tag = tag


class Discriminator:
    """``Annotated[A | B, Discriminator(f)]``: f(raw) names the member (its ``Tag``)."""

    def __init__(self, func: Callable[[Any], str | None]) -> None:
        self.func = func


class _Decorated:
    def __init__(self, func: Any, kind: str, mode: str, fields: tuple[str, ...] = ()) -> None:
        self.func, self.kind, self.mode, self.fields = func, kind, mode, fields


def field_validator(*fields: str, mode: Literal["before", "after"] = "after"
                    ) -> Callable[[Any], Any]:
    """A class method checking (and possibly changing) one or more fields' values."""
    def deco(func: Any) -> _Decorated:
        return _Decorated(func, "field", mode, fields)
    return deco


def model_validator(*, mode: Literal["before", "after"]) -> Callable[[Any], Any]:
    """``before``: a class method on the raw input; ``after``: a method on the built model."""
    def deco(func: Any) -> _Decorated:
        return _Decorated(func, "model", mode)
    return deco


# ------------------------------------------------------------------------------- type checks
Validator = Callable[[Any, bool], Any]      # (value, strict) -> value, or raises _Fail

_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})


def _v_any(v: Any, strict: bool) -> Any:
    return v


def _v_none(v: Any, strict: bool) -> Any:
    if v is None:
        return None
    raise _error("none_required", "Input should be None", v)


def _v_bool(v: Any, strict: bool) -> bool:
    if v is True or v is False:
        return v
    if not strict:
        if isinstance(v, str):
            s = v.strip().lower()
            if s in _TRUE:
                return True
            if s in _FALSE:
                return False
            raise _error("bool_parsing",
                         "Input should be a valid boolean, unable to interpret input", v)
        if isinstance(v, (int, float)):
            if v == 1:
                return True
            if v == 0:
                return False
            raise _error("bool_parsing",
                         "Input should be a valid boolean, unable to interpret input", v)
    raise _error("bool_type", "Input should be a valid boolean", v)


def _v_int(v: Any, strict: bool) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        return int(v)
    if strict:
        raise _error("int_type", "Input should be a valid integer", v)
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, float):
        if math.isfinite(v) and v == int(v):
            return int(v)
        if not math.isfinite(v):
            raise _error("finite_number", "Input should be a finite number", v)
        raise _error("int_from_float",
                     "Input should be a valid integer, got a number with a fractional part", v)
    if isinstance(v, str):
        s = v.strip()
        try:
            return int(s)
        except ValueError:
            pass
        try:
            f = float(s)
        except ValueError:
            f = math.nan
        if math.isfinite(f) and f == int(f) and re.fullmatch(r"[+-]?\d+\.0*", s):
            return int(f)
        raise _error("int_parsing",
                     "Input should be a valid integer, unable to parse string as an integer", v)
    raise _error("int_type", "Input should be a valid integer", v)


def _v_float(v: Any, strict: bool) -> float:
    if isinstance(v, float):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        try:
            return float(v)
        except OverflowError:            # 10**400: no float holds it
            raise _error("finite_number", "Input should be a finite number", v) from None
    if not strict:
        if isinstance(v, bool):
            return float(v)
        if isinstance(v, str):
            try:
                return float(v.strip())
            except ValueError:
                raise _error("float_parsing", "Input should be a valid number, unable to "
                             "parse string as a number", v) from None
    raise _error("float_type", "Input should be a valid number", v)


def _v_str(v: Any, strict: bool) -> str:
    if isinstance(v, str):
        return str(v) if not isinstance(v, enum.Enum) else v.value
    if not strict and isinstance(v, (bytes, bytearray)):
        try:
            return bytes(v).decode()
        except UnicodeDecodeError:
            raise _error("string_unicode", "Input should be a valid string, unable to parse "
                         "raw data as a unicode string", v) from None
    raise _error("string_type", "Input should be a valid string", v)


def _v_bytes(v: Any, strict: bool) -> bytes:
    if isinstance(v, bytes):
        return v
    if not strict and isinstance(v, (str, bytearray)):
        return v.encode() if isinstance(v, str) else bytes(v)
    raise _error("bytes_type", "Input should be a valid bytes", v)


def _iso(kind: type, parse: Callable[[str], Any], parsing: str, should_be: str,
         word: str) -> Validator:
    """An instance of `kind`, or (lax) its ISO 8601 text."""
    def check(v: Any, strict: bool) -> Any:
        if isinstance(v, kind):
            return v
        if isinstance(v, str) and not strict:
            try:
                return parse(v.strip())
            except ValueError as err:
                raise _error(parsing, f"Input should be {should_be}, {err}", v) from None
        raise _error(f"{word}_type", f"Input should be a valid {word}", v)
    return check


_v_time = _iso(dt.time, dt.time.fromisoformat, "time_parsing", "in a valid time format", "time")
_v_datetime = _iso(dt.datetime, lambda s: dt.datetime.fromisoformat(s.replace("Z", "+00:00")),
                   "datetime_from_date_parsing", "a valid datetime", "datetime")
_v_date_text = _iso(dt.date, dt.date.fromisoformat, "date_from_datetime_parsing",
                    "a valid date", "date")


def _v_date(v: Any, strict: bool) -> dt.date:
    if isinstance(v, dt.datetime):       # a datetime is a date too: only a whole day is one
        if v.time() == dt.time() and v.tzinfo is None:
            return v.date()
        raise _error("date_from_datetime_inexact", "Datetimes provided to dates should have "
                     "zero time - e.g. be exact dates", v)
    return cast(dt.date, _v_date_text(v, strict))


def _v_path(v: Any, strict: bool) -> Path:
    if isinstance(v, PurePath):
        return Path(v)
    if isinstance(v, str) and not strict:
        return Path(v)
    raise _error("path_type", "Input is not a valid path", v)


_SCALARS: dict[Any, tuple[Validator, str]] = {
    Any: (_v_any, "any"), object: (_v_any, "any"), type(None): (_v_none, "none"),
    bool: (_v_bool, "bool"), int: (_v_int, "int"), float: (_v_float, "float"),
    str: (_v_str, "str"), bytes: (_v_bytes, "bytes"), dt.date: (_v_date, "date"),
    dt.time: (_v_time, "time"), dt.datetime: (_v_datetime, "datetime"),
    Path: (_v_path, "path"),
}


def _v_enum(cls: type[enum.Enum]) -> Validator:
    members = list(cls)
    by_value = {m.value: m for m in members}
    expected = _expected(members)

    def check(v: Any, strict: bool) -> enum.Enum:
        if isinstance(v, cls):
            return v
        try:                       # by value, in strict mode too (JSON has no enums)
            return by_value[v]
        except (KeyError, TypeError):
            pass
        raise _error("enum", f"Input should be {expected}", v, {"expected": expected})
    return check


def _v_literal(values: tuple[Any, ...]) -> Validator:
    expected = _expected(values)
    allowed = {(type(x), x) for x in values}

    def check(v: Any, strict: bool) -> Any:
        try:
            if (type(v), v) in allowed:
                return v
        except TypeError:
            pass
        if isinstance(v, enum.Enum) and (type(v.value), v.value) in allowed:
            return v.value
        raise _error("literal_error", f"Input should be {expected}", v, {"expected": expected})
    return check


def _sequence(kind: type, item: Validator | None, label: str) -> Validator:
    """list / tuple[T, ...] / set / frozenset."""
    words: dict[type, str] = {list: "list", tuple: "tuple", set: "set", frozenset: "frozenset"}
    word = words[kind]
    accepted: tuple[type, ...] = (list, tuple, set, frozenset, type({}.keys()),
                                  type({}.values()))

    def check(v: Any, strict: bool) -> Any:
        # strict: the container itself (a list also for a tuple: JSON has no tuples)
        ok = isinstance(v, (list, tuple) if kind is tuple else kind) if strict else isinstance(
            v, accepted)
        if not ok:
            raise _error(f"{word}_type", f"Input should be a valid {word}", v)
        if item is None:
            return kind(v)
        out, errors = [], []
        for i, x in enumerate(v):
            try:
                out.append(item(x, strict))
            except _Fail as f:
                errors.extend(_prefix(f.errors, i))
        if errors:
            raise _Fail(errors)
        if kind is list:
            return out
        try:
            return kind(out)
        except TypeError:              # a set of mappings: items that cannot be hashed
            raise _error(f"{word}_type", f"Input should be a valid {word}, with items "
                         "that can be hashed", v) from None
    return check


def _fixed_tuple(items: list[Validator]) -> Validator:
    def check(v: Any, strict: bool) -> tuple[Any, ...]:
        if not isinstance(v, (list, tuple)):
            raise _error("tuple_type", "Input should be a valid tuple", v)
        if len(v) != len(items):
            raise _error("too_long" if len(v) > len(items) else "too_short",
                         f"Tuple should have {len(items)} items after validation, not {len(v)}",
                         v)
        out, errors = [], []
        for i, (x, item) in enumerate(zip(v, items, strict=True)):
            try:
                out.append(item(x, strict))
            except _Fail as f:
                errors.extend(_prefix(f.errors, i))
        if errors:
            raise _Fail(errors)
        return tuple(out)
    return check


def _mapping(key: Validator, value: Validator) -> Validator:
    def check(v: Any, strict: bool) -> dict[Any, Any]:
        if not isinstance(v, Mapping):
            raise _error("dict_type", "Input should be a valid dictionary", v)
        out, errors = {}, []
        for k, x in v.items():
            try:
                kk = key(k, strict)
            except _Fail as f:
                errors.extend(_prefix(f.errors, _key(k), "[key]"))
                continue
            try:
                out[kk] = value(x, strict)
            except _Fail as f:
                errors.extend(_prefix(f.errors, _key(k)))
        if errors:
            raise _Fail(errors)
        return out
    return check


def _nullable(inner: Validator) -> Validator:
    def check(v: Any, strict: bool) -> Any:
        return None if v is None else inner(v, strict)
    return check


def _smart_union(members: list[tuple[Validator, str]]) -> Validator:
    """Each member strictly first (the first exact match wins), then laxly in order."""
    def check(v: Any, strict: bool) -> Any:
        for member, _label in members:
            try:
                return member(v, True)
            except _Fail:
                pass
        if strict:
            errors = []
            for member, label in members:
                try:
                    member(v, True)
                except _Fail as f:
                    errors.extend(_prefix(f.errors, label))
            raise _Fail(errors)
        errors = []
        for member, label in members:
            try:
                return member(v, False)
            except _Fail as f:
                errors.extend(_prefix(f.errors, label))
        raise _Fail(errors)
    return check


def _tagged_union(choose: Callable[[Any], Any], members: dict[Any, Validator],
                  discriminator: str) -> Validator:
    expected = ", ".join(repr(t) for t in members)

    def check(v: Any, strict: bool) -> Any:
        tag = choose(v)
        if tag is _MISSING:
            raise _error("model_attributes_type", "Input should be a valid dictionary or "
                         "object to extract fields from", v)
        if tag is None:
            raise _error("union_tag_not_found", "Unable to extract tag using discriminator "
                         f"{discriminator}", v, {"discriminator": discriminator})
        try:
            member = members[tag]
        except (KeyError, TypeError):
            raise _error("union_tag_invalid", f"Input tag {str(tag)!r} found using "
                         f"{discriminator} does not match any of the expected tags: {expected}",
                         v, {"discriminator": discriminator, "tag": str(tag),
                             "expected_tags": expected}) from None
        try:
            return member(v, strict)
        except _Fail as f:
            raise _Fail(_prefix(f.errors, str(tag))) from None
    return check


def _constrained(inner: Validator, c: dict[str, Any], label: str) -> Validator:
    ge, gt, le, lt = c.get("ge"), c.get("gt"), c.get("le"), c.get("lt")
    min_len, max_len = c.get("min_length"), c.get("max_length")
    pattern = c.get("pattern")
    regex = re.compile(pattern) if pattern is not None else None
    finite = c.get("allow_inf_nan") is False

    def check(raw: Any, strict: bool) -> Any:
        v = inner(raw, strict)           # errors name the input as given (150, not 150.0)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if finite and isinstance(v, float) and not math.isfinite(v):
                raise _error("finite_number", "Input should be a finite number", raw)
            if ge is not None and not v >= ge:
                raise _error("greater_than_equal",
                             f"Input should be greater than or equal to {ge}", raw, {"ge": ge})
            if gt is not None and not v > gt:
                raise _error("greater_than", f"Input should be greater than {gt}", raw,
                             {"gt": gt})
            if le is not None and not v <= le:
                raise _error("less_than_equal", f"Input should be less than or equal to {le}",
                             raw, {"le": le})
            if lt is not None and not v < lt:
                raise _error("less_than", f"Input should be less than {lt}", raw, {"lt": lt})
        elif isinstance(v, str):
            if min_len is not None and len(v) < min_len:
                raise _error("string_too_short", f"String should have at least {min_len} "
                             f"character{'s' if min_len != 1 else ''}", raw,
                             {"min_length": min_len})
            if max_len is not None and len(v) > max_len:
                raise _error("string_too_long", f"String should have at most {max_len} "
                             f"character{'s' if max_len != 1 else ''}", raw,
                             {"max_length": max_len})
            if regex is not None and not regex.search(v):
                raise _error("string_pattern_mismatch", f"String should match pattern "
                             f"'{pattern}'", raw, {"pattern": pattern})
        elif isinstance(v, (list, tuple, set, frozenset, dict)):
            kind = {list: "List", tuple: "Tuple", set: "Set", frozenset: "Frozenset",
                    dict: "Dictionary"}.get(type(v), "Value")
            n = len(v)
            if min_len is not None and n < min_len:
                raise _error("too_short", f"{kind} should have at least {min_len} "
                             f"item{'s' if min_len != 1 else ''} after validation, not {n}", raw,
                             {"field_type": kind, "min_length": min_len, "actual_length": n})
            if max_len is not None and n > max_len:
                raise _error("too_long", f"{kind} should have at most {max_len} "
                             f"item{'s' if max_len != 1 else ''} after validation, not {n}", raw,
                             {"field_type": kind, "max_length": max_len, "actual_length": n})
        return v
    return check


def _before(inner: Validator, func: Callable[[Any], Any]) -> Validator:
    def check(v: Any, strict: bool) -> Any:
        try:
            v = func(v)
        except (ValueError, AssertionError) as err:
            raise _function_error(err, v) from None
        return inner(v, strict)
    return check


def _after(inner: Validator, func: Callable[[Any], Any]) -> Validator:
    def check(v: Any, strict: bool) -> Any:
        v = inner(v, strict)
        try:
            return func(v)
        except (ValueError, AssertionError) as err:
            raise _function_error(err, v) from None
    return check


class _Compiled(typing.NamedTuple):
    check: Validator
    label: str           # how a union names this member in an error's path
    tag: str | None      # its Tag, for a Discriminator function


def _compile(tp: Any, meta: list[Any], owner: str) -> _Compiled:
    """A validator for annotation ``tp`` with extra metadata (FieldInfo, BeforeValidator...)."""
    if get_origin(tp) is Annotated:
        base, *extra = get_args(tp)
        return _compile(base, [*extra, *meta], owner)
    fields = [m for m in meta if isinstance(m, FieldInfo)]
    constraints: dict[str, Any] = {}
    for f in fields:
        constraints.update(f.constraints)
    discriminator = next((f.discriminator for f in fields if f.discriminator), None)
    func_disc = next((m for m in meta if isinstance(m, Discriminator)), None)
    tag = next((m.tag for m in meta if isinstance(m, Tag)), None)
    check, label = _compile_base(tp, discriminator, func_disc, owner)
    if constraints:
        check = _constrained(check, constraints, label)
        if label == "str":
            label = "constrained-str"
    for m in meta:        # in order: later Before validators run first, as in pydantic
        if isinstance(m, BeforeValidator):
            check = _before(check, m.func)
            label = f"function-before[{m.func.__name__}(), {label}]"
        elif isinstance(m, AfterValidator):
            check = _after(check, m.func)
            label = f"function-after[{m.func.__name__}(), {label}]"
    return _Compiled(check, label, tag)


def _compile_base(tp: Any, discriminator: str | None, func_disc: Discriminator | None,
                  owner: str) -> tuple[Validator, str]:
    if tp in _SCALARS:
        return _SCALARS[tp]
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        nullable = len(members) < len(args)
        if func_disc is not None:
            compiled = [_compile(a, [], owner) for a in members]
            table = {c.tag: c.check for c in compiled}
            fn = func_disc.func
            check = _tagged_union(fn, table, f"{fn.__name__}()")
        elif discriminator is not None:
            check = _discriminated(members, discriminator, owner)
        elif len(members) == 1:
            check = _compile(members[0], [], owner).check
        else:
            compiled = [_compile(a, [], owner) for a in members]
            check = _smart_union([(c.check, c.label) for c in compiled])
        label = " | ".join(_compile(a, [], owner).label for a in members)
        return (_nullable(check) if nullable else check), (
            f"nullable[{label}]" if nullable else label)
    if origin is Literal:
        return _v_literal(args), f"literal[{','.join(repr(a) for a in args)}]"
    if inspect.isclass(tp) and issubclass(tp, BaseModel):
        return tp._check, tp.__name__
    if inspect.isclass(tp) and issubclass(tp, enum.Enum):
        return _v_enum(tp), tp.__name__
    if tp in (list, tuple, set, frozenset):
        return _sequence(tp, None, tp.__name__), tp.__name__
    if tp is dict:
        return _mapping(_v_any, _v_any), "dict[any,any]"
    if origin in (list, set, frozenset):
        item = _compile(args[0], [], owner)
        return _sequence(origin, item.check, origin.__name__), f"{origin.__name__}[{item.label}]"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            item = _compile(args[0], [], owner)
            return _sequence(tuple, item.check, "tuple"), f"tuple[{item.label}, ...]"
        items = [_compile(a, [], owner) for a in args]
        return _fixed_tuple([i.check for i in items]), "tuple"
    if origin is dict:
        k, v = (_compile(a, [], owner) for a in args)
        return _mapping(k.check, v.check), f"dict[{k.label},{v.label}]"
    raise TypeError(f"{owner}: the type {tp!r} is not supported by policies.validation")


def _discriminated(members: list[Any], key: str, owner: str) -> Validator:
    table: dict[Any, Validator] = {}
    for m in members:
        compiled = _compile(m, [], owner)
        model = m
        while get_origin(model) is Annotated:
            model = get_args(model)[0]
        if not (inspect.isclass(model) and issubclass(model, BaseModel)):
            raise TypeError(f"{owner}: discriminated union member {m!r} is not a model")
        info = model.model_fields[key]
        for value in get_args(info.annotation):
            table[value.value if isinstance(value, enum.Enum) else value] = compiled.check

    def choose(v: Any) -> Any:
        if isinstance(v, BaseModel):
            return getattr(v, key, None)
        if not isinstance(v, Mapping):
            return _MISSING
        return v.get(key)
    return _tagged_union(choose, table, repr(key))


# ------------------------------------------------------------------------------------ models
class _FieldCheck(typing.NamedTuple):
    name: str
    key: str             # the input key (the alias, if any)
    info: FieldInfo
    check: Validator
    before: tuple[Callable[..., Any], ...]
    after: tuple[Callable[..., Any], ...]


class _Info:
    """What a field validator taking two arguments gets: the fields validated before it."""

    def __init__(self, data: dict[str, Any], field_name: str) -> None:
        self.data = data
        self.field_name = field_name


def _call_field_validator(func: Callable[..., Any], v: Any, data: dict[str, Any],
                          name: str) -> Any:
    if _arity(func) >= 2:
        return func(v, _Info(data, name))
    return func(v)


def _arity(func: Callable[..., Any]) -> int:
    try:
        return len(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return 1


class _ClassProperty:
    def __init__(self, getter: Callable[[type[Any]], Any]) -> None:
        self.getter = getter

    def __get__(self, obj: Any, owner: type[Any]) -> Any:
        return self.getter(owner)


class BaseModel:
    """A model: annotated fields, validated on construction (``Model(**data)``) or by
    ``Model.model_validate(data)``; frozen models refuse assignment and hash by value."""

    model_config: ClassVar[dict[str, Any]] = {}
    __edgegw_defaults__: ClassVar[dict[str, Any]]
    __edgegw_decorated__: ClassVar[dict[str, _Decorated]]
    __edgegw_compiled__: ClassVar[tuple[Any, ...] | None]
    __edgegw_set__: set[str]                  # the fields the input gave

    __slots__ = ("__dict__", "__edgegw_set__")

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        config: dict[str, Any] = {}
        for base in reversed(cls.__mro__[1:]):
            config.update(base.__dict__.get("model_config", {}))
        config.update(cls.__dict__.get("model_config", {}))
        cls.model_config = config
        own = inspect.get_annotations(cls)
        defaults: dict[str, Any] = {}
        for name, annotation in own.items():
            if name.startswith("_") or name == "model_config" or "ClassVar" in str(annotation):
                continue
            if name in cls.__dict__:
                defaults[name] = cls.__dict__[name]
                delattr(cls, name)
            else:
                defaults[name] = _MISSING        # annotated again without one: required
        cls.__edgegw_defaults__ = defaults
        decorated: dict[str, _Decorated] = {}
        for name, value in list(cls.__dict__.items()):
            if isinstance(value, _Decorated):
                decorated[name] = value
                setattr(cls, name, value.func)
        cls.__edgegw_decorated__ = decorated
        cls.__edgegw_compiled__ = None

    # ---------------------------------------------------------------------- compilation
    @classmethod
    def _compiled(cls) -> tuple[Any, ...]:
        done = cls.__dict__.get("__edgegw_compiled__")
        if done is not None:
            return cast(tuple[Any, ...], done)
        hints = typing.get_type_hints(cls, include_extras=True)
        order: list[str] = []
        defaults: dict[str, Any] = {}
        decorated: dict[str, _Decorated] = {}
        for base in reversed(cls.__mro__):
            if not (isinstance(base, type) and issubclass(base, BaseModel)) or base is BaseModel:
                continue
            for name in inspect.get_annotations(base):
                if name.startswith("_") or name == "model_config" or name in order:
                    continue
                if get_origin(hints.get(name)) is ClassVar or hints.get(name) is ClassVar:
                    continue
                order.append(name)
            defaults.update(base.__dict__.get("__edgegw_defaults__", {}))
            decorated.update(base.__dict__.get("__edgegw_decorated__", {}))
        strict_cfg = bool(cls.model_config.get("strict"))
        finite = cls.model_config.get("allow_inf_nan") is False
        fields: dict[str, FieldInfo] = {}
        checks: list[_FieldCheck] = []
        for name in order:
            raw = defaults.get(name, _MISSING)
            info = raw if isinstance(raw, FieldInfo) else FieldInfo(raw)
            info.annotation = hints[name]
            if (type(info.default) is int and _is_float(hints[name])
                    and info.default_factory is None):
                info.default = float(info.default)      # as the field's own values
            meta: list[Any] = [info]
            if finite:
                meta.append(FieldInfo(allow_inf_nan=False))
            compiled = _compile(hints[name], meta, f"{cls.__name__}.{name}")
            before = tuple(getattr(cls, attr) for attr, d in reversed(decorated.items())
                           if d.kind == "field" and d.mode == "before" and name in d.fields)
            after = tuple(getattr(cls, attr) for attr, d in decorated.items()
                          if d.kind == "field" and d.mode == "after" and name in d.fields)
            fields[name] = info
            checks.append(_FieldCheck(name, info.alias or name, info, compiled.check,
                                      before, after))
        for attr, d in decorated.items():
            for f in d.fields:
                if f not in fields:
                    raise TypeError(f"{cls.__name__}.{attr}: validator for unknown field {f!r}")
        model_before = tuple(getattr(cls, attr) for attr, d in reversed(decorated.items())
                             if d.kind == "model" and d.mode == "before")
        model_after = tuple(attr for attr, d in decorated.items()
                            if d.kind == "model" and d.mode == "after")
        keys = frozenset(c.key for c in checks)
        done = (fields, tuple(checks), model_before, model_after, keys, strict_cfg)
        cls.__edgegw_compiled__ = done
        return done

    @classmethod
    def _check(cls, v: Any, strict: bool) -> Any:
        _fields, checks, model_before, model_after, keys, strict_cfg = cls._compiled()
        if isinstance(v, cls):
            return v
        strict = strict or strict_cfg
        raw = v
        for func in model_before:
            try:
                v = func(v)
            except (ValueError, AssertionError) as err:
                raise _function_error(err, v) from None
        if isinstance(v, cls):
            return v
        if not isinstance(v, Mapping):
            raise _error("model_type", f"Input should be a valid dictionary or instance of "
                         f"{cls.__name__}", v, {"class_name": cls.__name__})
        values: dict[str, Any] = {}
        given: set[str] = set()
        errors: list[dict[str, Any]] = []
        for c in checks:
            if c.key in v:
                x = v[c.key]
                given.add(c.name)
                try:
                    for func in c.before:
                        try:
                            x = _call_field_validator(func, x, values, c.name)
                        except (ValueError, AssertionError) as err:
                            raise _function_error(err, x) from None
                    x = c.check(x, strict)
                    for func in c.after:
                        try:
                            x = _call_field_validator(func, x, values, c.name)
                        except (ValueError, AssertionError) as err:
                            raise _function_error(err, x) from None
                except _Fail as f:
                    errors.extend(_prefix(f.errors, c.key))
                    continue
                values[c.name] = x
            elif c.info.is_required():
                errors.append({"type": "missing", "loc": (c.key,), "msg": "Field required",
                               "input": v})
            else:
                values[c.name] = c.info.get_default()
        extra = cls.model_config.get("extra", "ignore")
        if extra == "forbid":
            for k in v:
                if k not in keys:
                    errors.append({"type": "extra_forbidden", "loc": (_key(k),),
                                   "msg": "Extra inputs are not permitted", "input": v[k]})
        if errors:
            raise _Fail(errors)
        obj = object.__new__(cls)
        object.__setattr__(obj, "__dict__", values)
        object.__setattr__(obj, "__edgegw_set__", given)
        for attr in model_after:
            try:
                out = getattr(obj, attr)()
            except (ValueError, AssertionError) as err:
                raise _function_error(err, raw) from None
            if out is not None:
                obj = out
        return obj

    # ------------------------------------------------------------------------------ API
    def __init__(self, **data: Any) -> None:
        try:
            built = type(self)._check(data, False)
        except _Fail as f:
            raise ValidationError(type(self).__name__, f.errors) from None
        object.__setattr__(self, "__dict__", built.__dict__)
        object.__setattr__(self, "__edgegw_set__", built.__edgegw_set__)

    @classmethod
    def model_validate(cls, obj: Any, *, strict: bool | None = None) -> Self:
        try:
            return cast(Self, cls._check(obj, bool(strict)))
        except _Fail as f:
            raise ValidationError(cls.__name__, f.errors) from None

    model_fields = _ClassProperty(lambda cls: cls._compiled()[0])

    @property
    def model_fields_set(self) -> set[str]:
        return set(self.__edgegw_set__)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False
                   ) -> Self:
        new = object.__new__(type(self))
        values = copy.deepcopy(self.__dict__) if deep else dict(self.__dict__)
        given = set(self.__edgegw_set__)
        if update:
            values.update(update)
            given.update(update)
        object.__setattr__(new, "__dict__", values)
        object.__setattr__(new, "__edgegw_set__", given)
        return new

    def model_dump(self, *, mode: Literal["python", "json"] = "python",
                   exclude: set[str] | None = None, exclude_none: bool = False,
                   exclude_defaults: bool = False, by_alias: bool = False) -> dict[str, Any]:
        fields = type(self).model_fields
        out: dict[str, Any] = {}
        for name, info in fields.items():
            if info.exclude or (exclude and name in exclude):
                continue
            value = self.__dict__[name]
            if exclude_none and value is None:
                continue
            if exclude_defaults and not info.is_required() and value == info.get_default():
                continue
            key = info.alias if by_alias and info.alias else name
            out[key] = _dump(value, mode == "json", exclude_none, exclude_defaults, by_alias)
        return out

    def model_dump_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), separators=(",", ":"),
                          ensure_ascii=False, allow_nan=False)

    @classmethod
    def model_json_schema(cls) -> dict[str, Any]:
        defs: dict[str, Any] = {}
        top = _model_schema(cls, defs)
        if defs:
            top["$defs"] = dict(sorted(defs.items()))
        return top

    def __setattr__(self, name: str, value: Any) -> None:
        if type(self).model_config.get("frozen"):
            raise ValidationError(type(self).__name__, [{
                "type": "frozen_instance", "loc": (name,), "msg": "Instance is frozen",
                "input": value}])
        self.__dict__[name] = value

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__}: fields cannot be deleted")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        names = type(self).model_fields
        return all(self.__dict__[n] == other.__dict__[n] for n in names)

    def __hash__(self) -> int:
        if not type(self).model_config.get("frozen"):
            raise TypeError(f"unhashable type: {type(self).__name__!r}")
        return hash((type(self), *(self.__dict__[n] for n in type(self).model_fields)))

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={self.__dict__[n]!r}" for n in type(self).model_fields)
        return f"{type(self).__name__}({inner})"

    def __copy__(self) -> Any:
        return self.model_copy()

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return self.model_copy(deep=True)

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), dict(self.__dict__), set(self.__edgegw_set__)))


def _is_float(tp: Any) -> bool:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    if get_origin(tp) in (Union, types.UnionType):
        return float in get_args(tp) and int not in get_args(tp)
    return tp is float


def _rebuild(cls: type[BaseModel], values: dict[str, Any], given: set[str]) -> BaseModel:
    obj = object.__new__(cls)
    object.__setattr__(obj, "__dict__", values)
    object.__setattr__(obj, "__edgegw_set__", given)
    return obj


def _dump(v: Any, js: bool, exclude_none: bool, exclude_defaults: bool, by_alias: bool) -> Any:
    if isinstance(v, BaseModel):
        return v.model_dump(mode="json" if js else "python", exclude_none=exclude_none,
                            exclude_defaults=exclude_defaults, by_alias=by_alias)
    if isinstance(v, dict):
        return {(_dump(k, js, exclude_none, exclude_defaults, by_alias) if js else k):
                _dump(x, js, exclude_none, exclude_defaults, by_alias) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        items = [_dump(x, js, exclude_none, exclude_defaults, by_alias) for x in v]
        return items if js or isinstance(v, list) else type(v)(items)
    if not js:
        return v
    if isinstance(v, enum.Enum):
        return _dump(v.value, js, exclude_none, exclude_defaults, by_alias)
    if isinstance(v, dt.datetime):
        s = v.isoformat()
        return s[:-6] + "Z" if s.endswith("+00:00") else s
    if isinstance(v, (dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, PurePath):
        return str(v)
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    return v


# ------------------------------------------------------------------------------ JSON schema
def _model_schema(cls: type[BaseModel], defs: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = {}
    required: list[str] = []
    for name, info in cls.model_fields.items():
        if info.exclude:
            continue
        key = info.alias or name
        s = _type_schema(info.annotation, [info], defs)
        if info.description:
            s["description"] = info.description
        s.setdefault("title", key.replace("_", " ").title())
        if info.is_required():
            required.append(key)
        elif info.default_factory is None:
            s["default"] = _dump(info.default, True, False, False, True)
        props[key] = s
    out: dict[str, Any] = {"title": cls.__name__, "type": "object", "properties": props}
    doc = cls.__dict__.get("__doc__")
    if doc:
        out["description"] = inspect.cleandoc(doc)
    if required:
        out["required"] = required
    if cls.model_config.get("extra") == "forbid":
        out["additionalProperties"] = False
    return out


def _ref(cls: type[BaseModel], defs: dict[str, Any]) -> dict[str, Any]:
    if cls.__name__ not in defs:
        defs[cls.__name__] = {}          # a placeholder while recursing
        defs[cls.__name__] = _model_schema(cls, defs)
    return {"$ref": f"#/$defs/{cls.__name__}"}


_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string",
               bytes: "string", type(None): "null"}


def _type_schema(tp: Any, meta: list[Any], defs: dict[str, Any]) -> dict[str, Any]:
    if get_origin(tp) is Annotated:
        base, *extra = get_args(tp)
        return _type_schema(base, [*extra, *meta], defs)
    constraints: dict[str, Any] = {}
    discriminator = None
    for m in meta:
        if isinstance(m, FieldInfo):
            constraints.update(m.constraints)
            discriminator = discriminator or m.discriminator
    s = _base_schema(tp, discriminator, defs)
    names = {"ge": "minimum", "gt": "exclusiveMinimum", "le": "maximum",
             "lt": "exclusiveMaximum", "pattern": "pattern"}
    target = s
    if "anyOf" in s and any(x.get("type") == "null" for x in s["anyOf"]) and len(s["anyOf"]) == 2:
        target = next(x for x in s["anyOf"] if x.get("type") != "null")
    for k, v in constraints.items():
        if k in names:
            target[names[k]] = v
        elif k in ("min_length", "max_length"):
            word = "Length" if target.get("type") == "string" else (
                "Properties" if target.get("type") == "object" else "Items")
            target[("min" if k == "min_length" else "max") + word] = v
    return s


def _base_schema(tp: Any, discriminator: str | None, defs: dict[str, Any]) -> dict[str, Any]:
    if tp in _JSON_TYPES:
        return {"type": _JSON_TYPES[tp]}
    if tp is Any or tp is object:
        return {}
    formats = {dt.date: "date", dt.time: "time", dt.datetime: "date-time", Path: "path"}
    if tp in formats:
        return {"type": "string", "format": formats[tp]}
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        members = [_type_schema(a, [], defs) for a in args]
        out: dict[str, Any] = {"anyOf" if discriminator is None else "oneOf": members}
        if discriminator is not None:
            mapping = {}
            for a in args:
                model = get_args(a)[0] if get_origin(a) is Annotated else a
                for tag in get_args(model.model_fields[discriminator].annotation):
                    mapping[getattr(tag, "value", tag)] = f"#/$defs/{model.__name__}"
            out["discriminator"] = {"propertyName": discriminator, "mapping": mapping}
        return out
    if origin is Literal:
        values = [a.value if isinstance(a, enum.Enum) else a for a in args]
        return _typed({"enum": values} if len(values) > 1 else {"const": values[0]}, values)
    if inspect.isclass(tp) and issubclass(tp, BaseModel):
        return _ref(tp, defs)
    if inspect.isclass(tp) and issubclass(tp, enum.Enum):
        values = [m.value for m in tp]
        defs.setdefault(tp.__name__, _typed({"title": tp.__name__, "enum": values}, values))
        return {"$ref": f"#/$defs/{tp.__name__}"}
    if origin in (list, set, frozenset) or tp in (list, set, frozenset, tuple):
        out = {"type": "array"}
        if args:
            out["items"] = _type_schema(args[0], [], defs)
        if origin in (set, frozenset):
            out["uniqueItems"] = True
        return out
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": _type_schema(args[0], [], defs)}
        return {"type": "array", "prefixItems": [_type_schema(a, [], defs) for a in args],
                "minItems": len(args), "maxItems": len(args)}
    if origin is dict or tp is dict:
        out = {"type": "object"}
        if args and args[1] is not Any:
            out["additionalProperties"] = _type_schema(args[1], [], defs)
        return out
    return {}


def _typed(schema: dict[str, Any], values: list[Any]) -> dict[str, Any]:
    kinds = {_JSON_TYPES.get(type(v)) for v in values}
    if len(kinds) == 1 and None not in kinds:
        schema["type"] = kinds.pop()
    return schema
