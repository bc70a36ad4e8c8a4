"""``nnserve sweep`` (submit with --spec, follow with --wait, show, cancel) and ``nnserve sweeps``, as
subprocesses against ``nnserve api`` and a worker."""

from __future__ import annotations

import json

import pytest

from tests.cli.test_verbs import nnserve
from tests.conftest import ROOT
from tests.stack import stack


@pytest.fixture(scope="module")
def url(redis_server, tmp_path_factory):
    with stack(redis_server.url, tmp_path_factory.mktemp("cli-sweeps")) as base:
        yield base


def test_sweep_wait_then_show_and_list(url, tmp_path):
    spec = json.loads((ROOT / "examples" / "sweeps" / "iris_grid.json").read_text())
    spec["training"]["epochs"] = 3
    path = tmp_path / "grid.json"
    path.write_text(json.dumps(spec))
    run = nnserve("sweep", "--spec", str(path), "--wait", url=url)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    sweep_id = lines[0].split()[1]
    assert sweep_id.startswith("swp_") and "status       succeeded" in run.stdout and "trials       9/9" in run.stdout
    assert "9/9 trials done (9 succeeded, 0 pruned" in run.stderr  # the progress line
    assert sum(1 for line in lines if " succeeded " in line) == 9  # the trials table
    shown = nnserve("sweep", sweep_id, "--json", url=url)
    assert shown.returncode == 0 and json.loads(shown.stdout)["counts"]["succeeded"] == 9
    listed = nnserve("sweeps", url=url)
    assert listed.returncode == 0 and sweep_id in listed.stdout and "9/9" in listed.stdout
    again = nnserve("sweep", sweep_id, "--cancel", url=url)
    assert again.returncode == 1 and "409" in again.stderr


def test_sweep_usage_and_server_errors(url, tmp_path):
    assert nnserve("sweep", url=url).returncode == 2
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"dataset": "iris", "model": {"layers": []}, "search_space": {}}))
    run = nnserve("sweep", "--spec", str(path), url=url)
    assert run.returncode == 1 and "search_space" in run.stderr
