"""Named arrays and a JSON document as bytes: an ``.npz`` archive, never a pickle.

Checkpoints, saved models and the store's data sets all travel in this form. Archives are
written member by member in NumPy's ``.npy`` format and read with ``allow_pickle=False``, so
loading untrusted bytes can fail but cannot run code; the JSON document, when there is one, is
the entry ``metadata`` (a 0-d string array).

An array may be handed over as :class:`Chunks`, pieces that are written as they come and never
joined: a data set being uploaded is never held twice.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import SpecError


@dataclass(frozen=True)
class Chunks:
    """An array handed over as ``pieces``: arrays of its dtype whose values, one after the other, are
    the whole in C order. ``pack`` writes them as they come and never joins them, so a caller whose
    iterator releases each piece once taken never holds the array twice. Iterated once."""

    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    pieces: Iterable[np.ndarray]


def pack(arrays: Mapping[str, np.ndarray | Chunks], metadata: Mapping[str, Any] | None = None) -> bytes:
    """``arrays`` and a JSON-able ``metadata`` document as npz bytes (``np.load`` reads them).

    Object arrays are refused (they would need pickle). Fixed-width string members (labels) are
    deflated: they are mostly padding, a million labels as wide as the longest one."""
    if metadata is not None and "metadata" in arrays:
        raise ValueError("'metadata' names the archive's JSON document; give the array another name")
    entries: dict[str, np.ndarray | Chunks] = {} if metadata is None else {"metadata": np.array(json.dumps(metadata))}
    entries.update(arrays)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", allowZip64=True) as archive:
        for name, array in entries.items():
            _write(archive, name, array if isinstance(array, Chunks) else Chunks(array.shape, array.dtype, [array]))
    return buffer.getvalue()  # the buffer's own bytes: no copy


def _write(archive: zipfile.ZipFile, name: str, chunks: Chunks) -> None:
    if chunks.dtype.hasobject:
        raise ValueError(f"{name}: object arrays cannot be stored without pickle")
    member = zipfile.ZipInfo(f"{name}.npy")
    member.compress_type = zipfile.ZIP_DEFLATED if chunks.dtype.kind == "U" else zipfile.ZIP_STORED
    header = {"descr": np.lib.format.dtype_to_descr(chunks.dtype), "fortran_order": False, "shape": chunks.shape}
    written, expected = 0, math.prod(chunks.shape) * chunks.dtype.itemsize
    with archive.open(member, "w", force_zip64=True) as file:
        np.lib.format.write_array_header_1_0(file, header)
        for piece in chunks.pieces:
            if piece.dtype != chunks.dtype:
                raise ValueError(f"{name}: a piece of dtype {piece.dtype} in an array of {chunks.dtype}")
            raw = np.ascontiguousarray(piece).reshape(-1).view(np.uint8).data
            file.write(raw)
            written += raw.nbytes
    if written != expected:
        raise ValueError(f"{name}: pieces of {written} bytes for shape {chunks.shape} ({expected} bytes)")


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
