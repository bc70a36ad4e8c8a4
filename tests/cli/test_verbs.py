"""``nnserve train | predict | models | jobs`` run as subprocesses against ``nnserve api`` and a worker."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import nnserve as nnserve_package
from nnserve.service.builtin import load
from tests.conftest import ROOT, free_port
from tests.stack import stack

IRIS_CSV = ROOT / "service" / "builtin" / "iris.csv"


@pytest.fixture(scope="module")
def url(redis_server, tmp_path_factory):
    with stack(redis_server.url, tmp_path_factory.mktemp("cli")) as base:
        yield base


def nnserve(*args: str, url: str | None = None, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NNSERVE_")}
    environ.update(**env)
    command = [sys.executable, "-m", "nnserve", *args, *(["--url", url] if url else [])]
    return subprocess.run(command, check=False, input=stdin, capture_output=True, text=True, env=environ, timeout=300)


def fields(stdout: str) -> dict[str, str]:
    """``train``'s ``name   value`` lines as a dict."""
    return dict(line.split(None, 1) for line in stdout.splitlines() if line.strip())


@pytest.fixture(scope="module")
def trained(url):
    """``nnserve train --wait`` on iris with the example spec: its run and its fields."""
    run = nnserve(
        "train",
        "--dataset",
        "iris",
        "--spec",
        str(ROOT / "examples" / "iris.json"),
        "--name",
        "cli iris",
        "--wait",
        url=url,
    )
    assert run.returncode == 0, run.stderr
    return run, fields(run.stdout)


def test_train_wait_prints_ids_progress_and_final_metrics(trained):
    run, out = trained
    assert out["job"].startswith("job_") and out["model"].startswith("mdl_")
    assert out["status"] == "succeeded (100/100 epochs)"
    assert float(out["accuracy"]) >= 0.93 and "val_accuracy" in out and "loss" in out
    # Not a terminal: a line per tenth of the epochs at most (fewer when it polls a fast job), the last complete.
    progress = [line for line in run.stderr.splitlines() if line.startswith("epoch ")]
    assert 1 <= len(progress) <= 11 and "\r" not in run.stderr
    assert progress[-1].startswith("epoch 100/100 [########################]") and "loss" in progress[-1]


def test_train_without_wait_returns_at_once(url):
    run = nnserve("train", "--dataset", "linear", "--spec", str(ROOT / "examples" / "linear.json"), url=url)
    assert run.returncode == 0, run.stderr
    out = fields(run.stdout)
    assert out["status"] == "queued" and out["job"].startswith("job_")
    assert "epoch" not in run.stderr


def test_predict_a_csv_with_a_header_as_csv(trained, url):
    model_id = trained[1]["model"]
    run = nnserve("predict", model_id, "--input", str(IRIS_CSV), url=url)  # the training file, species column and all
    assert run.returncode == 0, run.stderr
    rows = list(csv.reader(io.StringIO(run.stdout)))
    assert rows[0] == ["prediction", "p_setosa", "p_versicolor", "p_virginica"]
    _, _, species = load("iris")
    predicted = np.array([row[0] for row in rows[1:]])
    assert len(predicted) == 150 and np.mean(predicted == species) >= 0.93
    assert all(abs(sum(float(p) for p in row[1:]) - 1) < 1e-4 for row in rows[1:])


def test_predict_rows_from_stdin_as_json(trained, url):
    model_id = trained[1]["model"]
    run = nnserve(
        "predict", model_id, "--input", "-", "--format", "json", url=url, stdin="5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n"
    )
    assert run.returncode == 0, run.stderr
    body = json.loads(run.stdout)
    assert body["predictions"] == ["setosa", "virginica"]
    assert np.array(body["probabilities"]).shape == (2, 3)


def test_models_and_jobs_tables(trained, url):
    job_id, model_id = trained[1]["job"], trained[1]["model"]
    models = nnserve("models", NNSERVE_URL=url)  # the URL from the environment
    assert models.returncode == 0, models.stderr
    header, *lines = models.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "STATUS", "DATASET", "TASK", "METRICS", "PARAMS", "CREATED"]
    line = next(line for line in lines if line.startswith(model_id))
    assert "cli iris" in line and " ready " in line and " classification " in line and "accuracy=0.9" in line
    assert " 67 " in line  # 4*8+8 + 8*3+3 weights

    jobs = nnserve("jobs", url=url)
    assert jobs.returncode == 0, jobs.stderr
    line = next(line for line in jobs.stdout.splitlines() if line.startswith(job_id))
    assert " succeeded " in line and " 100/100 " in line and model_id in line

    listed = json.loads(nnserve("jobs", "--json", url=url).stdout)
    assert job_id in [job["id"] for job in listed]


def test_the_api_key_comes_from_the_option_or_the_environment(url, redis_server, tmp_path_factory):
    key = "cli-test-key-0123456789"
    with stack(redis_server.url, tmp_path_factory.mktemp("keyed"), workers=0, flush=False, api_keys=key) as keyed:
        refused = nnserve("jobs", url=keyed)
        assert refused.returncode == 1 and "401" in refused.stderr and "API key" in refused.stderr
        assert nnserve("jobs", "--api-key", key, url=keyed).returncode == 0
        from_env = nnserve("models", url=keyed, NNSERVE_API_KEY=key)
        assert from_env.returncode == 0 and from_env.stdout.split() == [
            "ID",
            "NAME",
            "STATUS",
            "DATASET",
            "TASK",
            "METRICS",
            "PARAMS",
            "CREATED",
        ]  # a new tenant: no models


def test_errors_exit_non_zero_with_the_problem(url, tmp_path):
    missing = nnserve("predict", "mdl_missing", "--input", str(IRIS_CSV), url=url)
    assert missing.returncode == 1 and "404" in missing.stderr and "mdl_missing" in missing.stderr

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model": {"layers": [{"type": "dense", "units": 0}]}}))
    invalid = nnserve("train", "--dataset", "iris", "--spec", str(bad), url=url)
    assert invalid.returncode == 1 and "model.layers.0.units:" in invalid.stderr
    assert invalid.stderr.count("model.layers.0.units") == 1  # the field's message, once

    bad.write_text(json.dumps({"layers": []}))
    unusable = nnserve("train", "--dataset", "iris", "--spec", str(bad), url=url)
    assert unusable.returncode == 2 and '{"model"' in unusable.stderr

    nobody = nnserve("models", url=f"http://127.0.0.1:{free_port()}")
    assert nobody.returncode == 1 and "no answer" in nobody.stderr
    malformed = nnserve("models", url="127.0.0.1:8000")
    assert malformed.returncode == 2 and "url must be http" in malformed.stderr


def test_client_options_go_before_or_after_the_verb(trained, url):
    before = subprocess.run(
        [sys.executable, "-m", "nnserve", "--url", url, "models", "--json"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert before.returncode == 0, before.stderr
    assert trained[1]["model"] in [model["id"] for model in json.loads(before.stdout)]
    # After the verb wins over before it.
    after = subprocess.run(
        [sys.executable, "-m", "nnserve", "--url", f"http://127.0.0.1:{free_port()}", "models", "--url", url],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert after.returncode == 0, after.stderr


def test_version():
    run = nnserve("--version")
    assert run.returncode == 0 and run.stdout.strip() == f"nnserve {nnserve_package.__version__}"


def test_a_closed_pipe_ends_quietly(trained, url):
    """``nnserve predict ... | head -1``: the reader goes away; no BrokenPipeError traceback."""
    rows = "\n".join(["5.1,3.5,1.4,0.2"] * 20000)
    command = f"{sys.executable} -m nnserve predict {trained[1]['model']} --input - --url {url} | head -1"
    run = subprocess.run(["bash", "-c", command], check=False, input=rows, capture_output=True, text=True, timeout=120)
    assert run.stdout.strip() == "prediction,p_setosa,p_versicolor,p_virginica"
    assert "Traceback" not in run.stderr and "BrokenPipe" not in run.stderr
