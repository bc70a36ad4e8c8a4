"""The client verbs: ``nnserve train | predict | models | jobs``, talking to a running API over HTTP.

They reach the API at ``--url`` (default ``$NNSERVE_URL`` or http://127.0.0.1:8000) with ``--api-key``
(default ``$NNSERVE_API_KEY``) through :class:`nnserve.client.Client`; no server code is imported.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import signal
import sys
from pathlib import Path

from nnserve.client import DEFAULT_URL, Client, JobFailed, NnserveError

CLIENT_VERBS = ("train", "predict", "models", "jobs")


def add_client_options(parser: argparse.ArgumentParser, after_verb: bool = False) -> None:
    """``--url`` and ``--api-key``, accepted before the verb (``nnserve --url U models``) and after it.
    After the verb they default to nothing at all, so that they override the ones before it only when given."""
    default = argparse.SUPPRESS if after_verb else None
    parser.add_argument(
        "--url", default=default, help="the nnserve API (default: $NNSERVE_URL, else http://127.0.0.1:8000)"
    )
    parser.add_argument(
        "--api-key", default=default, help="sent as 'Authorization: Bearer KEY' (default: $NNSERVE_API_KEY)"
    )


def add_client_verbs(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    add_client_options(common, after_verb=True)
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


def run_client_verb(args: argparse.Namespace) -> int:
    # Die quietly of a closed pipe (nnserve predict ... | head), as Unix tools do, not with a traceback.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    url = args.url or os.environ.get("NNSERVE_URL") or DEFAULT_URL
    api_key = args.api_key or os.environ.get("NNSERVE_API_KEY")
    verb = {"train": cmd_train, "predict": cmd_predict, "models": cmd_models, "jobs": cmd_jobs}[args.verb]
    try:
        with Client(url, api_key=api_key) as client:
            return verb(client, args)
    except JobFailed as error:
        print(f"nnserve: {error}", file=sys.stderr)
        return 1
    except NnserveError as error:
        if error.errors:  # the detail repeats them: say what the server said once, a field per line
            print(
                f"nnserve {args.verb}: {error.status} {error.problem.get('title', 'invalid request')}", file=sys.stderr
            )
            for item in error.errors:
                print(f"  {item['loc'] or 'body'}: {item['msg']}", file=sys.stderr)
        else:
            print(f"nnserve {args.verb}: {error}", file=sys.stderr)
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
