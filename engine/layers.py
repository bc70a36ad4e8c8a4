"""Layers: every one has the same two halves.

- ``forward(x, training)`` returns the output. When ``training`` is true the layer keeps
  what ``backward`` will need and writes into buffers it reuses from batch to batch;
  when false it keeps nothing and allocates fresh arrays (so predictions from several
  threads never share a buffer).
- ``backward(grad)`` fills ``grads`` (same keys and shapes as ``params``) and returns
  the gradient with respect to the layer's input (``None`` when no layer below needs it).

``params`` and ``grads`` are views into the model's two flat buffers (see ``network.py``);
layers never allocate their own. ``state`` holds the weights that are not trained but kept
(batch normalization's moving statistics), views into the model's third flat buffer.

Shapes: a sample has a shape (``(features,)`` for a row, ``(H, W, C)`` for an image, channels
last as in Keras). A layer maps ``(batch, *in_shape)`` to ``(batch, *output_shape(in_shape))``
and its parameter shapes follow from ``in_shape`` (a dense kernel is ``(features, units)``, its
bias ``(units,)``); ``output_shape`` raises SpecError when the layer cannot take ``in_shape``,
and the model names the layer. The layer types beyond these three live one per module
(``convolution.py``, ``pooling.py``, ``reshaping.py``, ``normalization.py``).

A dense layer with an activation is, as in Keras, ``activation(x @ kernel + bias)``: the
model runs it as a ``Dense`` followed by an ``Activation`` (``Dense.expand``), which lets
a softmax or sigmoid output fuse with its cross-entropy loss (see ``losses.py``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from . import activations
from .activations import ACTIVATIONS
from .buffers import Buffers
from .errors import SpecError
from .initializers import INITIALIZERS
from .params import Bool, Component, Configurable, Float, Int, Nested, Optional, Param, Registry

LAYERS: Registry[Layer] = Registry("layer", key="type", bare=False)


Shape = tuple[int, ...]
"""The shape of one sample, without the batch axis."""


class Layer(Configurable, registry=LAYERS):
    type: ClassVar[str]
    keras_refuses: ClassVar[tuple[str, ...]] = ()
    """Settings of the Keras layer that change the computation and that nnserve does not honour."""
    keras_fixed: ClassVar[dict[str, Any]] = {}
    """Settings of the Keras layer that nnserve honours at one value only (``groups``: 1)."""
    owns_output: ClassVar[bool] = False
    """The output is the layer's own buffer in training and a fresh array at inference, so an
    activation after it may overwrite it (see ``Network._mark_in_place``)."""

    def __init__(self, **values: Any):
        super().__init__(**values)
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.state: dict[str, np.ndarray] = {}
        self._buffers = Buffers()
        # The model clears this on the first layer with weights: nothing below it needs dL/dx,
        # and that product is as costly as the kernel gradient.
        self.propagate = True
        # While true (finite differences), whatever a training forward pass draws or updates
        # (dropout masks, moving statistics) is held, so every evaluation of the loss sees the same function.
        self.freeze_mask = False

    # Structure
    def output_shape(self, in_shape: Shape) -> Shape:
        """The shape of one output sample for input samples of ``in_shape``; SpecError when it cannot take them."""
        return in_shape

    def param_shapes(self, in_shape: Shape) -> dict[str, Shape]:
        """Name -> shape of each trained parameter, in Keras ``get_weights()`` order."""
        return {}

    def state_shapes(self, in_shape: Shape) -> dict[str, Shape]:
        """Name -> shape of each kept but untrained weight, which Keras lists after the parameters."""
        return {}

    def initial_values(self, in_shape: Shape, rng: np.random.Generator, dtype: np.dtype[Any]) -> dict[str, np.ndarray]:
        """First values of the parameters and of the state (a name left out stays zero)."""
        return {}

    @property
    def trainable(self) -> bool:
        """Whether the layer has parameters (for any input shape)."""
        return False

    def working_size(self, in_shape: Shape) -> int:
        """Values one sample needs at once in a forward pass (its output, or a larger temporary)."""
        return int(np.prod(self.output_shape(in_shape)))

    def expand(self) -> list[Layer]:
        """The operations this layer runs as (a layer with an activation: itself, then the activation)."""
        return [self]

    # Computation
    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad: np.ndarray) -> np.ndarray | None:
        raise NotImplementedError

    def penalty(self) -> float:
        """Regularization added to the loss (0 for layers without a regularizer)."""
        return 0.0

    @property
    def penalized(self) -> bool:
        """Whether ``penalty`` can be non-zero."""
        return False


def flat_input(layer: Layer, in_shape: Shape) -> int:
    """The width of a flat input sample; SpecError for any other shape."""
    if len(in_shape) != 1:
        raise SpecError(
            (),
            f"({layer.type}) expects flat samples (features,); received {in_shape}: add a flatten or global pooling layer before it",
        )
    return in_shape[0]


class Regularizer(Configurable):
    """Kernel penalty ``l1 * sum|w| + l2 * sum w^2`` (Keras's L1L2); its gradient ``l1 sign(w) + 2 l2 w``.

    ``"l1"`` and ``"l2"`` alone mean a factor of 0.01, Keras's default.
    """

    keras_names = ("L1", "L2", "L1L2")
    l1 = Param(Float(ge=0.0), 0.0, keras=True, doc="the factor of sum |w|")
    l2 = Param(Float(ge=0.0), 0.0, keras=True, doc="the factor of sum w²")

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


class Dense(Layer):
    """Fully connected: ``z = x @ kernel + bias``; backward ``dkernel = x^T dz``, ``dbias = sum dz``, ``dx = dz kernel^T``."""

    type = "dense"
    keras_names = ("Dense",)
    keras_refuses = ("bias_regularizer", "activity_regularizer", "kernel_constraint", "bias_constraint")
    units = Param(Int(ge=1), keras=True, doc="outputs")
    activation = Param(Component(ACTIVATIONS), "linear", keras=True, doc="applied to the outputs")
    use_bias = Param(Bool(), True, keras=True, doc="add a bias")
    kernel_initializer = Param(Component(INITIALIZERS), "glorot_uniform", keras=True, doc="the kernel's first values")
    bias_initializer = Param(Component(INITIALIZERS), "zeros", keras=True, doc="the bias's first values")
    kernel_regularizer = Param(
        Optional(Nested(Regularizer, {"l1": {"l1": 0.01}, "l2": {"l2": 0.01}})),
        None,
        keras=True,
        doc='adds `l1·Σ|w| + l2·Σw²` to the loss (`"l1"`, `"l2"`: a factor of 0.01)',
    )

    owns_output = True

    def __init__(self, **values: Any):
        super().__init__(**values)
        self._x: np.ndarray | None = None
        self._ones_vector: np.ndarray | None = None

    def output_shape(self, in_shape: Shape) -> Shape:
        flat_input(self, in_shape)
        return (self.units,)

    def param_shapes(self, in_shape: Shape) -> dict[str, Shape]:
        shapes: dict[str, Shape] = {"kernel": (flat_input(self, in_shape), self.units)}
        if self.use_bias:
            shapes["bias"] = (self.units,)
        return shapes

    @property
    def trainable(self) -> bool:
        return True

    @property
    def penalized(self) -> bool:
        return self.kernel_regularizer is not None

    def initial_values(self, in_shape: Shape, rng: np.random.Generator, dtype: np.dtype[Any]) -> dict[str, np.ndarray]:
        n_in = flat_input(self, in_shape)
        values = {"kernel": self.kernel_initializer((n_in, self.units), rng, dtype)}
        if self.use_bias:
            values["bias"] = self.bias_initializer((self.units,), rng, dtype)
        return values

    def expand(self) -> list[Layer]:
        return with_activation(self, self.activation)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        kernel = self.params["kernel"]
        out = np.matmul(
            x, kernel, out=self._buffers.get("out", x.shape[0], self.units, kernel.dtype) if training else None
        )
        if self.use_bias:
            out += self.params["bias"]
        if training:
            self._x = x
        return out

    def backward(self, grad: np.ndarray) -> np.ndarray | None:
        kernel = self.params["kernel"]
        np.matmul(_kept(self._x).T, grad, out=self.grads["kernel"])
        if self.use_bias:
            # ones @ dz is the column sum, and BLAS does it in half the time of np.add.reduce.
            np.matmul(self._ones(grad.shape[0], grad.dtype), grad, out=self.grads["bias"])
        if self.kernel_regularizer:
            self.kernel_regularizer.add_gradient(kernel, self.grads["kernel"])
        if not self.propagate:
            return None
        return np.matmul(grad, kernel.T, out=self._buffers.get("dx", grad.shape[0], kernel.shape[0], kernel.dtype))

    def penalty(self) -> float:
        return self.kernel_regularizer.penalty(self.params["kernel"]) if self.kernel_regularizer else 0.0

    def _ones(self, rows: int, dtype: np.dtype[Any]) -> np.ndarray:
        ones = self._ones_vector
        if ones is None or len(ones) < rows or ones.dtype != dtype:
            ones = self._ones_vector = np.ones(rows, dtype=dtype)
        return ones[:rows]


def with_activation(layer: Layer, activation: activations.ActivationFunction) -> list[Layer]:
    """``layer``, then an activation layer unless ``activation`` is linear."""
    if isinstance(activation, activations.Linear):
        return [layer]
    return [layer, Activation(activation=activation)]


class Activation(Layer):
    """Applies an activation function element-wise (softmax: row-wise); no parameters."""

    type = "activation"
    keras_names = ("Activation",)
    activation = Param(Component(ACTIVATIONS), keras=True, doc="the function")

    def __init__(self, **values: Any):
        super().__init__(**values)
        self.in_place_inference = False  # set by the model, see Network._mark_in_place
        # The model sets this when the input is a buffer no one else reads afterwards
        # (a Dense or Dropout output), so training can overwrite it instead of copying.
        self.in_place = False
        self._z: np.ndarray | None = None
        self._a: np.ndarray | None = None

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        fn = self.activation
        if not training:
            return fn.forward(x, out=x if self.in_place_inference and not fn.needs_input else None)
        keep_input = fn.needs_input or not self.in_place
        out = self._buffers.like("out", x.shape, x.dtype) if keep_input else x
        self._z = x if fn.needs_input else None
        self._a = fn.forward(x, out=out)
        return self._a

    def backward(self, grad: np.ndarray) -> np.ndarray | None:
        return self.activation.backward(grad, self._z, _kept(self._a))


class Dropout(Layer):
    """Inverted dropout: in training, zero each input with probability ``rate`` and scale the rest by
    ``1 / (1 - rate)``, so inference is the identity."""

    type = "dropout"
    keras_names = ("Dropout",)
    keras_refuses: ClassVar[tuple[str, ...]] = ("noise_shape",)
    rate = Param(Float(ge=0.0, lt=1.0), keras=True, doc="the fraction of inputs zeroed")

    def __init__(self, **values: Any):
        super().__init__(**values)
        self.rng: np.random.Generator | None = None  # set by the training session
        self._mask: np.ndarray | None = None

    def mask_shape(self, x: np.ndarray) -> Shape:
        """The shape of the random mask, broadcast over ``x`` (one value per input here)."""
        return x.shape

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        if not training or self.rate == 0.0:
            return x
        if not self.freeze_mask:
            if self.rng is None:
                raise TypeError("a dropout layer trains with the session's generator: set its rng")
            mask = self._buffers.like("mask", self.mask_shape(x), x.dtype)
            self.rng.random(out=mask, dtype=mask.dtype)
            keep = mask >= self.rate
            np.multiply(keep, 1.0 / (1.0 - self.rate), out=mask)
            self._mask = mask
        out: np.ndarray = np.multiply(x, _kept(self._mask), out=self._buffers.like("out", x.shape, x.dtype))
        return out

    def backward(self, grad: np.ndarray) -> np.ndarray | None:
        if self.rate == 0.0:
            return grad
        grad *= _kept(self._mask)
        return grad


class SpatialDropout2D(Dropout):
    """Dropout of whole feature maps: one draw per sample and channel of ``(batch, H, W, C)`` inputs,
    as Keras's SpatialDropout2D (neighbouring pixels are correlated, so dropping single ones regularizes little)."""

    type = "spatial_dropout2d"
    keras_names = ("SpatialDropout2D",)
    keras_refuses: ClassVar[tuple[str, ...]] = ()
    keras_fixed: ClassVar[dict[str, Any]] = {"data_format": "channels_last"}

    def output_shape(self, in_shape: Shape) -> Shape:
        if len(in_shape) != 3:
            raise SpecError((), f"({self.type}) expects images (height, width, channels); received {in_shape}")
        return in_shape

    def mask_shape(self, x: np.ndarray) -> Shape:
        return (x.shape[0], 1, 1, x.shape[3])


def _kept(array: np.ndarray | None) -> np.ndarray:
    """What a training forward pass kept for backward; backward before it is a programming error."""
    if array is None:
        raise TypeError("backward() needs a forward(x, training=True) first")
    return array


def get(spec: Any) -> Layer:
    """A layer from its spec ``{"type": "dense", "units": 8, ...}``. Raises SpecError naming the field."""
    return LAYERS.from_spec(spec)
