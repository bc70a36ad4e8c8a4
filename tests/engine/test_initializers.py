"""Initializers draw with Keras's statistics: the uniform family's limit, the truncated normal
family's standard deviation (truncated at two, rescaled to keep the intended variance)."""

import math

import numpy as np
import pytest

from nnserve.engine import SpecError, build
from nnserve.engine.initializers import INITIALIZERS, get

FAN_IN, FAN_OUT = 400, 600  # 240,000 draws: sample statistics within a fraction of a percent

# name -> (distribution, variance scale, fan)
VARIANCE_SCALING = {
    "glorot_uniform": ("uniform", 1.0, (FAN_IN + FAN_OUT) / 2),
    "glorot_normal": ("normal", 1.0, (FAN_IN + FAN_OUT) / 2),
    "he_uniform": ("uniform", 2.0, FAN_IN),
    "he_normal": ("normal", 2.0, FAN_IN),
    "lecun_uniform": ("uniform", 1.0, FAN_IN),
    "lecun_normal": ("normal", 1.0, FAN_IN),
}


def draw(spec, shape=(FAN_IN, FAN_OUT), dtype=np.float64, seed=0):
    return get(spec)(shape, np.random.default_rng(seed), dtype)


def test_the_issue_initializers_are_registered():
    assert set(INITIALIZERS) >= {
        "glorot_uniform",
        "glorot_normal",
        "he_uniform",
        "he_normal",
        "lecun_normal",
        "zeros",
        "ones",
        "random_normal",
        "random_uniform",
    }


@pytest.mark.parametrize("name", [n for n, (d, _, _) in VARIANCE_SCALING.items() if d == "uniform"])
def test_uniform_family_limit(name):
    _, scale, fan = VARIANCE_SCALING[name]
    limit = math.sqrt(3 * scale / fan)  # glorot_uniform: sqrt(6 / (fan_in + fan_out))
    w = draw(name)
    assert np.abs(w).max() <= limit
    assert np.abs(w).max() > 0.999 * limit
    assert w.std() == pytest.approx(limit / math.sqrt(3), rel=0.01)
    assert abs(w.mean()) < 0.01 * limit


def test_glorot_uniform_limit_is_keras_formula():
    w = draw("glorot_uniform", shape=(30, 50))
    assert np.abs(w).max() <= math.sqrt(6 / (30 + 50))


@pytest.mark.parametrize("name", [n for n, (d, _, _) in VARIANCE_SCALING.items() if d == "normal"])
def test_truncated_normal_family_std(name):
    _, scale, fan = VARIANCE_SCALING[name]
    std = math.sqrt(scale / fan)  # he_normal: sqrt(2 / fan_in)
    w = draw(name)
    assert w.std() == pytest.approx(std, rel=0.01)
    assert abs(w.mean()) < 0.01 * std
    # Truncated at two standard deviations of the underlying (rescaled) normal.
    bound = 2 * std / 0.87962566103423978
    assert np.abs(w).max() <= bound
    assert np.abs(w).max() > 0.99 * bound


def test_bias_shaped_draws_use_the_length_as_both_fans():
    w = draw("he_uniform", shape=(50_000,))
    assert np.abs(w).max() <= math.sqrt(6 / 50_000)


def test_constant_and_plain_random_initializers():
    np.testing.assert_array_equal(draw("zeros", shape=(3, 2)), np.zeros((3, 2)))
    np.testing.assert_array_equal(draw("ones", shape=(4,)), np.ones(4))
    w = draw({"name": "random_normal", "mean": 1.0, "stddev": 0.5})
    assert w.mean() == pytest.approx(1.0, abs=0.005) and w.std() == pytest.approx(0.5, rel=0.01)
    w = draw({"name": "random_uniform", "minval": -0.2, "maxval": 0.6})
    assert w.min() >= -0.2 and w.max() < 0.6 and w.mean() == pytest.approx(0.2, abs=0.005)
    assert get("random_normal").spec() == {"name": "random_normal", "mean": 0.0, "stddev": 0.05}
    assert get("random_uniform").spec() == {"name": "random_uniform", "minval": -0.05, "maxval": 0.05}


@pytest.mark.parametrize("name", list(INITIALIZERS))
def test_dtype_and_seed(name):
    a = draw(name, shape=(5, 4), dtype=np.float32, seed=3)
    b = draw(name, shape=(5, 4), dtype=np.float32, seed=3)
    assert a.dtype == np.float32 and a.shape == (5, 4)
    np.testing.assert_array_equal(a, b)


def test_a_model_draws_its_kernel_with_the_layer_initializer():
    model = build(
        {"layers": [{"type": "dense", "units": 300, "kernel_initializer": "he_normal", "bias_initializer": "ones"}]},
        {"seed": 0},
    )
    model.allocate(500, np.random.default_rng(0))
    kernel, bias = model.get_weights()
    assert kernel.shape == (500, 300) and kernel.dtype == np.float32
    assert kernel.std() == pytest.approx(math.sqrt(2 / 500), rel=0.01)
    np.testing.assert_array_equal(bias, np.ones(300, dtype=np.float32))


def test_default_kernel_is_glorot_uniform_and_bias_zeros():
    model = build({"layers": [{"type": "dense", "units": 200}]}, {"seed": 0})
    model.allocate(300, np.random.default_rng(0))
    kernel, bias = model.get_weights()
    limit = math.sqrt(6 / 500)
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.99 * limit
    np.testing.assert_array_equal(bias, 0)


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"name": "random_normal", "stddev": -1}, r"^stddev: must be >= 0\.0; received stddev=-1\.0$"),
        ({"name": "random_uniform", "minval": 1, "maxval": 0}, r"^maxval: must be >= 1\.0; received maxval=0\.0$"),
        ({"name": "he_normal", "seed": 1}, r"^seed: unknown field; expected one of $"),
        ("xavier", r"^unknown 'xavier'; expected one of 'glorot_uniform', "),
    ],
)
def test_bad_initializer_specs(spec, message):
    with pytest.raises(SpecError, match=message):
        get(spec)
