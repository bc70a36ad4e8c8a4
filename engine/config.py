"""Small checks shared by every configurable class, and the one way a spec becomes an instance.

Each check returns the cleaned value or raises :class:`SpecError` naming the field.
Registries map a class's ``name`` to the class, filled by ``__init_subclass__``, so
adding an activation, loss or optimizer is one class and nothing else.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import Loc, SpecError


def check_int(name: str, value: Any, *, minimum: int = 1, maximum: int | None = None) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (isinstance(value, float) and not value.is_integer())
    ):
        raise SpecError(name, f"must be an integer; received {name}={value!r}")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise SpecError(name, f"must be {bound}; received {name}={value}")
    return value


def check_float(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError(name, f"must be a finite number; received {name}={value!r}")
    value = float(value)
    too_low = minimum is not None and (value < minimum if min_inclusive else value <= minimum)
    too_high = maximum is not None and (value > maximum if max_inclusive else value >= maximum)
    if too_low or too_high:
        low = "" if minimum is None else f"{'>=' if min_inclusive else '>'} {minimum}"
        high = "" if maximum is None else f"{'<=' if max_inclusive else '<'} {maximum}"
        raise SpecError(name, f"must be {' and '.join(p for p in (low, high) if p)}; received {name}={value}")
    return value


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SpecError(name, f"must be true or false; received {name}={value!r}")
    return value


def check_choice(name: str | Loc, value: Any, choices: Iterable[str]) -> str:
    choices = list(choices)
    if value not in choices:
        raise SpecError(name, f"unknown {value!r}; expected one of {', '.join(map(repr, choices))}")
    return value


def check_keys(config: Mapping[str, Any], allowed: Iterable[str], required: Iterable[str] = ()) -> None:
    """Unknown keys are errors, so a typo in a spec never turns into a silent default."""
    if not isinstance(config, Mapping):
        raise SpecError((), f"must be an object; received {config!r}")
    allowed = list(allowed)
    for key in config:
        if key not in allowed:
            raise SpecError(str(key), f"unknown field; expected one of {', '.join(map(repr, allowed))}")
    for key in required:
        if key not in config:
            raise SpecError(key, "field required")


def from_spec(spec: Any, registry: Mapping[str, type]):
    """An instance from ``"name"`` or ``{"name": ..., **params}``, looked up in ``registry``.

    Unknown names and unknown parameters raise SpecError listing what is allowed.
    """
    if isinstance(spec, str):
        name, params = spec, {}
    elif isinstance(spec, Mapping):
        if "name" not in spec:
            raise SpecError("name", "field required")
        name, params = spec["name"], {k: v for k, v in spec.items() if k != "name"}
    else:
        raise SpecError((), f"must be a name or an object with a name; received {spec!r}")
    cls = registry[check_choice("name" if isinstance(spec, Mapping) else (), name, registry)]
    return construct(cls, params)


def construct(cls: type, params: Mapping[str, Any]):
    """``cls(**params)`` after checking the keys against the constructor: unknown ones and missing
    required ones raise SpecError. ``**kwargs`` is followed into the base classes' constructors."""
    accepted: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in klass.__dict__:
            continue
        signature = inspect.signature(klass.__init__).parameters.values()
        for p in signature:
            named = p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
            if named and not p.name.startswith("_"):
                accepted.setdefault(p.name, p)
        if not any(p.kind is p.VAR_KEYWORD for p in signature):
            break
    required = [name for name, p in accepted.items() if p.default is p.empty]
    check_keys(params, accepted, required)
    return cls(**params)
