"""The job functions RQ runs, by dotted path: ``train(job_id)`` and its failure callback.

``train`` reads everything from the store by id and writes everything back there; it
imports the engine and the store, never Flask. Failures propagate to RQ, and
``on_failure`` / ``on_worker_lost`` keep our job record (the one users see) in step:
a deterministic failure (a bad spec, diverging training, a timeout) ends the job
``failed`` at once; a lost worker sends it back to ``queued`` while retries remain,
and a retry resumes from the last checkpoint.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
from rq import get_current_job
from rq.exceptions import AbandonedJobError
from rq.timeouts import JobTimeoutException

import engine
from service import store

log = logging.getLogger(__name__)


class JobError(Exception):
    """The job cannot run as submitted (its dataset was deleted, say); retrying will not help."""


DETERMINISTIC = (engine.EngineError, JobError, JobTimeoutException)


def train(job_id: str) -> dict[str, Any]:
    """Train the job's model on its dataset, reporting every epoch; returns a small summary."""
    r = get_current_job().connection
    job = store.get_job(r, job_id)
    if job is None:
        raise JobError(f"job {job_id!r} no longer exists")
    if job["cancel_requested"]:
        store.finish_job(r, job, "canceled", allowed=("queued", "running"))
        return {"status": "canceled"}
    fields = {"started_at": store.now(), "attempts": job["attempts"] + 1}
    started, status = store.transition(r, job, "running", ["queued", "running"], fields)
    if not started:
        return {"status": status}  # canceled while queued, or already finished

    meta = store.get_dataset(r, job["dataset_id"], job["tenant"])
    arrays = store.load_dataset(r, job["dataset_id"]) if meta is not None else None
    if arrays is None:
        raise JobError(f"dataset {job['dataset_id']!r} was deleted before the job could train on it")
    task, width = store.task_of(meta)
    # Checked again here: the payload came through Redis, and the dataset may have changed.
    model = engine.validate(job["model"], job["training"], n_features=meta["n_features"], task=task, width=width)

    checkpoint = store.load_checkpoint(r, job_id)
    store.restart_history(r, job_id, checkpoint[1] if checkpoint else 0)
    state = {"canceled": False, "epoch": 0}

    def on_epoch(epoch: int, logs: dict[str, float]) -> bool:
        state["epoch"] = epoch + 1
        state["canceled"] = store.record_epoch(r, job_id, epoch, logs)
        return state["canceled"]

    # Diverging weights overflow on the way to inf; the engine checks every epoch and raises
    # NonFiniteError with advice, so NumPy's own overflow warnings would only be noise.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        history = model.fit(
            *arrays,
            task=task,
            on_epoch=on_epoch,
            checkpoint_every=job["checkpoint_every"],
            on_checkpoint=lambda blob: store.save_checkpoint(r, job_id, blob, state["epoch"]),
            resume_from=checkpoint[0] if checkpoint else None,
        )
    if state["canceled"]:
        store.finish_job(r, job, "canceled")
        return {"status": "canceled", "epochs": len(history.epoch)}

    metrics = {name: values[-1] for name, values in history.history.items() if name != "learning_rate"}
    fields = {"metrics": metrics, "trained_at": store.now(), "n_parameters": model.n_parameters}
    store.save_model(r, job, engine.dumps(model), fields)
    return {"status": "succeeded", "epochs": len(history.epoch)}


def on_failure(rq_job, connection, exc_type, exc_value, traceback) -> None:
    """RQ's failure callback, run before RQ decides whether to retry: for a job that raised, and
    (with AbandonedJobError) for one whose worker vanished without a trace."""
    if issubclass(exc_type, AbandonedJobError):
        on_worker_lost(rq_job, connection, "its worker stopped sending heartbeats (killed or out of memory)")
        return
    if issubclass(exc_type, DETERMINISTIC):
        rq_job.retries_left = 0  # the same input fails the same way: a retry cannot help
    _failed(rq_job, connection, {"type": exc_type.__name__, "detail": str(exc_value) or exc_type.__name__})


def on_work_horse_killed(rq_job, retpid, ret_val, rusage) -> None:
    """RQ's hook for a work horse that died under a living worker (SIGKILL, the OOM killer)."""
    on_worker_lost(rq_job, rq_job.connection, f"its worker process died (wait status {ret_val})")


def on_worker_lost(rq_job, connection, reason: str) -> None:
    job = store.get_job(connection, rq_job.id)
    if job is not None and job["cancel_requested"]:
        rq_job.retries_left = 0
        store.finish_job(connection, job, "canceled", allowed=("queued", "running"))
        return
    _failed(rq_job, connection, {"type": "WorkerLost", "detail": reason})


def _failed(rq_job, connection, error: dict[str, str]) -> None:
    """Back to ``queued`` when RQ will retry the job, else ``failed`` with ``error``."""
    job = store.get_job(connection, rq_job.id)
    if job is None:
        return
    if rq_job.retries_left:
        error = {**error, "detail": f"{error['detail']}; retrying ({rq_job.retries_left} retries left)"}
        store.transition(connection, job, "queued", ["running"], {"error": error})
    else:
        store.finish_job(connection, job, "failed", error, allowed=("queued", "running"))
    log.warning("job %s: %s: %s", rq_job.id, error["type"], error["detail"])
