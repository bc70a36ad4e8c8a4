"""The training loop through the public API: a hand-worked step, history and callbacks, early
stopping and reduce-on-plateau (against Keras's rules written out here), class weights,
validation, reproducibility, checkpoints, finite-difference training, task handling, divergence."""

import math
import warnings

import numpy as np
import pytest

from nnserve.engine import History, NonFiniteError, SpecError, TrainingSession, build
from nnserve.engine.splitting import split


def dense(units, activation="linear", **options):
    return {"type": "dense", "units": units, "activation": activation, **options}


CLASSIFIER = {"layers": [dense(8, "relu"), dense(3, "softmax")]}


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


# History and the per-epoch callback ----------------------------------------------------------------


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


def test_on_epoch_returning_true_stops_training(clusters):
    model = build(CLASSIFIER, {"epochs": 50, "seed": 0})
    history = model.fit(*clusters, on_epoch=lambda epoch, logs: epoch == 2)
    assert history.epoch == [0, 1, 2]


def test_on_epoch_returning_other_values_does_not_stop(clusters):
    model = build(CLASSIFIER, {"epochs": 4, "seed": 0})
    assert model.fit(*clusters, on_epoch=lambda epoch, logs: None).epoch == [0, 1, 2, 3]


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


# Validation -------------------------------------------------------------------------------------------


def test_validation_split_on_iris_sorted_by_class_is_stratified(iris):
    _, y = iris
    train, val = split(len(y), 0.2, np.random.default_rng(0), y.astype(np.intp))
    assert np.bincount(y[val]).tolist() == [10, 10, 10]
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(150))
    again, _ = split(len(y), 0.2, np.random.default_rng(0), y.astype(np.intp))
    np.testing.assert_array_equal(train, again)
    other, _ = split(len(y), 0.2, np.random.default_rng(1), y.astype(np.intp))
    assert not np.array_equal(train, other)


def test_validation_split_for_regression_is_a_random_sample():
    train, val = split(100, 0.25, np.random.default_rng(0), None)
    assert len(val) == 25 and len(train) == 75
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(100))
    assert val.tolist() != list(range(75, 100))


def test_fit_with_validation_split_on_sorted_iris_validates_on_every_class(iris):
    """A model that always answers class 2 scores 1/3 on a stratified validation sample of iris;
    on Keras's unshuffled tail, which is all class 2, it would score 1."""
    x, y = iris
    model = build(
        {"layers": [dense(3, "softmax")]},
        {
            "optimizer": {"name": "sgd", "learning_rate": 1e-6},
            "epochs": 1,
            "seed": 0,
            "validation_split": 0.2,
            "metrics": ["accuracy"],
        },
    )
    model.fit(x, y)
    model.set_weights([np.zeros((4, 3)), np.array([0.0, 0.0, 5.0])])
    assert model.fit(x, y).history["val_accuracy"] == [pytest.approx(1 / 3)]


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


# Gradients two ways ---------------------------------------------------------------------------------


def test_finite_difference_training_follows_backpropagation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 2))
    y = np.sin(x[:, 0]) + x[:, 1]

    def train(gradient):
        model = build(
            {"layers": [dense(3, "tanh"), dense(1)], "dtype": "float64"},
            {
                "optimizer": {"name": "sgd", "learning_rate": 0.1},
                "epochs": 5,
                "batch_size": 8,
                "seed": 0,
                "gradient": gradient,
            },
        )
        history = model.fit(x, y)
        return model.get_weights(), history.history["loss"]

    (numeric, numeric_loss), (exact, exact_loss) = train("finite_difference"), train("backprop")
    for a, b in zip(numeric, exact):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)
    assert numeric_loss == pytest.approx(exact_loss, rel=1e-8)
    assert exact_loss[-1] < exact_loss[0]


# Tasks ----------------------------------------------------------------------------------------------------


def test_mse_on_a_classification_task_trains_on_one_hot_targets(iris):
    """The classic iris network with sigmoid outputs and squared error."""
    x, y = iris
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    model = build(
        {"layers": [dense(8, "sigmoid"), dense(3, "sigmoid")]},
        {
            "loss": "mse",
            "optimizer": {"name": "adam", "learning_rate": 0.05},
            "epochs": 100,
            "batch_size": 16,
            "seed": 0,
        },
    )
    model.fit(x, names)
    predicted = model.predict(x)
    assert set(predicted) <= set(names) and np.mean(predicted == names) > 0.95
    outputs = model.predict_proba(x).astype(np.float64)
    assert model.evaluate(x, names)["loss"] == pytest.approx(np.mean((outputs - np.eye(3)[y]) ** 2), rel=1e-5)


@pytest.mark.parametrize(
    "head, loss",
    [(dense(1, "sigmoid"), "binary_crossentropy"), (dense(2, "softmax"), "sparse_categorical_crossentropy")],
    ids=["one sigmoid unit", "two softmax units"],
)
def test_binary_tasks(clusters, head, loss):
    x, y = clusters
    keep = y < 2
    labels = np.where(y[keep] == 0, "no", "yes")
    model = build(
        {"layers": [dense(4, "tanh"), head]},
        {"optimizer": {"name": "adam", "learning_rate": 0.05}, "epochs": 10, "seed": 0},
    )
    model.fit(x[keep], labels)
    assert model.training.loss.spec() == loss
    assert model.classes == ["no", "yes"]
    assert np.mean(model.predict(x[keep]) == labels) > 0.95
    proba = model.predict_proba(x[keep])
    assert proba.shape == (keep.sum(), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize(
    "layers, y_kind, loss",
    [
        ([dense(3, "softmax")], "labels", "sparse_categorical_crossentropy"),
        ([dense(1, "sigmoid")], "binary", "binary_crossentropy"),
        ([dense(1)], "binary", {"name": "binary_crossentropy", "from_logits": True}),
        ([dense(3)], "labels", {"name": "sparse_categorical_crossentropy", "from_logits": True}),
        ([dense(1)], "values", "mse"),
    ],
    ids=["softmax", "sigmoid", "linear-1", "linear-3", "regression"],
)
def test_the_loss_left_out_is_chosen_from_task_and_head(clusters, layers, y_kind, loss):
    x, y = clusters
    target = {"labels": y, "binary": (y == 0).astype(int), "values": x[:, 0] * 2.0}[y_kind]
    model = build({"layers": layers}, {"optimizer": {"name": "adam", "learning_rate": 0.05}, "epochs": 20, "seed": 0})
    model.fit(x, target)
    assert model.training.loss.spec() == loss
    if y_kind != "values":
        # Logit heads still predict probabilities.
        proba = model.predict_proba(x)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
        assert np.mean(model.predict(x) == target) > 0.9


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
