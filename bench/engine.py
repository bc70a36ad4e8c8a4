"""Benchmark: nnserve's NumPy engine against scikit-learn's MLPClassifier and PyTorch on the CPU.

Run from the repository root, with the ``bench`` extra installed (``pip install -e '.[bench]'``)::

    python bench/engine.py                 # everything, a few minutes at most
    python bench/engine.py --quick         # fewer repeats
    python bench/engine.py --only w1 mem   # some sections: w1, w2, mem, profile

Every peer trains the same network on the same data in one run, and one plain-text table
per workload is printed (stdout; progress goes to stderr), then the results are written as
JSON to ``bench/results/`` (git-ignored).

What it measures
----------------
W1, MNIST-shaped: 60,000 x 784 float32 inputs generated here (seeded: ten class means
plus unit Gaussian noise, learnable to ~97% in one epoch; a further 10,000 rows drawn
the same way are the test set), 10 classes, 784-256-128-10 ReLU / softmax, Adam (lr
0.001), batch 128, one shuffled epoch. Seconds per epoch and samples per second for

- ours: ``engine.build(...).fit(X, y)``, under 1 and under ``cores`` OpenBLAS threads
  (``threadpoolctl.threadpool_limits``), since threads that spin between BLAS calls can
  slow the element-wise work in between;
- scikit-learn: ``MLPClassifier(...).fit(X, y)`` (alpha=0, no early stopping), its
  default BLAS threads;
- PyTorch (nn.Sequential of Linear/ReLU, CrossEntropyLoss, Adam, ``torch.set_num_threads(cores)``)
  in two loops: the idiomatic one, ``DataLoader(TensorDataset(x, y), batch_size, shuffle=True)``
  as the tutorials write it (its ~1 s per epoch is the issue's "about 54,000 samples/s"), and a
  hand-tuned one (one random permutation per epoch, tensor indexing per batch, no DataLoader);
  the hand-tuned loop also with Adam's ``fused=True`` kernel, for reference;
- the GEMM bound: NumPy doing only the matrix products of the fit in float32 (per batch
  3 forward, 3 kernel gradients and 2 input gradients: the first layer's input gradient is
  not needed), under 1 and ``cores`` BLAS threads, over as many epochs as the fit, so that
  its time per epoch divides like everyone else's.

Each timed run is a whole ``fit`` (so ours and scikit-learn include their input checks
and setup; PyTorch's loop includes building the model and optimizer). Every candidate
runs once as a warm-up, then the repeats go round-robin over the candidates; the tables
give the median and the best (minimum) of the repeats, and rates and ratios use the
median. "ours faster by" is that row's time over ours (with the better BLAS setting):
our samples/s over that row's. A run during which other processes kept more than a tenth
of a core busy (read from /proc/stat) is not counted and is run again: on a shared 2-core
machine a neighbour's test suite slows two-thread BLAS and OpenMP runs many times over.

Memory: each W1 fit runs again in a fresh subprocess (this script with ``--child-mem``),
which imports only its own library, generates the data, resets its high-water mark to the
current resident set size (so making the data does not count), records that size (VmRSS),
fits once, and reports its peak RSS (VmHWM: the child's own high-water mark;
``getrusage`` would report the parent's size, see ``peak_rss_mb``). The table gives the
peak, and the peak above the RSS just after the data was made: library imports and the
188 MB of inputs are thereby separated from what training itself costs. Above the data, RSS
grows by whatever pages the allocator could not reuse, so a second child per peer runs the fit
under tracemalloc, which counts the bytes NumPy allocates: the fit's own peak, exactly (not
for PyTorch, whose tensors bypass it).

W2, small and overhead-bound: scikit-learn's bundled iris (4-16-3, batch 16, 200 epochs)
and 8x8 digits (64-128-10, batch 32, 50 epochs), ReLU hidden layer, softmax output, Adam
at one learning rate for all (``--w2-lr``, default 0.001: with it both peers reach 0.978
test accuracy on these splits, as the engine's issue says; 0.01 also trains all three
well), a stratified 70/30 split (``random_state=0``). The peers get inputs standardized by
a StandardScaler fit on the training rows; ours gets the raw inputs and
``input_scaling: "standard"``. Milliseconds per epoch (fit time / epochs) and test accuracy.

Profile: after each workload's table, one more fit of ours (with its better BLAS thread
count) with timers around its parts, printed by phase: forward GEMMs, backward GEMMs (np.matmul
as called from ``engine.layers``, split by the pass it runs in), the rest of the dense layers,
activations, the loss, the optimizer step, the batch gather (``TrainingSession.gather``: rows, scaling, targets),
the rest of the epoch loop, and the rest of ``fit``; seconds, share and µs per batch. The
``profile`` section alone does this for every workload under every BLAS thread count, without
the peers (so it needs neither torch nor a quiet minute). The timers patch
objects in memory only; nothing under ``engine/`` is modified.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import textwrap
import time
import tracemalloc
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# Run as a script, this file's folder comes first on sys.path, and this file is named
# engine.py: take the folder out so that ``import engine`` is the working tree's package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(REPO))

RESULTS = REPO / "bench" / "results"
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
SEED = 0
SECTIONS = ("w1", "w2", "mem", "profile")


# Workloads and data --------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    hidden: tuple[int, ...]
    batch_size: int
    epochs: int
    learning_rate: float
    standardize: bool  # peers get standardized inputs; ours gets raw ones with input_scaling "standard"


@dataclass
class Dataset:
    x_train: np.ndarray  # what our engine gets (raw)
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    n_classes: int
    peer_train: np.ndarray  # what the peers get (standardized when the workload says so)
    peer_test: np.ndarray | None

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]


W1 = Workload(
    "w1",
    "W1, MNIST-shaped: 60,000 x 784 float32, 784-256-128-10, Adam lr 0.001, batch 128, 1 epoch",
    (256, 128),
    128,
    1,
    1e-3,
    standardize=False,
)
W1_ROWS, W1_TEST_ROWS, W1_FEATURES, W1_CLASSES = 60_000, 10_000, 784, 10
W1_MEAN_SCALE = 0.15  # std of the class means; the noise has std 1


def w2_workloads(learning_rate: float) -> list[Workload]:
    lr = f"Adam lr {learning_rate:g}"
    return [
        Workload("iris", f"W2, iris: 4-16-3, {lr}, batch 16, 200 epochs", (16,), 16, 200, learning_rate, True),
        Workload("digits", f"W2, digits: 64-128-10, {lr}, batch 32, 50 epochs", (128,), 32, 50, learning_rate, True),
    ]


def w1_data(with_test: bool = True) -> Dataset:
    """The MNIST-shaped data: x = mean[class] + N(0, 1) noise, float32, written chunk by chunk
    so that making it costs no memory beyond the arrays themselves (the memory section needs that)."""
    means = np.random.default_rng([SEED, 0]).normal(0.0, W1_MEAN_SCALE, (W1_CLASSES, W1_FEATURES)).astype(np.float32)

    def draw(n: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([SEED, stream])
        y = rng.integers(0, W1_CLASSES, n)
        x = np.empty((n, W1_FEATURES), dtype=np.float32)
        for start in range(0, n, 4096):
            chunk = x[start : start + 4096]
            rng.standard_normal(out=chunk, dtype=np.float32)
            chunk += means[y[start : start + 4096]]
        return x, y

    x, y = draw(W1_ROWS, 1)
    x_test, y_test = draw(W1_TEST_ROWS, 2) if with_test else (None, None)
    return Dataset(x, y, x_test, y_test, W1_CLASSES, x, x_test)


def w2_data(workload: Workload) -> Dataset:
    from sklearn.datasets import load_digits, load_iris
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = {"iris": load_iris, "digits": load_digits}[workload.key](return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x.astype(np.float32), y, test_size=0.3, stratify=y, random_state=SEED
    )
    scaler = StandardScaler().fit(x_train)
    return Dataset(
        x_train, y_train, x_test, y_test, len(np.unique(y)), scaler.transform(x_train), scaler.transform(x_test)
    )


# The peers: one fit each ------------------------------------------------------------------


@dataclass
class Fit:
    seconds: float
    predict: Callable[[], np.ndarray] | None = None  # predicted test labels
    products: int = 0  # matrix products run (the GEMM bound only)


def ours_spec(workload: Workload, data: Dataset) -> tuple[dict, dict]:
    layers = [{"type": "dense", "units": units, "activation": "relu"} for units in workload.hidden]
    layers.append({"type": "dense", "units": data.n_classes, "activation": "softmax"})
    model = {"layers": layers, "input_scaling": "standard" if workload.standardize else "none"}
    training = {
        "optimizer": {"name": "adam", "learning_rate": workload.learning_rate},
        "loss": "sparse_categorical_crossentropy",
        "epochs": workload.epochs,
        "batch_size": workload.batch_size,
        "seed": SEED,
    }
    return model, training


def fit_ours(workload: Workload, data: Dataset, blas_threads: int | None) -> Fit:
    """Our engine, its BLAS limited to ``blas_threads`` (None: left as it is)."""
    from nnserve import engine

    model = engine.build(*ours_spec(workload, data))
    with threadpool_limits(limits=blas_threads, user_api="blas"):
        start = time.perf_counter()
        model.fit(data.x_train, data.y_train)
        seconds = time.perf_counter() - start
    return Fit(seconds, lambda: model.predict(data.x_test))


def fit_sklearn(workload: Workload, data: Dataset) -> Fit:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    model = MLPClassifier(
        hidden_layer_sizes=workload.hidden,
        activation="relu",
        solver="adam",
        alpha=0.0,
        batch_size=workload.batch_size,
        learning_rate_init=workload.learning_rate,
        max_iter=workload.epochs,
        shuffle=True,
        random_state=SEED,
        tol=0.0,
        n_iter_no_change=workload.epochs,  # never stop before max_iter
        early_stopping=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = time.perf_counter()
        model.fit(data.peer_train, data.y_train)
        seconds = time.perf_counter() - start
    assert model.n_iter_ == workload.epochs, model.n_iter_
    return Fit(seconds, lambda: model.predict(data.peer_test))


def fit_torch(workload: Workload, data: Dataset, fused: bool = False, dataloader: bool = False) -> Fit:
    """PyTorch's training loop: with ``dataloader``, the idiomatic one (a shuffling DataLoader over a
    TensorDataset, which collates every batch sample by sample); otherwise the hand-tuned one (tensor
    indexing with one permutation per epoch). ``fused`` selects Adam's fused kernel (the default on the
    CPU updates one tensor at a time)."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    torch.set_num_threads(CORES)
    torch.manual_seed(SEED)
    order = torch.Generator().manual_seed(SEED)
    start = time.perf_counter()
    x = torch.from_numpy(data.peer_train.astype(np.float32, copy=False))
    y = torch.from_numpy(data.y_train.astype(np.int64, copy=False))
    modules, n_in = [], x.shape[1]
    for units in workload.hidden:
        modules += [nn.Linear(n_in, units), nn.ReLU()]
        n_in = units
    model = nn.Sequential(*modules, nn.Linear(n_in, data.n_classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=workload.learning_rate, fused=fused or None)
    loss_fn = nn.CrossEntropyLoss()
    n, size = len(x), workload.batch_size

    def batches():
        if dataloader:
            yield from DataLoader(TensorDataset(x, y), batch_size=size, shuffle=True, generator=order)
            return
        permutation = torch.randperm(n, generator=order)
        for first in range(0, n, size):
            index = permutation[first : first + size]
            yield x[index], y[index]

    for _ in range(workload.epochs):
        for xb, yb in batches():
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
    seconds = time.perf_counter() - start

    def predict():
        with torch.inference_mode():
            return model(torch.from_numpy(data.peer_test.astype(np.float32, copy=False))).argmax(1).numpy()

    return Fit(seconds, predict)


def gemm_bound(workload: Workload, data: Dataset, blas_threads: int) -> Fit:
    """The matrix products of a whole fit alone (every epoch, like the other candidates' fits),
    float32, in preallocated buffers: per batch one forward product per layer, one kernel gradient
    per layer and one input gradient per layer but the first (nothing below it needs one).
    ``Fit.products`` counts the products run, for the test of this arithmetic."""
    rng = np.random.default_rng(SEED)
    sizes = [data.n_features, *workload.hidden, data.n_classes]
    size, n = workload.batch_size, len(data.x_train)
    kernels = [
        rng.standard_normal((a, b), dtype=np.float32) * np.float32(a**-0.5) for a, b in itertools.pairwise(sizes)
    ]
    kernel_grads = [np.empty_like(k) for k in kernels]
    acts = [rng.standard_normal((size, units), dtype=np.float32) for units in sizes]  # layer inputs/outputs
    deltas = [np.empty((size, units), dtype=np.float32) for units in sizes]  # gradients w.r.t. them
    deltas[-1][...] = rng.standard_normal(deltas[-1].shape, dtype=np.float32)
    layers = range(len(kernels))
    products = 0
    with threadpool_limits(limits=blas_threads, user_api="blas"):
        start = time.perf_counter()
        for _epoch in range(workload.epochs):
            for first in range(0, n, size):
                b = min(size, n - first)
                for i in layers:
                    np.matmul(acts[i][:b], kernels[i], out=acts[i + 1][:b])
                for i in reversed(layers):
                    np.matmul(acts[i][:b].T, deltas[i + 1][:b], out=kernel_grads[i])
                    if i > 0:
                        np.matmul(deltas[i + 1][:b], kernels[i].T, out=deltas[i][:b])
                products += 3 * len(kernels) - 1
        seconds = time.perf_counter() - start
    return Fit(seconds, products=products)


# Running and timing --------------------------------------------------------------------------


class CpuWatch:
    """CPU time that other processes use while we run, from /proc/stat (Linux; elsewhere always 0).

    The benchmark machine may be shared: a test suite running next to us takes a core, and
    a library whose threads wait on each other (BLAS, OpenMP) then slows down many times
    over. Runs during which other processes were busy are flagged and run again."""

    TICK = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01

    def __init__(self):
        self.start = self._sample()

    @classmethod
    def _sample(cls) -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat") as stat:
                ticks = [int(v) for v in stat.readline().split()[1:9]]
        except OSError:
            return None
        busy = (sum(ticks) - ticks[3] - ticks[4]) * cls.TICK  # all but idle and iowait
        own = os.times()
        return time.perf_counter(), busy, own.user + own.system + own.children_user + own.children_system

    def foreign(self) -> tuple[float, float]:
        """(seconds elapsed, CPU seconds used by other processes) since this watch started."""
        end = self._sample()
        if self.start is None or end is None:
            return 0.0, 0.0
        return end[0] - self.start[0], max(0.0, (end[1] - self.start[1]) - (end[2] - self.start[2]))


def contended(elapsed: float, foreign: float) -> bool:
    """Other processes kept more than a tenth of a core busy (and more than two clock ticks)."""
    return foreign > max(0.1 * elapsed, 2.5 * CpuWatch.TICK)


def wait_for_quiet(max_wait: float) -> float:
    """Wait (up to ``max_wait`` seconds) until other processes leave the CPU alone for 0.3 s."""
    waited = 0.0
    while waited < max_wait:
        watch = CpuWatch()
        time.sleep(0.3)
        elapsed, foreign = watch.foreign()
        waited += elapsed
        if not contended(elapsed, foreign):
            break
    return waited


@dataclass
class Candidate:
    label: str
    kind: str  # "ours", "peer", "bound"
    threads: str  # BLAS / intra-op threads, as printed
    run: Callable[[], Fit]
    reference: bool = True  # a peer the targets are judged against
    runs: list[tuple[float, bool]] = field(default_factory=list)  # (seconds, contended)
    accuracy: float | None = None

    @property
    def clean(self) -> int:
        return sum(not busy for _, busy in self.runs)

    @property
    def times(self) -> list[float]:
        """The clean runs' times; all of them when none was clean."""
        return [t for t, busy in self.runs if not busy] or [t for t, _ in self.runs]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def runs_label(self) -> str:
        return f"{self.clean}/{len(self.runs)}"


def candidates_for(
    workload: Workload, data: Dataset, thread_counts: list[int], default_threads: int
) -> list[Candidate]:
    def label(n: int) -> str:
        return f"{n} (default)" if n == default_threads else str(n)

    ours = [
        Candidate("ours (nnserve engine)", "ours", label(n), lambda n=n: fit_ours(workload, data, n))
        for n in thread_counts
    ]
    peers = [
        Candidate(
            "scikit-learn MLPClassifier", "peer", f"{default_threads} (default)", lambda: fit_sklearn(workload, data)
        ),
        Candidate(
            "PyTorch, DataLoader loop", "peer", f"{CORES} (torch)", lambda: fit_torch(workload, data, dataloader=True)
        ),
        Candidate("PyTorch, hand-tuned loop", "peer", f"{CORES} (torch)", lambda: fit_torch(workload, data)),
        Candidate(
            "PyTorch, hand-tuned, fused Adam",
            "peer",
            f"{CORES} (torch)",
            lambda: fit_torch(workload, data, fused=True),
            reference=False,
        ),
    ]
    bounds = [
        Candidate("GEMM bound (NumPy matmuls only)", "bound", label(n), lambda n=n: gemm_bound(workload, data, n))
        for n in thread_counts
    ]
    return ours + peers + bounds


@dataclass
class Quiet:
    """Waiting, before each run, for other processes to leave the CPU alone: at most ``max_wait``
    seconds each time and ``budget`` seconds in the whole benchmark."""

    max_wait: float
    budget: float
    waited: float = 0.0

    def wait(self) -> float:
        waited = wait_for_quiet(min(self.max_wait, self.budget - self.waited))
        self.waited += waited
        return waited


@dataclass
class Timing:
    repeats: int
    quiet: Quiet


def measure(candidates: list[Candidate], data: Dataset, timing: Timing) -> None:
    """A warm-up run of each candidate, then ``repeats`` rounds over all of them (round-robin, so
    drifts in machine speed hit every candidate alike), then more runs (at most twice as many
    again) for any candidate with fewer than ``repeats`` runs free of other processes' load.
    Test accuracy from each one's last fit."""
    for candidate in candidates:
        progress(f"  warm-up: {candidate.label}, threads {candidate.threads}")
        candidate.run()
    for i in range(timing.repeats):
        for candidate in candidates:
            run_once(candidate, data, timing, f"run {i + 1}/{timing.repeats}")
    for candidate in candidates:
        extra = 0
        while candidate.clean < timing.repeats and extra < 2 * timing.repeats:
            extra += 1
            run_once(candidate, data, timing, f"extra run {extra} (other processes were busy)")


def run_once(candidate: Candidate, data: Dataset, timing: Timing, what: str) -> None:
    waited = timing.quiet.wait()
    watch = CpuWatch()
    fit = candidate.run()
    elapsed, foreign = watch.foreign()
    busy = contended(elapsed, foreign)
    candidate.runs.append((fit.seconds, busy))
    if fit.predict is not None:
        candidate.accuracy = float(np.mean(fit.predict() == data.y_test))
    note = f"; other processes used {foreign:.2f} CPU s: not counted" if busy else ""
    note += f"; waited {waited:.1f} s for quiet" if waited > 1 else ""
    progress(f"  {what}: {candidate.label}, threads {candidate.threads}: {fit.seconds:.3f} s{note}")


def best_ours(candidates: list[Candidate]) -> Candidate:
    return min((c for c in candidates if c.kind == "ours"), key=lambda c: c.median)


def run_w1(timing: Timing, thread_counts: list[int], default_threads: int) -> dict[str, Any]:
    progress("W1: generating 60,000 x 784 (+10,000 test rows)")
    data = w1_data()
    candidates = candidates_for(W1, data, thread_counts, default_threads)
    measure(candidates, data, timing)
    rows_per_epoch = len(data.x_train) * W1.epochs
    ours = best_ours(candidates)
    table = []
    for c in candidates:
        rate = rows_per_epoch / c.median
        table.append(
            [
                c.label,
                c.threads,
                f"{c.median:.3f}",
                f"{c.best:.3f}",
                f"{rate:,.0f}",
                fmt_accuracy(c.accuracy),
                vs_ours(c, ours),
                c.runs_label,
            ]
        )
    print_title(W1.title)
    print_table(
        [
            "run",
            "threads",
            "s/epoch (median)",
            "s/epoch (best)",
            "samples/s",
            "test acc",
            "ours faster by",
            "clean runs",
        ],
        table,
    )
    print()
    ours_all = [c for c in candidates if c.kind == "ours"]
    print(
        "BLAS threads for ours: "
        + ", ".join(f"{c.threads.split()[0]}: {c.median:.3f} s" for c in ours_all)
        + f" -> {ours.threads.split()[0]} is better"
        + (f" ({max(c.median for c in ours_all) / ours.median:.2f}x)" if len(ours_all) > 1 else "")
    )
    verdicts = []
    for c in candidates:
        if c.kind != "peer":
            continue
        ratio = c.median / ours.median
        verdict = ("meets" if ratio >= 1.4 else "MISSES") if c.reference else "for reference"
        verdicts.append({"peer": c.label, "ratio": ratio, "meets": ratio >= 1.4})
        print(f"ours ({blas_phrase(ours)}) vs {c.label}: {ratio:.2f}x the samples/s (target >= 1.4x: {verdict})")
    bounds = {c.threads: c.median for c in candidates if c.kind == "bound"}
    best_bound = min(bounds.values())
    other_share = 1.0 - best_bound / ours.median
    print(
        f"GEMM share: the matmuls alone take {best_bound:.3f} s = {best_bound / ours.median:.0%} of our epoch; "
        f"everything else costs ours {ours.median - best_bound:.3f} s = {other_share:.0%} "
        f"(target <= 30%: {'meets' if other_share <= 0.3 else 'MISSES'})"
    )
    print()
    profile = print_profile(W1, data, [threads_of(ours)], timing)
    return {
        "workload": W1.key,
        "title": W1.title,
        "rows": rows_per_epoch,
        "candidates": [as_json(c) for c in candidates],
        "ours_best_threads": ours.threads,
        "verdicts": verdicts,
        "non_gemm_share": other_share,
        "profile": profile,
    }


def run_w2(
    workloads: list[Workload], timing: Timing, thread_counts: list[int], default_threads: int
) -> list[dict[str, Any]]:
    results = []
    for workload in workloads:
        progress(f"W2: {workload.key}")
        data = w2_data(workload)
        candidates = candidates_for(workload, data, thread_counts, default_threads)
        measure(candidates, data, timing)
        ours = best_ours(candidates)
        table = []
        for c in candidates:
            table.append(
                [
                    c.label,
                    c.threads,
                    fmt_ms(ms(c.median, workload)),
                    fmt_ms(ms(c.best, workload)),
                    fmt_accuracy(c.accuracy),
                    vs_ours(c, ours),
                    c.runs_label,
                ]
            )
        print_title(f"{workload.title} (train {len(data.x_train)}, test {len(data.x_test)} rows)")
        print_table(
            ["run", "threads", "ms/epoch (median)", "ms/epoch (best)", "test acc", "ours faster by", "clean runs"],
            table,
        )
        print()
        peers = [c for c in candidates if c.kind == "peer" and c.reference]
        fastest = min(peers, key=lambda c: c.median)
        sklearn = next(c for c in peers if c.label.startswith("scikit-learn"))
        speedup = sklearn.median / ours.median
        best_peer_accuracy = max(c.accuracy for c in peers)
        print(
            f"ours ({blas_phrase(ours)}) vs {sklearn.label}: {speedup:.2f}x faster per epoch "
            f"(target >= 3x: {'meets' if speedup >= 3 else 'MISSES'}); the fastest peer is {fastest.label} "
            f"({fastest.median / ours.median:.2f}x); test accuracy {ours.accuracy:.4f} vs "
            f"peers' best {best_peer_accuracy:.4f} ({'not lower' if ours.accuracy >= best_peer_accuracy else 'LOWER'})"
        )
        print()
        profile = print_profile(workload, data, [threads_of(ours)], timing)
        results.append(
            {
                "workload": workload.key,
                "title": workload.title,
                "epochs": workload.epochs,
                "candidates": [as_json(c) for c in candidates],
                "ours_best_threads": ours.threads,
                "faster_peer": fastest.label,
                "speedup": speedup,
                "profile": profile,
                "accuracy_not_lower": ours.accuracy >= best_peer_accuracy,
            }
        )
    return results


def vs_ours(c: Candidate, ours: Candidate) -> str:
    """Peers: how many times faster ours is; GEMM bounds: their share of our time."""
    if c.kind == "ours":
        return ""
    if c.kind == "bound":
        return f"({c.median / ours.median:.1%} of ours)"
    return f"{c.median / ours.median:.2f}x"


def threads_of(c: Candidate) -> int:
    """The BLAS thread count of one of our candidates (its label may say "(default)")."""
    return int(c.threads.split()[0])


def blas_phrase(c: Candidate) -> str:
    n = c.threads.split()[0]
    return f"{n} BLAS thread{'' if n == '1' else 's'}"


def ms(seconds: float, workload: Workload) -> float:
    return 1000.0 * seconds / workload.epochs


# Memory: each W1 fit in a fresh process ----------------------------------------------------------

MEMORY_PEERS = {
    "ours": ("ours (nnserve engine)", "engine", lambda data: fit_ours(W1, data, None)),
    "sklearn": ("scikit-learn MLPClassifier", "sklearn.neural_network", lambda data: fit_sklearn(W1, data)),
    "torch": ("PyTorch, hand-tuned loop", "torch", lambda data: fit_torch(W1, data)),
}


def rss_mb(field: str = "VmRSS") -> float:
    """The current resident set size (``VmRSS``) or its peak so far (``VmHWM``), from /proc (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_rss_mb() -> float:
    """This process's peak resident set size.

    VmHWM, not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries the high-water mark of the
    address space that exec replaced into ru_maxrss, so a child started by a parent holding
    300 MB (torch imported, data made) would report at least the parent's size."""
    try:
        return rss_mb("VmHWM")
    except (OSError, RuntimeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def reset_peak_rss() -> None:
    """Lower the peak (VmHWM) to the current RSS, so the peak measures the fit alone and not the
    temporaries of making the data (Linux: writing 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass  # elsewhere the peak includes making the data; the columns still compare like with like


def child_memory(peer: str, traced: bool = False) -> None:
    """In a fresh process: import the peer's library, make the W1 data, fit once; print JSON.

    With ``traced``, the fit runs under tracemalloc, whose peak counts the bytes NumPy (and Python)
    allocated during it: what the fit itself holds at its worst, free of the allocator's reuse of
    pages the data generation left behind, which makes RSS growth a coarse measure. PyTorch's
    tensors bypass it, so its figure is left out."""
    _, module, fit = MEMORY_PEERS[peer]
    __import__(module)
    data = w1_data(with_test=False)
    if traced:
        tracemalloc.start()
        fit(data)
        print(json.dumps({"peer": peer, "traced_peak_mb": tracemalloc.get_traced_memory()[1] / 2**20}))
        return
    reset_peak_rss()
    after_data = rss_mb()
    seconds = fit(data).seconds
    peak = peak_rss_mb()
    print(json.dumps({"peer": peer, "after_data_mb": after_data, "peak_mb": peak, "seconds": seconds}))


def run_memory() -> list[dict[str, Any]]:
    results = []
    for peer in MEMORY_PEERS:
        progress(f"memory: W1 fit of {peer} in a fresh process")
        results.append(_child(peer))
        if peer != "torch":
            results[-1].update(_child(peer, "--traced"))
    table = [
        [
            MEMORY_PEERS[r["peer"]][0],
            f"{r['peak_mb']:,.1f}",
            f"{r['after_data_mb']:,.1f}",
            f"{r['peak_mb'] - r['after_data_mb']:,.1f}",
            f"{r['traced_peak_mb']:,.1f}" if "traced_peak_mb" in r else "n/a",
            f"{r['seconds']:.2f}",
        ]
        for r in results
    ]
    print_title("Peak memory of the W1 fit (each in a fresh process; inputs are 188 MB)")
    print_table(
        [
            "run",
            "peak RSS MB",
            "RSS after imports+data MB",
            "peak above that MB",
            "allocated by the fit MB (tracemalloc)",
            "fit s (cold, once)",
        ],
        table,
    )
    print()
    ours, sk = (next(r for r in results if r["peer"] == p) for p in ("ours", "sklearn"))
    for what, key in [("peak RSS of the run", "peak_mb"), ("bytes the fit allocates at its peak", "traced_peak_mb")]:
        a, b = ours[key], sk[key]
        print(
            f"{what}: ours {a:,.1f} MB vs scikit-learn {b:,.1f} MB (target: no more: {'meets' if a <= b else 'MISSES'})"
        )
    print()
    return results


def _child(peer: str, *flags: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child-mem", peer, *flags], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# Profile of our W1 epoch -----------------------------------------------------------------------------


class _Timers:
    """Seconds per part of a fit of ours, from timers wrapped around live objects.

    ``phase`` is "forward" or "backward", set by the op wrappers, so that the matrix products
    (timed where ``engine.layers`` calls ``np.matmul``) are split between the two passes."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.phase = "forward"

    def timed(self, key: str, fn: Callable[..., Any], phase: str | None = None) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if phase is not None:
                self.phase = phase
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.totals[key] += time.perf_counter() - start

        return wrapper


class _TimedNumpy:
    """Stands in for ``numpy`` inside an engine module while profiling: the named functions are timed
    under ``key`` (``{phase}`` in it is the timers' current phase) and their calls counted under
    ``calls:key``; everything else is numpy's own."""

    def __init__(self, timers: _Timers, key: str, names: tuple[str, ...]):
        self._timers, self._key = timers, key
        for name in names:
            setattr(self, name, self._timing(getattr(np, name)))

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)

    def _timing(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                key = self._key.format(phase=self._timers.phase)
                self._timers.totals[key] += time.perf_counter() - start
                self._timers.totals[f"calls:{key}"] += 1

        return wrapper


def profile_ours(workload: Workload, blas_threads: int, data: Dataset, timing: Timing) -> dict[str, float]:
    """Seconds per part of one fit of ours, after a warm-up fit; the profiled fit is taken again
    (at most 3 times in all) while other processes were busy. Patches live objects only."""
    from nnserve import engine
    from nnserve.engine import layers as engine_layers
    from nnserve.engine import losses as engine_losses
    from nnserve.engine import optimizers as engine_optimizers
    from nnserve.engine import training as engine_training

    timers = _Timers()
    totals = timers.totals
    session = engine_training.TrainingSession
    patches = [  # (owner, attribute, timer key); an engine without one of them (an older one) goes untimed there
        (session, "train_epoch", "epoch"),
        (engine_optimizers.Optimizer, "step", "optimizer"),
        (engine_losses.Loss, "value_and_grad", "loss"),
        (session, "gather", "gather"),
    ]
    patches = [
        (owner, name, timers.timed(key, getattr(owner, name))) for owner, name, key in patches if hasattr(owner, name)
    ]
    patches.append((engine_layers, "np", _TimedNumpy(timers, "gemm:{phase}", ("matmul", "dot"))))
    saved = [(owner, name, owner.__dict__.get(name)) for owner, name, _ in patches]
    for owner, name, replacement in patches:
        setattr(owner, name, replacement)
    try:
        fit_ours(workload, data, blas_threads)  # warm-up
        for _attempt in range(3):
            totals.clear()
            model = engine.build(*ours_spec(workload, data))
            for op in model.ops:
                key = f"op:{type(op).__name__}"
                op.forward = timers.timed(key, op.forward, "forward")  # type: ignore[method-assign]
                op.backward = timers.timed(key, op.backward, "backward")  # type: ignore[method-assign]
            timing.quiet.wait()
            watch = CpuWatch()
            with threadpool_limits(limits=blas_threads, user_api="blas"):
                start = time.perf_counter()
                model.fit(data.x_train, data.y_train)
                totals["fit"] = time.perf_counter() - start
            busy = contended(*watch.foreign())
            totals["contended"] = float(busy)
            progress(
                f"  profile of {workload.key}, {blas_threads} BLAS threads: {totals['fit']:.3f} s"
                + (" (other processes were busy)" if busy else "")
            )
            if not busy:
                break
    finally:
        for owner, name, original in reversed(saved):
            if original is None:
                delattr(owner, name)
            else:
                setattr(owner, name, original)
    return dict(totals)


def profile_phases(p: dict[str, float]) -> dict[str, float]:
    """The timers of ``profile_ours`` as the phases of the fit, in seconds; they add up to the fit."""
    ops = {k: v for k, v in p.items() if k.startswith("op:")}
    forward, backward = p.get("gemm:forward", 0.0), p.get("gemm:backward", 0.0)
    rows = {
        "forward GEMMs": forward,
        "backward GEMMs": backward,
        "dense besides GEMMs (bias add, bias gradient)": ops.pop("op:Dense", 0.0) - forward - backward,
        **{f"{k[3:].lower()} forward+backward": v for k, v in ops.items()},
        "loss value and gradient": p.get("loss", 0.0),
        "optimizer step": p.get("optimizer", 0.0),
        "batch gather (rows, scaling, targets)": p.get("gather", 0.0),
    }
    rows["rest of the epoch loop (Python, metrics)"] = p.get("epoch", 0.0) - sum(rows.values())
    rows["fit outside the epochs (checks, setup)"] = p["fit"] - p.get("epoch", 0.0)
    rows["total fit"] = p["fit"]
    return rows


def batches_per_fit(workload: Workload, data: Dataset) -> int:
    return -(-len(data.x_train) // workload.batch_size) * workload.epochs


def print_profile(workload: Workload, data: Dataset, thread_counts: list[int], timing: Timing) -> dict[str, Any]:
    """Profile one fit of ours per BLAS thread count and print it by phase, with µs per batch."""
    profiles = {n: profile_ours(workload, n, data, timing) for n in thread_counts}
    parts = {n: profile_phases(p) for n, p in profiles.items()}
    batches = batches_per_fit(workload, data)
    names = list(dict.fromkeys(name for rows in parts.values() for name in rows))
    header = ["phase of our fit"]
    for n in thread_counts:
        busy = " (busy machine)" if profiles[n]["contended"] else ""
        header += [f"{n} BLAS thr: s{busy}", "%", "µs/batch"]
    table = []
    for name in names:
        row = [name]
        for rows in parts.values():
            value = rows.get(name, 0.0)
            row += [f"{value:.4f}", f"{value / rows['total fit']:.0%}", f"{1e6 * value / batches:.1f}"]
        table.append(row)
    print_title(f"Profile of one fit of ours by phase, {workload.key} ({batches} batches; timers add a little)")
    print_table(header, table)
    print()
    return {str(n): rows for n, rows in parts.items()}


def run_profile(thread_counts: list[int], timing: Timing, w2_learning_rate: float) -> dict[str, Any]:
    """The profile alone (no peers): W1 and the W2 workloads, under every BLAS thread count."""
    progress("profile: one fit of ours per workload and BLAS thread count")
    profiles = {W1.key: print_profile(W1, w1_data(with_test=False), thread_counts, timing)}
    for workload in w2_workloads(w2_learning_rate):
        profiles[workload.key] = print_profile(workload, w2_data(workload), thread_counts, timing)
    return profiles


# Output --------------------------------------------------------------------------------------------


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fmt_ms(value: float) -> str:
    return f"{value:.3f}" if value >= 0.1 else f"{value:.5f}"


def fmt_accuracy(accuracy: float | None) -> str:
    return "-" if accuracy is None else f"{accuracy:.4f}"


def print_title(title: str) -> None:
    print(title)
    print("=" * len(title))


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """Plain text, the first column left-aligned and the others right-aligned."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "  ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    print(line(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


def as_json(c: Candidate) -> dict[str, Any]:
    return {
        "label": c.label,
        "kind": c.kind,
        "threads": c.threads,
        "reference": c.reference,
        "times": c.times,
        "median": c.median,
        "best": c.best,
        "accuracy": c.accuracy,
    }


def machine_info() -> dict[str, Any]:
    import sklearn

    try:
        import torch

        torch_version = torch.__version__
    except ImportError:  # the profile section runs without the peers
        torch_version = "not installed"

    with open("/proc/cpuinfo") as cpuinfo:
        cpu = next(
            (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), platform.processor()
        )
    blas = [
        {
            k: lib.get(k)
            for k in ("internal_api", "prefix", "version", "architecture", "threading_layer", "num_threads", "filepath")
        }
        for lib in threadpool_info()
    ]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], check=False, cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "engine"], check=False, cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit, dirty = "?", ""
    return {
        "cpu": cpu,
        "cores": CORES,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "torch": torch_version,
        "torch_threads": CORES,
        "threadpools": blas,
        "git": commit + (" (engine/ has uncommitted changes)" if dirty else ""),
    }


def print_machine(info: dict[str, Any], command: str) -> None:
    print(f"command: {command}")
    print(f"machine: {info['cpu']}, {info['cores']} cores; {info['platform']}")
    print(
        f"versions: Python {info['python']}, NumPy {info['numpy']}, scikit-learn {info['scikit-learn']}, "
        f"PyTorch {info['torch']} (set_num_threads({info['torch_threads']})); nnserve at {info['git']}"
    )
    for lib in info["threadpools"]:
        parts = Path(lib.get("filepath") or "?").parts
        owner = parts[parts.index("site-packages") + 1] if "site-packages" in parts[:-1] else parts[-1]
        details = ", ".join(str(lib[k]) for k in ("version", "architecture", "threading_layer") if lib.get(k))
        print(f"threadpool: {lib['internal_api']} in {owner} ({details}), {lib['num_threads']} threads by default")
    print()


# Main ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="sections to run (default: all)"
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats (W1: 1, W2: 2)")
    parser.add_argument("--repeats", type=int, help="timed runs per candidate after the warm-up (default: W1 3, W2 5)")
    parser.add_argument("--w2-lr", type=float, default=1e-3, help="Adam learning rate for every W2 run (default 0.001)")
    parser.add_argument(
        "--blas-threads",
        type=lambda s: sorted({int(n) for n in s.split(",")}),
        default=sorted({1, CORES}),
        help=f"comma-separated BLAS thread counts for ours and the GEMM bound (default 1,{CORES})",
    )
    parser.add_argument(
        "--max-wait",
        type=float,
        default=10.0,
        help="seconds to wait before each run for other processes to leave the CPU alone (default 10)",
    )
    parser.add_argument(
        "--wait-budget",
        type=float,
        default=90.0,
        help="seconds of such waiting in the whole run, after which runs start at once (default 90)",
    )
    parser.add_argument(
        "--json", type=Path, help="where to write the results (default: bench/results/engine-<time>.json)"
    )
    parser.add_argument("--child-mem", choices=list(MEMORY_PEERS), help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child_mem:
        child_memory(args.child_mem, traced=args.traced)
        return
    command = shlex.join(["python", os.path.relpath(__file__), *sys.argv[1:]])
    import sklearn.neural_network  # noqa: F401

    if set(args.only) - {"profile"}:
        import torch  # noqa: F401

    from nnserve import engine  # noqa: F401  (load every library before looking at their thread pools)

    info = machine_info()
    default_threads = next(
        (lib["num_threads"] for lib in info["threadpools"] if lib["internal_api"] == "openblas"), CORES
    )
    print_machine(info, command)
    quiet = Quiet(args.max_wait, args.wait_budget)
    w1 = Timing(args.repeats or (1 if args.quick else 3), quiet)
    w2 = Timing(args.repeats or (2 if args.quick else 5), quiet)
    timing = (
        f"every candidate runs once as a warm-up, then W1 x{w1.repeats} / W2 x{w2.repeats} round-robin; "
        f"before each run, up to {quiet.max_wait:g} s of waiting ({quiet.budget:g} s in all) for other processes "
        "to go quiet; a run during which they kept more than 10% of a core busy is not counted and is "
        "run again (at most twice the repeats); tables give the median and best of the counted runs, "
        "and rates and ratios use the median"
    )
    results: dict[str, Any] = {
        "command": command,
        "machine": info,
        "w1_repeats": w1.repeats,
        "w2_repeats": w2.repeats,
        "timing": timing,
    }
    print(textwrap.fill("timing: " + timing, 110) + "\n")
    started = time.perf_counter()
    if "w1" in args.only:
        results["w1"] = run_w1(w1, args.blas_threads, default_threads)
    if "mem" in args.only:
        results["memory"] = run_memory()
    if "w2" in args.only:
        results["w2"] = run_w2(w2_workloads(args.w2_lr), w2, args.blas_threads, default_threads)
    if "profile" in args.only:
        results["profile"] = run_profile(args.blas_threads, w1, args.w2_lr)
    elapsed = time.perf_counter() - started
    results["elapsed_s"] = elapsed
    results["waited_s"] = quiet.waited
    path = args.json or RESULTS / time.strftime("engine-%Y%m%d-%H%M%S.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(
        f"total {elapsed:.0f} s, of which {quiet.waited:.0f} s waiting for other processes to go quiet; "
        f"results written to {os.path.relpath(path)}"
    )


if __name__ == "__main__":
    main()
