"""Sweep benchmark: a random sweep on scikit-learn's digits over 2 workers, unpruned and with ASHA.

    python bench/sweep.py                         # starts `nnserve up --workers 2` in a temp dir
    python bench/sweep.py --trials 48 --epochs 30 --repeats 1
    python bench/sweep.py http://127.0.0.1:8000   # against a running stack (its workers, whatever their number)

Both sweeps ask for the same trials (the same seed: each trial's sampler is seeded by the sweep's seed
and the trial's number), run one after the other on the same stack, in alternation when repeated.
It prints, per sweep (medians over the repeats):

- wall: from the sweep's creation to its end (the sweep record's ``created_at`` and ``finished_at``);
- ideal: the sum of the trials' own run times (each job's ``started_at`` to ``finished_at``) / workers;
- overhead: wall / ideal - 1 (the target: at most 15 % for the unpruned sweep);
- scheduling: per trial, from its job being created (right after the ask) to a worker starting it
  (median and 90th percentile, ms), so the gap one trial leaves between two;
- best val_accuracy and the epochs trained; for ASHA, both against the unpruned sweep's (targets:
  within 0.5 % of its best accuracy while training at most 40 % of its epochs);
- the peer: the unpruned sweep's trials submitted again as ordinary jobs, all at once (wall from the first
  submission to the last end), which is what the job system itself costs per job with no sweep involved.

Digits comes from scikit-learn (the bench extra); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from datetime import datetime

from load import Stack, log  # bench/load.py: `nnserve up` in a temporary directory

from nnserve import Client

SPACE = {
    "training.optimizer.learning_rate": {"log_uniform": [0.0001, 0.3]},
    "model.layers.0.units": {"choice": [16, 32, 64]},
    "training.batch_size": {"choice": [16, 32, 64]},
}


def spec(dataset: str, trials: int, epochs: int, workers: int, seed: int, pruner) -> dict:
    return {
        "dataset": dataset,
        "model": {
            "layers": [
                {"type": "dense", "units": 32, "activation": "relu"},
                {"type": "dense", "units": 10, "activation": "softmax"},
            ]
        },
        "training": {"optimizer": {"name": "adam"}, "epochs": epochs, "validation_split": 0.2, "seed": 0},
        "search_space": SPACE,
        "strategy": "random",
        "trials": trials,
        "parallelism": workers,
        "seed": seed,
        "objective": {"metric": "val_accuracy"},
        "pruner": pruner,
    }


def seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def with_parameters(body: dict, parameters: dict) -> dict:
    """The sweep's job document with one trial's values set at their dotted paths."""
    document = copy.deepcopy({"model": body["model"], "training": body["training"]})
    for path, value in parameters.items():
        *parents, last = path.split(".")
        node = document
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[int(last) if isinstance(node, list) else last] = value
    return document


def plain_jobs(nn: Client, dataset: str, body: dict, trials: list[dict], workers: int) -> dict:
    """The peer: the same trials' documents as ordinary jobs, all submitted at once (no sweep between them)."""
    documents = [with_parameters(body, trial["parameters"]) for trial in trials]
    submitted = [nn.train(dataset, d["model"], d["training"]) for d in documents]
    jobs = [nn.wait(job["id"], progress=False) for job in submitted]
    own = sum(seconds(j["started_at"], j["finished_at"]) for j in jobs)
    wall = seconds(min(j["created_at"] for j in jobs), max(j["finished_at"] for j in jobs))
    return {
        "wall": wall,
        "ideal": own / workers,
        "overhead": wall / (own / workers) - 1,
        "sched_p50": float("nan"),
        "sched_p90": float("nan"),
        "best": max(j["history"]["val_accuracy"][-1] for j in jobs),
        "epochs": sum(j["progress"]["epoch"] for j in jobs),
        "pruned": 0,
        "trials": len(jobs),
    }


def run(nn: Client, body: dict, workers: int) -> dict:
    sweep = nn.sweep(body)
    sweep = nn.wait_sweep(sweep["id"], poll=0.5)
    jobs = [nn.get_job(t["job_id"]) for t in sweep["trials"] if t["job_id"]]
    own = sum(seconds(j["started_at"], j["finished_at"]) for j in jobs)
    scheduling = sorted(seconds(j["created_at"], j["started_at"]) * 1000 for j in jobs)
    wall = seconds(sweep["created_at"], sweep["finished_at"])
    return {
        "wall": wall,
        "ideal": own / workers,
        "overhead": wall / (own / workers) - 1,
        "sched_p50": statistics.median(scheduling),
        "sched_p90": scheduling[int(0.9 * (len(scheduling) - 1))],
        "best": sweep["best"]["objective"] if sweep.get("best") else float("nan"),
        "epochs": sum(t["epochs"] for t in sweep["trials"]),
        "pruned": sweep["counts"].get("pruned", 0),
        "trials": len(jobs),
        "rows": sweep["trials"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", nargs="?", help="a running nnserve (default: start `nnserve up` here)")
    parser.add_argument("--workers", type=int, default=2, help="workers to start, or that the URL's stack has")
    parser.add_argument("--trials", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=1, help="run both sweeps this many times, alternating")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-epochs", type=int, default=2, help="ASHA's first rung")
    parser.add_argument("--reduction-factor", type=int, default=3)
    args = parser.parse_args(argv)

    from sklearn.datasets import load_digits

    stack = None if args.url else Stack(args.workers)
    url = args.url or stack.url  # type: ignore[union-attr]
    try:
        with Client(url, timeout=60) as nn:
            digits = load_digits()
            dataset = nn.upload_dataset(digits.data.tolist(), digits.target.tolist(), name="digits")["id"]
            asha = {"name": "asha", "min_epochs": args.min_epochs, "reduction_factor": args.reduction_factor}
            runs: dict[str, list[dict]] = {"random": [], "random + ASHA": [], "same specs as jobs": []}
            for repeat in range(args.repeats):
                for name, pruner in (("random", "none"), ("random + ASHA", asha), ("same specs as jobs", None)):
                    log(f"repeat {repeat + 1}/{args.repeats}: {name}, {args.trials} trials of {args.epochs} epochs")
                    started = time.monotonic()
                    body = spec(dataset, args.trials, args.epochs, args.workers, args.seed, pruner or "none")
                    if pruner is None:
                        runs[name].append(plain_jobs(nn, dataset, body, runs["random"][-1]["rows"], args.workers))
                    else:
                        runs[name].append(run(nn, body, args.workers))
                    log(f"  {time.monotonic() - started:.1f} s")
        print_table(runs, args)
    finally:
        if stack is not None:
            stack.stop()
    return 0


def print_table(runs: dict[str, list[dict]], args: argparse.Namespace) -> None:
    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    print(
        f"\n{args.trials}-trial random sweep on digits (1,797 rows, 64 features), {args.epochs} epochs a trial, "
        f"{args.workers} workers, medians of {args.repeats} run(s)\n"
    )
    header = f"{'run':<20}{'wall s':>8}{'ideal s':>9}{'overhead':>10}{'sched p50 ms':>14}{'p90 ms':>8}"
    header += f"{'best val_acc':>14}{'epochs':>8}{'pruned':>8}"
    print(header)
    for name in runs:
        line = (
            f"{name:<20}{med(name, 'wall'):>8.1f}{med(name, 'ideal'):>9.1f}{med(name, 'overhead'):>9.1%}"
            f"{med(name, 'sched_p50'):>14.0f}{med(name, 'sched_p90'):>8.0f}{med(name, 'best'):>14.4f}"
            f"{med(name, 'epochs'):>8.0f}{med(name, 'pruned'):>8.0f}"
        )
        print(line.replace("nan", "  -"))
    base, pruned = "random", "random + ASHA"
    gap = med(base, "best") - med(pruned, "best")
    share = med(pruned, "epochs") / med(base, "epochs")
    print(
        f"\noverhead of the unpruned sweep: {med(base, 'overhead'):.1%} (target ≤ 15 %)"
        f"\nASHA: best val_accuracy {gap:+.4f} below the unpruned sweep's (target ≤ 0.005), "
        f"{share:.0%} of its epochs (target ≤ 40 %)"
    )


if __name__ == "__main__":
    sys.exit(main())
