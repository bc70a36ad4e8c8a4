"""Named arrays and a JSON document as bytes: an ``.npz`` archive, never a pickle.

Checkpoints, saved models and the store's data sets all travel in this form. Archives are
written with ``np.savez`` and read with ``allow_pickle=False``, so loading untrusted bytes
can fail but cannot run code; the JSON document, when there is one, is the entry
``metadata`` (a 0-d string array).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import SpecError


def pack(arrays: Mapping[str, np.ndarray], metadata: Mapping[str, Any] | None = None) -> bytes:
    """``arrays`` and a JSON-able ``metadata`` document as npz bytes."""
    if metadata is not None and "metadata" in arrays:
        raise ValueError("'metadata' names the archive's JSON document; give the array another name")
    buffer = io.BytesIO()
    entries: dict[str, Any] = {} if metadata is None else {"metadata": np.array(json.dumps(metadata))}
    entries.update(arrays)
    np.savez(buffer, **entries)
    return buffer.getvalue()


def unpack(blob: bytes, what: str = "archive") -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays and metadata of ``pack`` (``{}`` when it had none). Anything else raises SpecError
    located at ``what`` (the field the bytes came from)."""
    try:
        loaded = np.load(io.BytesIO(blob), allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("a single array, not an npz archive")
        with loaded as archive:
            arrays = {name: archive[name] for name in archive.files}
        metadata = json.loads(str(arrays.pop("metadata"))) if "metadata" in arrays else {}
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise SpecError(what, f"not a readable nnserve archive ({error or type(error).__name__})") from None
    if not isinstance(metadata, dict):
        raise SpecError(what, "not a readable nnserve archive (its metadata is not an object)")
    return arrays, metadata
