"""The JSON upload reader on its own: whatever the window cuts (a number, a row, a label, an escape),
the arrays are those of the whole body parsed at once."""

from __future__ import annotations

import io
import json

import numpy as np
import orjson
import pytest

from nnserve.engine.archive import Chunks
from nnserve.service import json_upload
from nnserve.service.settings import Settings

LABELS = ["a", "b b", 'quote " and \\ backslash', "naïve", "日本", "tab\tnew\nline", "long " * 30]


def whole(chunks: Chunks) -> np.ndarray:
    return np.concatenate([piece.reshape(-1) for piece in chunks.pieces]).reshape(chunks.shape)


def random_body(rng: np.random.Generator) -> tuple[dict, str]:
    n, d = int(rng.integers(2, 60)), int(rng.integers(1, 12))
    scale = 10.0 ** rng.integers(-6, 6, size=(n, d))
    features = [[float(v) if rng.random() < 0.7 else int(v) for v in row] for row in rng.normal(size=(n, d)) * scale]
    kind = int(rng.integers(3))
    if kind == 0:
        targets: list = [LABELS[0], LABELS[1], *(LABELS[i] for i in rng.integers(0, len(LABELS), size=n - 2))]
    elif kind == 1:
        targets = rng.normal(size=n).tolist()
    else:
        targets = rng.normal(size=(n, 2)).tolist()
    fields = [
        ("name", "t"),
        ("features", features),
        ("targets", targets),
        ("feature_names", [f"f{i}" for i in range(d)]),
    ]
    order = rng.permutation(len(fields))
    body = dict(fields[i] for i in order)
    indent = [None, 0, 2][int(rng.integers(3))]
    separators = [(",", ":"), (", ", ": "), (" ,  ", " : ")][int(rng.integers(3))]
    return body, json.dumps(body, indent=indent, separators=separators, ensure_ascii=bool(rng.integers(2)))


@pytest.mark.parametrize("window", [64, 97, 256, 4096])
def test_any_window_reads_what_the_whole_body_says(window):
    rng = np.random.default_rng(window)
    for _ in range(25):
        body, text = random_body(rng)
        dataset = json_upload.read(io.BytesIO(text.encode()), Settings(), window=window)
        expected = orjson.loads(text)  # the body parsed at once
        np.testing.assert_array_equal(whole(dataset.features), np.array(expected["features"], dtype=np.float32))
        targets = whole(dataset.targets)
        if isinstance(expected["targets"][0], str):
            assert targets.tolist() == expected["targets"] and dataset.meta["target_kind"] == "categorical"
        else:
            np.testing.assert_array_equal(targets, np.array(expected["targets"], dtype=np.float32))
        assert dataset.meta["feature_names"] == body["feature_names"] and dataset.meta["name"] == "t"
