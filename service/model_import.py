"""Bring your own model: ``POST /v1/models`` (multipart) turns uploaded files into a ready model.

What may be uploaded:

- ``file`` = a Keras 3 ``.keras`` archive (the zip ``model.save`` writes: ``config.json``, the
  ``Sequential`` document, and ``model.weights.h5``, the weights in HDF5, read with h5py);
- ``file`` = an nnserve ``.npz`` (``GET /v1/models/{id}/weights`` of another nnserve), which keeps its own
  scaler and labels;
- ``model`` = a Keras ``to_json()`` document with ``weights`` = a ``.weights.h5`` (``save_weights``) or an
  ``.npz`` of the arrays in ``get_weights()`` order (``np.savez(f, *model.get_weights())``).

Keras weights are found where Keras 3 writes them: ``layers/{name}/vars/{i}``, ``name`` the snake-case class
name of the layer, numbered ``_1``, ``_2``… among layers of the same class (``dense``, ``dense_1``), ``i``
Keras's own order (kernel, bias). A Keras model is a classifier when ``classes`` is sent or its loss is a
classification loss or its output is softmax/sigmoid (labels ``0..k-1`` unless ``classes`` names them),
else a regressor; its inputs are not scaled (``input_scaling`` ``none``), as in Keras.

Nothing here unpickles (``allow_pickle=False``; HDF5 datasets are read only as numbers of the expected
shape) and every read is bounded: at most ``MAX_MEMBERS`` zip members, none whose name could escape a
folder, each read to at most ``limit`` bytes whatever its header claims (a zip bomb stops there), and an
``.npy`` member whose header promises more bytes than the member holds is refused before NumPy allocates.
Anything the engine cannot run is a 422 naming the layer or weight (expected shape vs received).
"""

from __future__ import annotations

import io
import json
import math
import re
import zipfile
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnserve import engine

from .errors import ContentTooLarge, Invalid, spec_error

KERAS_CONFIG, KERAS_WEIGHTS = "config.json", "model.weights.h5"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
MAX_MEMBERS = 64
CLASSIFICATION_HEADS = ("softmax", "sigmoid")


@dataclass(frozen=True)
class Imported:
    """The model (weights, task, labels, scaler) as ``engine.dumps`` bytes, and what its record says."""

    blob: bytes
    model: Any  # engine.Model
    source: str  # "keras" or "nnserve"
    feature_names: list[str] | None = None  # those an nnserve archive carries


def with_feature_names(blob: bytes, feature_names: list[str] | None) -> bytes:
    """An ``engine.dumps`` archive with the model's ``feature_names`` added to its metadata, for the weights
    download: another nnserve importing it matches named columns as this one does (``engine.loads`` ignores them)."""
    if not feature_names:
        return blob
    arrays, metadata = engine.archive.unpack(blob)
    return engine.archive.pack(arrays, {**metadata, "feature_names": feature_names})


def from_upload(
    file: bytes | None,
    document: str | None,
    weights: bytes | None,
    classes: list[Any] | None,
    input_scaling: str | None,
    limit: int,
    max_parameters: int,
) -> Imported:
    """The model the parts describe (see the module docstring); raises Invalid (422) naming the part at fault.
    A model over ``max_parameters`` weights is refused before anything is allocated for it."""
    if file is not None:
        if document is not None or weights is not None:
            raise Invalid("file", "send either file, or model with weights; not both")
        members = _zip_members(file, "file", limit)
        if KERAS_CONFIG in members and KERAS_WEIGHTS in members:
            config = _read(file, KERAS_CONFIG, "file", limit)
            h5 = _read(file, KERAS_WEIGHTS, "file", limit)
            return _from_keras(
                config.decode("utf-8", "replace"), ("h5", h5), classes, input_scaling, "file", max_parameters
            )
        if "metadata.npy" in members:
            _check_npy_headers(file, members, "file", limit)
            if input_scaling is not None:
                raise Invalid("input_scaling", "an nnserve archive keeps its own scaling; leave input_scaling out")
            try:
                metadata = engine.archive.unpack(file, "file")[1]
                spec, n_features = metadata.get("spec"), metadata.get("n_features")
                if isinstance(n_features, int) and not isinstance(n_features, bool):
                    _check_size(engine.build(spec), n_features, max_parameters, "file")
                model = engine.loads(file)
                names = metadata.get("feature_names")
            except engine.SpecError as error:
                raise Invalid("file", error.message) from None
            if classes is not None:
                raise Invalid("classes", "an nnserve archive keeps its own class labels; leave classes out")
            if not (
                isinstance(names, list) and all(isinstance(n, str) for n in names) and len(names) == model.n_features
            ):
                names = None
            return Imported(file, model, "nnserve", names)
        raise Invalid(
            "file",
            f"not a Keras .keras archive ({KERAS_CONFIG} and {KERAS_WEIGHTS}) nor an nnserve .npz; "
            f"its members are {sorted(members)[:10]}",
        )
    if document is None or weights is None:
        missing = "file" if document is None and weights is None else ("model" if document is None else "weights")
        raise Invalid(
            missing, "send a file (.keras or nnserve .npz), or a model (Keras JSON) with its weights", "missing"
        )
    if weights.startswith(HDF5_SIGNATURE):
        return _from_keras(document, ("h5", weights), classes, input_scaling, "weights", max_parameters)
    members = _zip_members(weights, "weights", limit)
    _check_npy_headers(weights, members, "weights", limit)
    return _from_keras(document, ("npz", weights), classes, input_scaling, "weights", max_parameters)


def _check_size(model: Any, n_features: int, max_parameters: int, loc: str) -> None:
    """Refuse a model over the server's weight limit before its weights are allocated."""
    count = model.parameter_count(n_features) if n_features > 0 else 0
    if count > max_parameters:
        raise Invalid(loc, f"the model has {count} parameters; the server's limit is {max_parameters}")


# Keras -----------------------------------------------------------------------------------------


def _from_keras(
    document_text: str,
    weights: tuple[str, bytes],
    classes: list[Any] | None,
    input_scaling: str | None,
    weights_loc: str,
    max_parameters: int,
) -> Imported:
    root = "model" if weights_loc == "weights" else f"file.{KERAS_CONFIG}"
    try:
        document = json.loads(document_text)
        imported = engine.from_keras(document)
    except json.JSONDecodeError as error:
        raise Invalid(root, f"is not valid JSON: {error}", "json_invalid") from None
    except engine.SpecError as error:
        raise spec_error(error, root) from None
    if input_scaling not in (None, "none"):
        raise Invalid(
            "input_scaling", "must be 'none' for a Keras model: there are no training rows to take the scaling from"
        )
    layers = [layer for layer in document["config"]["layers"] if layer.get("class_name") != "InputLayer"]
    try:
        model = engine.build(imported.spec, imported.training)
    except engine.SpecError as error:
        raise spec_error(error, root) from None
    arrays = _h5_arrays(weights[1], layers, weights_loc) if weights[0] == "h5" else _npz_arrays(weights[1], weights_loc)
    n_features = imported.input_dim or (arrays[0].shape[0] if arrays and arrays[0].ndim == 2 else None)
    if not n_features:
        raise Invalid(f"{root}.config.layers", "the model's input width is unknown: add a keras.Input((n,)) layer")
    _check_size(model, n_features, max_parameters, root)
    model.allocate(n_features, rng=None)
    names, expected = model.weight_names(), [w.shape for w in model.get_weights()]
    if len(arrays) != len(expected):
        raise Invalid(
            weights_loc, f"the model has {len(expected)} weight arrays ({', '.join(names)}); received {len(arrays)}"
        )
    for i, (name, shape, array) in enumerate(zip(names, expected, arrays)):
        if array.shape != shape or array.dtype.kind != "f":
            _, index, part = name.split(".")
            layer = layers[int(index)]
            what = f"layer {layer.get('config', {}).get('name', index)!r} ({layer.get('class_name')}) {part}"
            received = f"{array.dtype} {array.shape}" if array.dtype.kind != "f" else str(array.shape)
            raise Invalid(f"{weights_loc}.{i}", f"{what}: expected float shape {shape}; received {received}")
    task, labels = _task(model, imported.training, classes)
    metadata = {
        "format": "nnserve.model",
        "version": 1,
        "spec": model.spec(),
        "training": model.training.config(),
        "task": task,
        "n_features": n_features,
        "classes": labels,
        "scaler": None,
        "weights": names,
    }
    dtype = np.dtype(model.dtype)
    blob = engine.archive.pack({name: a.astype(dtype) for name, a in zip(names, arrays)}, metadata)
    try:
        return Imported(blob, engine.loads(blob), "keras")
    except engine.SpecError as error:
        raise Invalid("classes" if classes is not None else weights_loc, error.message) from None


def _task(model: Any, training: dict[str, Any], classes: list[Any] | None) -> tuple[str, list[Any] | None]:
    """``(task, class labels)``: a classifier when labels are given, the loss says so or the head is a probability."""
    width = 2 if model.n_outputs == 1 else model.n_outputs
    loss = training.get("loss")
    loss_name = loss.get("name") if isinstance(loss, dict) else loss
    classifying_loss = isinstance(loss_name, str) and "crossentropy" in loss_name
    if classes is None and not classifying_loss and (model.head not in CLASSIFICATION_HEADS or loss_name is not None):
        return "regression", None
    labels = list(range(width)) if classes is None else classes
    if len(labels) != width:
        raise Invalid("classes", f"the model has {model.n_outputs} outputs, so {width} labels; received {len(labels)}")
    return "classification", labels


def _keras_paths(layers: list[dict[str, Any]]) -> list[str]:
    """Where Keras 3 keeps each layer's variables: ``layers/{snake-case class}[_{n}]/vars``."""
    seen: Counter[str] = Counter()
    paths = []
    for layer in layers:
        base = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", str(layer.get("class_name"))).lower()
        paths.append(f"layers/{base}" + (f"_{seen[base]}" if seen[base] else "") + "/vars")
        seen[base] += 1
    return paths


def _h5_arrays(blob: bytes, layers: list[dict[str, Any]], loc: str) -> list[np.ndarray]:
    import h5py  # here: only an import needs it

    arrays: list[np.ndarray] = []
    try:
        with h5py.File(io.BytesIO(blob), "r") as weights:
            for layer, path in zip(layers, _keras_paths(layers)):
                group = weights.get(path)
                if layer.get("class_name") != "Dense":
                    continue
                if not isinstance(group, h5py.Group):
                    raise Invalid(loc, f"no weights for layer {layer.get('config', {}).get('name')!r} at {path}")
                for index in sorted(group, key=lambda key: int(key) if key.isdigit() else -1):
                    dataset = group[index]
                    if not isinstance(dataset, h5py.Dataset) or dataset.dtype.kind != "f" or dataset.size > 10**9:
                        raise Invalid(f"{loc}.{path}/{index}", "must be an array of floats")
                    arrays.append(np.asarray(dataset[()]))
    except OSError as error:
        raise Invalid(loc, f"not a readable HDF5 weights file ({error})") from None
    return arrays


def _npz_arrays(blob: bytes, loc: str) -> list[np.ndarray]:
    """The arrays of an npz in ``get_weights()`` order: ``arr_0, arr_1, …`` (``np.savez(f, *weights)``) by
    number, otherwise in the archive's order."""
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
            names = list(archive.files)
            if all(re.fullmatch(r"arr_\d+", name) for name in names):
                names.sort(key=lambda name: int(name[4:]))
            return [archive[name] for name in names]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise Invalid(loc, f"not a readable .npz of weight arrays ({error})") from None


# Bounded archive reads ---------------------------------------------------------------------------


def _zip_members(blob: bytes, loc: str, limit: int) -> dict[str, zipfile.ZipInfo]:
    """The members of a zip, checked before anything is read: few, safe names, declared sizes within ``limit``."""
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as error:
        raise Invalid(loc, f"not a zip archive (.keras or .npz): {error}") from None
    if len(infos) > MAX_MEMBERS:
        raise Invalid(loc, f"has {len(infos)} members; an archive of a model has at most {MAX_MEMBERS}")
    for info in infos:
        name = info.filename
        if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name) or ".." in re.split(r"[/\\]", name):
            raise Invalid(loc, f"member {name!r} has a path that leaves the archive")
    if sum(info.file_size for info in infos) > limit:
        raise ContentTooLarge(limit)
    return {info.filename: info for info in infos}


def _read(blob: bytes, name: str, loc: str, limit: int) -> bytes:
    """One member, read to at most ``limit`` bytes whatever its header says (a zip bomb stops there)."""
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as archive, archive.open(name) as member:
            data = member.read(limit + 1)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        raise Invalid(loc, f"{name}: unreadable ({error})") from None
    if len(data) > limit:
        raise ContentTooLarge(limit)
    return data


def _check_npy_headers(blob: bytes, members: dict[str, zipfile.ZipInfo], loc: str, limit: int) -> None:
    """Refuse an ``.npy`` member whose header promises more bytes than the member holds (NumPy would
    allocate them first), or an object array (pickle)."""
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        for name, info in members.items():
            if not name.endswith(".npy"):
                continue
            try:
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    header = (
                        np.lib.format.read_array_header_1_0(member)
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0(member)
                    )
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
                raise Invalid(loc, f"{name}: not a NumPy array ({error})") from None
            shape, _, dtype = header
            if dtype.hasobject:
                raise Invalid(loc, f"{name}: object arrays are refused (they would need pickle)")
            if math.prod(shape) * dtype.itemsize > min(info.file_size, limit):
                raise Invalid(loc, f"{name}: its header promises {shape} of {dtype}, more than the member holds")
