"""Load test: many concurrent clients against a running nnserve, then a check that no job was lost.

    python bench/load.py                                  # starts `nnserve up --workers 2` in a temp dir
    python bench/load.py http://127.0.0.1:8000            # against a running stack
    python bench/load.py --clients 16 --duration 60 --api-key KEY URL

Each client is a thread with its own keep-alive ``requests.Session``. Until the duration is
up it picks one request at random by the weights of ``--mix`` (default: mostly predictions):

- ``predict-1``, ``predict-100``: POST /v1/models/{id}/predict with 1 or 100 iris rows, on a
  model trained before the clock starts;
- ``job``: POST /v1/jobs, a small iris job (4-8-3, Adam, 10 epochs, its own seed);
- ``job-status``: GET /v1/jobs/{id} of a job this client submitted;
- ``dataset``: POST /v1/datasets, a small JSON dataset (40 rows, 4 features, 3 classes).

It prints requests/s, p50 and p99 latency per route, and the errors by status. Then it waits
(``--drain``, default 300 s) for every submitted job to end and counts them: ``lost`` are jobs
that never ended (or vanished); ``retried`` those that took more than one attempt. The exit status is 1 if there was any 5xx, transport error,
failed or lost job.

A stack started here runs from a temporary directory (its embedded Redis with it) and is
stopped at the end; against a given URL the bench leaves its datasets, jobs and models behind.

Slow clients (``--slow-clients``; nginx must be installed: ``apt-get install nginx``)::

    python bench/load.py --slow-clients                   # --slow 50 --clients 4 --duration 10

starts ``nnserve up --workers 1`` in a temporary directory, then beside its API (nnserve's worker
class) a second ``nnserve api`` on the same Redis with gunicorn's plain ``gthread`` worker class, as
before (the same gunicorn command line with only the class changed), and nginx with the shipped
config (deploy/nginx.conf.template, run as tests/proxy.py runs it) in front of each. For every
server it measures ``--clients`` keep-alive clients predicting one row for ``--duration`` seconds:
with no slow connection open, with ``--slow`` connections stalled in their headers, with ``--slow``
stalled in their body, and with both at once (reopened as the server closes them). It prints
predict p50/p99, a call that failed (another status, or no answer within 5 s) counting as the
slowest. The servers are measured in turn, each slow-client kind for all of them before the next,
so that a neighbour's load hits all alike.

With ``wrk`` installed (``apt-get install wrk``) it first measures what reading requests in the
event loop costs: both APIs driven by ``wrk`` in interleaved rounds, their requests/s and the CPU
time their gunicorn processes spend per one-row prediction.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import requests

from nnserve.cli.supervisor import free_port

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, this file's folder comes first on sys.path; the slow clients and the nginx runner
# are the tests' own (tests/slowloris.py, tests/proxy.py).
sys.path.insert(0, str(ROOT))
MODEL = {
    "layers": [
        {"type": "dense", "units": 8, "activation": "relu"},
        {"type": "dense", "units": 3, "activation": "softmax"},
    ]
}
DEFAULT_MIX = "predict-1=50,predict-100=20,job-status=10,job=10,dataset=10"
TERMINAL = ("succeeded", "failed", "canceled")


@dataclass
class Tally:
    """Every request's route, status and latency, shared by the client threads."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    statuses: collections.Counter = field(default_factory=collections.Counter)
    jobs: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, route: str, status: int | str, seconds: float) -> None:
        with self.lock:
            self.latencies[route].append(seconds)
            self.statuses[(route, status)] += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", nargs="?", help="base URL of a running nnserve (default: start `nnserve up` here)")
    parser.add_argument("--clients", type=int, help="concurrent clients (default 16; 4 with --slow-clients)")
    parser.add_argument(
        "--duration", type=float, help="seconds of load (default 60; with --slow-clients, 10 per measurement)"
    )
    parser.add_argument("--mix", default=DEFAULT_MIX, help=f"route weights (default {DEFAULT_MIX})")
    parser.add_argument("--drain", type=float, default=300.0, help="seconds to wait for the jobs to end (default 300)")
    parser.add_argument("--workers", type=int, default=2, help="workers of the stack started here (default 2)")
    parser.add_argument("--api-key", default=os.environ.get("NNSERVE_API_KEY"), help="Bearer key, if the API needs one")
    parser.add_argument(
        "--slow-clients", action="store_true", help="measure predictions with slow clients open instead (see above)"
    )
    parser.add_argument("--slow", type=int, default=50, help="slow connections of each kind (default 50)")
    args = parser.parse_args(argv)
    if args.slow_clients:
        return slow_client_table(
            args.slow,
            args.clients or 4,
            args.duration or 10.0,
        )
    args.clients = args.clients or 16
    args.duration = args.duration or 60.0
    mix = {name: float(weight) for name, weight in (part.split("=") for part in args.mix.split(","))}
    unknown = set(mix) - set(REQUESTS)
    if unknown:
        parser.error(f"unknown routes in --mix: {sorted(unknown)}; known: {sorted(REQUESTS)}")

    stack = None if args.url else Stack(args.workers)
    url = args.url or stack.url
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    try:
        model_id = train_model(url, headers)
        log(f"load: {args.clients} clients for {args.duration:.0f} s against {url} (model {model_id})")
        tally = Tally()
        deadline = time.monotonic() + args.duration
        threads = [
            threading.Thread(target=client, args=(url, headers, model_id, mix, deadline, tally, seed))
            for seed in range(args.clients)
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        print_table(tally, elapsed, args.clients)
        outcome = drain(url, headers, tally.jobs, args.drain)
    finally:
        if stack is not None:
            stack.stop()
    bad_status = sum(n for (_, status), n in tally.statuses.items() if isinstance(status, str) or status >= 500)
    return 1 if bad_status or outcome["failed"] or outcome["lost"] else 0


# The requests ------------------------------------------------------------------------------


def iris_rows(rng: random.Random, n: int) -> list[list[float]]:
    return [
        [
            round(rng.uniform(4.3, 7.9), 1),
            round(rng.uniform(2.0, 4.4), 1),
            round(rng.uniform(1.0, 6.9), 1),
            round(rng.uniform(0.1, 2.5), 1),
        ]
        for _ in range(n)
    ]


def predict(n: int):
    def call(session, url, model_id, rng, mine):
        return session.post(f"{url}/v1/models/{model_id}/predict", json={"inputs": iris_rows(rng, n)}, timeout=30)

    return call


def submit_job(session, url, model_id, rng, mine):
    body = {
        "dataset": "iris",
        "model": MODEL,
        "training": {"optimizer": "adam", "epochs": 10, "batch_size": 16, "seed": rng.randrange(2**31)},
    }
    response = session.post(f"{url}/v1/jobs", json=body, timeout=30)
    if response.status_code == 202:
        mine.append(response.json()["id"])
    return response


def job_status(session, url, model_id, rng, mine):
    if not mine:
        return submit_job(session, url, model_id, rng, mine), "job"
    return session.get(f"{url}/v1/jobs/{rng.choice(mine)}", timeout=30)


def upload_dataset(session, url, model_id, rng, mine):
    labels = [rng.choice(["a", "b", "c"]) for _ in range(40)]
    features = [[rng.gauss("abc".index(label), 1.0) for _ in range(4)] for label in labels]
    return session.post(
        f"{url}/v1/datasets", json={"name": "load", "features": features, "targets": labels}, timeout=30
    )


REQUESTS = {
    "predict-1": predict(1),
    "predict-100": predict(100),
    "job": submit_job,
    "job-status": job_status,
    "dataset": upload_dataset,
}


def client(url, headers, model_id, mix, deadline, tally: Tally, seed: int) -> None:
    rng = random.Random(seed)
    session = requests.Session()
    session.headers.update(headers)
    routes, weights = list(mix), list(mix.values())
    mine: list[str] = []
    while time.monotonic() < deadline:
        route = rng.choices(routes, weights)[0]
        start = time.monotonic()
        try:
            result = REQUESTS[route](session, url, model_id, rng, mine)
            response, route = result if isinstance(result, tuple) else (result, route)
            status = response.status_code
        except requests.RequestException as error:
            status = type(error).__name__
        tally.add(route, status, time.monotonic() - start)
    with tally.lock:
        tally.jobs.extend(mine)


# Setup and the end -------------------------------------------------------------------------


def train_model(url: str, headers: dict) -> str:
    """A trained iris model for the predict routes."""
    body = {"dataset": "iris", "model": MODEL, "training": {"optimizer": "adam", "epochs": 50, "seed": 0}}
    response = requests.post(f"{url}/v1/jobs", json=body, headers=headers, timeout=30)
    response.raise_for_status()
    job = response.json()
    deadline = time.monotonic() + 120
    while job["status"] not in TERMINAL:
        if time.monotonic() > deadline:
            raise SystemExit(f"load: the setup job {job['id']} did not finish within 120 s")
        time.sleep(0.2)
        job = requests.get(f"{url}/v1/jobs/{job['id']}", headers=headers, timeout=30).json()
    if job["status"] != "succeeded":
        raise SystemExit(f"load: the setup job {job['id']} ended {job['status']}: {job.get('error')}")
    return job["model_id"]


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def print_table(tally: Tally, elapsed: float, clients: int) -> None:
    total = sum(len(v) for v in tally.latencies.values())
    print(f"\n{total} requests in {elapsed:.1f} s from {clients} clients: {total / elapsed:.0f} requests/s\n")
    print(f"{'route':<13}{'requests':>9}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}  statuses")
    for route in REQUESTS:
        values = sorted(tally.latencies.get(route, []))
        if not values:
            continue
        statuses = ", ".join(
            f"{status}: {n}" for (r, status), n in sorted(tally.statuses.items(), key=str) if r == route
        )
        print(
            f"{route:<13}{len(values):>9}{len(values) / elapsed:>8.1f}{percentile(values, 0.5) * 1000:>9.1f}"
            f"{percentile(values, 0.99) * 1000:>9.1f}  {statuses}"
        )
    errors = collections.Counter()
    for (_, status), n in tally.statuses.items():
        if isinstance(status, str) or status >= 400:
            errors[status] += n
    print("\nerrors by status: " + (", ".join(f"{s}: {n}" for s, n in sorted(errors.items(), key=str)) or "none"))


def drain(url: str, headers: dict, job_ids: list[str], seconds: float) -> dict[str, int]:
    """Wait for every submitted job to end; print and return how they ended."""
    log(f"waiting up to {seconds:.0f} s for {len(job_ids)} submitted jobs to end")
    session = requests.Session()
    session.headers.update(headers)
    pending, ended = set(job_ids), collections.Counter()
    started = time.monotonic()
    while pending and time.monotonic() - started < seconds:
        waiting = 0
        for job_id in list(pending):
            response = session.get(f"{url}/v1/jobs/{job_id}", timeout=30)
            if response.status_code == 404:
                pending.discard(job_id)
                ended["lost"] += 1  # vanished
            elif response.ok and response.json()["status"] in TERMINAL:
                pending.discard(job_id)
                ended[response.json()["status"]] += 1
                ended["retried"] += response.json()["attempts"] > 1
            else:
                waiting += 1
                if waiting == 20:  # the queue is still long: look again later rather than poll every job
                    break
        if pending:
            time.sleep(1)
    ended["lost"] += len(pending)
    outcome = {status: ended[status] for status in ("succeeded", "failed", "canceled", "lost", "retried")}
    print(
        f"\njobs: {len(job_ids)} submitted, "
        + ", ".join(f"{n} {status}" for status, n in outcome.items())
        + f" (all ended {time.monotonic() - started:.0f} s after the load)" * (not pending)
    )
    return outcome


# Slow clients -------------------------------------------------------------------------------


def slow_client_table(slow: int, clients: int, duration: float) -> int:
    from tests.proxy import Nginx
    from tests.slowloris import KINDS, SlowClients, percentile, predict_latencies

    attacks = {"none": (), **{kind: (kind,) for kind in KINDS}, "both": KINDS}
    with contextlib.ExitStack() as running:
        stack = Stack(workers=1)
        running.callback(stack.stop)
        model_id = train_model(stack.url, {})
        baseline = GthreadApi(stack)
        running.callback(baseline.stop)
        servers = {"nnserve api, gthread (before)": baseline.url, "nnserve api": stack.url}
        overhead = worker_overhead(servers, model_id) if shutil.which("wrk") else None
        for name, url in list(servers.items()):
            nginx = running.enter_context(Nginx(Path(stack.dir.name) / f"nginx-{len(servers)}", url, 64 * 1024 * 1024))
            servers[f"nginx -> {name}"] = nginx.url
        path = f"/v1/models/{model_id}/predict"
        rows: dict[str, dict[str, tuple[float, float, int]]] = collections.defaultdict(dict)
        for attack, kinds in attacks.items():
            for name, url in servers.items():
                predict_latencies(url, model_id, clients=clients, requests_each=5)  # each process loads the model
                log(f"slow clients: {name}, " + (f"{slow} stalled in their {' and '.join(kinds)}" if kinds else "none"))
                with contextlib.ExitStack() as open_slow:
                    for kind in kinds:
                        open_slow.enter_context(SlowClients(url, path, kind, slow, reopen=0.5))
                    latencies, failed = predict_latencies(url, model_id, clients=clients, seconds=duration)
                # A failed call waited 5 s or more: it counts, as the slowest, in the percentiles.
                calls = latencies + [float("inf")] * failed
                rows[name][attack] = (percentile(calls, 0.5), percentile(calls, 0.99), failed)
    print(
        f"\npredict, 1 row: {clients} keep-alive clients for {duration:.0f} s per cell; p50 / p99 in ms, a call "
        "with no answer within 5 s counting as the slowest (how many, in brackets)"
    )
    header = ["server", "no slow clients", f"{slow} stalled in headers", f"{slow} stalled in body", f"{slow} + {slow}"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for name, cells in rows.items():
        shown = [
            " / ".join("≥ 5000" if q == float("inf") else f"{q * 1000:.1f}" for q in (p50, p99))
            + (f" ({failed})" if failed else "")
            for p50, p99, failed in (cells[attack] for attack in attacks)
        ]
        print(f"| {name} | " + " | ".join(shown) + " |")
    if overhead:
        print(
            f"\nwithout slow clients, wrk -t2 -c{WRK_CONNECTIONS} -d{WRK_SECONDS}s, {WRK_ROUNDS} interleaved rounds (median):"
        )
        print("| server | requests/s | gunicorn CPU per request |\n|---|---|---|")
        for name, (rate, cpu) in overhead.items():
            print(f"| {name} | {rate:.0f} | {cpu * 1e6:.0f} µs |")
    return 0


WRK_CONNECTIONS, WRK_SECONDS, WRK_ROUNDS = 16, 4, 5


def worker_overhead(servers: dict[str, str], model_id: str) -> dict[str, tuple[float, float]]:
    """What reading requests in the event loop costs: one-row predictions driven by ``wrk`` (keep-alive,
    as fast as the server answers), each server in turn for ``WRK_ROUNDS`` rounds; the median
    requests/s and CPU time (user + system) of the server's gunicorn processes per request."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            "wrk.body = '{\"inputs\": [[5.1, 3.5, 1.4, 0.2]]}'\n"
        )
        script.flush()
        runs: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
        for _ in range(WRK_ROUNDS):
            for name, url in servers.items():
                log(f"wrk: {name}")
                before = gunicorn_cpu_seconds(url)
                command = ["wrk", "-t2", f"-c{WRK_CONNECTIONS}", f"-d{WRK_SECONDS}s", "-s", script.name]
                out = subprocess.run(
                    [*command, f"{url}/v1/models/{model_id}/predict"], capture_output=True, text=True, check=True
                ).stdout
                done = int(re.search(r"(\d+) requests in", out).group(1))
                runs[name].append((done / WRK_SECONDS, (gunicorn_cpu_seconds(url) - before) / max(1, done)))
    return {
        name: (statistics.median(r for r, _ in values), statistics.median(c for _, c in values))
        for name, values in runs.items()
    }


def gunicorn_cpu_seconds(url: str) -> float:
    """CPU time (user + system) so far of the gunicorn processes serving ``url`` (Linux's /proc)."""
    bind = urlsplit(url).netloc.encode()
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"gunicorn" in command and bind in command:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            pass  # gone meanwhile
    return total / os.sysconf("SC_CLK_TCK")


class GthreadApi:
    """A second ``nnserve api`` on the stack's Redis, with gunicorn's own gthread worker class: the
    same command line (``cli.gunicorn_command``), only the worker class changed."""

    def __init__(self, stack: Stack):
        from nnserve.cli import server as cli
        from nnserve.service.settings import Settings

        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        command = cli.gunicorn_command(Settings(redis_url=stack.redis_url, port=port, log_level="WARNING"))
        command[command.index("--worker-class") + 1] = "gthread"
        metrics = Path(stack.dir.name) / "gthread-metrics"
        metrics.mkdir()
        env = {**stack.env, "REDIS_URL": stack.redis_url, "NNSERVE_METRICS_DIR": str(metrics)}
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
        self.process = subprocess.Popen(
            command, env=env, cwd=stack.dir.name, stdout=stack.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 60
        while not ready(self.url):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit("load: the gthread API did not become ready within 60 s")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/readyz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


class Stack:
    """``nnserve up --workers N`` in a temporary directory, for a run without a URL."""

    def __init__(self, workers: int):
        self.dir = tempfile.TemporaryDirectory(prefix="nnserve-load-")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        redis_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{redis_port}/0"
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("NNSERVE_")}
        env.update(NNSERVE_LOG_LEVEL="WARNING")
        self.env = dict(env)
        env.update(NNSERVE_EMBEDDED_REDIS_PORT=str(redis_port))
        self.log = open(Path(self.dir.name) / "up.log", "wb")  # noqa: SIM115 (a child's log, open for the child's life)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "nnserve", "up", "--port", str(port), "--workers", str(workers)],
            cwd=self.dir.name,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log(f"started nnserve up --workers {workers} at {self.url} (in {self.dir.name})")
        deadline = time.monotonic() + 60
        while not ready(self.url):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit("load: nnserve up did not become ready within 60 s")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()
        self.dir.cleanup()


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
