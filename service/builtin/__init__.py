"""The built-in datasets every tenant sees: ``iris``, ``blobs``, ``linear`` and ``digits``.

They live in the package, not in Redis, so they are always present and read-only; each
is built once per process on first use. ``iris.csv`` is the 150-row iris table with
species names as labels.

``digits.npz`` holds the 1,797 8x8 grey-scale handwritten digits of the UCI "Optical Recognition
of Handwritten Digits" set (E. Alpaydin, C. Kaynak, 1998; https://doi.org/10.24432/C50P49; licence
CC BY 4.0), as scikit-learn's ``load_digits`` gives them: ``x`` uint8 (1797, 8, 8), values 0 to 16
(the count of set pixels in each 4x4 block of the 32x32 bitmap), ``y`` uint8 digits 0-9. It was
written once, at development time, with ``numpy.savez_compressed(path, x=images.astype(uint8),
y=target.astype(uint8))``; nothing is downloaded at run time. Served as (8, 8, 1) images, channels
last, with the values as they are (scale them with the model's input scaling).
"""

from __future__ import annotations

import csv
import functools
import io
from importlib import resources
from typing import Any

import numpy as np

NAMES = ("iris", "blobs", "linear", "digits")
CREATED_AT = "1970-01-01T00:00:00+00:00"
BLOBS_CENTRES = ((0.0, -2.0), (2.0, 2.0), (-2.0, 2.0))
BLOBS_PER_CLASS = 500
BLOBS_SEED = 0
BLOBS_STD = 0.8


def is_builtin(dataset_id: str) -> bool:
    return dataset_id in NAMES


@functools.cache
def load(name: str) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """``(metadata, features, targets)`` of a built-in dataset; KeyError for any other name."""
    x, y, meta = {"iris": _iris, "blobs": _blobs, "linear": _linear, "digits": _digits}[name]()
    x.flags.writeable = y.flags.writeable = False  # shared by every caller in the process
    categorical = meta["target_kind"] == "categorical"
    meta.update(
        id=name,
        tenant=None,
        builtin=True,
        n_samples=int(x.shape[0]),
        n_features=int(np.prod(x.shape[1:])),
        sample_shape=list(x.shape[1:]),
        n_targets=1,
        classes=np.unique(y).tolist() if categorical else None,
        class_counts=np.unique(y, return_counts=True)[1].tolist() if categorical else None,
        target_kind_inferred=False,
        note=None,
        created_at=CREATED_AT,
    )
    return meta, x, y


def _iris():
    text = resources.files(__package__).joinpath("iris.csv").read_text()
    header, *rows = list(csv.reader(io.StringIO(text)))
    x = np.array([row[:-1] for row in rows], dtype=np.float64).astype(np.float32)
    y = np.array([row[-1] for row in rows])
    meta = {"name": "iris", "feature_names": header[:-1], "target_name": header[-1], "target_kind": "categorical"}
    return x, y, meta


def _blobs():
    rng = np.random.default_rng(BLOBS_SEED)
    centres = np.array(BLOBS_CENTRES)
    y = np.repeat(np.arange(len(centres)), BLOBS_PER_CLASS)
    x = (centres[y] + rng.normal(scale=BLOBS_STD, size=(len(y), 2))).astype(np.float32)
    meta = {"name": "blobs", "feature_names": ["x1", "x2"], "target_name": "blob", "target_kind": "categorical"}
    return x, y.astype(np.int64), meta


def _linear():
    x = np.arange(1, 5, dtype=np.float32).reshape(-1, 1)
    meta = {"name": "linear", "feature_names": ["x"], "target_name": "y", "target_kind": "continuous"}
    return x, (2 * x[:, 0]).astype(np.float32), meta


def _digits():
    with resources.files(__package__).joinpath("digits.npz").open("rb") as file, np.load(file) as archive:
        x, y = archive["x"], archive["y"]
    meta = {"name": "digits", "feature_names": None, "target_name": "digit", "target_kind": "categorical"}
    return x.astype(np.float32)[..., np.newaxis], y.astype(np.int64), meta
