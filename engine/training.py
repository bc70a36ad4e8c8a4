"""Training: a session fits one network on one data set, epoch by epoch, and can checkpoint anywhere.

    session = TrainingSession(model, X, y)           # checks everything, sets the model up
    session.restore(checkpoint)                      # optional: continue where one was taken
    history = session.run(on_epoch=report, checkpoint_every=10, on_checkpoint=save)
    session.epoch, session.checkpoint()              # epochs done; a checkpoint of right now

``Model.fit`` is exactly that; a worker uses the session itself, to checkpoint the current
epoch when it is told to stop.

One epoch: shuffle the training rows, then for each batch gather its rows into a reused
buffer (scaling them there, so the data set is never copied), run the forward pass,
take the loss and its gradient, run the backward pass, and let the optimizer update
the flat parameter buffer. After the epoch: validation, history, callbacks (early
stopping, reduce-on-plateau, the caller's ``on_epoch``), and a checkpoint if one is due.

Randomness comes from the config's seed through three independent streams (weights,
validation split, training order and dropout), so the same seed gives bit-identical
weights, and a checkpoint holds the training stream's state to resume exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from . import archive, losses
from .activations import Sigmoid, Softmax
from .callbacks import BestWeights, History
from .errors import NonFiniteError, SpecError
from .evaluation import score
from .finite_differences import finite_difference
from .layers import Activation, Dropout, Layer
from .metrics import decide
from .metrics import get as get_metric
from .network import Network
from .optimizers import CosineDecay, Optimizer
from .splitting import row_indices, split

OnEpoch = Callable[[int, dict[str, float]], Any]
"""``on_epoch(epoch, logs)``, called after every epoch (0-based); returning True stops training."""


@contextmanager
def _quiet_overflow() -> Iterator[None]:
    # A diverging run overflows on its way to inf/NaN; the check after each epoch reports it
    # as a NonFiniteError, so NumPy's warnings would only be noise (or, under -W error, mask it).
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        yield


class TrainingSession:
    """Fits ``model`` on ``x, y`` with ``model.training``: set up here, ``run`` does the epochs.

    ``task`` is "classification" or "regression" (inferred from ``y`` and the loss when left out);
    ``validation_data`` is ``(x, y)`` to validate on instead of a ``validation_split``. Everything
    that can be checked before training is checked here, and raises SpecError.
    """

    def __init__(
        self, model: Network, x: Any, y: Any, *, task: str | None = None, validation_data: tuple[Any, Any] | None = None
    ):
        with _quiet_overflow():
            self._set_up(model, x, y, task, validation_data)

    def _set_up(
        self, model: Network, x: Any, y: Any, task: str | None, validation_data: tuple[Any, Any] | None
    ) -> None:
        self.model = model
        self.config = config = model.training
        self.x = model.check_inputs(x)
        n = len(self.x)
        init_stream, split_stream, train_stream = np.random.SeedSequence(config.seed).spawn(3)
        self.rng = np.random.Generator(np.random.PCG64(train_stream))

        # Fitting sets four things on the model, in these four calls and nowhere else: the task and
        # classes, the input scaler, the settled loss, the weights. A model that already has weights
        # (more training) keeps the task, classes and scaling they were trained with.
        fresh = not model.built
        encoded = model.fit_targets(y, n, task) if fresh else model.encode_targets(y, n)
        self.task = model.task
        classification = self.task == "classification"
        self.train_rows, x_val, y_val = self._validation_rows(validation_data, encoded, classification, split_stream)
        if fresh:
            model.fit_scaler(self.x, self.train_rows)
        self.loss = model.settle_training(str(self.task), model.target_width(encoded), has_validation=x_val is not None)
        if fresh:
            model.allocate(self.x.shape[1:], np.random.Generator(np.random.PCG64(init_stream)))

        self.y_index = encoded if classification else None
        self.metrics = [get_metric(name) for name in config.metrics]
        self.ops, self.train_loss = self.training_graph()
        self.targets = self.train_loss.targets(encoded, model.n_outputs, model.dtype, classification)
        self.sample_weight = self.class_sample_weights(encoded) if config.class_weight is not None else None
        self.validation = None
        if x_val is not None and y_val is not None:
            if model.scaler is not None:
                x_val = model.scaler.transform_(x_val.copy() if validation_data is not None else x_val)
            self.validation = (x_val, y_val, self.loss.targets(y_val, model.n_outputs, model.dtype, classification))

        self.optimizer: Optimizer = type(config.optimizer)(**config.optimizer.config())  # fresh state for each fit
        self.optimizer.build([model.weights()], [model.gradients()], [g for op in self.ops for g in op.grads.values()])
        if isinstance(self.optimizer.schedule, CosineDecay):
            self.optimizer.schedule.epochs = config.epochs
        self.callbacks = config.callbacks()
        for callback in self.callbacks:
            callback.start(self)
        for op in self.ops:
            if isinstance(op, Dropout):
                op.rng = self.rng
        self.history = History()
        # The best epoch's weights so far, for a caller that stops training and wants them (a worker's
        # cancel with keep="best"); kept in checkpoints, so a resumed run still knows them.
        self.best = BestWeights.for_training(config.early_stopping, self.validation is not None)
        self.epoch = 0
        # Set when a callback (early stopping) ends training; kept in checkpoints, so a run resumed
        # from one taken at that epoch ends there too.
        self.finished = False
        first_trained = next(i for i, op in enumerate(self.ops) if op.trainable)
        self.backward_ops = self.ops[first_trained:][::-1]  # nothing below the first trained layer has weights
        self.penalized = [op for op in self.ops if op.penalized]
        self._batch: np.ndarray | None = None

    # Setup ---------------------------------------------------------------------------

    @property
    def params(self) -> np.ndarray:
        """The flat parameter buffer being trained."""
        return self.model.weights()

    def _validation_rows(
        self,
        validation_data: tuple[Any, Any] | None,
        encoded: np.ndarray,
        classification: bool,
        stream: np.random.SeedSequence,
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The training rows, and the validation inputs and encoded targets (None without validation):
        ``validation_data``, or a ``validation_split`` drawn from ``stream`` (stratified by class)."""
        model, n = self.model, len(self.x)
        if validation_data is not None:
            x_val = model.check_inputs(validation_data[0], name="validation_data")
            if x_val.shape[1:] != self.x.shape[1:]:
                if x_val.ndim == 2 and self.x.ndim == 2:
                    raise SpecError("validation_data", f"has {x_val.shape[1]} features but X has {self.x.shape[1]}")
                raise SpecError(
                    "validation_data",
                    f"has samples of shape {list(x_val.shape[1:])} but X has {list(self.x.shape[1:])}",
                )
            return row_indices(n), x_val, model.encode_targets(validation_data[1], len(x_val))
        if self.config.validation_split > 0:
            rng = np.random.Generator(np.random.PCG64(stream))
            train_rows, val_rows = split(n, self.config.validation_split, rng, encoded if classification else None)
            return train_rows, self.x[val_rows], encoded[val_rows]
        return row_indices(n), None, None

    def training_graph(self) -> tuple[list[Layer], losses.Loss]:
        """The operations to run and the loss to score them with.

        Softmax followed by categorical cross-entropy, and sigmoid followed by binary
        cross-entropy, are trained from the logits: the activation is left out and the loss
        takes ``from_logits=True``, whose gradient ``p - y`` is exact and finite where the
        chained derivatives would divide by a vanishing probability.
        """
        ops, loss, last = self.model.ops, self.loss, self.model.ops[-1]
        if isinstance(last, Activation) and not loss.from_logits:
            if isinstance(loss, losses.CategoricalCrossentropy) and isinstance(last.activation, Softmax):
                return ops[:-1], type(loss)(from_logits=True)
            if isinstance(loss, losses.BinaryCrossentropy) and isinstance(last.activation, Sigmoid):
                return ops[:-1], losses.BinaryCrossentropy(from_logits=True)
        return ops, loss

    def class_sample_weights(self, y_index: np.ndarray) -> np.ndarray:
        """Per-sample weights from ``class_weight``: given per label, or ``"balanced"`` (n / (k * count))."""
        classes = self.model.classifier().classes.tolist()
        given = self.config.class_weight
        if isinstance(given, dict):
            unknown = set(given) - {str(c) for c in classes}
            if unknown:
                raise SpecError(
                    ("training", "class_weight"), f"unknown class {sorted(unknown)[0]!r}; the classes are {classes}"
                )
            weights = np.array([given.get(str(c), 1.0) for c in classes])
        else:  # "balanced"
            counts = np.bincount(y_index[self.train_rows], minlength=len(classes))
            weights = len(self.train_rows) / (len(classes) * np.maximum(counts, 1))
        per_sample: np.ndarray = weights.astype(self.model.dtype)[y_index]
        return per_sample

    # The loop ------------------------------------------------------------------------

    def run(
        self,
        on_epoch: OnEpoch | None = None,
        checkpoint_every: int = 0,
        on_checkpoint: Callable[[bytes], None] | None = None,
    ) -> History:
        """Train until ``epochs`` are done, a callback ends training, or ``on_epoch`` returns True;
        every ``checkpoint_every`` epochs ``on_checkpoint`` receives a checkpoint. Returns the history."""
        with _quiet_overflow():
            return self._run(on_epoch, checkpoint_every, on_checkpoint)

    def _run(
        self, on_epoch: OnEpoch | None, checkpoint_every: int, on_checkpoint: Callable[[bytes], None] | None
    ) -> History:
        config, params = self.config, self.params
        while self.epoch < config.epochs and not self.finished:
            epoch = self.epoch
            self.optimizer.start_epoch(epoch)
            rows = self.rng.permutation(self.train_rows) if config.shuffle else self.train_rows
            logs = self.train_epoch(rows)
            if self.validation is not None:
                logs.update({f"val_{k}": v for k, v in self.score(*self.validation).items()})
            logs["learning_rate"] = self.optimizer.lr
            if not math.isfinite(logs["loss"]) or not np.isfinite(params).all():
                raise NonFiniteError(
                    f"training diverged at epoch {epoch + 1}: the loss is {logs['loss']}. "
                    "Scale the inputs (input_scaling 'standard') or lower the learning_rate."
                )
            self.history.append(epoch, logs)
            self.best.update(params, epoch, logs)
            self.epoch += 1
            for callback in self.callbacks:
                self.finished = callback.on_epoch_end(self, epoch, logs) or self.finished
            if on_epoch is not None and on_epoch(epoch, logs) is True:
                break  # the caller's stop: training may go on later from a checkpoint
            if (
                on_checkpoint is not None
                and checkpoint_every
                and self.epoch % checkpoint_every == 0
                and not self.finished
            ):
                on_checkpoint(self.checkpoint())
        for callback in self.callbacks:
            callback.end(self)
        return self.history

    def train_epoch(self, rows: np.ndarray) -> dict[str, float]:
        loss, optimizer = self.train_loss, self.optimizer
        size = self.config.batch_size
        batch = self._batch_buffer(min(size, len(rows)))
        finite_difference = self.config.gradient == "finite_difference"
        for metric in self.metrics:
            metric.reset()
        threshold = 0.0 if loss.from_logits else 0.5
        total = 0.0
        for start in range(0, len(rows), size):
            index = rows[start : start + size]
            xb, tb, wb = self.gather(index, batch)
            if finite_difference:
                value, out = self.finite_difference_step(xb, tb, wb)
            else:
                value, out = self.backprop_step(xb, tb, wb)
            optimizer.step()
            total += value * len(index)
            for metric in self.metrics:
                if self.y_index is not None:
                    metric.update(decide(out, threshold), self.y_index[index])
                else:
                    metric.update(out, tb)
        logs = {"loss": total / len(rows)}
        logs.update({metric.name: metric.result() for metric in self.metrics})
        return logs

    def gather(self, index: np.ndarray, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The inputs (gathered into ``batch`` and scaled there), targets and sample weights of ``index``'s rows."""
        # mode="clip" lets take() write straight into the buffer ("raise" would buffer a copy);
        # the method spares the few microseconds of np.take's dispatch.
        xb = self.x.take(index, axis=0, out=batch[: len(index)], mode="clip")
        if self.model.scaler is not None:
            self.model.scaler.transform_(xb)
        return xb, self.targets[index], None if self.sample_weight is None else self.sample_weight[index]

    def backprop_step(self, xb: np.ndarray, tb: np.ndarray, wb: np.ndarray | None) -> tuple[float, np.ndarray]:
        """Forward, loss, backward: fills the model's gradients; returns the batch loss and the outputs."""
        out = xb
        for op in self.ops:
            out = op.forward(out, True)
        value, grad = self.train_loss.value_and_grad(out, tb, wb)
        for op in self.backward_ops:
            grad = op.backward(grad)  # type: ignore[assignment]  # only the first dense layer returns None, last
        for op in self.penalized:
            value += op.penalty()
        return value, out

    def finite_difference_step(self, xb: np.ndarray, tb: np.ndarray, wb: np.ndarray | None) -> tuple[float, np.ndarray]:
        """Like ``backprop_step`` but the gradient comes from central differences, one weight at a time."""
        value, out = self.backprop_step(xb, tb, wb)  # draws the dropout masks and gives the logged outputs
        out = out.copy()
        finite_difference(lambda: self.batch_loss(xb, tb, wb), self.params, self.model.gradients(), self.ops)
        return value, out

    def batch_loss(self, xb: np.ndarray, tb: np.ndarray, wb: np.ndarray | None) -> float:
        """The training loss of one batch at the current weights (dropout masks as last drawn)."""
        out = xb
        for op in self.ops:
            out = op.forward(out, True)
        return self.train_loss.value(out, tb, wb) + sum(op.penalty() for op in self.penalized)

    def _batch_buffer(self, rows: int) -> np.ndarray:
        if self._batch is None or self._batch.shape[0] < rows:
            self._batch = np.empty((rows, *self.x.shape[1:]), dtype=self.model.dtype)
        return self._batch

    def score(self, x_scaled: np.ndarray, y_encoded: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        """Loss (with regularization) and metrics of the model on already scaled inputs."""
        return score(self.model, self.loss, self.metrics, x_scaled, y_encoded, targets)

    # Checkpoints ---------------------------------------------------------------------

    def checkpoint(self) -> bytes:
        """Weights, optimizer and callback state, epoch, history, the best epoch's weights and RNG state, as npz bytes."""
        opt_scalars, opt_arrays = self.optimizer.state()
        arrays = {"params": self.params, **{f"optimizer.{k}": v for k, v in opt_arrays.items()}}
        if self.model.state is not None and self.model.state.size:  # moving statistics
            arrays["state"] = self.model.state
        callbacks = []
        for i, callback in enumerate(self.callbacks):
            scalars, extra = callback.state()
            callbacks.append(scalars)
            arrays.update({f"callback.{i}.{k}": v for k, v in extra.items()})
        if self.best.params is not None:
            arrays["best.params"] = self.best.params
        meta = {
            "best": {"value": self.best.best, "epoch": self.best.epoch} if self.best.epoch is not None else None,
            "epoch": self.epoch,
            "finished": self.finished,
            "seed": self.config.seed,
            "rng": self.rng.bit_generator.state,
            "optimizer": opt_scalars,
            "callbacks": callbacks,
            "history": self.history.state(),
        }
        return archive.pack(arrays, meta)

    def restore(self, blob: bytes) -> None:
        """Continue from a checkpoint of the same model, config and data; anything else raises SpecError."""
        arrays, meta = archive.unpack(blob, "checkpoint")
        params = arrays.get("params")
        if meta.get("seed") != self.config.seed or params is None or params.shape != self.params.shape:
            raise SpecError("checkpoint", "was taken from a different model or training config")
        np.copyto(self.params, params)
        state = self.model.state
        if state is not None and state.size:
            saved = arrays.get("state")
            if saved is None or saved.shape != state.shape:
                raise SpecError("checkpoint", "was taken from a different model or training config")
            np.copyto(state, saved)
        self.optimizer.load_state(
            meta["optimizer"],
            {k.removeprefix("optimizer."): v for k, v in arrays.items() if k.startswith("optimizer.")},
        )
        for i, (callback, scalars) in enumerate(zip(self.callbacks, meta["callbacks"])):
            prefix = f"callback.{i}."
            callback.load_state(scalars, {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)})
        best = meta.get("best")  # absent from checkpoints taken before it was kept
        if best is not None and "best.params" in arrays:
            self.best.best, self.best.epoch, self.best.params = (
                best["value"],
                best["epoch"],
                arrays["best.params"].copy(),
            )
        self.rng.bit_generator.state = meta["rng"]
        self.history.load_state(meta["history"])
        self.epoch = int(meta["epoch"])
        self.finished = bool(meta.get("finished", False))
