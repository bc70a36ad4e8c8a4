"""The worker process: ``nnserve worker`` runs ``run(settings)``.

NumPy, the engine and the job module are imported here, before RQ forks a work horse
per job, so a job starts in milliseconds instead of paying ~90 ms of imports after
each fork. SIGTERM (or Ctrl-C) asks for a warm shutdown: the current job finishes, then
the worker exits; a second one kills the job, which RQ then retries.
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal

import numpy  # noqa: F401  (preloaded before the fork, see above)
import rq
from rq.serializers import JSONSerializer

import engine  # noqa: F401
from service import store
from service.queue import make_queue
from service.settings import Settings

from . import jobs

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1


class _Tuned:
    """RQ's worker with the timings a training service wants.

    RQ takes a busy worker for dead 60 s after a missed heartbeat and, while idle,
    sweeps for abandoned jobs only between 405 s blocking waits. Both become settings
    (``abandoned_after``, ``maintenance_interval``) so a killed worker's job is retried
    or failed within a minute or two, and within seconds in tests.
    """

    abandoned_after = 60

    def get_heartbeat_ttl(self, job, working_time: float = 0.0) -> int:
        return super().get_heartbeat_ttl(job, working_time) - 60 + self.abandoned_after

    @property
    def dequeue_timeout(self) -> int:
        return max(1, min(self.worker_ttl - 15, self.maintenance_interval))


class Worker(_Tuned, rq.Worker):
    def setup_work_horse_signals(self) -> None:
        super().setup_work_horse_signals()
        # The horse must not outlive its worker: an orphan would keep training a job that
        # the abandoned-job sweep is about to hand to another worker.
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):  # not Linux
            pass
        if os.getppid() == 1:
            os._exit(1)


class SimpleWorker(_Tuned, rq.SimpleWorker):
    """Runs jobs in its own process (no fork): for tests and debugging."""


def make_worker(settings: Settings, *, simple: bool = False, name: str | None = None) -> rq.Worker:
    connection = store.connect(settings.redis_url, settings.redis_timeout)
    worker = (SimpleWorker if simple else Worker)(
        [make_queue(connection)],
        name=name,
        connection=connection,
        serializer=JSONSerializer,
        job_monitoring_interval=settings.worker_heartbeat,
        maintenance_interval=settings.maintenance_interval,
        work_horse_killed_handler=jobs.on_work_horse_killed,
    )
    worker.abandoned_after = settings.abandoned_after
    return worker


def run(settings: Settings, burst: bool = False) -> bool:
    """Work until told to stop (or, with ``burst``, until the queue is empty)."""
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    worker = make_worker(settings)
    log.info("worker %s listening on %s", worker.name, settings.redis_url)
    return worker.work(burst=burst, logging_level=settings.log_level.upper(), with_scheduler=False)
