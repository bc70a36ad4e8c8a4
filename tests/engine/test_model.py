"""The model: predict / predict_proba / evaluate, weights in Keras order, input checks, dtypes, and
inference that shares no buffer between threads."""

import threading

import numpy as np
import pytest

from nnserve.engine import SpecError, build

SOFTMAX_NET = {
    "layers": [
        {"type": "dense", "units": 8, "activation": "relu"},
        {"type": "dense", "units": 3, "activation": "softmax"},
    ]
}


def trained(x, y, spec=SOFTMAX_NET, **training):
    model = build(spec, {"optimizer": {"name": "adam", "learning_rate": 0.02}, "epochs": 5, "seed": 0, **training})
    model.fit(x, y)
    return model


UNFITTED = r"^the model has no weights yet: fit it, or load a trained one$"


def test_an_unfitted_model_cannot_predict(clusters):
    x, y = clusters
    model = build(SOFTMAX_NET)
    with pytest.raises(SpecError, match=UNFITTED):
        model.predict(x)
    with pytest.raises(SpecError, match=UNFITTED):
        model.evaluate(x, y)


def test_predict_proba_on_an_unfitted_model_says_it_is_unfitted(clusters):
    """Not that it "needs a classification model": nothing is known about the task yet."""
    x, _ = clusters
    with pytest.raises(SpecError, match=UNFITTED):
        build(SOFTMAX_NET).predict_proba(x)


def test_predict_and_predict_proba_agree(clusters):
    x, y = clusters
    model = trained(x, y)
    proba = model.predict_proba(x)
    assert proba.shape == (len(x), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    labels = model.predict(x)
    assert labels.shape == (len(x),)
    np.testing.assert_array_equal(labels, np.array(model.classes)[proba.argmax(axis=1)])
    assert np.mean(labels == y) > 0.9


def test_one_sigmoid_unit_gives_two_probability_columns(clusters):
    x, y = clusters
    binary = (y == 0).astype(int)
    spec = {"layers": [{"type": "dense", "units": 1, "activation": "sigmoid"}]}
    model = trained(x, binary, spec)
    proba = model.predict_proba(x)
    assert proba.shape == (len(x), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(model.predict(x), (proba[:, 1] > 0.5).astype(int))


def test_regression_shapes(line):
    x, y = line
    spec = {"layers": [{"type": "dense", "units": 1}]}
    assert trained(x, y, spec).predict(x).shape == (len(x),)
    two = np.column_stack([y, 2 * y])
    spec = {"layers": [{"type": "dense", "units": 2}]}
    model = trained(x, two, spec)
    assert model.predict(x).shape == (len(x), 2)
    with pytest.raises(SpecError, match=r"^predict_proba needs a classification model$"):
        model.predict_proba(x)


def test_evaluate_loss_is_the_mean_cross_entropy_of_the_probabilities(clusters):
    x, y = clusters
    model = trained(x, y, metrics=["accuracy"])
    proba = model.predict_proba(x).astype(np.float64)
    scores = model.evaluate(x, y)
    assert set(scores) == {"loss", "accuracy"}
    assert scores["loss"] == pytest.approx(-np.log(proba[np.arange(len(y)), y]).mean(), rel=1e-5)
    assert scores["accuracy"] == pytest.approx(np.mean(model.predict(x) == y))


def test_weights_come_in_keras_get_weights_order():
    model = build(
        {
            "layers": [
                {"type": "dense", "units": 8, "activation": "relu"},
                {"type": "dropout", "rate": 0.5},
                {"type": "dense", "units": 5, "use_bias": False},
                {"type": "activation", "activation": "tanh"},
                {"type": "dense", "units": 3, "activation": "softmax"},
            ]
        }
    )
    assert model.parameter_count(4) == 4 * 8 + 8 + 8 * 5 + 5 * 3 + 3
    model.allocate(4, np.random.default_rng(0))
    assert [w.shape for w in model.get_weights()] == [(4, 8), (8,), (8, 5), (5, 3), (3,)]
    assert model.weight_names() == [
        "layers.0.kernel",
        "layers.0.bias",
        "layers.2.kernel",
        "layers.4.kernel",
        "layers.4.bias",
    ]
    assert model.n_parameters == model.parameter_count(4)


def test_set_weights_round_trips_and_checks_shapes():
    model = build(SOFTMAX_NET)
    model.allocate(4, np.random.default_rng(0))
    new = [np.full(w.shape, i, dtype=np.float32) for i, w in enumerate(model.get_weights())]
    model.set_weights(new)
    for given, got in zip(new, model.get_weights()):
        np.testing.assert_array_equal(given, got)
    with pytest.raises(SpecError, match=r"^weights: expected 4 arrays; received 3$"):
        model.set_weights(new[:3])
    with pytest.raises(SpecError, match=r"^weights\[2\]: expected shape \(8, 3\); received \(3, 8\)$"):
        model.set_weights([new[0], new[1], new[2].T, new[3]])


def test_get_weights_returns_copies():
    model = build(SOFTMAX_NET)
    model.allocate(4, np.random.default_rng(0))
    weights = model.get_weights()
    weights[0][...] = 123.0
    assert not np.any(model.get_weights()[0] == 123.0)


@pytest.mark.parametrize(
    "x, message",
    [
        (np.zeros((5, 3)), r"^X: each row must have 4 features; received 3$"),
        (np.zeros(4), r"^X: must be 2-D \(rows x features\); received an array of shape \(4,\)$"),
        (np.array([[1.0, np.nan, 0.0, 0.0]]), r"^X: contains NaN or infinite values$"),
        (np.array([[1.0, np.inf, 0.0, 0.0]]), r"^X: contains NaN or infinite values$"),
        ([["a", "b", "c", "d"]], r"^X: must be a 2-D array of numbers$"),
        # Finite float64 values that a float32 model cannot hold: rejected, not a NumPy overflow warning.
        (np.array([[1e39, 0.0, 0.0, 0.0]]), r"^X: "),
    ],
    ids=["width", "1-D", "nan", "inf", "strings", "beyond float32"],
)
def test_bad_inputs_to_predict(clusters, x, message):
    model = trained(*clusters)
    with pytest.raises(SpecError, match=message):
        model.predict(x)


def test_bad_targets_to_fit(clusters):
    x, y = clusters
    with pytest.raises(SpecError, match=r"^y: has 119 rows but X has 120$"):
        build(SOFTMAX_NET, {"seed": 0}).fit(x, y[:-1])
    with pytest.raises(SpecError, match=r"^y: a classification task needs at least 2 classes$"):
        build(SOFTMAX_NET, {"seed": 0}).fit(x, np.zeros(len(x), dtype=int))
    with pytest.raises(SpecError, match=r"^y: unknown class 7; the model knows 0, 1, 2$"):
        trained(x, y).evaluate(x[:2], [0, 7])


def test_float32_by_default_float64_on_request(clusters):
    x, y = clusters
    single = trained(x, y)
    double = trained(x, y, {**SOFTMAX_NET, "dtype": "float64"})
    assert {w.dtype for w in single.get_weights()} == {np.dtype(np.float32)}
    assert {w.dtype for w in double.get_weights()} == {np.dtype(np.float64)}
    assert single.predict_proba(x).dtype == np.float32
    assert double.predict_proba(x).dtype == np.float64
    # The two precisions learn the same thing from the same seed.
    np.testing.assert_allclose(double.predict_proba(x), single.predict_proba(x), atol=1e-4)


def test_the_callers_data_is_never_written(clusters):
    """The fixtures are read-only; a float64 model even receives them without a copy."""
    x, y = clusters
    model = trained(x, y, {**SOFTMAX_NET, "dtype": "float64"}, validation_split=0.2, metrics=["accuracy"])
    model.predict(x)
    model.predict_proba(x)
    model.evaluate(x, y)
    assert not x.flags.writeable


def test_large_inputs_are_predicted_in_chunks_consistently(clusters):
    x, y = clusters
    model = trained(x, y)
    big = np.random.default_rng(0).normal(size=(20_000, 4)) * 3
    whole = model.predict_proba(big)
    parts = np.concatenate([model.predict_proba(big[i : i + 3000]) for i in range(0, len(big), 3000)])
    np.testing.assert_allclose(whole, parts, rtol=1e-6, atol=1e-7)


def test_concurrent_predictions_match_sequential_ones(clusters):
    """Inference keeps nothing: two threads predicting different inputs at once get exactly what
    each would get alone."""
    x, y = clusters
    model = trained(
        x,
        y,
        {
            "layers": [
                {"type": "dense", "units": 64, "activation": "tanh"},
                {"type": "dropout", "rate": 0.3},
                {"type": "dense", "units": 32, "activation": "gelu"},
                {"type": "dense", "units": 3, "activation": "softmax"},
            ]
        },
    )
    rng = np.random.default_rng(5)
    inputs = [rng.normal(size=(3000, 4)) * 3, rng.normal(size=(2000, 4)) - 1]
    expected = [model.predict_proba(inputs[0]), model.predict_proba(inputs[1])]
    results = [[], []]
    barrier = threading.Barrier(2)

    def work(i):
        barrier.wait()
        for _ in range(15):
            results[i].append(model.predict_proba(inputs[i]))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i in range(2):
        assert len(results[i]) == 15
        for got in results[i]:
            np.testing.assert_array_equal(got, expected[i])


def test_spec_reads_back_what_was_built_with_defaults_filled():
    model = build({"layers": [{"type": "dense", "units": 3, "activation": "softmax"}]})
    assert model.spec() == {
        "layers": [
            {
                "type": "dense",
                "units": 3,
                "activation": "softmax",
                "use_bias": True,
                "kernel_initializer": "glorot_uniform",
                "bias_initializer": "zeros",
                "kernel_regularizer": None,
            }
        ],
        "input_scaling": "standard",
        "dtype": "float32",
    }
