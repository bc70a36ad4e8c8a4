"""``nnserve``: run the service, and use it from the command line.

    nnserve up [--host 127.0.0.1] [--port 8000] [--workers 2] [--data-dir .nnserve]
                                                                 Redis (embedded unless REDIS_URL is set), API and workers
    nnserve api [--host] [--port]                                the API under gunicorn
    nnserve worker [--burst]                                     one RQ worker
    nnserve train --dataset ID --spec FILE [--name N] [--wait]   submit a training job (and follow it)
    nnserve job ID [--follow]                                    show a job (and follow it, re-attaching its progress bar)
    nnserve cancel ID [--keep best|last|none]                    cancel a job
    nnserve predict MODEL --input rows.csv [--format csv|json]   predict for rows of features
    nnserve evaluate MODEL --dataset ID                          a model's loss and metrics on a dataset
    nnserve weights MODEL -o FILE                                download a model's weights (.npz)
    nnserve export MODEL --onnx -o FILE                          download a model as ONNX
    nnserve import FILE [--weights W] [--name N] [--classes JSON]
                                                                 serve a Keras (.keras, or JSON + weights) or nnserve model
    nnserve upload FILE [--target COL] [--name N]                upload a CSV file as a dataset
    nnserve delete dataset|model|job ID                          delete one
    nnserve sweep --spec FILE [--wait] | ID [--wait] [--cancel]  submit a sweep, or show, follow or cancel one
    nnserve datasets | models | jobs | sweeps [--limit N] [--json]  list them
    nnserve keys create --scope S [--tenant T] | list | revoke ID API keys stored in Redis (no restart needed)
    nnserve backup -o FILE [--tenant T]                          datasets, jobs, models, names and keys, to one archive
    nnserve restore FILE [--force]                               and back into Redis

The client verbs reach the API at ``--url`` (default ``$NNSERVE_URL`` or http://127.0.0.1:8000) with
``--api-key`` (default ``$NNSERVE_API_KEY``), given before or after the verb. The operator's verbs (keys,
backup, restore) talk to Redis directly (``REDIS_URL``). Exit codes: 0 done, 1 the server said no (or did
not answer), 2 a usage error.

Settings come from the environment (see ``nnserve.service.settings``); the options override them.
Each verb is a function taking its parsed arguments: the server verbs in ``server``, the process
supervisor they share in ``supervisor``, the client verbs in ``verbs``, the operator's in ``admin``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import ValidationError

from nnserve import __version__
from nnserve.service.settings import Settings

from . import server
from .admin import ADMIN_VERBS, add_admin_verbs, run_admin_verb
from .verbs import CLIENT_VERBS, EXIT_CODES, add_client_options, add_client_verbs, run_client_verb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nnserve",
        description="Train neural networks and serve their predictions over HTTP.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    add_admin_verbs(verbs)
    args = parser.parse_args(argv)
    if args.verb in CLIENT_VERBS:  # these talk to a running API: no server settings
        return run_client_verb(args)
    if args.verb in ADMIN_VERBS:
        return run_admin_verb(Settings(), args)
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
