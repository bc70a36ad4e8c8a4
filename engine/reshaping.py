"""Layers that only move values: ``flatten``, ``reshape`` and ``zero_padding2d``.

Flatten and reshape return views of their input (samples are C-ordered, so the row-major
order of ``(H, W, C)`` is Keras's), and their backward reshapes the gradient back.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .errors import SpecError
from .layers import Layer, Shape
from .params import Constraint, Int, ListOf, Param, _is_number


class Flatten(Layer):
    """``(*shape)`` -> ``(prod(shape),)``, row-major (channels fastest), as Keras flattens."""

    type = "flatten"
    keras_names = ("Flatten",)
    keras_fixed: ClassVar[dict[str, Any]] = {"data_format": "channels_last"}

    def __init__(self, **values: Any):
        super().__init__(**values)
        self._in_shape: Shape = ()

    def output_shape(self, in_shape: Shape) -> Shape:
        return (int(np.prod(in_shape)),)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        if training:
            self._in_shape = x.shape[1:]
        return x.reshape(len(x), -1)

    def backward(self, grad: np.ndarray) -> np.ndarray | None:
        return grad.reshape((len(grad), *self._in_shape))


class Reshape(Layer):
    """Samples in a new shape with the same number of values (one dimension may be -1: what is left)."""

    type = "reshape"
    keras_names = ("Reshape",)
    target_shape = Param(
        ListOf(Int(ge=-1), what="dimensions", min_length=1), keras=True, doc="the new sample shape, without the batch"
    )

    def __init__(self, **values: Any):
        super().__init__(**values)
        target = self.target_shape
        if 0 in target or target.count(-1) > 1:
            raise SpecError("target_shape", f"dimensions must be positive, with at most one -1; received {target}")
        self._in_shape: Shape = ()

    def output_shape(self, in_shape: Shape) -> Shape:
        size, target = int(np.prod(in_shape)), self.target_shape
        known = int(np.prod([d for d in target if d != -1]))
        if -1 in target and size % known == 0:
            return tuple(size // known if d == -1 else d for d in target)
        if known != size or -1 in target:
            raise SpecError(
                (),
                f"({self.type}) expects samples of {known} values for {list(target)}; received {in_shape} ({size} values)",
            )
        return tuple(target)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        if training:
            self._in_shape = x.shape[1:]
        return x.reshape((len(x), *self.output_shape(x.shape[1:])))

    def backward(self, grad: np.ndarray) -> np.ndarray | None:
        return grad.reshape((len(grad), *self._in_shape))


class Padding2D(Constraint[tuple[tuple[int, int], tuple[int, int]]]):
    """Zeros around an image, as Keras's ZeroPadding2D takes them: ``p`` (all four sides), ``[rows,
    columns]`` (each on both sides) or ``[[top, bottom], [left, right]]``; written back in the last form."""

    def accepts(self, value: object) -> bool:
        return _is_number(value) or isinstance(value, (list, tuple))

    def check(self, value: object, name: str) -> tuple[tuple[int, int], tuple[int, int]]:
        amount = Int(ge=0)
        if _is_number(value):
            p = amount.check(value, name)
            return (p, p), (p, p)
        if isinstance(value, (list, tuple)) and len(value) == 2:
            if all(_is_number(v) for v in value):
                rows, cols = (amount.check(v, name) for v in value)
                return (rows, rows), (cols, cols)
            if all(isinstance(v, (list, tuple)) and len(v) == 2 for v in value):
                (top, bottom), (left, right) = ((amount.check(a, name), amount.check(b, name)) for a, b in value)
                return (top, bottom), (left, right)
        raise SpecError(
            (), f"must be an integer, [rows, columns] or [[top, bottom], [left, right]]; received {name}={value!r}"
        )

    def dump(self, value: tuple[tuple[int, int], tuple[int, int]]) -> Any:
        return [list(value[0]), list(value[1])]

    def json_schema(self) -> dict[str, Any]:
        count = {"type": "integer", "minimum": 0}
        pair = {"type": "array", "items": count, "minItems": 2, "maxItems": 2}
        pairs = {"type": "array", "items": pair, "minItems": 2, "maxItems": 2}
        return {"anyOf": [count, pair, pairs]}

    def describe(self) -> str:
        return "integer ≥ 0, `[rows, columns]` or `[[top, bottom], [left, right]]`"


class ZeroPadding2D(Layer):
    """``(H, W, C)`` -> ``(top + H + bottom, left + W + right, C)``, the new border zeros."""

    type = "zero_padding2d"
    keras_names = ("ZeroPadding2D",)
    keras_fixed: ClassVar[dict[str, Any]] = {"data_format": "channels_last"}
    owns_output = True
    padding = Param(Padding2D(), 1, keras=True, doc="rows and columns of zeros added around each image")

    def output_shape(self, in_shape: Shape) -> Shape:
        if len(in_shape) != 3:
            raise SpecError((), f"({self.type}) expects images (height, width, channels); received {in_shape}")
        (top, bottom), (left, right) = self.padding
        return (top + in_shape[0] + bottom, left + in_shape[1] + right, in_shape[2])

    def _inner(self, shape: Shape) -> tuple[slice, ...]:
        (top, _), (left, _) = self.padding
        return (slice(None), slice(top, top + shape[0]), slice(left, left + shape[1]), slice(None))

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        shape = (len(x), *self.output_shape(x.shape[1:]))
        out = self._buffers.like("out", shape, x.dtype) if training else np.empty(shape, x.dtype)
        out.fill(0)
        out[self._inner(x.shape[1:])] = x
        return out

    def backward(self, grad: np.ndarray) -> np.ndarray | None:
        (top, bottom), (left, right) = self.padding
        return grad[:, top : grad.shape[1] - bottom, left : grad.shape[2] - right, :]
