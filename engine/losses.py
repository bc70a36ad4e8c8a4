"""Losses: the batch mean of a per-sample loss, and its gradient, which includes the ``1/n``.

With sample weights ``w`` the value is ``sum_i w_i * loss_i / n`` (Keras's
``sum_over_batch_size``). Per-sample losses average over the outputs (mse, mae, huber,
binary cross-entropy) or sum over the classes (categorical cross-entropy), as in Keras.

Targets arrive as the loss wants them, prepared once per fit by ``targets()``: class
indices for the categorical cross-entropies, otherwise an array shaped like the output
(one-hot rows, or a 0/1 column, for a classification task).

Cross-entropy on probabilities is unstable where the probability is near 0 or 1, and
its gradient divided by ``p`` only to be multiplied by ``p`` again by the softmax or
sigmoid before it. So when a model ends in softmax (sigmoid) and is trained with
categorical (binary) cross-entropy, the model drops that last activation during
training and uses the loss with ``from_logits=True``: log-sum-exp for the value and
``p - y`` for the gradient, finite for any logits.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .buffers import Buffers
from .params import Bool, Configurable, Float, Param, Registry

LOSSES: Registry[Loss] = Registry("loss", title="Losses")

Result = tuple[float, np.ndarray | None]
"""A loss value and, when asked for, its gradient with respect to the outputs."""


class Loss(Configurable, registry=LOSSES):
    name: ClassVar[str]
    classification_only: ClassVar[bool] = False
    from_logits: bool = False

    def __init__(self, **values: Any):
        super().__init__(**values)
        self._buffers = Buffers()
        self._arange: np.ndarray | None = None
        self._row_starts: np.ndarray | None = None
        self._ones: np.ndarray | None = None

    def targets(self, y: np.ndarray, n_outputs: int, dtype: np.dtype[Any], classification: bool) -> np.ndarray:
        """Training targets from class indices (classification) or an ``(n, outputs)`` array of values."""
        if not classification:
            return np.asarray(y, dtype=dtype).reshape(len(y), n_outputs)
        if n_outputs == 1:
            return y.astype(dtype).reshape(-1, 1)
        one_hot = np.zeros((len(y), n_outputs), dtype=dtype)
        one_hot[np.arange(len(y)), y] = 1.0
        return one_hot

    def value(self, out: np.ndarray, target: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
        return self._compute(out, target, sample_weight, want_grad=False)[0]

    def value_and_grad(
        self, out: np.ndarray, target: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> tuple[float, np.ndarray]:
        value, grad = self._compute(out, target, sample_weight, want_grad=True)
        if grad is None:
            raise NotImplementedError(f"{self.name} gave no gradient")
        return value, grad

    def _compute(
        self, out: np.ndarray, target: np.ndarray, sample_weight: np.ndarray | None, want_grad: bool
    ) -> Result:
        raise NotImplementedError

    def _grad_buffer(self, out: np.ndarray) -> np.ndarray:
        return self._buffers.get("grad", out.shape[0], out.shape[1], out.dtype)

    def _rows(self, n: int) -> np.ndarray:
        """``arange(n)``, kept between batches."""
        if self._arange is None or len(self._arange) < n:
            self._arange = np.arange(n)
        return self._arange[:n]

    def _flat_index(self, columns: np.ndarray, width: int) -> np.ndarray:
        """``row * width + columns[row]``: one element per row of a C-contiguous ``(n, width)`` batch,
        as an index into its flat view. One-dimensional indexing with it costs a fraction of
        ``batch[arange(n), columns]``, and small batches feel that."""
        n = len(columns)
        starts = self._row_starts
        if starts is None or len(starts) < n or (n > 1 and starts[1] != width):
            starts = self._row_starts = np.arange(n) * width
        index: np.ndarray = np.add(starts[:n], columns)
        return index

    def _row_sums(self, x: np.ndarray) -> np.ndarray:
        """``x.sum(axis=1)`` as ``x @ ones``: BLAS sums a few columns per row in a third of the time."""
        ones = self._ones
        if ones is None or len(ones) != x.shape[1] or ones.dtype != x.dtype:
            ones = self._ones = np.ones(x.shape[1], dtype=x.dtype)
        sums: np.ndarray = x @ ones
        return sums


def _mean(per_sample: np.ndarray, sample_weight: np.ndarray | None) -> float:
    # np.add.reduce rather than .mean(): a few microseconds less per batch, which small models feel.
    if sample_weight is None:
        return float(np.add.reduce(per_sample)) / len(per_sample)
    return float(np.dot(per_sample, sample_weight)) / len(per_sample)


def _scale_rows(grad: np.ndarray, factor: float, sample_weight: np.ndarray | None) -> np.ndarray:
    grad *= factor
    if sample_weight is not None:
        grad *= sample_weight[:, None]
    return grad


FROM_LOGITS = "the outputs are logits, not probabilities (predictions then apply the sigmoid or softmax)"


class MeanSquaredError(Loss):
    """mean((y_pred - y)^2);  grad = 2 (y_pred - y) / (n k)."""

    name = "mse"
    keras_names = ("mean_squared_error",)

    def _compute(
        self, out: np.ndarray, target: np.ndarray, sample_weight: np.ndarray | None, want_grad: bool
    ) -> Result:
        n, k = out.shape
        diff = np.subtract(out, target, out=self._grad_buffer(out))
        if sample_weight is None:
            value = float(np.vdot(diff, diff)) / (n * k)
        else:
            value = _mean(np.einsum("ij,ij->i", diff, diff) / k, sample_weight)
        return value, (_scale_rows(diff, 2.0 / (n * k), sample_weight) if want_grad else None)


class MeanAbsoluteError(Loss):
    """mean|y_pred - y|;  grad = sign(y_pred - y) / (n k)."""

    name = "mae"
    keras_names = ("mean_absolute_error",)

    def _compute(
        self, out: np.ndarray, target: np.ndarray, sample_weight: np.ndarray | None, want_grad: bool
    ) -> Result:
        n, k = out.shape
        diff = np.subtract(out, target, out=self._grad_buffer(out))
        value = _mean(np.abs(diff).mean(axis=1), sample_weight)
        return value, (_scale_rows(np.sign(diff, out=diff), 1.0 / (n * k), sample_weight) if want_grad else None)


class Huber(Loss):
    """mean of e^2/2 where |e| <= delta, else delta (|e| - delta/2);  grad = clip(e, -delta, delta) / (n k)."""

    name = "huber"
    keras_names = ("huber_loss",)
    delta = Param(Float(gt=0.0), 1.0, keras=True, omit_default=True, doc="where the square turns linear")

    def _compute(
        self, out: np.ndarray, target: np.ndarray, sample_weight: np.ndarray | None, want_grad: bool
    ) -> Result:
        n, k = out.shape
        d = self.delta
        err = np.subtract(out, target, out=self._grad_buffer(out))
        abs_err = np.abs(err)
        per_element = np.where(abs_err <= d, 0.5 * err * err, d * (abs_err - 0.5 * d))
        value = _mean(per_element.mean(axis=1), sample_weight)
        return value, (_scale_rows(np.clip(err, -d, d, out=err), 1.0 / (n * k), sample_weight) if want_grad else None)


class BinaryCrossentropy(Loss):
    """mean over outputs of -(y log p + (1 - y) log(1 - p)).

    From logits z: max(z, 0) - z y + log(1 + exp(-|z|)), gradient (sigmoid(z) - y) / (n k).
    From probabilities: p clipped to [eps, 1 - eps], eps from the dtype.
    """

    name = "binary_crossentropy"
    classification_only = True
    from_logits = Param(Bool(), False, keras=True, omit_default=True, doc=FROM_LOGITS)

    def _compute(
        self, out: np.ndarray, target: np.ndarray, sample_weight: np.ndarray | None, want_grad: bool
    ) -> Result:
        n, k = out.shape
        if self.from_logits:
            per_element = np.maximum(out, 0) - out * target + np.log1p(np.exp(-np.abs(out)))
            value = _mean(per_element.mean(axis=1), sample_weight)
            if not want_grad:
                return value, None
            grad = np.multiply(out, 0.5, out=self._grad_buffer(out))
            np.tanh(grad, out=grad)  # sigmoid(z) = (1 + tanh(z/2)) / 2, which cannot overflow
            grad += 1.0
            grad *= 0.5
            grad -= target
            return value, _scale_rows(grad, 1.0 / (n * k), sample_weight)
        eps = np.finfo(out.dtype).eps
        p = np.clip(out, eps, 1.0 - eps)
        per_element = -(target * np.log(p) + (1.0 - target) * np.log1p(-p))
        value = _mean(per_element.mean(axis=1), sample_weight)
        if not want_grad:
            return value, None
        grad = self._grad_buffer(out)
        np.divide(p - target, p * (1.0 - p), out=grad)
        grad *= (out > eps) & (out < 1.0 - eps)  # the clip is flat outside its range
        return value, _scale_rows(grad, 1.0 / (n * k), sample_weight)


class CategoricalCrossentropy(Loss):
    """-log p[y] per sample, for class indices y (one-hot targets are turned into indices by the model).

    From logits z: logsumexp(z) - z[y], gradient (softmax(z) - onehot(y)) / n.
    From probabilities: p[y] clipped to [eps, 1], gradient -1 / (n p[y]) at the target.
    """

    name = "categorical_crossentropy"
    classification_only = True
    from_logits = Param(Bool(), False, keras=True, omit_default=True, doc=FROM_LOGITS)

    def targets(self, y: np.ndarray, n_outputs: int, dtype: np.dtype[Any], classification: bool) -> np.ndarray:
        return np.asarray(y, dtype=np.intp)

    def _compute(
        self, out: np.ndarray, target: np.ndarray, sample_weight: np.ndarray | None, want_grad: bool
    ) -> Result:
        n, k = out.shape
        if self.from_logits:
            grad = self._grad_buffer(out)
            # The row maxima, picked at their argmax: a reduction along rows of a few classes is slower.
            top = np.ravel(out).take(self._flat_index(out.argmax(axis=1), k))
            np.subtract(out, top[:, None], out=grad)
            flat = grad.reshape(-1)  # a view: the buffer is C-contiguous
            at_target = self._flat_index(target, k)
            shifted_target = flat[at_target]
            np.exp(grad, out=grad)
            total = self._row_sums(grad)
            # -log softmax(z)[y] = log sum exp(z - max) - (z[y] - max): finite for any logits.
            per_sample = np.log(total)
            per_sample -= shifted_target
            value = _mean(per_sample, sample_weight)
            if not want_grad:
                return value, None
            total *= n  # folds the batch mean into the softmax normalization
            grad /= total[:, None]
            flat[at_target] -= 1.0 / n
            if sample_weight is not None:
                grad *= sample_weight[:, None]
            return value, grad
        rows = self._rows(n)
        eps = np.finfo(out.dtype).eps
        picked = np.clip(out[rows, target], eps, 1.0)
        value = _mean(-np.log(picked), sample_weight)
        if not want_grad:
            return value, None
        grad = self._grad_buffer(out)
        grad.fill(0.0)
        grad[rows, target] = np.where(out[rows, target] > eps, -1.0 / picked, 0.0)
        return value, _scale_rows(grad, 1.0 / n, sample_weight)


class SparseCategoricalCrossentropy(CategoricalCrossentropy):
    """The same loss; the name says the targets are integer labels rather than one-hot rows."""

    name = "sparse_categorical_crossentropy"


def get(spec: Any) -> Loss:
    """A loss from ``"mse"`` or ``{"name": "huber", "delta": 2.0}``. Raises SpecError."""
    return LOSSES.from_spec(spec)
