"""The one settings object: every knob of the API, the workers and the CLI.

Built from the environment by the entry points (``nnserve``, the gunicorn factory, the
worker) and passed in; no other module reads ``os.environ``. ``REDIS_URL`` keeps its
conventional name; everything else is ``NNSERVE_<FIELD>`` (``NNSERVE_MAX_EPOCHS=500``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, BeforeValidator, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MiB = 1024 * 1024


@dataclass(frozen=True)
class Rate:
    """A rate limit: at most ``count`` requests per ``seconds``."""

    count: int
    seconds: int


PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def _rate(value):
    """``"30/minute"`` as ``Rate(30, 60)``; empty or ``off`` as None (no limit)."""
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    if text in ("", "off"):
        return None
    count, _, period = (part.strip() for part in text.partition("/"))
    if not count.isdigit() or int(count) < 1 or period not in PERIODS:
        raise ValueError(
            f"must be a positive count per second, minute, hour or day, like '30/minute'; received {value!r}"
        )
    return Rate(int(count), PERIODS[period])


SCOPES = ("read", "predict", "train", "admin")
"""The scopes an API key may have; what each one allows is decided in ``service/auth.py``."""

SCOPE_WORDS = re.compile(r"[A-Za-z]+(?:\s*\+\s*[A-Za-z]+)*")
"""What is taken for scopes after a key: ``predict`` or ``predict+read`` (any case, so that a mistyped
``Predict`` is refused rather than taken for the end of a key with every scope)."""


class ApiKey(SecretStr):
    """An API key with its scopes: all of them unless some were named. (A plain SecretStr has them all too.)"""

    def __init__(self, secret_value: str, scopes: frozenset[str] = frozenset(SCOPES)):
        super().__init__(secret_value)
        self.scopes = scopes


def parse_scopes(text: str) -> frozenset[str]:
    """``"predict+read"`` as ``{"predict", "read"}``; raises ValueError naming a word that is no scope."""
    words = [word.strip().lower() for word in text.split("+")]
    for word in words:
        if word not in SCOPES:
            raise ValueError(f"unknown scope {word!r}; the scopes are {', '.join(SCOPES)}")
    return frozenset(words)


def _keys(value):
    """``NNSERVE_API_KEYS``: comma-separated entries, blanks dropped, each a key of 16 characters or more,
    optionally followed by its scopes::

        entries = entry ("," entry)*
        entry   = key [":" scopes] ("," scopes)*     a key without scopes has all of them
        scopes  = scope ("+" scope)*                 scope: read | predict | train | admin

    so ``k1:predict,read,k2`` and ``k1:predict+read,k2`` give k1 the scopes predict and read and k2
    every scope. A word after a comma that is short and made of scope words continues the scopes of
    the key before it (keys are 16 characters or more, so the two cannot be confused); a key that
    itself ends in ``:`` and lowercase letters cannot be written here. Messages never quote a key.
    """
    if not isinstance(value, str):
        return tuple(value)
    keys: list[ApiKey] = []
    scoped = False  # whether the last key named its scopes, so that more may follow after a comma
    for number, entry in enumerate((e.strip() for e in value.split(",") if e.strip()), start=1):
        if len(entry) < 16 and SCOPE_WORDS.fullmatch(entry):
            if not scoped:
                raise ValueError(
                    f"entry {number} is too short for an API key and follows no 'key:scope' entry; "
                    f"scopes ({', '.join(SCOPES)}) are written key:predict or key:predict+read"
                )
            keys[-1] = ApiKey(keys[-1].get_secret_value(), keys[-1].scopes | _scopes_of_key(entry, len(keys)))
            continue
        secret, colon, tail = (part.strip() for part in entry.rpartition(":"))
        scoped = bool(colon) and SCOPE_WORDS.fullmatch(tail) is not None
        if not scoped:
            secret = entry
        if len(secret) < 16:
            raise ValueError(
                f"API key {len(keys) + 1} is shorter than 16 characters; make keys with "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        keys.append(ApiKey(secret, _scopes_of_key(tail, len(keys) + 1)) if scoped else ApiKey(secret))
    return tuple(keys)


def _scopes_of_key(text: str, number: int) -> frozenset[str]:
    try:
        return parse_scopes(text)
    except ValueError:  # not quoted: a mistyped key could end in letters taken for scopes
        raise ValueError(
            f"API key {number} names an unknown scope; the scopes are {', '.join(SCOPES)}, "
            "written key:predict or key:predict+read"
        ) from None


def _origins(value):
    """A comma-separated list of origins (``scheme://host[:port]``, no path), or ``*`` for any."""
    origins = tuple(o.strip().rstrip("/") for o in value.split(",") if o.strip()) if isinstance(value, str) else value
    for origin in origins:
        scheme, _, rest = origin.partition("://")
        if origin != "*" and (scheme not in ("http", "https") or not rest or "/" in rest):
            raise ValueError(
                f"each origin must be scheme://host[:port] (or *), like https://app.example.com; received {origin!r}"
            )
    return origins


def _sentinels(value):
    """``"host1:26379,host2:26379"`` as ``(("host1", 26379), ("host2", 26379))``; empty: none."""
    if not isinstance(value, str):
        return value
    addresses = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"each Sentinel must be host:port, like 'sentinel-1:26379'; received {item!r}")
        addresses.append((host.strip("[]"), int(port)))
    return tuple(addresses)


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _redis_url(value):
    if isinstance(value, str) and not value.startswith(REDIS_SCHEMES):
        scheme = value.partition("://")[0] if "://" in value else value
        hint = (
            " Redis Cluster is not supported (RQ, which queues the jobs, cannot use it): use one Redis, "
            "with replicas and Sentinel (REDIS_SENTINELS) for failover."
            if "cluster" in scheme.lower()
            else ""
        )
        raise ValueError(f"must start with redis://, rediss:// (TLS) or unix://; received {scheme!r}.{hint}")
    return value


# NoDecode: these come as plain text ("30/minute", "key1,key2"), not as the JSON that
# pydantic-settings would otherwise expect of a tuple.
RateLimit = Annotated[Rate | None, NoDecode, BeforeValidator(_rate)]
ApiKeys = Annotated[tuple[SecretStr, ...], NoDecode, BeforeValidator(_keys)]
Origins = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_origins)]
Sentinels = Annotated[tuple[tuple[str, int], ...], NoDecode, BeforeValidator(_sentinels)]


class Settings(BaseSettings):
    # hide_input_in_errors: a start-up error must not print a mistyped API key.
    model_config = SettingsConfigDict(env_prefix="NNSERVE_", extra="ignore", frozen=True, hide_input_in_errors=True)

    redis_url: Annotated[str, BeforeValidator(_redis_url)] = Field(
        "redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("redis_url", "REDIS_URL", "NNSERVE_REDIS_URL"),
        description="Redis holding datasets, jobs, models and the RQ queue. With Sentinels, only its "
        "password, user, database and scheme (rediss:// for TLS) are used.",
    )
    redis_timeout: float = Field(
        2.0, gt=0, description="Seconds to connect to or wait on Redis before a request gets 503."
    )
    redis_sentinels: Sentinels = Field(
        (),
        validation_alias=AliasChoices("redis_sentinels", "REDIS_SENTINELS", "NNSERVE_REDIS_SENTINELS"),
        description="Redis Sentinels as host:port, comma-separated: the primary is asked of them, and "
        "found again after a failover. Needs REDIS_SENTINEL_MASTER.",
    )
    redis_sentinel_master: str | None = Field(
        None,
        validation_alias=AliasChoices(
            "redis_sentinel_master", "REDIS_SENTINEL_MASTER", "NNSERVE_REDIS_SENTINEL_MASTER"
        ),
        description="The name the Sentinels monitor the primary by (their `sentinel monitor <name> ...`).",
    )
    redis_sentinel_password: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices(
            "redis_sentinel_password", "REDIS_SENTINEL_PASSWORD", "NNSERVE_REDIS_SENTINEL_PASSWORD"
        ),
        description="Password of the Sentinels themselves (their requirepass), if they have one.",
    )
    redis_sentinel_tls: bool = Field(
        False,
        validation_alias=AliasChoices("redis_sentinel_tls", "REDIS_SENTINEL_TLS", "NNSERVE_REDIS_SENTINEL_TLS"),
        description="Reach the Sentinels over TLS (the primary's TLS follows REDIS_URL's rediss://).",
    )
    allow_eviction: bool = Field(
        False,
        description="Start even when Redis's maxmemory-policy is not noeviction (it may then silently drop "
        "jobs, datasets and models once full); warned about at start-up and reported by /readyz.",
    )

    # Access. SecretStr: the keys never show in a repr or a log line.
    api_keys: ApiKeys = Field(
        (),
        description="Comma-separated API keys (16 characters or more), each optionally with its scopes "
        "(`key:predict`, `key:predict+read`; read, predict, train, admin; none named: all). When set, every "
        "versioned request needs `Authorization: Bearer <key>`, and each key is a tenant that sees only its own "
        "datasets, jobs and models. Keys can also be created at run time (`nnserve keys create`).",
    )
    cors_origins: Origins = Field(
        (),
        description="Comma-separated origins whose browser pages may call the API (CORS), like "
        "'https://app.example.com', or '*' for any; unset: none (same-origin pages only, such as the dashboard).",
    )
    forwarded_hops: int = Field(
        0,
        ge=0,
        description="Reverse proxies in front of the API whose X-Forwarded-For names the client "
        "(the address rate limits count by when there are no API keys); 0: the peer address.",
    )

    # Request and resource limits (violations are 413, 422 or 429 naming the limit).
    max_body_bytes: int = Field(64 * MiB, gt=0, description="Largest request body, in bytes.")
    max_rows: int = Field(1_000_000, gt=0, description="Most rows in one dataset.")
    max_features: int = Field(
        10_000, gt=0, description="Most values in one sample of a dataset: feature columns, or an image's pixels."
    )
    max_dataset_bytes: int = Field(
        2 * 1024 * MiB,
        gt=0,
        description="Largest dataset as stored, in bytes: 4 a feature value (float32) and 8 a target value. "
        "A binary (.npz) upload is checked against it before it is read, so a compressed archive cannot "
        "unpack beyond it.",
    )
    max_parameters: int = Field(10_000_000, gt=0, description="Most weights in one model.")
    max_epochs: int = Field(10_000, gt=0)
    max_batch_size: int = Field(65_536, gt=0)
    max_compute: int = Field(
        10**12,
        gt=0,
        description="Largest job: epochs x training rows x parameters (about six floating-point "
        "operations each; 10^12 is some minutes of one core).",
    )
    max_active_jobs: int = Field(0, ge=0, description="Most jobs one tenant may have queued or running (0: no limit).")
    max_sweep_trials: int = Field(1000, ge=1, description="Most trials one sweep may run.")
    rate_limit_jobs: RateLimit = Field(
        None,
        description="Job submissions allowed per API key (per client address without keys), like "
        "'30/minute' (per second, minute, hour or day); unset: no limit. Counted in Redis, across API processes.",
    )
    rate_limit_predict: RateLimit = Field(
        None,
        description="Predict calls allowed per API key (per client address without keys), like '6000/minute'; "
        "unset: no limit.",
    )
    idempotency_ttl: int = Field(
        24 * 3600,
        gt=0,
        description="Seconds a POST's Idempotency-Key is remembered, with the response it got.",
    )

    # Jobs.
    checkpoint_every: int = Field(10, ge=0, description="Epochs between checkpoints (0: never).")
    job_retries: int = Field(2, ge=0, description="Times a job whose worker died is tried again.")
    job_timeout: int = Field(3600, gt=0, description="Seconds one attempt of a training job may run.")
    worker_heartbeat: int = Field(10, gt=0, description="Seconds between a busy worker's heartbeats.")
    abandoned_after: int = Field(
        30, gt=0, description="Seconds past a missed heartbeat after which a job's worker is taken for dead."
    )
    maintenance_interval: int = Field(
        30, gt=0, description="Seconds between a worker's sweeps for jobs whose worker died."
    )
    shutdown_timeout: float = Field(
        8.0,
        gt=0,
        description="Seconds a worker told to stop (SIGTERM) waits for its job to checkpoint at an epoch "
        "boundary before it stops the job anyway; either way the job is requeued (keep below the stop grace period).",
    )
    redis_retry_window: float = Field(
        60.0,
        ge=0,
        description="Seconds a worker keeps retrying a Redis command through an outage (exponential "
        "backoff, at most 2 s apart) before giving up on it.",
    )
    blas_threads: int = Field(
        1,
        gt=0,
        description="BLAS threads per worker process (OpenBLAS threads spin while waiting, so workers "
        "that share cores slow each other down when this is above 1).",
    )

    # Serving.
    model_cache_size: int = Field(32, ge=0, description="Trained models kept in memory per API process.")
    api_workers: int = Field(2, gt=0, description="gunicorn worker processes.")
    api_threads: int = Field(8, gt=0, description="Threads per gunicorn worker.")
    header_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a request's headers may take to arrive, from its first byte (or from the "
        "connection); then 408. No thread waits meanwhile: the worker's event loop reads requests.",
    )
    body_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds a request body may pause between two reads (then 408), and a response may wait "
        "for a client that stops reading (then the connection closes).",
    )
    api_streams: int | None = Field(
        None,
        gt=0,
        description="Event streams (GET /v1/jobs/{id}/events) one gunicorn worker serves at once, each "
        "holding one of its threads; more get 503 with Retry-After. Below api_threads; default: half of them "
        "(rounded down).",
    )
    stream_lifetime: float = Field(
        300.0,
        gt=0,
        description="Seconds an event stream stays open; then it ends and the client reconnects "
        "with Last-Event-ID, so a stream's thread is never held for good.",
    )
    stream_heartbeat: float = Field(
        15.0,
        gt=0,
        description="Seconds between comment lines on an idle event stream, so proxies keep it open.",
    )
    workers: int = Field(2, ge=0, description="RQ workers started by `nnserve up`.")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)

    embedded_redis_port: int = Field(
        0, ge=0, le=65535, description="Port of the Redis `nnserve up` starts (0: any free one)."
    )
    data_dir: Path = Field(Path(".nnserve"), description="Embedded Redis data and runtime files of `nnserve up`.")
    metrics_dir: Path | None = Field(
        None, description="Directory shared by gunicorn's processes for Prometheus counters (set by the CLI)."
    )
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = Field(
        "text",
        description="Log lines as text, or as JSON objects one per line (`json`), each with its request's X-Request-ID.",
    )

    @model_validator(mode="after")
    def _streams_leave_threads(self) -> Settings:
        if self.api_streams is not None and self.api_streams >= self.api_threads:
            raise ValueError(
                f"api_streams ({self.api_streams}) must be below api_threads ({self.api_threads}): "
                "every stream holds a thread, and other requests need some"
            )
        return self

    @model_validator(mode="after")
    def _sentinels_have_a_master(self) -> Settings:
        if self.redis_sentinels and not self.redis_sentinel_master:
            raise ValueError(
                "REDIS_SENTINELS needs REDIS_SENTINEL_MASTER, the name the Sentinels monitor the primary by"
            )
        return self

    @property
    def stream_limit(self) -> int:
        """Event streams one gunicorn worker serves at once."""
        return self.api_streams or self.api_threads // 2
