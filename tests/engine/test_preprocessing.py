"""Standard scaling (fit on the training rows only, applied again at prediction) and label encoding
(strings or integers in, the same labels out)."""

import numpy as np
import pytest

from nnserve.engine import SpecError, build
from nnserve.engine.preprocessing import LabelEncoder, StandardScaler

CLASSIFIER = {
    "layers": [
        {"type": "dense", "units": 8, "activation": "tanh"},
        {"type": "dense", "units": 3, "activation": "softmax"},
    ]
}
TRAINING = {"optimizer": {"name": "adam", "learning_rate": 0.05}, "epochs": 10, "seed": 0}


def test_standard_scaler_statistics():
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(5.0, 3.0, size=100), np.full(100, 7.0), rng.uniform(size=100)])
    scaler = StandardScaler.fit(x)
    np.testing.assert_allclose(scaler.mean, x.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(scaler.scale, [x[:, 0].std(), 1.0, x[:, 2].std()], rtol=1e-14)  # constant -> 1
    scaled = scaler.transform_(x.copy())
    np.testing.assert_allclose(scaled, (x - scaler.mean) / scaler.scale, rtol=1e-13, atol=1e-15)
    rows = np.arange(0, 100, 3)
    subset = StandardScaler.fit(x, rows, chunk=7)
    np.testing.assert_allclose(subset.mean, x[rows].mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(subset.scale[[0, 2]], x[rows][:, [0, 2]].std(axis=0), rtol=1e-13)


def test_standard_scaler_keeps_the_dtype():
    x = np.random.default_rng(0).normal(size=(10, 2)).astype(np.float32)
    assert StandardScaler.fit(x).transform_(x.copy()).dtype == np.float32


def test_label_encoder_round_trip():
    encoder, indices = LabelEncoder.fit(np.array(["pear", "apple", "fig", "apple"]))
    assert encoder.config() == ["apple", "fig", "pear"]
    np.testing.assert_array_equal(indices, [2, 0, 1, 0])
    np.testing.assert_array_equal(encoder.inverse(encoder.transform(np.array(["fig", "pear"]))), ["fig", "pear"])
    with pytest.raises(SpecError, match=r"^y: unknown class 'kiwi'; the model knows 'apple', 'fig', 'pear'$"):
        encoder.transform(np.array(["kiwi"]))


def test_mixed_labels_are_rejected():
    with pytest.raises(SpecError, match=r"^y: class labels must be all strings or all numbers, not a mix$"):
        LabelEncoder.fit(np.array(["a", 1, "b"], dtype=object))


def test_string_labels_round_trip_through_predict(clusters):
    x, y = clusters
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    model = build(CLASSIFIER, TRAINING)
    model.fit(x, names.tolist())  # a plain list of strings, as JSON gives it
    assert model.classes == ["setosa", "versicolor", "virginica"]
    predicted = model.predict(x)
    assert predicted.dtype.kind == "U"
    assert set(predicted) <= set(names)
    assert np.mean(predicted == names) > 0.95
    assert model.evaluate(x, names)["loss"] < 1.0


def test_integer_labels_round_trip_through_predict(clusters):
    x, y = clusters
    labels = np.array([30, 10, 20])[y]  # not 0..k-1, and not in sorted order by position
    model = build(CLASSIFIER, TRAINING)
    model.fit(x, labels)
    assert model.classes == [10, 20, 30]
    predicted = model.predict(x)
    assert predicted.dtype.kind in "iu"
    assert np.mean(predicted == labels) > 0.95
    # Column j of predict_proba is the probability of classes[j].
    np.testing.assert_array_equal(np.array(model.classes)[model.predict_proba(x).argmax(axis=1)], predicted)


def test_one_hot_targets_are_accepted(clusters):
    x, y = clusters
    model = build(CLASSIFIER, {**TRAINING, "loss": "categorical_crossentropy"})
    model.fit(x, np.eye(3)[y])
    assert model.classes == [0, 1, 2]
    assert np.mean(model.predict(x) == y) > 0.95


def test_scaling_is_fit_on_the_training_data_only(clusters):
    x, y = clusters
    x_val = x[:30] + 100.0  # far away: would move the statistics if they were included
    model = build(CLASSIFIER, {**TRAINING, "epochs": 1})
    model.fit(x, y, validation_data=(x_val, y[:30]))
    seen = x.astype(np.float32).astype(np.float64)  # the model's float32 copy of the inputs
    np.testing.assert_allclose(model.scaler.mean, seen.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(model.scaler.scale, seen.std(axis=0), rtol=1e-12)


def powers_of_two_data():
    """30 rows sorted by class (10 each); feature 0 of row i is 2**i, so the mean of any set of rows
    tells exactly which rows it was taken over."""
    rng = np.random.default_rng(0)
    x = np.column_stack([2.0 ** np.arange(30), rng.normal(size=30)])
    return x, np.repeat([0, 1, 2], 10)


def training_rows(model, n_train):
    total = int(round(model.scaler.mean[0] * n_train))
    return [i for i in range(30) if total >> i & 1]


def test_validation_split_scales_on_training_rows_and_holds_out_every_class():
    x, y = powers_of_two_data()
    model = build(CLASSIFIER, {**TRAINING, "epochs": 1, "validation_split": 0.2})
    history = model.fit(x, y)
    train = training_rows(model, 24)
    assert len(train) == 24
    validation = sorted(set(range(30)) - set(train))
    assert np.bincount(y[validation], minlength=3).tolist() == [2, 2, 2]  # stratified
    assert validation != list(range(24, 30))  # not Keras's tail
    assert "val_loss" in history.history


def test_validation_split_is_seeded():
    x, y = powers_of_two_data()

    def held_out(seed):
        model = build(CLASSIFIER, {**TRAINING, "epochs": 1, "validation_split": 0.2, "seed": seed})
        model.fit(x, y)
        return training_rows(model, 24)

    assert held_out(1) == held_out(1)
    assert held_out(1) != held_out(2)


def test_scaling_is_applied_again_at_prediction(clusters):
    x, y = clusters
    shifted = x * 50.0 + 1e4
    model = build(CLASSIFIER, TRAINING)
    model.fit(shifted, y)
    assert np.mean(model.predict(shifted) == y) > 0.95


def test_no_scaling_on_request(clusters):
    x, y = clusters
    model = build({**CLASSIFIER, "input_scaling": "none"}, TRAINING)
    model.fit(x, y)
    assert model.scaler is None
    assert np.mean(model.predict(x) == y) > 0.95
