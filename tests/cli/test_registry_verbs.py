"""The registry's verbs (``registry``, ``alias``, ``rollback``, ``train --name --promote``, ``delete --force``)
as subprocesses against ``nnserve api`` and a worker."""

from __future__ import annotations

import json

import pytest

from tests.cli.test_verbs import fields, nnserve
from tests.conftest import ROOT
from tests.stack import stack

IRIS_CSV = ROOT / "service" / "builtin" / "iris.csv"
SPEC = {
    "model": {"layers": [{"type": "dense", "units": 8, "activation": "relu"}, {"type": "dense", "units": 3}]},
    "training": {"epochs": 5, "validation_split": 0.3, "seed": 1},
}


@pytest.fixture(scope="module")
def url(redis_server, tmp_path_factory):
    with stack(redis_server.url, tmp_path_factory.mktemp("cli-registry")) as base:
        yield base


@pytest.fixture(scope="module")
def two_versions(url, tmp_path_factory):
    spec = tmp_path_factory.mktemp("spec") / "spec.json"
    spec.write_text(json.dumps(SPEC))
    runs = [
        nnserve("train", "--dataset", "iris", "--spec", str(spec), "--name", "cli-reg", "--wait", *extra, url=url)
        for extra in ([], ["--promote", "if_better:val_accuracy:0.99"])
    ]
    for run in runs:
        assert run.returncode == 0, run.stderr
    return [fields(run.stdout) for run in runs]


def test_train_under_a_name_prints_the_version_and_the_promotion(two_versions):
    first, second = two_versions
    assert first["version"] == "cli-reg@1"
    assert second["version"] == "cli-reg@2"
    assert second["promotion"].startswith("kept: not better")  # nothing beats another model by 0.99


def test_registry_lists_names_and_one_names_versions(two_versions, url):
    run = nnserve("registry", url=url)
    assert run.returncode == 0, run.stderr
    header, line = run.stdout.splitlines()[:2]
    assert header.split()[:3] == ["NAME", "VERSIONS", "ALIASES"]
    assert line.split()[:2] == ["cli-reg", "2"] and "current=1" in line and "latest=2" in line
    run = nnserve("registry", "cli-reg", url=url)
    assert run.returncode == 0, run.stderr
    rows = [line.split() for line in run.stdout.splitlines()[1:3]]
    assert rows[0][:2] == ["2", "latest"] and rows[1][:2] == ["1", "current"]
    assert json.loads(nnserve("registry", "cli-reg", "--json", url=url).stdout)["name"] == "cli-reg"


def test_alias_rollback_predict_and_delete_through_the_name(two_versions, url):
    run = nnserve("alias", "cli-reg", "current", "2", url=url)
    assert run.returncode == 0 and "current=2" in run.stdout and "previous=1" in run.stdout, run.stderr
    run = nnserve("rollback", "cli-reg", url=url)
    assert run.returncode == 0 and run.stdout.strip() == "cli-reg: current=1 (previous=2)", run.stdout
    run = nnserve("predict", "cli-reg", "--input", str(IRIS_CSV), "--format", "json", url=url)
    assert run.returncode == 0, run.stderr
    run = nnserve("alias", "cli-reg", "canary", "1=90,2=10", url=url)
    assert run.returncode == 0 and "canary=1=90,2=10" in run.stdout, run.stderr
    assert nnserve("alias", "cli-reg", "canary", "--delete", url=url).returncode == 0
    refused = nnserve("delete", "model", "cli-reg@1", url=url)
    assert refused.returncode == 1 and "current" in refused.stderr and "force" in refused.stderr
    assert nnserve("delete", "model", "cli-reg@1", "--force", url=url).returncode == 0
    missing = nnserve("rollback", "nobody", url=url)
    assert missing.returncode == 1 and "no registered model 'nobody'" in missing.stderr
    bad = nnserve("train", "--dataset", "iris", "--spec", "x.json", "--promote", "sometimes", url=url)
    assert bad.returncode == 2 and "if_better:METRIC" in bad.stderr
