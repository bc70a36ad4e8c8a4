"""The client verbs, talking to a running API over HTTP: ``train``, ``predict``, ``evaluate``, ``report``,
``weights``, ``upload``, ``job`` (``--follow``), ``cancel``, ``delete``, ``sweep`` (``--spec``, ``--wait``,
``--cancel``), the listings ``datasets``, ``models``, ``jobs`` and ``sweeps`` (``--json`` on each), and the
registry's ``registry [NAME]``, ``alias`` and ``rollback``. Wherever a model is named, any model reference
works: ``mdl_…``, ``NAME``, ``NAME@ALIAS``, ``NAME@N``.

They reach the API at ``--url`` (default ``$NNSERVE_URL`` or http://127.0.0.1:8000) with ``--api-key``
(default ``$NNSERVE_API_KEY``) through :class:`nnserve.client.Client`; no server code is imported.
A verb is a function ``cmd_<verb>(client, args) -> exit status`` listed in ``VERBS``, with its
arguments added in ``add_client_verbs``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import signal
import sys
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

from nnserve.client import DEFAULT_URL, FINISHED, Client, JobFailed, NnserveError

EXIT_CODES = """exit status:
  0  done
  1  the server said no (an error answer, a failed job) or did not answer
  2  a usage error: a bad option, or a file or URL that cannot be used"""


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

    def verb(name: str, help: str) -> argparse.ArgumentParser:
        return verbs.add_parser(
            name, parents=[common], help=help, epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter
        )

    train = verb("train", "submit a training job")
    train.add_argument("--dataset", required=True, help="dataset id: iris, blobs, linear or an uploaded one")
    train.add_argument("--spec", required=True, type=Path, help='JSON file: {"model": {...}, "training": {...}}')
    train.add_argument("--name", help="the registered model name: the model becomes its next version")
    train.add_argument(
        "--promote",
        type=promote_policy,
        help="with --name: always (default), never, or if_better:METRIC[:MIN_DELTA] (say if_better:val_accuracy)",
    )
    train.add_argument("--wait", action="store_true", help="follow the job to its end, with a progress bar")
    train.add_argument(
        "--initial-model", help="continue training from this model (the spec's model may then be left out)"
    )
    predict = verb("predict", "predict for rows of features")
    predict.add_argument("model", help="model id or reference (NAME, NAME@ALIAS, NAME@N)")
    predict.add_argument("--input", required=True, help="CSV of feature rows, header optional ('-': standard input)")
    predict.add_argument("--format", choices=("csv", "json"), default="csv", help="output format (default csv)")
    evaluate = verb("evaluate", "a model's loss and metrics on a dataset")
    evaluate.add_argument("model", help="model id")
    evaluate.add_argument("--dataset", required=True, help="dataset id")
    evaluate.add_argument("--json", action="store_true", help="print the API's JSON")
    report = verb("report", "a model's evaluation report: confusion matrix, per-class figures, calibration")
    report.add_argument("model", help="model id")
    report.add_argument("--dataset", help="compute it on this dataset (default: the one stored at training)")
    report.add_argument("--json", action="store_true", help="print the API's JSON")
    weights = verb("weights", "download a model's weights (.npz)")
    weights.add_argument("model", help="model id")
    weights.add_argument("-o", "--output", required=True, help="file to write ('-': standard output)")
    export = verb("export", "download a model in another format")
    export.add_argument("model", help="model id or reference (NAME, NAME@ALIAS, NAME@N)")
    export.add_argument("--onnx", action="store_true", required=True, help="as ONNX (the only format so far)")
    export.add_argument("-o", "--output", required=True, help="file to write ('-': standard output)")
    imported = verb("import", "serve a model trained elsewhere (Keras .keras, JSON and weights, nnserve .npz)")
    imported.add_argument("file", type=Path, help="a .keras archive, an nnserve .npz, or a Keras JSON document")
    imported.add_argument("--weights", type=Path, help="with a JSON document: its .weights.h5 or .npz")
    imported.add_argument("--name", help="the model's name")
    imported.add_argument("--classes", help='the class labels in output order, as JSON: \'["a", "b"]\'')
    imported.add_argument("--feature-names", help="the input columns' names, as a JSON array")
    imported.add_argument("--json", action="store_true", help="print the API's JSON")
    upload = verb("upload", "upload a CSV file with a header row, or an .npz of arrays x and y, as a dataset")
    upload.add_argument("file", type=Path, help="the CSV file, or an .npz (numpy.savez) holding x and y")
    upload.add_argument("--target", help="the target column (default: the last)")
    upload.add_argument("--name", help="the dataset's name (default: the file's)")
    upload.add_argument("--target-kind", choices=("categorical", "continuous"), help="default: inferred")
    upload.add_argument(
        "--shape",
        type=_shape,
        help="the shape of one sample, like 8,8,1: the feature columns (or flat rows) are its values",
    )
    upload.add_argument("--json", action="store_true", help="print the API's JSON")
    job = verb("job", "show a job; --follow re-attaches its live progress bar")
    job.add_argument("job", help="job id")
    job.add_argument("--follow", action="store_true", help="follow the job to its end, with a progress bar")
    job.add_argument("--json", action="store_true", help="print the API's JSON")
    cancel = verb("cancel", "cancel a job")
    cancel.add_argument("job", help="job id")
    cancel.add_argument("--keep", choices=("best", "last", "none"), help="keep the weights learned so far")
    delete = verb("delete", "delete a dataset, a model or a finished job")
    delete.add_argument("kind", choices=("dataset", "model", "job"))
    delete.add_argument("id")
    delete.add_argument("--force", action="store_true", help="a model version that aliases point at (they go too)")
    registry = verb("registry", "list your registered model names, or one name's versions")
    registry.add_argument("name", nargs="?", help="a registered name: show its versions, aliases and moves")
    registry.add_argument("--limit", type=int, default=50, help="at most this many names (default 50)")
    registry.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    alias = verb("alias", "point an alias of a registered name at a version (--delete: remove it)")
    alias.add_argument("name", help="the registered name")
    alias.add_argument("alias", help="current, staging, champion ...")
    alias.add_argument("version", nargs="?", help="a version number, or a split such as 3=90,4=10")
    alias.add_argument("--shadow", type=int, help="also run this version on the requests, in the background")
    alias.add_argument("--delete", action="store_true", help="remove the alias")
    rollback = verb("rollback", "move current back (default: to where previous points)")
    rollback.add_argument("name", help="the registered name")
    rollback.add_argument("version", nargs="?", type=int, help="the version to make current (default: previous)")
    sweep = verb("sweep", "submit a sweep (--spec), or show one (ID); --wait follows it to its end")
    sweep.add_argument("sweep", nargs="?", help="sweep id (to show, follow or cancel one)")
    sweep.add_argument("--spec", type=Path, help="JSON file: a job document with search_space and the sweep's options")
    sweep.add_argument(
        "--wait", action="store_true", help="follow the sweep to its end: trials done, pruned, running, best"
    )
    sweep.add_argument("--dataset", help="train the sweep's trials on this dataset id (instead of the spec's)")
    sweep.add_argument("--cancel", action="store_true", help="cancel the sweep ID")
    sweep.add_argument("--json", action="store_true", help="print the API's JSON")
    for noun in ("datasets", "models", "jobs", "sweeps"):
        listing = verb(
            noun, f"list your {noun}, newest first" + (" (after the built-ins)" if noun == "datasets" else "")
        )
        listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
        listing.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")


def run_client_verb(args: argparse.Namespace) -> int:
    # Die quietly of a closed pipe (nnserve predict ... | head), as Unix tools do, not with a traceback.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    url = args.url or os.environ.get("NNSERVE_URL") or DEFAULT_URL
    api_key = args.api_key or os.environ.get("NNSERVE_API_KEY")
    verb = VERBS[args.verb]
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
    spec = _read_spec(args.spec, model_required=args.initial_model is None)
    job = client.train(
        args.dataset,
        spec.get("model"),
        spec.get("training"),
        name=args.name,
        promote=args.promote,
        initial_model=args.initial_model,
    )
    print(f"{'job':<13}{job['id']}\n{'model':<13}{job['model_id']}", flush=True)
    if not args.wait:
        print(f"{'status':<13}{job['status']}")
        return 0
    job = _follow(client, job["id"])
    if job is None:
        return 130
    print(f"{'status':<13}{job['status']} ({job['progress']['epoch']}/{job['progress']['epochs']} epochs)")
    for name, value in client.get_model(job["model_id"])["metrics"].items():
        print(f"{name:<13}{value:.4f}")
    if job.get("version") is not None:
        print(f"{'version':<13}{job['name']}@{job['version']}")
    if job.get("promotion"):
        print(f"{'promotion':<13}{job['promotion']['decision']}: {job['promotion']['reason']}")
    return 0


def promote_policy(text: str) -> str | dict:
    """``always``, ``never`` or ``if_better:METRIC[:MIN_DELTA]`` as the API takes it (argparse type)."""
    if text in ("always", "never"):
        return text
    kind, _, rest = text.partition(":")
    metric, _, delta = rest.partition(":")
    if kind != "if_better" or not metric:
        raise argparse.ArgumentTypeError(f"always, never or if_better:METRIC[:MIN_DELTA]; received {text!r}")
    try:
        min_delta = float(delta) if delta else 0.0
    except ValueError:
        raise argparse.ArgumentTypeError(f"MIN_DELTA must be a number; received {delta!r}") from None
    return {"if_better": {"metric": metric, "min_delta": min_delta}}


def _target(target: Any) -> str:
    """An alias target as the tables show it: ``3``, ``3=90,4=10``, ``3 (shadow 4)``."""
    if isinstance(target, dict) and "split" in target:
        return ",".join(f"{v}={w:g}" for v, w in target["split"].items())
    if isinstance(target, dict):
        return f"{target['version']} (shadow {target['shadow']})"
    return str(target)


def _aliases(aliases: dict[str, Any]) -> str:
    return " ".join(f"{alias}={_target(target)}" for alias, target in aliases.items())


def cmd_registry(client, args) -> int:
    if args.name is None:
        names = list(_first(client.iter_registry(page_size=min(args.limit, 1000)), args.limit))
        if args.json:
            return _json(names)
        rows = [
            [n["name"], str(n["versions"]), _aliases(n["aliases"]), (n.get("updated_at") or "")[:19]] for n in names
        ]
        print(_table(["NAME", "VERSIONS", "ALIASES", "UPDATED"], rows))
        return 0
    detail = client.get_registered(args.name)
    if args.json:
        return _json(detail)
    pointing: dict[int, list[str]] = {}
    for alias, target in detail["aliases"].items():
        versions = [int(v) for v in target["split"]] if isinstance(target, dict) and "split" in target else []
        versions += [target["version"]] if isinstance(target, dict) and "version" in target else []
        for version in versions or ([target] if isinstance(target, int) else []):
            pointing.setdefault(version, []).append(alias)
    rows = [
        [
            str(v["version"]),
            ",".join(pointing.get(v["version"], [])),
            v["model_id"],
            v["status"],
            _headline(v["metrics"]),
            (v.get("promotion") or {}).get("decision", ""),
            v["created_at"][:19],
        ]
        for v in detail["versions"]
    ]
    print(_table(["VERSION", "ALIASES", "MODEL", "STATUS", "METRICS", "PROMOTION", "CREATED"], rows))
    if detail.get("shadow"):
        shadow = detail["shadow"]
        print(
            f"\nshadow {shadow['shadow']} of {shadow['version']}: {shadow['requests']} requests, "
            f"label agreement {shadow.get('label_agreement')}, mean |diff| {shadow.get('mean_abs_diff')}"
        )
    return 0


def cmd_alias(client, args) -> int:
    if args.delete:
        client.delete_alias(args.name, args.alias)
        print(f"{args.name}@{args.alias} removed")
        return 0
    if args.version is None:
        raise UsageError("give a VERSION (or a split such as 3=90,4=10), or --delete")
    try:
        if "=" in args.version:
            split = {int(v): float(w) for v, w in (part.split("=") for part in args.version.split(","))}
            aliases = client.set_alias(args.name, args.alias, split=split)
        else:
            aliases = client.set_alias(args.name, args.alias, int(args.version), shadow=args.shadow)
    except ValueError:
        raise UsageError(f"VERSION is a number or a split such as 3=90,4=10; received {args.version!r}") from None
    print(_aliases(aliases))
    return 0


def cmd_rollback(client, args) -> int:
    aliases = client.rollback(args.name, args.version)
    print(f"{args.name}: current={_target(aliases['current'])} (previous={_target(aliases.get('previous'))})")
    return 0


def _follow(client: Client, job_id: str) -> dict | None:
    """Wait for the job with a progress bar (drawn on a terminal only); None when interrupted (Ctrl-C)."""
    try:
        return client.wait(job_id, progress=True)
    except KeyboardInterrupt:
        print(
            f"\nstopped following; the job goes on (nnserve job {job_id} --follow, or nnserve cancel {job_id})",
            file=sys.stderr,
        )
        return None


def _read_spec(path: Path, model_required: bool = True) -> dict:
    try:
        spec = json.loads(path.read_text())
    except OSError as error:
        raise UsageError(f"cannot read the spec file: {error}") from None
    except ValueError as error:
        raise UsageError(f"{path} is not JSON: {error}") from None
    if not isinstance(spec, dict) or ("model" not in spec and model_required) or set(spec) - {"model", "training"}:
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
    models = list(_first(client.iter_models(page_size=min(args.limit, 1000)), args.limit))
    if args.json:
        return _json(models)
    print(
        _table(
            ["ID", "NAME", "STATUS", "DATASET", "TASK", "METRICS", "PARAMS", "CREATED"],
            [
                [
                    m["id"],
                    m.get("name") or "",
                    m["status"],
                    m.get("dataset_id") or f"({m.get('source') or 'imported'})",
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
    jobs = list(_first(client.iter_jobs(page_size=min(args.limit, 1000)), args.limit))
    if args.json:
        return _json(jobs)
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


def cmd_sweep(client, args) -> int:
    if (args.spec is None) == (args.sweep is None):
        raise UsageError("give a sweep's --spec FILE to submit one, or a sweep ID to show it")
    if args.spec is not None:
        try:
            spec = json.loads(args.spec.read_text())
        except OSError as error:
            raise UsageError(f"cannot read the spec file: {error}") from None
        except ValueError as error:
            raise UsageError(f"{args.spec} is not JSON: {error}") from None
        if not isinstance(spec, dict):
            raise UsageError(f"{args.spec} must hold a JSON object: a job document with a search_space")
        if args.dataset:
            spec["dataset"] = args.dataset
        sweep = client.sweep(spec)
        if not args.json:
            print(f"{'sweep':<13}{sweep['id']}", flush=True)
    elif args.cancel:
        sweep = client.cancel_sweep(args.sweep)
    else:
        sweep = client.get_sweep(args.sweep)
    if args.wait:
        interactive = sys.stderr.isatty()
        last = [""]

        def progress(current: dict) -> None:
            line = _sweep_progress(current)
            if line != last[0]:
                print(
                    ("\r\033[K" if interactive else "") + line,
                    end="" if interactive else "\n",
                    file=sys.stderr,
                    flush=True,
                )
                last[0] = line

        try:
            sweep = client.wait_sweep(sweep["id"], on_update=progress)
        except KeyboardInterrupt:
            print(f"\nstopped following; the sweep goes on (nnserve sweep {sweep['id']} --wait)", file=sys.stderr)
            return 130
        if interactive:
            print(file=sys.stderr)
    if args.json:
        return _json(client.get_sweep(sweep["id"]))
    sweep = client.get_sweep(sweep["id"])
    best = sweep.get("best")
    _fields(
        status=sweep["status"],
        trials=f"{sum(sweep['counts'].values())}/{sweep['trials_total']}",
        objective=f"{sweep['objective']['direction']} {sweep['objective']['metric']}",
        best=None if best is None else f"{best['objective']:.4f} (job {best['job_id']})",
        winner=(sweep.get("winner") or {}).get("model_id"),
    )
    if best is not None:
        for path, value in best["parameters"].items():
            print(f"  {path} = {value}")
    rows = sweep.get("trials") or []
    if rows:
        print(
            _table(
                ["#", "JOB", "STATUS", "EPOCHS", "OBJECTIVE", "SECONDS", "PARAMETERS"],
                [
                    [
                        str(t["number"]),
                        t.get("job_id") or "",
                        t["status"],
                        str(t["epochs"]),
                        "" if t.get("objective") is None else f"{t['objective']:.4f}",
                        "" if t.get("duration_s") is None else f"{t['duration_s']:.1f}",
                        " ".join(f"{path.rsplit('.', 1)[-1]}={_short(v)}" for path, v in t["parameters"].items()),
                    ]
                    for t in rows
                ],
            )
        )
    return 0


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _sweep_progress(sweep: dict) -> str:
    """``trials done/total: n succeeded, n pruned, n running; best ...`` for a sweep being followed."""
    counts = sweep["counts"]
    done = sum(n for status, n in counts.items() if status in FINISHED)
    best = sweep.get("best")
    shown = f"best {sweep['objective']['metric']} {best['objective']:.4f}" if best else "no best yet"
    return (
        f"sweep {sweep['id']}: {done}/{sweep['trials_total']} trials done "
        f"({counts.get('succeeded', 0)} succeeded, {counts.get('pruned', 0)} pruned, "
        f"{counts.get('failed', 0) + counts.get('canceled', 0)} failed or canceled), {counts.get('running', 0)} running; {shown}"
    )


def cmd_sweeps(client, args) -> int:
    sweeps = list(_first(client.iter_sweeps(page_size=min(args.limit, 1000)), args.limit))
    if args.json:
        return _json(sweeps)
    print(
        _table(
            ["ID", "NAME", "STATUS", "TRIALS", "STRATEGY", "BEST", "CREATED"],
            [
                [
                    s["id"],
                    s.get("name") or "",
                    s["status"],
                    f"{sum(s['counts'].values())}/{s['trials_total']}",
                    s["strategy"],
                    "" if not s.get("best") else f"{s['objective']['metric']}={s['best']['objective']:.4f}",
                    s["created_at"][:19],
                ]
                for s in sweeps
            ],
        )
    )
    return 0


def cmd_datasets(client, args) -> int:
    datasets = list(_first(client.iter_datasets(page_size=min(args.limit, 1000)), args.limit))
    if args.json:
        return _json(datasets)
    print(
        _table(
            ["ID", "NAME", "ROWS", "FEATURES", "TARGET", "CLASSES", "CREATED"],
            [
                [
                    d["id"],
                    d["name"],
                    str(d["n_samples"]),
                    str(d["n_features"]),
                    d["target_kind"],
                    _classes(d.get("classes")),
                    "built-in" if d.get("builtin") else d["created_at"][:19],
                ]
                for d in datasets
            ],
        )
    )
    return 0


def _shape(text: str) -> list[int]:
    """``--shape 8,8,1`` (or ``[8, 8, 1]``) as a list of integers; the API checks them."""
    try:
        return [int(part) for part in text.strip("[] ").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a shape is integers separated by commas, like 8,8,1; received {text!r}"
        ) from None


def cmd_upload(client, args) -> int:
    if not args.file.is_file():
        raise UsageError(f"no such file: {args.file}")
    if args.file.suffix.lower() == ".npz":
        if args.target:
            raise UsageError("--target names a CSV column; an .npz holds its targets as y")
        dataset = client.upload_npz(args.file, name=args.name, target_kind=args.target_kind, shape=args.shape)
    else:
        dataset = client.upload_csv(
            args.file, target=args.target, name=args.name, target_kind=args.target_kind, shape=args.shape
        )
    if args.json:
        return _json(dataset)
    _fields(
        dataset=dataset["id"],
        name=dataset["name"],
        rows=dataset["n_samples"],
        features=", ".join(dataset.get("feature_names") or []) or dataset["n_features"],
        shape=" x ".join(map(str, dataset["sample_shape"])) if len(dataset.get("sample_shape") or []) > 1 else None,
        target=f"{dataset.get('target_name') or ''} ({dataset['target_kind']})".strip(),
        classes=_classes(dataset.get("classes")) or None,
        note=dataset.get("note"),
    )
    return 0


def cmd_job(client, args) -> int:
    job = client.get_job(args.job)
    if args.follow and job["status"] not in FINISHED:
        try:
            followed = _follow(client, args.job)
        except JobFailed as failed:  # shown all the same, then exit status 1
            followed = failed.job
        if followed is None:
            return 130
        job = followed
    if args.json:
        return _json(job)
    progress = job["progress"]
    _fields(
        job=job["id"],
        name=job.get("name"),
        status=job["status"],
        epochs=f"{progress['epoch']}/{progress['epochs']}",
        dataset=job["dataset_id"],
        model=job["model_id"],
        created=job["created_at"],
        started=job.get("started_at"),
        finished=job.get("finished_at"),
        error=f"{job['error']['type']}: {job['error']['detail']}" if job.get("error") else None,
        **{name: f"{values[-1]:.4f}" for name, values in (job.get("history") or {}).items() if values},
    )
    return 1 if args.follow and job["status"] != "succeeded" else 0


def cmd_cancel(client, args) -> int:
    job = client.cancel(args.job, keep=args.keep)
    keeping = f", keeping its {args.keep} epoch's weights" if args.keep in ("best", "last") else ""
    _fields(
        job=job["id"],
        status=job["status"] + (f" (stopping at the end of its epoch{keeping})" if job["status"] == "running" else ""),
    )
    return 0


def cmd_report(client, args) -> int:
    report = client.report(args.model, args.dataset)
    if args.json:
        return _json(report)
    _fields(
        on=report.get("on") or report.get("note"),
        rows=report.get("rows"),
        **{
            name: f"{report[name]:.4f}"
            for name in ("accuracy", "log_loss", "roc_auc", "mae", "rmse", "r2")
            if report.get(name) is not None
        },
        ece=f"{report['calibration']['ece']:.4f}" if "calibration" in report else None,
    )
    if "per_class" in report:
        rows = [
            [label, *(f"{figures[f]:.4f}" for f in ("precision", "recall", "f1")), str(figures["support"])]
            for label, figures in [
                *report["per_class"].items(),
                ("macro avg", report["macro_avg"]),
                ("weighted avg", report["weighted_avg"]),
            ]
        ]
        print("\n" + _table(["class", "precision", "recall", "f1", "support"], rows))
        labels = [str(label) for label in report["labels"]]
        matrix = [[f"true {label}", *map(str, counts)] for label, counts in zip(labels, report["confusion_matrix"])]
        print("\n" + _table(["confusion", *(f"pred {label}" for label in labels)], matrix))
    if "residual_quantiles" in report:
        quantiles = report["residual_quantiles"]
        print("\nresiduals    " + "  ".join(f"{q}%={v:.4g}" for q, v in quantiles.items() if v is not None))
    return 0


def cmd_delete(client, args) -> int:
    if args.kind == "model":
        client.delete_model(args.id, force=args.force)
    else:
        {"dataset": client.delete_dataset, "job": client.delete_job}[args.kind](args.id)
    print(f"deleted {args.kind} {args.id}")
    return 0


def cmd_evaluate(client, args) -> int:
    result = client.evaluate(args.model, args.dataset)
    if args.json:
        return _json(result)
    _fields(
        dataset=result["dataset_id"],
        rows=result["n_samples"],
        loss=f"{result['loss']:.4f}",
        **{name: f"{value:.4f}" for name, value in result["metrics"].items()},
    )
    return 0


def cmd_weights(client, args) -> int:
    return _write(client.weights(args.model), args.output, "the weights")


def cmd_export(client, args) -> int:
    return _write(client.onnx(args.model), args.output, "the ONNX model")


def cmd_import(client, args) -> int:
    for path in (args.file, args.weights):
        if path is not None and not path.is_file():
            raise UsageError(f"no such file: {path}")
    lists = {}
    for option in ("classes", "feature_names"):
        text = getattr(args, option)
        if text is not None:
            try:
                lists[option] = json.loads(text)
            except json.JSONDecodeError:
                raise UsageError(f'--{option.replace("_", "-")} must be a JSON array: \'["a", "b"]\'') from None
    model = client.import_model(args.file, weights=args.weights, name=args.name, **lists)
    if args.json:
        return _json(model)
    _fields(
        model=model["id"],
        name=model.get("name"),
        source=model.get("source"),
        task=model["output"]["kind"],
        classes=_classes(model["output"].get("classes")) or None,
        features=model["input"]["n_features"],
        parameters=model["n_parameters"],
    )
    return 0


def _write(blob: bytes, output: str, what: str) -> int:
    if output == "-":
        sys.stdout.buffer.write(blob)
        sys.stdout.flush()
        return 0
    try:
        Path(output).write_bytes(blob)
    except OSError as error:
        raise UsageError(f"cannot write {what}: {error}") from None
    print(f"{output} ({len(blob)} bytes)")
    return 0


VERBS = {
    "train": cmd_train,
    "predict": cmd_predict,
    "evaluate": cmd_evaluate,
    "report": cmd_report,
    "weights": cmd_weights,
    "export": cmd_export,
    "import": cmd_import,
    "upload": cmd_upload,
    "job": cmd_job,
    "cancel": cmd_cancel,
    "delete": cmd_delete,
    "datasets": cmd_datasets,
    "models": cmd_models,
    "jobs": cmd_jobs,
    "registry": cmd_registry,
    "alias": cmd_alias,
    "rollback": cmd_rollback,
    "sweep": cmd_sweep,
    "sweeps": cmd_sweeps,
}
CLIENT_VERBS = tuple(VERBS)


def _first(records: Iterator[dict], limit: int) -> Iterator[dict]:
    if limit < 1:
        raise UsageError(f"--limit must be 1 or more; received {limit}")
    return islice(records, limit)


def _json(body: Any) -> int:
    print(json.dumps(body, indent=2))
    return 0


def _fields(**fields: Any) -> None:
    """``name   value`` lines, leaving out the fields without a value."""
    for name, value in fields.items():
        if value is not None:
            print(f"{name:<12} {value}")


def _classes(classes: list | None) -> str:
    if not classes:
        return ""
    shown = ", ".join(map(str, classes[:5]))
    return shown + (f" (+{len(classes) - 5})" if len(classes) > 5 else "")


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
