"""nnserve's own ``POST /v1/models/{id}/predict``, as a dialect: what the predict fast path and the
Flask route both read and answer."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..cache import Entry
from ..errors import UnsupportedMediaType
from ..parsing import inputs_array
from .common import json_body


def read(body: bytes, mimetype: str, entry: Entry) -> tuple[np.ndarray, None]:
    """The rows of a predict body: ``inputs``, ``records`` or ``columns`` and ``data`` (``parsing.inputs_array``)."""
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise UnsupportedMediaType(f"send the body as application/json; received {mimetype or 'no content type'!r}")
    return inputs_array(json_body(body), entry.feature_names), None


def write(entry: Entry, prediction: dict[str, Any], form: None) -> dict[str, Any]:
    """The prediction as it is, with the registered version that answered (``model_version``) when the
    model has one."""
    return prediction if entry.version is None else {**prediction, "model_version": entry.version}
