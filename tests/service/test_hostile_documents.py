"""Malformed Keras documents and job specs: each is a 4xx naming its place, never a 500.

Fifteen shapes that once answered 500 are pinned one by one (as an object and as JSON text); then
Hypothesis mutates valid documents and job specs at random (replacing, deleting or retyping any
value at any depth) and asserts the answer is always a 4xx problem, or a 202. A bounded number of
examples runs with the suite; ``NNSERVE_HYPOTHESIS_EXAMPLES=2000 pytest -m hostile`` runs more.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.hostile

EXAMPLES = int(os.environ.get("NNSERVE_HYPOTHESIS_EXAMPLES", "60"))

DOCUMENT: dict[str, Any] = {
    "class_name": "Sequential",
    "config": {
        "name": "sequential",
        "dtype": {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}},
        "layers": [
            {"class_name": "InputLayer", "config": {"batch_shape": [None, 4], "dtype": "float32"}},
            {
                "class_name": "Dense",
                "config": {
                    "units": 8,
                    "activation": "relu",
                    "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
                    "kernel_regularizer": {"class_name": "L2", "config": {"l2": 0.001}},
                },
            },
            {
                "class_name": "Dense",
                "config": {"units": 3, "activation": {"class_name": "function", "config": {"name": "softmax"}}},
            },
        ],
    },
    "compile_config": {
        "optimizer": {"class_name": "Adam", "config": {"learning_rate": 0.01}},
        "loss": {"class_name": "SparseCategoricalCrossentropy", "config": {"from_logits": False}},
        "metrics": ["accuracy"],
    },
}
TRAINING = {"epochs": 2, "batch_size": 16, "seed": 0}
SPEC = {
    "layers": [
        {"type": "dense", "units": 8, "activation": "relu"},
        {"type": "dense", "units": 3, "activation": "softmax"},
    ]
}


def at(document: dict[str, Any], path: tuple, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    node = changed
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return changed


LAYER = ("config", "layers")
SHAPES = {
    "learning_rate as text": (("compile_config", "optimizer", "config", "learning_rate"), "0.001"),
    "compile_config as text": (("compile_config",), "adam"),
    "compile_config as a list": (("compile_config",), ["adam"]),
    "batch_shape as a number": ((*LAYER, 0, "config", "batch_shape"), 4),
    "batch_shape as true": ((*LAYER, 0, "config", "batch_shape"), True),
    "batch_shape as an object": ((*LAYER, 0, "config", "batch_shape"), {"n": 4}),
    "a metric as a list": (("compile_config", "metrics"), [["accuracy"]]),
    "optimizer config as text": (("compile_config", "optimizer", "config"), "fast"),
    "loss config as a list": (("compile_config", "loss", "config"), [1]),
    "activation config as text": ((*LAYER, 2, "config", "activation", "config"), "softmax"),
    "initializer config as text": ((*LAYER, 1, "config", "kernel_initializer", "config"), "seeded"),
    "regularizer config as a number": ((*LAYER, 1, "config", "kernel_regularizer", "config"), 0.01),
    "dtype config as text": (("config", "dtype", "config"), "float32"),
    "dtype config as a list": (("config", "dtype", "config"), ["float32"]),
    "layer config as a number": ((*LAYER, 1, "config"), 8),
}


@pytest.mark.parametrize("form", ["object", "json text"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_malformed_keras_documents_are_a_422_naming_the_place(client, shape, form):
    path, value = SHAPES[shape]
    document = at(DOCUMENT, path, value)
    model = document if form == "object" else json.dumps(document)
    response = client.post("/v1/jobs", json={"dataset": "iris", "model": model, "training": TRAINING})
    assert response.status_code == 422, (shape, response.json)
    assert response.mimetype == "application/problem+json"
    loc = response.json["errors"][0]["loc"]
    expected = ".".join(map(str, ("model", *path)))
    assert loc.startswith(expected) or expected.startswith(loc), (shape, loc, expected)


def test_the_valid_document_is_accepted(client):
    assert client.post("/v1/jobs", json={"dataset": "iris", "model": DOCUMENT, "training": TRAINING}).status_code == 202


# Property-based: mutate anything, anywhere --------------------------------------------------------

JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.one_of(st.none(), st.integers(-3, 3), st.text(max_size=4)), max_size=3),
    st.dictionaries(st.text(max_size=6), st.one_of(st.none(), st.integers(-3, 3), st.text(max_size=4)), max_size=3),
)


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a JSON value: dict keys and list indices, at every depth."""
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += paths(value, (*prefix, i))
    return found


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    document = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        places = paths(document)
        if not places:
            break
        path = draw(st.sampled_from(places))
        parent = document
        for part in path[:-1]:
            parent = parent[part]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(JUNK)
    return document


def assert_a_4xx_or_accepted(client, body: Any) -> None:
    response = client.post("/v1/jobs", data=json.dumps(body, allow_nan=True), content_type="application/json")
    assert response.status_code < 500, (body, response.status_code, response.get_data(as_text=True))
    if response.status_code >= 400:
        assert response.mimetype == "application/problem+json", response.get_data(as_text=True)
    else:
        assert response.status_code == 202


FAST = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@FAST
@given(document=mutated({"dataset": "iris", "model": DOCUMENT, "training": TRAINING}), as_text=st.booleans())
def test_mutated_keras_documents_are_never_a_5xx(app, document, as_text):
    if as_text and isinstance(document.get("model"), dict):
        document["model"] = json.dumps(document["model"], allow_nan=True)
    assert_a_4xx_or_accepted(app.test_client(), document)


@FAST
@given(body=mutated({"dataset": "iris", "model": SPEC, "training": {**TRAINING, "optimizer": "adam"}}))
def test_mutated_job_specs_are_never_a_5xx(app, body):
    assert_a_4xx_or_accepted(app.test_client(), body)
