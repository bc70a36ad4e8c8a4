"""An uploaded dataset as arrays, built while the upload is read: features, targets, and what they mean.

The readers (``csv_upload``, ``json_upload``) parse the body as a stream and hand over its values a
batch at a time; nothing here holds the body, or a Python object per value. What is held:

- features: float32 in fixed-size :class:`Blocks`, 4 bytes a value (a value takes at least 2 bytes
  of body, ``1,``);
- targets: numbers as float64 blocks (8 bytes a row, a row at least 4 bytes of body, ``1,1\\n``),
  labels (strings, true/false) as int32 codes into the distinct labels seen.

Blocks are never joined: the store writes them into the npz one by one and each is released once
written (``Chunks``). So an upload costs the API at most about 3x its body size, plus a
constant (a block, a parse buffer), however the body is shaped; the test in
``tests/e2e/test_upload_memory.py`` measures it against a real ``nnserve api``.

The target kind decides the task: ``categorical`` targets train a classifier, ``continuous`` ones a
regressor. When the client does not say, it is inferred and the response says how
(``target_kind_inferred`` and ``note``): strings and booleans are categorical, fractional numbers
continuous, and integers categorical only when there are few distinct values for the number of rows.
"""

from __future__ import annotations

import json
import math
import mmap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnserve.engine.archive import Chunks

from . import shapes
from .errors import Invalid

MiB = 1024 * 1024
BLOCK_BYTES = 4 * MiB
"""Size of one block of a growing array: what growing costs beyond the values themselves."""
MAX_CLASSES_INFERRED = 20
"""More distinct integer targets than this are taken as continuous unless the client says otherwise."""
MAX_CLASSES = 10_000
"""Most distinct labels of categorical targets: each is a unit of the output layer and a line of the
dataset's metadata, and holding them is what parsing labels costs."""
MAX_LABEL_LENGTH = 200
"""Most characters in a string label (as in a name): labels are stored as fixed-width strings, so one
long label would widen every row's."""


class Blocks:
    """A growing 1-D array held as blocks of BLOCK_BYTES: growing never copies what is already
    stored, and ``take`` hands the values out block by block, releasing each, so they are never
    joined either."""

    def __init__(self, dtype: Any):
        self.dtype = np.dtype(dtype)
        self.size = 0
        self._per_block = max(1, BLOCK_BYTES // self.dtype.itemsize)
        self._blocks: list[np.ndarray] = []
        self._free = 0  # unused values at the end of the last block

    def extend(self, values: np.ndarray) -> None:
        values = values.reshape(-1)
        while len(values):
            if not self._free:
                self._blocks.append(_block(self._per_block, self.dtype))
                self._free = self._per_block
            last, used = self._blocks[-1], self._per_block - self._free
            n = min(len(values), self._free)
            last[used : used + n] = values[:n]
            values, self.size, self._free = values[n:], self.size + n, self._free - n

    def blocks(self) -> Iterator[np.ndarray]:
        """The filled part of each block, in order, without releasing them."""
        for i, block in enumerate(self._blocks):
            yield block[: self._per_block - self._free] if i == len(self._blocks) - 1 else block

    def take(self, itemsize: int | None = None) -> Iterator[np.ndarray]:
        """The values in order, in pieces of at most BLOCK_BYTES counted at ``itemsize`` bytes a value
        (for pieces that are about to be widened, such as codes into fixed-width labels); each block
        is released once its pieces are handed out. Once only: the Blocks are empty afterwards."""
        per_piece = max(1, BLOCK_BYTES // (itemsize or self.dtype.itemsize))
        filled = list(self.blocks())
        self._blocks.clear()
        self.size = self._free = 0
        filled.reverse()
        while filled:
            block = filled.pop()
            for start in range(0, len(block), per_piece):
                yield block[start : start + per_piece]
            del block

    def unique(self) -> np.ndarray:
        """The distinct values, sorted."""
        return np.unique(np.concatenate([np.unique(block) for block in self.blocks()] or [np.empty(0, self.dtype)]))

    def chunks(self, shape: tuple[int, ...], dtype: Any = None) -> Chunks:
        """The values as ``shape`` for the store, converted piece by piece to ``dtype`` if given."""
        dtype = np.dtype(dtype or self.dtype)
        pieces = self.take(max(dtype.itemsize, self.dtype.itemsize))
        if dtype != self.dtype:
            pieces = (piece.astype(dtype) for piece in pieces)
        return Chunks(shape, dtype, pieces)


def _block(size: int, dtype: np.dtype) -> np.ndarray:
    """An array of ``size`` values in an anonymous memory mapping of its own, unmapped (given back to
    the system) as soon as the array is released. From malloc, a freed block of a few MiB may stay
    in the process's heap (glibc serves such sizes from the heap once one has been freed), and then
    the npz growing beside the blocks while they are written would add to them instead of replacing
    them. The pages are only taken as they are written."""
    return np.frombuffer(mmap.mmap(-1, size * dtype.itemsize), dtype)


def parse_shape(value: Any, loc: str) -> shapes.Shape:
    """A sample shape given by a client (``[8, 8, 1]``): 1 to MAX_RANK positive integers, else a
    422 at ``loc``."""
    if (
        not isinstance(value, list)
        or not 1 <= len(value) <= shapes.MAX_RANK
        or not all(type(n) is int and n > 0 for n in value)
    ):
        raise Invalid(
            loc, f"must be a list of 1 to {shapes.MAX_RANK} positive integers, like [8, 8, 1]; received {value!r}"
        )
    return tuple(value)


def resolve_shape(given: shapes.Shape | None, found: shapes.Shape, what: str) -> shapes.Shape:
    """A dataset's sample shape: ``found`` (what its samples have, ``what`` in messages), or the
    ``shape`` the client ``given`` when its samples have as many values: flat rows of an image's
    pixels, row-major, or ``(28, 28)`` images given a channel axis as ``[28, 28, 1]`` (the rule
    ``shapes.fit_to_model`` applies to a model's inputs). Another size is a 422 at ``shape`` naming both."""
    if given is None or given == found:
        return found
    if math.prod(given) == math.prod(found):
        return given
    raise Invalid(
        "shape",
        f"is {list(given)} ({math.prod(given)} values a sample) but {what} have shape {shapes.describe(found)} "
        f"({math.prod(found)} values)",
    )


def parse_shape_text(text: str | None, loc: str = "shape") -> shapes.Shape | None:
    """A form field's shape, written as a JSON array (``[8, 8, 1]``); None when absent or empty."""
    if not text or not text.strip():
        return None
    try:
        value = json.loads(text)
    except ValueError:
        raise Invalid(loc, f"must be a JSON array of positive integers, like [8, 8, 1]; received {text!r}") from None
    return parse_shape(value, loc)


def first_not_finite(array: np.ndarray) -> int | None:
    finite = np.isfinite(array.reshape(-1))
    return None if finite.all() else int(np.argmin(finite))


def first_long_label(labels: Sequence[Any]) -> int | None:
    """Index of the first string over MAX_LABEL_LENGTH characters among ``labels``, or None."""
    return next((i for i, label in enumerate(labels) if type(label) is str and len(label) > MAX_LABEL_LENGTH), None)


LONG_LABEL = f"labels are at most {MAX_LABEL_LENGTH} characters"


@dataclass
class TargetArrays:
    """Targets ready to store, with what they mean."""

    chunks: Chunks
    kind: str
    note: str | None
    classes: list[Any] | None = None
    class_counts: list[int] | None = None


class TargetColumn:
    """One target per row, arriving in batches (``add_numbers``, ``add_strings``, ``add_booleans``,
    or CSV cells with ``add_cells``) and kept compactly; ``finish`` decides the kind and the stored
    dtype as the module docstring says. ``loc`` names the targets in errors (``targets``, ``target``)."""

    def __init__(self, loc: str, *, as_text: bool = False):
        """``as_text``: CSV targets the client called categorical, kept as the cells' text (so
        ``1, 2, cat`` are three labels) and typed at the end, when all the labels are known."""
        self.loc = loc
        self.as_text = as_text
        self.size = 0
        self.kinds: set[str] = set()  # number, string, boolean, text
        self.integral = True  # every number so far was an integer (exactly representable)
        self.numbers = Blocks(np.float64)
        self.codes = Blocks(np.int32)
        self._index: dict[Any, int] = {}  # distinct label -> code

    def add_numbers(self, values: np.ndarray, integral: bool) -> None:
        """float64 ``values``; ``integral`` when all were written as integers."""
        self._kind("number")
        self.integral = self.integral and integral and bool((np.abs(values) <= 2**53).all())
        if not np.isfinite(values).all():
            raise Invalid(self.loc, "values must be finite numbers")
        self.numbers.extend(values)
        self.size += len(values)

    def add_strings(self, labels: Sequence[str]) -> None:
        self._kind("text" if self.as_text else "string")
        self._code(labels)

    def add_booleans(self, labels: Sequence[bool]) -> None:
        self._kind("boolean")
        self._code(labels)

    def add_labels(self, labels: Sequence[Any]) -> None:
        """Labels typed as JSON types them: strings, numbers, true/false (which are not numbers)."""
        types = set(map(type, labels))
        if types <= {int, float}:
            self.add_numbers(np.array(labels, dtype=np.float64), types == {int})
        elif types == {str}:
            self.add_strings(labels)
        elif types == {bool}:
            self.add_booleans(labels)
        else:
            for kind, python in (("string", str), ("boolean", bool), ("number", int), ("number", float)):
                if python in types:
                    self._kind(kind)  # raises: a mix

    def add_cells(self, cells: Sequence[str]) -> None:
        """CSV cells (stripped): as text for categorical targets; otherwise numbers where they all
        parse as numbers (integers when they all parse as integers, as Python's int() and float()
        read them), strings where none does, and a mix of the two is an error."""
        if self.as_text or not cells:
            self.add_strings(cells)
            return
        text = np.array(cells)
        for dtype, integral in ((np.int64, True), (np.float64, False)):
            try:
                values = text.astype(dtype)
            except (ValueError, OverflowError):
                continue
            self.add_numbers(values.astype(np.float64), integral)
            return
        if any(is_number(cell) for cell in cells):
            self._kind("number")
            self._kind("string")
        self.add_strings(cells)

    def _kind(self, kind: str) -> None:
        self.kinds.add(kind)
        if "string" in self.kinds and len(self.kinds) > 1:
            raise Invalid(self.loc, "mixes strings and numbers; use one or the other")
        if "boolean" in self.kinds and len(self.kinds) > 1:
            raise Invalid(self.loc, "mixes true/false and numbers; use one or the other")

    def _code(self, labels: Sequence[Any]) -> None:
        index = self._index
        codes = [index.setdefault(label, len(index)) for label in labels]
        if len(index) > MAX_CLASSES:
            raise Invalid(self.loc, f"has more than {MAX_CLASSES} distinct labels; the limit is {MAX_CLASSES}")
        self.codes.extend(np.array(codes, dtype=np.int32))
        self.size += len(codes)

    def finish(self, kind: str | None) -> TargetArrays:
        """The targets to store, given the kind the client asked for (None: infer it)."""
        if "number" in self.kinds:
            return self._numbers(kind)
        labels = list(self._index)
        if "text" in self.kinds:  # numbers if they all are: 1, 2 and 02 are classes 1 and 2
            return self._categorical(_typed(labels), None)
        if kind == "continuous":
            raise Invalid(self.loc, "continuous targets must be numbers")
        note = (
            None if kind else f"{'strings' if 'string' in self.kinds else 'true/false values'}: taken as class labels"
        )
        return self._categorical(np.array(labels), note)

    def _categorical(self, values: np.ndarray, note: str | None) -> TargetArrays:
        """Targets stored as ``values[code]`` per row (``values`` may repeat: ``1`` and ``01``)."""
        classes, class_of_code = np.unique(values, return_inverse=True)
        rows_of_code = sum(np.bincount(block, minlength=len(values)) for block in self.codes.blocks())
        counts = np.bincount(class_of_code, weights=rows_of_code, minlength=len(classes))
        pieces = (values[piece] for piece in self.codes.take(values.dtype.itemsize))
        return _categorical(Chunks((self.size,), values.dtype, pieces), note, classes, counts)

    def _numbers(self, kind: str | None) -> TargetArrays:
        n = self.size
        if kind == "categorical":
            return self._categorical_numbers(None)
        if kind is None and self.integral:
            distinct = len(self.numbers.unique())
            if distinct <= MAX_CLASSES_INFERRED and 2 * distinct <= n:
                return self._categorical_numbers(
                    f"integers with {distinct} distinct values in {n} rows: taken as class labels; "
                    'send "target_kind": "continuous" if they are quantities'
                )
            note: str | None = (
                f"integers with {distinct} distinct values in {n} rows: taken as continuous values; "
                'send "target_kind": "categorical" if they are labels'
            )
        elif kind is None:
            note = (
                'fractional numbers: taken as continuous values; send "target_kind": "categorical" if they are labels'
            )
        else:
            note = None
        for block in self.numbers.blocks():
            with np.errstate(over="ignore"):
                if first_not_finite(block.astype(np.float32)) is not None:
                    raise Invalid(self.loc, "values must be finite and within float32 range")
        return TargetArrays(self.numbers.chunks((n,), np.float32), "continuous", note, None)

    def _categorical_numbers(self, note: str | None) -> TargetArrays:
        classes = self.numbers.unique()
        if len(classes) > MAX_CLASSES:
            raise Invalid(self.loc, f"has {len(classes)} distinct labels; the limit is {MAX_CLASSES}")
        counts = sum(
            np.bincount(np.searchsorted(classes, block), minlength=len(classes)) for block in self.numbers.blocks()
        )
        dtype = np.int64 if self.integral else np.float64
        return _categorical(self.numbers.chunks((self.size,), dtype), note, classes.astype(dtype), counts)


def _categorical(chunks: Chunks, note: str | None, classes: np.ndarray, counts: Any) -> TargetArrays:
    """Categorical targets, with their classes (sorted) and the rows of each."""
    if len(classes) < 2:
        raise Invalid("targets", "categorical targets need at least 2 distinct classes")
    return TargetArrays(chunks, "categorical", note, classes.tolist(), np.asarray(counts, dtype=np.int64).tolist())


def is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _typed(labels: list[str]) -> np.ndarray:
    """Labels as integers if they all read as integers, else as numbers if they all do, else as they are."""
    text = np.array(labels)
    for dtype in (np.int64, np.float64):
        try:
            return text.astype(dtype)
        except (ValueError, OverflowError):
            pass
    return text


@dataclass
class Dataset:
    """An upload ready for ``store.save_dataset``: its metadata and its arrays, each iterable once."""

    meta: dict[str, Any]
    features: Chunks
    targets: Chunks


def dataset(
    features: Blocks | Chunks,
    sample_shape: tuple[int, ...],
    targets: TargetArrays,
    *,
    kind_given: str | None,
    n_targets: int,
    feature_names: list[str] | None,
    target_name: str | None,
    name: str | None,
    max_bytes: int,
) -> Dataset:
    """The Dataset of parsed features (Blocks of samples of ``sample_shape`` one after the other, or
    Chunks already shaped ``(n, *sample_shape)``) and targets; the readers have checked the samples
    against each other and the limits on rows and values, this the stored size (``max_bytes``)."""
    width = math.prod(sample_shape)
    n = features.size // width if isinstance(features, Blocks) else features.shape[0]
    if feature_names is not None and len(feature_names) != width:
        raise Invalid("feature_names", f"has {len(feature_names)} names for {width} feature columns")
    check_size(n, width, n_targets, max_bytes)
    meta = {
        "name": name,
        "n_samples": n,
        "n_features": width,
        "sample_shape": list(sample_shape),
        "n_targets": n_targets,
        "target_kind": targets.kind,
        "target_kind_inferred": kind_given is None,
        "note": targets.note if kind_given is None else None,
        "classes": targets.classes,
        "class_counts": targets.class_counts,
        "feature_names": feature_names,
        "target_name": target_name,
        "builtin": False,
    }
    chunks = features.chunks((n, *sample_shape)) if isinstance(features, Blocks) else features
    return Dataset(meta, chunks, targets.chunks)


def stored_bytes(n: int, width: int, n_targets: int) -> int:
    """Bytes of a dataset's arrays as stored: float32 features, and targets of at most 8 bytes a value
    (float32 values, int64 or float64 classes; string labels take more, deflated)."""
    return n * (4 * width + 8 * n_targets)


def check_size(n: int, width: int, n_targets: int, max_bytes: int) -> None:
    """A 422 for a dataset whose arrays would take more than ``max_bytes`` stored (NNSERVE_MAX_DATASET_BYTES)."""
    size = stored_bytes(n, width, n_targets)
    if size > max_bytes:
        raise Invalid(
            "features",
            f"{n} samples of {width} values take {size:,} bytes as float32; the limit is {max_bytes:,} bytes "
            "(NNSERVE_MAX_DATASET_BYTES)",
        )
