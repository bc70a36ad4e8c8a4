"""Pooling over samples ``(*spatial, channels)``: the max or the mean of each window, channel by channel
(``max_pooling1d/2d``, ``average_pooling1d/2d``), or of the whole sample (``global_*_pooling1d/2d``).

Windows are ``convolution.Windows``; the reduction is one whole-array operation per window offset
on a strided view of the input (``np.maximum`` or ``+=``), with no copy of the windows. Max pooling
keeps the index of each window's maximum (the first one, as Keras routes the gradient of ties to
one input) and backward writes ``grad * (index == offset)`` into a strided slice of ``dx`` per
offset; average pooling writes ``grad / count`` the same way (adding, where windows overlap). With ``"same"`` padding, max pooling pads with ``-inf`` and
average pooling counts only the input values a window covers, as Keras does.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .convolution import PADDINGS, Windows
from .errors import SpecError
from .layers import Layer, Shape, _kept
from .params import Bool, Choice, IntOrTuple, Optional, Param


class Pooling(Layer):
    """The max or mean of each window of ``pool_size``, moved by ``strides`` (``pool_size`` when null)."""

    rank: ClassVar[int]
    reduce: ClassVar[str]  # "max" or "average"
    owns_output = True
    keras_fixed: ClassVar[dict[str, Any]] = {"data_format": "channels_last"}

    def __init__(self, **values: Any):
        super().__init__(**values)
        pool = self._pool_size()
        self.window_strides: Shape = self.__dict__["strides"] or pool
        self._windows: dict[Shape, Windows] = {}
        self._index: np.ndarray | None = None
        self._in_shape: Shape = ()

    def _pool_size(self) -> Shape:
        pool: Shape = self.__dict__["pool_size"]
        return pool

    def windows(self, in_shape: Shape) -> Windows:
        found = self._windows.get(in_shape)
        if found is None:
            pool = self._pool_size()
            found = self._windows[in_shape] = Windows(
                in_shape, pool, self.window_strides, (1,) * self.rank, self.__dict__["padding"], self.type
            )
        return found

    def output_shape(self, in_shape: Shape) -> Shape:
        w = self.windows(in_shape)
        return (*w.out, w.channels)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        w = self.windows(x.shape[1:])
        batch, dtype = x.shape[0], x.dtype
        maximum = self.reduce == "max"
        padded_shape = (batch, *w.padded, w.channels)
        padded_buffer = self._buffers.like("padded", padded_shape, dtype) if training else np.empty(padded_shape, dtype)
        padded = w.pad(x, padded_buffer, fill=-np.inf if maximum else 0.0)
        out_shape = (batch, *w.out, w.channels)
        out = self._buffers.like("out", out_shape, dtype) if training else np.empty(out_shape, dtype)
        # One whole-array operation per window offset, on strided views: no copy of the windows.
        offsets = [where for _, where in w.offsets()]
        np.copyto(out, padded[offsets[0]])
        if maximum:
            index = self._buffers.zeros("index", out_shape, np.dtype(np.uint16)) if training else None
            greater = self._buffers.like("greater", out_shape, np.dtype(bool)) if training else None
            for k, where in enumerate(offsets[1:], start=1):
                tap = padded[where]
                if index is not None and greater is not None:  # the first maximum wins ties, as in Keras
                    np.copyto(index, k, where=np.greater(tap, out, out=greater))
                np.maximum(out, tap, out=out)
            self._index = index
        else:
            for where in offsets[1:]:
                out += padded[where]
            out *= self._inverse_counts(w, dtype)
        if training:
            self._in_shape = x.shape[1:]
        return out

    def _inverse_counts(self, w: Windows, dtype: np.dtype[Any]) -> np.ndarray:
        """1 / the number of input values under each window (all of them without padding), ``(*out, 1)``."""
        if not w.any_padding:
            return np.asarray(1.0 / w.size, dtype=dtype)
        ones = w.pad(np.ones((1, *w.spatial, 1), dtype), np.empty((1, *w.padded, 1), dtype))
        counts = w.view(ones).reshape(*w.out, 1, w.size).sum(axis=-1)
        inverse: np.ndarray = (1.0 / counts).astype(dtype)
        return inverse

    def backward(self, grad: np.ndarray) -> np.ndarray | None:
        w = self.windows(self._in_shape)
        batch = grad.shape[0]
        shape = (batch, *w.padded, w.channels)
        # Windows that tile the input exactly write every input once: no zeroing, no adds.
        tiles = (
            not w.any_padding
            and w.strides == w.kernel
            and all(o * k == n for o, k, n in zip(w.out, w.kernel, w.spatial))
        )
        dpadded = (
            self._buffers.like("dpadded", shape, grad.dtype)
            if tiles
            else self._buffers.zeros("dpadded", shape, grad.dtype)
        )
        if self.reduce == "max":
            index = _kept(self._index)
            chosen = self._buffers.like("greater", index.shape, np.dtype(bool))
            for k, (_, where) in enumerate(w.offsets()):
                np.equal(index, k, out=chosen)
                if tiles:
                    np.multiply(grad, chosen, out=dpadded[where])
                else:
                    dpadded[where] += grad * chosen
        else:
            share = grad * self._inverse_counts(w, grad.dtype)
            for _, where in w.offsets():
                if tiles:
                    dpadded[where] = share
                else:
                    dpadded[where] += share
        return dpadded[w.inner()] if w.any_padding else dpadded


def _strides(rank: int) -> Param[Any]:
    return Param(
        Optional(IntOrTuple(rank, ge=1)), None, keras=True, doc="step between windows (null: `pool_size`, no overlap)"
    )


def _padding() -> Param[str]:
    return Param(
        Choice(PADDINGS),
        "valid",
        keras=True,
        doc='`"valid"`: windows inside the input only; `"same"`: `ceil(size / stride)` windows over the padded input',
    )


class MaxPooling2D(Pooling):
    """The maximum of each window of an image, channel by channel."""

    type = "max_pooling2d"
    rank, reduce = 2, "max"
    keras_names = ("MaxPooling2D",)
    pool_size = Param(IntOrTuple(2, ge=1), 2, keras=True, doc="window height and width")
    strides = _strides(2)
    padding = _padding()


class AveragePooling2D(Pooling):
    """The mean of each window of an image, channel by channel."""

    type = "average_pooling2d"
    rank, reduce = 2, "average"
    keras_names = ("AveragePooling2D",)
    pool_size = Param(IntOrTuple(2, ge=1), 2, keras=True, doc="window height and width")
    strides = _strides(2)
    padding = _padding()


class MaxPooling1D(Pooling):
    """The maximum of each window of a sequence, channel by channel."""

    type = "max_pooling1d"
    rank, reduce = 1, "max"
    keras_names = ("MaxPooling1D",)
    pool_size = Param(IntOrTuple(1, ge=1), 2, keras=True, doc="window length")
    strides = _strides(1)
    padding = _padding()


class AveragePooling1D(Pooling):
    """The mean of each window of a sequence, channel by channel."""

    type = "average_pooling1d"
    rank, reduce = 1, "average"
    keras_names = ("AveragePooling1D",)
    pool_size = Param(IntOrTuple(1, ge=1), 2, keras=True, doc="window length")
    strides = _strides(1)
    padding = _padding()


class GlobalPooling(Layer):
    """The max or mean over every position of a sample, channel by channel: ``(*spatial, C)`` -> ``(C,)``
    (``(1, ..., 1, C)`` with ``keepdims``)."""

    rank: ClassVar[int]
    reduce: ClassVar[str]
    keras_fixed: ClassVar[dict[str, Any]] = {"data_format": "channels_last"}

    def __init__(self, **values: Any):
        super().__init__(**values)
        self._x: np.ndarray | None = None
        self._index: np.ndarray | None = None

    def output_shape(self, in_shape: Shape) -> Shape:
        if len(in_shape) != self.rank + 1:
            axes = "(steps, channels)" if self.rank == 1 else "(height, width, channels)"
            raise SpecError((), f"({self.type}) expects samples of shape {axes}; received {in_shape}")
        channels = in_shape[-1]
        return (*(1,) * self.rank, channels) if self.__dict__["keepdims"] else (channels,)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        batch, channels = x.shape[0], x.shape[-1]
        flat = x.reshape(batch, -1, channels)
        if self.reduce == "max":
            index = np.argmax(flat, axis=1)
            out = np.take_along_axis(flat, index[:, None, :], axis=1)[:, 0, :]
            if training:
                self._index = index
        else:
            out = flat.mean(axis=1, dtype=x.dtype)
        if training:
            self._x = x
        return out.reshape((batch, *self.output_shape(x.shape[1:])))

    def backward(self, grad: np.ndarray) -> np.ndarray | None:
        x = _kept(self._x)
        batch, channels = x.shape[0], x.shape[-1]
        grad = grad.reshape(batch, 1, channels)
        positions = int(np.prod(x.shape[1:-1]))
        if self.reduce == "max":
            dx = self._buffers.zeros("dx", (batch, positions, channels), grad.dtype)
            np.put_along_axis(dx, _kept(self._index)[:, None, :], grad, axis=1)
        else:
            dx = self._buffers.like("dx", (batch, positions, channels), grad.dtype)
            np.multiply(np.ones((1, positions, 1), grad.dtype), grad / positions, out=dx)
        return dx.reshape(x.shape)


def _keepdims() -> Param[bool]:
    return Param(Bool(), False, keras=True, doc="keep the spatial axes, each of length 1")


class GlobalAveragePooling2D(GlobalPooling):
    """The mean of each channel over a whole image: `(H, W, C)` -> `(C,)`."""

    type = "global_average_pooling2d"
    rank, reduce = 2, "average"
    keras_names = ("GlobalAveragePooling2D",)
    keepdims = _keepdims()


class GlobalMaxPooling2D(GlobalPooling):
    """The maximum of each channel over a whole image: `(H, W, C)` -> `(C,)`."""

    type = "global_max_pooling2d"
    rank, reduce = 2, "max"
    keras_names = ("GlobalMaxPooling2D",)
    keepdims = _keepdims()


class GlobalAveragePooling1D(GlobalPooling):
    """The mean of each channel over a whole sequence: `(T, C)` -> `(C,)`."""

    type = "global_average_pooling1d"
    rank, reduce = 1, "average"
    keras_names = ("GlobalAveragePooling1D",)
    keepdims = _keepdims()


class GlobalMaxPooling1D(GlobalPooling):
    """The maximum of each channel over a whole sequence: `(T, C)` -> `(C,)`."""

    type = "global_max_pooling1d"
    rank, reduce = 1, "max"
    keras_names = ("GlobalMaxPooling1D",)
    keepdims = _keepdims()
