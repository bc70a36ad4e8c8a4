"""The one settings object: every knob of the API, the workers and the CLI.

Built from the environment by the entry points (``nnserve``, the gunicorn factory, the
worker) and passed in; no other module reads ``os.environ``. ``REDIS_URL`` keeps its
conventional name; everything else is ``NNSERVE_<FIELD>`` (``NNSERVE_MAX_EPOCHS=500``).
"""
from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NNSERVE_", extra="ignore", frozen=True)

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("redis_url", "REDIS_URL", "NNSERVE_REDIS_URL"),
        description="Redis holding datasets, jobs, models and the RQ queue.",
    )
    redis_timeout: float = Field(2.0, gt=0, description="Seconds to connect to or wait on Redis before a request gets 503.")

    # Request and resource limits (violations are 413 or 422 naming the limit).
    max_body_bytes: int = Field(64 * MiB, gt=0, description="Largest request body, in bytes.")
    max_rows: int = Field(1_000_000, gt=0, description="Most rows in one dataset.")
    max_features: int = Field(10_000, gt=0, description="Most feature columns in one dataset.")
    max_parameters: int = Field(10_000_000, gt=0, description="Most weights in one model.")
    max_epochs: int = Field(10_000, gt=0)
    max_batch_size: int = Field(65_536, gt=0)

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
        8.0, gt=0, description="Seconds a worker told to stop (SIGTERM) waits for its job to checkpoint at an epoch "
        "boundary before it stops the job anyway; either way the job is requeued (keep below the stop grace period).",
    )
    redis_retry_window: float = Field(
        60.0, ge=0, description="Seconds a worker keeps retrying a Redis command through an outage (exponential "
        "backoff, at most 2 s apart) before giving up on it.",
    )
    blas_threads: int = Field(
        1, gt=0, description="BLAS threads per worker process (OpenBLAS threads spin while waiting, so workers "
        "that share cores slow each other down when this is above 1).",
    )

    # Serving.
    model_cache_size: int = Field(32, ge=0, description="Trained models kept in memory per API process.")
    api_workers: int = Field(2, gt=0, description="gunicorn worker processes.")
    api_threads: int = Field(8, gt=0, description="Threads per gunicorn worker.")
    workers: int = Field(2, ge=0, description="RQ workers started by `nnserve up`.")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)

    embedded_redis_port: int = Field(0, ge=0, le=65535, description="Port of the Redis `nnserve up` starts (0: any free one).")
    data_dir: Path = Field(Path(".nnserve"), description="Embedded Redis data and runtime files of `nnserve up`.")
    metrics_dir: Path | None = Field(
        None, description="Directory shared by gunicorn's processes for Prometheus counters (set by the CLI)."
    )
    log_level: str = "INFO"
