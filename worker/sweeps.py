"""A sweep's trial, as RQ runs it: ``train_trial(job_id)``, an ordinary training job whose every epoch
is judged by the sweep's pruner, and which moves the sweep on when it ends (``service.sweeps.advance``).

A trial that raises goes through the jobs' own failure callback first (retry or fail, as any job), then
moves the sweep on too. Should both calls be lost with the whole machine, the sweep is advanced again
by the next trial to end, or by the API when the sweep is read with no trial active.
"""

from __future__ import annotations

import logging
from typing import Any

from rq import Retry, get_current_job

from nnserve.service import store
from nnserve.service import sweeps as service_sweeps
from nnserve.service.lifecycle import FINISHED
from nnserve.service.settings import Settings

from . import jobs

log = logging.getLogger(__name__)

settings: Settings | None = None
"""The worker's settings (set by ``worker.main.make_worker``): the limits the next trials are checked
against, their timeout and retries."""


def _settings() -> Settings:
    return settings if settings is not None else Settings()


def train_trial(job_id: str) -> dict[str, Any] | Retry:
    """Train one trial (see ``jobs.train``), judged after each epoch, then move its sweep on."""
    rq_job = get_current_job()
    if rq_job is None:
        raise jobs.JobError("train_trial runs as an RQ job, in a worker")
    r = rq_job.connection
    result = jobs.train(job_id, judge=lambda job: service_sweeps.Judge(r, job))
    _advance(r, job_id)
    return result


def on_failure(rq_job, connection, exc_type, exc_value, traceback) -> None:
    """The jobs' failure callback (retry or fail), then the sweep moves on if the trial ended."""
    jobs.on_failure(rq_job, connection, exc_type, exc_value, traceback)
    _advance(connection, rq_job.id)


def on_work_horse_killed(rq_job, retpid, ret_val, rusage) -> None:
    """The worker's handler for a dead work horse (every job's, see ``jobs.on_work_horse_killed``); a
    trial that thereby ended (no retry left) moves its sweep on."""
    jobs.on_work_horse_killed(rq_job, retpid, ret_val, rusage)
    _advance(rq_job.connection, rq_job.id)


def _advance(r, job_id: str) -> None:
    job = store.get_job(r, job_id)
    if job is None or not job.get("sweep_id") or job["status"] not in FINISHED:
        return
    try:
        service_sweeps.advance(r, _settings(), job["sweep_id"])
    except Exception:
        # The trial's own outcome is recorded already and must not turn into a failure (and a retry)
        # over the sweep's bookkeeping; the next trial to end, or the API reading the sweep, advances it.
        log.exception("sweep %s: could not advance it after trial %s", job["sweep_id"], job_id)
