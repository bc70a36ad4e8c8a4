"""Per-process serving state of the registry: each name's versions and aliases, and the shadow runner.

``References`` keeps what ``store.registry_state`` read of each name, so that a prediction through
``NAME`` (or a split, or a shadow alias) costs no Redis call once warm, as one through ``mdl_…`` does
(``cache.ModelCache``). Every change to a name is published on ``store.REGISTRY_EVENTS`` and drops the
name here (``subscription.Subscription``, the rule of the model cache: trusted only while listening).
So a rollback answers the very next request on every API process.

``Shadows`` runs shadowed requests through the shadow version on one background thread, off the
answering path: a request only hands its rows and answer over (or drops them when the queue is full),
and never waits for the shadow.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import redis

from . import registry, store
from .cache import Entry
from .subscription import Subscription

log = logging.getLogger(__name__)

SHADOW_QUEUE = 1024
"""Shadowed requests waiting at most; more are dropped (and counted) rather than slow anything down."""
SHADOW_BATCH = 512
"""Shadowed requests run through the shadow model in one forward pass, at most."""
SHADOW_GATHER = 0.02
"""Seconds the shadow thread lets a batch gather before running it (the shadow's figures may lag that much)."""


class References:
    def __init__(self, connect: Callable[[], redis.Redis], size: int):
        self._size = size
        self._states: dict[tuple[str, str], store.RegistryState] = {}
        self._memo: dict[tuple[str, str], Any] = {}  # (tenant, reference) -> Resolved, or (name, split table)
        self._lock = threading.Lock()
        self._changes = 0  # bumped by every drop, so a read that raced one is not kept
        self._subscription = Subscription(connect, store.REGISTRY_EVENTS, self, "registry references")

    def peek(self, tenant: str, name: str) -> store.RegistryState | None:
        return self._states.get((tenant, name))

    def state(self, r: redis.Redis, tenant: str, name: str) -> store.RegistryState:
        """The name's state, from this process when it is here (kept only while changes can be heard)."""
        state = self.peek(tenant, name)
        if state is not None:
            return state
        if self._size:
            self._subscription.ensure_started()
        changes = self._changes
        state = store.registry_state(r, tenant, name)
        if self._size and self._subscription.listening and state.record is not None:
            with self._lock:
                if changes == self._changes:
                    if len(self._states) >= self._size:
                        self._states.clear()  # names are few; starting over beats keeping an LRU here
                        self._memo.clear()
                    self._states[(tenant, name)] = state
        return state

    def resolve(self, r: redis.Redis, tenant: str, ref: registry.Ref, routing_key: str) -> registry.Resolved:
        """Raises registry.Unknown."""
        if ref.model_id is not None:
            return registry.Resolved(ref.model_id)
        assert ref.name is not None
        return registry.resolve(self.state(r, tenant, ref.name), ref, routing_key)

    def resolve_cached(self, tenant: str, text: str, routing_key: str) -> registry.Resolved | None:
        """The model answering the name reference ``text`` from this process's state alone, or None (go the
        long way). What a reference resolves to is kept until the name changes, a split as its table of
        resolutions, so the hot path is a dictionary lookup (and a hash, for a split)."""
        memo = self._memo.get((tenant, text))
        if memo is None:
            memo = self._remember(tenant, text)
            if memo is None:
                return None
        if isinstance(memo, registry.Resolved):
            return memo
        name, table = memo
        resolved: registry.Resolved = registry.pick(table, registry.routing_fraction(name, routing_key))
        return resolved

    def _remember(self, tenant: str, text: str) -> registry.Resolved | tuple[str, list] | None:
        changes = self._changes
        try:
            ref = registry.parse_ref(text)
        except registry.Unknown:
            return None
        state = self.peek(tenant, ref.name or "")
        if state is None or ref.name is None:
            return None
        try:
            target = registry.target_of(state, ref)
            memo: registry.Resolved | tuple[str, list]
            if isinstance(target, dict) and "split" in target:
                table = registry.split_table(target["split"])
                memo = (ref.name, [(bound, registry.resolve_version(state, ref.name, v)) for bound, v in table])
            else:
                memo = registry.resolve(state, ref, "")
        except registry.Unknown:
            return None
        with self._lock:
            if changes == self._changes:
                self._memo[(tenant, text)] = memo
        return memo

    # The subscription's listener: every message is ``tenant/name`` of a changed name.

    def on_subscribed(self) -> None:
        self.clear()

    def on_message(self, data: bytes) -> None:
        tenant, _, name = data.decode().partition("/")
        self.drop(tenant, name)

    def drop(self, tenant: str, name: str) -> None:
        """Forget the name (it changed)."""
        with self._lock:
            self._changes += 1
            self._states.pop((tenant, name), None)
            self._memo.clear()  # changes are rare: start the resolutions over

    def on_lost(self) -> None:
        self.clear()

    def clear(self) -> None:
        with self._lock:
            self._changes += 1
            self._states.clear()
            self._memo.clear()


class Shadows:
    """Runs shadowed predictions in the background and records how the shadow agreed with the answer."""

    def __init__(self, connect: Callable[[], redis.Redis], load: Callable[[redis.Redis, str, str], Entry]):
        self._connect = connect
        self._load = load  # (redis, tenant, model id) -> the loaded model, from the model cache
        self._queue: queue.Queue[tuple[registry.Resolved, str, np.ndarray, dict[str, Any]]] = queue.Queue(SHADOW_QUEUE)
        self._pid: int | None = None
        self._lock = threading.Lock()
        self.dropped = 0
        self._random = random.Random()

    def submit(self, resolved: registry.Resolved, tenant: str, x: np.ndarray, answer: dict[str, Any]) -> None:
        """Hand a shadowed request over (its ``sample`` decides whether it runs); never blocks."""
        if resolved.shadow_id is None or self._random.random() >= resolved.sample:
            return
        self._ensure_started()
        try:
            self._queue.put_nowait((resolved, tenant, x, answer))
        except queue.Full:
            self.dropped += 1

    def drain(self) -> None:
        """Wait until every request handed over has been run (for tests and benchmarks)."""
        self._queue.join()

    def _ensure_started(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            threading.Thread(target=self._run, name="nnserve-shadows", daemon=True).start()

    def _run(self) -> None:
        r = self._connect()
        while True:
            batch = [self._queue.get()]
            # Let a batch gather, then take whatever waits: one forward pass and one Redis round trip for
            # all of it, so that the shadow's share of the process's time stays small however busy it is.
            time.sleep(SHADOW_GATHER)
            while len(batch) < SHADOW_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._shadow(r, batch)
            except Exception as error:  # a shadow must never take anything down; say why it was skipped
                log.warning("%d shadowed requests skipped: %s", len(batch), error)
            finally:
                for _ in batch:
                    self._queue.task_done()

    def _shadow(self, r: redis.Redis, batch: list[tuple[registry.Resolved, str, np.ndarray, dict[str, Any]]]) -> None:
        groups: dict[tuple[str, str], list[tuple[registry.Resolved, str, np.ndarray, dict[str, Any]]]] = {}
        for item in batch:
            assert item[0].shadow_id is not None
            groups.setdefault((item[1], item[0].shadow_id), []).append(item)
        records: list[tuple[str, str, dict[str, Any]]] = []
        at = store.now()
        for (tenant, shadow_id), items in groups.items():
            entry = self._load(r, tenant, shadow_id)
            shadow = entry.prediction(np.concatenate([x for _, _, x, _ in items]))
            answers = [answer for *_, answer in items]
            for (resolved, *_), figures in zip(items, comparisons(answers, shadow)):
                assert resolved.name is not None
                record = {"at": at, "version": resolved.version, "shadow": resolved.shadow_version, **figures}
                records.append((tenant, resolved.name, record))
        store.record_shadows(r, records)


def comparisons(answers: list[dict[str, Any]], shadow: dict[str, Any]) -> list[dict[str, Any]]:
    """For each shadowed request (its answer; ``shadow``: the shadow's outputs for all their rows, in order):
    its rows, the rows with equal labels (classification), and the mean absolute difference of the
    probabilities (classification) or values (regression) — computed over the whole batch at once."""
    sizes = [len(answer["predictions"]) for answer in answers]
    starts = np.cumsum([0, *sizes[:-1]])
    classification = "probabilities" in shadow and all("probabilities" in answer for answer in answers)
    if classification:
        a = np.concatenate([np.asarray(answer["probabilities"]) for answer in answers])
        b = np.asarray(shadow["probabilities"])
        labels = np.asarray([label for answer in answers for label in answer["predictions"]], dtype=object)
        equal = np.add.reduceat((labels == np.asarray(shadow["predictions"], dtype=object)).astype(np.int64), starts)
    else:
        a = np.concatenate([np.asarray(answer["predictions"], dtype=float) for answer in answers])
        b = np.asarray(shadow["predictions"], dtype=float)
    if a.shape == b.shape:
        per_row = np.abs(a - b).reshape(len(a), -1).mean(axis=1)
        diffs = np.add.reduceat(per_row, starts) / np.asarray(sizes)
    figures = []
    for i, rows in enumerate(sizes):
        figure: dict[str, Any] = {"rows": rows, "mean_abs_diff": float(diffs[i]) if a.shape == b.shape else None}
        if classification:
            figure["equal"] = int(equal[i])
        figures.append(figure)
    return figures


def agreement(comparisons: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The shadow figures over the kept comparisons (newest first), or None when there are none."""
    if not comparisons:
        return None
    pair = comparisons[0]["version"], comparisons[0]["shadow"]
    same = [c for c in comparisons if (c["version"], c["shadow"]) == pair]  # the current pair only
    rows = sum(c["rows"] for c in same)
    diffs = [(c["mean_abs_diff"], c["rows"]) for c in same if c.get("mean_abs_diff") is not None]
    equal = [c["equal"] for c in same if "equal" in c]
    return {
        "version": pair[0],
        "shadow": pair[1],
        "requests": len(same),
        "rows": rows,
        "label_agreement": sum(equal) / rows if equal and rows else None,
        "mean_abs_diff": sum(d * n for d, n in diffs) / sum(n for _, n in diffs) if diffs else None,
        "since": same[-1]["at"],
    }
