"""Optimizers and schedules.

Oracles, from the most independent to the most thorough:
- the single-step and five-step golden values published in Keras 3's optimizer tests;
- multi-step tables against Keras 3's update rules, written out plainly below;
- convergence of every optimizer and schedule on a small regression problem.
"""

import math

import numpy as np
import pytest

from nnserve.engine import SpecError, build
from nnserve.engine.optimizers import OPTIMIZERS, SCHEDULES, get

# Two "variables" (a 2x2 kernel and a bias of 3) in one flat buffer, as the model hands them over.
VARIABLES = [slice(0, 4), slice(4, 7)]
rng = np.random.default_rng(0)
START = rng.normal(size=7)
GRADIENTS = rng.normal(size=(8, 7)) * np.array([0.5, 2.0, 0.1, 3.0, 1.0, 0.02, 4.0])


def run(spec, gradients, start):
    """Apply ``gradients`` one step each; returns the parameters after every step."""
    optimizer = get(spec)
    param = np.array(start, dtype=np.float64)
    grad = np.zeros_like(param)
    optimizer.build([param], [grad], [grad[v] for v in VARIABLES] if len(param) == 7 else [grad])
    table = []
    for g in gradients:
        optimizer.start_epoch(0)
        grad[...] = g
        optimizer.step()
        table.append(param.copy())
    return np.array(table)


# Keras 3's update rules, one step at a time, with no attempt at speed ----------------------------


def keras_sgd(start, gradients, learning_rate=0.01, momentum=0.0, nesterov=False):
    w, m, table = start.copy(), np.zeros_like(start), []
    for g in gradients:
        if momentum:
            m = momentum * m - learning_rate * g
            w = w + momentum * m - learning_rate * g if nesterov else w + m
        else:
            w = w - learning_rate * g
        table.append(w)
    return np.array(table)


def keras_adam(start, gradients, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False):
    w, m, v, v_hat, table = start.copy(), np.zeros_like(start), np.zeros_like(start), np.zeros_like(start), []
    for t, g in enumerate(gradients, start=1):
        alpha = learning_rate * math.sqrt(1 - beta_2**t) / (1 - beta_1**t)
        m = m + (g - m) * (1 - beta_1)
        v = v + (g * g - v) * (1 - beta_2)
        if amsgrad:
            v_hat = np.maximum(v_hat, v)
            w = w - alpha * m / (np.sqrt(v_hat) + epsilon)
        else:
            w = w - alpha * m / (np.sqrt(v) + epsilon)
        table.append(w)
    return np.array(table)


def keras_rmsprop(start, gradients, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False):
    w, velocity, average, moment, table = (start.copy(), *(np.zeros_like(start) for _ in range(3)), [])
    for g in gradients:
        velocity = rho * velocity + (1 - rho) * g * g
        if centered:
            average = rho * average + (1 - rho) * g
            denominator = velocity - average * average + epsilon
        else:
            denominator = velocity + epsilon
        increment = learning_rate * g / np.sqrt(denominator)
        if momentum > 0:
            moment = momentum * moment + increment
            w = w - moment
        else:
            w = w - increment
        table.append(w)
    return np.array(table)


def keras_adagrad(start, gradients, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7):
    w, accumulator, table = start.copy(), np.full_like(start, initial_accumulator_value), []
    for g in gradients:
        accumulator = accumulator + g * g
        w = w - learning_rate * g / np.sqrt(accumulator + epsilon)
        table.append(w)
    return np.array(table)


REFERENCES = {"sgd": keras_sgd, "adam": keras_adam, "rmsprop": keras_rmsprop, "adagrad": keras_adagrad}

TABLE_CASES = [
    {"name": "sgd"},
    {"name": "sgd", "learning_rate": 0.1},
    {"name": "sgd", "learning_rate": 0.1, "momentum": 0.9},
    {"name": "sgd", "learning_rate": 0.1, "momentum": 0.9, "nesterov": True},
    {"name": "sgd", "learning_rate": 0.05, "momentum": 0.5, "nesterov": True},
    {"name": "adam"},
    {"name": "adam", "learning_rate": 0.05, "beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-4},
    {"name": "adam", "learning_rate": 0.05, "amsgrad": True},
    {"name": "rmsprop"},
    {"name": "rmsprop", "learning_rate": 0.01, "rho": 0.8},
    {"name": "rmsprop", "learning_rate": 0.01, "momentum": 0.9},
    {"name": "rmsprop", "learning_rate": 0.01, "centered": True},
    {"name": "rmsprop", "learning_rate": 0.01, "momentum": 0.5, "centered": True, "epsilon": 1e-3},
    {"name": "adagrad"},
    {"name": "adagrad", "learning_rate": 0.1, "initial_accumulator_value": 0.5, "epsilon": 1e-4},
]


def _case_id(spec):
    return "-".join([spec["name"], *(f"{k}={v}" for k, v in spec.items() if k != "name")])


@pytest.mark.parametrize("spec", TABLE_CASES, ids=_case_id)
def test_multi_step_table_matches_keras_update_rule(spec):
    params = {k: v for k, v in spec.items() if k != "name"}
    expected = REFERENCES[spec["name"]](START, GRADIENTS, **params)
    np.testing.assert_allclose(run(spec, GRADIENTS, START), expected, rtol=1e-12, atol=1e-14)


# Keras 3's own numbers: vars [1, 2, 3, 4], grads [1, 6, 7, 2], learning rate 0.5.
@pytest.mark.parametrize(
    "name, expected",
    [
        ("sgd", [0.5, -1.0, -0.5, 3.0]),
        ("adam", [0.5, 1.5, 2.5, 3.5]),
        ("rmsprop", [-0.5811, 0.4189, 1.4189, 2.4189]),
        ("adagrad", [0.5233, 1.5007, 2.5005, 3.5061]),
    ],
)
def test_keras_single_step(name, expected):
    table = run({"name": name, "learning_rate": 0.5}, [np.array([1.0, 6.0, 7.0, 2.0])], [1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(table[0], expected, rtol=1e-4, atol=1e-4)


# Keras 3's golden tables: x = ones(10), one step with 0.01 everywhere, then steps with 0.1, 0.2, ..., 1.0.
KERAS_GOLDEN = {
    "sgd-nesterov": (
        {"name": "sgd", "nesterov": True},
        [
            [0.9999] * 10,
            [0.9989, 0.9979, 0.9969, 0.9959, 0.9949, 0.9939, 0.9929, 0.9919, 0.9909, 0.9899],
            [0.9979, 0.9959, 0.9939, 0.9919, 0.9899, 0.9879, 0.9859, 0.9839, 0.9819, 0.9799],
            [0.9969, 0.9939, 0.9909, 0.9879, 0.9849, 0.9819, 0.9789, 0.9759, 0.9729, 0.9699],
            [0.9959, 0.9919, 0.9879, 0.9839, 0.9799, 0.9759, 0.9719, 0.9679, 0.9639, 0.9599],
        ],
    ),
    "adam-amsgrad": ({"name": "adam", "amsgrad": True}, [[v] * 10 for v in (0.999, 0.9982, 0.9974, 0.9965, 0.9955)]),
    "rmsprop-centered": (
        {"name": "rmsprop", "centered": True},
        [[v] * 10 for v in (0.9967, 0.9933, 0.9908, 0.9885, 0.9864)],
    ),
    "adagrad": (
        {"name": "adagrad", "learning_rate": 0.2, "initial_accumulator_value": 0.3, "epsilon": 1e-6},
        [
            [0.9963] * 10,
            [0.9604, 0.9278, 0.9003, 0.8784, 0.8615, 0.8487, 0.8388, 0.8313, 0.8255, 0.8209],
            [0.9251, 0.8629, 0.8137, 0.7768, 0.7497, 0.7298, 0.7151, 0.704, 0.6956, 0.6891],
            [0.8903, 0.8012, 0.7342, 0.6862, 0.6521, 0.6277, 0.6099, 0.5967, 0.5867, 0.579],
            [0.856, 0.7422, 0.6604, 0.6037, 0.5644, 0.5367, 0.5168, 0.5021, 0.491, 0.4825],
        ],
    ),
}


@pytest.mark.parametrize("case", list(KERAS_GOLDEN))
def test_keras_golden_table(case):
    spec, golden = KERAS_GOLDEN[case]
    gradients = [np.full(10, 0.01)] + [np.arange(1, 11) / 10] * 4
    np.testing.assert_allclose(run(spec, gradients, np.ones(10)), golden, rtol=5e-4, atol=5e-4)


# Clipping ------------------------------------------------------------------------------------------


def clipped_by_value(g, value):
    return np.clip(g, -value, value)


def clipped_by_norm(g, norm):
    """Keras's clipnorm: each variable's gradient on its own."""
    out = g.copy()
    for v in VARIABLES:
        length = np.linalg.norm(g[v])
        if length > norm:
            out[v] = g[v] * norm / length
    return out


def clipped_by_global_norm(g, norm):
    length = np.linalg.norm(g)
    return g * norm / length if length > norm else g


@pytest.mark.parametrize(
    "option, clip",
    [
        ({"clipvalue": 0.7}, lambda g: clipped_by_value(g, 0.7)),
        ({"clipnorm": 1.5}, lambda g: clipped_by_norm(g, 1.5)),
        ({"global_clipnorm": 2.0}, lambda g: clipped_by_global_norm(g, 2.0)),
    ],
    ids=["clipvalue", "clipnorm", "global_clipnorm"],
)
@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_clipping_then_the_update_rule(name, option, clip):
    clipped = [clip(g) for g in GRADIENTS]
    assert not np.allclose(clipped, GRADIENTS)  # the clip is active on these gradients
    expected = REFERENCES[name](START, clipped, learning_rate=0.1, **({"momentum": 0.9} if name == "sgd" else {}))
    spec = {"name": name, "learning_rate": 0.1, **option, **({"momentum": 0.9} if name == "sgd" else {})}
    np.testing.assert_allclose(run(spec, GRADIENTS, START), expected, rtol=1e-12, atol=1e-14)


def test_keras_clip_examples():
    """Keras's tests: clipnorm=1 takes [100, 100] to [sqrt(2)/2] * 2, clipvalue=1 to [1, 1] (lr 1, from 0)."""

    def clipped(option):
        return -run({"name": "sgd", "learning_rate": 1.0, **option}, [[100.0, 100.0]], [0.0, 0.0])[0]

    np.testing.assert_allclose(clipped({"clipnorm": 1.0}), [2**-0.5, 2**-0.5])
    np.testing.assert_allclose(clipped({"clipvalue": 1.0}), [1.0, 1.0])


# State ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", TABLE_CASES, ids=_case_id)
def test_state_resumes_exactly(spec):
    """Three steps, state(), a fresh optimizer load_state()s it, three more steps: as six in a row."""
    straight = run(spec, GRADIENTS[:6], START)[-1]
    first = get(spec)
    param, grad = START.copy(), np.zeros(7)
    first.build([param], [grad], [grad[v] for v in VARIABLES])
    for g in GRADIENTS[:3]:
        grad[...] = g
        first.step()
    scalars, arrays = first.state()
    second = get(spec)
    resumed, grad2 = param.copy(), np.zeros(7)
    second.build([resumed], [grad2], [grad2[v] for v in VARIABLES])
    second.load_state(scalars, {k: v.copy() for k, v in arrays.items()})
    for g in GRADIENTS[3:6]:
        grad2[...] = g
        second.step()
    np.testing.assert_array_equal(resumed, straight)


def test_state_is_kept_per_parameter_array():
    """Two arrays updated together move exactly as each would alone (state is aligned, not shared)."""
    spec = {"name": "adam", "learning_rate": 0.1}
    a, b = START[:4].copy(), START[4:].copy()
    ga, gb = np.zeros(4), np.zeros(3)
    optimizer = get(spec)
    optimizer.build([a, b], [ga, gb])
    for g in GRADIENTS:
        ga[...], gb[...] = g[:4], g[4:]
        optimizer.step()
    np.testing.assert_allclose(a, keras_adam(START[:4], GRADIENTS[:, :4], learning_rate=0.1)[-1], rtol=1e-12)
    np.testing.assert_allclose(b, keras_adam(START[4:], GRADIENTS[:, 4:], learning_rate=0.1)[-1], rtol=1e-12)


# Defaults and specs ---------------------------------------------------------------------------------


def test_keras_defaults():
    assert set(OPTIMIZERS) == {"sgd", "adam", "rmsprop", "adagrad"}
    assert get("sgd").spec() == {"name": "sgd", "learning_rate": 0.01, "momentum": 0.0, "nesterov": False}
    assert get("adam").spec() == {
        "name": "adam",
        "learning_rate": 0.001,
        "beta_1": 0.9,
        "beta_2": 0.999,
        "epsilon": 1e-7,
        "amsgrad": False,
    }
    assert get("rmsprop").spec() == {
        "name": "rmsprop",
        "learning_rate": 0.001,
        "rho": 0.9,
        "momentum": 0.0,
        "epsilon": 1e-7,
        "centered": False,
    }
    assert get("adagrad").spec() == {
        "name": "adagrad",
        "learning_rate": 0.001,
        "initial_accumulator_value": 0.1,
        "epsilon": 1e-7,
    }


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"name": "adam", "beta_1": 1.0}, r"^beta_1: must be >= 0\.0 and < 1\.0; received beta_1=1\.0$"),
        ({"name": "sgd", "learning_rate": 0}, r"^learning_rate: must be > 0\.0; received learning_rate=0\.0$"),
        ({"name": "sgd", "momentum": 1.5}, r"^momentum: must be >= 0\.0 and <= 1\.0; received momentum=1\.5$"),
        ({"name": "sgd", "clipnorm": -1}, r"^clipnorm: must be > 0\.0; received clipnorm=-1\.0$"),
        ({"name": "adam", "amsgrad": 1}, r"^amsgrad: must be true or false; received amsgrad=1$"),
        ({"name": "adam", "beta1": 0.9}, r"^beta1: unknown field; expected one of 'learning_rate', 'beta_1', "),
        ({"name": "sgd", "schedule": "linear"}, r"^schedule: unknown 'linear'; expected one of 'constant', 'step', "),
        (
            {"name": "sgd", "schedule": {"name": "step", "every": 0}},
            r"^schedule\.every: must be >= 1; received every=0$",
        ),
        ("nadam", r"^unknown 'nadam'; expected one of 'sgd', 'adam', 'rmsprop', 'adagrad'$"),
    ],
)
def test_bad_optimizer_specs(spec, message):
    with pytest.raises(SpecError, match=message):
        get(spec)


# Schedules ------------------------------------------------------------------------------------------


def schedule(spec):
    return get({"name": "sgd", "learning_rate": 1.0, "schedule": spec}).schedule


def test_schedules_registered():
    assert set(SCHEDULES) == {"constant", "step", "exponential", "cosine"}


@pytest.mark.parametrize(
    "spec, epochs_and_rates",
    [
        ("constant", [(0, 1.0), (7, 1.0), (100, 1.0)]),
        ({"name": "step", "drop": 0.5, "every": 10}, [(0, 1.0), (9, 1.0), (10, 0.5), (25, 0.25)]),
        ({"name": "exponential", "decay_rate": 0.5, "decay_epochs": 2}, [(0, 1.0), (2, 0.5), (3, 0.5**1.5)]),
        (
            {"name": "exponential", "decay_rate": 0.5, "decay_epochs": 2, "staircase": True},
            [(1, 1.0), (3, 0.5), (4, 0.25)],
        ),
        ({"name": "cosine", "decay_epochs": 10, "alpha": 0.1}, [(0, 1.0), (5, 0.55), (10, 0.1), (30, 0.1)]),
        ({"name": "cosine", "decay_epochs": 4}, [(1, (1 + math.cos(math.pi / 4)) / 2), (2, 0.5), (4, 0.0)]),
    ],
)
def test_schedule_formulas(spec, epochs_and_rates):
    for epoch, rate in epochs_and_rates:
        assert schedule(spec).rate(0.3, epoch) == pytest.approx(0.3 * rate, abs=1e-15)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ({"name": "step", "drop": 0.5, "every": 2}, [0.1, 0.1, 0.05, 0.05, 0.025, 0.025]),
        ({"name": "exponential", "decay_rate": 0.5}, [0.1 * 0.5**e for e in range(6)]),
        # Without decay_epochs, cosine decays over the run's epochs.
        ("cosine", [0.1 * (1 + math.cos(math.pi * e / 6)) / 2 for e in range(6)]),
    ],
    ids=["step", "exponential", "cosine"],
)
def test_training_logs_the_scheduled_rate_each_epoch(line, spec, expected):
    x, y = line
    model = build(
        {"layers": [{"type": "dense", "units": 1}]},
        {"optimizer": {"name": "sgd", "learning_rate": 0.1, "schedule": spec}, "epochs": 6, "seed": 0},
    )
    history = model.fit(x, y)
    assert history.history["learning_rate"] == pytest.approx(expected, abs=1e-15)


# Convergence ------------------------------------------------------------------------------------------

CONVERGING = [
    {"name": "sgd", "learning_rate": 0.05},
    {"name": "sgd", "learning_rate": 0.02, "momentum": 0.9},
    {"name": "sgd", "learning_rate": 0.02, "momentum": 0.9, "nesterov": True},
    {"name": "adam", "learning_rate": 0.1},
    {"name": "adam", "learning_rate": 0.1, "amsgrad": True},
    {"name": "rmsprop", "learning_rate": 0.02},
    {"name": "rmsprop", "learning_rate": 0.01, "momentum": 0.5},
    {"name": "rmsprop", "learning_rate": 0.02, "centered": True},
    {"name": "adagrad", "learning_rate": 0.5},
    {"name": "sgd", "learning_rate": 0.05, "schedule": {"name": "step", "drop": 0.5, "every": 10}},
    {"name": "sgd", "learning_rate": 0.05, "schedule": {"name": "exponential", "decay_rate": 0.95}},
    {"name": "sgd", "learning_rate": 0.05, "schedule": "cosine"},
    {"name": "adam", "learning_rate": 0.1, "schedule": "cosine"},
    {"name": "sgd", "learning_rate": 0.05, "clipvalue": 0.5},
    {"name": "sgd", "learning_rate": 0.1, "clipnorm": 1.0},
    {"name": "sgd", "learning_rate": 0.1, "global_clipnorm": 1.0},
]


@pytest.mark.parametrize("optimizer", CONVERGING, ids=str)
def test_every_optimizer_and_schedule_converges(line, optimizer):
    x, y = line
    model = build(
        {"layers": [{"type": "dense", "units": 1}]},
        {"optimizer": optimizer, "loss": "mse", "epochs": 60, "batch_size": 16, "seed": 0},
    )
    model.fit(x, y)
    # A constant prediction scores var(y) (about 13); the exact solution scores 0.
    assert model.evaluate(x, y)["loss"] < 1e-2
