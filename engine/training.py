"""Training: the training config, the per-epoch callbacks, and the mini-batch loop.

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
import secrets
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import losses, optimizers
from .activations import Sigmoid, Softmax
from .config import check_bool, check_choice, check_float, check_int, construct
from .errors import NonFiniteError, SpecError
from .layers import Activation, Dense, Dropout
from .metrics import decide
from .metrics import get as get_metric
from .serialize import pack, unpack

GRADIENTS = ("backprop", "finite_difference")


class EarlyStopping:
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    With ``restore_best`` the weights of the best epoch are put back when training ends
    (Keras restores them only when it stops early; a finished run deserves them too).
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 0,
        min_delta: float = 0.0,
        restore_best: bool = False,
        start_from_epoch: int = 0,
    ):
        self.monitor = _check_monitor(monitor)
        self.patience = check_int("patience", patience, minimum=0)
        self.min_delta = abs(check_float("min_delta", min_delta))
        self.restore_best = check_bool("restore_best", restore_best)
        self.start_from_epoch = check_int("start_from_epoch", start_from_epoch, minimum=0)

    def config(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "patience": self.patience,
            "min_delta": self.min_delta,
            "restore_best": self.restore_best,
            "start_from_epoch": self.start_from_epoch,
        }

    def start(self, trainer: Trainer) -> None:
        self.maximize = _maximized(self.monitor)
        self.best = -math.inf if self.maximize else math.inf
        self.best_epoch = None
        self.wait = 0
        self.best_params = np.empty_like(trainer.model.params) if self.restore_best else None

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> bool:
        if epoch < self.start_from_epoch:
            return False
        current = logs[self.monitor]
        improved = current > self.best + self.min_delta if self.maximize else current < self.best - self.min_delta
        if improved:
            self.best, self.best_epoch, self.wait = current, epoch, 0
            if self.best_params is not None:
                np.copyto(self.best_params, trainer.model.params)
            return False
        self.wait += 1
        return self.wait >= self.patience and epoch > 0

    def end(self, trainer: Trainer) -> None:
        if self.best_params is not None and self.best_epoch is not None:
            np.copyto(trainer.model.params, self.best_params)

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays = {"best_params": self.best_params} if self.best_params is not None else {}
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}, arrays

    def load_state(self, scalars, arrays) -> None:
        self.best, self.best_epoch, self.wait = scalars["best"], scalars["best_epoch"], scalars["wait"]
        if self.best_params is not None:
            np.copyto(self.best_params, arrays["best_params"])


class ReduceLROnPlateau:
    """Multiply the learning rate by ``factor`` (not below ``min_lr``) when ``monitor`` has not improved by
    ``min_delta`` for ``patience`` epochs, then wait ``cooldown`` epochs (Keras's callback and defaults)."""

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
    ):
        self.monitor = _check_monitor(monitor)
        self.factor = check_float("factor", factor, minimum=0.0, maximum=1.0, min_inclusive=False, max_inclusive=False)
        self.patience = check_int("patience", patience, minimum=0)
        self.min_delta = abs(check_float("min_delta", min_delta))
        self.cooldown = check_int("cooldown", cooldown, minimum=0)
        self.min_lr = check_float("min_lr", min_lr, minimum=0.0)

    def config(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "factor": self.factor,
            "patience": self.patience,
            "min_delta": self.min_delta,
            "cooldown": self.cooldown,
            "min_lr": self.min_lr,
        }

    def start(self, trainer: Trainer) -> None:
        self.maximize = _maximized(self.monitor)
        self.best = -math.inf if self.maximize else math.inf
        self.wait = 0
        self.cooldown_left = 0

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> bool:
        current = logs[self.monitor]
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.wait = 0
        if current > self.best + self.min_delta if self.maximize else current < self.best - self.min_delta:
            self.best, self.wait = current, 0
        elif self.cooldown_left == 0:
            self.wait += 1
            optimizer = trainer.optimizer
            if self.wait >= self.patience and optimizer.learning_rate > self.min_lr:
                reduced = max(optimizer.learning_rate * self.factor, self.min_lr)
                optimizer.lr_scale *= reduced / optimizer.learning_rate
                optimizer.learning_rate = reduced
                self.cooldown_left, self.wait = self.cooldown, 0
        return False

    def end(self, trainer: Trainer) -> None:
        pass

    def state(self):
        return {"best": self.best, "wait": self.wait, "cooldown_left": self.cooldown_left}, {}

    def load_state(self, scalars, arrays) -> None:
        self.best, self.wait, self.cooldown_left = scalars["best"], scalars["wait"], scalars["cooldown_left"]


def _check_monitor(monitor: Any) -> str:
    if not isinstance(monitor, str):
        raise SpecError("monitor", f"must be the name of a logged value such as 'val_loss'; received {monitor!r}")
    return monitor


def _maximized(monitor: str) -> bool:
    return monitor.removeprefix("val_") in ("accuracy", "r2")


class TrainingConfig:
    """Everything about how to train, from the spec's ``training`` object (Keras's defaults).

    ``loss`` left out is chosen from the task and the output layer at fit time (see
    ``Trainer.resolve_loss``); ``seed`` left out is drawn once here and kept, so the
    saved config reproduces the run.
    """

    def __init__(
        self,
        loss: Any = None,
        optimizer: Any = "rmsprop",
        epochs: int = 1,
        batch_size: int = 32,
        validation_split: float = 0.0,
        shuffle: bool = True,
        seed: int | None = None,
        metrics: list[str] | None = None,
        class_weight: dict[str, float] | str | None = None,
        early_stopping: dict[str, Any] | None = None,
        reduce_lr_on_plateau: dict[str, Any] | None = None,
        gradient: str = "backprop",
    ):
        self.loss = None if loss is None else _within("loss", losses.get, loss)
        self.optimizer = _within("optimizer", optimizers.get, optimizer).config()
        self.epochs = check_int("epochs", epochs)
        self.batch_size = check_int("batch_size", batch_size)
        self.validation_split = check_float(
            "validation_split", validation_split, minimum=0.0, maximum=1.0, max_inclusive=False
        )
        if not isinstance(shuffle, bool):
            raise SpecError("shuffle", f"must be true or false; received shuffle={shuffle!r}")
        self.shuffle = shuffle
        self.seed = secrets.randbelow(2**31) if seed is None else check_int("seed", seed, minimum=0, maximum=2**63 - 1)
        if metrics is None:
            metrics = []
        if not isinstance(metrics, (list, tuple)):
            raise SpecError("metrics", f"must be a list of metric names; received {metrics!r}")
        for i, name in enumerate(metrics):
            _within(("metrics", i), get_metric, name)
        self.metrics = list(dict.fromkeys(metrics))
        self.class_weight = _check_class_weight(class_weight)
        self.early_stopping = (
            None
            if early_stopping is None
            else _within("early_stopping", lambda c: construct(EarlyStopping, _object(c)), early_stopping)
        )
        self.reduce_lr_on_plateau = (
            None
            if reduce_lr_on_plateau is None
            else _within(
                "reduce_lr_on_plateau", lambda c: construct(ReduceLROnPlateau, _object(c)), reduce_lr_on_plateau
            )
        )
        self.gradient = check_choice("gradient", gradient, GRADIENTS)

    def config(self) -> dict[str, Any]:
        return {
            "loss": self.loss.spec() if self.loss is not None else None,
            "optimizer": self.optimizer,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "validation_split": self.validation_split,
            "shuffle": self.shuffle,
            "seed": self.seed,
            "metrics": self.metrics,
            "class_weight": self.class_weight,
            "early_stopping": self.early_stopping.config() if self.early_stopping else None,
            "reduce_lr_on_plateau": self.reduce_lr_on_plateau.config() if self.reduce_lr_on_plateau else None,
            "gradient": self.gradient,
        }

    def monitored(self) -> list[tuple[str, str]]:
        """(field, monitored name) for each callback that watches a log entry."""
        watched = []
        if self.early_stopping:
            watched.append(("early_stopping", self.early_stopping.monitor))
        if self.reduce_lr_on_plateau:
            watched.append(("reduce_lr_on_plateau", self.reduce_lr_on_plateau.monitor))
        return watched


def _object(config: Any) -> dict[str, Any]:
    if config is True:
        return {}
    if not isinstance(config, dict):
        raise SpecError((), f"must be an object; received {config!r}")
    return config


def _check_class_weight(class_weight: Any) -> dict[str, float] | str | None:
    if class_weight is None or class_weight == "balanced":
        return class_weight
    if not isinstance(class_weight, dict):
        raise SpecError(
            "class_weight", f"must be 'balanced' or an object of class -> weight; received {class_weight!r}"
        )
    return {
        str(k): _within("class_weight", lambda v, k=str(k): check_float(k, v, minimum=0.0), v)
        for k, v in class_weight.items()
    }


def _within(field, factory, value):
    try:
        return factory(value)
    except SpecError as error:
        raise error.within(*(field if isinstance(field, tuple) else (field,))) from None


class History:
    """Every logged value per epoch: ``history["loss"][i]`` is the training loss of epoch ``epoch[i]``."""

    def __init__(self):
        self.epoch: list[int] = []
        self.history: dict[str, list[float]] = {}

    def append(self, epoch: int, logs: dict[str, float]) -> None:
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    def state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "history": self.history}

    def load_state(self, state: dict[str, Any]) -> None:
        self.epoch, self.history = list(state["epoch"]), {k: list(v) for k, v in state["history"].items()}


class Trainer:
    """Fits ``model`` on ``x, y`` with ``model.training``; ``run`` does the epochs."""

    def __init__(self, model, x, y, task: str | None = None, validation_data=None):
        if model.training is None:
            model.training = TrainingConfig()
        self.model = model
        self.config = config = model.training
        self.x = model.check_inputs(x)
        init_stream, split_stream, train_stream = np.random.SeedSequence(config.seed).spawn(3)
        self.rng = np.random.Generator(np.random.PCG64(train_stream))

        # A model that already has weights keeps the classes and input scaling they were trained with.
        resuming = model.built
        encoded = model.encode_targets(y, len(self.x)) if resuming else model.encode_fit_targets(y, len(self.x), task)
        self.task = model.task
        classification = self.task == "classification"
        self.y_index = encoded if classification else None
        if validation_data is not None:
            self.train_rows = row_indices(len(self.x))
            x_val = model.check_inputs(validation_data[0], name="validation_data")
            if x_val.shape[1] != self.x.shape[1]:
                raise SpecError("validation_data", f"has {x_val.shape[1]} features but X has {self.x.shape[1]}")
            y_val = model.encode_targets(validation_data[1], len(x_val))
        elif config.validation_split > 0:
            self.train_rows, val_rows = split(
                len(self.x),
                config.validation_split,
                np.random.Generator(np.random.PCG64(split_stream)),
                encoded if classification else None,
            )
            x_val, y_val = self.x[val_rows], encoded[val_rows]
        else:
            self.train_rows, x_val, y_val = row_indices(len(self.x)), None, None
        if not resuming:
            model.fit_scaler(self.x, self.train_rows)

        self.loss = check_training(model, self.task, model.target_width(encoded), has_validation=x_val is not None)
        self.metrics = [get_metric(name) for name in config.metrics]
        if not model.built or model.n_features != self.x.shape[1]:
            model.allocate(self.x.shape[1], np.random.Generator(np.random.PCG64(init_stream)))
        self.ops, self.train_loss = self.training_graph()
        self.targets = self.train_loss.targets(encoded, model.n_outputs, model.dtype, classification)
        self.sample_weight = self.class_sample_weights(encoded) if config.class_weight is not None else None

        self.validation = None
        if x_val is not None:
            if model.scaler is not None:
                x_val = model.scaler.transform_(x_val.copy() if validation_data is not None else x_val)
            self.validation = (x_val, y_val, self.loss.targets(y_val, model.n_outputs, model.dtype, classification))
        self.optimizer = optimizers.get(config.optimizer)
        self.optimizer.build([model.params], [model.grads], [g for op in self.ops for g in op.grads.values()])
        if isinstance(self.optimizer.schedule, optimizers.CosineDecay):
            self.optimizer.schedule.epochs = config.epochs
        self.callbacks = [c for c in (config.early_stopping, config.reduce_lr_on_plateau) if c is not None]
        for callback in self.callbacks:
            callback.start(self)
        for op in self.ops:
            if isinstance(op, Dropout):
                op.rng = self.rng
        self.history = History()
        self.epoch = 0
        # Set when a callback (early stopping) ends training; kept in checkpoints, so a run resumed
        # from one taken at that epoch ends there too.
        self.finished = False
        first_dense = next(i for i, op in enumerate(self.ops) if isinstance(op, Dense))
        self.backward_ops = self.ops[first_dense:][::-1]  # nothing below the first dense layer has weights
        self.penalized = [op for op in self.ops if isinstance(op, Dense) and op.regularizer]

    # Setup ---------------------------------------------------------------------------

    def training_graph(self) -> tuple[list, losses.Loss]:
        """The operations to run and the loss to score them with.

        Softmax followed by categorical cross-entropy, and sigmoid followed by binary
        cross-entropy, are trained from the logits: the activation is left out and the loss
        takes ``from_logits=True``, whose gradient ``p - y`` is exact and finite where the
        chained derivatives would divide by a vanishing probability.
        """
        ops, loss, last = self.model.ops, self.loss, self.model.ops[-1]
        if isinstance(last, Activation) and not loss.from_logits:
            if isinstance(loss, losses.CategoricalCrossentropy) and isinstance(last.fn, Softmax):
                return ops[:-1], type(loss)(from_logits=True)
            if isinstance(loss, losses.BinaryCrossentropy) and isinstance(last.fn, Sigmoid):
                return ops[:-1], losses.BinaryCrossentropy(from_logits=True)
        return ops, loss

    def class_sample_weights(self, y_index: np.ndarray) -> np.ndarray:
        """Per-sample weights from ``class_weight``: given per label, or ``"balanced"`` (n / (k * count))."""
        classes = self.model.encoder.classes.tolist()
        if self.config.class_weight == "balanced":
            counts = np.bincount(y_index[self.train_rows], minlength=len(classes))
            weights = len(self.train_rows) / (len(classes) * np.maximum(counts, 1))
        else:
            given = self.config.class_weight
            unknown = set(given) - {str(c) for c in classes}
            if unknown:
                raise SpecError(
                    ("training", "class_weight"), f"unknown class {sorted(unknown)[0]!r}; the classes are {classes}"
                )
            weights = np.array([given.get(str(c), 1.0) for c in classes])
        return weights.astype(self.model.dtype)[y_index]

    # The loop ------------------------------------------------------------------------

    def run(
        self, on_epoch=None, checkpoint_every: int = 0, on_checkpoint: Callable[[bytes], None] | None = None
    ) -> History:
        # A diverging run overflows on its way to inf/NaN; the check after each epoch reports it
        # as a NonFiniteError, so NumPy's warnings would only be noise (or, under -W error, mask it).
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return self._run(on_epoch, checkpoint_every, on_checkpoint)

    def _run(self, on_epoch, checkpoint_every, on_checkpoint) -> History:
        config = self.config
        while self.epoch < config.epochs and not self.finished:
            epoch = self.epoch
            self.optimizer.start_epoch(epoch)
            rows = self.rng.permutation(self.train_rows) if config.shuffle else self.train_rows
            logs = self.train_epoch(rows)
            if self.validation is not None:
                logs.update({f"val_{k}": v for k, v in self.score(*self.validation).items()})
            logs["learning_rate"] = self.optimizer.learning_rate
            if not math.isfinite(logs["loss"]) or not np.isfinite(self.model.params).all():
                raise NonFiniteError(
                    f"training diverged at epoch {epoch + 1}: the loss is {logs['loss']}. "
                    "Scale the inputs (input_scaling 'standard') or lower the learning_rate."
                )
            self.history.append(epoch, logs)
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
        model, loss, optimizer = self.model, self.train_loss, self.optimizer
        x, targets, weights, scaler = self.x, self.targets, self.sample_weight, model.scaler
        size = self.config.batch_size
        batch = self._batch_buffer(min(size, len(rows)))
        finite_difference = self.config.gradient == "finite_difference"
        for metric in self.metrics:
            metric.reset()
        threshold = 0.0 if loss.from_logits else 0.5
        total = 0.0
        for start in range(0, len(rows), size):
            index = rows[start : start + size]
            # mode="clip" lets take() write straight into the buffer ("raise" would buffer a copy).
            xb = np.take(x, index, axis=0, out=batch[: len(index)], mode="clip")
            if scaler is not None:
                scaler.transform_(xb)
            tb = targets[index]
            wb = None if weights is None else weights[index]
            if finite_difference:
                value, out = self.finite_difference_step(xb, tb, wb)
            else:
                value, out = self.backprop_step(xb, tb, wb)
            optimizer.step()
            total += value * len(index)
            for metric in self.metrics:
                if self.task == "classification":
                    metric.update(decide(out, threshold), self.y_index[index])
                else:
                    metric.update(out, tb)
        logs = {"loss": total / len(rows)}
        logs.update({metric.name: metric.result() for metric in self.metrics})
        return logs

    def backprop_step(self, xb, tb, wb) -> tuple[float, np.ndarray]:
        """Forward, loss, backward: fills ``model.grads``; returns the batch loss and the outputs."""
        out = xb
        for op in self.ops:
            out = op.forward(out, True)
        value, grad = self.train_loss.value_and_grad(out, tb, wb)
        for op in self.backward_ops:
            grad = op.backward(grad)
        for op in self.penalized:
            value += op.penalty()
        return value, out

    def finite_difference_step(self, xb, tb, wb) -> tuple[float, np.ndarray]:
        """Like ``backprop_step`` but the gradient comes from central differences, one weight at a time."""
        value, out = self.backprop_step(xb, tb, wb)  # draws the dropout masks and gives the logged outputs
        out = out.copy()
        finite_difference(lambda: self.batch_loss(xb, tb, wb), self.model.params, self.model.grads, self.ops)
        return value, out

    def batch_loss(self, xb, tb, wb) -> float:
        """The training loss of one batch at the current weights (dropout masks as last drawn)."""
        out = xb
        for op in self.ops:
            out = op.forward(out, True)
        return self.train_loss.value(out, tb, wb) + sum(op.penalty() for op in self.penalized)

    def _batch_buffer(self, rows: int) -> np.ndarray:
        buffer = getattr(self, "_batch", None)
        if buffer is None or buffer.shape[0] < rows:
            buffer = self._batch = np.empty((rows, self.x.shape[1]), dtype=self.model.dtype)
        return buffer

    def score(self, x_scaled: np.ndarray, y_encoded: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        """Loss (with regularization) and metrics of the model on already scaled inputs."""
        return score(self.model, self.loss, self.metrics, x_scaled, y_encoded, targets)

    # Checkpoints ---------------------------------------------------------------------

    def checkpoint(self) -> bytes:
        """Weights, optimizer and callback state, epoch, history and RNG state, as npz bytes."""
        opt_scalars, opt_arrays = self.optimizer.state()
        arrays = {"params": self.model.params, **{f"optimizer.{k}": v for k, v in opt_arrays.items()}}
        callbacks = []
        for i, callback in enumerate(self.callbacks):
            scalars, extra = callback.state()
            callbacks.append(scalars)
            arrays.update({f"callback.{i}.{k}": v for k, v in extra.items()})
        meta = {
            "epoch": self.epoch,
            "finished": self.finished,
            "seed": self.config.seed,
            "rng": self.rng.bit_generator.state,
            "optimizer": opt_scalars,
            "callbacks": callbacks,
            "history": self.history.state(),
        }
        return pack(arrays, meta)

    def restore(self, blob: bytes) -> None:
        """Continue from a checkpoint of the same model, config and data."""
        arrays, meta = unpack(blob)
        if meta["seed"] != self.config.seed or arrays["params"].shape != self.model.params.shape:
            raise SpecError("checkpoint", "was taken from a different model or training config")
        np.copyto(self.model.params, arrays["params"])
        self.optimizer.load_state(
            meta["optimizer"],
            {k.removeprefix("optimizer."): v for k, v in arrays.items() if k.startswith("optimizer.")},
        )
        for i, (callback, scalars) in enumerate(zip(self.callbacks, meta["callbacks"])):
            prefix = f"callback.{i}."
            callback.load_state(scalars, {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)})
        self.rng.bit_generator.state = meta["rng"]
        self.history.load_state(meta["history"])
        self.epoch = int(meta["epoch"])
        self.finished = bool(meta.get("finished", False))


def check_training(model, task: str, width: int, has_validation: bool) -> losses.Loss:
    """Settle the loss for ``task`` and check everything that depends on the data before any training:
    the loss fits the task and the output layer, the output layer has ``width`` units (classes or
    target columns), the metrics fit the task, and monitored values will be logged.

    Records the settled loss in ``model.training`` and returns it; raises SpecError naming the field.
    """
    config = model.training
    if task == "regression" and config.loss is not None and config.loss.classification_only:
        raise SpecError(
            ("training", "loss"),
            f"{config.loss.name} is a classification loss; the targets are continuous (try 'mse', 'mae' or 'huber')",
        )
    config.loss = resolve_loss(model, task)
    model.check_head(task, width)
    for i, name in enumerate(config.metrics):
        metric = get_metric(name)
        if metric.task != task:
            raise SpecError(("training", "metrics", i), f"{name!r} is a {metric.task} metric; this is a {task} task")
    logged = log_names(config.metrics, has_validation)
    for field, monitor in config.monitored():
        if monitor not in logged:
            hint = "" if has_validation else " (val_* values need validation_split > 0)"
            raise SpecError(
                ("training", field, "monitor"),
                f"unknown {monitor!r}; training logs {', '.join(map(repr, logged))}{hint}",
            )
    return config.loss


def log_names(metric_names: list[str], has_validation: bool) -> list[str]:
    names = ["loss", *metric_names]
    return names + [f"val_{n}" for n in names] if has_validation else names


def resolve_loss(model, task: str) -> losses.Loss:
    """The configured loss, or the usual one for the task and output layer; raises SpecError when a
    cross-entropy is given outputs that are not probabilities."""
    loss, last = model.training.loss, model.ops[-1]
    head = last.fn.name if isinstance(last, Activation) else "linear"
    if loss is None:
        if task == "regression":
            return losses.MeanSquaredError()
        if head == "softmax":
            return losses.SparseCategoricalCrossentropy()
        if head == "sigmoid":
            return losses.BinaryCrossentropy()
        # Any other head outputs logits: train from them, as Keras's from_logits=True does.
        if model.n_outputs == 1:
            return losses.BinaryCrossentropy(from_logits=True)
        return losses.SparseCategoricalCrossentropy(from_logits=True)
    if isinstance(loss, losses.CategoricalCrossentropy) and not loss.from_logits and head != "softmax":
        wanted = "softmax"
    elif (
        isinstance(loss, losses.BinaryCrossentropy)
        and not loss.from_logits
        and head not in ("sigmoid", "hard_sigmoid", "softmax")
    ):
        wanted = "sigmoid"
    else:
        return loss
    raise SpecError(
        ("training", "loss"),
        f"{loss.name} takes probabilities but the output layer's activation is {head!r}: "
        f'end with {wanted!r}, or use {{"name": "{loss.name}", "from_logits": true}}',
    )


def score(model, loss, metric_list, x_scaled, y_encoded, targets) -> dict[str, float]:
    """Loss and metrics of ``model`` on scaled inputs, forward passes in chunks."""
    outs = [model.forward(x_scaled[i : i + 8192]) for i in range(0, len(x_scaled), 8192)]
    out = np.concatenate(outs) if len(outs) != 1 else outs[0]
    penalty = sum(op.penalty() for op in model.ops if isinstance(op, Dense) and op.regularizer)
    result = {"loss": loss.value(out, targets) + penalty}
    for metric in metric_list:
        pred = decide(out, 0.0 if loss.from_logits else 0.5) if model.task == "classification" else out
        result[metric.name] = metric.compute(pred, y_encoded)
    return result


def evaluate(model, x, y) -> dict[str, float]:
    """``score`` for raw inputs and targets, with the model's own loss and metrics."""
    model._require_built()
    x = model.check_inputs(x)
    y_encoded = model.encode_targets(y, len(x))
    if model.scaler is not None:
        x = model.scaler.transform_(x.copy())
    loss = model.training.loss
    classification = model.task == "classification"
    targets = loss.targets(y_encoded, model.n_outputs, model.dtype, classification)
    return score(model, loss, [get_metric(n) for n in model.training.metrics], x, y_encoded, targets)


def finite_difference(loss: Callable[[], float], params: np.ndarray, grads: np.ndarray, ops) -> None:
    """The textbook gradient: nudge each weight by +-h and measure the change in the loss.

    ``grads[i] = (L(w + h e_i) - L(w - h e_i)) / 2h`` with ``h = cbrt(eps) * max(1, |w_i|)``, the step
    that balances truncation and rounding error for central differences. Dropout masks are held
    fixed meanwhile, so every evaluation sees the same function. Costs two forward passes per weight.
    """
    dropouts = [op for op in ops if isinstance(op, Dropout)]
    for op in dropouts:
        op.freeze_mask = True
    step = float(np.cbrt(np.finfo(params.dtype).eps))
    try:
        for i in range(params.size):
            w = params[i]
            h = step * max(1.0, abs(float(w)))
            params[i] = w + h
            up, high = loss(), float(params[i])
            params[i] = w - h
            down, low = loss(), float(params[i])
            params[i] = w
            grads[i] = (up - down) / (high - low)  # the step actually taken, after rounding to the dtype
    finally:
        for op in dropouts:
            op.freeze_mask = False


def row_indices(n: int) -> np.ndarray:
    """0..n-1 as int32 when it fits: the training rows and each epoch's shuffle of them are the
    largest arrays training keeps besides the data, and half the size costs nothing."""
    return np.arange(n, dtype=np.int32 if n < 2**31 else np.intp)


def split_sizes(n: int, fraction: float, class_counts: Sequence[int] | None = None) -> tuple[int, int]:
    """``(training rows, validation rows)`` that ``split`` makes of ``n`` rows: ``fraction`` of them
    held out (at least one), or, stratified by class (``class_counts``: rows of each class), that
    fraction of each class, rounded."""
    if class_counts is None:
        n_val = max(1, int(round(n * fraction)))
    else:
        n_val = sum(int(round(count * fraction)) for count in class_counts)
    return n - n_val, n_val


def check_split(n: int, fraction: float, class_counts: Sequence[int] | None = None) -> None:
    """SpecError at ``training.validation_split`` when ``split`` would leave no training rows or no
    validation rows (a class may have none of the latter, but not every class)."""
    n_train, n_val = split_sizes(n, fraction, class_counts)
    if n_train and n_val:
        return
    how = "" if class_counts is None else f", {fraction} of each class's rows held out (rounded)"
    raise SpecError(
        ("training", "validation_split"),
        f"{fraction} of {n} rows leaves no {'training' if not n_train else 'validation'} rows: "
        f"{n_train} for training and {n_val} for validation{how}",
    )


def split(
    n: int, fraction: float, rng: np.random.Generator, labels: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation row indices: a random ``fraction`` held out, stratified by ``labels``
    (class indices) when given; as many rows as ``split_sizes`` says. Raises SpecError (``check_split``)."""
    counts = None if labels is None else np.bincount(labels).tolist()
    check_split(n, fraction, counts)
    if labels is None:
        order = rng.permutation(n)
        n_val = split_sizes(n, fraction)[1]
        return np.sort(order[n_val:]).astype(row_indices(n).dtype), np.sort(order[:n_val])
    val = []
    for c in range(labels.max() + 1):
        members = rng.permutation(np.flatnonzero(labels == c))
        val.append(members[: int(round(len(members) * fraction))])
    val_rows = np.sort(np.concatenate(val))
    train_rows = np.setdiff1d(np.arange(n), val_rows, assume_unique=True)
    return train_rows.astype(row_indices(n).dtype), val_rows
