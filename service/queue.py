"""RQ wiring: the one queue, and how a training job is put on it or taken off.

Jobs are enqueued by dotted path with the job id as their only argument, so the API never
imports the worker, and with RQ's JSON serializer, so nothing is pickled. Our job hash
(``service.store``) is what users see; RQ is only the transport.
"""

from __future__ import annotations

import contextlib

import redis
from rq import Queue, Retry
from rq.callbacks import Callback
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.serializers import JSONSerializer

from .settings import Settings

QUEUE_NAME = "nnserve"
SWEEP_QUEUE_NAME = "nnserve-sweeps"
"""Sweeps' trials wait here. Workers listen to it after QUEUE_NAME, and RQ takes from the first queue
that has a job, so an ordinary job never waits behind a sweep's trials."""
TRAIN_TRIAL = "nnserve.worker.sweeps.train_trial"
ON_TRIAL_FAILURE = "nnserve.worker.sweeps.on_failure"
TRAIN = "nnserve.worker.jobs.train"
ON_FAILURE = "nnserve.worker.jobs.on_failure"


def make_queue(connection: redis.Redis) -> Queue:
    return Queue(QUEUE_NAME, connection=connection, serializer=JSONSerializer)


def enqueue_train(queue: Queue, job_id: str, settings: Settings, pipeline) -> None:
    """Add the RQ job for ``job_id`` to ``pipeline`` (executed by the caller with our own records).

    A job whose worker dies is retried ``job_retries`` times (RQ requeues it from the
    failed attempt or from its abandoned-job sweep); ``on_failure`` keeps our record in step.
    """
    _enqueue(queue, TRAIN, ON_FAILURE, job_id, settings, pipeline)


def make_sweep_queue(connection: redis.Redis) -> Queue:
    return Queue(SWEEP_QUEUE_NAME, connection=connection, serializer=JSONSerializer)


def enqueue_trial(queue: Queue, job_id: str, settings: Settings, pipeline) -> None:
    """As ``enqueue_train``, for a sweep's trial: the trial's function and failure callback, on ``queue``
    (``make_sweep_queue``)."""
    _enqueue(queue, TRAIN_TRIAL, ON_TRIAL_FAILURE, job_id, settings, pipeline)


def _enqueue(queue: Queue, function: str, on_failure: str, job_id: str, settings: Settings, pipeline) -> None:
    """One training run on ``queue``: ``function(job_id)`` under the job's own id, with the retries and
    failure callback every job and trial share."""
    queue.enqueue_call(
        function,
        args=(job_id,),
        job_id=job_id,
        timeout=settings.job_timeout,
        result_ttl=24 * 3600,
        failure_ttl=7 * 24 * 3600,
        retry=Retry(max=settings.job_retries) if settings.job_retries else None,
        on_failure=Callback(on_failure),
        pipeline=pipeline,
    )


def discard(queue: Queue, job_id: str) -> None:
    """Take a queued job off the queue (the worker would skip it anyway: see ``worker.jobs.train``)."""
    # On a full Redis our record is canceled already (that move frees the checkpoint) but RQ's own
    # bookkeeping is refused: the job is then skipped when a worker dequeues it.
    with contextlib.suppress(NoSuchJobError, InvalidJobOperation, redis.exceptions.OutOfMemoryError):
        Job.fetch(job_id, connection=queue.connection, serializer=JSONSerializer).cancel()
