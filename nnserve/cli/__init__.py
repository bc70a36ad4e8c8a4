"""``nnserve``: run the service.

    nnserve up [--host 127.0.0.1] [--port 8000] [--workers 2] [--data-dir .nnserve]
                                                                 Redis (embedded unless REDIS_URL is set), API and workers
    nnserve api [--host] [--port]                                the API under gunicorn
    nnserve worker [--burst]                                     one RQ worker
    nnserve train --dataset ID --spec FILE [--wait]              submit a training job (and follow it)
    nnserve predict MODEL --input rows.csv [--format csv|json]   predict for rows of features
    nnserve models | jobs [--json]                               list them

The client verbs (train, predict, models, jobs) reach the API at ``--url`` (default
``$NNSERVE_URL`` or http://127.0.0.1:8000) with ``--api-key`` (default ``$NNSERVE_API_KEY``),
given before or after the verb. Exit codes: 0 done, 1 the server said no (or did not answer),
2 a usage error.

Settings come from the environment (see ``nnserve.service.settings``); the options override them.
Each verb is a function taking its parsed arguments: the server verbs in ``server``, the process
supervisor they share in ``supervisor``, the client verbs in ``verbs``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import ValidationError

from nnserve import __version__
from nnserve.service.settings import Settings

from . import server
from .verbs import CLIENT_VERBS, add_client_options, add_client_verbs, run_client_verb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nnserve", description="Train neural networks and serve their predictions over HTTP."
    )
    parser.add_argument("--version", action="version", version=f"nnserve {__version__}")
    add_client_options(parser)
    verbs = parser.add_subparsers(dest="verb", required=True)
    up = verbs.add_parser("up", help="Redis (embedded unless REDIS_URL is set), the API and workers, together")
    api = verbs.add_parser("api", help="the HTTP API under gunicorn")
    for verb in (up, api):
        verb.add_argument("--host", help="address to listen on (default 127.0.0.1)")
        verb.add_argument("--port", type=int, help="port to listen on (default 8000)")
    up.add_argument("--workers", type=int, help="RQ workers to start (default 2)")
    up.add_argument(
        "--data-dir", type=Path, help="where the embedded Redis keeps its data (default ./.nnserve; NNSERVE_DATA_DIR)"
    )
    worker = verbs.add_parser("worker", help="one RQ worker")
    worker.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    add_client_verbs(verbs)
    args = parser.parse_args(argv)
    if args.verb in CLIENT_VERBS:  # these talk to a running API: no server settings
        return run_client_verb(args)
    overrides = {k: v for k, v in vars(args).items() if k in ("host", "port", "workers", "data_dir") and v is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])).upper() or 'settings'}: {e['msg']}" for e in error.errors(include_url=False)
        )
        raise SystemExit(f"nnserve {args.verb}: invalid settings: {problems}") from None
    command = {"up": server.cmd_up, "api": server.cmd_api, "worker": server.cmd_worker}[args.verb]
    return command(settings, args)
