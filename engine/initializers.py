"""Weight initializers, with Keras's names, formulas and defaults.

``initializer(shape, rng, dtype)`` returns a new array; ``shape`` is ``(fan_in, fan_out)``
for a kernel and ``(units,)`` for a bias. The variance-scaling family draws from a
normal truncated at two standard deviations, rescaled to keep the intended variance,
as Keras does.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from .errors import SpecError
from .params import Configurable, Float, Param, Registry

INITIALIZERS: Registry[Initializer] = Registry("initializer")

# Standard deviation of a unit normal truncated to [-2, 2]; dividing by it restores unit variance.
_TRUNCATED_STDDEV = 0.87962566103423978


class Initializer(Configurable, registry=INITIALIZERS):
    name: ClassVar[str]

    def __call__(self, shape: tuple[int, ...], rng: np.random.Generator, dtype: np.dtype[Any]) -> np.ndarray:
        raise NotImplementedError


class _VarianceScaling(Initializer):
    """Variance ``scale / fan`` where fan is fan_in or the mean of fan_in and fan_out."""

    scale: ClassVar[float]
    mode: ClassVar[str]  # "fan_in" or "fan_avg"
    distribution: ClassVar[str]  # "uniform" or "truncated_normal"

    def __call__(self, shape: tuple[int, ...], rng: np.random.Generator, dtype: np.dtype[Any]) -> np.ndarray:
        fan_in, fan_out = (shape[0], shape[1]) if len(shape) == 2 else (shape[0], shape[0])
        fan = fan_in if self.mode == "fan_in" else (fan_in + fan_out) / 2.0
        variance = self.scale / max(1.0, fan)
        if self.distribution == "uniform":
            limit = math.sqrt(3.0 * variance)
            return rng.uniform(-limit, limit, size=shape).astype(dtype)
        return (_truncated_normal(shape, rng) * (math.sqrt(variance) / _TRUNCATED_STDDEV)).astype(dtype)


def _truncated_normal(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Unit normal samples, redrawing any beyond two standard deviations."""
    values = rng.standard_normal(size=shape)
    outside = np.abs(values) > 2.0
    while outside.any():
        values[outside] = rng.standard_normal(size=int(outside.sum()))
        outside = np.abs(values) > 2.0
    return values


class GlorotUniform(_VarianceScaling):
    """U(-limit, limit), limit = sqrt(6 / (fan_in + fan_out))."""

    name, scale, mode, distribution = "glorot_uniform", 1.0, "fan_avg", "uniform"


class GlorotNormal(_VarianceScaling):
    """Truncated normal, stddev = sqrt(2 / (fan_in + fan_out))."""

    name, scale, mode, distribution = "glorot_normal", 1.0, "fan_avg", "truncated_normal"


class HeUniform(_VarianceScaling):
    """U(-limit, limit), limit = sqrt(6 / fan_in)."""

    name, scale, mode, distribution = "he_uniform", 2.0, "fan_in", "uniform"


class HeNormal(_VarianceScaling):
    """Truncated normal, stddev = sqrt(2 / fan_in)."""

    name, scale, mode, distribution = "he_normal", 2.0, "fan_in", "truncated_normal"


class LecunUniform(_VarianceScaling):
    """U(-limit, limit), limit = sqrt(3 / fan_in)."""

    name, scale, mode, distribution = "lecun_uniform", 1.0, "fan_in", "uniform"


class LecunNormal(_VarianceScaling):
    """Truncated normal, stddev = sqrt(1 / fan_in) (the partner of selu)."""

    name, scale, mode, distribution = "lecun_normal", 1.0, "fan_in", "truncated_normal"


class Zeros(Initializer):
    """0."""

    name = "zeros"

    def __call__(self, shape: tuple[int, ...], rng: np.random.Generator, dtype: np.dtype[Any]) -> np.ndarray:
        return np.zeros(shape, dtype=dtype)


class Ones(Initializer):
    """1."""

    name = "ones"

    def __call__(self, shape: tuple[int, ...], rng: np.random.Generator, dtype: np.dtype[Any]) -> np.ndarray:
        return np.ones(shape, dtype=dtype)


class RandomNormal(Initializer):
    """N(mean, stddev^2)."""

    name = "random_normal"
    mean = Param(Float(), 0.0, keras=True, doc="the mean")
    stddev = Param(Float(ge=0.0), 0.05, keras=True, doc="the standard deviation")

    def __call__(self, shape: tuple[int, ...], rng: np.random.Generator, dtype: np.dtype[Any]) -> np.ndarray:
        return rng.normal(self.mean, self.stddev, size=shape).astype(dtype)


class RandomUniform(Initializer):
    """U(minval, maxval)."""

    name = "random_uniform"
    minval = Param(Float(), -0.05, keras=True, doc="the lower bound")
    maxval = Param(Float(), 0.05, keras=True, doc="the upper bound, at least minval")

    def __init__(self, **values: Any):
        super().__init__(**values)
        if self.maxval < self.minval:
            raise SpecError("maxval", f"must be >= {self.minval}; received maxval={self.maxval}")

    def __call__(self, shape: tuple[int, ...], rng: np.random.Generator, dtype: np.dtype[Any]) -> np.ndarray:
        return rng.uniform(self.minval, self.maxval, size=shape).astype(dtype)


def get(spec: Any) -> Initializer:
    """An initializer from its spec: a name or ``{"name": ..., **params}``. Raises SpecError."""
    return INITIALIZERS.from_spec(spec)
