"""Declared parameters: each constraint's checks and messages, and a class built from its declarations,
including the kinds of parameters the next layers need (an int or a pair, a list of ints, an optional
value, a nested layer spec), on a registry of toy layers made for the purpose."""

from __future__ import annotations

import json
from typing import ClassVar

import pytest

from nnserve.engine import SpecError, keras, reference
from nnserve.engine.layers import LAYERS, Layer
from nnserve.engine.params import (
    AnyOf,
    Bool,
    Choice,
    Component,
    Configurable,
    Float,
    Int,
    IntOrTuple,
    ListOf,
    MapOf,
    Optional,
    Param,
    Registry,
)

TOYS: Registry[Toy] = Registry("toy", key="type", bare=False)


class Toy(Configurable, registry=TOYS):
    type: ClassVar[str]


class Conv(Toy):
    """A convolution-shaped toy."""

    type = "conv"
    filters = Param(Int(ge=1), doc="output channels")
    kernel_size = Param(IntOrTuple(2, ge=1), 3, doc="height and width")
    padding = Param(Choice(["valid", "same"]), "valid", doc="borders")
    target_shape = Param(Optional(ListOf(Int(ge=1), what="dimensions", min_length=1)), None, doc="a reshape")


class Wrapper(Toy):
    """A bidirectional-shaped toy: it holds another toy's spec."""

    type = "wrapper"
    layer = Param(Component(TOYS), doc="the wrapped layer")
    merge = Param(Choice(["concat", "sum"]), "concat", omit_default=True, doc="how the two are merged")


def test_a_class_is_built_from_its_declarations():
    conv = TOYS.from_spec({"type": "conv", "filters": 8, "kernel_size": [3, 5], "target_shape": [4, 2]})
    assert (conv.filters, conv.kernel_size, conv.padding, conv.target_shape) == (8, (3, 5), "valid", [4, 2])
    assert conv.spec() == {
        "type": "conv",
        "filters": 8,
        "kernel_size": [3, 5],
        "padding": "valid",
        "target_shape": [4, 2],
    }
    assert Conv(filters=2).config() == {"filters": 2, "kernel_size": [3, 3], "padding": "valid", "target_shape": None}


def test_nested_specs_round_trip_exactly():
    spec = {"type": "wrapper", "layer": {"type": "wrapper", "layer": {"type": "conv", "filters": 4, "kernel_size": 2}}}
    built = TOYS.from_spec(spec)
    assert isinstance(built, Wrapper) and isinstance(built.layer, Wrapper) and isinstance(built.layer.layer, Conv)
    written = json.loads(json.dumps(built.spec()))
    assert written["layer"]["layer"] == {
        "type": "conv",
        "filters": 4,
        "kernel_size": [2, 2],
        "padding": "valid",
        "target_shape": None,
    }
    assert "merge" not in written  # at its default, and declared omit_default
    assert TOYS.from_spec(written).spec() == written


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"type": "conv"}, r"^filters: field required$"),
        (
            {"type": "conv", "filters": 1, "kernel_size": [3]},
            r"^kernel_size: must be an integer or a list of 2 integers; received kernel_size=\[3\]$",
        ),
        (
            {"type": "conv", "filters": 1, "kernel_size": [3, 0]},
            r"^kernel_size\[1\]: must be >= 1; received kernel_size\[1\]=0$",
        ),
        ({"type": "conv", "filters": 1, "kernel_size": 0}, r"^kernel_size: must be >= 1; received kernel_size=0$"),
        (
            {"type": "conv", "filters": 1, "padding": "full"},
            r"^padding: unknown 'full'; expected one of 'valid', 'same'$",
        ),
        (
            {"type": "conv", "filters": 1, "target_shape": []},
            r"^target_shape: must be a non-empty list of dimensions; received \[\]$",
        ),
        (
            {"type": "conv", "filters": 1, "target_shape": [2, "x"]},
            r"^target_shape\[1\]: must be an integer; received target_shape\[1\]='x'$",
        ),
        (
            {"type": "wrapper", "layer": {"type": "conv", "filters": 0}},
            r"^layer\.filters: must be >= 1; received filters=0$",
        ),
        ({"type": "wrapper", "layer": {"type": "wrapper"}}, r"^layer\.layer: field required$"),
        ({"type": "wrapper", "layer": "conv"}, r"^layer: must be an object with a 'type'; received 'conv'$"),
        (
            {"type": "wrapper", "layer": {"type": "lstm"}},
            r"^layer\.type: unknown 'lstm'; expected one of 'conv', 'wrapper'$",
        ),
        (
            {"type": "conv", "filters": 1, "strides": 2},
            r"^strides: unknown field; expected one of 'filters', 'kernel_size', 'padding', 'target_shape'$",
        ),
    ],
)
def test_mistakes_are_located_and_say_what_is_allowed(spec, message):
    with pytest.raises(SpecError, match=message):
        TOYS.from_spec(spec)


@pytest.mark.parametrize(
    "constraint, value, cleaned",
    [
        (Int(ge=0), 3.0, 3),
        (Float(gt=0.0), 2, 2.0),
        (Bool(), False, False),
        (Optional(Float()), None, None),
        (IntOrTuple(3), 2, (2, 2, 2)),
        (MapOf(Float(ge=0.0), what="weights"), {"a": 1}, {"a": 1.0}),
        (AnyOf(Choice(["balanced"]), MapOf(Float(), what="weights"), expected="..."), "balanced", "balanced"),
        (ListOf(Choice(["a", "b"]), what="names", unique=True), ["a", "b", "a"], ["a", "b"]),
    ],
)
def test_constraints_clean_what_they_accept(constraint, value, cleaned):
    assert constraint.check(value, "x") == cleaned
    assert constraint.check(json.loads(json.dumps(constraint.dump(constraint.check(value, "x")))), "x") == cleaned


@pytest.mark.parametrize(
    "constraint, value, message",
    [
        (Int(ge=1, le=3), 4, "must be between 1 and 3; received x=4"),
        (Int(), True, "must be an integer; received x=True"),
        (Float(ge=0.0, lt=1.0), 1, "must be >= 0.0 and < 1.0; received x=1.0"),
        (Float(), float("nan"), "must be a finite number; received x=nan"),
        (Bool(), 1, "must be true or false; received x=1"),
        (
            AnyOf(Choice(["balanced"]), MapOf(Float(), what="w"), expected="'balanced' or an object"),
            [1],
            "must be 'balanced' or an object; received [1]",
        ),
        (MapOf(Float(ge=0.0), what="w"), {"a": -1}, "must be >= 0.0; received x['a']=-1.0"),
    ],
)
def test_constraints_refuse_with_the_engines_messages(constraint, value, message):
    with pytest.raises(SpecError) as caught:
        constraint.check(value, "x")
    assert caught.value.message == message


def test_a_new_layer_is_one_class_and_every_derived_view_has_it(monkeypatch):
    """What the images and sequences issues rely on: declaring a layer is enough for the registry, the
    reference tables, the dashboard's choices and the Keras mapping."""

    # Declared without its ``type``, so that the test rather than the class statement registers it,
    # and takes it out again when it ends.
    class Reshape(Layer):
        """Rows reshaped to ``target_shape``."""

        keras_names = ("Reshape",)
        target_shape = Param(ListOf(Int(ge=1), what="dimensions", min_length=1), keras=True, doc="the new shape")

    monkeypatch.setattr(Reshape, "type", "reshape", raising=False)
    monkeypatch.setitem(LAYERS, "reshape", Reshape)
    assert LAYERS.from_spec({"type": "reshape", "target_shape": [2, 2]}).spec() == {
        "type": "reshape",
        "target_shape": [2, 2],
    }
    assert "**`reshape`** — Rows reshaped to `target_shape`." in reference.tables()["layers"]
    assert reference.choices()["layers"]["reshape"] == ["target_shape"]
    assert "Reshape" in keras.supported_layers()
    document = {
        "class_name": "Sequential",
        "config": {"layers": [{"class_name": "Reshape", "config": {"target_shape": [2, 2], "name": "r"}}]},
    }
    assert keras.from_keras(document).spec["layers"] == [{"type": "reshape", "target_shape": [2, 2]}]
