"""The job lifecycle: every status a job and its model can have, and every move between them.

A job is born ``queued`` with a ``pending`` model (``submit``). After that it changes only by
the rows of ``Move``, each applied by one Lua script (``store.transition``) in one atomic step:
a move applies only from its source statuses (and, for a worker's attempt, only while the
attempt's ``lease`` still holds the job), writes its fields, counts itself in the per-status
job statistics, sets the model's status and, into a finished status, drops the job's checkpoint.

| move           | from            | to        | model    | writes                      | made by                                |
|----------------|-----------------|-----------|----------|-----------------------------|----------------------------------------|
| start          | queued, running | running   |          | started_at, attempts, lease | the worker, as an attempt begins       |
| requeue        | running         | queued    |          | error                       | the worker: a retry, or it is stopping |
| cancel         | queued          | canceled  | canceled | finished_at                 | the API: the job never starts          |
| request_cancel | running         | running   |          | cancel_requested, cancel_keep | the API: it stops at its next epoch  |
| honour_cancel  | queued, running | canceled  | canceled | finished_at, error          | the worker, finding a cancel request   |
| cancel_keeping | running         | canceled  | ready    | finished_at, epoch, error   | the worker, a cancel that keeps weights |
| fail           | queued, running | failed    | failed   | finished_at, error          | the worker's RQ failure callbacks      |
| succeed        | running         | succeeded | ready    | finished_at, epoch, error   | the worker, with the trained weights   |
| prune          | running         | pruned    | canceled | finished_at, pruned         | the worker: a losing sweep trial stops |

A named job's model is given its version (and ``current`` moved by its ``promote`` policy) just
before ``succeed``, under the same lease (``store.register_version``).

A model imported from elsewhere (``import_model``) has no job: it is born ``ready`` and never moves.

``start`` applies to a ``running`` job too: RQ may requeue a job whose worker died before our
record moved back. The API's ``cancel`` tries its two rows (``cancel``, ``request_cancel``) in
that one step, so what it does is decided atomically.

``ACTIVE`` statuses may still train (the active-job limit counts them); ``FINISHED`` ones, every
other status, never move again. A new status is one member of its enum and one row of ``Move``;
``FINISHED`` follows. ``pruned`` is such a status: a sweep's trial (``service.sweeps``) that its
pruner judged to be losing stops at an epoch boundary and ends there, keeping no weights (its model
ends ``canceled``), with ``pruned: {epoch, rung}`` saying where.

A sweep has statuses of its own (``SweepStatus``): ``running`` until every trial has ended, then
``succeeded``, or ``canceled`` by its owner; they are kept here with every other status word.

No Flask and no RQ here: the API and the worker share this module. It moves jobs through the
store's primitives, so ``service.store`` stays the one place that builds keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum, unique
from typing import Any, Final

import redis

from . import store


class JobStatus(StrEnum):
    """A job's ``status``; the values are what the API shows and the store keeps."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"
    pruned = "pruned"


class ModelStatus(StrEnum):
    """A model's ``status``: ``pending`` while its job may still train, then ``ready`` (it has weights),
    or the way its job ended."""

    pending = "pending"
    ready = "ready"
    failed = "failed"
    canceled = "canceled"


class SweepStatus(StrEnum):
    """A sweep's ``status`` (``service.sweeps``): ``running`` while it may start or wait for trials,
    then ``succeeded`` (every trial ended, whatever way) or ``canceled``."""

    running = "running"
    succeeded = "succeeded"
    canceled = "canceled"


class ServiceStatus(StrEnum):
    """The API's own readiness (``GET /readyz``), kept here with every other status word the API sends."""

    ready = "ready"
    unavailable = "unavailable"


ACTIVE: Final = frozenset({JobStatus.queued, JobStatus.running})
"""A job in one of these may still train; the tenant's active-job limit counts it."""
FINISHED: Final = frozenset(JobStatus) - ACTIVE
"""A job in one of these never moves again."""


@dataclass(frozen=True)
class Row:
    """One allowed move: from any of ``sources`` to ``target``, setting the model's status to ``model``
    (None: leaving it), and writing exactly the job's fields ``writes`` besides its status."""

    sources: frozenset[JobStatus]
    target: JobStatus
    model: ModelStatus | None
    writes: frozenset[str]


def _row(sources: Iterable[JobStatus], target: JobStatus, model: ModelStatus | None, writes: str) -> Row:
    return Row(frozenset(sources), target, model, frozenset(writes.split()))


@unique
class Move(Enum):
    """The table of allowed moves (see the module docstring)."""

    _value_: Row
    start = _row(ACTIVE, JobStatus.running, None, "started_at attempts lease")
    requeue = _row({JobStatus.running}, JobStatus.queued, None, "error")
    cancel = _row({JobStatus.queued}, JobStatus.canceled, ModelStatus.canceled, "finished_at")
    request_cancel = _row({JobStatus.running}, JobStatus.running, None, "cancel_requested cancel_keep")
    honour_cancel = _row(ACTIVE, JobStatus.canceled, ModelStatus.canceled, "finished_at error")
    cancel_keeping = _row({JobStatus.running}, JobStatus.canceled, ModelStatus.ready, "finished_at epoch error")
    fail = _row(ACTIVE, JobStatus.failed, ModelStatus.failed, "finished_at error")
    succeed = _row({JobStatus.running}, JobStatus.succeeded, ModelStatus.ready, "finished_at epoch error")
    prune = _row({JobStatus.running}, JobStatus.pruned, ModelStatus.canceled, "finished_at pruned")


class Refused(Exception):
    """The job's ``status`` allows none of the moves asked for (None: there is no such job)."""

    def __init__(self, job_id: str, status: JobStatus | None):
        super().__init__(f"job {job_id!r} is {status or 'gone'}")
        self.status = status


Job = Mapping[str, Any]
Error = dict[str, str]


def _apply(
    r: redis.Redis, job: Job, *moves: tuple[Move, Mapping[str, Any]], lease: str | None = None
) -> tuple[Move | None, JobStatus | None]:
    """Apply the first of ``moves`` whose row allows the job's status, writing the fields given with
    it, in one atomic step: ``(the move applied or None, the status the job was in or None)``."""
    steps = []
    for move, fields in moves:
        row = move.value
        if fields.keys() != row.writes:  # the table says what each move writes: keep it true
            raise ValueError(f"the move {move.name} writes {sorted(row.writes)}, not {sorted(fields)}")
        steps.append(store.Step(row.sources, row.target, fields, row.model, drop_checkpoint=row.target in FINISHED))
    index, previous = store.transition(r, job, steps, lease)
    if index is None:
        return None, None if previous is None else JobStatus(previous)
    move = moves[index][0]
    if move.value.target in FINISHED:
        store.record_duration(r, job["id"], move.value.target)
    return move, JobStatus(previous) if previous is not None else None


def submit(
    r: redis.Redis,
    job: dict[str, Any],
    model: dict[str, Any],
    enqueue: Callable[[Any], None],
    also: Callable[[Any], None] | None = None,
    max_active: int = 0,
) -> None:
    """Store a new job (``queued``) with its model (``pending``) and enqueue it (``store.create_job``);
    with ``max_active``, raises store.ActiveJobLimit when the tenant already has that many ACTIVE jobs."""
    store.create_job(r, job, model, enqueue, also, max_active, active=ACTIVE)


def start(r: redis.Redis, job: Job, lease: str) -> tuple[bool, JobStatus | None]:
    """Claim ``job`` for one attempt: ``running``, one more attempt, and ``lease`` as its holder, so that
    an older attempt still alive somewhere (its worker was taken for dead) stops at its next write.
    Returns (started, the status it was in)."""
    fields = {"started_at": store.now(), "attempts": job["attempts"] + 1, "lease": lease}
    move, previous = _apply(r, job, (Move.start, fields))
    return move is not None, previous


def requeue(r: redis.Redis, job: Job, error: Error | None, lease: str | None = None) -> bool:
    """Back to ``queued`` from ``running`` (its checkpoint kept), noting why; True when it was running."""
    move, _ = _apply(r, job, (Move.requeue, {"error": error}), lease=lease)
    return move is not None


KEEP = ("none", "best", "last")
"""What a cancel may keep of a running job: nothing, or the weights of its best or its last finished epoch."""


def cancel(r: redis.Redis, job: Job, keep: str = "none") -> Move | None:
    """The API's cancel, decided in one step: a queued job is canceled at once (returns ``Move.cancel``:
    take it off the queue; it has learned nothing to keep), a running one is asked to stop
    (``Move.request_cancel``: the worker reads the flag after each epoch, and ``keep``, one of KEEP), a
    canceled one is left as it is (None). Raises Refused for a job that has finished otherwise."""
    move, previous = _apply(
        r,
        job,
        (Move.cancel, {"finished_at": store.now()}),
        (Move.request_cancel, {"cancel_requested": True, "cancel_keep": keep}),
    )
    if move is None and previous != JobStatus.canceled:
        raise Refused(job["id"], previous)
    return move


def honour_cancel(r: redis.Redis, job: Job, lease: str | None = None) -> bool:
    """End as ``canceled`` a job whose cancel was asked for (its worker found the request, or lost the
    job with it); True when it was still queued or running."""
    move, _ = _apply(r, job, (Move.honour_cancel, {"finished_at": store.now(), "error": None}), lease=lease)
    return move is not None


def cancel_keeping(
    r: redis.Redis, job: Job, lease: str, weights: bytes, fields: dict[str, Any], epochs: list[dict[str, float]]
) -> bool:
    """End as ``canceled`` a job whose cancel asked to keep its weights, with its model ``ready`` holding
    ``weights`` (stored as ``succeed`` stores them, ``fields`` saying what was kept), if ``lease`` still
    holds the job; False when another attempt has taken it over.

    A named job's kept model becomes the next version of its name, as ``succeed``'s does, but never
    moves ``current``: a canceled run is promoted only by a person."""
    store.save_model(r, job, weights, fields, epochs)
    if job.get("name") is not None and store.register_version(r, job, lease, JobStatus.running, "keep", None) is None:
        return False
    done = {"finished_at": store.now(), "epoch": len(epochs), "error": None}
    move, _ = _apply(r, job, (Move.cancel_keeping, done), lease=lease)
    return move is not None


def delete(r: redis.Redis, job: Job) -> None:
    """Delete a finished job's record and history (its model stays); raises Refused while it is ACTIVE."""
    deleted, status = store.delete_job(r, job, keep=ACTIVE)
    if not deleted:
        raise Refused(job["id"], None if status is None else JobStatus(status))


def fail(r: redis.Redis, job: Job, error: Error, lease: str | None = None) -> bool:
    """End the job as ``failed`` with ``error`` (``{type, detail}``); True when it was still queued or running
    (and, given a ``lease``, held by it). Works on a full Redis too (see ``store.transition``)."""
    move, _ = _apply(r, job, (Move.fail, {"finished_at": store.now(), "error": error}), lease=lease)
    return move is not None


def prune(r: redis.Redis, job: Job, lease: str, epoch: int, rung: int | None) -> bool:
    """End a sweep's trial as ``pruned`` after ``epoch`` epochs (its pruner's ``rung``, None for a pruner
    without rungs), if ``lease`` still holds the job; False when it does not (or it is not running)."""
    move, _ = _apply(
        r, job, (Move.prune, {"finished_at": store.now(), "pruned": {"epoch": epoch, "rung": rung}}), lease=lease
    )
    return move is not None


def succeed(
    r: redis.Redis,
    job: Job,
    lease: str,
    weights: bytes,
    fields: dict[str, Any],
    epochs: list[dict[str, float]],
    promotion: tuple[str, dict[str, Any] | None] = ("promote", None),
) -> bool:
    """Store the trained model (``store.save_model``) and mark job and model succeeded/ready, if ``lease``
    still holds the job; False when another attempt has taken it over.

    A named job's model first becomes the next version of its name (``store.register_version``), moving
    ``current`` by ``promotion`` (``(decision, record)``, ``registry.promotion``): so a job seen
    ``succeeded`` already has its version and its promotion record."""
    store.save_model(r, job, weights, fields, epochs)
    if job.get("name") is not None and store.register_version(r, job, lease, JobStatus.running, *promotion) is None:
        return False
    done = {"finished_at": store.now(), "epoch": len(epochs), "error": None}  # a retry's reason no longer applies
    move, _ = _apply(r, job, (Move.succeed, done), lease=lease)
    return move is not None


def import_model(r: redis.Redis, record: dict[str, Any], weights: bytes) -> dict[str, Any]:
    """Store a model trained elsewhere (``model_import``): born ready, with no job to move it."""
    record = {**record, "status": ModelStatus.ready}
    store.import_model(r, record, weights)
    return record
