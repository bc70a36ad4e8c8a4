"""A binary dataset upload: an ``.npz`` archive (``numpy.savez``, compressed or not) holding arrays
``x`` (samples along the first axis, of any shape) and ``y`` (a target per sample), read member by
member without ever holding it whole.

A 60,000-image dataset as JSON is half a gigabyte of text; as float32 it is 188 MB, as uint8 47 MB.
werkzeug has spooled the uploaded file to disk; here each member's ``.npy`` header is read first and
checked against the limits (rows, values a sample, bytes stored: so a deflated archive cannot unpack
beyond them), then ``x`` is read twice, a piece at a time, from its zip member: once to check every
value is finite, once as the float32 pieces the store packs. So an upload holds about one copy of
the stored features (the packed archive on its way to Redis), plus a piece.

Nothing is unpickled: an array whose dtype holds Python objects (what ``allow_pickle`` guards) is a
422 before any of it is read, and ``y`` is read with ``allow_pickle=False``.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterator
from typing import IO, Any

import numpy as np

from nnserve.engine.archive import Chunks

from . import data, shapes
from .errors import Invalid
from .settings import Settings
from .shapes import Shape

MAGIC = b"PK\x03\x04"
"""The first bytes of a zip archive, and so of an ``.npz``: how a binary upload is told from a CSV."""
PIECE_BYTES = data.BLOCK_BYTES
"""Bytes of an array read at once."""
ARRAYS = ("x", "y")
FEATURE_KINDS = "biuf"
TARGET_KINDS = "biufU"


def is_npz(file: IO[bytes]) -> bool:
    """Whether the uploaded ``file`` is a zip archive (read from its start; left where it was)."""
    head = file.read(len(MAGIC))
    file.seek(-len(head), 1)
    return head == MAGIC


def read(
    file: IO[bytes],
    target_kind: str | None,
    name: str | None,
    feature_names: list[str] | None,
    shape: Shape | None,
    settings: Settings,
) -> data.Dataset:
    """The dataset of an ``.npz`` upload (``file`` is seekable). ``shape``: the sample shape, when
    ``x`` holds flat rows of an image's values. Raises Invalid (422)."""
    if target_kind not in (None, "categorical", "continuous"):
        raise Invalid("target_kind", f"must be 'categorical' or 'continuous'; received {target_kind!r}")
    try:
        archive = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError, EOFError):
        raise Invalid("file", "not a readable .npz archive (a zip of .npy arrays, as numpy.savez writes)") from None
    try:
        names = sorted(info.filename.removesuffix(".npy") for info in archive.infolist())
        if names != sorted(ARRAYS):
            raise Invalid("file", f"the archive must hold exactly the arrays 'x' and 'y'; it holds {names}")
        return _read(archive, target_kind, name, feature_names, shape, settings)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        # A member cut short, a failing CRC or deflate stream, a header numpy cannot read.
        archive.close()
        raise Invalid("file", f"not a readable .npz archive ({error or type(error).__name__})") from None
    except BaseException:
        archive.close()
        raise


def _read(
    archive: zipfile.ZipFile,
    target_kind: str | None,
    name: str | None,
    feature_names: list[str] | None,
    shape: Shape | None,
    settings: Settings,
) -> data.Dataset:
    x_shape, _ = _header(archive, "x", FEATURE_KINDS)
    y_shape, y_dtype = _header(archive, "y", TARGET_KINDS)
    if len(x_shape) < 2:
        raise Invalid("x", f"must hold samples along its first axis, like (n, d) or (n, H, W, C); received {x_shape}")
    n, found = x_shape[0], x_shape[1:]
    width = math.prod(found)
    if len(found) > shapes.MAX_RANK:
        raise Invalid("x", f"samples have {len(found)} dimensions; at most {shapes.MAX_RANK} are allowed")
    if not 1 <= width <= settings.max_features:
        raise Invalid(
            "x",
            f"samples of shape {shapes.describe(found)} have {width} values; between 1 and {settings.max_features} are allowed",
        )
    if not 1 <= n <= settings.max_rows:
        raise Invalid("x", f"has {n} samples; between 1 and {settings.max_rows} are allowed")
    if y_shape[:1] != (n,) or len(y_shape) > 2:
        raise Invalid(
            "y", f"must hold one target (or a row of targets) per sample of x: shape ({n},); received {y_shape}"
        )
    n_targets = y_shape[1] if len(y_shape) == 2 else 1
    data.check_size(n, width, n_targets, settings.max_dataset_bytes)
    sample_shape = data.resolve_shape(shape, found, "the samples of x")

    for start, piece in _pieces(archive, "x", n, width):
        bad = data.first_not_finite(piece)
        if bad is not None:
            raise Invalid(f"x.{start + bad // width}", "contains a value that is not finite or beyond float32 range")
    targets = _targets(archive, y_dtype, n_targets, target_kind)
    features = Chunks((n, *sample_shape), np.dtype(np.float32), _stored(archive, n, width))
    return data.dataset(
        features,
        sample_shape,
        targets,
        kind_given=target_kind,
        n_targets=n_targets,
        feature_names=feature_names,
        target_name="y",
        name=name,
        max_bytes=settings.max_dataset_bytes,
    )


def _header(archive: zipfile.ZipFile, name: str, kinds: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """The shape and dtype of member ``name``, from its ``.npy`` header alone."""
    with archive.open(f"{name}.npy") as member:
        shape, fortran_order, dtype = _read_header(member)
    if dtype.hasobject:
        raise Invalid(name, "holds Python objects, which only pickle can read; save an array of numbers")
    if dtype.kind not in kinds:
        what = "numbers" if kinds == FEATURE_KINDS else "numbers, true/false or strings"
        raise Invalid(name, f"must hold {what}; received dtype {dtype.str!r}")
    if dtype.kind == "U" and dtype.itemsize // 4 > data.MAX_LABEL_LENGTH:
        raise Invalid(name, f"{data.LONG_LABEL}; the array's strings are {dtype.itemsize // 4} wide")
    if fortran_order and len(shape) > 1:
        raise Invalid(name, "is in Fortran order; save it in C order (numpy.ascontiguousarray)")
    return shape, dtype


def _read_header(member: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(member)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(member)
    raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported; numpy.save writes 1.0")


def _pieces(archive: zipfile.ZipFile, name: str, n: int, width: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(first sample, float32 values (samples, width))`` of member ``name``, about PIECE_BYTES at a time."""
    with archive.open(f"{name}.npy") as member:
        _, _, dtype = _read_header(member)
        per_piece = max(1, PIECE_BYTES // (width * max(dtype.itemsize, 4)))
        for start in range(0, n, per_piece):
            count = min(per_piece, n - start)
            raw = member.read(count * width * dtype.itemsize)
            if len(raw) != count * width * dtype.itemsize:
                raise Invalid(name, f"the archive's {name}.npy is shorter than its header says")
            with np.errstate(over="ignore", invalid="ignore"):  # beyond float32 becomes inf, reported by the caller
                piece = np.frombuffer(raw, dtype).astype(np.float32).reshape(count, width)
            del raw
            yield start, piece


def _stored(archive: zipfile.ZipFile, n: int, width: int) -> Iterator[np.ndarray]:
    """The pieces of ``x`` as the store packs them, read once more; the archive is closed after them.
    (They were all checked by the first reading: a failure now is the file changing under us.)"""
    with archive:
        for _, piece in _pieces(archive, "x", n, width):
            yield piece


def _targets(archive: zipfile.ZipFile, dtype: np.dtype[Any], n_targets: int, kind: str | None) -> data.TargetArrays:
    with archive.open("y.npy") as member:
        y = np.lib.format.read_array(member, allow_pickle=False)
    if n_targets > 1:
        if dtype.kind not in "iuf":
            raise Invalid("y", "several targets a sample must be numbers")
        if kind == "categorical":
            raise Invalid("y", "categorical targets must be one label a sample: shape (n,)")
        values = y.astype(np.float64)
        if not np.isfinite(values.astype(np.float32)).all():
            raise Invalid("y", "values must be finite and within float32 range")
        blocks = data.Blocks(np.float64)
        blocks.extend(values)
        return data.TargetArrays(blocks.chunks(y.shape, np.float32), "continuous", None)
    column = data.TargetColumn("y")
    y = y.reshape(-1)
    if dtype.kind == "U":
        long = data.first_long_label(y.tolist())
        if long is not None:
            raise Invalid(f"y.{long}", data.LONG_LABEL)
        column.add_strings(y.tolist())
    elif dtype.kind == "b":
        column.add_booleans(y.tolist())
    else:
        column.add_numbers(y.astype(np.float64), integral=dtype.kind in "iu")
    return column.finish(kind)
