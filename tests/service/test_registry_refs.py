"""Model references and split routing (``service.registry``), without Redis."""

from __future__ import annotations

import pytest

from nnserve.service import registry, store
from nnserve.service.routing import References

STATE = store.RegistryState(
    {"created_at": "2026-01-01T00:00:00+00:00"},
    {1: "mdl_1", 2: "mdl_2", 3: "mdl_3"},
    {"current": 2, "canary": {"split": {"1": 90, "3": 10}}, "shadowed": {"version": 1, "shadow": 3, "sample": 0.5}},
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mdl_0123", registry.Ref("mdl_0123", model_id="mdl_0123")),
        ("iris", registry.Ref("iris", name="iris")),
        ("iris@3", registry.Ref("iris@3", name="iris", version=3)),
        ("iris@staging", registry.Ref("iris@staging", name="iris", alias="staging")),
    ],
)
def test_references_parse(text, expected):
    assert registry.parse_ref(text) == expected


@pytest.mark.parametrize("text", ["9iris", "iris@", "iris@-x", "a b", "iris@3@4", ""])
def test_malformed_references_name_nothing(text):
    with pytest.raises(registry.Unknown, match="no model"):
        registry.parse_ref(text)


def test_names_follow_the_grammar():
    assert registry.name_problem("iris-clf.v2_a") is None
    assert "mdl_" in registry.name_problem("mdl_x")
    assert registry.name_problem("x" * 65) is not None and registry.name_problem("1x") is not None


@pytest.mark.parametrize(
    ("text", "version", "shadow"),
    [
        ("iris", 2, None),
        ("iris@current", 2, None),
        ("iris@latest", 3, None),
        ("iris@1", 1, None),
        ("iris@shadowed", 1, 3),
    ],
)
def test_resolution(text, version, shadow):
    resolved = registry.resolve(STATE, registry.parse_ref(text), "someone")
    assert (resolved.version, resolved.model_id, resolved.shadow_version) == (version, f"mdl_{version}", shadow)


def test_a_split_is_stable_per_key_and_in_proportion():
    ref = registry.parse_ref("iris@canary")
    versions = [registry.resolve(STATE, ref, f"key-{i}").version for i in range(10_000)]
    assert 0.88 <= versions.count(1) / len(versions) <= 0.92
    assert {registry.resolve(STATE, ref, "key-7").version for _ in range(10)} == {versions[7]}


def test_the_per_process_memo_answers_as_the_resolution_does_and_forgets_on_a_change():
    references = References(lambda: None, 10)
    references._states[("public", "iris")] = STATE
    for text in ("iris", "iris@canary", "iris@shadowed", "iris@3"):
        for key in ("a", "b", "c", "key-7"):
            assert references.resolve_cached("public", text, key) == registry.resolve(
                STATE, registry.parse_ref(text), key
            )
    assert references.resolve_cached("public", "iris@nothing", "a") is None
    references.drop("public", "iris")
    assert references.resolve_cached("public", "iris", "a") is None  # the long way, until it is read again


def test_unknown_parts_are_named():
    for text, message in [("iris@9", "has no version 9"), ("iris@staging", "has no alias 'staging'")]:
        with pytest.raises(registry.Unknown, match=message):
            registry.resolve(STATE, registry.parse_ref(text), "k")
    with pytest.raises(registry.Unknown, match="no registered model 'iris'"):
        registry.resolve(store.RegistryState(None, {}, {}), registry.parse_ref("iris"), "k")
