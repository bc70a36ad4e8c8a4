"""Convolutions over samples of shape ``(*spatial, channels)``: ``conv1d`` on ``(steps, channels)``,
``conv2d`` on ``(height, width, channels)`` (channels last, Keras's default).

Forward is im2col and one GEMM: a strided view of every window (``sliding_window_view``, then
strides and dilation by slicing the view) is copied once into a reused ``(outputs, window)``
matrix whose columns run ``(*kernel, channels)``, the order of a Keras kernel
``(*kernel_size, channels_in, filters)`` reshaped to ``(window, filters)``; then
``out = cols @ kernel``. Backward: ``dkernel = cols^T dout`` and ``dcols = dout kernel^T``, and
col2im adds each kernel offset's slice of ``dcols`` into a strided slice of ``dx`` (a handful of
whole-array adds, one per kernel offset; ``np.add.at`` would be ten times slower).

``"same"`` padding is Keras's: the output has ``ceil(size / stride)`` positions and the padding
is split with the odd element at the end. The pooling layers (``pooling.py``) use the same
windows.
"""

from __future__ import annotations

import itertools
from typing import Any, ClassVar

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .activations import ACTIVATIONS
from .errors import SpecError
from .initializers import INITIALIZERS
from .layers import Layer, Regularizer, Shape, _kept, with_activation
from .params import Bool, Choice, Component, Int, IntOrTuple, Nested, Optional, Param

PADDINGS = ("valid", "same")


def output_length(size: int, kernel: int, stride: int, dilation: int, padding: str) -> int:
    """Positions along one axis (0 when a ``"valid"`` window does not fit)."""
    if padding == "same":
        return -(-size // stride)
    extent = (kernel - 1) * dilation + 1
    return (size - extent) // stride + 1 if size >= extent else 0


def padding_amounts(size: int, kernel: int, stride: int, dilation: int, padding: str) -> tuple[int, int]:
    """Zeros before and after one axis: none for ``"valid"``; for ``"same"`` what makes
    ``ceil(size / stride)`` windows, the odd one after (as Keras and TensorFlow pad)."""
    if padding == "valid":
        return 0, 0
    extent = (kernel - 1) * dilation + 1
    total = max((output_length(size, kernel, stride, dilation, padding) - 1) * stride + extent - size, 0)
    return total // 2, total - total // 2


class Windows:
    """The geometry of sliding windows over samples ``(*spatial, channels)``: where they start, how far
    apart their taps are, and how much padding surrounds the input."""

    def __init__(self, in_shape: Shape, kernel: Shape, strides: Shape, dilation: Shape, padding: str, who: str) -> None:
        rank = len(kernel)
        if len(in_shape) != rank + 1:
            axes = "(steps, channels)" if rank == 1 else "(height, width, channels)"
            raise SpecError((), f"({who}) expects samples of shape {axes}; received {in_shape}")
        self.kernel, self.strides, self.dilation = kernel, strides, dilation
        self.spatial, self.channels = in_shape[:rank], in_shape[rank]
        self.out = tuple(
            output_length(n, k, s, d, padding) for n, k, s, d in zip(self.spatial, kernel, strides, dilation)
        )
        if 0 in self.out:
            raise SpecError(
                (), f"({who}) a window of {list(kernel)} does not fit in samples of shape {in_shape} without padding"
            )
        self.pads = tuple(
            padding_amounts(n, k, s, d, padding) for n, k, s, d in zip(self.spatial, kernel, strides, dilation)
        )
        self.padded = tuple(n + a + b for n, (a, b) in zip(self.spatial, self.pads))
        self.any_padding = any(a or b for a, b in self.pads)
        self.size = int(np.prod(kernel))

    def pad(self, x: np.ndarray, out: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """``x`` inside a border of ``fill`` (the buffer ``out``), or ``x`` itself without padding."""
        if not self.any_padding:
            return x
        out.fill(fill)
        out[self.inner()] = x
        return out

    def inner(self) -> tuple[slice, ...]:
        """The slice of a padded array that holds the input."""
        return (slice(None), *(slice(a, a + n) for (a, _), n in zip(self.pads, self.spatial)), slice(None))

    def view(self, padded: np.ndarray) -> np.ndarray:
        """Every window of ``padded`` without copying: ``(batch, *out, channels, *kernel)``."""
        rank = len(self.kernel)
        extent = tuple((k - 1) * d + 1 for k, d in zip(self.kernel, self.dilation))
        windows = sliding_window_view(padded, extent, axis=tuple(range(1, rank + 1)))
        starts = tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(self.out, self.strides))
        taps = tuple(slice(None, None, d) for d in self.dilation)
        return windows[(slice(None), *starts, slice(None), *taps)]

    def offsets(self) -> list[tuple[tuple[int, ...], tuple[slice, ...]]]:
        """Each kernel offset, and the slice of the padded input its tap reads at every output position."""
        result = []
        for offset in itertools.product(*(range(k) for k in self.kernel)):
            where = tuple(
                slice(i * d, i * d + (o - 1) * s + 1, s)
                for i, d, o, s in zip(offset, self.dilation, self.out, self.strides)
            )
            result.append((offset, (slice(None), *where, slice(None))))
        return result


def im2col(windows: Windows, padded: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Copy every window of ``padded`` into ``out`` ``(batch, *out, *kernel, channels)``; returns it
    as the ``(batch * positions, window)`` matrix."""
    rank = len(windows.kernel)
    view = windows.view(padded)  # (batch, *out, channels, *kernel)
    order = (0, *range(1, rank + 1), *range(rank + 2, 2 * rank + 2), rank + 1)
    np.copyto(out, view.transpose(order))
    return out.reshape(-1, windows.size * windows.channels)


def col2im(windows: Windows, dcols: np.ndarray, dpadded: np.ndarray) -> np.ndarray:
    """The adjoint of ``im2col``: ``dcols`` ``(batch, *out, *kernel, channels)`` added into the zeroed
    ``dpadded``, one strided add per kernel offset; returns the gradient of the unpadded input."""
    dpadded.fill(0)
    rank = len(windows.kernel)
    for offset, where in windows.offsets():
        dpadded[where] += dcols[(slice(None),) * (rank + 1) + offset]
    return dpadded[windows.inner()] if windows.any_padding else dpadded


class Convolution(Layer):
    """``out[b, p, f] = sum over the window at p of x * kernel[..., f] + bias[f]``, then the activation."""

    rank: ClassVar[int]
    owns_output = True
    keras_refuses = ("bias_regularizer", "activity_regularizer", "kernel_constraint", "bias_constraint")
    keras_fixed: ClassVar[dict[str, Any]] = {"data_format": "channels_last", "groups": 1}

    filters: int
    kernel_size: tuple[int, ...]
    strides: tuple[int, ...]
    padding: str
    dilation_rate: tuple[int, ...]
    use_bias: bool
    activation: Any
    kernel_initializer: Any
    bias_initializer: Any
    kernel_regularizer: Regularizer | None

    def __init__(self, **values: Any):
        super().__init__(**values)
        if any(s > 1 for s in self.strides) and any(d > 1 for d in self.dilation_rate):
            raise SpecError("dilation_rate", "strides and dilation_rate cannot both be above 1 (as in Keras)")
        self._windows: dict[Shape, Windows] = {}
        self._cols: np.ndarray | None = None
        self._in_shape: Shape = ()

    def windows(self, in_shape: Shape) -> Windows:
        found = self._windows.get(in_shape)
        if found is None:
            found = self._windows[in_shape] = Windows(
                in_shape, self.kernel_size, self.strides, self.dilation_rate, self.padding, self.type
            )
        return found

    def output_shape(self, in_shape: Shape) -> Shape:
        return (*self.windows(in_shape).out, self.filters)

    def working_size(self, in_shape: Shape) -> int:
        w = self.windows(in_shape)
        return int(np.prod(w.out)) * max(w.size * w.channels, self.filters)  # the im2col matrix, or the output

    def param_shapes(self, in_shape: Shape) -> dict[str, Shape]:
        channels = self.windows(in_shape).channels
        shapes: dict[str, Shape] = {"kernel": (*self.kernel_size, channels, self.filters)}
        if self.use_bias:
            shapes["bias"] = (self.filters,)
        return shapes

    def initial_values(self, in_shape: Shape, rng: np.random.Generator, dtype: np.dtype[Any]) -> dict[str, np.ndarray]:
        shapes = self.param_shapes(in_shape)
        values = {"kernel": self.kernel_initializer(shapes["kernel"], rng, dtype)}
        if self.use_bias:
            values["bias"] = self.bias_initializer((self.filters,), rng, dtype)
        return values

    @property
    def trainable(self) -> bool:
        return True

    @property
    def penalized(self) -> bool:
        return self.kernel_regularizer is not None

    def penalty(self) -> float:
        return self.kernel_regularizer.penalty(self.params["kernel"]) if self.kernel_regularizer else 0.0

    def expand(self) -> list[Layer]:
        return with_activation(self, self.activation)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        in_shape = x.shape[1:]
        w = self.windows(in_shape)
        batch, dtype = x.shape[0], x.dtype
        shape = (batch, *w.out, *w.kernel, w.channels)
        if training:
            padded = w.pad(x, self._buffers.like("padded", (batch, *w.padded, w.channels), dtype))
            cols = im2col(w, padded, self._buffers.like("cols", shape, dtype))
            out_flat = self._buffers.get("out", len(cols), self.filters, dtype)
        else:  # fresh arrays: predictions from several threads share no buffer
            padded = w.pad(x, np.empty((batch, *w.padded, w.channels), dtype))
            cols = im2col(w, padded, np.empty(shape, dtype))
            out_flat = np.empty((len(cols), self.filters), dtype)
        kernel = self.params["kernel"].reshape(-1, self.filters)
        np.matmul(cols, kernel, out=out_flat)
        if self.use_bias:
            out_flat += self.params["bias"]
        if training:
            self._cols, self._in_shape = cols, in_shape
        return out_flat.reshape((batch, *w.out, self.filters))

    def backward(self, grad: np.ndarray) -> np.ndarray | None:
        cols = _kept(self._cols)
        w = self.windows(self._in_shape)
        g = grad.reshape(-1, self.filters)
        kernel = self.params["kernel"].reshape(-1, self.filters)
        np.matmul(cols.T, g, out=self.grads["kernel"].reshape(-1, self.filters))
        if self.use_bias:
            np.add.reduce(g, axis=0, out=self.grads["bias"])
        if self.kernel_regularizer:
            self.kernel_regularizer.add_gradient(self.params["kernel"], self.grads["kernel"])
        if not self.propagate:
            return None
        batch = grad.shape[0]
        dcols = np.matmul(g, kernel.T, out=self._buffers.get("dcols", len(g), kernel.shape[0], grad.dtype))
        dpadded = self._buffers.like("dpadded", (batch, *w.padded, w.channels), grad.dtype)
        return col2im(w, dcols.reshape((batch, *w.out, *w.kernel, w.channels)), dpadded)


def _filters() -> Param[int]:
    return Param(Int(ge=1), keras=True, doc="output channels (one kernel each)")


def _padding() -> Param[str]:
    return Param(
        Choice(PADDINGS),
        "valid",
        keras=True,
        doc='`"valid"`: windows inside the input only; `"same"`: zeros around it, `ceil(size / stride)` outputs',
    )


def _activation() -> Param[Any]:
    return Param(Component(ACTIVATIONS), "linear", keras=True, doc="applied to the outputs")


def _use_bias() -> Param[bool]:
    return Param(Bool(), True, keras=True, doc="add a bias per filter")


def _kernel_initializer() -> Param[Any]:
    return Param(Component(INITIALIZERS), "glorot_uniform", keras=True, doc="the kernel's first values")


def _bias_initializer() -> Param[Any]:
    return Param(Component(INITIALIZERS), "zeros", keras=True, doc="the bias's first values")


def _kernel_regularizer() -> Param[Any]:
    return Param(
        Optional(Nested(Regularizer, {"l1": {"l1": 0.01}, "l2": {"l2": 0.01}})),
        None,
        keras=True,
        doc='adds `l1·Σ|w| + l2·Σw²` to the loss (`"l1"`, `"l2"`: a factor of 0.01)',
    )


class Conv2D(Convolution):
    """2-D convolution of ``(height, width, channels)`` samples; kernel ``(kh, kw, channels, filters)``."""

    type = "conv2d"
    rank = 2
    keras_names = ("Conv2D",)
    filters = _filters()
    kernel_size = Param(IntOrTuple(2, ge=1), keras=True, doc="window height and width")
    strides = Param(IntOrTuple(2, ge=1), 1, keras=True, doc="step between windows, down and across")
    padding = _padding()
    dilation_rate = Param(IntOrTuple(2, ge=1), 1, keras=True, doc="spacing between a window's taps")
    activation = _activation()
    use_bias = _use_bias()
    kernel_initializer = _kernel_initializer()
    bias_initializer = _bias_initializer()
    kernel_regularizer = _kernel_regularizer()


class Conv1D(Convolution):
    """1-D convolution of ``(steps, channels)`` samples; kernel ``(k, channels, filters)``."""

    type = "conv1d"
    rank = 1
    keras_names = ("Conv1D",)
    filters = _filters()
    kernel_size = Param(IntOrTuple(1, ge=1), keras=True, doc="window length")
    strides = Param(IntOrTuple(1, ge=1), 1, keras=True, doc="step between windows")
    padding = _padding()
    dilation_rate = Param(IntOrTuple(1, ge=1), 1, keras=True, doc="spacing between a window's taps")
    activation = _activation()
    use_bias = _use_bias()
    kernel_initializer = _kernel_initializer()
    bias_initializer = _bias_initializer()
    kernel_regularizer = _kernel_regularizer()
