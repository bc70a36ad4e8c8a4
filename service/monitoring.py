"""Prometheus metrics: requests and latencies per route, jobs by status, queue depth.

Under gunicorn several processes serve requests, so per-process counters would disagree
from one scrape to the next. With ``metrics_dir`` set (``nnserve api`` and ``nnserve up``
set it, and ``PROMETHEUS_MULTIPROC_DIR`` with it, before gunicorn starts) the counters
use prometheus_client's multiprocess mode: each process writes its samples to a
memory-mapped file in that directory and a scrape sums them. That costs microseconds per
request and no network round trip, unlike counting in Redis. Job and queue figures are
cluster-wide facts, so they are read from Redis at scrape time instead.
"""
from __future__ import annotations

import time

import redis
from flask import Flask, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from . import store
from .schemas import JobStatus
from .settings import Settings

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Monitoring:
    def __init__(self, app: Flask, settings: Settings):
        self.metrics_dir = settings.metrics_dir
        # In multiprocess mode the samples go to files, not to a registry.
        self.registry = None if self.metrics_dir else CollectorRegistry()
        self.requests = Counter(
            "nnserve_http_requests", "HTTP requests served.", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "nnserve_http_request_duration_seconds", "Time to answer a request.", ["route"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        app.before_request(self._start)
        app.after_request(self._finish)

    def _start(self) -> None:
        g.started = time.perf_counter()

    def _finish(self, response):
        started = g.get("started")
        if started is not None:
            route = request.url_rule.rule if request.url_rule is not None else "unmatched"
            self.requests.labels(request.method, route, str(response.status_code)).inc()
            self.latency.labels(route).observe(time.perf_counter() - started)
        return response

    def render(self, r: redis.Redis, queue) -> tuple[bytes, str]:
        """The exposition text: this service's request metrics, then the job figures from Redis."""
        registry = CollectorRegistry()
        if self.metrics_dir:
            MultiProcessCollector(registry, path=str(self.metrics_dir))
        text = generate_latest(registry if self.metrics_dir else self.registry)
        jobs = CollectorRegistry()
        jobs.register(_StoreCollector(r, queue))
        return text + generate_latest(jobs), CONTENT_TYPE_LATEST


class _StoreCollector:
    def __init__(self, r: redis.Redis, queue):
        self.r, self.queue = r, queue

    def collect(self):
        up = GaugeMetricFamily("nnserve_redis_up", "1 when Redis answered this scrape.")
        try:
            counts, depth = store.job_counts(self.r), self.queue.count
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        jobs = GaugeMetricFamily("nnserve_jobs", "Training jobs by status.", labels=["status"])
        for status in JobStatus:
            jobs.add_metric([status.value], counts.get(status.value, 0))
        yield jobs
        yield GaugeMetricFamily("nnserve_queue_depth", "Jobs waiting for a worker.", value=depth)
