"""What happens between epochs: the history of logged values, and the callbacks that watch them.

After every epoch the training session appends the epoch's logs (``loss``, the metrics,
their ``val_`` versions, ``learning_rate``) to its :class:`History`, then calls each
callback's ``on_epoch_end``; a callback that returns True ends training. A callback's
``state()`` goes into every checkpoint, so a resumed run stops and adjusts exactly where
the uninterrupted one would have.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np

from .optimizers import Optimizer
from .params import Bool, Configurable, Float, Int, Param, Text

MONITOR = Text("the name of a logged value such as 'val_loss'")


class Training(Protocol):
    """What a callback sees of the training session."""

    @property
    def params(self) -> np.ndarray: ...

    @property
    def optimizer(self) -> Optimizer: ...


class Callback(Configurable):
    """Watches the logs after each epoch; ``monitor`` names the logged value it watches."""

    monitor: Param[str]

    def start(self, training: Training) -> None:
        """Called once the session is set up, before the first epoch (or the restore of a checkpoint)."""

    def on_epoch_end(self, training: Training, epoch: int, logs: dict[str, float]) -> bool:
        """Returns True to end training after this epoch."""
        return False

    def end(self, training: Training) -> None:
        """Called when training ends, for whatever reason."""

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON-able scalars and arrays, for ``load_state`` to continue exactly."""
        return {}, {}

    def load_state(self, scalars: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        pass

    def maximized(self) -> bool:
        """Accuracy and r2 improve upwards; every loss and error downwards."""
        return self.monitor.removeprefix("val_") in ("accuracy", "r2")

    def improved(self, current: float, best: float, min_delta: float) -> bool:
        return current > best + min_delta if self.maximized() else current < best - min_delta


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    With ``restore_best`` the weights of the best epoch are put back when training ends
    (Keras restores them only when it stops early; a finished run deserves them too).
    """

    monitor = Param(MONITOR, "val_loss", keras=True, doc="the logged value to watch")
    patience = Param(Int(ge=0), 0, keras=True, doc="epochs without improvement before stopping")
    min_delta = Param(Float(), 0.0, keras=True, doc="the smallest change that counts (its absolute value)")
    restore_best = Param(
        Bool(), False, keras="restore_best_weights", doc="put back the best epoch's weights at the end"
    )
    start_from_epoch = Param(Int(ge=0), 0, keras=True, doc="epochs to train before watching")

    def __init__(self, **values: Any):
        super().__init__(**values)
        self.min_delta = abs(self.min_delta)
        self.best = math.inf
        self.best_epoch: int | None = None
        self.wait = 0
        self.best_params: np.ndarray | None = None

    def start(self, training: Training) -> None:
        self.best = -math.inf if self.maximized() else math.inf
        self.best_epoch = None
        self.wait = 0
        self.best_params = np.empty_like(training.params) if self.restore_best else None

    def on_epoch_end(self, training: Training, epoch: int, logs: dict[str, float]) -> bool:
        if epoch < self.start_from_epoch:
            return False
        current = logs[self.monitor]
        if self.improved(current, self.best, self.min_delta):
            self.best, self.best_epoch, self.wait = current, epoch, 0
            if self.best_params is not None:
                np.copyto(self.best_params, training.params)
            return False
        self.wait += 1
        return self.wait >= self.patience and epoch > 0

    def end(self, training: Training) -> None:
        if self.best_params is not None and self.best_epoch is not None:
            np.copyto(training.params, self.best_params)

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays = {"best_params": self.best_params} if self.best_params is not None else {}
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}, arrays

    def load_state(self, scalars: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.best, self.best_epoch, self.wait = scalars["best"], scalars["best_epoch"], scalars["wait"]
        if self.best_params is not None:
            np.copyto(self.best_params, arrays["best_params"])


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` (not below ``min_lr``) when ``monitor`` has not improved by
    ``min_delta`` for ``patience`` epochs, then wait ``cooldown`` epochs (Keras's callback and defaults)."""

    monitor = Param(MONITOR, "val_loss", keras=True, doc="the logged value to watch")
    factor = Param(Float(gt=0.0, lt=1.0), 0.1, keras=True, doc="the learning rate's multiplier")
    patience = Param(Int(ge=0), 10, keras=True, doc="epochs without improvement before reducing")
    min_delta = Param(Float(), 1e-4, keras=True, doc="the smallest change that counts (its absolute value)")
    cooldown = Param(Int(ge=0), 0, keras=True, doc="epochs to wait after a reduction")
    min_lr = Param(Float(ge=0.0), 0.0, keras=True, doc="the lowest learning rate")

    def __init__(self, **values: Any):
        super().__init__(**values)
        self.min_delta = abs(self.min_delta)
        self.best = math.inf
        self.wait = 0
        self.cooldown_left = 0

    def start(self, training: Training) -> None:
        self.best = -math.inf if self.maximized() else math.inf
        self.wait = 0
        self.cooldown_left = 0

    def on_epoch_end(self, training: Training, epoch: int, logs: dict[str, float]) -> bool:
        current = logs[self.monitor]
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.wait = 0
        if self.improved(current, self.best, self.min_delta):
            self.best, self.wait = current, 0
        elif self.cooldown_left == 0:
            self.wait += 1
            optimizer = training.optimizer
            if self.wait >= self.patience and optimizer.lr > self.min_lr:
                reduced = max(optimizer.lr * self.factor, self.min_lr)
                optimizer.lr_scale *= reduced / optimizer.lr
                optimizer.lr = reduced
                self.cooldown_left, self.wait = self.cooldown, 0
        return False

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"best": self.best, "wait": self.wait, "cooldown_left": self.cooldown_left}, {}

    def load_state(self, scalars: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.best, self.wait, self.cooldown_left = scalars["best"], scalars["wait"], scalars["cooldown_left"]


class BestWeights:
    """The weights of the best epoch so far by one logged value (``monitor``; accuracy and r2 upwards,
    every other value downwards), kept as training goes, for a caller that may stop training at any
    epoch and keep them (a canceled job's ``keep: "best"``). ``epoch`` counts the epochs finished when
    they were the best (1-based), None before any."""

    def __init__(self, monitor: str):
        self.monitor = monitor
        self.maximize = monitor.removeprefix("val_") in ("accuracy", "r2")
        self.best = -math.inf if self.maximize else math.inf
        self.epoch: int | None = None
        self.params: np.ndarray | None = None

    @classmethod
    def for_training(cls, early_stopping: EarlyStopping | None, has_validation: bool) -> BestWeights:
        """Watching the early-stopping monitor, else ``val_loss`` with validation rows, else ``loss``."""
        if early_stopping is not None:
            return cls(early_stopping.monitor)
        return cls("val_loss" if has_validation else "loss")

    def update(self, params: np.ndarray, epoch: int, logs: dict[str, float]) -> None:
        """After epoch ``epoch`` (0-based) with these ``logs``: copy ``params`` if it is the best yet."""
        value = logs.get(self.monitor)
        if value is None or not (value > self.best if self.maximize else value < self.best):
            return
        self.best, self.epoch = value, epoch + 1
        if self.params is None:
            self.params = params.copy()
        else:
            np.copyto(self.params, params)


class History:
    """Every logged value per epoch: ``history["loss"][i]`` is the training loss of epoch ``epoch[i]``."""

    def __init__(self) -> None:
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
