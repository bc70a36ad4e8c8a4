"""Declared parameters: every configurable class states each of its parameters once.

A parameter is a class attribute holding a :class:`Param`: what values it takes (a
constraint), its default, its Keras name where Keras has one, and what it means::

    class Dropout(Layer):
        type = "dropout"
        rate = Param(Float(ge=0.0, lt=1.0), keras=True, doc="fraction of the inputs zeroed while training")

Everything else is derived from the declarations, so none of it is written twice:

- the constructor (:class:`Configurable`): ``Dropout(rate=0.2)`` checks every value, rejects
  unknown and missing keys, and stores the cleaned values as attributes;
- ``config()`` and ``spec()``, the exact inverse of construction;
- the registries (``{"name": ...}`` or ``{"type": ...}`` -> class), built from the classes themselves;
- the JSON Schema the API publishes (``service/spec_models.py``), the reference tables of
  ``docs/spec.md`` and the dashboard's choices (``reference.py``), the Keras mapping (``keras.py``).

This is scikit-learn's ``_parameter_constraints`` with the default, the Keras name and the
meaning beside the constraint. A constraint checks one value and raises SpecError located
relative to the parameter; :class:`Param` puts the parameter's name in front, and the
location keeps growing as the error travels up the spec (``layers[2].units``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, MutableMapping
from typing import Any, ClassVar, Generic, TypeVar, overload

from .errors import SpecError

T = TypeVar("T")
C = TypeVar("C", bound="Configurable")


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
"""The default of a parameter that a spec must give."""


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# Constraints ----------------------------------------------------------------------------


class Constraint(Generic[T]):
    """The values one parameter takes. ``check`` returns the cleaned value or raises SpecError
    (located relative to the parameter; ``name`` is for the message's ``received name=...``)."""

    def check(self, value: object, name: str) -> T:
        raise NotImplementedError

    def dump(self, value: T) -> Any:
        """The JSON form of a cleaned value, which ``check`` takes back to the same value."""
        return value

    def accepts(self, value: object) -> bool:
        """Whether ``value`` has the JSON type this constraint is about (``AnyOf`` picks by it)."""
        raise NotImplementedError

    def json_schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def describe(self) -> str:
        """The allowed values in a few words of Markdown, for the reference tables."""
        raise NotImplementedError


class Int(Constraint[int]):
    """An integer within ``[ge, le]``; a float with no fractional part counts (JSON has one number type)."""

    def __init__(self, *, ge: int | None = None, le: int | None = None):
        self.ge, self.le = ge, le

    def accepts(self, value: object) -> bool:
        return _is_number(value)

    def check(self, value: object, name: str) -> int:
        if not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())) or isinstance(value, bool):
            raise SpecError((), f"must be an integer; received {name}={value!r}")
        number = int(value)
        if (self.ge is not None and number < self.ge) or (self.le is not None and number > self.le):
            raise SpecError((), f"must be {self._bounds()}; received {name}={number}")
        return number

    def _bounds(self) -> str:
        if self.ge is not None and self.le is not None:
            return f"between {self.ge} and {self.le}"
        return f">= {self.ge}" if self.ge is not None else f"<= {self.le}"

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "integer"}
        if self.ge is not None:
            schema["minimum"] = self.ge
        if self.le is not None:
            schema["maximum"] = self.le
        return schema

    def describe(self) -> str:
        if self.ge is None and self.le is None:
            return "integer"
        return f"integer {self._bounds()}".replace(">=", "≥").replace("<=", "≤")


class Float(Constraint[float]):
    """A finite number within the given bounds (``ge``/``gt`` below, ``le``/``lt`` above)."""

    def __init__(
        self, *, ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None
    ):
        self.bounds = [(op, float(b)) for op, b in ((">=", ge), (">", gt), ("<=", le), ("<", lt)) if b is not None]

    def accepts(self, value: object) -> bool:
        return _is_number(value)

    def check(self, value: object, name: str) -> float:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise SpecError((), f"must be a finite number; received {name}={value!r}")
        number = float(value)
        for op, bound in self.bounds:
            if not _COMPARE[op](number, bound):
                raise SpecError(
                    (), f"must be {' and '.join(f'{o} {b}' for o, b in self.bounds)}; received {name}={number}"
                )
        return number

    def json_schema(self) -> dict[str, Any]:
        keys = {">=": "minimum", ">": "exclusiveMinimum", "<=": "maximum", "<": "exclusiveMaximum"}
        return {"type": "number", **{keys[op]: bound for op, bound in self.bounds}}

    def describe(self) -> str:
        if not self.bounds:
            return "number"
        signs = {">=": "≥", ">": ">", "<=": "≤", "<": "<"}
        return "number " + " and ".join(f"{signs[op]} {bound:g}" for op, bound in self.bounds)


_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
}


class Bool(Constraint[bool]):
    def accepts(self, value: object) -> bool:
        return isinstance(value, bool)

    def check(self, value: object, name: str) -> bool:
        if not isinstance(value, bool):
            raise SpecError((), f"must be true or false; received {name}={value!r}")
        return value

    def json_schema(self) -> dict[str, Any]:
        return {"type": "boolean"}

    def describe(self) -> str:
        return "true or false"


class Choice(Constraint[str]):
    """One of ``options``, which may be a live registry: the names are read when checking."""

    def __init__(self, options: Iterable[str]):
        self.options = options

    @property
    def names(self) -> list[str]:
        return list(self.options)

    def accepts(self, value: object) -> bool:
        return isinstance(value, str)

    def check(self, value: object, name: str) -> str:
        return check_choice(value, self.names)

    def json_schema(self) -> dict[str, Any]:
        return {"type": "string", "enum": self.names}

    def describe(self) -> str:
        return ", ".join(f'`"{option}"`' for option in self.names)


class Text(Constraint[str]):
    """Any string; ``expected`` says what it should name (``"the name of a logged value"``)."""

    def __init__(self, expected: str):
        self.expected = expected

    def accepts(self, value: object) -> bool:
        return isinstance(value, str)

    def check(self, value: object, name: str) -> str:
        if not isinstance(value, str):
            raise SpecError((), f"must be {self.expected}; received {value!r}")
        return value

    def json_schema(self) -> dict[str, Any]:
        return {"type": "string"}

    def describe(self) -> str:
        return self.expected


class Optional(Constraint[T | None]):
    """``inner``'s values, or null (which a parameter defaulting to null reads as "left out")."""

    def __init__(self, inner: Constraint[T]):
        self.inner = inner

    def accepts(self, value: object) -> bool:
        return value is None or self.inner.accepts(value)

    def check(self, value: object, name: str) -> T | None:
        return None if value is None else self.inner.check(value, name)

    def dump(self, value: T | None) -> Any:
        return None if value is None else self.inner.dump(value)

    def json_schema(self) -> dict[str, Any]:
        return {"anyOf": [self.inner.json_schema(), {"type": "null"}]}

    def describe(self) -> str:
        return f"{self.inner.describe()}, or null"


class ListOf(Constraint[list[T]]):
    """A list of ``item`` values (``what`` names them in messages), at least ``min_length`` long;
    ``unique`` drops repeats, keeping the first (for names)."""

    def __init__(self, item: Constraint[T], *, what: str, min_length: int = 0, unique: bool = False):
        self.item, self.what, self.min_length, self.unique = item, what, min_length, unique

    def accepts(self, value: object) -> bool:
        return isinstance(value, (list, tuple))

    def check(self, value: object, name: str) -> list[T]:
        if not isinstance(value, (list, tuple)) or len(value) < self.min_length:
            size = "non-empty " if self.min_length == 1 else (f"{self.min_length}+ item " if self.min_length else "")
            raise SpecError((), f"must be a {size}list of {self.what}; received {value!r}")
        items = []
        for i, item in enumerate(value):
            try:
                items.append(self.item.check(item, f"{name}[{i}]"))
            except SpecError as error:
                raise error.within(i) from None
        return list(dict.fromkeys(items)) if self.unique else items

    def dump(self, value: list[T]) -> Any:
        return [self.item.dump(item) for item in value]

    def json_schema(self) -> dict[str, Any]:
        schema = {"type": "array", "items": self.item.json_schema()}
        return {**schema, "minItems": self.min_length} if self.min_length else schema

    def describe(self) -> str:
        return f"list of {self.what}: {self.item.describe()}"


class IntOrTuple(Constraint[tuple[int, ...]]):
    """An integer for every one of ``length`` dimensions, or a list of ``length`` integers (Keras's
    ``kernel_size=3`` or ``kernel_size=(3, 5)``); cleaned to a tuple, written back as a list."""

    def __init__(self, length: int, *, ge: int | None = None):
        self.length, self.each = length, Int(ge=ge)

    def accepts(self, value: object) -> bool:
        return _is_number(value) or isinstance(value, (list, tuple))

    def check(self, value: object, name: str) -> tuple[int, ...]:
        if _is_number(value):
            return (self.each.check(value, name),) * self.length
        if not isinstance(value, (list, tuple)) or len(value) != self.length:
            raise SpecError((), f"must be an integer or a list of {self.length} integers; received {name}={value!r}")
        return tuple(ListOf(self.each, what="integers").check(value, name))

    def dump(self, value: tuple[int, ...]) -> Any:
        return list(value)

    def json_schema(self) -> dict[str, Any]:
        each = self.each.json_schema()
        array = {"type": "array", "items": each, "minItems": self.length, "maxItems": self.length}
        return {"anyOf": [each, array]}

    def describe(self) -> str:
        return f"{self.each.describe()}, or a list of {self.length}"


class MapOf(Constraint[dict[str, T]]):
    """An object whose keys are free (``what`` says what they are) and whose values are ``value``'s."""

    def __init__(self, value: Constraint[T], *, what: str):
        self.value, self.what = value, what

    def accepts(self, value: object) -> bool:
        return isinstance(value, Mapping)

    def check(self, value: object, name: str) -> dict[str, T]:
        if not isinstance(value, Mapping):
            raise SpecError((), f"must be an object of {self.what}; received {value!r}")
        cleaned = {}
        for key, item in value.items():
            try:
                cleaned[str(key)] = self.value.check(item, f"{name}[{str(key)!r}]")
            except SpecError as error:
                raise error.within(str(key)) from None
        return cleaned

    def dump(self, value: dict[str, T]) -> Any:
        return {key: self.value.dump(item) for key, item in value.items()}

    def json_schema(self) -> dict[str, Any]:
        return {"type": "object", "additionalProperties": self.value.json_schema()}

    def describe(self) -> str:
        return f"object of {self.what}"


class AnyOf(Constraint[Any]):
    """The first of ``options`` that ``accepts`` the value checks it (so its own message explains a
    mistake); a value none of them accepts must be ``expected``."""

    def __init__(self, *options: Constraint[Any], expected: str):
        self.options, self.expected = options, expected

    def accepts(self, value: object) -> bool:
        return any(option.accepts(value) for option in self.options)

    def check(self, value: object, name: str) -> Any:
        for option in self.options:
            if option.accepts(value):
                return option.check(value, name)
        raise SpecError((), f"must be {self.expected}; received {value!r}")

    def dump(self, value: Any) -> Any:
        return next(option.dump(value) for option in self.options if option.accepts(value))

    def json_schema(self) -> dict[str, Any]:
        return {"anyOf": [option.json_schema() for option in self.options]}

    def describe(self) -> str:
        return " or ".join(option.describe() for option in self.options)


class Component(Constraint[C]):
    """An instance of a class in ``registry``, from its spec: a bare name (``"relu"``) where the
    registry allows one, or ``{key: name, **parameters}``. Written back with the instance's ``spec()``."""

    def __init__(self, registry: Registry[C]):
        self.registry = registry

    def accepts(self, value: object) -> bool:
        return (
            isinstance(value, Mapping) or (self.registry.bare and isinstance(value, str)) or self.registry.owns(value)
        )

    def check(self, value: object, name: str) -> C:
        return self.registry.from_spec(value)

    def dump(self, value: C) -> Any:
        return value.spec()

    def json_schema(self) -> dict[str, Any]:
        names = list(self.registry)
        tagged = {"type": "object", "required": [self.registry.key], "properties": {self.registry.key: {"enum": names}}}
        return {"anyOf": [{"type": "string", "enum": names}, tagged]} if self.registry.bare else tagged

    def describe(self) -> str:
        return (
            f"{self.registry.article} {self.registry.kind}, see [{self.registry.title}](#{self.registry.title.lower()})"
        )


class Nested(Constraint[C]):
    """An instance of ``cls`` from an object of its parameters (no name: the parameter says which
    class), or from one of ``shorthands``, each standing for an object (``"l2"`` for ``{"l2": 0.01}``)."""

    def __init__(self, cls: type[C], shorthands: Mapping[Hashable, Mapping[str, Any]] | None = None):
        self.cls, self.shorthands = cls, dict(shorthands or {})

    def _shorthand(self, value: object) -> Mapping[str, Any] | None:
        if isinstance(value, (str, bool)):
            for key, params in self.shorthands.items():
                if type(key) is type(value) and key == value:
                    return params
        return None

    def accepts(self, value: object) -> bool:
        return isinstance(value, (Mapping, self.cls)) or self._shorthand(value) is not None

    def check(self, value: object, name: str) -> C:
        if isinstance(value, self.cls):
            return value
        shorthand = self._shorthand(value)
        if shorthand is not None:
            return self.cls(**shorthand)
        if isinstance(value, Mapping):
            return self.cls.from_config(value)
        raise SpecError((), f"must be {self.expected()}; received {value!r}")

    def expected(self) -> str:
        names = [repr(key) for key in self.shorthands if isinstance(key, str)]
        if not names:
            return "an object"
        fields = ", ".join(f'"{field}": ...' for field in self.cls.hyperparameters)
        return f"{', '.join(names)} or {{{fields}}}"

    def dump(self, value: C) -> Any:
        return value.config()

    def json_schema(self) -> dict[str, Any]:
        properties = {name: p.constraint.json_schema() for name, p in self.cls.hyperparameters.items()}
        return {"type": "object", "properties": properties, "additionalProperties": False}

    def describe(self) -> str:
        fields = ", ".join(f"`{field}`" for field in self.cls.hyperparameters)
        names = [f'`"{key}"`' for key in self.shorthands if isinstance(key, str)]
        return f"{', '.join(names)} or an object of {fields}" if names else f"an object of {fields}"


def check_choice(value: object, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``; raises SpecError listing them."""
    choices = list(choices)
    if not isinstance(value, str) or value not in choices:
        raise SpecError((), f"unknown {value!r}; expected one of {', '.join(map(repr, choices))}")
    return value


def check_keys(config: object, allowed: Iterable[str], required: Iterable[str] = ()) -> Mapping[str, Any]:
    """``config`` as a mapping whose keys are all ``allowed`` and include every ``required`` one.

    Unknown keys are errors, so a typo in a spec never turns into a silent default."""
    if not isinstance(config, Mapping):
        raise SpecError((), f"must be an object; received {config!r}")
    allowed = list(allowed)
    for key in config:
        if key not in allowed:
            raise SpecError(str(key), f"unknown field; expected one of {', '.join(map(repr, allowed))}")
    for key in required:
        if key not in config:
            raise SpecError(key, "field required")
    return config


# Declarations ---------------------------------------------------------------------------


class Param(Generic[T]):
    """One declared parameter of a :class:`Configurable` class.

    ``default`` is in spec form (``"glorot_uniform"``, not an initializer) and is checked like a
    given value; leave it out for a required parameter. ``keras`` is Keras's name for the same
    argument (True: the same name; False: Keras has none). ``omit_default`` leaves the parameter out
    of ``config()`` while it has its default (for options most specs never touch, such as clipping).
    ``doc`` is its meaning, for the reference tables.
    """

    name: str

    def __init__(
        self,
        constraint: Constraint[T],
        default: Any = REQUIRED,
        *,
        keras: str | bool = False,
        omit_default: bool = False,
        doc: str = "",
    ):
        self.constraint, self.default, self.omit_default, self.doc = constraint, default, omit_default, doc
        self._keras = keras

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def keras(self) -> str | None:
        """Keras's name for this parameter, or None."""
        if self._keras is True:
            return self.name
        return self._keras or None

    def check(self, value: object) -> T:
        try:
            return self.constraint.check(value, self.name)
        except SpecError as error:
            raise error.within(self.name) from None

    # The cleaned value lives in the instance's __dict__, which Python reads before a descriptor
    # without __set__: after construction, reading a parameter costs no more than any attribute.
    @overload
    def __get__(self, instance: None, owner: type | None = None) -> Param[T]: ...
    @overload
    def __get__(self, instance: object, owner: type | None = None) -> T: ...
    def __get__(self, instance: object, owner: type | None = None) -> Param[T] | T:
        if instance is None:
            return self
        raise AttributeError(f"{type(instance).__name__}.{self.name} is not set yet")


class Registry(MutableMapping[str, type[C]]):
    """The classes of one kind by their name (``key``: ``"name"``, or ``"type"`` for layers), filled by
    :class:`Configurable` as each class is defined, in definition order (a test may add one by hand).
    ``bare``: a spec may be a bare name rather than an object."""

    def __init__(self, kind: str, *, key: str = "name", bare: bool = True, title: str | None = None):
        self.kind, self.key, self.bare = kind, key, bare
        self.title = title or f"{kind.capitalize()}s"
        self.article = "an" if kind[0] in "aeiou" else "a"
        self.base: type[C] | None = None
        self._classes: dict[str, type[C]] = {}

    def __getitem__(self, name: str) -> type[C]:
        return self._classes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def __len__(self) -> int:
        return len(self._classes)

    def __setitem__(self, name: str, cls: type[C]) -> None:
        self._classes[name] = cls

    def __delitem__(self, name: str) -> None:
        del self._classes[name]

    def register(self, cls: type[C]) -> None:
        self[getattr(cls, self.key)] = cls

    def owns(self, value: object) -> bool:
        return self.base is not None and isinstance(value, self.base)

    def from_spec(self, spec: object) -> C:
        """An instance from its spec (or the instance itself). Unknown names and parameters raise
        SpecError listing what is allowed, located relative to the spec."""
        if self.base is not None and isinstance(spec, self.base):
            return spec
        key = self.key
        if self.bare and isinstance(spec, str):
            return self[check_choice(spec, self)]()
        if not isinstance(spec, Mapping):
            expected = "a name or an object with a name" if self.bare else f"an object with a {key!r}"
            raise SpecError((), f"must be {expected}; received {spec!r}")
        if key not in spec:
            raise SpecError(key, f"field required; expected one of {', '.join(map(repr, self))}")
        try:
            cls = self[check_choice(spec[key], self)]
        except SpecError as error:
            raise error.within(key) from None
        return cls.from_config({k: v for k, v in spec.items() if k != key})


class Configurable:
    """A class built from declared parameters (see the module docstring).

    A subclass names its registry once, ``class Loss(Configurable, registry=LOSSES)``; every
    subclass that sets the registry's key (``name = "mse"``) is then registered. A subclass that
    needs more state extends ``__init__`` after ``super().__init__(**values)``, which has checked
    and stored every parameter.
    """

    hyperparameters: ClassVar[dict[str, Param[Any]]] = {}
    """Every declared parameter, the class's own first, then its bases' (in declaration order)."""
    registry: ClassVar[Registry[Any] | None] = None
    keras_names: ClassVar[tuple[str, ...]] = ()
    """The names Keras serializes the same thing under (a class name, a function name), where they
    are not simply ours."""

    def __init_subclass__(cls, registry: Registry[Any] | None = None, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        own = {name: value for name, value in cls.__dict__.items() if isinstance(value, Param)}
        cls.hyperparameters = {**own, **{n: p for n, p in cls.hyperparameters.items() if n not in own}}
        if registry is not None:
            cls.registry, registry.base = registry, cls
        elif cls.registry is not None and cls.registry.key in cls.__dict__:
            cls.registry.register(cls)

    def __init__(self, **values: Any):
        declared = self.hyperparameters
        check_keys(values, declared, [name for name, param in declared.items() if param.required])
        for name, param in declared.items():
            self.__dict__[name] = param.check(values.get(name, param.default))

    @classmethod
    def from_config(cls: type[C], config: object) -> C:
        """An instance from an object of parameters (``config()``'s form); anything else raises SpecError."""
        return cls(**check_keys(config, cls.hyperparameters))

    def config(self) -> dict[str, Any]:
        """Every parameter in spec form (but those at a default they ask to omit)."""
        config = {}
        for name, param in self.hyperparameters.items():
            value = param.constraint.dump(self.__dict__[name])
            if not (param.omit_default and value == param.default):
                config[name] = value
        return config

    def spec(self) -> Any:
        """The spec that builds this instance: ``{key: name, **config()}``, or the bare name when the
        registry allows one and there is nothing else to say."""
        registry = type(self).registry
        if registry is None:
            return self.config()
        config, name = self.config(), getattr(self, registry.key)
        return name if registry.bare and not config else {registry.key: name, **config}
