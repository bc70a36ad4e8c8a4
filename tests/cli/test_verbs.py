"""The client verbs (``nnserve train``, ``predict``, ``job``, ``upload``, the listings, ...) run as subprocesses
against ``nnserve api`` and a worker, some in a pseudo-terminal."""

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
from nnserve import engine
from nnserve.service.builtin import load
from tests.conftest import ROOT, free_port, run_in_terminal
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
        "cli-iris",
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
    assert run.stderr == ""  # not a terminal: no progress bar drawn


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
    assert "cli-iris" in line and " ready " in line and " classification " in line and "accuracy=0.9" in line
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


def test_train_wait_in_an_80_column_terminal_redraws_one_line(url):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNSERVE_")}
    spec = str(ROOT / "examples" / "iris.json")
    command = [sys.executable, "-m", "nnserve", "train", "--dataset", "iris", "--spec", spec, "--wait", "--url", url]
    screen = run_in_terminal(command, columns=80, env=env)
    bar = screen[screen.index("\r") :].split("\n", 1)[0]  # from the first redraw to the end of the line
    frames = [frame for frame in bar.split("\r") if frame.strip()]
    assert frames and all(len(frame) <= 80 for frame in frames), frames
    assert frames[-1].startswith("100%|") and "100/100 [" in frames[-1] and "epoch/s" in frames[-1]
    assert "status       succeeded (100/100 epochs)" in screen


def _spec(tmp_path, epochs: int) -> str:
    """The linear example with more epochs: a job that runs for a few seconds."""
    spec = json.loads((ROOT / "examples" / "linear.json").read_text())
    spec["training"]["epochs"] = epochs
    path = tmp_path / f"linear-{epochs}.json"
    path.write_text(json.dumps(spec))
    return str(path)


def test_job_shows_a_job_and_follow_reattaches_its_bar(url, tmp_path):
    submitted = nnserve("train", "--dataset", "linear", "--spec", _spec(tmp_path, 3000), url=url)
    job_id = fields(submitted.stdout)["job"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNSERVE_")}
    screen = run_in_terminal([sys.executable, "-m", "nnserve", "job", job_id, "--follow", "--url", url], 80, env=env)
    bar = [line for line in screen.split("\n") if "%|" in line]
    assert len(bar) == 1 and "3000/3000 [" in bar[0] and "epoch/s" in bar[0], screen
    shown = fields("\n".join(line for line in screen.split("\n") if "%|" not in line))
    assert shown["job"] == job_id and shown["status"] == "succeeded" and shown["epochs"] == "3000/3000"
    assert float(shown["loss"]) < 0.1

    plain = nnserve("job", job_id, url=url)
    assert plain.returncode == 0 and fields(plain.stdout)["status"] == "succeeded" and plain.stderr == ""
    as_json = json.loads(nnserve("job", job_id, "--json", url=url).stdout)
    assert as_json["id"] == job_id and len(as_json["history"]["loss"]) == 3000
    missing = nnserve("job", "job_nope", url=url)
    assert missing.returncode == 1 and "404" in missing.stderr and "job_nope" in missing.stderr


def test_cancel_then_delete_a_job(url, tmp_path):
    job_id = fields(nnserve("train", "--dataset", "linear", "--spec", _spec(tmp_path, 10_000), url=url).stdout)["job"]
    busy = nnserve("delete", "job", job_id, url=url)
    assert busy.returncode == 1 and "409" in busy.stderr and "cancel it first" in busy.stderr
    canceled = nnserve("cancel", job_id, "--keep", "best", url=url)
    assert canceled.returncode == 0, canceled.stderr
    assert fields(canceled.stdout)["status"].split()[0] in ("canceled", "running")
    followed = nnserve("job", job_id, "--follow", url=url)  # to its end: canceled, so exit status 1
    assert followed.returncode == 1 and fields(followed.stdout)["status"] == "canceled"
    deleted = nnserve("delete", "job", job_id, url=url)
    assert deleted.returncode == 0 and deleted.stdout.strip() == f"deleted job {job_id}"
    assert nnserve("job", job_id, url=url).returncode == 1
    assert nnserve("cancel", job_id, "--keep", "everything", url=url).returncode == 2  # not a choice


def test_upload_list_and_delete_datasets(url, tmp_path):
    heights = tmp_path / "heights.csv"
    heights.write_text("height,age,weight\n" + "".join(f"{150 + i},{20 + i % 7},{50.5 + i}\n" for i in range(30)))
    uploaded = nnserve("upload", str(heights), "--target", "height", "--target-kind", "continuous", url=url)
    assert uploaded.returncode == 0, uploaded.stderr
    shown = fields(uploaded.stdout)
    dataset_id = shown["dataset"]
    assert dataset_id.startswith("ds_") and shown["name"] == "heights" and shown["rows"] == "30"
    assert shown["features"] == "age, weight" and shown["target"] == "height (continuous)"

    table = nnserve("datasets", url=url)
    assert table.returncode == 0 and table.stdout.split("\n")[0].split() == [
        "ID",
        "NAME",
        "ROWS",
        "FEATURES",
        "TARGET",
        "CLASSES",
        "CREATED",
    ]
    rows = {line.split()[0]: line for line in table.stdout.splitlines()[1:]}
    assert "setosa, versicolor, virginica" in rows["iris"] and "built-in" in rows["iris"]
    assert " 30 " in rows[dataset_id] and " continuous " in rows[dataset_id]
    listed = json.loads(nnserve("datasets", "--json", "--limit", "2", url=url).stdout)
    assert [d["id"] for d in listed] == ["iris", "blobs"]

    assert nnserve("delete", "dataset", dataset_id, url=url).stdout.strip() == f"deleted dataset {dataset_id}"
    gone = nnserve("delete", "dataset", dataset_id, url=url)
    assert gone.returncode == 1 and "404" in gone.stderr
    builtin = nnserve("delete", "dataset", "iris", url=url)
    assert builtin.returncode == 1 and "built-in" in builtin.stderr
    assert nnserve("upload", str(tmp_path / "none.csv"), url=url).returncode == 2
    assert nnserve("delete", "widget", "x", url=url).returncode == 2


def test_upload_images(url, tmp_path):
    path = tmp_path / "tiny.npz"
    np.savez(path, x=np.arange(6 * 16, dtype=np.uint8).reshape(6, 16), y=np.array([0, 1] * 3))
    uploaded = nnserve("upload", str(path), "--shape", "4,4,1", url=url)
    assert uploaded.returncode == 0, uploaded.stderr
    shown = fields(uploaded.stdout)
    assert shown["name"] == "tiny" and shown["rows"] == "6" and shown["shape"] == "4 x 4 x 1"
    wrong = nnserve("upload", str(path), "--shape", "5,5", url=url)
    assert wrong.returncode == 1 and "[5, 5]" in wrong.stderr
    assert nnserve("upload", str(path), "--shape", "a,b", url=url).returncode == 2


def test_evaluate_weights_and_delete_a_model(trained, url, tmp_path):
    model_id = trained[1]["model"]
    evaluated = nnserve("evaluate", model_id, "--dataset", "iris", url=url)
    assert evaluated.returncode == 0, evaluated.stderr
    shown = fields(evaluated.stdout)
    assert shown["dataset"] == "iris" and shown["rows"] == "150" and float(shown["accuracy"]) >= 0.93
    as_json = json.loads(nnserve("evaluate", model_id, "--dataset", "iris", "--json", url=url).stdout)
    assert as_json["n_samples"] == 150 and set(as_json["metrics"]) >= {"accuracy"}

    target = tmp_path / "iris.npz"
    written = nnserve("weights", model_id, "-o", str(target), url=url)
    assert written.returncode == 0 and str(target) in written.stdout
    model = engine.loads(target.read_bytes())
    assert model.n_features == 4 and list(model.classes) == ["setosa", "versicolor", "virginica"]
    unwritable = nnserve("weights", model_id, "-o", str(tmp_path / "no" / "such" / "dir.npz"), url=url)
    assert unwritable.returncode == 2 and "cannot write" in unwritable.stderr


def test_report_shows_the_stored_report_or_one_on_a_dataset(trained, url):
    model_id = trained[1]["model"]
    stored = nnserve("report", model_id, url=url)
    assert stored.returncode == 0, stored.stderr
    lines = stored.stdout.splitlines()
    assert lines[0].split() == ["on", "validation"] and lines[1].split() == ["rows", "30"]
    assert any(line.split()[:1] == ["accuracy"] for line in lines)
    assert any(line.startswith("class") and "precision" in line for line in lines)
    assert any(line.startswith("true setosa") for line in lines)
    as_json = json.loads(nnserve("report", model_id, "--dataset", "iris", "--json", url=url).stdout)
    assert as_json["on"] == "dataset iris" and as_json["rows"] == 150
    assert sum(map(sum, as_json["confusion_matrix"])) == 150


def test_report_of_a_regression_model(url):
    run = nnserve("train", "--dataset", "linear", "--spec", str(ROOT / "examples" / "linear.json"), "--wait", url=url)
    assert run.returncode == 0, run.stderr
    model_id = fields(run.stdout)["model"]
    stored = nnserve("report", model_id, url=url)
    assert stored.returncode == 0 and "no held-out rows" in stored.stdout
    shown = nnserve("report", model_id, "--dataset", "linear", url=url)
    assert shown.returncode == 0, shown.stderr
    lines = dict(line.split(None, 1) for line in shown.stdout.splitlines() if line.strip())
    assert lines["on"] == "dataset linear" and lines["rows"] == "4" and float(lines["r2"]) > 0.99
    assert {"mae", "rmse"} <= set(lines) and lines["residuals"].startswith("5%=")


def test_train_from_an_initial_model(trained, url, tmp_path):
    spec = tmp_path / "more.json"
    spec.write_text(json.dumps({"training": {"epochs": 5}}))
    run = nnserve(
        "train", "--dataset", "iris", "--spec", str(spec), "--initial-model", trained[1]["model"], "--wait", url=url
    )
    assert run.returncode == 0, run.stderr
    assert fields(run.stdout)["status"].startswith("succeeded")
    without = nnserve("train", "--dataset", "iris", "--spec", str(spec), url=url)
    assert without.returncode == 2 and "must hold" in without.stderr


def test_export_onnx_and_import_it_back_as_npz(trained, url, tmp_path):
    """``export --onnx`` writes a graph onnx loads; ``import`` serves another server's .npz, which predicts the same."""
    import onnx

    model_id = trained[1]["model"]
    target = tmp_path / "iris.onnx"
    exported = nnserve("export", model_id, "--onnx", "-o", str(target), url=url)
    assert exported.returncode == 0, exported.stderr
    graph = onnx.load_model(str(target))
    assert [i.name for i in graph.graph.input] == ["input"] and [o.name for o in graph.graph.output] == [
        "probabilities"
    ]

    npz = tmp_path / "iris.npz"
    assert nnserve("weights", model_id, "-o", str(npz), url=url).returncode == 0
    names = '["sepal_length", "sepal_width", "petal_length", "petal_width"]'
    imported = nnserve("import", str(npz), "--name", "iris-copy", "--feature-names", names, url=url)
    assert imported.returncode == 0, imported.stderr
    shown = fields(imported.stdout)
    assert shown["source"] == "nnserve" and shown["name"] == "iris-copy" and shown["task"] == "classification"
    rows = tmp_path / "rows.csv"
    rows.write_text("petal_width,sepal_length,sepal_width,petal_length\n0.2,5.1,3.5,1.4\n")
    copy = nnserve("predict", shown["model"], "--input", str(rows), url=url)
    original = nnserve("predict", model_id, "--input", str(rows), url=url)
    assert copy.returncode == 0 and copy.stdout == original.stdout

    refused = nnserve("import", str(rows), url=url)
    assert refused.returncode == 1 and "422" in refused.stderr and "not a zip archive" in refused.stderr
    assert nnserve("import", str(tmp_path / "nothing.keras"), url=url).returncode == 2
    assert nnserve("import", str(npz), "--classes", "[oops", url=url).returncode == 2


def test_delete_a_model(url, tmp_path):
    run = nnserve("train", "--dataset", "linear", "--spec", _spec(tmp_path, 5), "--wait", url=url)
    model_id = fields(run.stdout)["model"]
    assert nnserve("delete", "model", model_id, url=url).stdout.strip() == f"deleted model {model_id}"
    gone = nnserve("evaluate", model_id, "--dataset", "linear", url=url)
    assert gone.returncode == 1 and "404" in gone.stderr


def test_help_documents_the_exit_codes():
    for args in (["--help"], ["jobs", "--help"]):
        run = nnserve(*args)
        assert run.returncode == 0 and "exit status:" in run.stdout
        assert "0  done" in run.stdout and "1  the server said no" in run.stdout and "2  a usage error" in run.stdout
    assert nnserve("no-such-verb").returncode == 2
