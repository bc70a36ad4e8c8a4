"""The layers of shaped samples: convolution, pooling, reshaping, batch normalization, spatial dropout.

Forward passes against plain loops over output positions (the definition), gradients against finite
differences in float64 (``gradcheck`` < 1e-6) across padding, strides, dilation, odd sizes and a batch
of one, and the chain of shapes checked when the model is built.
"""

import itertools

import numpy as np
import pytest

from nnserve.engine import SpecError, build, gradcheck, validate
from tests.engine.helpers import dense

TOLERANCE = 1e-6
rng = np.random.default_rng(0)


def conv2d(filters, kernel_size, **options):
    return {"type": "conv2d", "filters": filters, "kernel_size": kernel_size, **options}


def built(layers, input_shape, dtype="float64"):
    model = build({"layers": layers, "dtype": dtype}, {"seed": 0})
    model.allocate(input_shape, np.random.default_rng(0))
    return model


def reference_conv2d(x, kernel, bias, strides, padding, dilation):
    """The definition, one output position at a time (Keras's "same" padding: the odd zero at the end)."""
    (kh, kw, _, filters), (sh, sw), (dh, dw) = kernel.shape, strides, dilation
    n, h, w, _ = x.shape
    eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    if padding == "same":
        oh, ow = -(-h // sh), -(-w // sw)
        ph, pw = max((oh - 1) * sh + eh - h, 0), max((ow - 1) * sw + ew - w, 0)
        x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    else:
        oh, ow = (h - eh) // sh + 1, (w - ew) // sw + 1
    out = np.zeros((n, oh, ow, filters))
    for i, j in itertools.product(range(oh), range(ow)):
        patch = x[:, i * sh : i * sh + eh : dh, j * sw : j * sw + ew : dw, :]
        out[:, i, j, :] = np.einsum("nabc,abcf->nf", patch, kernel) + bias
    return out


@pytest.mark.parametrize(
    "kernel_size, strides, padding, dilation",
    [
        (3, 1, "valid", 1),
        (3, 1, "same", 1),
        ((3, 2), 2, "same", 1),
        ((2, 3), (2, 1), "valid", 1),
        (3, 1, "same", 2),
        ((3, 2), 1, "valid", (1, 2)),
    ],
)
def test_conv2d_forward_is_the_definition(kernel_size, strides, padding, dilation):
    layer = conv2d(4, kernel_size, strides=strides, padding=padding, dilation_rate=dilation)
    model = built([layer, {"type": "flatten"}, dense(2)], (7, 9, 3))
    x = rng.normal(size=(2, 7, 9, 3))
    conv = model.ops[0]
    expected = reference_conv2d(
        x, conv.params["kernel"], conv.params["bias"], conv.strides, padding, conv.dilation_rate
    )
    np.testing.assert_allclose(conv.forward(x, False), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv.forward(x, True), expected, rtol=1e-12, atol=1e-12)


def test_pooling_forward_is_the_definition():
    x = rng.normal(size=(2, 5, 7, 3))
    model = built([{"type": "max_pooling2d", "pool_size": 2}, {"type": "flatten"}, dense(1)], (5, 7, 3))
    expected = x[:, :4, :6].reshape(2, 2, 2, 3, 2, 3).max(axis=(2, 4))
    np.testing.assert_array_equal(model.ops[0].forward(x, False), expected)
    # "same" average pooling divides by the values a window covers, not by the window's size.
    model = built(
        [{"type": "average_pooling2d", "pool_size": 2, "padding": "same"}, {"type": "flatten"}, dense(1)], (5, 7, 3)
    )
    out = model.ops[0].forward(x, False)
    assert out.shape == (2, 3, 4, 3)
    np.testing.assert_allclose(out[:, 2, 3], x[:, 4, 6])
    np.testing.assert_allclose(out[:, 0, 0], x[:, :2, :2].mean(axis=(1, 2)))


def test_global_pooling_flatten_reshape_and_zero_padding():
    x = rng.normal(size=(2, 3, 4, 5))
    for kind, reduce in (("global_average_pooling2d", np.mean), ("global_max_pooling2d", np.max)):
        model = built([{"type": kind}, dense(1)], (3, 4, 5))
        np.testing.assert_allclose(model.ops[0].forward(x, False), reduce(x, axis=(1, 2)))
    model = built([{"type": "flatten"}, dense(1)], (3, 4, 5))
    np.testing.assert_array_equal(model.ops[0].forward(x, False), x.reshape(2, 60))  # row-major, as Keras
    model = built([{"type": "reshape", "target_shape": [12, -1]}, {"type": "flatten"}, dense(1)], (3, 4, 5))
    assert model.ops[0].forward(x, False).shape == (2, 12, 5)
    model = built([{"type": "zero_padding2d", "padding": [[1, 0], [2, 1]]}, {"type": "flatten"}, dense(1)], (3, 4, 5))
    padded = model.ops[0].forward(x, False)
    assert padded.shape == (2, 4, 7, 5)
    np.testing.assert_array_equal(padded[:, 1:, 2:6], x)
    assert padded.sum() == pytest.approx(x.sum())


def test_batch_normalization_trains_on_batch_statistics_and_predicts_with_moving_ones():
    model = built(
        [conv2d(3, 2), {"type": "batch_normalization", "momentum": 0.5}, {"type": "flatten"}, dense(1)], (4, 4, 1)
    )
    bn = model.ops[1]
    h = rng.normal(loc=2.0, scale=3.0, size=(6, 3, 3, 3))
    out = bn.forward(h, True)
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=(0, 1, 2)), h.var(axis=(0, 1, 2)) / (h.var(axis=(0, 1, 2)) + 1e-3))
    np.testing.assert_allclose(bn.state["moving_mean"], 0.5 * h.mean(axis=(0, 1, 2)))
    np.testing.assert_allclose(bn.state["moving_variance"], 0.5 + 0.5 * h.var(axis=(0, 1, 2)))
    mean, variance = bn.state["moving_mean"], bn.state["moving_variance"]
    np.testing.assert_allclose(bn.forward(h, False), (h - mean) / np.sqrt(variance + 1e-3))
    assert [name.split(".")[-1] for name in model.weight_names()] == [
        *("kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance", "kernel", "bias")
    ]
    assert model.n_parameters == 2 * 2 * 3 + 3 + 3 + 3 + 27 + 1  # the moving statistics are not trained


def test_spatial_dropout_drops_whole_channels():
    model = build(
        {"layers": [conv2d(8, 1), {"type": "spatial_dropout2d", "rate": 0.5}, {"type": "flatten"}, dense(1)]},
        {"seed": 0},
    )
    model.allocate((4, 4, 1), np.random.default_rng(0))
    dropout = model.ops[1]
    dropout.rng = np.random.default_rng(1)
    out = dropout.forward(np.ones((3, 4, 4, 8), np.float32), True)
    per_channel = out.reshape(3, 16, 8)
    assert (per_channel == per_channel[:, :1]).all()  # one draw per sample and channel
    assert set(np.unique(per_channel)) == {0.0, 2.0}


# Gradients ------------------------------------------------------------------------------------------

GRADIENT_CASES = {
    # The convolution under test comes second, so its input gradient (col2im) is checked too.
    **{
        f"conv2d-{padding}-strides{strides}-dilation{dilation}": (
            [
                conv2d(2, 2, activation="tanh"),
                conv2d(3, (3, 2), strides=strides, padding=padding, dilation_rate=dilation, activation="tanh"),
                {"type": "flatten"},
            ],
            (8, 7, 2),
        )
        for padding, strides, dilation in [
            ("valid", 1, 1),
            ("same", 1, 1),
            ("same", 2, 1),
            ("valid", (2, 1), 1),
            ("same", 1, 2),
            ("valid", 1, (2, 1)),
        ]
    },
    "conv2d-regularized-no-bias": (
        [conv2d(2, 3, use_bias=False, kernel_regularizer={"l1": 0.01, "l2": 0.02}), {"type": "flatten"}],
        (5, 5, 1),
    ),
    **{
        f"{kind}-{padding}-pool{pool}-strides{strides}": (
            [
                conv2d(2, 2),
                {"type": kind, "pool_size": pool, "strides": strides, "padding": padding},
                conv2d(2, 1),
                {"type": "flatten"},
            ],
            (8, 7, 1),
        )
        for kind in ("max_pooling2d", "average_pooling2d")
        for padding, pool, strides in [("valid", 2, None), ("same", 2, None), ("valid", 3, 2), ("same", (2, 3), 1)]
    },
    **{
        kind: ([conv2d(3, 2), {"type": kind}, dense(4, "tanh")], (5, 6, 2))
        for kind in ("global_max_pooling2d", "global_average_pooling2d")
    },
    "conv1d-pooling1d": (
        [
            {"type": "conv1d", "filters": 3, "kernel_size": 2},
            {"type": "conv1d", "filters": 3, "kernel_size": 3, "padding": "same", "strides": 2, "activation": "elu"},
            {"type": "max_pooling1d"},
            {"type": "conv1d", "filters": 2, "kernel_size": 2, "dilation_rate": 2},
            {"type": "average_pooling1d", "pool_size": 2, "padding": "same"},
            {"type": "global_average_pooling1d"},
        ],
        (13, 2),
    ),
    "conv1d-global-max": (
        [{"type": "conv1d", "filters": 3, "kernel_size": 3}, {"type": "global_max_pooling1d"}],
        (7, 2),
    ),
    "zero_padding2d-reshape": (
        [
            conv2d(2, 2),
            {"type": "zero_padding2d", "padding": [[1, 0], [2, 1]]},
            conv2d(2, 3),
            {"type": "reshape", "target_shape": [-1]},
        ],
        (4, 5, 1),
    ),
    "batch_normalization-images": (
        [conv2d(3, 2), {"type": "batch_normalization"}, conv2d(2, 2), {"type": "flatten"}],
        (5, 5, 1),
    ),
    "batch_normalization-rows-no-scale": (
        [
            {"type": "flatten"},
            dense(4),
            {"type": "batch_normalization", "scale": False, "momentum": 0.5},
            dense(3, "tanh"),
        ],
        (3, 2),
    ),
    "batch_normalization-first": (
        [{"type": "batch_normalization"}, conv2d(2, 3), {"type": "global_max_pooling2d"}],
        (5, 5, 2),
    ),
    "spatial_dropout2d": (
        [conv2d(3, 2), {"type": "spatial_dropout2d", "rate": 0.4}, conv2d(2, 2), {"type": "flatten"}],
        (5, 5, 1),
    ),
    "small-cnn": (
        [
            conv2d(3, 3, padding="same", activation="relu"),
            {"type": "max_pooling2d"},
            conv2d(4, 3, activation="relu"),
            {"type": "batch_normalization"},
            {"type": "global_average_pooling2d"},
            dense(5, "tanh"),
        ],
        (9, 9, 1),
    ),
}


@pytest.mark.parametrize("layers, input_shape", GRADIENT_CASES.values(), ids=GRADIENT_CASES.keys())
def test_gradients_match_finite_differences(layers, input_shape):
    x = np.random.default_rng(1).normal(size=(5, *input_shape))
    y = np.arange(5) % 3
    model = build({"layers": [*layers, dense(3, "softmax")]}, {"seed": 0, "batch_size": 5})
    assert gradcheck(model, x, y) < TOLERANCE


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_gradients_with_a_batch_of_one(padding):
    x = np.random.default_rng(2).normal(size=(1, 7, 7, 1))
    layers = [
        conv2d(2, 3, padding=padding, activation="relu"),
        {"type": "max_pooling2d"},
        conv2d(2, 2),
        {"type": "flatten"},
        dense(2),
    ]
    # Unscaled: standardizing a single row would turn every input into 0.
    model = build({"layers": layers, "input_scaling": "none"}, {"seed": 0, "loss": "mse"})
    assert gradcheck(model, x, np.random.default_rng(3).normal(size=(1, 2)), task="regression") < TOLERANCE


# Shapes ---------------------------------------------------------------------------------------------


def test_the_chain_of_shapes_is_checked_naming_the_layer_and_both_shapes():
    model = build({"layers": [conv2d(4, 3), dense(2)]})
    with pytest.raises(
        SpecError, match=r"^layers\[1\]: \(dense\) expects flat samples \(features,\); received \(6, 6, 4\)"
    ):
        model.allocate((8, 8, 1), np.random.default_rng(0))
    with pytest.raises(
        SpecError,
        match=r"^layers\[0\]: \(conv2d\) expects samples of shape \(height, width, channels\); received \(64,\)",
    ):
        build({"layers": [conv2d(4, 3), {"type": "flatten"}, dense(2)]}).allocate(64, None)
    with pytest.raises(
        SpecError, match=r"^layers\[2\]: \(conv2d\) a window of \[3, 3\] does not fit in samples of shape \(2, 2, 4\)"
    ):
        build(
            {"layers": [conv2d(4, 3), {"type": "max_pooling2d"}, conv2d(4, 3), {"type": "flatten"}, dense(2)]}
        ).allocate((6, 6, 1), None)
    with pytest.raises(
        SpecError, match=r"^layers\[1\]: \(reshape\) expects samples of 10 values for \[2, 5\]; received \(12,\)"
    ):
        build(
            {
                "layers": [
                    {"type": "flatten"},
                    {"type": "reshape", "target_shape": [2, 5]},
                    {"type": "flatten"},
                    dense(2),
                ]
            }
        ).allocate((3, 4), None)
    with pytest.raises(SpecError, match=r"^layers\[1\]: \(dense\) expects flat samples"):
        validate(
            {"layers": [conv2d(4, 3), dense(2)]},
            {},
            n_features=64,
            input_shape=[8, 8, 1],
            task="classification",
            width=2,
        )


def test_a_shaped_model_takes_samples_or_flat_rows_and_reports_its_input_shape():
    model = build({"layers": [conv2d(2, 3), {"type": "flatten"}, dense(2, "softmax")]}, {"epochs": 1, "seed": 0})
    x = rng.normal(size=(10, 5, 5, 1))
    model.fit(x, np.arange(10) % 2)
    assert model.input_shape == (5, 5, 1) and model.n_features == 25
    np.testing.assert_array_equal(model.predict_proba(x), model.predict_proba(x.reshape(10, 25)))
    with pytest.raises(
        SpecError,
        match=r"^X: each sample must have shape \[5, 5, 1\] \(or be a flat row of 25 values\); received \[5, 4, 1\]",
    ):
        model.predict(x[:, :, :4])
    assert (
        validate(
            model.spec(), {}, n_features=25, input_shape=[5, 5, 1], task="classification", width=2
        ).parameter_count((5, 5, 1))
        == model.n_parameters
    )
