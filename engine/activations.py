"""Activation functions: ``a = f(z)`` element-wise (softmax: row-wise), each with its exact derivative.

Every function has the same two halves:

- ``forward(z, out)`` returns ``a``; ``out`` may be ``z`` itself (the training loop runs
  activations in place on the previous layer's buffer);
- ``backward(grad, z, a)`` returns ``dL/dz = f'(z) * grad``, written into ``grad``.
  Where the derivative is cheaper in terms of the output (ReLU, sigmoid, tanh...), it
  is taken from ``a``; only functions with ``needs_input = True`` read ``z``, and only
  they keep their input.

Shapes: ``z``, ``a`` and ``grad`` are ``(batch, units)``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from .params import Bool, Configurable, Float, Param, Registry

ACTIVATIONS: Registry[ActivationFunction] = Registry("activation")


class ActivationFunction(Configurable, registry=ACTIVATIONS):
    name: ClassVar[str]
    needs_input: ClassVar[bool] = False

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad: np.ndarray, z: np.ndarray | None, a: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class Linear(ActivationFunction):
    """a = z."""

    name = "linear"

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if out is None or out is z:
            return z
        np.copyto(out, z)
        return out

    def backward(self, grad: np.ndarray, z: np.ndarray | None, a: np.ndarray) -> np.ndarray:
        return grad


class ReLU(ActivationFunction):
    """a = max(z, 0);  a' = 1 where a > 0."""

    name = "relu"

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        a: np.ndarray = np.maximum(z, 0, out=out)
        return a

    def backward(self, grad: np.ndarray, z: np.ndarray | None, a: np.ndarray) -> np.ndarray:
        grad *= a > 0
        return grad


class LeakyReLU(ActivationFunction):
    """a = z if z > 0 else alpha * z."""

    name = "leaky_relu"
    alpha = Param(Float(ge=0.0), 0.2, keras="negative_slope", doc="slope below zero")

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        a: np.ndarray = np.where(z > 0, z, z * self.alpha)
        return a if out is None else _assign(out, a)

    def backward(self, grad: np.ndarray, z: np.ndarray | None, a: np.ndarray) -> np.ndarray:
        # a and z share their sign (alpha >= 0), so the output tells which branch was taken.
        grad *= np.where(a > 0, 1.0, self.alpha).astype(grad.dtype, copy=False)
        return grad


class ELU(ActivationFunction):
    """a = z if z > 0 else alpha * (exp(z) - 1);  a' = 1, or a + alpha below zero."""

    name = "elu"
    alpha = Param(Float(gt=0.0), 1.0, keras=True, doc="the value approached below zero is -alpha")

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        a = np.where(z > 0, z, self.alpha * np.expm1(np.minimum(z, 0)))
        return a if out is None else _assign(out, a)

    def backward(self, grad: np.ndarray, z: np.ndarray | None, a: np.ndarray) -> np.ndarray:
        grad *= np.where(a > 0, 1.0, a + self.alpha)
        return grad


class SELU(ActivationFunction):
    """a = scale * elu(z, alpha) with the self-normalizing constants of Klambauer et al. (2017)."""

    name = "selu"
    alpha = 1.6732632423543772848170429916717
    scale = 1.0507009873554804934193349852946

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        a = self.scale * np.where(z > 0, z, self.alpha * np.expm1(np.minimum(z, 0)))
        return a if out is None else _assign(out, a)

    def backward(self, grad: np.ndarray, z: np.ndarray | None, a: np.ndarray) -> np.ndarray:
        grad *= np.where(a > 0, self.scale, a + self.scale * self.alpha)
        return grad


class Sigmoid(ActivationFunction):
    """a = 1 / (1 + exp(-z)), computed as (1 + tanh(z/2)) / 2, which cannot overflow;  a' = a(1 - a)."""

    name = "sigmoid"

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        a: np.ndarray = np.multiply(z, 0.5, out=out)
        np.tanh(a, out=a)
        a += 1.0
        a *= 0.5
        return a

    def backward(self, grad: np.ndarray, z: np.ndarray | None, a: np.ndarray) -> np.ndarray:
        grad *= a
        grad *= 1.0 - a
        return grad


class HardSigmoid(ActivationFunction):
    """a = relu6(z + 3) / 6 (Keras 3);  a' = 1/6 where 0 < a < 1."""

    name = "hard_sigmoid"

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        a: np.ndarray = np.multiply(z, 1.0 / 6.0, out=out)
        a += 0.5
        np.clip(a, 0.0, 1.0, out=a)
        return a

    def backward(self, grad: np.ndarray, z: np.ndarray | None, a: np.ndarray) -> np.ndarray:
        grad *= (a > 0) & (a < 1)
        grad *= 1.0 / 6.0
        return grad


class Tanh(ActivationFunction):
    """a = tanh(z);  a' = 1 - a^2."""

    name = "tanh"

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        a: np.ndarray = np.tanh(z, out=out)
        return a

    def backward(self, grad: np.ndarray, z: np.ndarray | None, a: np.ndarray) -> np.ndarray:
        grad *= 1.0 - a * a
        return grad


class Softmax(ActivationFunction):
    """a_i = exp(z_i - max z) / sum_j exp(z_j - max z) per row;  dz = a * (grad - sum(grad * a))."""

    name = "softmax"

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        a: np.ndarray = np.subtract(z, np.maximum.reduce(z, axis=1, keepdims=True), out=out)
        np.exp(a, out=a)
        a /= np.add.reduce(a, axis=1, keepdims=True)
        return a

    def backward(self, grad: np.ndarray, z: np.ndarray | None, a: np.ndarray) -> np.ndarray:
        grad -= np.add.reduce(grad * a, axis=1, keepdims=True)
        grad *= a
        return grad


class Softplus(ActivationFunction):
    """a = log(1 + exp(z)) (as logaddexp, which cannot overflow);  a' = sigmoid(z) = 1 - exp(-a)."""

    name = "softplus"

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        a: np.ndarray = np.logaddexp(0, z, out=out)
        return a

    def backward(self, grad: np.ndarray, z: np.ndarray | None, a: np.ndarray) -> np.ndarray:
        # -expm1(-a) keeps full precision where a is tiny (z very negative).
        grad *= -np.expm1(-a)
        return grad


_erf_objects = np.frompyfunc(math.erf, 1, 1)  # NumPy has no erf and SciPy is not a dependency: libm's, exact.


def _erf(x: np.ndarray) -> np.ndarray:
    """erf element-wise, in ``x``'s dtype."""
    return np.asarray(_erf_objects(x)).astype(x.dtype)


class GELU(ActivationFunction):
    """a = z * Phi(z), Phi the standard normal CDF (Keras's default, exact); ``approximate`` uses the tanh form.

    exact:        a' = Phi(z) + z * phi(z)
    approximate:  a = z/2 (1 + tanh(u)), u = sqrt(2/pi) (z + 0.044715 z^3)
    """

    name = "gelu"
    needs_input = True
    _k = math.sqrt(2.0 / math.pi)

    approximate = Param(Bool(), False, keras=True, omit_default=True, doc="use the tanh form")

    def forward(self, z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if self.approximate:
            a = 0.5 * z * (1.0 + np.tanh(self._k * (z + 0.044715 * z**3)))
        else:
            a = 0.5 * z * (1.0 + _erf(z * (1.0 / math.sqrt(2.0))))
        return a if out is None else _assign(out, a)

    def backward(self, grad: np.ndarray, z: np.ndarray | None, a: np.ndarray) -> np.ndarray:
        if z is None:
            raise TypeError("gelu's derivative needs its input: the layer keeps it (needs_input)")
        if self.approximate:
            t = np.tanh(self._k * (z + 0.044715 * z**3))
            d = 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * self._k * (1.0 + 3 * 0.044715 * z * z)
        else:
            cdf = 0.5 * (1.0 + _erf(z * (1.0 / math.sqrt(2.0))))
            d = cdf + z * np.exp(-0.5 * z * z) * (1.0 / math.sqrt(2.0 * math.pi))
        grad *= d
        return grad


def _assign(out: np.ndarray, value: np.ndarray) -> np.ndarray:
    np.copyto(out, value)
    return out


def get(spec: Any) -> ActivationFunction:
    """An activation from its spec: a name (``"relu"``) or ``{"name": "leaky_relu", "alpha": 0.1}``.

    Raises SpecError naming the field at fault (relative to the activation).
    """
    return ACTIVATIONS.from_spec(spec)
