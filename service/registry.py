"""The model registry: names, versions, aliases and the model references that use them.

A job's ``name`` is a registered model name; each of its jobs whose model becomes ready adds the
next version (``store.register_version``, atomically with the job's last move). A **model
reference** is what every route that takes a model accepts, resolved here and nowhere else:

| reference     | means                                                                     |
|---------------|---------------------------------------------------------------------------|
| ``mdl_…``     | that one model                                                            |
| ``NAME``      | the target of the alias ``current``, else ``latest``                       |
| ``NAME@ALIAS``| the alias's target; ``latest`` is derived (the highest version)           |
| ``NAME@N``    | version N                                                                 |

An alias's target is a version (``3``), a weighted split (``{"split": {"3": 90, "4": 10}}``: a request
is answered by one version, chosen by a stable hash of its routing key, so one caller keeps one version),
or a shadow pair (``{"version": 3, "shadow": 4, "sample": 1.0}``: 3 answers; a ``sample`` of the
requests also runs through 4 in the background, ``service.routing``).

No Flask here: the worker decides promotions with it (``promotion``), the API resolves with it.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnserve import engine
from nnserve.engine.evaluation import score
from nnserve.engine.metrics import get as get_metric

from . import store

NAME = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,63}")
"""A registered name, and an alias: the grammar of the issue."""
MODEL_ID_PREFIX = "mdl_"
LATEST, CURRENT, PREVIOUS = "latest", "current", "previous"
DERIVED = frozenset({LATEST})
"""Aliases nobody stores: ``latest`` is always the highest version."""
HIGHER_IS_BETTER = frozenset({"accuracy", "r2"})
"""Metrics where more is better; every other logged value (the losses, mae, mse) is better lower."""


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a registered name (or an alias), or None when it can."""
    if not NAME.fullmatch(name):
        return (
            "must start with a letter and hold at most 64 letters, digits, '.', '_' or '-' "
            f"(^[A-Za-z][A-Za-z0-9._-]{{0,63}}$); received {name!r}"
        )
    if name.startswith(MODEL_ID_PREFIX):
        return f"must not start with {MODEL_ID_PREFIX!r} (model ids do); received {name!r}"
    return None


class Unknown(LookupError):
    """A reference that names nothing: the message says which part (the name, the alias or the version)."""


@dataclass(frozen=True)
class Ref:
    """A parsed reference: a model id, or a name with an alias or a version (neither: the bare name)."""

    text: str
    model_id: str | None = None
    name: str | None = None
    alias: str | None = None
    version: int | None = None


@functools.lru_cache(maxsize=4096)
def parse_ref(text: str) -> Ref:
    """Raises Unknown for text that cannot name a model. (Cached: a hot name is parsed once.)"""
    if text.startswith(MODEL_ID_PREFIX):
        return Ref(text, model_id=text)
    name, at, suffix = text.partition("@")
    if not NAME.fullmatch(name) or (at and not suffix):
        raise Unknown(f"no model {text!r}: a reference is mdl_…, NAME, NAME@ALIAS or NAME@N")
    if not at:
        return Ref(text, name=name)
    if suffix.isascii() and suffix.isdigit() and len(suffix) < 10:
        return Ref(text, name=name, version=int(suffix))
    if not NAME.fullmatch(suffix):
        raise Unknown(f"no model {text!r}: {suffix!r} is neither an alias nor a version number")
    return Ref(text, name=name, alias=suffix)


@dataclass(frozen=True)
class Resolved:
    """The model that answers a reference: its id, and for a registered one its name and version; with a
    shadow alias, the model that also runs in the background and the share of requests it sees."""

    model_id: str
    name: str | None = None
    version: int | None = None
    shadow_id: str | None = None
    shadow_version: int | None = None
    sample: float = 1.0


def routing_fraction(name: str, routing_key: str) -> float:
    """A stable number in [0, 1) for a caller of a name: the same key always lands in the same place."""
    digest = hashlib.blake2b(f"{name}\0{routing_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def split_table(split: Mapping[str, float]) -> list[tuple[float, int]]:
    """``(upper bound, version)`` of each version of a split, in version order, the bounds cumulative
    shares of 1: a routing fraction below a bound (and above the one before) picks that version."""
    ordered = sorted((int(v), float(w)) for v, w in split.items())
    total, bound, table = sum(w for _, w in ordered), 0.0, []
    for version, weight in ordered:
        bound += weight / total
        table.append((bound, version))
    return table


def pick(table: list[tuple[float, Any]], fraction: float) -> Any:
    """The entry of a ``split_table`` (or one built alike) that a routing fraction lands in."""
    for bound, chosen in table:
        if fraction < bound:
            return chosen
    return table[-1][1]


def split_version(name: str, split: Mapping[str, float], routing_key: str) -> int:
    """The version of a weighted split that answers this routing key."""
    version: int = pick(split_table(split), routing_fraction(name, routing_key))
    return version


def versions_of(target: Any) -> list[int]:
    """Every version an alias target names."""
    if isinstance(target, int):
        return [target]
    if "split" in target:
        return sorted(int(v) for v in target["split"])
    return [target["version"], target["shadow"]]


def main_version(target: Any) -> int:
    """The version answering most requests through an alias target."""
    if isinstance(target, int):
        return target
    if "split" in target:
        return int(max(target["split"].items(), key=lambda item: item[1])[0])
    return int(target["version"])


def latest(state: store.RegistryState) -> int | None:
    return max(state.versions) if state.versions else None


def alias_map(state: store.RegistryState) -> dict[str, Any]:
    """The stored aliases and the derived ``latest``, as the API shows them."""
    aliases: dict[str, Any] = dict(sorted(state.aliases.items()))
    newest = latest(state)
    if newest is not None:
        aliases[LATEST] = newest
    return aliases


def target_of(state: store.RegistryState, ref: Ref) -> Any:
    """What a name reference points at: a version number, or an alias's split or shadow target.
    Raises Unknown naming what is missing."""
    name = ref.name
    if state.record is None:
        raise Unknown(f"no registered model {name!r}")
    if ref.version is not None:
        if ref.version not in state.versions:
            raise Unknown(f"{name!r} has no version {ref.version}")
        return ref.version
    alias = ref.alias or CURRENT
    target: Any = state.aliases.get(alias)
    if target is None and (alias == LATEST or ref.alias is None):
        target = latest(state)  # a bare name falls back to latest while current is not set
    if target is None:
        if ref.alias is None or alias == LATEST:
            raise Unknown(f"{name!r} has no versions yet")
        raise Unknown(f"{name!r} has no alias {alias!r}")
    return target


def resolve_version(state: store.RegistryState, name: str, version: int, target: Any = None) -> Resolved:
    """Version ``version`` of ``name``, with the shadow of a shadow ``target``."""
    model_id = state.versions.get(version)
    if model_id is None:  # never left so by the scripts; a state read half way through a change, say
        raise Unknown(f"{name!r} has no version {version}")
    if isinstance(target, dict) and "shadow" in target:
        shadow = target["shadow"]
        return Resolved(model_id, name, version, state.versions.get(shadow), shadow, float(target.get("sample", 1.0)))
    return Resolved(model_id, name, version)


def resolve(state: store.RegistryState, ref: Ref, routing_key: str) -> Resolved:
    """The model answering a name reference (``ref.name`` must be set) for this routing key, given the
    name's state. Raises Unknown naming what is missing."""
    name = ref.name
    assert name is not None
    target = target_of(state, ref)
    if isinstance(target, int):
        return resolve_version(state, name, target)
    if "split" in target:
        return resolve_version(state, name, split_version(name, target["split"], routing_key))
    return resolve_version(state, name, int(target["version"]), target)


# Promotion on evidence ----------------------------------------------------------------------


def base_metric(metric: str) -> str:
    """The value ``evaluate`` computes for a logged name: ``val_accuracy`` → ``accuracy``."""
    return metric.removeprefix("val_")


def scores_on(model: engine.Model, x: np.ndarray, y: np.ndarray, metrics: list[str]) -> dict[str, float]:
    """``model``'s own loss and the named metrics on raw rows ``x, y``: two models scored by one
    function on the very same rows, whatever metrics each was trained to log."""
    x = model.check_inputs(x)
    y_encoded = model.encode_targets(y, len(x))
    if model.scaler is not None:
        x = model.scaler.transform_(x.copy())
    loss = model.training.loss
    assert loss is not None  # a trained model has a settled loss
    targets = loss.targets(y_encoded, model.n_outputs, model.dtype, model.task == "classification")
    wanted = [get_metric(name) for name in metrics if name != "loss"]
    return score(model, loss, wanted, x, y_encoded, targets)


def promotion(
    policy: Any, new: engine.Model, current: engine.Model | None, held_out: tuple[np.ndarray, np.ndarray] | None
) -> tuple[str, dict[str, Any] | None]:
    """``(decision, record)`` for a job's ``promote`` policy: ``promote`` moves ``current`` to the new
    version, ``keep`` leaves it (the first version of a name still becomes current). The record, for
    ``if_better`` only, says what was compared and why: both models are scored here on the same
    held-out rows, never by their own logged figures (two random splits are not comparable)."""
    if policy == "always":
        return "promote", None
    if policy == "never":
        return "keep", None
    rule = policy["if_better"]
    metric, min_delta = rule["metric"], float(rule.get("min_delta", 0.0))
    name = base_metric(metric)
    record: dict[str, Any] = {"metric": metric, "new": None, "current": None}
    if held_out is None:  # refused at submission; kept safe here
        return "keep", {**record, "decision": "kept", "reason": "no held-out rows to compare on"}
    new_value = scores_on(new, *held_out, [name])[name]
    record["new"] = new_value
    if current is None:
        return "promote", {**record, "decision": "promoted", "reason": "no current version yet"}
    try:
        current_value = scores_on(current, *held_out, [name])[name]
    except engine.SpecError as error:
        reason = f"the current version cannot be scored on these rows ({error.message}); promoted"
        return "promote", {**record, "decision": "promoted", "reason": reason}
    record["current"] = current_value
    higher = name in HIGHER_IS_BETTER
    gain = new_value - current_value if higher else current_value - new_value
    way = "higher" if higher else "lower"
    figures = f"{metric} {new_value:.6g} vs {current_value:.6g} on the same {len(held_out[0])} held-out rows ({way} is better)"
    if gain > 0 and gain >= min_delta:  # strictly better, and by at least min_delta
        return "promote", {**record, "decision": "promoted", "reason": f"better by {gain:.6g}: {figures}"}
    return "keep", {**record, "decision": "kept", "reason": f"not better by more than {min_delta}: {figures}"}


def held_out_rows(x: np.ndarray, y: np.ndarray, train_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The job's held-out rows: those of its dataset its training left out (its validation split), raw."""
    held_out = np.setdiff1d(np.arange(len(x)), train_rows, assume_unique=True)
    return (x[held_out], y[held_out]) if len(held_out) else None


def decide(
    r: Any, job: Mapping[str, Any], model: engine.Model, held_out: tuple[np.ndarray, np.ndarray] | None
) -> tuple[str, dict[str, Any] | None]:
    """The promotion decision for a named job that just trained ``model`` (see ``promotion``): the version
    ``current`` points at now is loaded and scored on the job's held-out rows (its ``validation_data``, else
    its validation split, shaped for the model) alongside the new one."""
    policy = job.get("promote") or "always"
    if not isinstance(policy, dict):
        return promotion(policy, model, None, None)
    state = store.registry_state(r, job["tenant"], job["name"])
    target = state.aliases.get(CURRENT)
    current = None
    if target is not None:
        version = main_version(target)
        blob = store.load_weights(r, state.versions[version]) if version in state.versions else None
        current = engine.loads(blob) if blob is not None else None
    try:
        return promotion(policy, model, current, held_out)
    except engine.SpecError as error:  # the new model cannot be scored on them: it stays registered, not current
        record = {"decision": "kept", "metric": policy["if_better"]["metric"], "new": None, "current": None}
        return "keep", {**record, "reason": f"the held-out rows could not be scored: {error.message}"}
