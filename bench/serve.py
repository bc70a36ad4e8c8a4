"""Benchmark: how fast nnserve serves predictions, beside a trivial Flask endpoint under the same gunicorn.

Run from the repository root (``wrk`` must be installed: ``apt-get install wrk``)::

    python bench/serve.py                       # starts its own Redis, nnserve api and worker
    python bench/serve.py --duration 20 --rounds 5

What it does, in one run:

1. starts a Redis (``redis-server`` on PATH, on a free port, nothing kept on disk), ``nnserve api``
   and one ``nnserve worker`` on free ports, and a second gunicorn serving ``bench/serve.py``'s
   own Flask app with the *same* gunicorn command line (``nnserve.cli.server.gunicorn_command`` with only
   the app replaced): a trivial endpoint (returns a constant JSON, does not read its body) and a
   bare NumPy forward pass of the same trained weights (stdlib JSON in and out, no checks), which
   the issue calibrates at about 83% of the trivial endpoint;
2. trains the iris model (4-8-3) through the API;
3. drives each endpoint with ``wrk`` (keep-alive, ``--connections``) for ``--duration`` seconds,
   in ``--rounds`` alternating rounds, each starting one endpoint later (use a multiple of 7 so that
   every endpoint takes every place in a round), so that a neighbour's load hits every endpoint alike, and
   reports the median round: requests/s, latency p50 and p99 under that load, and for the
   1000-row requests rows/s; nnserve's requests/s as a share of the trivial endpoint's;
4. the registry (issue 9): the iris model is trained twice more under the name ``bench-iris``, with the
   aliases ``split`` (``{"1": 90, "2": 10}``) and ``shadowed`` (version 1, shadow 2, every request);
   predicting through ``bench-iris`` (its ``current``, version 2), through ``bench-iris@split`` and
   through ``bench-iris@shadowed`` is driven in the same rounds as predicting through version 2's
   ``mdl_…`` id, and reported as a share of it (target: each at least 95%); the same four are also timed
   in this process through nnserve's WSGI app (no network, no neighbour on the GIL, the shadow's own work
   waited for), which a loaded machine disturbs far less;
5. measures submit -> running for a warm (idle, started) worker: ``--jobs`` small jobs one after
   another, each timed from before ``POST /v1/jobs`` until ``GET /v1/jobs/{id}`` first shows it
   ``running`` (polled every millisecond), and from the job's own ``created_at`` to ``started_at``.

Targets (issue 3): predict at least 85% of the trivial endpoint's requests/s; at least 400,000
rows/s with 1000-row requests; submit -> running under 20 ms median. Issue 10: the TF Serving
(``:predict`` with ``instances``) and MLflow (``/invocations`` with a ``dataframe_split`` naming the
columns) routes within 10 % of ``/v1/.../predict``'s requests/s, in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from flask import Flask, jsonify, request

from nnserve.cli.supervisor import free_port

REPO = Path(__file__).resolve().parent.parent
REGISTERED = "bench-iris"
REGISTRY_BASE = "nnserve predict through version 2's mdl_ id"
IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
IRIS_NAMES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
IRIS_JOB = {
    "dataset": "iris",
    "model": {
        "layers": [
            {"type": "dense", "units": 8, "activation": "relu"},
            {"type": "dense", "units": 3, "activation": "softmax"},
        ]
    },
    "training": {"optimizer": {"name": "adam", "learning_rate": 0.01}, "epochs": 100, "batch_size": 16, "seed": 0},
}

# The comparison app, served by gunicorn from this module (``serve:app``) -------------------

app = Flask(__name__)
_BARE: dict[str, np.ndarray] = {}


@app.get("/healthz")
def healthz():
    return {"status": "ok"}


@app.post("/trivial")
def trivial():
    return {"predictions": ["setosa"]}


@app.post("/bare")
def bare():
    """The plain forward pass of the trained weights: stdlib JSON in and out, no validation."""
    if not _BARE:
        with np.load(os.environ["NNSERVE_BENCH_WEIGHTS"], allow_pickle=False) as archive:
            _BARE.update({name: archive[name] for name in archive.files})
    w = _BARE
    x = (np.array(request.get_json()["inputs"], dtype=np.float32) - w["mean"]) / w["scale"]
    z = np.maximum(x @ w["w1"] + w["b1"], 0) @ w["w2"] + w["b2"]
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return jsonify(predictions=w["classes"][p.argmax(axis=1)].tolist(), probabilities=p.tolist())


# Processes ---------------------------------------------------------------------------------


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: {url} did not answer within {timeout:.0f} s") from None
            time.sleep(0.2)


def http(method: str, url: str, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as response:
        return json.loads(response.read())


class Stack:
    """Redis, ``nnserve api``, one ``nnserve worker`` and the comparison gunicorn, stopped together."""

    def __init__(self, api_workers: int, api_threads: int):
        self.dir = Path(tempfile.mkdtemp(prefix="nnserve-bench-"))
        self.processes: list[subprocess.Popen] = []
        redis_port, self.api_port, self.peer_port = free_port(), free_port(), free_port()
        self.redis_url = f"redis://127.0.0.1:{redis_port}/0"
        self.env = {
            **os.environ,
            "REDIS_URL": self.redis_url,
            "NNSERVE_API_WORKERS": str(api_workers),
            "NNSERVE_API_THREADS": str(api_threads),
            "NNSERVE_LOG_LEVEL": "WARNING",
            "NNSERVE_BENCH_WEIGHTS": str(self.dir / "weights.npz"),
        }
        redis = shutil.which("redis-server") or sys.exit("bench: redis-server is not on PATH")
        self.start([redis, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        self.start([sys.executable, "-m", "nnserve", "api", "--port", str(self.api_port)])
        self.start([sys.executable, "-m", "nnserve", "worker"])
        self.start(self.peer_command())
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.peer = f"http://127.0.0.1:{self.peer_port}"
        wait_http(self.api + "/healthz")
        wait_http(self.peer + "/healthz")

    def peer_command(self) -> list[str]:
        """nnserve's own gunicorn command line, serving this module's app instead."""
        from nnserve.cli.server import gunicorn_command
        from nnserve.service.settings import Settings

        settings = Settings(_env_file=None, port=self.peer_port)
        settings = settings.model_copy(
            update={
                "api_workers": int(self.env["NNSERVE_API_WORKERS"]),
                "api_threads": int(self.env["NNSERVE_API_THREADS"]),
                "log_level": "WARNING",
            }
        )
        command = gunicorn_command(settings)
        return [*command[:-1], "--chdir", str(REPO / "bench"), "serve:app"]

    def start(self, command: list[str]) -> None:
        log = open(self.dir / f"{len(self.processes)}.log", "wb")  # noqa: SIM115 (a child's log, open for the child's life)
        self.processes.append(
            subprocess.Popen(command, env=self.env, cwd=REPO, stdout=log, stderr=log, start_new_session=True)
        )

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


def train_iris(stack: Stack, **extra) -> str:
    job = http("POST", stack.api + "/v1/jobs", {**IRIS_JOB, **extra})
    deadline = time.monotonic() + 120
    while (state := http("GET", f"{stack.api}/v1/jobs/{job['id']}"))["status"] not in (
        "succeeded",
        "failed",
        "canceled",
    ):
        if time.monotonic() > deadline:
            raise SystemExit("bench: training the iris model took over two minutes")
        time.sleep(0.2)
    if state["status"] != "succeeded":
        raise SystemExit(f"bench: training failed: {state.get('error')}")
    if extra:
        return job["model_id"]
    # The same weights for the bare endpoint, read from the model download as a client would
    # (the documented .npz layout; importing ``engine`` here would find bench/engine.py).
    import io

    with urllib.request.urlopen(f"{stack.api}/v1/models/{job['model_id']}/weights") as response:
        archive = np.load(io.BytesIO(response.read()), allow_pickle=False)
    metadata = json.loads(str(archive["metadata"]))
    w1, b1, w2, b2 = (archive[name] for name in metadata["weights"])
    scaler = metadata["scaler"]
    np.savez(
        stack.env["NNSERVE_BENCH_WEIGHTS"],
        w1=w1,
        b1=b1,
        w2=w2,
        b2=b2,
        mean=np.array(scaler["mean"], np.float32),
        scale=np.array(scaler["scale"], np.float32),
        classes=np.array(metadata["classes"]),
    )
    return job["model_id"]


# Load --------------------------------------------------------------------------------------


def wrk(url: str, body: bytes, duration: int, connections: int, workdir: Path) -> dict[str, float]:
    """Requests/s and latency percentiles (ms) of ``wrk`` POSTing ``body`` to ``url``."""
    body_file = workdir / f"body-{hash(body) & 0xFFFFFFFF}.json"
    body_file.write_bytes(body)
    script = workdir / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{body_file}", "rb"); wrk.body = f:read("*a"); f:close()\n'
        "done = function(summary, latency, requests)\n"
        '  io.write(string.format("RESULT %d %d %d %d %d %d\\n", summary.requests, summary.duration,\n'
        "    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,\n"
        "    latency:percentile(50), latency:percentile(99), latency.mean))\n"
        "end\n"
    )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    requests_, micros, errors, p50, p99, _ = map(int, re.search(r"RESULT (.*)", out).group(1).split())
    return {"rps": requests_ / (micros / 1e6), "p50_ms": p50 / 1000, "p99_ms": p99 / 1000, "errors": errors}


def submit_to_running(stack: Stack, jobs: int) -> tuple[list[float], list[float]]:
    """Client-observed and recorded (created_at -> started_at) seconds from submit to running."""
    from datetime import datetime

    spec = {**IRIS_JOB, "training": {**IRIS_JOB["training"], "epochs": 1}}
    observed, recorded = [], []
    for _ in range(jobs):
        time.sleep(0.5)  # the worker is idle and warm when the job arrives
        started = time.perf_counter()
        job = http("POST", stack.api + "/v1/jobs", spec)
        while (state := http("GET", f"{stack.api}/v1/jobs/{job['id']}"))["status"] == "queued":
            time.sleep(0.001)
        observed.append(time.perf_counter() - started)
        while state["status"] not in ("succeeded", "failed", "canceled"):
            state = http("GET", f"{stack.api}/v1/jobs/{job['id']}")
        recorded.append(
            (datetime.fromisoformat(state["started_at"]) - datetime.fromisoformat(state["created_at"])).total_seconds()
        )
    return observed, recorded


def in_process(redis_url: str, refs: list[str], body: bytes, calls: int) -> dict[str, float]:
    """Median microseconds per prediction through each of ``refs``, calling nnserve's WSGI app in this
    process (no network, no other process competing for the GIL), ``calls`` times each, the refs taking
    turns call by call. The shadowed ref's background work runs on this process's shadow thread meanwhile,
    as in a server (it takes the process's time from every ref alike, so the medians compare the answer
    paths)."""
    import io

    from nnserve.service.app import create_app
    from nnserve.service.settings import Settings

    app = create_app(Settings(_env_file=None, redis_url=redis_url, log_level="WARNING"))
    shadows = app.extensions["nnserve"].shadows

    def call(ref: str) -> None:
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": f"/v1/models/{ref}/predict",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
            "REMOTE_ADDR": "127.0.0.1",
            "SERVER_NAME": "bench",
            "SERVER_PORT": "80",
            "wsgi.url_scheme": "http",
        }
        status = []
        b"".join(app(environ, lambda s, h, *_: status.append(s)))
        assert status[0].startswith("200"), status

    for ref in refs:  # warm: the model and the name's state cached
        for _ in range(50):
            call(ref)
    shadows.drain()
    timings: dict[str, list[float]] = {ref: [] for ref in refs}
    for _ in range(calls):
        for ref in refs:  # call by call, so that the machine's moods fall on every ref alike
            started = time.perf_counter()
            call(ref)
            timings[ref].append((time.perf_counter() - started) * 1e6)
    shadows.drain()
    return {ref: statistics.median(values) for ref, values in timings.items()}


# Report ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported (default 3)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent keep-alive connections (default 16)")
    parser.add_argument(
        "--jobs", type=int, default=20, help="jobs for the submit -> running figure (default 20; 0 skips it)"
    )
    parser.add_argument("--api-workers", type=int, default=2, help="gunicorn processes, for both servers (default 2)")
    parser.add_argument("--api-threads", type=int, default=8, help="threads per gunicorn process (default 8)")
    parser.add_argument("--calls", type=int, default=2000, help="requests per ref and round, in process (default 2000)")
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        raise SystemExit("bench: wrk is not installed (apt-get install wrk)")

    stack = Stack(args.api_workers, args.api_threads)
    try:
        print("training the iris model ...", file=sys.stderr)
        model_id = train_iris(stack)
        one = json.dumps({"inputs": [IRIS_ROW]}).encode()
        rows = np.random.default_rng(0).normal(IRIS_ROW, 0.5, size=(1000, 4)).round(2)
        thousand = json.dumps({"inputs": rows.tolist()}).encode()
        predict = f"{stack.api}/v1/models/{model_id}/predict"
        train_iris(stack, name=REGISTERED)
        version_2 = train_iris(stack, name=REGISTERED, training={**IRIS_JOB["training"], "seed": 2})
        for alias, target in (("split", {"split": {"1": 90, "2": 10}}), ("shadowed", {"version": 1, "shadow": 2})):
            http("PUT", f"{stack.api}/v1/registry/{REGISTERED}/aliases/{alias}", target)
        by_ref = f"{stack.api}/v1/models/{{}}/predict"
        registry_endpoints = [
            (REGISTRY_BASE, by_ref.format(version_2), one, 1),
            ("nnserve predict through NAME", by_ref.format(REGISTERED), one, 1),
            ("nnserve predict through a 90/10 split", by_ref.format(f"{REGISTERED}@split"), one, 1),
            ("nnserve predict through a shadowed alias", by_ref.format(f"{REGISTERED}@shadowed"), one, 1),
        ]
        # The same row in the other dialects' documented bodies, by name where they name features.
        tf_serving = json.dumps({"instances": [IRIS_ROW]}).encode()
        mlflow = json.dumps({"dataframe_split": {"columns": IRIS_NAMES, "data": [IRIS_ROW]}}).encode()
        endpoints = [
            ("trivial Flask endpoint", f"{stack.peer}/trivial", one, 1),
            ("bare NumPy forward pass", f"{stack.peer}/bare", one, 1),
            ("nnserve predict", predict, one, 1),
            ("TF Serving :predict", f"{stack.api}/v1/models/{model_id}:predict", tf_serving, 1),
            ("MLflow /invocations", f"{stack.api}/v1/models/{model_id}/invocations", mlflow, 1),
            ("bare NumPy forward pass, 1000 rows", f"{stack.peer}/bare", thousand, 1000),
            ("nnserve predict, 1000 rows", predict, thousand, 1000),
            *registry_endpoints,
        ]
        for _, url, body, _ in endpoints:  # warm-up: caches filled, every gunicorn process touched
            wrk(url, body, 2, args.connections, stack.dir)
        load_before = os.getloadavg()[0]
        runs: dict[str, list[dict[str, float]]] = {name: [] for name, *_ in endpoints}
        order = random.Random(0)
        for round_ in range(args.rounds):
            # A new order each round (seeded), and a pause after each run: an endpoint that always follows
            # the same one pays for it (measured: the one after the 1000-row requests ran at half speed
            # while the servers finished the requests wrk had left in flight).
            for name, url, body, _ in order.sample(endpoints, len(endpoints)):
                print(f"round {round_ + 1}/{args.rounds}: {name}", file=sys.stderr)
                runs[name].append(wrk(url, body, args.duration, args.connections, stack.dir))
                time.sleep(1)
        print("in process ...", file=sys.stderr)
        refs = [version_2, REGISTERED, f"{REGISTERED}@split", f"{REGISTERED}@shadowed"]
        micros = in_process(stack.redis_url, refs, one, args.calls)
        print("submit -> running ...", file=sys.stderr)
        observed, recorded = submit_to_running(stack, args.jobs)
    finally:
        stack.stop()

    def median(name: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[name])

    print(f"command: python bench/serve.py {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    print(
        f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, NumPy {np.__version__}; "
        f"load average {load_before:.2f} before the load"
    )
    print(
        f"gunicorn for both servers: {args.api_workers} processes x {args.api_threads} threads "
        f"(nnserve's own command line); wrk: 1 thread, {args.connections} keep-alive connections, "
        f"{args.duration} s per run, median of {args.rounds} alternating rounds"
    )
    print()
    trivial_rps = median("trivial Flask endpoint", "rps")
    header = ["endpoint", "requests/s", "vs trivial", "p50 ms", "p99 ms", "rows/s", "errors"]
    table = []
    for name, _, _, n_rows in endpoints:
        rps = median(name, "rps")
        table.append(
            [
                name,
                f"{rps:,.0f}",
                f"{rps / trivial_rps:.0%}",
                f"{median(name, 'p50_ms'):.2f}",
                f"{median(name, 'p99_ms'):.2f}",
                f"{rps * n_rows:,.0f}",
                f"{int(sum(r['errors'] for r in runs[name]))}",
            ]
        )
    widths = [max(len(row[i]) for row in [header, *table]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *table]:
        print("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))))
    print()
    share = median("nnserve predict", "rps") / trivial_rps
    for dialect in ("TF Serving :predict", "MLflow /invocations"):
        ratio = median(dialect, "rps") / median("nnserve predict", "rps")
        print(
            f"{dialect} vs nnserve predict: {ratio:.0%} of its requests/s "
            f"(target within 10%: {'meets' if ratio >= 0.9 else 'MISSES'})"
        )
    rows_per_s = median("nnserve predict, 1000 rows", "rps") * 1000
    base = median(REGISTRY_BASE, "rps")
    for name, *_ in registry_endpoints[1:]:
        ratio = median(name, "rps") / base
        print(
            f"registry: {name.removeprefix('nnserve predict ')}: {ratio:.1%} of predicting through the mdl_ id's "
            f"requests/s (target >= 95%: {'meets' if ratio >= 0.95 else 'MISSES'})"
        )
    names = ["the mdl_ id", "NAME", "a 90/10 split", "a shadowed alias"]
    for name, ref in zip(names, refs):
        ratio = micros[refs[0]] / micros[ref]
        print(
            f"registry, in process: through {name}: median {micros[ref]:.1f} us per prediction, {ratio:.1%} of the "
            f"mdl_ id's rate (target >= 95%: {'meets' if ratio >= 0.95 else 'MISSES'})"
        )
    print(
        f"predict vs trivial: {share:.0%} of its requests/s (target >= 85%: {'meets' if share >= 0.85 else 'MISSES'})"
    )
    print(
        f"1000-row requests: {rows_per_s:,.0f} rows/s (target >= 400,000: {'meets' if rows_per_s >= 400_000 else 'MISSES'})"
    )
    if observed:
        submit = statistics.median(observed) * 1000
        print(
            f"submit -> running, warm worker, {len(observed)} jobs: median {submit:.1f} ms observed by the client "
            f"(p90 {np.percentile(observed, 90) * 1000:.1f} ms), median {statistics.median(recorded) * 1000:.1f} ms "
            f"from created_at to started_at (target < 20 ms: {'meets' if submit < 20 else 'MISSES'})"
        )


if __name__ == "__main__":
    main()
