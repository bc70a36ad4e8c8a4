"""A trained model as bytes and back: ``dumps`` and ``loads``.

The bytes are an archive (``archive.py``: npz, never a pickle) holding the weights as
``layers.{i}.kernel`` / ``layers.{i}.bias`` (and batch normalization's ``gamma``, ``beta``,
``moving_mean``, ``moving_variance``) in Keras ``get_weights()`` order and, as its metadata, the
model spec, the training config, the task, the input sample shape, the class labels and the
input scaler: everything ``loads`` needs to predict bit-identically. (Archives written before
shaped samples have no ``input_shape``: their samples are rows of ``n_features``.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import archive
from .errors import SpecError
from .model import Model
from .preprocessing import LabelEncoder, StandardScaler
from .spec import build
from .training_config import TASKS

FORMAT = "nnserve.model"
VERSION = 1


def dumps(model: Model) -> bytes:
    """A trained model as npz bytes."""
    model.weights()  # raises while the model has none
    metadata = {
        "format": FORMAT,
        "version": VERSION,
        "spec": model.spec(),
        "training": model.training.config(),
        "task": model.task,
        "n_features": model.n_features,
        "input_shape": list(model.input_shape or ()),
        "classes": model.classes,
        "scaler": model.scaler.config() if model.scaler is not None else None,
        "weights": model.weight_names(),
    }
    return archive.pack(dict(zip(model.weight_names(), model.get_weights())), metadata)


def loads(blob: bytes) -> Model:
    """The model ``dumps`` wrote. Raises SpecError for anything that is not such an archive."""
    arrays, metadata = archive.unpack(blob, "weights")
    if metadata.get("format") != FORMAT:
        raise SpecError("weights", "not an nnserve model archive")
    try:
        return _restore(arrays, metadata)
    except SpecError as error:
        raise SpecError("weights", f"not a valid nnserve model archive: {error}") from None
    except (KeyError, TypeError, ValueError) as error:
        raise SpecError("weights", f"not a valid nnserve model archive ({type(error).__name__}: {error})") from None


def _restore(arrays: dict[str, np.ndarray], metadata: dict[str, Any]) -> Model:
    model = build(metadata["spec"], metadata["training"])
    if metadata["task"] not in TASKS:
        raise SpecError("task", f"unknown {metadata['task']!r}")
    model.task = metadata["task"]
    n_features = metadata["n_features"]
    if isinstance(n_features, bool) or not isinstance(n_features, int) or n_features < 1:
        raise SpecError("n_features", f"must be a positive integer; received {n_features!r}")
    input_shape = metadata.get("input_shape") or [n_features]
    if (
        not isinstance(input_shape, list)
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in input_shape)
        or int(np.prod(input_shape)) != n_features
    ):
        raise SpecError("input_shape", f"must be a list of positive integers whose product is {n_features}")
    model.allocate(tuple(input_shape), rng=None)
    names = metadata["weights"]
    if names != model.weight_names():
        raise SpecError("weights", "the arrays do not match the model spec")
    weights = [arrays[name] for name in names]
    if any(w.dtype.kind not in "fiu" for w in weights):
        raise SpecError("weights", "weight arrays must hold numbers")
    model.set_weights(weights)
    if model.task == "classification":
        classes = metadata["classes"]
        expected = 2 if model.n_outputs == 1 else model.n_outputs
        if not isinstance(classes, list) or len(classes) != expected:
            raise SpecError("classes", f"must list {expected} labels for {model.n_outputs} outputs")
        model.encoder = LabelEncoder(classes)
    if metadata["scaler"] is not None:
        scaler = StandardScaler(**metadata["scaler"])
        if scaler.mean.shape != model.input_shape or scaler.scale.shape != model.input_shape:
            raise SpecError("scaler", f"must hold means and scales of shape {list(input_shape)}")
        model.scaler = scaler
    return model
