"""Models and checkpoints as bytes: an ``.npz`` archive of named arrays plus one JSON document.

Never pickle: archives are written with ``np.savez`` and read with ``allow_pickle=False``,
so loading untrusted bytes can fail but cannot run code. A model archive holds its
weights as ``layers.{i}.kernel`` / ``layers.{i}.bias`` in Keras ``get_weights()`` order
and, under ``metadata``, the model spec, the training config, the task, the class
labels and the input scaler: everything ``loads`` needs to predict bit-identically.
"""
from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np

from .errors import SpecError

FORMAT = "nnserve.model"
VERSION = 1


def pack(arrays: dict[str, np.ndarray], metadata: dict[str, Any]) -> bytes:
    """Arrays and a JSON-able ``metadata`` dict as npz bytes."""
    buffer = io.BytesIO()
    np.savez(buffer, metadata=np.array(json.dumps(metadata)), **arrays)
    return buffer.getvalue()


def unpack(blob: bytes) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays and metadata of ``pack``; anything else raises SpecError."""
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        metadata = json.loads(str(arrays.pop("metadata")))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as error:
        raise SpecError("weights", f"not a readable nnserve archive ({error})") from None
    return arrays, metadata


def dumps(model) -> bytes:
    """A trained model as npz bytes."""
    model._require_built()
    metadata = {
        "format": FORMAT,
        "version": VERSION,
        "spec": model.spec(),
        "training": model.training.config(),
        "task": model.task,
        "n_features": model.n_features,
        "classes": model.classes,
        "scaler": model.scaler.config() if model.scaler is not None else None,
        "weights": model.weight_names(),
    }
    return pack(dict(zip(model.weight_names(), model.get_weights())), metadata)


def loads(blob: bytes):
    """The model ``dumps`` wrote. Raises SpecError for anything that is not such an archive."""
    from .preprocessing import LabelEncoder, StandardScaler
    from .spec import build

    arrays, metadata = unpack(blob)
    if metadata.get("format") != FORMAT:
        raise SpecError("weights", "not an nnserve model archive")
    model = build(metadata["spec"], metadata["training"])
    model.task = metadata["task"]
    model.allocate(int(metadata["n_features"]), rng=None)
    names = metadata["weights"]
    if names != model.weight_names():
        raise SpecError("weights", "the arrays do not match the model spec")
    model.set_weights([arrays[name] for name in names])
    if metadata["classes"] is not None:
        model.encoder = LabelEncoder(metadata["classes"])
    if metadata["scaler"] is not None:
        model.scaler = StandardScaler(**metadata["scaler"])
    return model
