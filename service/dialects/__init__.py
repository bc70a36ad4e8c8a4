"""The request formats of other serving systems, answered by the same cache and predictions as ``/v1``.

Each dialect module has ``read(body, mimetype, entry) -> (rows, form)``, the rows to predict and how
to answer, and ``write(entry, prediction, form)``, the answer's JSON: ``v1`` (nnserve's own predict),
``tfserving`` (TF Serving REST / KServe v1), ``mlflow`` (MLflow's scoring protocol). Both raise the
API's errors, which ``errors.problem`` renders in each dialect's own shape. Named features (columns
matched to a model's ``feature_names``) are ``features``; the paths each dialect owns are ``paths``.
The routes are thin (``routes.models.predict_in``); the predict fast path (``fastpath``) answers
cache hits of every dialect with the same two functions.

Nothing is imported here: ``errors`` imports ``paths``, and the dialects import ``errors``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np

    from ..cache import Entry


class Dialect(Protocol):
    """What a dialect module provides (a module satisfies this protocol)."""

    def read(self, body: bytes, mimetype: str, entry: Entry) -> tuple[np.ndarray, Any]: ...

    def write(self, entry: Entry, prediction: dict[str, Any], form: Any) -> dict[str, Any]: ...
