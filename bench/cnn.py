"""Benchmark W3, an MNIST-shaped CNN: nnserve's engine against PyTorch on the CPU, in the same run.

Run from the repository root, with the ``bench`` extra installed (``pip install -e '.[bench]'``)::

    python bench/cnn.py                    # 60,000 images, 3 repeats
    python bench/cnn.py --rows 10000 --repeats 1
    python bench/cnn.py --only ours torch-tuned gemm profile

Workload: 60,000 x 28 x 28 x 1 float32 images generated here as W1 does (ten seeded class means
plus unit Gaussian noise; a further 10,000 drawn the same way are the test set), 10 classes,
``Conv2D(32, 3, relu) -> MaxPool(2) -> Conv2D(64, 3, relu) -> MaxPool(2) -> Flatten -> Dense(10,
softmax)``, Adam (lr 0.001), batch 128, one shuffled epoch. Candidates:

- ``ours-1`` / ``ours-N``: ``engine.build(...).fit(X, y)`` under 1 and ``cores`` OpenBLAS threads;
- ``torch-idiomatic``: the same net in ``nn.Sequential`` (channels first, as PyTorch has it),
  ``DataLoader(TensorDataset(x, y), batch_size, shuffle=True)``, ``torch.set_num_threads(cores)``;
- ``torch-tuned``: the same, with one permutation per epoch and tensor indexing per batch;
- ``gemm-1`` / ``gemm-N``: the GEMM bound, NumPy doing only the matrix products of one epoch's
  convolutions and dense layer (per batch: the forward products, the kernel gradients, and the
  input gradients of all but the first layer) on preallocated float32 arrays, under 1 and
  ``cores`` threads.

Every candidate runs in a fresh subprocess per repeat (this script with ``--child``), which makes
its data, then times one ``fit`` (model construction included) and reports the peak resident set
of that fit above the size right after the data was made (``/proc/self/clear_refs`` resets the high-water
mark). The table gives the median of the repeats, samples/s, the ratio to ours, peak MB and the
test accuracy. ``profile`` times one epoch of ours (``--profile-threads``, default 1) by part: the convolutions' GEMMs, im2col,
col2im, pooling, the other layers, the loss and the optimizer step (timers patched in memory only).

On a shared machine, other processes slow multi-threaded runs many times over: read the ratios
within one run, never an absolute time alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(REPO))

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
SEED, CLASSES, SIDE, BATCH, LR = 0, 10, 28, 128, 0.001
MEAN_SCALE = 0.15
TEST_ROWS = 10_000
CANDIDATES = ("ours-1", f"ours-{CORES}", "torch-idiomatic", "torch-tuned", "gemm-1", f"gemm-{CORES}")


def data(rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    means = np.random.default_rng([SEED, 0]).normal(0.0, MEAN_SCALE, (CLASSES, SIDE * SIDE)).astype(np.float32)

    def draw(n: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([SEED, stream])
        y = rng.integers(0, CLASSES, n)
        x = rng.standard_normal((n, SIDE * SIDE), dtype=np.float32)
        x += means[y]
        return x.reshape(n, SIDE, SIDE, 1), y

    x, y = draw(rows, 1)
    x_test, y_test = draw(TEST_ROWS, 2)
    return x, y, x_test, y_test


SPEC = {
    "layers": [
        {"type": "conv2d", "filters": 32, "kernel_size": 3, "activation": "relu"},
        {"type": "max_pooling2d"},
        {"type": "conv2d", "filters": 64, "kernel_size": 3, "activation": "relu"},
        {"type": "max_pooling2d"},
        {"type": "flatten"},
        {"type": "dense", "units": 10, "activation": "softmax"},
    ],
    "input_scaling": "none",
}
TRAINING = {"optimizer": {"name": "adam", "learning_rate": LR}, "batch_size": BATCH, "epochs": 1, "seed": SEED}


def fit_ours(x: np.ndarray, y: np.ndarray, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    from threadpoolctl import threadpool_limits

    from nnserve.engine import build

    with threadpool_limits(threads, user_api="blas"):
        model = build(SPEC, TRAINING)
        model.fit(x, y)
    return model.predict


def torch_net() -> Any:
    import torch
    from torch import nn

    torch.manual_seed(SEED)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 5 * 5, CLASSES),
    )


def fit_torch(x: np.ndarray, y: np.ndarray, tuned: bool) -> Callable[[np.ndarray], np.ndarray]:
    import torch
    from torch import nn

    torch.set_num_threads(CORES)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    yt = torch.from_numpy(y)
    net = torch_net()
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    if tuned:
        order = torch.randperm(len(xt))
        batches = ((xt[order[i : i + BATCH]], yt[order[i : i + BATCH]]) for i in range(0, len(xt), BATCH))
    else:
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xt, yt), batch_size=BATCH, shuffle=True)
        batches = iter(loader)
    for xb, yb in batches:
        optimizer.zero_grad()
        loss = loss_fn(net(xb), yb)
        loss.backward()
        optimizer.step()

    def predict(x_new: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = net(torch.from_numpy(np.ascontiguousarray(x_new.transpose(0, 3, 1, 2))))
        result: np.ndarray = out.argmax(dim=1).numpy()
        return result

    return predict


def gemm_bound(x: np.ndarray, threads: int) -> None:
    """Only the GEMMs of one epoch, on preallocated arrays of the im2col shapes."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    shapes = []  # (positions per sample, window * channels, filters, needs the input gradient)
    shapes.append((26 * 26, 9, 32, False))
    shapes.append((11 * 11, 9 * 32, 64, True))
    shapes.append((1, 5 * 5 * 64, CLASSES, True))
    arrays = [
        (
            rng.standard_normal((BATCH * p, k), dtype=np.float32),
            rng.standard_normal((k, f), dtype=np.float32),
            rng.standard_normal((BATCH * p, f), dtype=np.float32),
            np.empty((BATCH * p, f), np.float32),
            np.empty((k, f), np.float32),
            np.empty((BATCH * p, k), np.float32),
            back,
        )
        for p, k, f, back in shapes
    ]
    with threadpool_limits(threads, user_api="blas"):
        for start in range(0, len(x), BATCH):
            rows = min(BATCH, len(x) - start)
            for cols, kernel, grad, out, dkernel, dcols, back in arrays:
                n = len(cols) * rows // BATCH
                np.matmul(cols[:n], kernel, out=out[:n])
                np.matmul(cols[:n].T, grad[:n], out=dkernel)
                if back:
                    np.matmul(grad[:n], kernel.T, out=dcols[:n])


def peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(name: str, rows: int) -> dict[str, Any]:
    x, y, x_test, y_test = data(rows)
    if name.startswith("torch"):
        import torch  # noqa: F401  (imported before the baseline, as ours imports numpy)
    else:
        import nnserve.engine  # noqa: F401
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    baseline = rss_mb()
    start = time.perf_counter()
    predict: Callable[[np.ndarray], np.ndarray] | None = None
    if name.startswith("ours-"):
        predict = fit_ours(x, y, int(name.split("-")[1]))
    elif name.startswith("torch-"):
        predict = fit_torch(x, y, tuned=name == "torch-tuned")
    else:
        gemm_bound(x, int(name.split("-")[1]))
    seconds = time.perf_counter() - start
    peak = peak_mb() - baseline  # training's peak, before predicting on the test set
    accuracy = float((predict(x_test) == y_test).mean()) if predict is not None else None
    return {"seconds": seconds, "peak_mb": peak, "accuracy": accuracy}


def profile(rows: int, threads: int) -> dict[str, float]:
    """One epoch of ours, timed by part, under ``threads`` BLAS threads."""
    from threadpoolctl import threadpool_limits

    from nnserve.engine import build, convolution, training

    times: dict[str, float] = defaultdict(float)

    def timed(key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                times[key] += time.perf_counter() - start

        return wrapper

    x, y, _, _ = data(rows)
    model = build(SPEC, TRAINING)
    originals = (convolution.im2col, convolution.col2im, np.matmul)
    convolution.im2col = timed("im2col", convolution.im2col)
    convolution.col2im = timed("col2im", convolution.col2im)
    try:
        session = training.TrainingSession(model, x, y)
        for op in session.ops:
            kind = type(op).__name__
            op.forward = timed(f"{kind}.forward", op.forward)  # type: ignore[method-assign]
            op.backward = timed(f"{kind}.backward", op.backward)  # type: ignore[method-assign]
        session.optimizer.step = timed("optimizer", session.optimizer.step)  # type: ignore[method-assign]
        session.train_loss.value_and_grad = timed("loss", session.train_loss.value_and_grad)  # type: ignore[method-assign]
        convolution.np.matmul = timed("GEMMs (every layer)", np.matmul)  # type: ignore[attr-defined]
        with threadpool_limits(threads, user_api="blas"):
            start = time.perf_counter()
            session.run()
            times["epoch"] = time.perf_counter() - start
    finally:
        convolution.im2col, convolution.col2im = originals[0], originals[1]
        convolution.np.matmul = originals[2]  # type: ignore[attr-defined]
    return dict(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=[*CANDIDATES, "profile"])
    parser.add_argument("--profile-threads", type=int, default=1, help="BLAS threads of the profiled epoch")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.rows)))
        return
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    names = [name for name in CANDIDATES if name in args.only]
    for repeat in range(args.repeats):
        for name in names:  # round-robin, so a noisy minute hurts every candidate alike
            command = [sys.executable, __file__, "--child", name, "--rows", str(args.rows)]
            result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
            runs[name].append(result)
            print(f"  [{repeat + 1}/{args.repeats}] {name}: {result['seconds']:.2f}s", file=sys.stderr)
    title = (
        f"W3, MNIST-shaped CNN: {args.rows:,} x 28 x 28 x 1, conv32-pool-conv64-pool-dense10, Adam, batch 128, 1 epoch"
    )
    print(title)
    print(f"{'candidate':<16} {'median s':>9} {'samples/s':>10} {'vs ours':>8} {'peak MB':>8} {'accuracy':>9}")
    ours = min(
        (statistics.median(r["seconds"] for r in runs[n]) for n in names if n.startswith("ours")), default=float("nan")
    )
    for name in names:
        seconds = statistics.median(r["seconds"] for r in runs[name])
        peak = statistics.median(r["peak_mb"] for r in runs[name])
        accuracy = runs[name][0]["accuracy"]
        acc = f"{accuracy:.4f}" if accuracy is not None else "-"
        print(f"{name:<16} {seconds:>9.2f} {args.rows / seconds:>10.0f} {seconds / ours:>8.2f} {peak:>8.0f} {acc:>9}")
    if "profile" in args.only:
        parts = profile(args.rows, args.profile_threads)
        epoch = parts.pop("epoch")
        line = ", ".join(f"{k} {v:.2f}s ({v / epoch:.0%})" for k, v in sorted(parts.items(), key=lambda kv: -kv[1]))
        print(
            f"profile (one epoch of ours, {args.profile_threads} BLAS thread(s), {epoch:.2f}s; parts overlap: a GEMM is inside its layer): {line}"
        )


if __name__ == "__main__":
    main()
