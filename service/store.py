"""Everything nnserve keeps in Redis, and every key it uses, named here and nowhere else.

| key                                   | type       | holds                                                   |
|---------------------------------------|------------|---------------------------------------------------------|
| nnserve:dataset:{id}                  | hash       | metadata: name, shape, target kind, classes, tenant ... |
| nnserve:dataset:{id}:arrays           | string     | npz: float32 ``features`` (n, d), ``targets``           |
| nnserve:job:{id}                      | hash       | status, progress, attempts, error, specs, timestamps    |
| nnserve:job:{id}:history              | list       | one JSON object of logged values per finished epoch     |
| nnserve:job:{id}:checkpoint           | string     | npz: weights, optimizer and RNG state, epoch (engine)   |
| nnserve:model:{id}                    | hash       | metadata: specs, metrics, input/output, status, tenant  |
| nnserve:model:{id}:weights            | string     | npz written by ``engine.dumps`` (no pickle)             |
| nnserve:tenant:{tenant}:{kind}        | sorted set | dataset / job / model ids by creation time              |
| nnserve:tenant:{tenant}:active_jobs   | set        | ids of jobs that may be queued or running (with a limit) |
| nnserve:stats:jobs                    | hash       | number of jobs in each status (for /metrics)            |
| nnserve:idempotency:{tenant}:{sha256} | string     | JSON: a POST's fingerprint and response, by its key     |
| nnserve:ratelimit:{scope}:{who}       | string     | requests counted in the current window (expires with it) |
| nnserve:events:models (pub/sub)       | channel    | ids of deleted models, so API processes drop them       |
| rq:*                                  | RQ's own   | the ``nnserve`` queue and its registries                |

Hash fields hold JSON values, so numbers, lists and null come back as they went in.
The built-in datasets are not stored: they come from ``service.builtin``. Job status
changes go through one Lua script, so they are atomic and the per-status counts stay
true. This module imports redis and NumPy only (never Flask): the API and the worker
share it, each passing its own Redis client.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.driver_info import DriverInfo
from redis.retry import Retry

from nnserve.engine import archive

from . import builtin

PREFIX = "nnserve"
PUBLIC = "public"
"""The tenant of every record while the service runs without API keys."""
MODEL_EVENTS = f"{PREFIX}:events:models"
"""Pub/sub channel carrying the id of each deleted model."""
JOB_STATS = f"{PREFIX}:stats:jobs"
RETRY_BACKOFF_CAP = 2.0
"""Seconds, at most, between a worker's attempts at a Redis command while Redis is unreachable."""

DATASETS, JOBS, MODELS = "datasets", "jobs", "models"


def dataset_key(dataset_id: str) -> str:
    return f"{PREFIX}:dataset:{dataset_id}"


def arrays_key(dataset_id: str) -> str:
    return f"{PREFIX}:dataset:{dataset_id}:arrays"


def job_key(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def history_key(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:history"


def checkpoint_key(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}:checkpoint"


def model_key(model_id: str) -> str:
    return f"{PREFIX}:model:{model_id}"


def weights_key(model_id: str) -> str:
    return f"{PREFIX}:model:{model_id}:weights"


def index_key(tenant: str, kind: str) -> str:
    return f"{PREFIX}:tenant:{tenant}:{kind}"


def active_jobs_key(tenant: str) -> str:
    return f"{PREFIX}:tenant:{tenant}:active_jobs"


def idempotency_key(tenant: str, key: str) -> str:
    """The client's Idempotency-Key enters hashed: any characters, a fixed length, never stored as sent."""
    return f"{PREFIX}:idempotency:{tenant}:{hashlib.sha256(key.encode()).hexdigest()}"


def rate_key(scope: str, who: str) -> str:
    """``scope``: what is limited (``jobs``, ``predict``); ``who``: a tenant, or ``ip:<address>``."""
    return f"{PREFIX}:ratelimit:{scope}:{who}"


def connect(url: str, timeout: float, retry_window: float = 0.0) -> redis.Redis:
    """A client whose every connect and command gives up after ``timeout`` seconds, so an
    unreachable Redis turns into a quick 503 rather than a hung request: one retry, no backoff.

    With a ``retry_window`` (workers), a command that fails to connect or times out is tried
    again with exponential backoff for about that many seconds, so a Redis restart only pauses
    training. Our job writes do no harm when repeated (see ``record_epoch``), and a duplicate that
    RQ might enqueue that way is stopped by the job's lease (see ``start_job``)."""
    retry = Retry(NoBackoff(), 1)
    if retry_window > 0:
        backoff, attempts, waited = ExponentialBackoff(cap=RETRY_BACKOFF_CAP, base=0.05), 0, 0.0
        while waited < retry_window:
            attempts += 1
            waited += backoff.compute(attempts)
        retry = Retry(backoff, attempts)
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=retry,
        health_check_interval=30,
        # Without it every new connection reads redis-py's version from the package metadata on
        # disk (~2 ms): a worker's work horse opens a fresh one for each job, on the way to running.
        driver_info=DriverInfo(lib_version=redis.__version__),
    )


def new_id(kind: str) -> str:
    """``ds_…``, ``job_…`` or ``mdl_…``: the prefix keeps ids readable and apart from built-in names."""
    return f"{kind}_{secrets.token_hex(8)}"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# Encoding ------------------------------------------------------------------------------


def _encode(record: dict[str, Any]) -> dict[str, bytes]:
    return {k: orjson.dumps(v, option=orjson.OPT_SERIALIZE_NUMPY) for k, v in record.items()}


def _decode(raw: dict[bytes, bytes]) -> dict[str, Any] | None:
    return {k.decode(): orjson.loads(v) for k, v in raw.items()} if raw else None


def _owned(record: dict[str, Any] | None, tenant: str) -> dict[str, Any] | None:
    return record if record is not None and record.get("tenant") == tenant else None


def _fetch_many(r: redis.Redis, key: Callable[[str], str], ids: Iterable[str]) -> list[dict[str, Any]]:
    with r.pipeline(transaction=False) as pipe:
        for record_id in ids:
            pipe.hgetall(key(record_id))
        return [record for record in map(_decode, pipe.execute()) if record is not None]


def _page(r: redis.Redis, tenant: str, kind: str, offset: int, limit: int) -> list[str]:
    """Ids newest first."""
    return [i.decode() for i in r.zrevrange(index_key(tenant, kind), offset, offset + limit - 1)]


def _score(created_at: str) -> float:
    return datetime.fromisoformat(created_at).timestamp()


# Datasets ------------------------------------------------------------------------------


def save_dataset(
    r: redis.Redis,
    meta: dict[str, Any],
    features: np.ndarray,
    targets: np.ndarray,
    also: Callable[[Any], None] | None = None,
) -> None:
    """Store a dataset in one transaction, with the commands ``also(pipeline)`` adds (an idempotency record)."""
    with r.pipeline() as pipe:
        pipe.hset(dataset_key(meta["id"]), mapping=_encode(meta))
        pipe.set(arrays_key(meta["id"]), archive.pack({"features": features, "targets": targets}))
        pipe.zadd(index_key(meta["tenant"], DATASETS), {meta["id"]: _score(meta["created_at"])})
        if also is not None:
            also(pipe)
        pipe.execute()


def get_dataset(r: redis.Redis, dataset_id: str, tenant: str) -> dict[str, Any] | None:
    """The dataset's metadata, built-ins included; None when it does not exist or belongs to another tenant."""
    if builtin.is_builtin(dataset_id):
        return builtin.load(dataset_id)[0]
    return _owned(_decode(r.hgetall(dataset_key(dataset_id))), tenant)


def task_of(meta: dict[str, Any]) -> tuple[str, int]:
    """``(task, width)`` a dataset trains: classification over its classes, or regression over its target columns."""
    if meta["target_kind"] == "categorical":
        return "classification", len(meta["classes"])
    return "regression", meta["n_targets"]


def load_dataset(r: redis.Redis, dataset_id: str) -> tuple[np.ndarray, np.ndarray] | None:
    """``(features, targets)``, or None when the dataset is gone."""
    if builtin.is_builtin(dataset_id):
        _, features, targets = builtin.load(dataset_id)
        return features, targets
    blob = r.get(arrays_key(dataset_id))
    if blob is None:
        return None
    arrays, _ = archive.unpack(blob, "dataset")
    return arrays["features"], arrays["targets"]


def list_datasets(r: redis.Redis, tenant: str, offset: int = 0, limit: int = 100) -> list[dict[str, Any]]:
    """Built-ins first, then the tenant's datasets newest first."""
    builtins = [builtin.load(name)[0] for name in builtin.NAMES]
    shown = builtins[offset : offset + limit]
    start = max(0, offset - len(builtins))
    remaining = limit - len(shown)
    if remaining > 0:
        shown += _fetch_many(r, dataset_key, _page(r, tenant, DATASETS, start, remaining))
    return shown


def delete_dataset(r: redis.Redis, meta: dict[str, Any]) -> None:
    with r.pipeline() as pipe:
        pipe.delete(dataset_key(meta["id"]), arrays_key(meta["id"]))
        pipe.zrem(index_key(meta["tenant"], DATASETS), meta["id"])
        pipe.execute()


# Jobs ----------------------------------------------------------------------------------


class LeaseLost(Exception):
    """Another attempt has taken the job over (its worker was presumed dead); this one must stop
    without writing anything more."""


# Moves a job from one of the allowed statuses to another, setting extra fields, counting
# the move in JOB_STATS and (optionally) setting the model's status, all in one step.
# KEYS: job, stats, model. ARGV: new status, model status ("" = leave), lease ("" = whoever
# holds the job), n allowed, allowed..., then field/value pairs. Returns {1, old} when
# applied, {0, current} when the job was in another status or held by another lease, nil
# when there is no such job.
_TRANSITION = """
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return nil end
if ARGV[3] ~= '' and redis.call('HGET', KEYS[1], 'lease') ~= ARGV[3] then return {0, current} end
local n = tonumber(ARGV[4])
local allowed = false
for i = 5, 4 + n do
  if ARGV[i] == current then allowed = true end
end
if not allowed then return {0, current} end
for i = 5 + n, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
if ARGV[1] ~= current then
  redis.call('HSET', KEYS[1], 'status', ARGV[1])
  redis.call('HINCRBY', KEYS[2], current, -1)
  redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
end
if ARGV[2] ~= '' and redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HSET', KEYS[3], 'status', ARGV[2])
end
return {1, current}
"""

# Records one finished epoch for the attempt holding ``lease``. The history is first cut to
# ``epoch`` entries, so a call retried through a dropped connection never logs an epoch twice.
# KEYS: job, history. ARGV: lease, epoch (0-based), logs. Returns -1 when another attempt
# holds the job, else 1 when a cancel was asked for, else 0.
_RECORD_EPOCH = """
if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] then return -1 end
local epoch = tonumber(ARGV[2])
if epoch == 0 then redis.call('DEL', KEYS[2]) else redis.call('LTRIM', KEYS[2], 0, epoch - 1) end
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[1], 'epoch', epoch + 1)
if redis.call('HGET', KEYS[1], 'cancel_requested') == 'true' then return 1 end
return 0
"""

# Stores a checkpoint for the attempt holding ``lease``. KEYS: job, checkpoint.
# ARGV: lease, blob, epochs it covers. Returns 0 when another attempt holds the job.
_SAVE_CHECKPOINT = """
if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[1], 'checkpoint_epoch', ARGV[3])
return 1
"""


def transition(
    r: redis.Redis,
    job: dict[str, Any],
    to: str,
    allowed: Iterable[str],
    fields: dict[str, Any] | None = None,
    model_status: str | None = None,
    lease: str | None = None,
) -> tuple[bool, str | None]:
    """Move ``job`` to status ``to`` if it is in one of ``allowed`` (and, given a ``lease``, still held
    by it); returns (applied, previous status)."""
    args = [
        orjson.dumps(to),
        orjson.dumps(model_status) if model_status else b"",
        orjson.dumps(lease) if lease else b"",
    ]
    allowed = [orjson.dumps(s) for s in allowed]
    args += [len(allowed), *allowed]
    for name, value in _encode(fields or {}).items():
        args += [name, value]
    result = r.eval(_TRANSITION, 3, job_key(job["id"]), JOB_STATS, model_key(job["model_id"]), *args)
    if result is None:
        return False, None
    return bool(result[0]), orjson.loads(result[1])


class ActiveJobLimit(Exception):
    """The tenant already has ``limit`` jobs queued or running."""

    def __init__(self, active: int, limit: int):
        super().__init__(f"{active} jobs queued or running; the limit is {limit}")
        self.active, self.limit = active, limit


def create_job(
    r: redis.Redis,
    job: dict[str, Any],
    model: dict[str, Any],
    enqueue: Callable[[Any], None],
    also: Callable[[Any], None] | None = None,
    max_active: int = 0,
) -> None:
    """Store a queued job and its (untrained) model, and enqueue it, in one transaction:
    ``enqueue(pipeline)`` adds the queue's own commands, ``also(pipeline)`` others (an idempotency record).

    With ``max_active``, raises ActiveJobLimit (storing nothing) when the tenant already has that
    many jobs queued or running. The count is WATCHed and the job joins it in the same
    transaction, so concurrent submissions cannot overshoot the limit."""
    active_key = active_jobs_key(job["tenant"])
    with r.pipeline() as pipe:
        while True:
            try:
                if max_active:
                    pipe.watch(active_key)
                    finished = _finished_jobs(r, pipe, active_key, max_active)
                pipe.multi()  # explicitly, as RQ expects of a pipeline it is handed
                pipe.hset(job_key(job["id"]), mapping=_encode(job))
                pipe.hset(model_key(model["id"]), mapping=_encode(model))
                pipe.hincrby(JOB_STATS, orjson.dumps(job["status"]), 1)
                pipe.zadd(index_key(job["tenant"], JOBS), {job["id"]: _score(job["created_at"])})
                pipe.zadd(index_key(model["tenant"], MODELS), {model["id"]: _score(model["created_at"])})
                if max_active:
                    if finished:
                        pipe.srem(active_key, *finished)
                    pipe.sadd(active_key, job["id"])
                enqueue(pipe)
                if also is not None:
                    also(pipe)
                pipe.execute()
                return
            except redis.WatchError:  # another submission of this tenant came first: count again
                continue


def _finished_jobs(r: redis.Redis, watching, active_key: str, limit: int) -> list[bytes]:
    """Ids in ``active_key`` whose jobs have finished (or are gone), to drop from it; raises
    ActiveJobLimit when the others already number ``limit``.

    The set is only pruned when it reaches the limit: jobs finish in the worker, which need not
    know about the set. A status read here can only be stale towards "still active", since a
    finished job never runs again, so the count can err only on the side of refusing."""
    ids = watching.smembers(active_key) if watching.scard(active_key) >= limit else set()
    if not ids:
        return []
    with r.pipeline(transaction=False) as batch:
        for job_id in ids:
            batch.hget(job_key(job_id.decode()), "status")
        statuses = batch.execute()
    finished = [job_id for job_id, status in zip(ids, statuses) if status not in (b'"queued"', b'"running"')]
    if len(ids) - len(finished) >= limit:
        raise ActiveJobLimit(len(ids) - len(finished), limit)
    return finished


def get_job(r: redis.Redis, job_id: str, tenant: str | None = None) -> dict[str, Any] | None:
    """The job record (any tenant's when ``tenant`` is None, as the worker needs)."""
    record = _decode(r.hgetall(job_key(job_id)))
    return record if tenant is None else _owned(record, tenant)


def list_jobs(r: redis.Redis, tenant: str, offset: int = 0, limit: int = 100) -> list[dict[str, Any]]:
    return _fetch_many(r, job_key, _page(r, tenant, JOBS, offset, limit))


def history(r: redis.Redis, job_id: str) -> dict[str, list[float]]:
    """Logged values per name, one per finished epoch: ``{"loss": [...], "val_loss": [...], ...}``."""
    columns: dict[str, list[float]] = {}
    for line in r.lrange(history_key(job_id), 0, -1):
        for name, value in orjson.loads(line).items():
            columns.setdefault(name, []).append(value)
    return columns


def history_since(r: redis.Redis, job_id: str, start: int) -> tuple[list[dict[str, float]], dict[str, Any]]:
    """The epochs logged after the first ``start`` (one dict of values each) and the job's ``status``,
    ``error`` and ``model_id``, read in one transaction: a job seen finished has its whole history."""
    with r.pipeline() as pipe:
        pipe.lrange(history_key(job_id), start, -1)
        pipe.hmget(job_key(job_id), "status", "error", "model_id")
        lines, fields = pipe.execute()
    state = {
        name: orjson.loads(value) if value is not None else None
        for name, value in zip(("status", "error", "model_id"), fields)
    }
    return [orjson.loads(line) for line in lines], state


def start_job(r: redis.Redis, job: dict[str, Any], lease: str) -> tuple[bool, str | None]:
    """Claim ``job`` for one attempt: ``running``, one more attempt, and ``lease`` as its holder, so that
    an older attempt still alive somewhere (its worker was taken for dead) stops at its next write.
    ``running`` is allowed too: RQ may requeue a job whose worker died before our record moved back."""
    fields = {"started_at": now(), "attempts": job["attempts"] + 1, "lease": lease}
    return transition(r, job, "running", ["queued", "running"], fields)


def record_epoch(r: redis.Redis, job_id: str, lease: str, epoch: int, logs: dict[str, float]) -> bool:
    """Append one epoch's logs, advance the progress, and say whether a cancel was asked for (one round trip).
    Raises LeaseLost when another attempt holds the job."""
    logs_json = orjson.dumps(logs, option=orjson.OPT_SERIALIZE_NUMPY)
    result = r.eval(_RECORD_EPOCH, 2, job_key(job_id), history_key(job_id), orjson.dumps(lease), epoch, logs_json)
    if result < 0:
        raise LeaseLost(job_id)
    return result == 1


def restart_history(r: redis.Redis, job_id: str, epochs_kept: int) -> None:
    """Keep the first ``epochs_kept`` epochs of the history (those a checkpoint covers), drop the rest."""
    with r.pipeline() as pipe:
        if epochs_kept:
            pipe.ltrim(history_key(job_id), 0, epochs_kept - 1)
        else:
            pipe.delete(history_key(job_id))
        pipe.hset(job_key(job_id), "epoch", epochs_kept)
        pipe.execute()


def save_checkpoint(r: redis.Redis, job_id: str, lease: str, blob: bytes, epoch: int) -> None:
    """Keep ``blob`` as the job's checkpoint, covering ``epoch`` epochs. Raises LeaseLost."""
    if not r.eval(_SAVE_CHECKPOINT, 2, job_key(job_id), checkpoint_key(job_id), orjson.dumps(lease), blob, epoch):
        raise LeaseLost(job_id)


def load_checkpoint(r: redis.Redis, job_id: str) -> tuple[bytes, int] | None:
    """``(checkpoint bytes, epochs it covers)``, or None."""
    with r.pipeline(transaction=False) as pipe:
        pipe.get(checkpoint_key(job_id))
        pipe.hget(job_key(job_id), "checkpoint_epoch")
        blob, epoch = pipe.execute()
    return (blob, int(epoch)) if blob is not None and epoch is not None else None


def requeue_job(
    r: redis.Redis, job: dict[str, Any], error: dict[str, str] | None = None, lease: str | None = None
) -> bool:
    """Back to ``queued`` from ``running`` (its checkpoint kept), noting why; True when it was still running."""
    applied, _ = transition(r, job, "queued", ["running"], {"error": error}, lease=lease)
    return applied


def finish_job(
    r: redis.Redis,
    job: dict[str, Any],
    status: str,
    error: dict[str, str] | None = None,
    allowed=("running",),
    lease: str | None = None,
) -> bool:
    """End a job as failed or canceled (the model gets the same status); True when it was ``allowed`` to."""
    applied, _ = transition(
        r, job, status, allowed, {"finished_at": now(), "error": error}, model_status=status, lease=lease
    )
    if applied:
        r.delete(checkpoint_key(job["id"]))
    return applied


def save_model(
    r: redis.Redis,
    job: dict[str, Any],
    lease: str,
    weights: bytes,
    fields: dict[str, Any],
    epochs: list[dict[str, float]],
) -> bool:
    """Store the trained weights, metadata and the whole history (``epochs``: one dict of logs each, as
    training kept them, which heals any epoch record lost with a Redis restart), and mark job and
    model succeeded/ready if ``lease`` still holds the job. Another attempt that took over trains
    the same model from the same checkpoint, so writing the weights before that check is harmless."""
    with r.pipeline() as pipe:
        pipe.set(weights_key(job["model_id"]), weights)
        pipe.hset(model_key(job["model_id"]), mapping=_encode(fields))
        pipe.delete(history_key(job["id"]))
        if epochs:
            pipe.rpush(
                history_key(job["id"]), *(orjson.dumps(logs, option=orjson.OPT_SERIALIZE_NUMPY) for logs in epochs)
            )
        pipe.execute()
    done = {"finished_at": now(), "epoch": len(epochs), "error": None}  # a retry's reason no longer applies
    applied, _ = transition(r, job, "succeeded", ["running"], done, model_status="ready", lease=lease)
    if applied:
        r.delete(checkpoint_key(job["id"]))
    return applied


def job_counts(r: redis.Redis) -> dict[str, int]:
    return {orjson.loads(k): int(v) for k, v in r.hgetall(JOB_STATS).items()}


# Models --------------------------------------------------------------------------------


def get_model(r: redis.Redis, model_id: str, tenant: str) -> dict[str, Any] | None:
    return _owned(_decode(r.hgetall(model_key(model_id))), tenant)


def list_models(r: redis.Redis, tenant: str, offset: int = 0, limit: int = 100) -> list[dict[str, Any]]:
    return _fetch_many(r, model_key, _page(r, tenant, MODELS, offset, limit))


def load_weights(r: redis.Redis, model_id: str) -> bytes | None:
    return r.get(weights_key(model_id))


def delete_model(r: redis.Redis, model: dict[str, Any]) -> None:
    """Delete the model and tell every API process to drop it from its cache."""
    with r.pipeline() as pipe:
        pipe.delete(model_key(model["id"]), weights_key(model["id"]))
        pipe.zrem(index_key(model["tenant"], MODELS), model["id"])
        pipe.publish(MODEL_EVENTS, model["id"])
        pipe.execute()


# Limits and idempotency ------------------------------------------------------------------

# Counts a request in a fixed window that starts with the window's first request and lasts
# ARGV[1] ms (the counter's expiry). One script, so concurrent API processes share one count
# and a counter can never be left without its expiry. KEYS: counter.
# Returns {requests counted in the window, ms until it ends}.
_COUNT_REQUEST = """
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
"""


def count_request(r: redis.Redis, scope: str, who: str, seconds: int) -> tuple[int, float]:
    """Count one request of ``who`` in its current ``seconds``-long window (one round trip):
    ``(requests in the window so far, seconds until the window ends)``."""
    count, ttl = r.eval(_COUNT_REQUEST, 1, rate_key(scope, who), seconds * 1000)
    return int(count), int(ttl) / 1000


# Takes an idempotency key for one request, as SET NX would, unless it is taken: then the
# record already there is returned (a finished response, or a request still in flight).
# (SET NX GET does both, but only from Redis 7; managed Redis is often older.)
# KEYS: idempotency key. ARGV: record, ms to keep it.
_RESERVE = """
local existing = redis.call('GET', KEYS[1])
if existing then return existing end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""

# Deletes the key only if it still holds ARGV[1]: a finished response written over the
# reservation is kept. KEYS: idempotency key.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def reserve_idempotency_key(r: redis.Redis, key: str, record: bytes, seconds: float) -> bytes | None:
    """Hold ``key`` with ``record`` for ``seconds`` and return None; or, when it is already held,
    return what it holds (nothing is changed)."""
    return r.eval(_RESERVE, 1, key, record, int(seconds * 1000))


def release_idempotency_key(r: redis.Redis, key: str, record: bytes) -> None:
    """Free ``key`` if it still holds ``record`` (the request it was reserved for created nothing)."""
    r.eval(_RELEASE, 1, key, record)


def keep_idempotent_response(pipe, key: str, record: bytes, seconds: int) -> None:
    """Add to ``pipe`` (the transaction creating the resource) the write of its response over the reservation."""
    pipe.set(key, record, ex=seconds)
