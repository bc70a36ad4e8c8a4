"""Prometheus metrics: requests and latencies per route; per model, its prediction requests, rows,
errors and latency; model cache hits and misses; jobs by status, their run times, queue depth.

Per-model series are labelled by the model record's ``name`` and registry ``version``; models without
a name share the label ``unnamed``, so that the number of series stays bounded by the names people
chose, not by every model ever trained (``Entry.labels``).

Under gunicorn several processes serve requests, so per-process counters would disagree
from one scrape to the next. With ``metrics_dir`` set (``nnserve api`` and ``nnserve up``
set it, and ``PROMETHEUS_MULTIPROC_DIR`` with it, before gunicorn starts) the counters
use prometheus_client's multiprocess mode: each process writes its samples to a
memory-mapped file in that directory and a scrape sums them. That costs microseconds per
request and no network round trip, unlike counting in Redis. Job and queue figures are
cluster-wide facts, so they are read from Redis at scrape time instead: the workers that run
the jobs add each one's run time to a histogram kept in Redis (``store.job_durations``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import redis
from flask import Flask
from flask import Request as FlaskRequest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from nnserve.engine import SpecError

from . import store
from .lifecycle import JobStatus
from .settings import Settings

if TYPE_CHECKING:
    from .cache import Entry

ROUTE_KEY = "nnserve.route"
"""Where a WSGI layer that answers without Flask (the predict fast path) leaves the route's label."""
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
        per_model = ["model", "version"]
        self.model_requests = Counter(
            "nnserve_model_requests",
            "Prediction requests a model answered or refused.",
            per_model,
            registry=self.registry,
        )
        self.model_rows = Counter("nnserve_model_rows", "Rows predicted.", per_model, registry=self.registry)
        self.model_errors = Counter(
            "nnserve_model_errors",
            "Prediction requests a model refused (inputs it cannot take).",
            per_model,
            registry=self.registry,
        )
        self.model_latency = Histogram(
            "nnserve_model_predict_duration_seconds",
            "Time a model took to predict for one request.",
            per_model,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.cache_lookups = Counter(
            "nnserve_model_cache_lookups",
            "Trained-model cache lookups, by hit or miss.",
            ["result"],
            registry=self.registry,
        )
        # labels() hashes and looks up its arguments on every call; a request needs the same few
        # children over and over, so they are kept here.
        self._children: dict[tuple[str, str, str], tuple] = {}
        self._model_children: dict[tuple[str, str], tuple] = {}
        self._hit, self._miss = self.cache_lookups.labels("hit"), self.cache_lookups.labels("miss")
        app.request_class = _RoutedRequest

    def predict(self, entry: Entry, x: np.ndarray, count_failure: bool = True) -> dict[str, Any]:
        """``entry.prediction(x)``, counted and timed under the model's labels. A SpecError (inputs the
        model cannot take) is counted among its errors, unless ``count_failure`` is false (the fast
        path, which leaves the failure to the route), and raised."""
        children = self._model_children.get(entry.labels)
        if children is None:
            labels = entry.labels
            children = self._model_children[labels] = (
                self.model_requests.labels(*labels),
                self.model_rows.labels(*labels),
                self.model_errors.labels(*labels),
                self.model_latency.labels(*labels),
            )
        requests, rows, errors, latency = children
        started = time.perf_counter()
        try:
            prediction = entry.prediction(x)
        except SpecError:
            if count_failure:
                requests.inc()
                errors.inc()
            raise
        latency.observe(time.perf_counter() - started)
        requests.inc()
        rows.inc(len(x))
        return prediction

    def cache_lookup(self, hit: bool) -> None:
        (self._hit if hit else self._miss).inc()

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
            counts, depth = store.job_counts(self.r), self.queue.count
            durations, memory = store.job_durations(self.r), store.memory(self.r)
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
        runs = HistogramMetricFamily(
            "nnserve_job_duration_seconds", "Run time of finished jobs, from start to end.", labels=["status"]
        )
        for ended, histogram in sorted(durations.items()):
            buckets = [(str(float(bound)), histogram.get(str(bound), 0.0)) for bound in store.JOB_DURATION_BUCKETS]
            runs.add_metric(
                [ended], [*buckets, ("+Inf", histogram.get("count", 0.0))], sum_value=histogram.get("sum", 0.0)
            )
        yield runs
