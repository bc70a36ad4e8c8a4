"""A JSON dataset upload read as a stream, a window at a time, straight into arrays (see ``data``).

``orjson.loads`` of the whole body and pydantic made every number a Python float in a list (32
bytes for as little as 2 bytes of body): a 60 MiB upload took 3.4 GB. An event-per-value streaming
parser (ijson) bounds the memory but costs a Python event per number, and was slower than that on
30 million numbers. So the body is read in windows of WINDOW bytes, and regular expressions (C code,
nothing in Python per value) cut each window into runs of whole items of the two big lists:

- ``features`` (and ``targets`` of several columns): runs of rows holding only the characters of
  numbers, ``[1,2.5e3],[...]``. A row holding anything else is an error that names the first such
  value; a row only longer than a window is read on its own;
- ``targets``: runs of labels (strings, numbers, ``true``, ``false``).

orjson parses each run (checking the numbers and strings themselves) into one batch, which goes into
the arrays at once. The small fields (``name``, ``feature_names``, ``target_kind``) are parsed whole
and validated by ``DatasetCreate`` itself, with stand-ins for the two lists, so their errors read as
they always did. The first row over a limit, the first value that is not a number, the first row of
another width, an unknown field end the upload with its 422 there and then; invalid JSON is a 400.
"""

from __future__ import annotations

import contextlib
import gc
import math
import re
from collections.abc import Iterator
from typing import IO, Any

import numpy as np
import orjson
from pydantic import ValidationError

from . import data, shapes
from .errors import BadRequest, Invalid, RequestValidationError
from .schemas import DatasetCreate
from .settings import Settings
from .shapes import Shape

WINDOW = 1 << 20
"""Bytes of body split and parsed at once: the Python objects of one run (~16 bytes of them per
byte of body) are what reading costs beyond the arrays."""
LONGEST_LABEL = 8 * 1024
"""Bytes within which a label ends: MAX_LABEL_LENGTH characters, each written as \\uXXXX at most."""
SMALL_FIELDS = ("name", "feature_names", "target_kind", "shape")
SMALL_FIELD_BYTES = 8 * WINDOW
"""Most bytes in the value of a small field (feature_names: 10,000 names of up to 200 characters
would need 2 MiB)."""
NOT_A_ROW = "Input should be a valid list"
NOT_A_NUMBER = "Input should be a valid number"
NOT_A_LABEL = "must be a label (a string, a number or true/false), or every target a list of numbers"

# Possessive repeats (*+) throughout: they never backtrack, so matching a window of a million
# labels keeps no backtracking state (with plain * it took ~180 MiB) and takes a quarter of the time.
_WS = rb"[ \t\n\r]*+"  # JSON's whitespace (not \s: \f and \v are not)
_NUMBERS = rb"[0-9eE+\-., \t\n\r]*+"  # the characters of numbers, commas and whitespace
_ROW = rb"\[" + _NUMBERS + rb"\]"
ROWS = re.compile(_WS + _ROW + rb"(?:" + _WS + rb"," + _WS + _ROW + rb")*+")
"""Whole rows of number characters and the commas between them; orjson then checks the numbers."""
NESTED = re.compile(rb"\[" + _WS + rb"\[")
"""The start of a sample that is a nested list (an image), not a row."""
SAMPLE_CHARS = re.compile(rb"[0-9eE+\-., \t\n\r\[\]]*+")
"""Characters of samples nested in lists: numbers, brackets, commas and whitespace."""
OPEN, CLOSE = ord("["), ord("]")
OPEN_ROW = re.compile(rb"\[" + _NUMBERS)
"""A row's start, as far as it holds number characters."""
NUMBERS = re.compile(_NUMBERS)
_STRING = rb'"(?:[^"\\]|\\.)*+"'
_LABEL = rb"(?:" + _STRING + rb"|-?[0-9][0-9eE+\-.]*+|true|false)(?=" + _WS + rb"[,\]])"
LABELS = re.compile(_WS + _LABEL + rb"(?:" + _WS + rb"," + _WS + _LABEL + rb")*+")
"""Whole labels and the commas between them: each must be followed by a comma or the list's end,
so a number cut by the window's end is left for the next window."""
STRING = re.compile(_STRING)
SCALAR = re.compile(rb"-?[0-9][0-9eE+\-.]*+|true|false|null")
TOKEN = re.compile(_STRING + rb'|[\[\]{}]|[^"\[\]{}]++')
WHITESPACE = re.compile(_WS)
VALUE_START = b'"-0123456789tfn[{'


def read(stream: IO[bytes], settings: Settings, window: int = WINDOW) -> data.Dataset:
    """The dataset of a JSON body read from ``stream``, ``window`` bytes at a time. Raises Invalid (422)
    or BadRequest (400)."""
    with _collector_paused():
        return _Reader(_Body(stream, window), settings).read()


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while the body is read. A parsed run is up to a million
    lists (a 28x28x1 image is 813 of them), each counted towards the collector's next pass, which then
    walks every one still alive: with it on, orjson took 0.65 s for a 1 MiB run of images, 0.10 s
    with it off. The lists hold only numbers, so they never form cycles and are freed as each batch is
    dropped. The switch is process-wide: another thread meanwhile runs without passes too (it frees
    by reference counting as always), and the collector is left on only if it was on."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


class _Body:
    """The body, read a window at a time: ``buf[pos:]`` is the part read but not yet parsed."""

    def __init__(self, stream: IO[bytes], window: int):
        self.stream = stream
        self.window = window
        self.buf = b""
        self.pos = 0
        self.dropped = 0  # bytes of body before buf
        self.eof = False

    def fill(self, need: int | None = None) -> None:
        """At least ``need`` (a window's) unparsed bytes in ``buf``, or all that is left of the body."""
        need = need or self.window
        if len(self.buf) - self.pos >= need or self.eof:
            return
        parts, have = [self.buf[self.pos :]], len(self.buf) - self.pos
        while have < need:
            piece = self.stream.read(max(need - have, self.window))
            if not piece:
                self.eof = True
                break
            parts.append(piece)
            have += len(piece)
        self.dropped += self.pos
        self.buf, self.pos = b"".join(parts), 0

    def skip_whitespace(self) -> None:
        while True:
            self.pos = _end(WHITESPACE, self.buf, self.pos)
            if self.pos < len(self.buf) or self.eof:
                return
            self.fill()

    def peek(self) -> bytes:
        """The next byte after any whitespace (b"" at the end of the body)."""
        self.skip_whitespace()
        return self.buf[self.pos : self.pos + 1]

    def expect(self, allowed: bytes, what: str) -> bytes:
        """The next byte after any whitespace, consumed; a 400 unless it is one of ``allowed``."""
        byte = self.peek()
        if not byte or byte not in allowed:
            raise self.invalid(what)
        self.pos += 1
        return byte

    def invalid(self, what: str) -> BadRequest:
        found = repr(self.buf[self.pos : self.pos + 1].decode("latin-1")) if self.pos < len(self.buf) else "the end"
        return BadRequest(f"the body is not valid JSON: {what} at byte {self.dropped + self.pos}; found {found}")


class _Reader:
    def __init__(self, body: _Body, settings: Settings):
        self.body = body
        self.settings = settings

    def read(self) -> data.Dataset:
        body = self.body
        if body.peek() != b"{":
            if body.peek() and body.peek() in VALUE_START:
                raise Invalid(
                    "", 'the body must be a JSON object: {"features": [[...], ...], "targets": [...]}', "model_type"
                )
            raise body.invalid("expected a JSON object")
        body.pos += 1
        fields: dict[str, Any] = {}
        if body.peek() == b"}":
            body.pos += 1
        else:
            while True:
                key = self.key()
                body.expect(b":", "expected ':'")
                if key in fields:
                    raise Invalid(key, "appears more than once")
                if key == "features":
                    body.expect(b"[", "expected a list of rows")
                    fields[key] = self.features()
                elif key == "targets":
                    fields[key] = self.targets()
                elif key in SMALL_FIELDS:
                    fields[key] = self.small_value(key)
                else:
                    raise Invalid(key, "Extra inputs are not permitted", "extra_forbidden")
                if body.expect(b",}", "expected ',' or '}'") == b"}":
                    break
        if body.peek():
            raise body.invalid("expected the end of the body")
        return self.dataset(fields)

    def dataset(self, fields: dict[str, Any]) -> data.Dataset:
        request = _validate(fields)
        features, found = fields["features"]
        given = tuple(request.shape) if request.shape is not None else None
        sample_shape = data.resolve_shape(given, found, "the samples of features")
        targets, n_targets = fields["targets"]
        n = features.size // math.prod(found)
        rows = targets.size // n_targets
        if rows != n:
            raise Invalid("targets", f"has {rows} values but features has {n} rows")
        if isinstance(targets, data.TargetColumn):
            arrays = targets.finish(request.target_kind)
        elif request.target_kind == "categorical":
            raise Invalid("targets", "categorical targets must be a flat list of labels, one per row")
        else:
            arrays = data.TargetArrays(targets.chunks((n, n_targets)), "continuous", None)
        return data.dataset(
            features,
            sample_shape,
            arrays,
            kind_given=request.target_kind,
            n_targets=n_targets,
            feature_names=request.feature_names,
            target_name=None,
            name=request.name,
            max_bytes=self.settings.max_dataset_bytes,
        )

    def key(self) -> str:
        body = self.body
        byte = body.peek()
        body.fill()
        match = STRING.match(body.buf, body.pos) if byte == b'"' else None
        if match is None:
            raise body.invalid("expected a field name in double quotes")
        body.pos = match.end()
        return self.parse(match.group(), "")

    def parse(self, text: bytes, where: str) -> Any:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError as error:
            place = f" in {where}" if where else ""
            raise BadRequest(f"the body is not valid JSON{place}: {str(error).split(':')[0]}") from None

    def features(self) -> tuple[data.Blocks, Shape]:
        """``(values, sample shape)`` of ``features``, whose ``[`` was just read: rows, or samples
        nested deeper (``[[[0], [1]], ...]``), as the first one is."""
        body = self.body
        body.peek()
        body.fill()
        if NESTED.match(body.buf, body.pos):
            return self.samples("features")
        blocks, width = self.rows("features", self.settings.max_features)
        return blocks, (width,)

    def samples(self, loc: str) -> tuple[data.Blocks, Shape]:
        """``(values, sample shape)`` of a list of samples nested in lists, every one of the same
        shape, read as rows are: runs of whole samples cut from a window, each run parsed at once."""
        body = self.body
        batches = _Samples(loc, self.settings.max_features, self.settings.max_rows)
        longest = max(body.window, 64 * self.settings.max_features)  # bytes: generous for the values allowed
        while True:
            body.peek()
            body.fill()  # a window from the sample on
            start = body.pos
            end = _end(SAMPLE_CHARS, body.buf, start)
            cut = _whole_samples(body.buf, start, end)
            if cut is not None:
                batches.add(self.parse(b"[" + body.buf[start:cut] + b"]", loc))
                body.pos = cut
            elif body.buf[start : start + 1] != b"[":
                byte = body.buf[start : start + 1]
                if byte and byte in VALUE_START:
                    raise Invalid(f"{loc}.{batches.rows}", NOT_A_ROW, "list_type")
                raise body.invalid("expected a sample")
            elif end == len(body.buf) and not body.eof:  # a sample longer than the window: read on
                if end - start > longest:
                    raise Invalid(
                        f"{loc}.{batches.rows}", f"has more than the {self.settings.max_features} values allowed"
                    )
                body.fill(2 * (end - start))
                continue
            else:
                body.pos = end
                after = body.buf[end : end + 1]
                if after and after in VALUE_START:
                    raise Invalid(f"{loc}.{batches.rows}", "must hold only numbers, nested in lists", "float_type")
                raise body.invalid("expected a number or a list")
            if body.expect(b",]", "expected ',' or ']'") == b"]":
                return batches.blocks, batches.shape or ()

    def rows(self, loc: str, max_width: int) -> tuple[data.Blocks, int]:
        """``(values, width)`` of the list of rows of numbers whose ``[`` was just read, as float32:
        every row as long as the first, at most ``max_width`` values long, at most ``max_rows`` rows."""
        body = self.body
        batches = _Rows(loc, max_width, self.settings.max_rows)
        if body.peek() == b"]":
            raise Invalid(loc, "List should have at least 1 item after validation, not 0", "too_short")
        while True:
            body.peek()
            body.fill()  # a window from the row on
            match = ROWS.match(body.buf, body.pos, body.pos + body.window)
            if match:
                batches.add(self.parse(b"[" + match.group() + b"]", loc))
                body.pos = match.end()
            else:
                self.odd_row(batches)
            if body.expect(b",]", "expected ',' or ']'") == b"]":
                return batches.blocks, batches.width

    def odd_row(self, batches: _Rows) -> None:
        """The row at hand did not match ROWS: read it if it is only long; else raise its error."""
        body, loc, row = self.body, batches.loc, batches.rows
        byte = body.peek()
        if byte != b"[":
            if byte and byte in VALUE_START:
                raise Invalid(f"{loc}.{row}", NOT_A_ROW, "list_type")
            raise body.invalid("expected a row")
        while True:
            end = _end(OPEN_ROW, body.buf, body.pos)
            commas = body.buf.count(b",", body.pos, end)
            if end < len(body.buf) or body.eof:
                break
            # A row longer than the window: read on, unless it is already too long to keep.
            if commas + 1 > (batches.width or batches.max_width):
                raise batches.too_long(self.count_values(end, commas))
            body.fill(2 * (len(body.buf) - body.pos))
        after = body.buf[end : end + 1]
        if after == b"]":
            batches.add(self.parse(b"[" + body.buf[body.pos : end + 1] + b"]", loc))
            body.pos = end + 1
            return
        if after and after in VALUE_START:
            raise Invalid(f"{loc}.{row}.{commas}", NOT_A_NUMBER, "float_type")
        body.pos = end
        raise body.invalid("expected a number")

    def count_values(self, end: int, commas: int) -> int:
        """The number of values in the row at hand, read as far as ``end`` (with ``commas``), counted
        to its end without keeping it: it is too long to keep."""
        body = self.body
        body.pos = end
        while body.pos == len(body.buf) and not body.eof:
            body.fill()
            end = _end(NUMBERS, body.buf, body.pos)
            commas += body.buf.count(b",", body.pos, end)
            body.pos = end
        return commas + 1

    def targets(self) -> tuple[data.TargetColumn | data.Blocks, int]:
        """``(targets, columns)``: a TargetColumn of labels, or Blocks of rows of numbers (several outputs)."""
        body = self.body
        body.expect(b"[", "expected a list of targets")
        byte = body.peek()
        if byte == b"]":
            raise Invalid("targets", "List should have at least 1 item after validation, not 0", "too_short")
        if byte == b"[":
            return self.rows("targets", self.settings.max_features)
        column = data.TargetColumn("targets")
        max_rows = self.settings.max_rows
        while True:
            body.peek()
            body.fill()  # a window from the label on
            match = LABELS.match(body.buf, body.pos, body.pos + body.window)
            if match is None and body.peek() == b'"':  # a label longer than the window, perhaps
                body.fill(LONGEST_LABEL)
                match = LABELS.match(body.buf, body.pos, body.pos + max(body.window, LONGEST_LABEL))
            if match is None:
                raise self.odd_label(column.size)
            labels = self.parse(b"[" + match.group() + b"]", "targets")
            if column.size + len(labels) > max_rows:
                raise Invalid("targets", f"has more than {max_rows} values; the limit is {max_rows}")
            long = data.first_long_label(labels)
            if long is not None:
                raise Invalid(f"targets.{column.size + long}", data.LONG_LABEL)
            column.add_labels(labels)
            body.pos = match.end()
            if body.expect(b",]", "expected ',' or ']'") == b"]":
                return column, 1

    def odd_label(self, index: int) -> Exception:
        """The error of the label at hand, which did not match LABELS."""
        body = self.body
        byte = body.peek()
        if byte in (b"n", b"{", b"["):
            return Invalid(f"targets.{index}", NOT_A_LABEL)
        if byte == b'"' and not body.eof and STRING.match(body.buf, body.pos, body.pos + LONGEST_LABEL) is None:
            return Invalid(f"targets.{index}", data.LONG_LABEL)  # no closing quote where one must be
        return body.invalid("expected a label followed by ',' or ']'")

    def small_value(self, loc: str) -> Any:
        """The next value as Python objects: a small field's, at most SMALL_FIELD_BYTES long."""
        body = self.body
        byte = body.peek()
        body.fill(SMALL_FIELD_BYTES)
        start = body.pos
        end: int | None
        if byte in (b"[", b"{"):
            end = _nested_end(body.buf, start, start + SMALL_FIELD_BYTES)
        else:
            match = (STRING if byte == b'"' else SCALAR).match(body.buf, start, start + SMALL_FIELD_BYTES)
            end = match.end() if match else None
        if end is None:
            if len(body.buf) - start >= SMALL_FIELD_BYTES:
                raise Invalid(loc, f"is too large: more than {SMALL_FIELD_BYTES} bytes")
            raise body.invalid("expected a value")
        body.pos = end
        return self.parse(body.buf[start:end], loc)


class _Rows:
    """Batches of parsed rows moved into float32 blocks, checked against each other and the limits."""

    def __init__(self, loc: str, max_width: int, max_rows: int):
        self.loc = loc
        self.max_width = max_width
        self.max_rows = max_rows
        self.blocks = data.Blocks(np.float32)
        self.width = 0  # until the first row is read
        self.rows = 0

    def add(self, rows: list[list[Any]]) -> None:
        loc = self.loc
        if self.rows + len(rows) > self.max_rows:
            raise Invalid(loc, f"has more than {self.max_rows} rows; the limit is {self.max_rows}")
        if not self.width:
            self.width = len(rows[0])
            if not 1 <= self.width <= self.max_width:
                raise Invalid(loc, f"has {self.width} columns; between 1 and {self.max_width} are allowed")
        if set(map(len, rows)) != {self.width}:
            i, row = next((i, row) for i, row in enumerate(rows) if len(row) != self.width)
            raise Invalid(f"{loc}.{self.rows + i}", f"has {len(row)} values but row 0 has {self.width}")
        with np.errstate(over="ignore"):  # beyond float32's range becomes inf, reported just below
            values = np.array(rows, dtype=np.float32)
        bad = data.first_not_finite(values)
        if bad is not None:
            at = self.rows + bad // self.width
            raise Invalid(f"{loc}.{at}", "contains a value that is not finite or beyond float32 range")
        self.blocks.extend(values)
        self.rows += len(rows)

    def too_long(self, values: int) -> Invalid:
        if self.width:
            return Invalid(f"{self.loc}.{self.rows}", f"has {values} values but row 0 has {self.width}")
        return Invalid(self.loc, f"has {values} columns; between 1 and {self.max_width} are allowed")


class _Samples:
    """Batches of parsed samples (nested lists) moved into float32 blocks, checked against each other
    (the same shape: a ragged one is named by its 0-based index) and the limits."""

    def __init__(self, loc: str, max_values: int, max_rows: int):
        self.loc = loc
        self.max_values = max_values
        self.max_rows = max_rows
        self.blocks = data.Blocks(np.float32)
        self.shape: Shape | None = None  # until the first sample is read
        self.rows = 0

    def add(self, samples: list[Any]) -> None:
        loc = self.loc
        if self.rows + len(samples) > self.max_rows:
            raise Invalid(loc, f"has more than {self.max_rows} rows; the limit is {self.max_rows}")
        try:
            with np.errstate(over="ignore"):  # beyond float32's range becomes inf, reported just below
                values = np.array(samples, dtype=np.float32)
        except (ValueError, TypeError):
            raise self.ragged(samples) from None
        shape = values.shape[1:]
        if self.shape is None:
            if len(shape) > shapes.MAX_RANK:
                raise Invalid(loc, f"samples have {len(shape)} dimensions; at most {shapes.MAX_RANK} are allowed")
            if not 1 <= math.prod(shape) <= self.max_values:
                raise Invalid(
                    loc,
                    f"samples of shape {shapes.describe(shape)} have {math.prod(shape)} values; "
                    f"between 1 and {self.max_values} are allowed",
                )
            self.shape = shape
        elif shape != self.shape:
            raise self.ragged(samples)
        bad = data.first_not_finite(values)
        if bad is not None:
            at = self.rows + bad // math.prod(shape)
            raise Invalid(f"{loc}.{at}", "contains a value that is not finite or beyond float32 range")
        self.blocks.extend(values)
        self.rows += len(samples)

    def ragged(self, samples: list[Any]) -> Invalid:
        """The error of the first sample in ``samples`` whose shape is not sample 0's, or not a shape at all."""
        expected = self.shape
        for i, sample in enumerate(samples):
            if not isinstance(sample, list):
                return Invalid(f"{self.loc}.{self.rows + i}", NOT_A_ROW, "list_type")
            try:
                shape = np.array(sample, dtype=np.float32).shape
            except (ValueError, TypeError):
                return Invalid(f"{self.loc}.{self.rows + i}", "is ragged: its lists are not all the same length")
            expected = expected if expected is not None else shape
            if shape != expected:
                return Invalid(
                    f"{self.loc}.{self.rows + i}",
                    f"has shape {shapes.describe(shape)} but sample 0 has {shapes.describe(expected)}",
                )
        return Invalid(self.loc, "samples must all have the same shape")  # not reached: one of them differs


def _whole_samples(buf: bytes, start: int, end: int) -> int | None:
    """Where the last whole sample in ``buf[start:end]`` (characters of samples) ends, or None if the
    span holds none: a sample ends at the ``]`` that brings the bracket depth back to 0; a ``]`` that
    takes it below 0 closes the list of samples, and nothing after it counts."""
    if end <= start:
        return None
    span = np.frombuffer(buf, np.uint8, end - start, start)
    depth = np.cumsum((span == OPEN).astype(np.int32) - (span == CLOSE))
    below = np.flatnonzero(depth < 0)
    limit = int(below[0]) if len(below) else len(span)
    closes = np.flatnonzero((depth[:limit] == 0) & (span[:limit] == CLOSE))
    return start + int(closes[-1]) + 1 if len(closes) else None


def _nested_end(buf: bytes, start: int, limit: int) -> int | None:
    """Where the list or object at ``start`` ends (None if not before ``limit``): brackets counted
    outside strings."""
    depth, pos = 0, start
    while pos < min(limit, len(buf)):
        match = TOKEN.match(buf, pos, limit)
        if match is None:
            return None
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
        elif token in (b"]", b"}"):
            depth -= 1
        pos = match.end()
        if depth == 0:
            return pos
    return None


def _end(pattern: re.Pattern[bytes], buf: bytes, pos: int) -> int:
    """Where a match of ``pattern``, which may match nothing, ends at ``pos``."""
    match = pattern.match(buf, pos)
    return match.end() if match else pos


def _validate(fields: dict[str, Any]) -> DatasetCreate:
    """The small fields validated by DatasetCreate, with stand-ins for the lists that were read."""
    body = {key: value for key, value in fields.items() if key in SMALL_FIELDS}
    body.update({key: stand_in for key, stand_in in (("features", [[0.0]]), ("targets", [0])) if key in fields})
    try:
        return DatasetCreate.model_validate(body)
    except ValidationError as error:
        raise RequestValidationError(error, body) from None
