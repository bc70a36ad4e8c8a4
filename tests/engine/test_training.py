"""The training session through the public API: a hand-worked step, the per-epoch callback, class
weights, reproducibility, checkpoints, divergence."""

import math
import warnings

import numpy as np
import pytest

from nnserve.engine import NonFiniteError, SpecError, TrainingSession, build
from tests.engine.helpers import CLASSIFIER, dense

# One step by hand -----------------------------------------------------------------------------------


def test_hand_worked_linear_steps():
    """y = w x + b from w = b = 0 on x = 1, 2, 3, y = 2, 4, 7; mse, SGD lr 0.1, the whole batch.

    Step 1: errors -2, -4, -7; dL/dw = 2/3 (-2 - 8 - 21) = -62/3, dL/db = 2/3 (-13) = -26/3, loss 69/3 = 23
            -> w = 6.2/3 = 31/15, b = 2.6/3 = 13/15.
    Step 2: errors 14/15, 1, 1/15; dL/dw = 2/3 (47/15) = 94/45, dL/db = 2/3 (30/15) = 4/3, loss 422/675
            -> w = 31/15 - 94/450 = 418/225, b = 13/15 - 2/15 = 11/15.
    """
    x, y = np.array([[1.0], [2.0], [3.0]]), np.array([2.0, 4.0, 7.0])
    model = build(
        {"layers": [dense(1, kernel_initializer="zeros")], "input_scaling": "none", "dtype": "float64"},
        {"loss": "mse", "optimizer": {"name": "sgd", "learning_rate": 0.1}, "epochs": 2, "batch_size": 3, "seed": 0},
    )
    weights = []
    history = model.fit(x, y, on_epoch=lambda epoch, logs: weights.append(model.get_weights()))
    assert history.history["loss"] == pytest.approx([23.0, 422 / 675], rel=1e-14)
    (w1, b1), (w2, b2) = weights
    assert (w1[0, 0], b1[0]) == pytest.approx((31 / 15, 13 / 15), rel=1e-14)
    assert (w2[0, 0], b2[0]) == pytest.approx((418 / 225, 11 / 15), rel=1e-14)


def test_hand_worked_logistic_step():
    """One sigmoid unit from zero on x = 1 (class 1) and x = -2 (class 0); binary cross-entropy, SGD lr 0.5.

    p = sigmoid(0) = 1/2 for both; loss log 2; dL/dz = (p - y) / 2 = -1/4, 1/4;
    dL/dw = 1 (-1/4) + (-2)(1/4) = -3/4, dL/db = 0  ->  w = 3/8, b = 0.
    """
    model = build(
        {"layers": [dense(1, "sigmoid", kernel_initializer="zeros")], "input_scaling": "none", "dtype": "float64"},
        {"optimizer": {"name": "sgd", "learning_rate": 0.5}, "epochs": 1, "batch_size": 2, "seed": 0},
    )
    history = model.fit(np.array([[1.0], [-2.0]]), np.array([1, 0]))
    assert history.history["loss"] == pytest.approx([math.log(2)], rel=1e-14)
    kernel, bias = model.get_weights()
    assert (kernel[0, 0], bias[0]) == pytest.approx((0.375, 0.0), abs=1e-15)


# The per-epoch callback ------------------------------------------------------------------------------


def test_on_epoch_returning_true_stops_training(clusters):
    model = build(CLASSIFIER, {"epochs": 50, "seed": 0})
    history = model.fit(*clusters, on_epoch=lambda epoch, logs: epoch == 2)
    assert history.epoch == [0, 1, 2]


def test_on_epoch_returning_other_values_does_not_stop(clusters):
    model = build(CLASSIFIER, {"epochs": 4, "seed": 0})
    assert model.fit(*clusters, on_epoch=lambda epoch, logs: None).epoch == [0, 1, 2, 3]


# Class weights -----------------------------------------------------------------------------------------


def imbalanced():
    """900 "common" rows around 0 and 100 "rare" rows around 1.5 (unit variance): unweighted, the
    boundary sits near 2.2, so the rare class's own centre is called common; weighted 9:1, near 0.75."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0.0, 1.0, size=(900, 1)), rng.normal(1.5, 1.0, size=(100, 1))])
    return x, np.array(["common"] * 900 + ["rare"] * 100)


@pytest.mark.parametrize("class_weight", [{"rare": 9.0}, "balanced"], ids=["given", "balanced"])
def test_class_weights_change_the_decision(class_weight):
    x, y = imbalanced()

    def fit(**extra):
        model = build(
            {"layers": [dense(1, "sigmoid")]},
            {"optimizer": {"name": "adam", "learning_rate": 0.05}, "epochs": 30, "batch_size": 64, "seed": 0, **extra},
        )
        model.fit(x, y)
        return model

    plain, weighted = fit(), fit(class_weight=class_weight)
    centre = np.array([[1.5]])
    assert plain.predict(centre)[0] == "common"
    assert weighted.predict(centre)[0] == "rare"
    rare = y == "rare"
    assert np.mean(plain.predict(x[rare]) == "rare") < 0.3
    assert np.mean(weighted.predict(x[rare]) == "rare") > 0.6


def test_class_weight_naming_an_unknown_class(clusters):
    model = build(CLASSIFIER, {"seed": 0, "class_weight": {"7": 2.0}})
    with pytest.raises(SpecError, match=r"^training\.class_weight: unknown class '7'; the classes are \[0, 1, 2\]$"):
        model.fit(*clusters)


# Reproducibility and checkpoints ---------------------------------------------------------------------


DROPOUT_NET = {"layers": [dense(16, "relu"), {"type": "dropout", "rate": 0.3}, dense(3, "softmax")]}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_same_seed_gives_bit_identical_weights(clusters, dtype):
    training = {"optimizer": "adam", "epochs": 5, "batch_size": 16, "seed": 42, "validation_split": 0.2}

    def weights(seed):
        model = build({**DROPOUT_NET, "dtype": dtype}, {**training, "seed": seed})
        model.fit(*clusters)
        return model.get_weights()

    first, second, other = weights(42), weights(42), weights(43)
    for a, b in zip(first, second):
        assert a.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


RESUME_CASES = {
    "adam, dropout, shuffle": {"optimizer": {"name": "adam", "learning_rate": 0.01}},
    "callbacks and a schedule": {
        "optimizer": {"name": "rmsprop", "learning_rate": 0.01, "momentum": 0.5, "schedule": {"name": "exponential"}},
        "validation_split": 0.25,
        "metrics": ["accuracy"],
        "early_stopping": {"monitor": "val_loss", "patience": 50, "restore_best": True},
        "reduce_lr_on_plateau": {"monitor": "loss", "patience": 1, "min_delta": 0.05},
    },
}


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_resuming_from_a_checkpoint_is_bit_identical(clusters, case):
    x, y = clusters
    training = {"epochs": 6, "batch_size": 16, "seed": 5, "shuffle": True, **RESUME_CASES[case]}
    straight = build(DROPOUT_NET, training)
    checkpoints = []
    full = straight.fit(x, y, checkpoint_every=2, on_checkpoint=checkpoints.append)
    assert len(checkpoints) == 3 and all(isinstance(c, bytes) for c in checkpoints)
    for checkpoint, _epochs_done in zip(checkpoints[:2], (2, 4)):
        resumed = build(DROPOUT_NET, training)  # a fresh model, as after a restart
        history = resumed.fit(x, y, resume_from=checkpoint)
        assert history.epoch == full.epoch
        assert history.history == full.history
        for a, b in zip(resumed.get_weights(), straight.get_weights()):
            np.testing.assert_array_equal(a, b)


def test_a_checkpoint_from_another_config_is_refused(clusters):
    checkpoints = []
    build(CLASSIFIER, {"epochs": 2, "seed": 1}).fit(*clusters, checkpoint_every=1, on_checkpoint=checkpoints.append)
    with pytest.raises(SpecError, match=r"^checkpoint: was taken from a different model or training config$"):
        build(CLASSIFIER, {"epochs": 2, "seed": 2}).fit(*clusters, resume_from=checkpoints[0])


def test_fit_again_continues_from_the_current_weights(clusters):
    x, y = clusters
    training = {"optimizer": {"name": "adam", "learning_rate": 0.01}, "epochs": 2, "seed": 0}
    model = build(CLASSIFIER, training)
    first = model.fit(x, y)
    second = model.fit(x, y)
    assert second.history["loss"][0] < first.history["loss"][0]
    assert model.classes == [0, 1, 2]
    with pytest.raises(SpecError, match=r"^y: unknown class 3; the model knows 0, 1, 2$"):
        model.fit(x, np.where(y == 2, 3, y))


def test_a_checkpoint_taken_where_early_stopping_ends_training_resumes_to_the_same_end():
    """A caller (a worker told to stop) may checkpoint at the very epoch where early stopping decided
    to end: resuming from it must end there too, with the same restored weights."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    y = (x[:, 0] > 0).astype(int)
    spec = {
        "layers": [
            {"type": "dense", "units": 8, "activation": "relu"},
            {"type": "dense", "units": 2, "activation": "softmax"},
        ]
    }
    training = {
        "optimizer": {"name": "adam", "learning_rate": 0.05},
        "epochs": 200,
        "seed": 0,
        "validation_split": 0.3,
        "early_stopping": {"monitor": "val_loss", "patience": 3, "restore_best": True},
    }
    uninterrupted = build(spec, training)
    last_epoch = uninterrupted.fit(x, y).epoch[-1]
    assert last_epoch < 199  # early stopping did end it

    paused = TrainingSession(build(spec, training), x, y)
    saved = {}

    def stop_at_the_last_epoch(epoch, logs):
        if epoch == last_epoch:
            saved["checkpoint"] = paused.checkpoint()
            return True
        return None

    paused.run(on_epoch=stop_at_the_last_epoch)
    resumed_model = build(spec, training)
    resumed = TrainingSession(resumed_model, x, y)
    resumed.restore(saved["checkpoint"])
    history = resumed.run()

    assert history.epoch[-1] == last_epoch
    assert np.array_equal(resumed_model.params, uninterrupted.params)


# Divergence -----------------------------------------------------------------------------------------------


def diverging(layers):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)) * 1000.0
    model = build(
        {"layers": layers, "input_scaling": "none"},
        {"optimizer": {"name": "sgd", "learning_rate": 10.0}, "epochs": 20, "seed": 0},
    )
    return model, x, x @ np.array([1.0, 2.0, 3.0])


DIVERGED = (
    r"^training diverged at epoch \d+: the loss is (inf|nan)\. "
    r"Scale the inputs \(input_scaling 'standard'\) or lower the learning_rate\.$"
)


def test_a_diverging_linear_model_raises_non_finite_error():
    model, x, y = diverging([dense(1)])
    with pytest.raises(NonFiniteError, match=DIVERGED):
        model.fit(x, y)


def test_a_diverging_network_raises_non_finite_error_and_no_numpy_warning():
    """The engine watches for non-finite values itself, so the overflow on the way there is expected,
    not something to warn about; under ``-W error`` the warning would pre-empt the named error."""
    model, x, y = diverging([dense(8, "relu"), dense(1)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(NonFiniteError, match=DIVERGED):
            model.fit(x, y)


@pytest.mark.parametrize(
    "training, monitor",
    [
        ({"validation_split": 0.25}, "val_loss"),
        ({}, "loss"),
        (
            {
                "validation_split": 0.25,
                "metrics": ["accuracy"],
                "early_stopping": {"monitor": "val_accuracy", "patience": 99},
            },
            "val_accuracy",
        ),
    ],
)
def test_the_session_keeps_the_best_epochs_weights_through_checkpoints(clusters, training, monitor):
    x, y = clusters
    training = {
        "optimizer": {"name": "sgd", "learning_rate": 2.0},
        "epochs": 8,
        "batch_size": 16,
        "seed": 5,
        **training,
    }
    straight = TrainingSession(build(CLASSIFIER, training), x, y)
    weights = {}
    straight.run(on_epoch=lambda epoch, logs: weights.__setitem__(epoch + 1, straight.params.copy()))
    values = straight.history.history[monitor]
    best = (int(np.argmax(values)) if monitor == "val_accuracy" else int(np.argmin(values))) + 1
    assert straight.best.monitor == monitor and straight.best.epoch == best
    np.testing.assert_array_equal(straight.best.params, weights[best])

    # Stopped at epoch 5 and resumed from its checkpoint: the best epoch so far is still known, weights too.
    paused = TrainingSession(build(CLASSIFIER, training), x, y)
    saved = {}
    paused.run(on_epoch=lambda epoch, logs: epoch == 4 and saved.setdefault("blob", paused.checkpoint()) is not None)
    resumed = TrainingSession(build(CLASSIFIER, training), x, y)
    resumed.restore(saved["blob"])
    assert resumed.best.epoch == paused.best.epoch
    np.testing.assert_array_equal(resumed.best.params, paused.best.params)
    resumed.run()
    assert resumed.best.epoch == best
    np.testing.assert_array_equal(resumed.best.params, straight.best.params)
