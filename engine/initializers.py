"""Weight initializers, with Keras's names, formulas and defaults.

``initializer(shape, rng, dtype)`` returns a new array; ``shape`` is ``(fan_in, fan_out)``
for a kernel and ``(units,)`` for a bias. The variance-scaling family draws from a
normal truncated at two standard deviations, rescaled to keep the intended variance,
as Keras does.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .config import check_float, from_spec

INITIALIZERS: dict[str, type[Initializer]] = {}

# Standard deviation of a unit normal truncated to [-2, 2]; dividing by it restores unit variance.
_TRUNCATED_STDDEV = 0.87962566103423978


class Initializer:
    name: ClassVar[str]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            INITIALIZERS[cls.name] = cls

    def __call__(self, shape: tuple[int, ...], rng: np.random.Generator, dtype) -> np.ndarray:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        return {}

    def spec(self) -> str | dict[str, Any]:
        params = self.config()
        return {"name": self.name, **params} if params else self.name


class _VarianceScaling(Initializer):
    """Variance ``scale / fan`` where fan is fan_in or the mean of fan_in and fan_out."""

    scale: ClassVar[float]
    mode: ClassVar[str]  # "fan_in" or "fan_avg"
    distribution: ClassVar[str]  # "uniform" or "truncated_normal"

    def __call__(self, shape, rng, dtype):
        fan_in, fan_out = (shape[0], shape[1]) if len(shape) == 2 else (shape[0], shape[0])
        fan = fan_in if self.mode == "fan_in" else (fan_in + fan_out) / 2.0
        variance = self.scale / max(1.0, fan)
        if self.distribution == "uniform":
            limit = np.sqrt(3.0 * variance)
            return rng.uniform(-limit, limit, size=shape).astype(dtype)
        return (_truncated_normal(shape, rng) * (np.sqrt(variance) / _TRUNCATED_STDDEV)).astype(dtype)


def _truncated_normal(shape, rng: np.random.Generator) -> np.ndarray:
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
    name = "zeros"

    def __call__(self, shape, rng, dtype):
        return np.zeros(shape, dtype=dtype)


class Ones(Initializer):
    name = "ones"

    def __call__(self, shape, rng, dtype):
        return np.ones(shape, dtype=dtype)


class RandomNormal(Initializer):
    """N(mean, stddev^2)."""

    name = "random_normal"

    def __init__(self, mean: float = 0.0, stddev: float = 0.05):
        self.mean = check_float("mean", mean)
        self.stddev = check_float("stddev", stddev, minimum=0.0)

    def __call__(self, shape, rng, dtype):
        return rng.normal(self.mean, self.stddev, size=shape).astype(dtype)

    def config(self):
        return {"mean": self.mean, "stddev": self.stddev}


class RandomUniform(Initializer):
    """U(minval, maxval)."""

    name = "random_uniform"

    def __init__(self, minval: float = -0.05, maxval: float = 0.05):
        self.minval = check_float("minval", minval)
        self.maxval = check_float("maxval", maxval, minimum=self.minval)

    def __call__(self, shape, rng, dtype):
        return rng.uniform(self.minval, self.maxval, size=shape).astype(dtype)

    def config(self):
        return {"minval": self.minval, "maxval": self.maxval}


def get(spec: Any) -> Initializer:
    """An initializer from its spec: a name or ``{"name": ..., **params}``. Raises SpecError."""
    return from_spec(spec, INITIALIZERS)
