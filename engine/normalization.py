"""Batch normalization over the last axis (the features of a row, the channels of an image), as Keras.

Training: each channel is standardized with the mean and (biased) variance of the batch over every
other axis, ``xhat = (x - mean) / sqrt(var + epsilon)``, then ``out = gamma * xhat + beta``; the
moving statistics follow ``moving = momentum * moving + (1 - momentum) * batch``. Inference uses
the moving statistics instead, so the layer is then a fixed affine map.

Backward (training mode), with ``m`` values per channel and sums over them:
``dgamma = sum(dout * xhat)``, ``dbeta = sum(dout)``,
``dx = gamma / sqrt(var + eps) * (dout - dbeta / m - xhat * dgamma / m)``.

gamma and beta are trained parameters; the moving mean and variance are state (``Layer.state``):
saved with the model and in checkpoints, listed by ``get_weights()`` after gamma and beta, as Keras
lists them, and never touched by the optimizer.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .errors import SpecError
from .layers import Layer, Shape, _kept
from .params import Bool, Float, Int, Param


class BatchNormalization(Layer):
    """Standardizes each channel (the last axis) with batch statistics in training, moving ones at inference, then scales and shifts."""

    type = "batch_normalization"
    keras_names = ("BatchNormalization",)
    keras_refuses = ("beta_regularizer", "gamma_regularizer", "beta_constraint", "gamma_constraint", "renorm")
    keras_fixed: ClassVar[dict[str, Any]] = {
        "synchronized": False,
        "gamma_initializer": "Ones",
        "beta_initializer": "Zeros",
        "moving_mean_initializer": "Zeros",
        "moving_variance_initializer": "Ones",
    }
    owns_output = True
    axis = Param(Int(), -1, keras=True, doc="the normalized axis: the last (-1, or its index counted from 1)")
    momentum = Param(Float(ge=0.0, le=1.0), 0.99, keras=True, doc="weight of the old value in the moving statistics")
    epsilon = Param(Float(gt=0.0), 0.001, keras=True, doc="added to the variance before the square root")
    center = Param(Bool(), True, keras=True, doc="learn an offset beta")
    scale = Param(Bool(), True, keras=True, doc="learn a factor gamma")

    def __init__(self, **values: Any):
        super().__init__(**values)
        self._xhat: np.ndarray | None = None
        self._inverse_std: np.ndarray | None = None

    def output_shape(self, in_shape: Shape) -> Shape:
        if self.axis not in (-1, len(in_shape)):
            raise SpecError(
                "axis",
                f"only the last axis is normalized (-1, or {len(in_shape)} for samples {in_shape}); received {self.axis}",
            )
        return in_shape

    def param_shapes(self, in_shape: Shape) -> dict[str, Shape]:
        channels = (self.output_shape(in_shape)[-1],)
        return {name: channels for name, wanted in (("gamma", self.scale), ("beta", self.center)) if wanted}

    def state_shapes(self, in_shape: Shape) -> dict[str, Shape]:
        channels = (self.output_shape(in_shape)[-1],)
        return {"moving_mean": channels, "moving_variance": channels}

    def initial_values(self, in_shape: Shape, rng: np.random.Generator, dtype: np.dtype[Any]) -> dict[str, np.ndarray]:
        ones = np.ones(in_shape[-1], dtype=dtype)
        values = {"moving_variance": ones}
        if self.scale:
            values["gamma"] = ones
        return values  # beta and the moving mean start at zero

    @property
    def trainable(self) -> bool:
        return self.scale or self.center

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        channels = x.shape[-1]
        flat = x.reshape(-1, channels)
        if training:
            mean = flat.mean(axis=0)
            centered = np.subtract(flat, mean, out=self._buffers.get("xhat", len(flat), channels, x.dtype))
            variance = np.einsum("ij,ij->j", centered, centered) / len(flat)
            inverse_std = 1.0 / np.sqrt(variance + self.epsilon)
            xhat = np.multiply(centered, inverse_std, out=centered)
            self._xhat, self._inverse_std = xhat, inverse_std
            if not self.freeze_mask:
                momentum = self.momentum
                moving_mean, moving_variance = self.state["moving_mean"], self.state["moving_variance"]
                moving_mean *= momentum
                moving_mean += (1.0 - momentum) * mean
                moving_variance *= momentum
                moving_variance += (1.0 - momentum) * variance
            out = self._buffers.get("out", len(flat), channels, x.dtype)
            np.multiply(xhat, self.params["gamma"], out=out) if self.scale else np.copyto(out, xhat)
            if self.center:
                out += self.params["beta"]
            return out.reshape(x.shape)
        # Inference: one affine map per channel from the moving statistics.
        factor = 1.0 / np.sqrt(self.state["moving_variance"] + self.epsilon)
        if self.scale:
            factor = factor * self.params["gamma"]
        shift = -self.state["moving_mean"] * factor
        if self.center:
            shift = shift + self.params["beta"]
        result: np.ndarray = (flat * factor.astype(x.dtype) + shift.astype(x.dtype)).reshape(x.shape)
        return result

    def backward(self, grad: np.ndarray) -> np.ndarray | None:
        xhat, inverse_std = _kept(self._xhat), _kept(self._inverse_std)
        channels = grad.shape[-1]
        g = grad.reshape(-1, channels)
        m = len(g)
        dbeta = g.sum(axis=0)
        dgamma = np.einsum("ij,ij->j", g, xhat)
        if self.scale:
            self.grads["gamma"][...] = dgamma
        if self.center:
            self.grads["beta"][...] = dbeta
        if not self.propagate:
            return None
        factor = inverse_std * self.params["gamma"] if self.scale else inverse_std
        dx = self._buffers.get("dx", m, channels, grad.dtype)
        np.multiply(xhat, dgamma / m, out=dx)
        dx += dbeta / m
        np.subtract(g, dx, out=dx)
        dx *= factor
        return dx.reshape(grad.shape)
