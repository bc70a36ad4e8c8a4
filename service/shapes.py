"""Sample shapes: what one sample of a dataset, or one input of a model, looks like.

A sample is a row ``(d,)`` or, say, an image ``(H, W, C)`` (channels last, as Keras). A dataset is
stored with its features as ``(n, *sample_shape)`` and says ``sample_shape`` in its metadata
(``sample_shape_of`` reads it, also from records older than shapes); a model takes samples of its
own input shape (``model_sample_shape``), which for a model being trained is the dataset's, or flat
rows of it when only rows fit its first layer (``training_shape``).

Whatever is handed to a model goes through ``fit_to_model``: a dataset trained on by the worker or
evaluated by the API, and the inputs of a prediction on ``/v1`` and ``/v2``. It holds the one rule
that samples of the model's size take the model's shape (flat rows become images, images become
rows), so there is one place where arrays and models meet, and one wording of a wrong size.

The worker imports this module, so it imports NumPy and the engine only, never Flask: the shapes
clients send are read, with their 422s, in ``data`` (``parse_shape``, ``resolve_shape``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from nnserve import engine
from nnserve.engine import SpecError

MAX_RANK = 4
"""Most dimensions of one sample: ``(H, W, C)`` images, ``(T, F)`` sequences, ``(D, H, W, C)`` volumes."""

Shape = tuple[int, ...]


def describe(shape: Sequence[int]) -> str:
    """``(8, 8, 1)``, and ``(4,)`` for a row: as NumPy writes shapes, in every message."""
    return str(tuple(shape))


def sample_shape_of(meta: dict[str, Any]) -> Shape:
    """A dataset's sample shape, from its metadata (a row of ``n_features`` for records older than shapes)."""
    return tuple(meta.get("sample_shape") or (meta["n_features"],))


def model_sample_shape(model: Any, given: Shape) -> Shape:
    """The shape of one input sample an ``engine`` model takes, offered samples of shape ``given``: a
    built model's own (``Network.input_shape``); a model not built yet takes what it will train on
    (``training_shape``)."""
    if model.input_shape is not None:
        return tuple(model.input_shape)
    return training_shape(model, given)


def training_shape(model: Any, given: Shape) -> Shape:
    """The input shape a model not built yet trains on, given samples of shape ``given``: ``given`` when
    its layers chain from it; else, for shaped samples that only fit as flat rows (a dense net on images,
    the 64-128-10 network on the digits), their values as one row, row-major, as a CSV holds pixels.
    Raises the engine's SpecError about ``given`` when neither fits."""
    given = tuple(given)
    try:
        model.shapes(given)
        return given
    except SpecError as error:
        flat = (math.prod(given),)
        if len(given) == 1:
            raise
        try:
            model.shapes(flat)
        except SpecError:
            raise error from None
        return flat


def validate(spec: Any, training: Any, sample_shape: Shape, **checks: Any) -> tuple[Any, Shape]:
    """``engine.validate`` for data of samples ``sample_shape``, and the input shape the model will train
    on: the samples as they are, or their values as flat rows when only rows fit its first layer (as
    ``training_shape``). ``checks`` are ``engine.validate``'s other keywords. Raises the SpecError about
    the samples as they are when neither fits."""
    sample_shape = tuple(sample_shape)
    n_features = math.prod(sample_shape)
    try:
        return engine.validate(spec, training, n_features=n_features, input_shape=sample_shape, **checks), sample_shape
    except SpecError as error:
        if len(sample_shape) == 1:
            raise
        try:
            model = engine.validate(spec, training, n_features=n_features, input_shape=(n_features,), **checks)
        except SpecError:
            raise error from None
        return model, (n_features,)


def fit_to_model(model: Any, x: np.ndarray, what: str = "inputs") -> np.ndarray:
    """``x``, samples along its first axis, in the model's sample shape: as it is when it has that
    shape, else reshaped when each sample has the model's number of values (C order: flat rows are
    row-major pixels, as in a CSV). Any other size raises SpecError at ``what``, naming both shapes."""
    shape = model_sample_shape(model, x.shape[1:])
    if x.shape[1:] == shape:
        return x
    if x.ndim >= 2 and math.prod(x.shape[1:]) == math.prod(shape):
        return x.reshape(len(x), *shape)
    received = describe(x.shape[1:]) if x.ndim >= 2 else f"an array of shape {describe(x.shape)}"
    raise SpecError(
        what,
        f"each sample must have shape {describe(shape)} ({math.prod(shape)} values, nested or as a flat row); "
        f"received samples of shape {received}",
    )
