"""The worker process: ``nnserve worker`` runs ``run(settings)``.

NumPy, the engine and the job module are imported here, before RQ forks a work horse
per job, so a job starts in milliseconds instead of paying ~90 ms of imports after
each fork.

Stopping: SIGTERM (or Ctrl-C) asks for a warm shutdown. The work horse is told
(``jobs.PREEMPT_SIGNAL``) and its job checkpoints at the next epoch boundary and goes
back on the queue; a job whose epoch outlasts ``shutdown_timeout`` is killed and requeued
from its last periodic checkpoint. Then the worker exits. A second signal is a cold
shutdown: the job is killed at once and the abandoned-job sweep of another worker retries it.

Redis outages: the worker's client retries each command for ``redis_retry_window``
seconds, so a restart of Redis only pauses the worker; if Redis stays away longer,
``run`` starts the work loop again once it answers. The process never has to be restarted.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import threading
import time
from typing import TypeVar

import numpy  # noqa: F401  (preloaded before the fork, see above)
import redis
import rq
from rq import worker_registration
from rq.exceptions import DequeueTimeout, StopRequested
from rq.registry import clean_registries
from rq.serializers import JSONSerializer
from rq.utils import as_text
from rq.utils import now as rq_now
from threadpoolctl import threadpool_limits

from nnserve import engine  # noqa: F401
from nnserve.service import store
from nnserve.service.queue import make_queue, make_sweep_queue
from nnserve.service.settings import Settings

from . import jobs, sweeps

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1
REDIS_ERRORS: tuple[type[Exception], ...] = (*store.TRANSIENT_ERRORS, redis.exceptions.OutOfMemoryError)
"""What breaks off the work loop without being anyone's fault: Redis away, failing over, or full."""
RESTART_PAUSE = 1.0
"""Seconds before the work loop starts again after it broke off while Redis answered (RQ quits its
loop on any error of its own bookkeeping, a write refused by a full Redis say)."""


DEQUEUE_POLL = 0.25
"""Seconds an idle worker waits on the ordinary queue before it looks at the sweeps' queue again."""


class OrderedQueues(rq.Queue):
    """RQ's queue whose ``dequeue_any`` (the worker's dequeue) takes from several queues in order, each
    through its intermediate list (LMOVE), as RQ does for a single queue.

    RQ pops from several queues with BLPOP, which takes the job off its queue outright: a worker killed
    between that pop and the job's entry in the started registry loses the job (its record stays
    ``queued`` forever; a sweep waits on it). Through the intermediate list, RQ's maintenance puts such a
    job back on its way. The order is the priority: ordinary jobs before sweeps' trials. An idle worker
    waits on the first queue, so an ordinary job is taken at once, and looks at the others every
    DEQUEUE_POLL seconds."""

    @classmethod
    def dequeue_any(cls, queues, timeout, connection, job_class=None, serializer=None, death_penalty_class=None):
        queues = list(queues)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            result = None
            for queue in queues:
                result = cls.lmove(connection, queue.key, None)
                if result is not None:
                    break
            if result is None:
                if deadline is None:
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DequeueTimeout(timeout, queues[0].key)
                first = queues[0]
                popped = connection.blmove(first.key, first.intermediate_queue_key, min(DEQUEUE_POLL, left))
                if popped is None:
                    continue
                result = (first.key, popped)
            queue_key, job_id = (as_text(part) for part in result)
            fetched = cls._fetch_dequeued_job(
                connection,
                queue_key,
                job_id,
                job_class=job_class,
                serializer=serializer,
                death_penalty_class=death_penalty_class,
            )
            if fetched is not None:
                return fetched


class _Tuned(rq.Worker):
    """RQ's worker with the timings a training service wants.

    RQ takes a busy worker for dead 60 s after a missed heartbeat and, while idle,
    sweeps for abandoned jobs only between 405 s blocking waits. Both become settings
    (``abandoned_after``, ``maintenance_interval``) so a killed worker's job is retried
    or failed within a minute or two, and within seconds in tests. After a Redis outage
    RQ waits up to 60 s between attempts to dequeue; 5 s gets back to work sooner.
    """

    abandoned_after = 60
    max_connection_wait_time = 5.0

    def get_heartbeat_ttl(self, job: rq.job.Job, working_time: float = 0.0) -> int:
        return super().get_heartbeat_ttl(job, working_time) - 60 + self.abandoned_after

    # A full Redis refuses heartbeats too (after the connection's retries). A missed heartbeat must
    # not break off the work loop, which would kill the work horse whose job is waiting to save.
    def heartbeat(self, timeout: int | None = None, pipeline=None) -> None:
        try:
            super().heartbeat(timeout, pipeline)
        except redis.exceptions.OutOfMemoryError:
            log.warning("worker %s: Redis is full (maxmemory); heartbeat not recorded", self.name)

    def maintain_heartbeats(self, job: rq.job.Job, execution) -> None:
        try:
            super().maintain_heartbeats(job, execution)
        except redis.exceptions.OutOfMemoryError:
            log.warning("worker %s: Redis is full (maxmemory); heartbeat of job %s not recorded", self.name, job.id)

    @property
    def dequeue_timeout(self) -> int:
        return max(1, min(self.worker_ttl - 15, self.maintenance_interval))

    def prepare_job_execution(self, job: rq.job.Job, remove_from_intermediate_queue: bool = False) -> None:
        # RQ leaves a started job in its intermediate list when the worker has several queues (it popped
        # it with BLPOP); ours always come through it (OrderedQueues), so take it out, or RQ's maintenance
        # would take the job for stuck there once it finished.
        super().prepare_job_execution(job, remove_from_intermediate_queue=True)

    def clean_registries(self) -> None:
        """RQ's maintenance (abandoned jobs retried or failed, expired entries dropped), under a lock
        that lapses after a few maintenance intervals rather than RQ's 899 s. The lock is taken and
        released around every round of maintenance; a worker killed in between (or a machine losing
        its last second of Redis writes) leaves it set, and RQ's would then stop every worker from
        rescuing abandoned jobs for 15 minutes: a job whose worker died would sit ``running`` all that
        time."""
        lapse = max(10, 5 * int(self.maintenance_interval))
        for queue in self.queues:
            if self.connection.set(queue.registry_cleaning_key, 1, nx=True, ex=lapse):
                self.log.info("Worker %s: cleaning registries for queue: %s", self.name, queue.name)
                clean_registries(queue, self._exc_handlers)
                worker_registration.clean_worker_registry(queue)
                queue.intermediate_queue.cleanup(self, queue)
                queue.release_maintenance_lock()
        self.last_cleaned_at = rq_now()  # type: ignore[assignment]  # RQ declares it None and sets datetimes


class Worker(_Tuned):
    """RQ's forking worker whose warm shutdown requeues the running job (see the module docstring)."""

    shutdown_timeout = 8.0
    told_to_stop = False
    _preempting = False
    _shutdown_timer: threading.Timer | None = None

    def request_stop(self, signum, frame) -> None:
        self.told_to_stop = True
        super().request_stop(signum, frame)

    def check_for_suspension(self, burst: bool) -> None:
        # The top of the work loop. A stop signal that came while RQ was still registering the
        # worker, before it installed its own handlers, was only noted (see run): honour it here.
        if self.told_to_stop:
            raise StopRequested()
        super().check_for_suspension(burst)

    def handle_warm_shutdown_request(self) -> None:
        super().handle_warm_shutdown_request()
        pid = self.horse_pid
        if not pid:
            return
        self._preempting = True
        try:
            os.kill(pid, jobs.PREEMPT_SIGNAL)
        except ProcessLookupError:  # it has just finished
            return
        self._shutdown_timer = threading.Timer(self.shutdown_timeout, self._stop_horse, args=(pid,))
        self._shutdown_timer.daemon = True
        self._shutdown_timer.start()

    def _stop_horse(self, pid: int) -> None:
        """The job did not reach an epoch boundary in time: kill it (see handle_work_horse_killed)."""
        if self._horse_pid != pid:
            return
        log.warning("worker %s: job still mid-epoch after %.0f s; stopping it", self.name, self.shutdown_timeout)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def monitor_work_horse(self, job, queue, execution) -> None:
        try:
            super().monitor_work_horse(job, queue, execution)
        finally:
            if self._shutdown_timer is not None:
                self._shutdown_timer.cancel()

    def handle_work_horse_killed(self, job, retpid, ret_val, rusage) -> None:
        if self._preempting:
            jobs.on_preempted_horse_killed(job, self.connection)
        else:
            super().handle_work_horse_killed(job, retpid, ret_val, rusage)

    def setup_work_horse_signals(self) -> None:
        super().setup_work_horse_signals()
        jobs.in_work_horse = True
        signal.signal(jobs.PREEMPT_SIGNAL, jobs.request_preemption)
        # The horse must not outlive its worker: an orphan would keep training a job that
        # the abandoned-job sweep is about to hand to another worker.
        with contextlib.suppress(OSError, AttributeError):  # not Linux
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() == 1:
            os._exit(1)

    def stop_horse_now(self) -> None:
        """Kill a work horse left behind when the work loop broke off (Redis gone for too long);
        the abandoned-job sweep retries its job from the last checkpoint."""
        if self._horse_pid:
            self.kill_horse(signal.SIGKILL)
            self.wait_for_horse()
            self._horse_pid = 0


class SimpleWorker(_Tuned, rq.SimpleWorker):
    """Runs jobs in its own process (no fork): for tests and debugging."""


W = TypeVar("W", bound=_Tuned)


def make_worker(settings: Settings, kind: type[W] = Worker, name: str | None = None) -> W:  # type: ignore[assignment]
    """A worker of ``kind`` (``Worker``, or ``SimpleWorker`` for tests) on the ``nnserve`` queue, then the
    sweeps' queue: RQ takes from the first queue with a job, so ordinary jobs go before sweeps' trials."""
    connection = store.connect(settings, settings.redis_retry_window)
    sweeps.settings = settings  # a trial submits the sweep's next ones with the worker's limits
    worker = kind(
        [
            OrderedQueues(queue.name, connection=connection, serializer=JSONSerializer)
            for queue in (make_queue(connection), make_sweep_queue(connection))
        ],
        queue_class=OrderedQueues,
        name=name,
        connection=connection,
        serializer=JSONSerializer,
        job_monitoring_interval=settings.worker_heartbeat,
        maintenance_interval=settings.maintenance_interval,
        work_horse_killed_handler=sweeps.on_work_horse_killed,  # jobs' handler, then a trial's sweep moves on
    )
    worker.abandoned_after = settings.abandoned_after
    if isinstance(worker, Worker):
        worker.shutdown_timeout = settings.shutdown_timeout
    return worker


def run(settings: Settings, burst: bool = False) -> bool:
    """Work until told to stop (or, with ``burst``, until the queue is empty). Nothing else ends it:
    when RQ's work loop breaks off (Redis away or full, or any error of its own) it starts again."""
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # OpenBLAS threads spin while they wait for work: two workers with two threads each on two
    # cores steal each other's time slices, and an epoch can take 40x longer.
    threadpool_limits(limits=settings.blas_threads, user_api="blas")
    while True:
        worker: Worker | None = None
        try:
            worker = make_worker(settings)
            _note_stop_signals(worker)
            log.info("worker %s listening on %s", worker.name, settings.redis_url)
            worked: bool = worker.work(burst=burst, logging_level=settings.log_level.upper(), with_scheduler=False)
            if burst or worker.told_to_stop:
                return worked
            log.warning("worker %s: the work loop broke off; starting it again", worker.name)
        except REDIS_ERRORS as error:
            if worker is not None and worker.told_to_stop:
                return False
            log.warning("Redis unreachable or full (%s: %s)", type(error).__name__, error)
        finally:
            if worker is not None:
                worker.stop_horse_now()
        if not _wait_for_redis(settings, pause=RESTART_PAUSE):
            return False


def _note_stop_signals(worker: Worker) -> None:
    """Until RQ installs its handlers, a stop signal only marks the worker as told to stop."""

    def note(signum, frame) -> None:
        worker.told_to_stop = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, note)


def _answers(connection: redis.Redis) -> bool:
    try:
        return bool(connection.ping())
    except REDIS_ERRORS:
        return False


def _wait_for_redis(settings: Settings, pause: float = 0.0) -> bool:
    """After ``pause`` seconds, until Redis answers (True) or a stop signal arrives (False), trying
    every few seconds."""
    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop.append(signum))
    probe = store.connect(settings)
    delay, next_try = 0.5, time.monotonic() + pause
    while not stop:
        if time.monotonic() >= next_try:
            if _answers(probe):
                log.info("Redis answers again; back to work")
                return True
            next_try = time.monotonic() + delay
            delay = min(delay * 2, 5.0)
        time.sleep(0.1)
    return False
