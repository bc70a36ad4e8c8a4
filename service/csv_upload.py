"""A CSV dataset upload read as a stream, a chunk of lines at a time, straight into arrays (see ``data``).

werkzeug has already spooled the file to disk; it is read here as UTF-8 text in chunks of about
CHUNK_CHARS characters, each cut at a line end (and never inside a quoted cell). A chunk is parsed
by NumPy's C ``loadtxt`` when it can be, the ``csv`` module otherwise:

- fast: no quote character, every line exactly as many commas as the header, no line longer than a
  cell may be. ``loadtxt`` reads the feature columns as float32; the target cells are split off.
- exact: ``csv.reader`` and Python's ``float``, as before; it skips blank lines, reads quoted cells
  and finds the cell at fault. A chunk whose fast parse fails is parsed again this way, so the
  fast path never accepts what this one would refuse, nor words an error differently.

The first row over the row limit, the first cell that is not a number, the first line of another
width ends the upload with its 422, naming the line (lines are counted in the file, from 1 for the
header). The header and every cell are held to ``csv.field_size_limit()`` (131,072 characters).
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Sequence
from typing import IO

import numpy as np

from . import data
from .errors import BadRequest, Invalid
from .settings import Settings
from .shapes import Shape

CHUNK_CHARS = 1 << 20
"""Characters of CSV parsed at once (the fast path holds a few copies of a chunk while parsing it)."""


def read(
    file: IO[bytes],
    target: str | None,
    target_kind: str | None,
    name: str | None,
    settings: Settings,
    shape: Shape | None = None,
) -> data.Dataset:
    """The dataset of a CSV file with a header row; ``target`` names the target column (the last one
    by default) and every other column must be numeric. ``shape``: each row's feature columns are
    the values of one sample of this shape, row-major (``[8, 8, 1]`` for 64 pixel columns). Raises
    Invalid (422) or BadRequest (400)."""
    if target_kind not in (None, "categorical", "continuous"):
        raise Invalid("target_kind", f"must be 'categorical' or 'continuous'; received {target_kind!r}")
    text = io.TextIOWrapper(file, encoding="utf-8-sig", newline="")
    try:
        return _read(text, target, target_kind, name, settings, shape)
    except UnicodeDecodeError:
        raise BadRequest("the CSV file is not UTF-8 text") from None
    finally:
        text.detach()  # the upload's file is werkzeug's to close


def _read(
    text: IO[str],
    target: str | None,
    target_kind: str | None,
    name: str | None,
    settings: Settings,
    shape: Shape | None,
) -> data.Dataset:
    header, line = _header(text)
    column = len(header) - 1 if not target else _column(header, target)
    parser = _Parser(header, column)
    width = len(parser.feature_columns)
    if width > settings.max_features:
        raise Invalid("features", f"has {width} columns; between 1 and {settings.max_features} are allowed")
    sample_shape = data.resolve_shape(shape, (width,), "each row's feature columns")
    features = data.Blocks(np.float32)
    targets = data.TargetColumn("target", as_text=target_kind == "categorical")
    while lines := _chunk(text):
        x, cells, lines_of_rows = parser.parse(lines, line)
        if features.size // width + len(x) > settings.max_rows:
            raise Invalid("features", f"has more than {settings.max_rows} rows; the limit is {settings.max_rows}")
        bad = data.first_not_finite(x)
        if bad is not None:
            raise Invalid("file", f"line {lines_of_rows[bad // width]}: a value is not finite or beyond float32 range")
        long = data.first_long_label(cells)
        if long is not None:
            raise Invalid("target", f"line {lines_of_rows[long]}: {data.LONG_LABEL}")
        features.extend(x)
        targets.add_cells(cells)
        line += len(lines)
    if not features.size:
        raise Invalid("file", "needs a header row and at least one data row")
    return data.dataset(
        features,
        sample_shape,
        targets.finish(target_kind),
        kind_given=target_kind,
        n_targets=1,
        feature_names=[header[i] for i in parser.feature_columns],
        target_name=header[column],
        name=name,
        max_bytes=settings.max_dataset_bytes,
    )


def _header(text: IO[str]) -> tuple[list[str], int]:
    """``(column names, number of the line after them)``, from the first line that is not blank."""
    reader = csv.reader(text)
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                if len(row) < 2:
                    raise Invalid("file", "needs at least two columns: features and a target")
                return [cell.strip() for cell in row], reader.line_num + 1
    except csv.Error as error:
        raise Invalid("file", f"line {reader.line_num}: {_csv_error(error)}") from None
    raise Invalid("file", "needs a header row and at least one data row")


def _chunk(text: IO[str]) -> list[str]:
    """The next lines, about CHUNK_CHARS characters of them, ending where no quoted cell is open:
    a quoted cell may hold line breaks, and its quotes come in pairs ("" inside one)."""
    lines = text.readlines(CHUNK_CHARS)
    quotes = sum(map(str.count, lines, itertools.repeat('"')))
    extra = 0
    while quotes % 2 and extra <= csv.field_size_limit():  # a quote open past that is csv's error to report
        more = text.readline()
        if not more:
            break
        lines.append(more)
        quotes += more.count('"')
        extra += len(more)
    return lines


class _Parser:
    """Chunks of data lines to arrays, for one header and target column."""

    def __init__(self, header: list[str], column: int):
        self.header = header
        self.column = column
        self.feature_columns = [i for i in range(len(header)) if i != column]

    def parse(self, lines: list[str], first_line: int) -> tuple[np.ndarray, list[str], Sequence[int]]:
        """``(features (rows, width) float32, target cells, line number of each row)`` of a chunk."""
        commas = len(self.header) - 1
        simple = (
            '"' not in "".join(lines)
            and set(map(str.count, lines, itertools.repeat(","))) == {commas}
            and max(map(len, lines)) <= csv.field_size_limit()
        )
        if simple:
            try:
                with np.errstate(over="ignore"):  # beyond float32 becomes inf, reported with its line
                    x = np.loadtxt(
                        lines,
                        delimiter=",",
                        dtype=np.float32,
                        usecols=self.feature_columns,
                        comments=None,
                        quotechar=None,
                        ndmin=2,
                    )
            except ValueError:
                pass  # the exact parse says which cell, or reads what only Python's float() reads
            else:
                if self.column == commas:
                    cells = [line.rpartition(",")[2].strip() for line in lines]
                else:
                    cells = [line.split(",")[self.column].strip() for line in lines]
                return x, cells, range(first_line, first_line + len(lines))
        return self.parse_exactly(lines, first_line)

    def parse_exactly(self, lines: list[str], first_line: int) -> tuple[np.ndarray, list[str], list[int]]:
        ncols = len(self.header)
        reader = csv.reader(lines)
        rows: list[list[float]] = []
        cells: list[str] = []
        lines_of_rows: list[int] = []
        read = 0
        try:
            for row in reader:
                line, read = first_line + read, reader.line_num
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != ncols:
                    raise Invalid("file", f"line {line} has {len(row)} values; the header has {ncols}")
                try:
                    rows.append([float(row[i]) for i in self.feature_columns])
                except ValueError:
                    i = next(i for i in self.feature_columns if not data.is_number(row[i]))
                    raise Invalid(
                        "file", f"line {line}, column {self.header[i]!r}: {row[i]!r} is not a number"
                    ) from None
                cells.append(row[self.column].strip())
                lines_of_rows.append(line)
        except csv.Error as error:
            raise Invalid("file", f"line {first_line + reader.line_num - 1}: {_csv_error(error)}") from None
        with np.errstate(over="ignore"):
            x = np.array(rows, dtype=np.float32).reshape(len(rows), len(self.feature_columns))
        return x, cells, lines_of_rows


def _column(header: list[str], target: str) -> int:
    if target not in header:
        raise Invalid("target", f"no column {target!r}; the columns are {', '.join(map(repr, header))}")
    return header.index(target)


def _csv_error(error: csv.Error) -> str:
    if "field limit" in str(error):  # csv's own words: "field larger than field limit (131072)"
        return f"a cell is over {csv.field_size_limit():,} characters"
    return str(error)
