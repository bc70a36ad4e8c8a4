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
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
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
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    parser.add_argument("--mix", default=DEFAULT_MIX, help=f"route weights (default {DEFAULT_MIX})")
    parser.add_argument("--drain", type=float, default=300.0, help="seconds to wait for the jobs to end (default 300)")
    parser.add_argument("--workers", type=int, default=2, help="workers of the stack started here (default 2)")
    parser.add_argument("--api-key", default=os.environ.get("NNSERVE_API_KEY"), help="Bearer key, if the API needs one")
    args = parser.parse_args(argv)
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


class Stack:
    """``nnserve up --workers N`` in a temporary directory, for a run without a URL."""

    def __init__(self, workers: int):
        self.dir = tempfile.TemporaryDirectory(prefix="nnserve-load-")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("NNSERVE_")}
        env.update(PYTHONPATH=str(ROOT), NNSERVE_LOG_LEVEL="WARNING")
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
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit("load: nnserve up did not become ready within 60 s")
            time.sleep(0.2)

    def _ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

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
