"""Models as bytes: an ``.npz`` archive (no pickle) of the weights in Keras ``get_weights()`` order
plus JSON metadata. A round trip predicts bit-identically; anything else raises SpecError."""

import io
import json
import zipfile

import numpy as np
import pytest

from nnserve.engine import SpecError, build, dumps, loads
from tests.engine.helpers import dense


def fitted(spec, training, x, y):
    model = build(spec, {"epochs": 3, "seed": 0, "optimizer": {"name": "adam", "learning_rate": 0.02}, **training})
    model.fit(x, y)
    return model


def regression_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 5)) * [1, 10, 100, 0.1, 1] + [0, 5, -50, 0, 3]
    y = np.column_stack([x[:, 0] + x[:, 1] / 10, np.sin(x[:, 3] * 10), x[:, 2] / 100])
    return x, y


def classification_data():
    rng = np.random.default_rng(1)
    y = np.arange(90) % 3
    x = rng.normal(size=(90, 4)) + np.eye(3, 4)[y] * 3
    return x, np.array(["cat", "dog", "emu"])[y]


CASES = {
    "classification, string labels, scaled": lambda: (
        {"layers": [dense(8, "relu"), {"type": "dropout", "rate": 0.2}, dense(3, "softmax")]},
        {"metrics": ["accuracy"]},
        *classification_data(),
    ),
    "classification, logits head, unscaled": lambda: (
        {"layers": [dense(6, "tanh"), dense(3)], "input_scaling": "none"},
        {},
        *classification_data(),
    ),
    "binary, one sigmoid unit, integer labels": lambda: (
        {"layers": [dense(1, "sigmoid")]},
        {},
        classification_data()[0],
        (classification_data()[1] == "dog").astype(int) * 5 + 2,
    ),
    "regression, three targets, scaled": lambda: (
        {"layers": [dense(8, "gelu", kernel_regularizer="l2"), dense(3)]},
        {"metrics": ["mse", "r2"]},
        *regression_data(),
    ),
    "regression, three targets, unscaled, float64": lambda: (
        {"layers": [dense(8, "elu", use_bias=False), dense(3)], "input_scaling": "none", "dtype": "float64"},
        {"loss": "huber"},
        *regression_data(),
    ),
    "regression, one target": lambda: (
        {"layers": [dense(4, "relu"), dense(1)]},
        {},
        regression_data()[0],
        regression_data()[1][:, 0],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_round_trip_predicts_bit_identically(case):
    spec, training, x, y = CASES[case]()
    model = fitted(spec, training, x, y)
    blob = dumps(model)
    assert isinstance(blob, bytes)
    loaded = loads(blob)
    probe = np.random.default_rng(2).normal(size=(200, x.shape[1])) * x.std(axis=0) + x.mean(axis=0)
    for data in (x, probe):
        expected, got = model.predict(data), loaded.predict(data)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
        if model.task == "classification":
            np.testing.assert_array_equal(loaded.predict_proba(data), model.predict_proba(data))
    assert loaded.evaluate(x, y) == model.evaluate(x, y)
    assert loaded.spec() == model.spec()
    assert loaded.training.config() == model.training.config()
    assert loaded.classes == model.classes
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_the_archive_is_plain_npz_in_keras_order_with_json_metadata():
    x, y = classification_data()
    layers = [dense(8, "relu"), {"type": "dropout", "rate": 0.2}, dense(5, "tanh", use_bias=False), dense(3, "softmax")]
    spec = {"layers": layers}
    model = fitted(spec, {}, x, y)
    with np.load(io.BytesIO(dumps(model)), allow_pickle=False) as archive:
        files = list(archive.files)
        arrays = {name: archive[name] for name in files}
    names = ["layers.0.kernel", "layers.0.bias", "layers.2.kernel", "layers.3.kernel", "layers.3.bias"]
    assert files == ["metadata", *names]
    for name, weights in zip(names, model.get_weights()):
        assert arrays[name].dtype == np.float32
        np.testing.assert_array_equal(arrays[name], weights)
    assert [arrays[n].shape for n in names] == [(4, 8), (8,), (8, 5), (5, 3), (3,)]
    metadata = json.loads(str(arrays["metadata"]))
    assert metadata["spec"] == model.spec()
    assert metadata["training"] == model.training.config()
    assert metadata["task"] == "classification"
    assert metadata["classes"] == ["cat", "dog", "emu"]
    assert metadata["n_features"] == 4
    assert metadata["weights"] == names
    x32 = x.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(metadata["scaler"]["mean"], x32.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(metadata["scaler"]["scale"], x32.std(axis=0), rtol=1e-12)


def test_an_unfitted_model_cannot_be_dumped():
    with pytest.raises(SpecError, match=r"^the model has no weights yet: fit it, or load a trained one$"):
        dumps(build({"layers": [dense(1)]}))


def _npz(**arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _npy():
    buffer = io.BytesIO()
    np.save(buffer, np.arange(3.0))
    return buffer.getvalue()


def _valid_blob():
    x, y = classification_data()
    return dumps(fitted({"layers": [dense(4, "relu"), dense(3, "softmax")]}, {}, x, y))


def _tampered(change):
    """A real model archive, with its arrays and metadata changed by ``change(arrays, metadata)``."""
    with np.load(io.BytesIO(_valid_blob()), allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    metadata = json.loads(str(arrays.pop("metadata")))
    change(arrays, metadata)
    return _npz(metadata=np.array(json.dumps(metadata)), **arrays)


def _checkpoint():
    x, y = classification_data()
    checkpoints = []
    build({"layers": [dense(3, "softmax")]}, {"epochs": 1, "seed": 0}).fit(
        x, y, checkpoint_every=1, on_checkpoint=checkpoints.append
    )
    return checkpoints[0]


GARBAGE = {
    "empty": lambda: b"",
    "text": lambda: b"garbage",
    "random bytes": lambda: np.random.default_rng(0).bytes(1000),
    "zip header then zeros": lambda: b"PK\x03\x04" + bytes(100),
    "truncated archive": lambda: _valid_blob()[:300],
    "a plain .npy file": _npy,
    "a zip that is not npz": lambda: _zip_with_text(),  # noqa: PLW0108 (defined below)
    "npz without metadata": lambda: _npz(a=np.arange(3)),
    "npz with an object array": lambda: _npz(metadata=np.array([1, None], dtype=object)),
    "metadata not JSON": lambda: _npz(metadata=np.array("{not json")),
    "metadata a JSON list": lambda: _npz(metadata=np.array("[1, 2]")),
    "metadata a JSON string": lambda: _npz(metadata=np.array('"model"')),
    "metadata of another format": lambda: _npz(metadata=np.array('{"format": "keras"}')),
    "metadata with the format only": lambda: _npz(metadata=np.array('{"format": "nnserve.model", "version": 1}')),
    "a training checkpoint": _checkpoint,
    "a weight array missing": lambda: _tampered(lambda a, m: a.pop("layers.1.bias")),
    "a weight array of the wrong shape": lambda: _tampered(lambda a, m: a.__setitem__("layers.1.bias", np.zeros(5))),
    "a weight array of strings": lambda: _tampered(
        lambda a, m: a.__setitem__("layers.1.bias", np.array(["a", "b", "c"]))
    ),
    "weight names not matching the spec": lambda: _tampered(lambda a, m: m.__setitem__("weights", ["x"])),
    "weight names missing": lambda: _tampered(lambda a, m: m.pop("weights")),
    "an invalid spec": lambda: _tampered(lambda a, m: m["spec"]["layers"][0].__setitem__("activation", "relu6")),
    "n_features not a number": lambda: _tampered(lambda a, m: m.__setitem__("n_features", "four")),
    "n_features missing": lambda: _tampered(lambda a, m: m.pop("n_features")),
    "an incomplete scaler": lambda: _tampered(lambda a, m: m.__setitem__("scaler", {"mean": [0, 0, 0, 0]})),
    "classes not matching the outputs": lambda: _tampered(lambda a, m: m.__setitem__("classes", ["cat", "dog"])),
    "an unknown task": lambda: _tampered(lambda a, m: m.__setitem__("task", "ranking")),
    "an input shape of another size": lambda: _tampered(lambda a, m: m.__setitem__("input_shape", [2, 3])),
    "an input shape of strings": lambda: _tampered(lambda a, m: m.__setitem__("input_shape", ["4"])),
}


def test_an_archive_from_before_shaped_samples_reads_as_rows():
    """Archives written before sample shapes have no ``input_shape``: rows of ``n_features``."""
    blob = _tampered(lambda a, m: m.pop("input_shape"))
    model = loads(blob)
    assert model.input_shape == (4,) and model.n_features == 4
    x, _ = classification_data()
    np.testing.assert_array_equal(model.predict_proba(x), loads(_valid_blob()).predict_proba(x))


def _zip_with_text():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", "hello")
    return buffer.getvalue()


@pytest.mark.parametrize("case", list(GARBAGE))
def test_anything_but_a_model_archive_raises_spec_error(case):
    with pytest.raises(SpecError):
        loads(GARBAGE[case]())
