"""The arithmetic of bench/engine.py, on a workload small enough to run in a test.

The benchmark's tables are only as honest as their divisions: a GEMM bound timed over one
epoch but divided by the number of epochs once printed a fiftieth of the truth. These tests
run its real functions (no peers: those need torch) on 10 rows and check what is counted.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "engine.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_engine", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny(bench: ModuleType) -> tuple[object, object]:
    """10 rows of 5 features, 2 classes; 5-3-2 in batches of 4 (3 batches, the last of 2 rows), 3 epochs."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 5)).astype(np.float32)
    y = np.arange(10) % 2
    workload = bench.Workload("tiny", "tiny", (3,), batch_size=4, epochs=3, learning_rate=0.01, standardize=False)
    data = bench.Dataset(x, y, x, y, 2, x, x)
    return workload, data


def test_the_gemm_bound_runs_every_epoch_of_the_fit(bench: ModuleType, tiny: tuple) -> None:
    workload, data = tiny
    fit = bench.gemm_bound(workload, data, blas_threads=1)
    layers = len(workload.hidden) + 1
    batches = math.ceil(10 / 4) * workload.epochs
    assert bench.batches_per_fit(workload, data) == batches == 9
    # Per batch: a forward product and a kernel gradient per layer, an input gradient per layer but the first.
    assert fit.products == batches * (3 * layers - 1)
    # Its milliseconds per epoch divide a whole fit's time by the epochs, as every other row does.
    assert bench.ms(fit.seconds, workload) == pytest.approx(1000 * fit.seconds / 3)


def test_the_profile_counts_the_products_of_our_fit_and_its_phases_add_up(bench: ModuleType, tiny: tuple) -> None:
    workload, data = tiny
    timing = bench.Timing(1, bench.Quiet(max_wait=0.0, budget=0.0))
    totals = bench.profile_ours(workload, 1, data, timing)
    layers = len(workload.hidden) + 1
    batches = bench.batches_per_fit(workload, data)
    # The engine runs the bound's forward products, no more (the bound is a lower bound on the same work) ...
    assert totals["calls:gemm:forward"] == batches * layers
    # ... and at least its backward ones.
    assert totals["calls:gemm:backward"] >= batches * (2 * layers - 1)
    phases = bench.profile_phases(totals)
    parts = {name: seconds for name, seconds in phases.items() if name != "total fit"}
    assert sum(parts.values()) == pytest.approx(phases["total fit"])
    assert phases["forward GEMMs"] > 0 and phases["backward GEMMs"] > 0 and phases["optimizer step"] > 0
