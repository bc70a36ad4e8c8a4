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
from flask import Flask
from flask import Request as FlaskRequest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from . import store
from .fastpath import ROUTE_KEY
from .lifecycle import JobStatus
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
            "nnserve_http_request_duration_seconds",
            "Time to answer a request.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        # labels() hashes and looks up its arguments on every call; a request needs the same few
        # children over and over, so they are kept here.
        self._children: dict[tuple[str, str, str], tuple] = {}
        app.request_class = _RoutedRequest

    def wrap(self, wsgi_app):
        """``wsgi_app`` with every request counted and timed, labelled by its route.

        Measured around the WSGI call rather than in before/after_request hooks: Flask's hook
        dispatch costs more than the measuring, a visible share of a predict call; and the
        predict fast path, which never enters Flask, is measured too.
        """

        def measured(environ, start_response):
            started = time.perf_counter()
            status = []

            def start(status_line, headers, exc_info=None):
                status.append(status_line[:3])
                return start_response(status_line, headers, exc_info)

            response = wsgi_app(environ, start)
            route = environ.get(ROUTE_KEY)
            if route is None:
                rule = getattr(environ.pop(_REQUEST_KEY, None), "url_rule", None)
                route = rule.rule if rule is not None else "unmatched"
            key = (environ["REQUEST_METHOD"], route, status[0] if status else "500")
            children = self._children.get(key)
            if children is None:
                children = self._children[key] = (self.requests.labels(*key), self.latency.labels(key[1]))
            children[0].inc()
            children[1].observe(time.perf_counter() - started)
            return response

        return measured

    def render(self, r: redis.Redis, queue) -> tuple[bytes, str]:
        """The exposition text: this service's request metrics, then the job figures from Redis."""
        registry = CollectorRegistry()
        if self.metrics_dir:
            MultiProcessCollector(registry, path=str(self.metrics_dir))
        elif self.registry is not None:
            registry = self.registry
        text = generate_latest(registry)
        jobs = CollectorRegistry()
        jobs.register(_StoreCollector(r, queue))
        return text + generate_latest(jobs), CONTENT_TYPE_LATEST


_REQUEST_KEY = "nnserve.request"


class _RoutedRequest(FlaskRequest):
    """Flask's request, also left in the environ under our own key: Flask removes
    ``werkzeug.request`` when the request ends, and the metrics read the matched route after."""

    def __init__(self, environ, *args, **kwargs):
        super().__init__(environ, *args, **kwargs)
        environ[_REQUEST_KEY] = self


class _StoreCollector:
    def __init__(self, r: redis.Redis, queue):
        self.r, self.queue = r, queue

    def collect(self):
        up = GaugeMetricFamily("nnserve_redis_up", "1 when Redis answered this scrape.")
        try:
            counts, depth, memory = store.job_counts(self.r), self.queue.count, store.memory(self.r)
        except store.TRANSIENT_ERRORS:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield GaugeMetricFamily("nnserve_redis_memory_used_bytes", "Memory Redis uses.", value=memory.used)
        yield GaugeMetricFamily(
            "nnserve_redis_memory_max_bytes",
            "Redis's maxmemory (0: no limit); writes get 507 at it.",
            value=memory.limit,
        )
        yield GaugeMetricFamily(
            "nnserve_redis_evicting",
            "1 when Redis's maxmemory-policy is not noeviction (it may drop jobs, datasets and models when full).",
            value=int(memory.evicting),
        )
        jobs = GaugeMetricFamily("nnserve_jobs", "Training jobs by status.", labels=["status"])
        for status in JobStatus:
            jobs.add_metric([status.value], counts.get(status.value, 0))
        yield jobs
        yield GaugeMetricFamily("nnserve_queue_depth", "Jobs waiting for a worker.", value=depth)
