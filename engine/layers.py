"""Layers: every one has the same two halves.

- ``forward(x, training)`` returns the output. When ``training`` is true the layer keeps
  what ``backward`` will need and writes into buffers it reuses from batch to batch;
  when false it keeps nothing and allocates fresh arrays (so predictions from several
  threads never share a buffer).
- ``backward(grad)`` fills ``grads`` (same keys and shapes as ``params``) and returns
  the gradient with respect to the layer's input (``None`` when no layer below needs it).

``params`` and ``grads`` are views into the model's two flat buffers (see ``model.py``);
layers never allocate their own. Shapes: ``x`` is ``(batch, n_in)``, outputs
``(batch, n_out)``; a dense kernel is ``(n_in, units)``, its bias ``(units,)``.

A dense layer with an activation is, as in Keras, ``activation(x @ kernel + bias)``: the
model runs it as a ``Dense`` followed by an ``Activation`` (``Dense.expand``), which lets
a softmax or sigmoid output fuse with its cross-entropy loss (see ``losses.py``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from . import activations, initializers
from .buffers import Buffers
from .config import check_bool, check_choice, check_float, check_int, check_keys, construct
from .errors import SpecError

LAYERS: dict[str, type[Layer]] = {}


class Layer:
    type: ClassVar[str]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "type" in cls.__dict__:
            LAYERS[cls.type] = cls

    def __init__(self):
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self._buffers = Buffers()

    # Structure
    def output_units(self, n_in: int) -> int:
        return n_in

    def param_shapes(self, n_in: int) -> dict[str, tuple[int, ...]]:
        """Name -> shape of each parameter, in Keras ``get_weights()`` order."""
        return {}

    def initial_values(self, n_in: int, rng: np.random.Generator, dtype) -> dict[str, np.ndarray]:
        return {}

    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    # Computation
    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad: np.ndarray) -> np.ndarray | None:
        raise NotImplementedError

    def penalty(self) -> float:
        """Regularization added to the loss (0 for layers without a regularizer)."""
        return 0.0


class Regularizer:
    """Kernel penalty ``l1 * sum|w| + l2 * sum w^2`` (Keras's L1L2); its gradient ``l1 sign(w) + 2 l2 w``.

    ``"l1"`` and ``"l2"`` alone mean a factor of 0.01, Keras's default.
    """

    def __init__(self, l1: float = 0.0, l2: float = 0.0):
        self.l1 = check_float("l1", l1, minimum=0.0)
        self.l2 = check_float("l2", l2, minimum=0.0)

    @classmethod
    def get(cls, spec: Any) -> Regularizer | None:
        if spec is None:
            return None
        if spec in ("l1", "l2"):
            return cls(**{spec: 0.01})
        if isinstance(spec, dict):
            check_keys(spec, ["l1", "l2"])
            return cls(**spec)
        raise SpecError((), f"must be 'l1', 'l2' or {{\"l1\": ..., \"l2\": ...}}; received {spec!r}")

    def penalty(self, w: np.ndarray) -> float:
        total = 0.0
        if self.l1:
            total += self.l1 * float(np.abs(w).sum())
        if self.l2:
            total += self.l2 * float(np.vdot(w, w))
        return total

    def add_gradient(self, w: np.ndarray, grad: np.ndarray) -> None:
        if self.l1:
            grad += self.l1 * np.sign(w)
        if self.l2:
            grad += (2.0 * self.l2) * w

    def config(self) -> dict[str, float]:
        return {"l1": self.l1, "l2": self.l2}


class Dense(Layer):
    """Fully connected: ``z = x @ kernel + bias``; backward ``dkernel = x^T dz``, ``dbias = sum dz``, ``dx = dz kernel^T``."""

    type = "dense"

    def __init__(
        self,
        units: int,
        activation: Any = "linear",
        use_bias: bool = True,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
    ):
        super().__init__()
        self.units = check_int("units", units)
        self.activation = _within("activation", activations.get, activation)
        self.use_bias = check_bool("use_bias", use_bias)
        self.kernel_initializer = _within("kernel_initializer", initializers.get, kernel_initializer)
        self.bias_initializer = _within("bias_initializer", initializers.get, bias_initializer)
        self.regularizer = _within("kernel_regularizer", Regularizer.get, kernel_regularizer)
        # The model clears this on the first layer: nothing below it needs dL/dx, and that
        # product is as costly as the kernel gradient.
        self.propagate = True

    def output_units(self, n_in):
        return self.units

    def param_shapes(self, n_in):
        shapes = {"kernel": (n_in, self.units)}
        if self.use_bias:
            shapes["bias"] = (self.units,)
        return shapes

    def initial_values(self, n_in, rng, dtype):
        values = {"kernel": self.kernel_initializer((n_in, self.units), rng, dtype)}
        if self.use_bias:
            values["bias"] = self.bias_initializer((self.units,), rng, dtype)
        return values

    def config(self):
        return {
            "type": self.type,
            "units": self.units,
            "activation": self.activation.spec(),
            "use_bias": self.use_bias,
            "kernel_initializer": self.kernel_initializer.spec(),
            "bias_initializer": self.bias_initializer.spec(),
            "kernel_regularizer": self.regularizer.config() if self.regularizer else None,
        }

    def expand(self) -> list[Layer]:
        """The operations this layer runs as: itself, then its activation unless linear."""
        if isinstance(self.activation, activations.Linear):
            return [self]
        return [self, Activation(self.activation)]

    def forward(self, x, training):
        kernel = self.params["kernel"]
        out = np.matmul(
            x, kernel, out=self._buffers.get("out", x.shape[0], self.units, kernel.dtype) if training else None
        )
        if self.use_bias:
            out += self.params["bias"]
        if training:
            self._x = x
        return out

    def backward(self, grad):
        kernel = self.params["kernel"]
        np.matmul(self._x.T, grad, out=self.grads["kernel"])
        if self.use_bias:
            # ones @ dz is the column sum, and BLAS does it in half the time of np.add.reduce.
            np.matmul(self._ones(grad.shape[0], grad.dtype), grad, out=self.grads["bias"])
        if self.regularizer:
            self.regularizer.add_gradient(kernel, self.grads["kernel"])
        if not self.propagate:
            return None
        return np.matmul(grad, kernel.T, out=self._buffers.get("dx", grad.shape[0], kernel.shape[0], kernel.dtype))

    def penalty(self):
        return self.regularizer.penalty(self.params["kernel"]) if self.regularizer else 0.0

    def _ones(self, rows: int, dtype) -> np.ndarray:
        ones = getattr(self, "_ones_vector", None)
        if ones is None or len(ones) < rows or ones.dtype != dtype:
            ones = self._ones_vector = np.ones(rows, dtype=dtype)
        return ones[:rows]


class Activation(Layer):
    """Applies an activation function element-wise (softmax: row-wise); no parameters."""

    type = "activation"

    def __init__(self, activation: Any):
        super().__init__()
        self.fn = _within("activation", activations.get, activation)
        self.in_place_inference = False  # set by the model, see Model._mark_in_place
        # The model sets this when the input is a buffer no one else reads afterwards
        # (a Dense or Dropout output), so training can overwrite it instead of copying.
        self.in_place = False

    def config(self):
        return {"type": self.type, "activation": self.fn.spec()}

    def forward(self, x, training):
        if not training:
            return self.fn.forward(x, out=x if self.in_place_inference and not self.fn.needs_input else None)
        keep_input = self.fn.needs_input or not self.in_place
        out = self._buffers.get("out", x.shape[0], x.shape[1], x.dtype) if keep_input else x
        self._z = x if self.fn.needs_input else None
        self._a = self.fn.forward(x, out=out)
        return self._a

    def backward(self, grad):
        return self.fn.backward(grad, self._z, self._a)


class Dropout(Layer):
    """Inverted dropout: in training, zero each input with probability ``rate`` and scale the rest by
    ``1 / (1 - rate)``, so inference is the identity. ``rng`` is set by the trainer."""

    type = "dropout"

    def __init__(self, rate: float):
        super().__init__()
        self.rate = check_float("rate", rate, minimum=0.0, maximum=1.0, max_inclusive=False)
        self.rng: np.random.Generator | None = None
        # While true (finite differences), the last mask is reused so every evaluation of the
        # loss sees the same function.
        self.freeze_mask = False

    def config(self):
        return {"type": self.type, "rate": self.rate}

    def forward(self, x, training):
        if not training or self.rate == 0.0:
            return x
        rows, cols = x.shape
        if not self.freeze_mask:
            mask = self._buffers.get("mask", rows, cols, x.dtype)
            self.rng.random(out=mask, dtype=mask.dtype)
            keep = mask >= self.rate
            np.multiply(keep, 1.0 / (1.0 - self.rate), out=mask)
            self._mask = mask
        return np.multiply(x, self._mask, out=self._buffers.get("out", rows, cols, x.dtype))

    def backward(self, grad):
        if self.rate == 0.0:
            return grad
        grad *= self._mask
        return grad


def _within(field: str, factory, value):
    """``factory(value)``, with any SpecError located under ``field``."""
    try:
        return factory(value)
    except SpecError as error:
        raise error.within(field) from None


def get(config: Any) -> Layer:
    """A layer from its spec ``{"type": "dense", "units": 8, ...}``. Raises SpecError naming the field."""
    if not isinstance(config, dict):
        raise SpecError((), f"must be an object with a 'type'; received {config!r}")
    if "type" not in config:
        raise SpecError("type", f"field required; expected one of {', '.join(map(repr, LAYERS))}")
    cls = LAYERS[check_choice("type", config["type"], LAYERS)]
    return construct(cls, {k: v for k, v in config.items() if k != "type"})
