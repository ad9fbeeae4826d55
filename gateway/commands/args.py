"""Typed arguments of each command (DESIGN.md 4.5), validated strictly: a string is not a number,
``true`` is not an integer, unknown fields are refused. :func:`parse_args` turns a validation
failure into one message naming each bad field and what it should be."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from gateway.commands.codes import CommandFailure, ErrorCode
from policies.common import format_path
from policies.validation import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "EPOCH_MS_MAX",
    "EPOCH_MS_MIN",
    "MAX_OVERRIDE_S",
    "CheckArgs",
    "ClearOverrideArgs",
    "NoArgs",
    "PointArgs",
    "SetOverrideArgs",
    "SetRulesArgs",
    "SyncTimeArgs",
    "WritePointArgs",
    "parse_args",
]

EPOCH_MS_MIN = 1_577_836_800_000      # 2020-01-01: an earlier "now" is a wrong clock
EPOCH_MS_MAX = 4_102_444_800_000      # 2100-01-01
MAX_OVERRIDE_S = 31 * 86_400          # an override longer than a month is a mistake
Name = Annotated[str, Field(min_length=1, max_length=128)]


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class NoArgs(_Args):
    """ping, get_state, get_rules."""


class SetOverrideArgs(_Args):
    group: Name                                          # "*" for every group
    level: float = Field(ge=0, le=100)                   # percent
    duration_s: float | None = Field(default=None, gt=0, le=MAX_OVERRIDE_S)   # None: until cleared
    # below the cabinet switch's default 1000: a remote command never outranks a technician
    priority: int = Field(default=50, ge=0, le=999)
    source: Name = "platform"                            # who asked (extension; for clearing)


class ClearOverrideArgs(_Args):
    group: Name
    source: Name | None = None                           # None: every command override


class SetRulesArgs(_Args):
    """``{"lighting": {...}}``, ``{"alerts": {...}}`` or both (both or neither take effect)."""

    lighting: dict[str, Any] | None = None
    alerts: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _something(self) -> SetRulesArgs:
        if self.lighting is None and self.alerts is None:
            raise ValueError("give `lighting`, `alerts` or both (the rules as in the config)")
        return self


class PointArgs(_Args):
    device: Name
    point: Name


class WritePointArgs(PointArgs):
    value: bool | int | float | Annotated[str, Field(max_length=256)]


class CheckArgs(_Args):
    """``check`` (local only: the technician's page): the commissioning checklist inside the
    agent, with the lamp test when asked."""

    lamp_test: bool = False
    settle: float = Field(default=2.0, ge=0, le=30)     # seconds a driver gets per level


class SetConfigArgs(_Args):
    """``set_config``: a whole config, as YAML text or as an object (docs/configuration.md);
    ``probation_s``: how long it has to come up healthy (default
    ``commands.config_probation_s``)."""

    config: dict[str, Any] | Annotated[str, Field(min_length=1, max_length=1_000_000)]
    probation_s: float | None = Field(default=None, ge=5, le=3600)


class SyncTimeArgs(_Args):
    epoch_ms: int = Field(ge=EPOCH_MS_MIN, le=EPOCH_MS_MAX)


M = TypeVar("M", bound="_Args")

_TYPE_WORDS = {
    "bool_type": "true or false", "int_type": "an integer", "float_type": "a number",
    "string_type": "a string", "dict_type": "an object", "none_required": "null",
    "int_from_float": "an integer",
}


def _field(loc: tuple[int | str, ...]) -> str:
    return format_path(loc)[:200]


def _describe(err: ValidationError, fields: set[str]) -> str:
    """``level: must be <= 100; value: must be true or false, an integer, a number or a
    string``. Union branches (``value.bool``...) are folded into one alternative list."""
    by_field: dict[str, list[dict[str, str]]] = {}
    for e in err.errors():
        loc = e["loc"]
        # a union's branch names (bool, int, float, str...) are not fields: cut them off
        top = loc[:1] if loc and loc[0] in fields else loc
        by_field.setdefault(_field(top) or "args", []).append({"type": e["type"],
                                                               "msg": e["msg"]})
    parts = []
    for name, errs in by_field.items():
        if len(errs) > 1 and all(e["type"] in _TYPE_WORDS for e in errs):
            words = list(dict.fromkeys(_TYPE_WORDS[e["type"]] for e in errs))
            alts = ", ".join(words[:-1]) + " or " + words[-1]
            parts.append(f"{name}: must be {alts}")
            continue
        # a union's branch of the input's own type says what is wrong with it (a string too
        # long), not the others' "must be true or false"
        first = next((e for e in errs if e["type"] not in _TYPE_WORDS), errs[0])
        if first["type"] == "missing":
            parts.append(f"{name}: required")
        elif first["type"] == "extra_forbidden":
            parts.append(f"{name}: unexpected (takes {', '.join(sorted(fields)) or 'none'})")
        elif first["type"] in _TYPE_WORDS:
            parts.append(f"{name}: must be {_TYPE_WORDS[first['type']]}")
        else:
            parts.append(f"{name}: {first['msg'].removeprefix('Value error, ').lower()}")
    return "; ".join(parts)


def parse_args(model: type[M], cmd: str, args: Mapping[str, Any]) -> M:
    """Validate ``args`` for ``cmd``; raises CommandFailure(bad_args) naming every bad field."""
    try:
        return model.model_validate(dict(args))
    except ValidationError as err:
        fields = set(model.model_fields)
        hint = ""
        if model is SetRulesArgs and not {"lighting", "alerts"} & set(args) and args:
            hint = " (send the rules as {\"lighting\": {...}, \"alerts\": {...}})"
        raise CommandFailure(ErrorCode.BAD_ARGS,
                             f"{cmd}: {_describe(err, fields)}{hint}") from None
