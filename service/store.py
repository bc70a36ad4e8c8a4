"""Everything nnserve keeps in Redis, and every key it uses, named here and nowhere else.

| key                                   | type       | holds                                                   |
|---------------------------------------|------------|---------------------------------------------------------|
| nnserve:dataset:{id}                  | hash       | metadata: name, shape, target kind, classes, tenant ... |
| nnserve:dataset:{id}:arrays           | string/list| npz: float32 ``features`` (n, *sample_shape), ``targets``; a list of its pieces when over 512 MiB |
| nnserve:job:{id}                      | hash       | status, progress, attempts, error, specs, timestamps    |
| nnserve:job:{id}:history              | list       | one JSON object of logged values per finished epoch     |
| nnserve:job:{id}:checkpoint           | string     | npz: weights, optimizer and RNG state, epoch (engine)   |
| nnserve:model:{id}                    | hash       | metadata: specs, metrics, input/output, status, tenant  |
| nnserve:model:{id}:weights            | string     | npz written by ``engine.dumps`` (no pickle)             |
| nnserve:model:{id}:inference          | hash       | /v2 inference counts and nanoseconds (OIP statistics)   |
| nnserve:tenant:{tenant}:{kind}        | sorted set | dataset / job / model ids by creation time              |
| nnserve:tenant:{tenant}:active_jobs   | set        | ids of jobs that may be queued or running (with a limit) |
| nnserve:stats:jobs                    | hash       | number of jobs in each status (for /metrics)            |
| nnserve:sweep:{id}                    | hash       | a sweep: status, its request, best so far, tenant ...   |
| nnserve:sweep:{id}:trials             | list       | JSON per trial in order: number, job id, parameters     |
| nnserve:sweep:{id}:journal            | list       | Optuna's journal of the sweep's study (JSON per entry)  |
| nnserve:sweep:{id}:lock               | string     | held while one process advances the sweep               |
| nnserve:stats:job_durations           | hash       | jobs' run times as histogram buckets per end status     |
| nnserve:idempotency:{tenant}:{sha256} | string     | JSON: a POST's fingerprint and response, by its key     |
| nnserve:ratelimit:{scope}:{who}       | hash       | requests per tenth of the sliding window (expires with it) |
| nnserve:events:models (pub/sub)       | channel    | ids of deleted models, so API processes drop them       |
| nnserve:registry:{tenant}:{name}      | hash       | a registered name: next_version, created_at, updated_at |
| nnserve:registry:{tenant}:{name}:versions | hash   | version number → model id (ready models only)           |
| nnserve:registry:{tenant}:{name}:aliases  | hash   | alias → JSON target: a version, a split or a shadow pair |
| nnserve:registry:{tenant}:{name}:events   | list   | JSON alias moves, newest first (bounded)                |
| nnserve:registry:{tenant}:{name}:shadow   | list   | JSON shadow comparisons, newest first (bounded)         |
| nnserve:tenant:{tenant}:registry      | sorted set | registered names by last change                         |
| nnserve:events:registry (pub/sub)     | channel    | ``tenant/name`` of each name whose versions or aliases changed |
| nnserve:apikeys                       | hash       | SHA-256 (hex) of each stored API key: JSON id, tenant, scopes, created_at, revoked_at |
| nnserve:events:keys (pub/sub)         | channel    | SHA-256 (hex) of each key created or revoked            |
| rq:*                                  | RQ's own   | the ``nnserve`` queue and its registries                |

Hash fields hold JSON values, so numbers, lists and null come back as they went in.
The built-in datasets are not stored: they come from ``service.builtin``. Job status
changes go through one Lua script (``transition``), so they are atomic and the per-status
counts stay true; which moves exist is ``service.lifecycle``'s business, not this module's.
Every Lua script is registered once (``_script``) and run by its SHA1. This module imports
redis and NumPy only (never Flask): the API and the worker share it, each passing its own
Redis client.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol, cast

import numpy as np
import orjson
import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.commands.core import Script
from redis.connection import parse_url
from redis.driver_info import DriverInfo
from redis.retry import Retry
from redis.sentinel import Sentinel

from nnserve.engine import archive
from nnserve.engine.archive import Chunks

from . import builtin

PREFIX = "nnserve"
PUBLIC = "public"
"""The tenant of every record while the service runs without API keys."""
MODEL_EVENTS = f"{PREFIX}:events:models"
"""Pub/sub channel carrying the id of each deleted model."""
JOB_STATS = f"{PREFIX}:stats:jobs"
JOB_DURATIONS = f"{PREFIX}:stats:job_durations"
JOB_DURATION_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
"""Upper bounds, in seconds, of the job run-time histogram (``/metrics``)."""
RETRY_BACKOFF_CAP = 2.0
"""Seconds, at most, between a worker's attempts at a Redis command while Redis is unreachable."""

DATASETS, JOBS, MODELS = "datasets", "jobs", "models"
SWEEPS = "sweeps"


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


def inference_key(model_id: str) -> str:
    return f"{PREFIX}:model:{model_id}:inference"


def weights_key(model_id: str) -> str:
    return f"{PREFIX}:model:{model_id}:weights"


def sweep_key(sweep_id: str) -> str:
    return f"{PREFIX}:sweep:{sweep_id}"


def sweep_trials_key(sweep_id: str) -> str:
    return f"{PREFIX}:sweep:{sweep_id}:trials"


def sweep_journal_key(sweep_id: str) -> str:
    return f"{PREFIX}:sweep:{sweep_id}:journal"


def sweep_lock_key(sweep_id: str) -> str:
    return f"{PREFIX}:sweep:{sweep_id}:lock"


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


TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,  # refused, reset, and Sentinel's MasterNotFoundError
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,  # a primary demoted by a failover, until we reconnect to the new one
)
"""Errors that pass when Redis comes back or a failover ends: worth waiting out, never a job's fault."""


class Client(redis.Redis):
    """redis-py's client, which also knows a full Redis in the words of Redis 6: a write refused inside
    a Lua script comes back from it as ``Error running script ...: -OOM command not allowed ...``, which
    redis-py takes for a plain ResponseError; Redis 7 says ``OOM ...``, an OutOfMemoryError. Read here,
    inside redis-py's retry loop, so both retry and fail alike."""

    def parse_response(self, connection, command_name, **options):
        try:
            return super().parse_response(connection, command_name, **options)
        except redis.exceptions.ResponseError as error:
            if type(error) is redis.exceptions.ResponseError and "-OOM command not allowed" in str(error):
                raise redis.exceptions.OutOfMemoryError(str(error)) from None
            raise


class RedisSettings(Protocol):
    """What ``connect`` reads of ``service.settings.Settings`` (named here, so this module imports no settings)."""

    # Read-only properties: the settings object is frozen.
    @property
    def redis_url(self) -> str: ...
    @property
    def redis_timeout(self) -> float: ...
    @property
    def redis_sentinels(self) -> tuple[tuple[str, int], ...]: ...
    @property
    def redis_sentinel_master(self) -> str | None: ...
    @property
    def redis_sentinel_password(self) -> Any: ...  # a pydantic SecretStr, or None
    @property
    def redis_sentinel_tls(self) -> bool: ...


def connect(settings: RedisSettings, retry_window: float = 0.0) -> redis.Redis:
    """A client whose every connect and command gives up after ``redis_timeout`` seconds, so an
    unreachable Redis turns into a quick 503 rather than a hung request: one retry, no backoff.

    With a ``retry_window`` (workers), a command that fails to connect, times out or is refused
    because Redis is full (OOM) is tried again with exponential backoff for about that many seconds,
    so a Redis restart or a full Redis only pauses training. Our job writes do no harm when repeated
    (see ``record_epoch``); a refused write did nothing; a duplicate that RQ might enqueue that way is
    stopped by the job's lease (see ``lifecycle.start``).

    With ``redis_sentinels``, the client asks those Sentinels for the primary of ``redis_sentinel_master``
    on every new connection, so after a failover it reconnects to the promoted replica by itself. The
    primary's password, user, database and TLS still come from ``redis_url`` (its host is not used)."""
    retry = Retry(NoBackoff(), 1)
    if retry_window > 0:
        backoff, attempts, waited = ExponentialBackoff(cap=RETRY_BACKOFF_CAP, base=0.05), 0, 0.0
        while waited < retry_window:
            attempts += 1
            waited += backoff.compute(attempts)
        retry = Retry(backoff, attempts, supported_errors=(*TRANSIENT_ERRORS, redis.exceptions.OutOfMemoryError))
    options: dict[str, Any] = {
        "socket_connect_timeout": settings.redis_timeout,
        "socket_timeout": settings.redis_timeout,
        "retry": retry,
        "health_check_interval": 30,
        # Without it every new connection reads redis-py's version from the package metadata on
        # disk (~2 ms): a worker's work horse opens a fresh one for each job, on the way to running.
        "driver_info": DriverInfo(lib_version=redis.__version__),
    }
    if not settings.redis_sentinels:
        return Client.from_url(settings.redis_url, **options)
    url = parse_url(settings.redis_url)
    for name in ("username", "password", "db"):
        if url.get(name) is not None:
            options[name] = url[name]
    if url.get("connection_class") is redis.SSLConnection:
        options["ssl"] = True
    password = settings.redis_sentinel_password
    sentinel_options = {
        "socket_connect_timeout": settings.redis_timeout,
        "socket_timeout": settings.redis_timeout,
        "password": password.get_secret_value() if password is not None else None,
        "ssl": settings.redis_sentinel_tls,
    }
    sentinel = Sentinel(list(settings.redis_sentinels), sentinel_kwargs=sentinel_options, **options)
    return sentinel.master_for(settings.redis_sentinel_master, redis_class=Client, **options)


class Memory(NamedTuple):
    """What Redis says of its memory (``INFO memory``): bytes used, the limit (0: none), the eviction policy."""

    used: int
    limit: int
    policy: str

    @property
    def full(self) -> bool:
        """True when writes are refused (noeviction) or evict something (any other policy)."""
        return 0 < self.limit <= self.used

    @property
    def evicting(self) -> bool:
        return self.policy != SAFE_EVICTION_POLICY


SAFE_EVICTION_POLICY = "noeviction"
"""The only ``maxmemory-policy`` under which Redis never drops a key: any other would silently lose
queued jobs, datasets or models once memory runs out."""


def memory(r: redis.Redis) -> Memory:
    info = r.info("memory")
    return Memory(int(info["used_memory"]), int(info.get("maxmemory", 0)), str(info.get("maxmemory_policy", "")))


def eviction_warning(policy: str) -> str:
    return (
        f"Redis's maxmemory-policy is {policy!r}: once its memory is full it evicts keys, and queued jobs, "
        f"datasets and models vanish without an error. Set it to {SAFE_EVICTION_POLICY!r} "
        f"(redis-server --maxmemory-policy {SAFE_EVICTION_POLICY}, or CONFIG SET), or accept the risk with "
        "NNSERVE_ALLOW_EVICTION=1"
    )


def is_cluster(r: redis.Redis) -> bool:
    """True for a Redis Cluster node (which nnserve cannot use: RQ does not support Cluster)."""
    return bool(r.info("cluster").get("cluster_enabled"))


def new_id(kind: str) -> str:
    """``ds_…``, ``job_…`` or ``mdl_…``: the prefix keeps ids readable and apart from built-in names."""
    return f"{kind}_{secrets.token_hex(8)}"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# Encoding ------------------------------------------------------------------------------


# Our clients never decode responses (decode_responses is off), so Redis answers bytes; redis-py's
# types allow str too, which the helpers below accept and narrow.
Raw = bytes | str


def _text(value: Any) -> str:
    """A Redis reply as text (it is bytes from our clients)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _bytes(value: Any) -> bytes | None:
    """A Redis reply that is a stored blob, or None when the key is missing."""
    return None if value is None else value if isinstance(value, bytes) else str(value).encode()


def _encode(record: Mapping[str, Any]) -> dict[Any, bytes]:
    return {k: orjson.dumps(v, option=orjson.OPT_SERIALIZE_NUMPY) for k, v in record.items()}


def _decode(raw: Mapping[Any, Any]) -> dict[str, Any] | None:
    return {_text(k): orjson.loads(v) for k, v in raw.items()} if raw else None


def _owned(record: dict[str, Any] | None, tenant: str) -> dict[str, Any] | None:
    return record if record is not None and record.get("tenant") == tenant else None


def _fetch_many(r: redis.Redis, key: Callable[[str], str], ids: Iterable[str]) -> list[dict[str, Any]]:
    with r.pipeline(transaction=False) as pipe:
        for record_id in ids:
            pipe.hgetall(key(record_id))
        return [record for record in map(_decode, pipe.execute()) if record is not None]


def _page(r: redis.Redis, tenant: str, kind: str, offset: int, limit: int) -> list[str]:
    """Ids newest first."""
    return [_text(i) for i in r.zrevrange(index_key(tenant, kind), offset, offset + limit - 1)]


def count(r: redis.Redis, tenant: str, kind: str) -> int:
    """How many datasets, jobs or models (``kind``) the tenant has; datasets count the built-ins too."""
    return r.zcard(index_key(tenant, kind)) + (len(builtin.NAMES) if kind == DATASETS else 0)


def _score(created_at: str) -> float:
    return datetime.fromisoformat(created_at).timestamp()


def _script(text: str) -> Script:
    """A Lua script, registered once for every client: redis-py's ``Script`` runs it by its SHA1
    (EVALSHA), so its text crosses the network only when a server does not know it yet (it answers
    NOSCRIPT after a restart or a SCRIPT FLUSH; the script is then loaded and run again). Given as
    bytes, the text needs no client to encode it; each call names its client."""
    return Script(None, text.encode())  # type: ignore[arg-type]  # the client only encodes str text


# Datasets ------------------------------------------------------------------------------


def save_dataset(
    r: redis.Redis,
    meta: dict[str, Any],
    features: np.ndarray | Chunks,
    targets: np.ndarray | Chunks,
    also: Callable[[Any], None] | None = None,
) -> None:
    """Store a dataset in one transaction, with the commands ``also(pipeline)`` adds (an idempotency record).
    Arrays given as Chunks are packed piece by piece (see ``pack_arrays``)."""
    with r.pipeline() as pipe:
        pipe.hset(dataset_key(meta["id"]), mapping=_encode(meta))
        set_blob(pipe, arrays_key(meta["id"]), archive.pack({"features": features, "targets": targets}))
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
    blob = get_blob(r, arrays_key(dataset_id))
    if blob is None:
        return None
    arrays, _ = archive.unpack(blob, "dataset")
    del blob
    return arrays["features"], arrays["targets"]


BLOB_PIECE_BYTES = 512 * 1024 * 1024
"""Largest blob kept as one string: Redis's limit on a string (``proto-max-bulk-len``, 512 MiB by
default). A larger one is a list of pieces of this size."""


def set_blob(pipe: Any, key: str, blob: bytes) -> None:
    """Queue the commands that store ``blob`` under ``key``: a string, or a list of pieces when it is
    larger than one string may be. The pieces are views of ``blob``, not copies."""
    if len(blob) <= BLOB_PIECE_BYTES:
        pipe.set(key, blob)
        return
    pipe.delete(key)
    view = memoryview(blob)
    for start in range(0, len(blob), BLOB_PIECE_BYTES):
        pipe.rpush(key, view[start : start + BLOB_PIECE_BYTES])  # one piece a command: each within Redis's limits


def get_blob(r: redis.Redis, key: str) -> bytes | None:
    """What ``set_blob`` stored under ``key``, or None. A large blob's pieces are joined: the reader
    holds it twice for the moment it takes."""
    try:
        return _bytes(r.get(key))
    except redis.exceptions.ResponseError as error:
        if "WRONGTYPE" not in str(error):
            raise
    pieces = cast(list[bytes], r.lrange(key, 0, -1))
    return b"".join(pieces) if pieces else None


def list_datasets(r: redis.Redis, tenant: str, offset: int = 0, limit: int = 100) -> list[dict[str, Any]]:
    """Built-ins first, then the tenant's datasets newest first."""
    builtins = [builtin.load(name)[0] for name in builtin.NAMES]
    shown = builtins[offset : offset + limit]
    start = max(0, offset - len(builtins))
    remaining = limit - len(shown)
    if remaining > 0:
        shown += _fetch_many(r, dataset_key, _page(r, tenant, DATASETS, start, remaining))
    return shown


# Deletes a record: its keys, then its id from an index, then (if ARGV[2] is not empty)
# publishes ARGV[1] on that channel. A script, not MULTI: Redis refuses every command queued
# in a MULTI while it is full, but lets a script delete (DEL is allowed over maxmemory), and
# deleting is how room is made. KEYS: index, then the record's keys. ARGV: id, channel or "".
_DELETE = _script("""
redis.call('DEL', unpack(KEYS, 2))
redis.call('ZREM', KEYS[1], ARGV[1])
if ARGV[2] ~= '' then redis.call('PUBLISH', ARGV[2], ARGV[1]) end
return 1
""")


def delete_dataset(r: redis.Redis, meta: dict[str, Any]) -> None:
    """Delete the dataset; works on a full Redis too."""
    keys = [index_key(meta["tenant"], DATASETS), dataset_key(meta["id"]), arrays_key(meta["id"])]
    _DELETE(keys=keys, args=[meta["id"], ""], client=r)


# Jobs ----------------------------------------------------------------------------------


class LeaseLost(Exception):
    """Another attempt has taken the job over (its worker was presumed dead); this one must stop
    without writing anything more."""


# Moves a job by the first of one or more steps whose allowed statuses hold its status: sets
# the step's fields, counts the move in JOB_STATS, sets the model's status and drops the job's
# checkpoint if the step says so, all in one step. KEYS: job, stats, model, checkpoint.
# ARGV: lease ("" = whoever holds the job), then each step: new status, model status ("" =
# leave), "1" to drop the checkpoint (else "0"), n allowed, allowed..., n fields, then that
# many field/value pairs. Returns {i, old} when step i (from 1) was applied, {0, current} when
# none applies or another lease holds the job, nil when there is no such job.
# The checkpoint goes first: on a full Redis (maxmemory, noeviction) a script is refused only at
# its first write, and once it has written it runs to the end (Redis cannot stop a script half
# way), so a job can still be failed or canceled on a full store, freeing its checkpoint.
_TRANSITION = _script("""
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return nil end
if ARGV[1] ~= '' and redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] then return {0, current} end
local i, step = 2, 0
while i <= #ARGV do
  step = step + 1
  local to, model, drop, n = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local allowed = false
  for j = i + 4, i + 3 + n do
    if ARGV[j] == current then allowed = true end
  end
  local counted = i + 4 + n
  local n_fields = tonumber(ARGV[counted])
  if allowed then
    if drop == '1' then redis.call('DEL', KEYS[4]) end
    for f = counted + 1, counted + 2 * n_fields, 2 do
      redis.call('HSET', KEYS[1], ARGV[f], ARGV[f + 1])
    end
    if to ~= current then
      redis.call('HSET', KEYS[1], 'status', to)
      redis.call('HINCRBY', KEYS[2], current, -1)
      redis.call('HINCRBY', KEYS[2], to, 1)
    end
    if model ~= '' and redis.call('EXISTS', KEYS[3]) == 1 then
      redis.call('HSET', KEYS[3], 'status', model)
    end
    return {step, current}
  end
  i = counted + 1 + 2 * n_fields
end
return {0, current}
""")

# Records one finished epoch for the attempt holding ``lease``. The history is first cut to
# ``epoch`` entries, so a call retried through a dropped connection never logs an epoch twice.
# KEYS: job, history. ARGV: lease, epoch (0-based), logs. Returns -1 when another attempt
# holds the job, else 1 when a cancel was asked for, else 0.
_RECORD_EPOCH = _script("""
if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] then return -1 end
local epoch = tonumber(ARGV[2])
if epoch == 0 then redis.call('DEL', KEYS[2]) else redis.call('LTRIM', KEYS[2], 0, epoch - 1) end
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[1], 'epoch', epoch + 1)
if redis.call('HGET', KEYS[1], 'cancel_requested') == 'true' then return 1 end
return 0
""")

# Stores a checkpoint for the attempt holding ``lease``. KEYS: job, checkpoint.
# ARGV: lease, blob, epochs it covers. Returns 0 when another attempt holds the job.
_SAVE_CHECKPOINT = _script("""
if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[1], 'checkpoint_epoch', ARGV[3])
return 1
""")


class Step(NamedTuple):
    """One move ``transition`` may make: from any status in ``allowed`` to ``to``, writing ``fields``,
    setting the model's status to ``model_status`` (None: leave it), dropping the job's checkpoint."""

    allowed: Collection[str]
    to: str
    fields: Mapping[str, Any] | None = None
    model_status: str | None = None
    drop_checkpoint: bool = False


def transition(
    r: redis.Redis, job: Mapping[str, Any], steps: Sequence[Step], lease: str | None = None
) -> tuple[int | None, str | None]:
    """Move ``job`` by the first of ``steps`` that applies to its status (and, given a ``lease``, only
    while the lease holds it), atomically: ``(index of the step applied or None, the status it was in)``,
    the status None when there is no such job."""
    args: list[bytes | int | str] = [orjson.dumps(lease) if lease else b""]
    for step in steps:
        allowed = [orjson.dumps(status) for status in step.allowed]
        fields = _encode(dict(step.fields or {}))
        args += [orjson.dumps(step.to), orjson.dumps(step.model_status) if step.model_status else b""]
        args += [b"1" if step.drop_checkpoint else b"0", len(allowed), *allowed, len(fields)]
        for name, value in fields.items():
            args += [name, value]
    keys = [job_key(job["id"]), JOB_STATS, model_key(job["model_id"]), checkpoint_key(job["id"])]
    result = _TRANSITION(keys=keys, args=args, client=r)
    if result is None:
        return None, None
    return (int(result[0]) - 1 if result[0] else None), orjson.loads(result[1])


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
    active: Collection[str] = (),
) -> None:
    """Store a new job and its (untrained) model, and enqueue it, in one transaction:
    ``enqueue(pipeline)`` adds the queue's own commands, ``also(pipeline)`` others (an idempotency record).

    With ``max_active``, raises ActiveJobLimit (storing nothing) when the tenant already has that
    many jobs in an ``active`` status (``lifecycle.ACTIVE``). The count is WATCHed and the job joins
    it in the same transaction, so concurrent submissions cannot overshoot the limit."""
    active_key = active_jobs_key(job["tenant"])
    with r.pipeline() as pipe:
        while True:
            try:
                if max_active:
                    pipe.watch(active_key)
                    finished = _finished_jobs(r, pipe, active_key, max_active, active)
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


def _finished_jobs(r: redis.Redis, watching: Any, active_key: str, limit: int, active: Collection[str]) -> list[bytes]:
    """Ids in ``active_key`` whose jobs are in no ``active`` status (they finished, or are gone), to drop
    from it; raises ActiveJobLimit when the others already number ``limit``.

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
    finished = [job_id for job_id, status in zip(ids, statuses) if status is None or orjson.loads(status) not in active]
    if len(ids) - len(finished) >= limit:
        raise ActiveJobLimit(len(ids) - len(finished), limit)
    return finished


def get_job(r: redis.Redis, job_id: str, tenant: str | None = None) -> dict[str, Any] | None:
    """The job record (any tenant's when ``tenant`` is None, as the worker needs)."""
    record = _decode(r.hgetall(job_key(job_id)))
    return record if tenant is None else _owned(record, tenant)


def list_jobs(r: redis.Redis, tenant: str, offset: int = 0, limit: int = 100) -> list[dict[str, Any]]:
    return _fetch_many(r, job_key, _page(r, tenant, JOBS, offset, limit))


# Deletes a job unless it is in one of the statuses given (those that may still train): its record,
# history and checkpoint, its place in the tenant's index and in the per-status counts.
# KEYS: job, history, checkpoint, index, stats. ARGV: job id, then the kept statuses (JSON).
# Returns {1, status} when deleted, {0, status} when the job is in a kept status, nil when there is
# no such job.
_DELETE_JOB = _script("""
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return nil end
for i = 2, #ARGV do
  if ARGV[i] == status then return {0, status} end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('HINCRBY', KEYS[5], status, -1)
return {1, status}
""")


def delete_job(r: redis.Redis, job: Mapping[str, Any], keep: Collection[str]) -> tuple[bool, str | None]:
    """Delete ``job`` unless its status is in ``keep`` (``lifecycle.ACTIVE``; its model is left alone);
    returns (deleted, status)."""
    keys = [job_key(job["id"]), history_key(job["id"]), checkpoint_key(job["id"]), index_key(job["tenant"], JOBS)]
    result = _DELETE_JOB(keys=[*keys, JOB_STATS], args=[job["id"], *(orjson.dumps(s) for s in keep)], client=r)
    if result is None:
        return False, None
    return bool(result[0]), orjson.loads(result[1])


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


def record_epoch(r: redis.Redis, job_id: str, lease: str, epoch: int, logs: dict[str, float]) -> bool:
    """Append one epoch's logs, advance the progress, and say whether a cancel was asked for (one round trip).
    Raises LeaseLost when another attempt holds the job."""
    logs_json = orjson.dumps(logs, option=orjson.OPT_SERIALIZE_NUMPY)
    keys = [job_key(job_id), history_key(job_id)]
    result = _RECORD_EPOCH(keys=keys, args=[orjson.dumps(lease), epoch, logs_json], client=r)
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
    keys = [job_key(job_id), checkpoint_key(job_id)]
    if not _SAVE_CHECKPOINT(keys=keys, args=[orjson.dumps(lease), blob, epoch], client=r):
        raise LeaseLost(job_id)


def load_checkpoint(r: redis.Redis, job_id: str) -> tuple[bytes, int] | None:
    """``(checkpoint bytes, epochs it covers)``, or None."""
    with r.pipeline(transaction=False) as pipe:
        pipe.get(checkpoint_key(job_id))
        pipe.hget(job_key(job_id), "checkpoint_epoch")
        blob, epoch = pipe.execute()
    return (blob, int(epoch)) if blob is not None and epoch is not None else None


def save_model(
    r: redis.Redis, job: Mapping[str, Any], weights: bytes, fields: dict[str, Any], epochs: list[dict[str, float]]
) -> None:
    """Store the trained weights, metadata and the whole history (``epochs``: one dict of logs each, as
    training kept them, which heals any epoch record lost with a Redis restart); ``lifecycle.succeed``
    then marks job and model succeeded/ready if its lease still holds the job. Another attempt that
    took over trains the same model from the same checkpoint, so writing the weights before that
    check is harmless."""
    with r.pipeline() as pipe:
        pipe.set(weights_key(job["model_id"]), weights)
        pipe.hset(model_key(job["model_id"]), mapping=_encode(fields))
        pipe.delete(history_key(job["id"]))
        if epochs:
            pipe.rpush(
                history_key(job["id"]), *(orjson.dumps(logs, option=orjson.OPT_SERIALIZE_NUMPY) for logs in epochs)
            )
        pipe.execute()


def import_model(r: redis.Redis, record: dict[str, Any], weights: bytes) -> None:
    """Store a model trained elsewhere (``lifecycle.import_model``): its record, weights and index entry,
    in one transaction."""
    with r.pipeline() as pipe:
        pipe.multi()
        pipe.set(weights_key(record["id"]), weights)
        pipe.hset(model_key(record["id"]), mapping=_encode(record))
        pipe.zadd(index_key(record["tenant"], MODELS), {record["id"]: _score(record["created_at"])})
        pipe.execute()


def record_duration(r: redis.Redis, job_id: str, status: str) -> None:
    """Count the run time of a job that just ended with ``status`` (from its start to its end) in
    the cluster-wide histogram; nothing for a job that never started."""
    started, finished = (orjson.loads(v) if v else None for v in r.hmget(job_key(job_id), "started_at", "finished_at"))
    if started is None or finished is None:
        return
    seconds = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    with r.pipeline(transaction=False) as pipe:
        for bound in JOB_DURATION_BUCKETS:
            if seconds <= bound:
                pipe.hincrby(JOB_DURATIONS, f"{status}:{bound}", 1)
        pipe.hincrby(JOB_DURATIONS, f"{status}:count", 1)
        pipe.hincrbyfloat(JOB_DURATIONS, f"{status}:sum", seconds)
        # A full Redis refuses these writes; the job has ended all the same, and a metric is not worth
        # failing its end over.
        with contextlib.suppress(redis.exceptions.OutOfMemoryError):
            pipe.execute()


def job_durations(r: redis.Redis) -> dict[str, dict[str, float]]:
    """The run-time histogram per end status: ``{status: {"1": count ≤ 1 s, ..., "count", "sum"}}``,
    bucket counts cumulative."""
    histograms: dict[str, dict[str, float]] = {}
    for field, value in r.hgetall(JOB_DURATIONS).items():
        status, _, name = (field.decode() if isinstance(field, bytes) else field).partition(":")
        histograms.setdefault(status, {})[name] = float(value)
    return histograms


def job_counts(r: redis.Redis) -> dict[str, int]:
    return {orjson.loads(k): int(v) for k, v in r.hgetall(JOB_STATS).items()}


# Sweeps --------------------------------------------------------------------------------


def create_sweep(r: redis.Redis, sweep: dict[str, Any], also: Callable[[Any], None] | None = None) -> None:
    """Store a new sweep record and index it for its tenant, in one transaction with ``also(pipeline)``."""
    with r.pipeline() as pipe:
        pipe.hset(sweep_key(sweep["id"]), mapping=_encode(sweep))
        pipe.zadd(index_key(sweep["tenant"], SWEEPS), {sweep["id"]: _score(sweep["created_at"])})
        if also is not None:
            also(pipe)
        pipe.execute()


def get_sweep(r: redis.Redis, sweep_id: str, tenant: str | None = None) -> dict[str, Any] | None:
    """The sweep record (any tenant's when ``tenant`` is None, as the worker needs)."""
    record = _decode(r.hgetall(sweep_key(sweep_id)))
    return record if tenant is None else _owned(record, tenant)


def list_sweeps(r: redis.Redis, tenant: str, offset: int = 0, limit: int = 100) -> list[dict[str, Any]]:
    return _fetch_many(r, sweep_key, _page(r, tenant, SWEEPS, offset, limit))


def update_sweep(r: redis.Redis, sweep_id: str, fields: Mapping[str, Any]) -> None:
    r.hset(sweep_key(sweep_id), mapping=_encode(fields))


def sweep_trials(r: redis.Redis, sweep_id: str) -> list[dict[str, Any]]:
    """The sweep's trials in the order they were asked for: ``{number, job_id, parameters}`` (``job_id``
    None and an ``error`` for a sampled trial that was not a valid job)."""
    return [orjson.loads(item) for item in r.lrange(sweep_trials_key(sweep_id), 0, -1)]


def add_sweep_trial(pipe: Any, sweep_id: str, trial: Mapping[str, Any]) -> None:
    """Add to ``pipe`` (the transaction that creates the trial's job) the trial's entry."""
    pipe.rpush(sweep_trials_key(sweep_id), orjson.dumps(trial, option=orjson.OPT_SERIALIZE_NUMPY))


def trial_jobs(r: redis.Redis, job_ids: Sequence[str]) -> list[dict[str, Any] | None]:
    """The job records of a sweep's trials, in one round trip (None for a job deleted since)."""
    with r.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hgetall(job_key(job_id))
        return [_decode(raw) for raw in pipe.execute()]


def last_epochs(r: redis.Redis, job_ids: Sequence[str]) -> list[dict[str, float] | None]:
    """The last logged epoch of each job (None before its first), in one round trip."""
    with r.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.lindex(history_key(job_id), -1)
        return [orjson.loads(line) if line is not None else None for line in pipe.execute()]


def append_journal(r: redis.Redis, sweep_id: str, entries: Sequence[bytes]) -> None:
    """Append Optuna journal entries (JSON each) in one atomic RPUSH: their order is the journal's."""
    if entries:
        r.rpush(sweep_journal_key(sweep_id), *entries)


def read_journal(r: redis.Redis, sweep_id: str, start: int) -> list[bytes]:
    """The journal's entries from ``start`` (0-based) on."""
    return [_bytes(item) or b"" for item in r.lrange(sweep_journal_key(sweep_id), start, -1)]


# Models --------------------------------------------------------------------------------


def get_model(r: redis.Redis, model_id: str, tenant: str) -> dict[str, Any] | None:
    return _owned(_decode(r.hgetall(model_key(model_id))), tenant)


def get_model_record(r: redis.Redis, model_id: str) -> dict[str, Any] | None:
    """The model record, whatever its tenant (for background work that checked the tenant already)."""
    return _decode(r.hgetall(model_key(model_id)))


def models_by_id(r: redis.Redis, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The model records of ``ids`` that exist, by id (one round trip)."""
    return {record["id"]: record for record in _fetch_many(r, model_key, ids)}


def list_models(r: redis.Redis, tenant: str, offset: int = 0, limit: int = 100) -> list[dict[str, Any]]:
    return _fetch_many(r, model_key, _page(r, tenant, MODELS, offset, limit))


def load_weights(r: redis.Redis, model_id: str) -> bytes | None:
    return _bytes(r.get(weights_key(model_id)))


def delete_model(r: redis.Redis, model: dict[str, Any]) -> None:
    """Delete the model and tell every API process to drop it from its cache; works on a full Redis too."""
    keys = [
        index_key(model["tenant"], MODELS),
        model_key(model["id"]),
        weights_key(model["id"]),
        inference_key(model["id"]),
    ]
    _DELETE(keys=keys, args=[model["id"], MODEL_EVENTS], client=r)


INFERENCE_FIELDS = ("success_count", "success_ns", "fail_count", "fail_ns", "inference_count", "last_inference")


def count_inference(r: redis.Redis, model_id: str, ok: bool, nanoseconds: int, rows: int) -> None:
    """Add one inference request to the model's statistics, shared by every API process: its outcome and
    time, the rows it predicted, and when (ms since the epoch, as Triton reports ``last_inference``)."""
    outcome = "success" if ok else "fail"
    with r.pipeline(transaction=False) as pipe:
        pipe.hincrby(inference_key(model_id), f"{outcome}_count", 1)
        pipe.hincrby(inference_key(model_id), f"{outcome}_ns", nanoseconds)
        if ok:
            pipe.hincrby(inference_key(model_id), "inference_count", rows)
            pipe.hset(inference_key(model_id), "last_inference", int(datetime.now(UTC).timestamp() * 1000))
        pipe.execute()


def inference_statistics(r: redis.Redis, model_ids: Sequence[str]) -> list[dict[str, int]]:
    """Each model's ``INFERENCE_FIELDS`` (0 where it has none yet), in the order of ``model_ids``."""
    with r.pipeline(transaction=False) as pipe:
        for model_id in model_ids:
            pipe.hmget(inference_key(model_id), INFERENCE_FIELDS)
        rows = pipe.execute()
    return [{field: int(value or 0) for field, value in zip(INFERENCE_FIELDS, row)} for row in rows]


# Limits and idempotency ------------------------------------------------------------------

RATE_BUCKETS = 10
"""Buckets a rate-limit window is counted in: the window slides by a tenth of its length."""

# Counts a request against a sliding window of ARGV[2] ms, allowing at most ARGV[1] requests in
# any such span of time. The counter is a hash of request counts per bucket (ARGV[3] buckets per
# window, numbered by Redis's clock). A bucket still counts in full while any part of it lies in
# the window, so the count can only err high: no span of one window ever holds more than the
# limit, across a window's edge included, which a fixed window (INCR + EXPIRE) allows twice over;
# memory stays at most ARGV[3] + 1 fields, where a log of timestamps would keep one per request.
# A refused request is not counted. Redis's own TIME keeps every API process on one clock.
# KEYS: counter. Returns {1 allowed | 0 refused, requests in the window, ms until the oldest
# counted bucket leaves it}.
_COUNT_REQUEST = _script("""
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local window = tonumber(ARGV[2])
local size = window / tonumber(ARGV[3])
local current = math.floor(now / size)
local oldest = math.floor((now - window) / size)
local counts = redis.call('HGETALL', KEYS[1])
local total, first = 0, current
for i = 1, #counts, 2 do
  local bucket = tonumber(counts[i])
  if bucket < oldest then
    redis.call('HDEL', KEYS[1], counts[i])
  else
    total = total + tonumber(counts[i + 1])
    if bucket < first then first = bucket end
  end
end
local allowed = 0
if total < tonumber(ARGV[1]) then
  redis.call('HINCRBY', KEYS[1], current, 1)
  redis.call('PEXPIRE', KEYS[1], window + size)
  total = total + 1
  allowed = 1
end
return {allowed, total, (first + 1) * size + window - now}
""")


def count_request(r: redis.Redis, scope: str, who: str, limit: int, seconds: int) -> tuple[bool, int, float]:
    """Count one request of ``who`` unless ``limit`` requests already lie in the ``seconds`` before
    it (one round trip): ``(allowed, requests in the window, seconds until the window frees one)``."""
    allowed, count, reset = _COUNT_REQUEST(
        keys=[rate_key(scope, who)], args=[limit, seconds * 1000, RATE_BUCKETS], client=r
    )
    return bool(allowed), int(count), int(reset) / 1000


# Takes an idempotency key for one request, as SET NX would, unless it is taken: then the
# record already there is returned (a finished response, or a request still in flight).
# (SET NX GET does both, but only from Redis 7; managed Redis is often older.)
# KEYS: idempotency key. ARGV: record, ms to keep it.
_RESERVE = _script("""
local existing = redis.call('GET', KEYS[1])
if existing then return existing end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
""")

# Deletes the key only if it still holds ARGV[1]: a finished response written over the
# reservation is kept. KEYS: idempotency key.
_RELEASE = _script("""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""")


# Extends the reservation's lease while the key still holds ARGV[1] (not yet replaced by the
# finished response, nor taken by another request after it lapsed). KEYS: idempotency key.
# ARGV: record, ms. Returns 1 when renewed.
_RENEW = _script("""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
""")


def renew_idempotency_key(r: redis.Redis, key: str, record: bytes, seconds: float) -> bool:
    """Keep ``key`` held by ``record`` for another ``seconds``; False when it no longer holds it."""
    return bool(_RENEW(keys=[key], args=[record, int(seconds * 1000)], client=r))


def reserve_idempotency_key(r: redis.Redis, key: str, record: bytes, seconds: float) -> bytes | None:
    """Hold ``key`` with ``record`` for ``seconds`` and return None; or, when it is already held,
    return what it holds (nothing is changed)."""
    return _RESERVE(keys=[key], args=[record, int(seconds * 1000)], client=r)


def release_idempotency_key(r: redis.Redis, key: str, record: bytes) -> None:
    """Free ``key`` if it still holds ``record`` (the request it was reserved for created nothing)."""
    _RELEASE(keys=[key], args=[record], client=r)


def keep_idempotent_response(pipe, key: str, record: bytes, seconds: int) -> None:
    """Add to ``pipe`` (the transaction creating the resource) the write of its response over the reservation."""
    pipe.set(key, record, ex=seconds)


# API keys made at run time ---------------------------------------------------------------

API_KEYS = f"{PREFIX}:apikeys"
"""Hash: the SHA-256 (hex) of each key made by ``nnserve keys create`` → its JSON record. A revoked key
keeps its record (with ``revoked_at``), so the table never empties once a key was made: see ``auth``."""
KEY_EVENTS = f"{PREFIX}:events:keys"
"""Pub/sub channel carrying the SHA-256 (hex) of each key created or revoked."""
TENANT = re.compile(r"[A-Za-z0-9_.-]{1,64}")
"""What a tenant may be called: tenants are part of key names, so never a ``:`` or a glob character."""


def save_api_key(r: redis.Redis, digest: str, record: dict[str, Any]) -> None:
    """Store (or replace) the key with SHA-256 ``digest`` (hex) and tell every API process."""
    with r.pipeline() as pipe:
        pipe.hset(API_KEYS, digest, orjson.dumps(record))
        pipe.publish(KEY_EVENTS, digest)
        pipe.execute()


def api_keys(r: redis.Redis) -> dict[str, dict[str, Any]]:
    """Every stored key's record, revoked ones included, by SHA-256 (hex)."""
    return {_text(digest): orjson.loads(record) for digest, record in r.hgetall(API_KEYS).items()}


def find_api_key(r: redis.Redis, digest: str | None) -> tuple[bool, dict[str, Any] | None]:
    """``(whether any key was ever stored, the record of the key with SHA-256 digest, or None)``, in one round trip."""
    with r.pipeline(transaction=False) as pipe:
        pipe.exists(API_KEYS)
        if digest is not None:
            pipe.hget(API_KEYS, digest)
        replies = pipe.execute()
    record = replies[1] if digest is not None else None
    return bool(replies[0]), orjson.loads(record) if record is not None else None


def revoke_api_key(r: redis.Redis, key_id: str) -> dict[str, Any] | None:
    """Mark the stored key ``key_id`` revoked (once) and tell every API process; its record, or None."""
    for digest, record in api_keys(r).items():
        if record["id"] == key_id:
            if record.get("revoked_at") is None:
                record["revoked_at"] = now()
                save_api_key(r, digest, record)
            return record
    return None


# The model registry ----------------------------------------------------------------------
#
# A registered name (``service.registry`` owns the grammar, references and routing) keeps its
# versions (number → model id) and its stored aliases (name → JSON target: ``3``, ``{"split":
# {"3": 90, "4": 10}}`` or ``{"version": 3, "shadow": 4, "sample": 1.0}``). ``latest`` is never
# stored: it is the highest version. Every change goes through one Lua script, so two jobs
# finishing together get distinct versions, and an alias move racing a delete never leaves an
# alias pointing at a version that is gone. Each script publishes ``tenant/name`` on
# REGISTRY_EVENTS, so every API process drops what it cached of the name.

REGISTRY = "registry"
"""The kind of the per-tenant index of registered names (``index_key(tenant, REGISTRY)``)."""
REGISTRY_EVENTS = f"{PREFIX}:events:registry"
"""Pub/sub channel carrying ``tenant/name`` of each registered name whose versions or aliases changed."""
ALIAS_EVENTS_KEPT = 100
"""Alias moves kept per name (the oldest are dropped)."""
SHADOW_KEPT = 1000
"""Shadow comparisons kept per name: the agreement is reported over these."""


def registry_key(tenant: str, name: str) -> str:
    return f"{PREFIX}:registry:{tenant}:{name}"


def versions_key(tenant: str, name: str) -> str:
    return f"{PREFIX}:registry:{tenant}:{name}:versions"


def aliases_key(tenant: str, name: str) -> str:
    return f"{PREFIX}:registry:{tenant}:{name}:aliases"


def alias_events_key(tenant: str, name: str) -> str:
    return f"{PREFIX}:registry:{tenant}:{name}:events"


def shadow_key(tenant: str, name: str) -> str:
    return f"{PREFIX}:registry:{tenant}:{name}:shadow"


def _name_keys(tenant: str, name: str) -> list[str]:
    """KEYS 1-5 of every registry script: the name, its versions, aliases, alias events, and the index."""
    return [
        registry_key(tenant, name),
        versions_key(tenant, name),
        aliases_key(tenant, name),
        alias_events_key(tenant, name),
        index_key(tenant, REGISTRY),
    ]


# Shared by the registry scripts (prepended to each). KEYS 1-5 as ``_name_keys``. ``move`` sets an
# alias and records the move; a move of ``current`` sets ``previous`` to where it pointed. ``touch``
# marks the name changed and tells every API process. Events are JSON built here: ``at`` and ``by``
# come in JSON-encoded, aliases follow the name grammar, targets are stored JSON.
_REGISTRY_LIB = """
local function record(alias, from, to, by, at, limit)
  redis.call('LPUSH', KEYS[4], '{"at":' .. at .. ',"alias":"' .. alias .. '","from":' .. (from or 'null')
    .. ',"to":' .. (to or 'null') .. ',"by":' .. by .. '}')
  redis.call('LTRIM', KEYS[4], 0, limit - 1)
end
local function move(alias, to, by, at, limit)
  local from = redis.call('HGET', KEYS[3], alias)
  if from == to then return end
  if to then redis.call('HSET', KEYS[3], alias, to) else redis.call('HDEL', KEYS[3], alias) end
  record(alias, from, to, by, at, limit)
  if alias == 'current' and from and to then
    local before = redis.call('HGET', KEYS[3], 'previous')
    if before ~= from then
      redis.call('HSET', KEYS[3], 'previous', from)
      record('previous', before, from, by, at, limit)
    end
  end
end
local function points_at(target, version)
  local t = cjson.decode(target)
  local v = tonumber(version)
  if type(t) == 'number' then return t == v end
  if t.split then
    for k, _ in pairs(t.split) do if tonumber(k) == v then return true end end
  end
  return t.version == v or t.shadow == v
end
local function touch(at, score, channel, payload)
  redis.call('HSETNX', KEYS[1], 'created_at', at)
  redis.call('HSET', KEYS[1], 'updated_at', at)
  redis.call('ZADD', KEYS[5], score, payload)
  redis.call('PUBLISH', channel, payload)
end
"""

# Gives a job's freshly trained model the next version of its name, if the attempt holding
# ``lease`` still holds the job and it is running (so it runs just before ``succeed``), and moves
# ``current`` to it by the job's decision. Run again for the same model it returns the version it
# gave (an attempt that took over trains the same model id). KEYS 1-5 as ``_name_keys``, then job,
# model. ARGV: lease, running status (JSON), model id, decision (``promote``: move current;
# ``keep``: move it only when there is none), by, at, score, events limit, channel, payload,
# promotion (JSON or ""). Returns the version, or -1 when the attempt no longer holds the job.
# A model with no job to hold (imported, or a sweep's winner, registered once it is ready) comes
# with an empty lease: then KEYS[6] is not read or written.
_REGISTER_VERSION = _script(
    _REGISTRY_LIB
    + """
local by_job = ARGV[1] ~= ''
if by_job and (redis.call('HGET', KEYS[6], 'lease') ~= ARGV[1] or redis.call('HGET', KEYS[6], 'status') ~= ARGV[2]) then
  return -1
end
local version = redis.call('HGET', KEYS[7], 'version')
if version then return tonumber(version) end
version = redis.call('HINCRBY', KEYS[1], 'next_version', 1)
redis.call('HSET', KEYS[2], version, ARGV[3])
redis.call('HSET', KEYS[7], 'version', version)
if by_job then redis.call('HSET', KEYS[6], 'version', version) end
if ARGV[11] ~= '' then
  if by_job then redis.call('HSET', KEYS[6], 'promotion', ARGV[11]) end
  redis.call('HSET', KEYS[7], 'promotion', ARGV[11])
end
if ARGV[4] == 'promote' or not redis.call('HGET', KEYS[3], 'current') then
  move('current', tostring(version), ARGV[5], ARGV[6], tonumber(ARGV[8]))
end
touch(ARGV[6], ARGV[7], ARGV[9], ARGV[10])
return version
"""
)

# Points an alias at a target, once every version it names exists. KEYS 1-5 as ``_name_keys``.
# ARGV: alias, target (JSON), by, at, score, events limit, channel, payload, then the versions the
# target names. Returns {0} for no such name, {1, version} for a version that does not exist, {2}.
_SET_ALIAS = _script(
    _REGISTRY_LIB
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
for i = 9, #ARGV do
  if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 0 then return {1, ARGV[i]} end
end
move(ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[6]))
touch(ARGV[4], ARGV[5], ARGV[7], ARGV[8])
return {2}
"""
)

# Removes a stored alias. KEYS 1-5 as ``_name_keys``. ARGV: alias, by, at, score, events limit,
# channel, payload. Returns 0 for no such name, 1 for no such alias, 2 when removed.
_DELETE_ALIAS = _script(
    _REGISTRY_LIB
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 0 then return 1 end
move(ARGV[1], false, ARGV[2], ARGV[3], tonumber(ARGV[5]))
touch(ARGV[3], ARGV[4], ARGV[6], ARGV[7])
return 2
"""
)

# Deletes one version and its model, unless stored aliases point at it and ARGV[3] is not "1"
# (then it only names them); with "1" those aliases go too. KEYS 1-5 as ``_name_keys``, then the
# models index, the model, its weights. ARGV: version, model id, force, by, at, score, events
# limit, channel, payload, model channel. Returns {0} when the version is not (or no longer) that
# model, {1, aliases...} when refused, {2, aliases removed...} when deleted.
_DELETE_VERSION = _script(
    _REGISTRY_LIB
    + """
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return {0} end
local pointing = {}
local all = redis.call('HGETALL', KEYS[3])
for i = 1, #all, 2 do
  if points_at(all[i + 1], ARGV[1]) then table.insert(pointing, all[i]) end
end
if #pointing > 0 and ARGV[3] ~= '1' then return {1, unpack(pointing)} end
for _, alias in ipairs(pointing) do move(alias, false, ARGV[4], ARGV[5], tonumber(ARGV[7])) end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[7], KEYS[8])
redis.call('ZREM', KEYS[6], ARGV[2])
touch(ARGV[5], ARGV[6], ARGV[8], ARGV[9])
redis.call('PUBLISH', ARGV[10], ARGV[2])
return {2, unpack(pointing)}
"""
)

# Deletes a name with all its versions' models, if its versions are exactly the models given
# (else a version was added meanwhile: returns 0, read them again). KEYS 1-5 as ``_name_keys``,
# then its shadow list, the models index, then each model's record and weights. ARGV: channel,
# payload, model channel, then the model ids. Returns 1 when deleted.
_DELETE_NAME = _script("""
local ids = {}
for i = 4, #ARGV do ids[ARGV[i]] = true end
local versions = redis.call('HVALS', KEYS[2])
if #versions ~= #ARGV - 3 then return 0 end
for _, id in ipairs(versions) do if not ids[id] then return 0 end end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[6])
redis.call('ZREM', KEYS[5], ARGV[2])
for i = 8, #KEYS do redis.call('DEL', KEYS[i]) end
for i = 4, #ARGV do
  redis.call('ZREM', KEYS[7], ARGV[i])
  redis.call('PUBLISH', ARGV[3], ARGV[i])
end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
""")


def _registry_payload(tenant: str, name: str) -> str:
    return f"{tenant}/{name}"


def register_version(
    r: redis.Redis,
    job: Mapping[str, Any],
    lease: str,
    running: str,
    decision: str,
    promotion: dict[str, Any] | None,
) -> int | None:
    """Give the job's model the next version of the job's name (see ``_REGISTER_VERSION``), while ``lease``
    holds the job and it is in the status ``running``; ``decision`` is ``promote`` or ``keep``. The
    version, or None when the lease no longer holds the running job."""
    return _register(
        r,
        job["tenant"],
        job["name"],
        job["model_id"],
        decision,
        promotion,
        by=f"job {job['id']}",
        held=(job_key(job["id"]), orjson.dumps(lease), orjson.dumps(running)),
    )


def register_model(
    r: redis.Redis,
    tenant: str,
    name: str,
    model_id: str,
    decision: str,
    promotion: dict[str, Any] | None,
    by: str,
) -> int:
    """Give a ready model that no job holds (an imported model, a sweep's winner) the next version of
    ``name``, moving ``current`` by ``decision`` as ``register_version`` does; ``by`` is recorded on the
    alias move (``"api"``, ``"sweep swp_…"``). The version (the same one when it already has one)."""
    version = _register(r, tenant, name, model_id, decision, promotion, by=by, held=None)
    assert version is not None  # nothing holds the model, so nothing can refuse it
    return version


def _register(
    r: redis.Redis,
    tenant: str,
    name: str,
    model_id: str,
    decision: str,
    promotion: dict[str, Any] | None,
    by: str,
    held: tuple[str, bytes, bytes] | None,
) -> int | None:
    at = now()
    job, lease, running = held if held is not None else (model_key(model_id), b"", b"")
    keys = [*_name_keys(tenant, name), job, model_key(model_id)]
    args: list[bytes | str | int | float] = [
        lease,
        running,
        model_id,
        decision,
        orjson.dumps(by),
        orjson.dumps(at),
        _score(at),
        ALIAS_EVENTS_KEPT,
        REGISTRY_EVENTS,
        _registry_payload(tenant, name),
        orjson.dumps(promotion) if promotion is not None else b"",
    ]
    version = int(_REGISTER_VERSION(keys=keys, args=args, client=r))
    return None if version < 0 else version


class RegistryState(NamedTuple):
    """What a name holds: its record (None: no such name), versions (number → model id) and stored aliases
    (name → target, decoded JSON)."""

    record: dict[str, Any] | None
    versions: dict[int, str]
    aliases: dict[str, Any]


def registry_state(r: redis.Redis, tenant: str, name: str) -> RegistryState:
    return registry_states(r, tenant, [name])[0]


def registry_states(r: redis.Redis, tenant: str, names: Sequence[str]) -> list[RegistryState]:
    """Each name's state, read in one transaction (one round trip)."""
    with r.pipeline() as pipe:
        for name in names:
            pipe.hgetall(registry_key(tenant, name))
            pipe.hgetall(versions_key(tenant, name))
            pipe.hgetall(aliases_key(tenant, name))
        replies = pipe.execute()
    return [
        RegistryState(
            _decode(record),
            {int(_text(v)): _text(model_id) for v, model_id in versions.items()},
            {_text(alias): orjson.loads(target) for alias, target in aliases.items()},
        )
        for record, versions, aliases in zip(replies[0::3], replies[1::3], replies[2::3])
    ]


def list_registry(r: redis.Redis, tenant: str, offset: int = 0, limit: int = 100) -> list[str]:
    """Registered names, most recently changed first."""
    return [_text(i).partition("/")[2] for i in r.zrevrange(index_key(tenant, REGISTRY), offset, offset + limit - 1)]


def alias_events(r: redis.Redis, tenant: str, name: str) -> list[dict[str, Any]]:
    return [orjson.loads(item) for item in r.lrange(alias_events_key(tenant, name), 0, -1)]


def set_alias(
    r: redis.Redis, tenant: str, name: str, alias: str, target: Any, versions: Iterable[int], by: str
) -> tuple[bool, int | None]:
    """Point ``alias`` at ``target`` (JSON-able) once each of ``versions`` exists: ``(the name exists,
    a version that does not exist or None)``."""
    at = now()
    args: list[bytes | str | float] = [alias, orjson.dumps(target), orjson.dumps(by), orjson.dumps(at), _score(at)]
    args += [ALIAS_EVENTS_KEPT, REGISTRY_EVENTS, _registry_payload(tenant, name), *versions]
    result = _SET_ALIAS(keys=_name_keys(tenant, name), args=args, client=r)
    if result[0] == 0:
        return False, None
    return True, int(result[1]) if result[0] == 1 else None


def delete_alias(r: redis.Redis, tenant: str, name: str, alias: str, by: str) -> int:
    """0: no such name; 1: no such alias; 2: removed."""
    at = now()
    args: list[bytes | str | float] = [alias, orjson.dumps(by), orjson.dumps(at), _score(at), ALIAS_EVENTS_KEPT]
    args += [REGISTRY_EVENTS, _registry_payload(tenant, name)]
    return int(_DELETE_ALIAS(keys=_name_keys(tenant, name), args=args, client=r))


def delete_version(r: redis.Redis, model: Mapping[str, Any], force: bool, by: str) -> tuple[bool | None, list[str]]:
    """Delete a registered model (a version of its name): ``(True, aliases removed with it)``, ``(False,
    aliases pointing at it)`` when refused (``force`` off), ``(None, [])`` when it is no longer that version."""
    tenant, name, model_id = model["tenant"], model["name"], model["id"]
    at = now()
    keys = [*_name_keys(tenant, name), index_key(tenant, MODELS), model_key(model_id), weights_key(model_id)]
    args = [model["version"], model_id, "1" if force else "0", orjson.dumps(by), orjson.dumps(at), _score(at)]
    args += [ALIAS_EVENTS_KEPT, REGISTRY_EVENTS, _registry_payload(tenant, name), MODEL_EVENTS]
    result = _DELETE_VERSION(keys=keys, args=args, client=r)
    if result[0] == 0:
        return None, []
    return result[0] == 2, [_text(alias) for alias in result[1:]]


def delete_name(r: redis.Redis, tenant: str, name: str) -> bool:
    """Delete the name and every version's model; False when there is no such name."""
    while True:
        state = registry_state(r, tenant, name)
        if state.record is None:
            return False
        ids = list(state.versions.values())
        keys = [*_name_keys(tenant, name), shadow_key(tenant, name), index_key(tenant, MODELS)]
        keys += [key for model_id in ids for key in (model_key(model_id), weights_key(model_id))]
        args = [REGISTRY_EVENTS, _registry_payload(tenant, name), MODEL_EVENTS, *ids]
        if _DELETE_NAME(keys=keys, args=args, client=r):
            return True


def record_shadows(r: redis.Redis, comparisons: Sequence[tuple[str, str, Mapping[str, Any]]]) -> None:
    """Keep shadow comparisons, each ``(tenant, name, comparison)``, in one round trip (the newest
    SHADOW_KEPT of each name are kept)."""
    with r.pipeline(transaction=False) as pipe:
        for tenant, name, comparison in comparisons:
            pipe.lpush(shadow_key(tenant, name), orjson.dumps(comparison, option=orjson.OPT_SERIALIZE_NUMPY))
        for tenant, name in {(tenant, name) for tenant, name, _ in comparisons}:
            pipe.ltrim(shadow_key(tenant, name), 0, SHADOW_KEPT - 1)
        pipe.execute()


def shadow_comparisons(r: redis.Redis, tenant: str, name: str) -> list[dict[str, Any]]:
    return [orjson.loads(item) for item in r.lrange(shadow_key(tenant, name), 0, -1)]


# Backups: the families of records --------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """One key of a record: ``key(tenant, id)`` holding a ``hash`` of JSON values, a ``strings`` hash of plain
    text values, a ``list`` of JSON values or an ``npz`` blob."""

    name: str
    key: Callable[[str, str], str]
    kind: str


@dataclass(frozen=True)
class Family:
    """Records listed per tenant in ``index_key(tenant, name)`` (a sorted set), each stored under the keys of
    its ``parts``; the first part is the record itself, a hash.

    Ids are global (``scoped`` off: the record holds its ``id`` and ``tenant``, its keys and index member are
    the id alone) or the tenant's own (``scoped``: a registered name, unique within its tenant only, so its
    keys name the tenant and its index member is ``tenant/id``)."""

    name: str
    parts: tuple[Part, ...]
    scoped: bool = False
    events: str | None = None
    """A pub/sub channel told the index member of each record restored, so API processes drop their copy."""

    def member(self, tenant: str, record_id: str) -> str:
        return f"{tenant}/{record_id}" if self.scoped else record_id


def _by_id(key: Callable[[str], str]) -> Callable[[str, str], str]:
    """A key function of a family with global ids, taking the tenant it does not need."""
    return lambda _tenant, record_id: key(record_id)


FAMILIES = (
    Family(DATASETS, (Part("record", _by_id(dataset_key), "hash"), Part("arrays", _by_id(arrays_key), "npz"))),
    Family(JOBS, (Part("record", _by_id(job_key), "hash"), Part("history", _by_id(history_key), "list"))),
    Family(
        MODELS,
        (Part("record", _by_id(model_key), "hash"), Part("weights", _by_id(weights_key), "npz")),
        events=MODEL_EVENTS,
    ),
    Family(
        REGISTRY,
        (
            Part("record", registry_key, "hash"),
            Part("versions", versions_key, "strings"),
            Part("aliases", aliases_key, "hash"),
            Part("events", alias_events_key, "list"),
            Part("shadow", shadow_key, "list"),
        ),
        scoped=True,
        events=REGISTRY_EVENTS,
    ),
)
"""What ``nnserve backup`` saves of each tenant besides its API keys, and ``restore`` writes back. A new kind
of record is one more line here, its parts built by the key functions above. Left out on purpose: job
checkpoints (only a job in flight has one, and a restored job is never in flight), the active-jobs sets,
idempotency records and rate-limit counters (short-lived), and RQ's own keys."""


def tenants(r: redis.Redis) -> set[str]:
    """Every tenant with a record of some family or a stored API key."""
    found = {record["tenant"] for record in api_keys(r).values()}
    for family in FAMILIES:
        head, _, tail = index_key("*", family.name).partition("*")
        for key in r.scan_iter(match=index_key("*", family.name), count=1000):
            found.add(key.decode()[len(head) : -len(tail)])
    return found


def has_records(r: redis.Redis, tenant: str) -> bool:
    """Whether ``tenant`` has a record of some family."""
    return bool(r.exists(*(index_key(tenant, family.name) for family in FAMILIES)))


def read_record(r: redis.Redis, family: Family, tenant: str, record_id: str) -> dict[str, Any] | None:
    """Every part of one record, read in one transaction (hashes and lists decoded, blobs as bytes), or None
    when the record is gone."""
    with r.pipeline() as pipe:
        for part in family.parts:
            if part.kind in ("hash", "strings"):
                pipe.hgetall(part.key(tenant, record_id))
            elif part.kind == "list":
                pipe.lrange(part.key(tenant, record_id), 0, -1)
            else:
                pipe.get(part.key(tenant, record_id))
        replies = pipe.execute(raise_on_error=False)
    for i, (part, reply) in enumerate(zip(family.parts, replies)):
        if isinstance(reply, redis.exceptions.ResponseError):
            if part.kind != "npz" or "WRONGTYPE" not in str(reply):
                raise reply
            replies[i] = get_blob(r, part.key(tenant, record_id))  # a blob stored in pieces (``set_blob``)
    if not replies[0]:
        return None
    parts: dict[str, Any] = {}
    for part, reply in zip(family.parts, replies):
        if part.kind == "hash":
            parts[part.name] = _decode(reply) or {}
        elif part.kind == "strings":
            parts[part.name] = {_text(k): _text(v) for k, v in reply.items()}
        elif part.kind == "list":
            parts[part.name] = [orjson.loads(item) for item in reply]
        elif reply is not None:
            parts[part.name] = reply
    return parts


def indexed(r: redis.Redis, tenant: str, family: Family) -> list[tuple[str, float]]:
    """``(id, score)`` of each of the tenant's records of ``family``, oldest first."""
    members = cast(list[tuple[Raw, float]], r.zrange(index_key(tenant, family.name), 0, -1, withscores=True))
    prefix = family.member(tenant, "")  # ``tenant/`` of a scoped family's members, else nothing
    return [(_text(member).removeprefix(prefix), float(score)) for member, score in members]


def record_exists(r: redis.Redis, family: Family, tenant: str, record_id: str) -> bool:
    return bool(r.exists(family.parts[0].key(tenant, record_id)))


def restore_record(
    r: redis.Redis, family: Family, tenant: str, record_id: str, parts: dict[str, Any], score: float
) -> None:
    """Write one record of ``tenant`` (its parts as ``read_record`` gives them) in one transaction, in place of
    any record with that id: the old one's keys are deleted, it leaves its tenant's index, a job's old status
    is counted out of JOB_STATS (the new one in), and the family's ``events`` channel is told, so every API
    process drops what it cached of the record."""
    record = parts[family.parts[0].name]
    old = _decode(r.hgetall(family.parts[0].key(tenant, record_id)))
    with r.pipeline() as pipe:
        pipe.delete(*(part.key(tenant, record_id) for part in family.parts))
        if old is not None:
            old_tenant = tenant if family.scoped else old["tenant"]
            pipe.zrem(index_key(old_tenant, family.name), family.member(old_tenant, record_id))
        for part in family.parts:
            value = parts.get(part.name)
            key = part.key(tenant, record_id)
            if part.kind == "hash" and value:
                pipe.hset(key, mapping=_encode(value))
            elif part.kind == "strings" and value:
                pipe.hset(key, mapping=value)
            elif part.kind == "list" and value:
                pipe.rpush(key, *(orjson.dumps(item) for item in value))
            elif part.kind == "npz" and value is not None:
                set_blob(pipe, key, value)
        pipe.zadd(index_key(tenant, family.name), {family.member(tenant, record_id): score})
        if family.name == JOBS:
            if old is not None:
                pipe.hincrby(JOB_STATS, orjson.dumps(old["status"]), -1)
            pipe.hincrby(JOB_STATS, orjson.dumps(record["status"]), 1)
        if family.events is not None:
            pipe.publish(family.events, family.member(tenant, record_id))
        pipe.execute()
