"""History and the callbacks through the public API: early stopping and reduce-on-plateau against
Keras's rules written out here."""

import math

import numpy as np
import pytest

from nnserve.engine import History, build
from tests.engine.helpers import CLASSIFIER, dense

# History ---------------------------------------------------------------------------------------------


def test_history_records_every_metric_every_epoch(line):
    x, y = line
    x_val, y_val = x[:16] * 1.1, y[:16] + 0.3
    model = build(
        {"layers": [dense(4, "tanh"), dense(1)]},
        {"optimizer": {"name": "adam", "learning_rate": 0.05}, "epochs": 4, "seed": 0, "metrics": ["mse", "mae", "r2"]},
    )
    seen = []
    history = model.fit(
        x, y, validation_data=(x_val, y_val), on_epoch=lambda epoch, logs: seen.append((epoch, dict(logs)))
    )
    assert isinstance(history, History)
    assert history.epoch == [0, 1, 2, 3]
    names = {"loss", "mse", "mae", "r2", "val_loss", "val_mse", "val_mae", "val_r2", "learning_rate"}
    assert set(history.history) == names
    assert all(len(values) == 4 and all(map(math.isfinite, values)) for values in history.history.values())
    assert [epoch for epoch, _ in seen] == [0, 1, 2, 3]
    for epoch, logs in seen:
        assert logs == {name: history.history[name][epoch] for name in names}
    # Validation values are the model's scores after the epoch.
    final = model.evaluate(x_val, y_val)
    for name in ("loss", "mse", "mae", "r2"):
        assert history.history[f"val_{name}"][-1] == pytest.approx(final[name], rel=1e-5)
    assert history.history["loss"][-1] < history.history["loss"][0]


# Early stopping --------------------------------------------------------------------------------------


def keras_early_stopping(values, patience, min_delta, maximize=False):
    """Keras's EarlyStopping over a logged series: (epoch it stops after, best epoch)."""
    best, best_epoch, wait = (-math.inf if maximize else math.inf), None, 0
    for epoch, value in enumerate(values):
        wait += 1
        improved = value > best + min_delta if maximize else value < best - min_delta
        if improved:
            best, best_epoch, wait = value, epoch, 0
            continue
        if wait >= patience and epoch > 0:
            return epoch, best_epoch
    return len(values) - 1, best_epoch


def quadrants():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(120, 4))
    return x, (x[:, 0] > 0).astype(int) + (x[:, 1] > 0)


@pytest.mark.parametrize("restore_best", [True, False])
def test_early_stopping_stops_and_restores_the_best_weights(restore_best):
    x, y = quadrants()
    stopping = {"monitor": "loss", "min_delta": 0.01, "patience": 3, "restore_best": restore_best}
    model = build(
        CLASSIFIER,
        {"optimizer": {"name": "sgd", "learning_rate": 0.05}, "epochs": 300, "seed": 0, "early_stopping": stopping},
    )
    snapshots = []
    history = model.fit(x, y, on_epoch=lambda epoch, logs: snapshots.append(model.get_weights()))
    last, best = keras_early_stopping(history.history["loss"], patience=3, min_delta=0.01)
    assert history.epoch[-1] == last < 299  # it stopped, where Keras's rule stops
    assert best < last
    expected = snapshots[best] if restore_best else snapshots[last]
    for got, want in zip(model.get_weights(), expected):
        np.testing.assert_array_equal(got, want)
    assert not all(np.array_equal(a, b) for a, b in zip(snapshots[best], snapshots[last]))


def test_early_stopping_on_a_validation_value_that_gets_worse(clusters):
    """Validation labels that contradict the training labels: val_loss rises as the model learns."""
    x, y = clusters
    model = build(
        CLASSIFIER,
        {
            "optimizer": {"name": "adam", "learning_rate": 0.02},
            "epochs": 100,
            "seed": 0,
            "metrics": ["accuracy"],
            "early_stopping": {"monitor": "val_accuracy", "patience": 2, "restore_best": True},
        },
    )
    snapshots = []
    history = model.fit(
        x, y, validation_data=(x, (y + 1) % 3), on_epoch=lambda e, logs: snapshots.append(model.get_weights())
    )
    last, best = keras_early_stopping(history.history["val_accuracy"], patience=2, min_delta=0.0, maximize=True)
    assert history.epoch[-1] == last < 99
    for got, want in zip(model.get_weights(), snapshots[best]):
        np.testing.assert_array_equal(got, want)


# Reduce on plateau ---------------------------------------------------------------------------------


def keras_reduce_lr(values, initial, factor, patience, min_delta, cooldown=0, min_lr=0.0):
    """Keras's ReduceLROnPlateau over a logged series: the learning rate of every epoch."""
    lr, best, wait, cooldown_left, rates = initial, math.inf, 0, 0, []
    for value in values:
        rates.append(lr)
        if cooldown_left > 0:
            cooldown_left -= 1
            wait = 0
        if value < best - min_delta:
            best, wait = value, 0
        elif cooldown_left == 0:
            wait += 1
            if wait >= patience and lr > min_lr:
                lr = max(lr * factor, min_lr)
                cooldown_left, wait = cooldown, 0
    return rates


def fit_with_plateau(x, y, plateau, epochs, learning_rate=0.1):
    model = build(
        {"layers": [dense(1)]},
        {
            "optimizer": {"name": "sgd", "learning_rate": learning_rate},
            "epochs": epochs,
            "seed": 0,
            "reduce_lr_on_plateau": plateau,
        },
    )
    return model.fit(x, y).history


def test_reduce_lr_on_plateau_by_hand(line):
    """min_delta so large that no epoch after the first counts as an improvement."""
    plateau = {"monitor": "loss", "factor": 0.5, "patience": 2, "min_delta": 1e9, "min_lr": 0.02}
    rates = fit_with_plateau(*line, plateau, epochs=8)["learning_rate"]
    assert rates == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.02], rel=1e-12)
    plateau = {"monitor": "loss", "factor": 0.5, "patience": 2, "min_delta": 1e9, "cooldown": 2}
    rates = fit_with_plateau(*line, plateau, epochs=9)["learning_rate"]
    assert rates == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025], rel=1e-12)


def test_reduce_lr_on_plateau_when_the_loss_stalls():
    """Noisy targets: the loss falls to the noise floor and stalls there, and the rate is lowered."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 2))
    y = x @ [1.0, -1.0] + rng.normal(size=64)
    plateau = {"monitor": "loss", "factor": 0.5, "patience": 3, "min_delta": 1e-3}
    history = fit_with_plateau(x, y, plateau, epochs=40, learning_rate=0.2)
    rates = history["learning_rate"]
    assert rates == pytest.approx(keras_reduce_lr(history["loss"], 0.2, 0.5, 3, 1e-3), rel=1e-12)
    assert rates[-1] < 0.2


def test_reduce_lr_on_plateau_leaves_an_improving_run_alone(line):
    plateau = {"monitor": "loss", "factor": 0.5, "patience": 1}
    history = fit_with_plateau(*line, plateau, epochs=5, learning_rate=0.01)
    assert all(later < earlier for earlier, later in zip(history["loss"], history["loss"][1:]))
    assert history["learning_rate"] == [0.01] * 5
