"""The job functions RQ runs, by dotted path: ``train(job_id)`` and its failure callbacks.

``train`` reads everything from the store by id and writes everything back there; it
imports the engine and the store, never Flask, and moves the job only by the verbs of
``service.lifecycle``. Failures propagate to RQ, and its callbacks keep our job record (the
one users see) in step through one failure verb, ``_failed``: a deterministic failure (a bad
spec, diverging training, a timeout, Redis full for too long: see ``TRANSIENT``) ends the job
``failed`` at once; a lost worker or a transient failure sends it back to ``queued`` while
retries remain, and a retry resumes from the last checkpoint. A job
whose cancel was asked for ends ``canceled`` instead of being retried (``_cancel_if_requested``).
A worker told to stop (``PREEMPT_SIGNAL`` reaches its work horse) has the job checkpoint at the
next epoch boundary and requeue itself, without using up a retry.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import redis
from rq import Retry, get_current_job
from rq.exceptions import AbandonedJobError

from nnserve import engine
from nnserve.service import lifecycle, registry, shapes, store
from nnserve.service.lifecycle import JobStatus

log = logging.getLogger(__name__)

PREEMPT_SIGNAL = signal.SIGTERM
"""Sent by a worker to its work horse when the worker is told to stop. The horse takes it from anyone:
a stop signal sent to every process of a service (systemd's default) reaches it directly, and must
requeue the job, not kill it."""
MAX_PREEMPTIONS = 10_000
"""RQ's Retry needs a bound; a job goes back on the queue once per worker shutdown that catches it."""

preempted = threading.Event()
"""Set in a work horse by PREEMPT_SIGNAL; ``train`` reads it after every epoch."""


class JobError(Exception):
    """The job cannot run as submitted (its dataset was deleted, say); retrying will not help."""


class StorageFull(Exception):
    """Redis stayed full (at its maxmemory, refusing writes) for the whole of the worker's
    ``redis_retry_window``, so the job could not save its progress, checkpoint or model."""

    def __init__(self) -> None:
        super().__init__(
            "the data store (Redis) is full (it reached its maxmemory) and stayed full while the job waited "
            "to save its progress; delete datasets or models you no longer need, or give Redis more memory, "
            "then submit the job again"
        )


TRANSIENT = (*store.TRANSIENT_ERRORS, redis.exceptions.OutOfMemoryError, OSError, MemoryError)
"""Failures of the moment, not of the job, so a retry (on this worker or another) may well succeed:
Redis unreachable, failing over, or refusing RQ's own bookkeeping while full (a job's own writes wait
the fullness out and end as StorageFull instead); the machine short of memory or a file. Any other
exception a job raises is deterministic: the engine's errors, JobError, a timeout, StorageFull (the
job already waited), and whatever the job's data and spec provoke in Python itself (a
ZeroDivisionError from an empty split, a KeyError or IndexError from malformed data, a ValueError or
TypeError): the same input fails the same way, so a retry would only burn time and a worker."""


Judge = Callable[[dict[str, Any]], Callable[[int, dict[str, float]], Any]]
"""For a sweep's trial (``worker.sweeps``): given the job, the function asked after each epoch (epochs
trained, their last logs) whether to stop; it returns None to go on, or the pruner's verdict (with its
``rung``) to end the trial ``pruned``."""


def train(job_id: str, judge: Judge | None = None) -> dict[str, Any] | Retry:
    """Train the job's model on its dataset, reporting every epoch; returns a small summary, or
    RQ's ``Retry`` when the worker is stopping and the job must continue elsewhere. Raises
    StorageFull when Redis stays full through the worker's retries (see ``store.connect``).
    ``judge``: a sweep's pruning decision, taken at each epoch boundary."""
    rq_job = get_current_job()
    if rq_job is None:
        raise JobError("train runs as an RQ job, in a worker")
    r = rq_job.connection
    lease = secrets.token_hex(8)
    try:
        return _train(r, job_id, lease, judge)
    except redis.exceptions.OutOfMemoryError:
        error = StorageFull()
        job = store.get_job(r, job_id)
        if job is not None:
            # Recorded here rather than left to on_failure: on a full Redis, RQ's own bookkeeping of the
            # failure is refused as well, and its work horse may die before it calls back. The move
            # works on a full Redis, and frees the job's checkpoint.
            lifecycle.fail(r, job, {"type": "StorageFull", "detail": str(error)}, lease=lease)
        raise error from None


def _train(r: redis.Redis, job_id: str, lease: str, judge: Judge | None = None) -> dict[str, Any] | Retry:
    job = store.get_job(r, job_id)
    if job is None:
        raise JobError(f"job {job_id!r} no longer exists")
    if job["cancel_requested"]:
        lifecycle.honour_cancel(r, job)
        return {"status": JobStatus.canceled}
    started, status = lifecycle.start(r, job, lease)
    if not started:
        return {"status": status}  # canceled while queued, or already finished

    meta = store.get_dataset(r, job["dataset_id"], job["tenant"])
    arrays = store.load_dataset(r, job["dataset_id"]) if meta is not None else None
    if meta is None or arrays is None:
        raise JobError(f"dataset {job['dataset_id']!r} was deleted before the job could train on it")
    task, width = store.task_of(meta)
    validation_data = _load_validation_data(r, job)
    initial = _load_initial_model(r, job)
    # Checked again here: the payload came through Redis, and the dataset may have changed.
    model, input_shape = shapes.validate(
        job["model"],
        job["training"],
        shapes.sample_shape_of(meta),
        task=task,
        width=width if initial is None else len(initial.classes or []) or initial.n_outputs,
        validation_data=validation_data is not None,
    )
    if initial is not None:
        # A warm start: the initial model's weights, scaling and labels, trained with this job's config
        # (the session keeps what a model with weights already has, and gives it a fresh optimizer).
        initial.training = model.training
        model = initial

    checkpoint = store.load_checkpoint(r, job_id)
    store.restart_history(r, job_id, checkpoint[1] if checkpoint else 0)
    stopped_for = None
    last = None
    judged = judge(job) if judge is not None else None
    verdict: Any = None  # the judge's, when it stops the trial

    def on_epoch(epoch: int, logs: dict[str, float]) -> bool:
        nonlocal stopped_for, last, verdict
        if store.record_epoch(r, job_id, lease, epoch, logs):
            stopped_for = "cancel"
            last = trainer.params.copy()  # before training ends: restore_best would put other weights back
        elif judged is not None and epoch + 1 < job["epochs"] and (verdict := judged(epoch + 1, logs)) is not None:
            stopped_for = "prune"
        elif preempted.is_set() and trainer.epoch < job["epochs"]:
            # At the epoch boundary the next worker loses nothing: the checkpoint is this very state.
            store.save_checkpoint(r, job_id, lease, trainer.checkpoint(), trainer.epoch)
            stopped_for = "shutdown"
        return stopped_for is not None

    try:
        # A session rather than model.fit: a stopping worker needs a checkpoint of the current epoch.
        features, targets = arrays
        # The samples as the model trains on them (a warm start's model is built: its own shape).
        if initial is None:
            features = features.reshape(len(features), *input_shape)
        features = shapes.fit_to_model(model, features, "dataset")
        if validation_data is not None:
            validation_data = (shapes.fit_to_model(model, validation_data[0], "validation_data"), validation_data[1])
        trainer = engine.TrainingSession(model, features, targets, task=task, validation_data=validation_data)
        if checkpoint:
            trainer.restore(checkpoint[0])
        history = trainer.run(
            on_epoch=on_epoch,
            checkpoint_every=job["checkpoint_every"],
            on_checkpoint=lambda blob: store.save_checkpoint(r, job_id, lease, blob, trainer.epoch),
        )
    except store.LeaseLost:
        return _walk_away(job_id)

    if stopped_for == "cancel":
        keep = (store.get_job(r, job_id) or {}).get("cancel_keep") or "none"
        if keep != "none" and last is not None:
            best = trainer.best  # the session keeps the best epoch's weights as it goes, checkpoints included
            kept = best.params if keep == "best" and best.params is not None else last
            kept_epoch = best.epoch if keep == "best" and best.epoch is not None else trainer.epoch
            np.copyto(trainer.params, kept)
            fields = {
                **_model_fields(trainer, job, history, kept_epoch),
                "partial": True,
                "kept": keep,
                "kept_epoch": kept_epoch,
                "stopped_epoch": trainer.epoch,
            }
            if not lifecycle.cancel_keeping(r, job, lease, engine.dumps(model), fields, _epochs(history)):
                return _walk_away(job_id)
            return {"status": JobStatus.canceled, "epochs": len(history.epoch), "kept": keep}
        lifecycle.honour_cancel(r, job, lease=lease)
        return {"status": JobStatus.canceled, "epochs": len(history.epoch)}
    if stopped_for == "prune":
        if not lifecycle.prune(r, job, lease, trainer.epoch, verdict.rung):
            return _walk_away(job_id)
        return {"status": JobStatus.pruned, "epochs": trainer.epoch}
    if stopped_for == "shutdown":
        note = {"type": "WorkerStopped", "detail": f"its worker was stopped; requeued from epoch {trainer.epoch}"}
        if not lifecycle.requeue(r, job, note, lease=lease):
            return _walk_away(job_id)
        log.info("job %s: checkpointed at epoch %d and requeued (worker stopping)", job_id, trainer.epoch)
        return Retry(max=MAX_PREEMPTIONS, enqueue_at_front=True)

    fields = _model_fields(trainer, job, history, len(history.epoch))
    promotion: tuple[str, dict[str, Any] | None] = ("promote", None)
    if job.get("name"):
        held_out = validation_data or registry.held_out_rows(features, targets, trainer.train_rows)
        promotion = registry.decide(r, job, model, held_out)
    if not lifecycle.succeed(r, job, lease, engine.dumps(model), fields, _epochs(history), promotion):
        return _walk_away(job_id)
    return {"status": JobStatus.succeeded, "epochs": len(history.epoch)}


def _model_fields(
    trainer: engine.TrainingSession, job: dict[str, Any], history: engine.History, epochs: int
) -> dict[str, Any]:
    """What the model record says of the weights the session now holds, those of epoch ``epochs`` (1-based):
    that epoch's logged figures, and its evaluation report."""
    metrics = {name: values[epochs - 1] for name, values in history.history.items() if name != "learning_rate"}
    return {
        "metrics": metrics,
        "trained_at": store.now(),
        "n_parameters": trainer.model.n_parameters,
        "evaluation": evaluation(trainer, job),
        "epochs_trained": (job.get("initial_epoch") or 0) + epochs,
    }


def _epochs(history: engine.History) -> list[dict[str, float]]:
    """The history as one dict of logged values per epoch, as the store keeps it."""
    return [dict(zip(history.history, values)) for values in zip(*history.history.values())]


def _load_validation_data(r: redis.Redis, job: dict[str, Any]) -> tuple[Any, Any] | None:
    """The rows of the job's ``validation_data`` dataset (None when it has none). Raises JobError when it is gone."""
    dataset_id = job.get("validation_data")
    if dataset_id is None:
        return None
    meta = store.get_dataset(r, dataset_id, job["tenant"])
    arrays = store.load_dataset(r, dataset_id) if meta is not None else None
    if arrays is None:
        raise JobError(f"validation dataset {dataset_id!r} was deleted before the job could train")
    return arrays


def _load_initial_model(r: redis.Redis, job: dict[str, Any]) -> engine.Model | None:
    """The trained model a warm start continues from (None for a fresh start). Raises JobError when it is gone."""
    model_id = job.get("initial_model")
    if model_id is None:
        return None
    blob = store.load_weights(r, model_id)
    if blob is None:
        raise JobError(f"initial model {model_id!r} was deleted before the job could train from it")
    return engine.loads(blob)


NO_HELD_OUT_ROWS = "no held-out rows: the job had neither a validation_split nor validation_data"


def evaluation(trainer: engine.TrainingSession, job: dict[str, Any]) -> dict[str, Any]:
    """The model's evaluation report on the job's held-out rows (``engine.reports``), saying which
    rows they were: ``"validation"`` (the split) or ``"dataset <id>"`` (``validation_data``)."""
    report = engine.reports.session_report(trainer)
    if report is None:
        return {"on": None, "rows": 0, "note": NO_HELD_OUT_ROWS}
    on = f"dataset {job['validation_data']}" if job.get("validation_data") else "validation"
    return {"on": on, **report}


in_work_horse = False
"""True in a forked work horse (set by ``worker.main``), where ``_walk_away`` may exit the process."""


def _walk_away(job_id: str) -> dict[str, Any]:
    """This attempt lost the job to a newer one (a Redis outage outlived its heartbeats, say)."""
    log.warning("job %s: another attempt has taken it over; this one stops", job_id)
    if in_work_horse:
        # Leave RQ's records alone: they now describe the attempt that holds the job, and marking
        # the RQ job finished here would stop the abandoned-job sweep from rescuing that attempt.
        os._exit(0)
    return {"status": "superseded"}


def request_preemption(signum, frame) -> None:
    """PREEMPT_SIGNAL's handler in a work horse."""
    preempted.set()


def on_failure(rq_job, connection, exc_type, exc_value, traceback) -> None:
    """RQ's failure callback, run before RQ decides whether to retry: for a job that raised, and
    (with AbandonedJobError) for one whose worker vanished without a trace."""
    if issubclass(exc_type, AbandonedJobError):
        on_worker_lost(rq_job, connection, "its worker stopped sending heartbeats (killed or out of memory)")
        return
    error = {"type": exc_type.__name__, "detail": str(exc_value) or exc_type.__name__}
    _failed(rq_job, connection, store.get_job(connection, rq_job.id), error, retry=issubclass(exc_type, TRANSIENT))


def on_work_horse_killed(rq_job, retpid, ret_val, rusage) -> None:
    """RQ's hook for a work horse that died under a living worker (SIGKILL, the OOM killer)."""
    on_worker_lost(rq_job, rq_job.connection, f"its worker process died (wait status {ret_val})")


def on_preempted_horse_killed(rq_job, connection) -> None:
    """The worker was told to stop and killed its work horse, which had not reached an epoch
    boundary within the shutdown timeout. RQ retries the job next (it resumes from its last
    periodic checkpoint); a shutdown is not the job's fault, so that retry is not counted."""
    job = store.get_job(connection, rq_job.id)
    if _cancel_if_requested(rq_job, connection, job):
        return
    rq_job.retries_left = (rq_job.retries_left or 0) + 1  # RQ's retry takes this one back
    if job is not None:
        epoch = job.get("checkpoint_epoch") or 0
        note = {"type": "WorkerStopped", "detail": f"its worker was stopped mid-epoch; requeued from epoch {epoch}"}
        lifecycle.requeue(connection, job, note)


def on_worker_lost(rq_job, connection, reason: str) -> None:
    job = store.get_job(connection, rq_job.id)
    if not _cancel_if_requested(rq_job, connection, job):
        _failed(rq_job, connection, job, {"type": "WorkerLost", "detail": reason})


def _cancel_if_requested(rq_job, connection, job: dict[str, Any] | None) -> bool:
    """End as ``canceled``, never to be retried, a job whose attempt was lost while its cancel was
    asked for; True when it was."""
    if job is None or not job["cancel_requested"]:
        return False
    rq_job.retries_left = 0
    lifecycle.honour_cancel(connection, job)
    return True


def _failed(rq_job, connection, job: dict[str, Any] | None, error: dict[str, str], retry: bool = True) -> None:
    """An attempt failed with ``error``: back to ``queued`` when RQ will retry the job, else ``failed``.
    ``retry=False`` tells RQ not to, whatever retries are left."""
    if not retry:
        rq_job.retries_left = 0
    if job is None:
        return
    if rq_job.retries_left:
        error = {**error, "detail": f"{error['detail']}; retrying ({rq_job.retries_left} retries left)"}
        lifecycle.requeue(connection, job, error)
    else:
        if error["type"] == "WorkerLost":
            error = {**error, "detail": f"{error['detail']}; gave up after {job['attempts']} attempts"}
        lifecycle.fail(connection, job, error)
    log.warning("job %s: %s: %s", rq_job.id, error["type"], error["detail"])
