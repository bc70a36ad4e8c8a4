"""A per-process LRU of trained models, so a predict call does not fetch weights from Redis.

Weights never change once trained, so a cached model can only become wrong by being
deleted. Deletions are published on ``store.MODEL_EVENTS``; a daemon thread in each
process listens and evicts (``subscription.Subscription``). While that subscription is down
(Redis restarting, say) the cache is bypassed, and it is emptied whenever the subscription is
made again, since deletions may have been missed meanwhile. So a deleted model stops being
served as soon as its deletion message arrives (milliseconds), in every API process.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis

from nnserve import engine

from . import store
from .lifecycle import ModelStatus
from .shapes import fit_to_model
from .subscription import Subscription

UNNAMED = "unnamed"


@dataclass(frozen=True)
class Entry:
    """A loaded model and what predict needs alongside it."""

    model: Any  # engine.Model
    tenant: str
    classes: np.ndarray | None  # labels in output order, for classification
    name: str | None = None  # the model record's name and version, for the per-model metrics
    version: int | None = None
    feature_names: tuple[str, ...] | None = None  # the dataset's column names, to match named features by

    @property
    def labels(self) -> tuple[str, str]:
        """``(model, version)`` for the per-model metrics. A model without a name is ``unnamed``: its
        id would be a label value per model ever trained, and a metrics store must keep each."""
        return self.name or UNNAMED, "" if self.version is None else str(self.version)

    def prediction(self, x: np.ndarray) -> dict[str, Any]:
        """The predict response for samples ``x`` (rows, or nested in the model's sample shape):
        labels and probabilities, or values. Raises engine.SpecError for inputs the model cannot take."""
        x = fit_to_model(self.model, x)
        if self.classes is None:
            return {"predictions": np.ascontiguousarray(self.model.predict(x))}
        probabilities = self.model.predict_proba(x)
        return {"predictions": self.classes[probabilities.argmax(axis=1)].tolist(), "probabilities": probabilities}


def entry_from(record: dict[str, Any], blob: bytes) -> Entry:
    """The loaded model of a ready model record and its weights."""
    model = engine.loads(blob)
    classes = np.asarray(model.classes) if model.task == "classification" else None
    names = (record.get("input") or {}).get("feature_names")
    return Entry(
        model=model,
        tenant=record["tenant"],
        classes=classes,
        name=record.get("name"),
        version=record.get("version"),
        feature_names=tuple(names) if names else None,
    )


def ready_entry(r: redis.Redis, model_id: str) -> Entry:
    """The loaded model ``model_id`` (any tenant's: the caller checks), for background work; raises
    LookupError when it is gone or has no weights."""
    record = store.get_model_record(r, model_id)
    blob = store.load_weights(r, model_id) if record is not None and record.get("status") == ModelStatus.ready else None
    if record is None or blob is None:
        raise LookupError(f"model {model_id!r} is gone or has no weights")
    return entry_from(record, blob)


class ModelCache:
    """``on_lookup(hit)`` is told the outcome of every ``get`` (the metrics count hits and misses)."""

    def __init__(self, connect: Callable[[], redis.Redis], size: int, on_lookup: Callable[[bool], None] | None = None):
        self._size = size
        self._on_lookup = on_lookup
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._evictions = 0  # bumped by every eviction, so a load that raced one is not kept
        self._subscription = Subscription(connect, store.MODEL_EVENTS, self, "model cache")

    def peek(self, model_id: str) -> Entry | None:
        """The cached entry for ``model_id``, or None; never loads."""
        with self._lock:
            entry = self._entries.get(model_id)
            if entry is not None:
                self._entries.move_to_end(model_id)
            return entry

    def get(self, model_id: str, load: Callable[[], Entry]) -> Entry:
        """The cached entry for ``model_id``, or ``load()``'s (kept only while deletions can be heard)."""
        entry = self.peek(model_id)
        if self._on_lookup is not None:
            self._on_lookup(entry is not None)
        if entry is not None:
            return entry
        if self._size:
            self._subscription.ensure_started()
        evictions = self._evictions
        entry = load()
        if self._size and self._subscription.listening:
            with self._lock:
                if evictions != self._evictions:
                    return entry
                self._entries[model_id] = entry
                while len(self._entries) > self._size:
                    self._entries.popitem(last=False)
        return entry

    def evict(self, model_id: str) -> None:
        with self._lock:
            self._evictions += 1
            self._entries.pop(model_id, None)

    def clear(self) -> None:
        with self._lock:
            self._evictions += 1
            self._entries.clear()

    def __contains__(self, model_id: str) -> bool:
        return model_id in self._entries

    @property
    def listening(self) -> bool:
        return self._subscription.listening

    # The subscription's listener: every message is the id of a deleted model.

    def on_subscribed(self) -> None:
        self.clear()

    def on_message(self, data: bytes) -> None:
        self.evict(data.decode())

    def on_lost(self) -> None:
        self.clear()
