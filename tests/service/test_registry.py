"""The model registry over HTTP: names, versions, references, aliases, rollback, promotion, canary, shadow."""

from __future__ import annotations

import numpy as np
import pytest

from nnserve import engine
from tests.service.helpers import submit, train

NAME = "iris-clf"
QUICK = {"optimizer": {"name": "adam", "learning_rate": 0.05}, "epochs": 5, "batch_size": 16, "seed": 1}
GOOD = {**QUICK, "epochs": 60, "validation_split": 0.3}
BAD = {
    "optimizer": {"name": "sgd", "learning_rate": 1e-5},
    "epochs": 1,
    "batch_size": 16,
    "seed": 3,
    "validation_split": 0.3,
}
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def trained_version(client, run_jobs, name=NAME, training=QUICK, **extra) -> dict:
    job = train(client, run_jobs, name=name, training=training, **extra)
    assert job["status"] == "succeeded", job
    return job


def predict(client, ref, rows=ROWS, **headers):
    return client.post(f"/v1/models/{ref}/predict", json={"inputs": rows}, headers=headers)


@pytest.mark.parametrize("name", ["9lives", "mdl_abc", "has space", "a" * 65, "", "x:y", "ok/no"])
def test_a_name_outside_the_grammar_is_a_422_on_name(client, name):
    response = submit(client, name=name)
    assert response.status_code == 422, response.json
    assert response.json["errors"][0]["loc"] == "name"


def test_promote_needs_a_name_and_if_better_needs_held_out_rows(client):
    response = submit(client, promote="never")
    assert response.status_code == 422 and "needs a name" in response.json["detail"]
    response = submit(client, name=NAME, promote={"if_better": {"metric": "val_accuracy"}})
    assert response.status_code == 422 and "held-out rows" in response.json["detail"]
    response = submit(client, name=NAME, promote="sometimes")
    assert response.status_code == 422 and response.json["errors"][0]["loc"].startswith("promote")


def test_each_run_under_a_name_adds_the_next_version_and_moves_current(client, run_jobs):
    first = trained_version(client, run_jobs)
    second = trained_version(client, run_jobs)
    assert (first["version"], second["version"]) == (1, 2)
    assert client.get(f"/v1/models/{second['model_id']}").json["version"] == 2

    listing = client.get("/v1/registry").json
    assert listing["total"] == 1
    [item] = listing["items"]
    assert item["name"] == NAME and item["versions"] == 2
    assert item["aliases"] == {"current": 2, "latest": 2, "previous": 1}

    detail = client.get(f"/v1/registry/{NAME}").json
    assert [v["version"] for v in detail["versions"]] == [2, 1]
    assert detail["versions"][0]["model_id"] == second["model_id"]
    assert detail["versions"][0]["job_id"] == second["id"] and detail["versions"][0]["status"] == "ready"
    by = {(e["alias"], e["to"]): e["by"] for e in detail["events"]}
    assert by[("current", 2)] == f"job {second['id']}" and by[("previous", 1)] == f"job {second['id']}"


def test_unnamed_jobs_and_failed_runs_take_no_version(client, run_jobs):
    assert "version" not in train(client, run_jobs)
    assert client.get("/v1/registry").json["items"] == []


def test_every_form_of_reference_reaches_the_same_model_in_every_route(client, run_jobs):
    first = trained_version(client, run_jobs)
    second = trained_version(client, run_jobs)
    for ref, model_id in [
        (NAME, second["model_id"]),
        (f"{NAME}@current", second["model_id"]),
        (f"{NAME}@latest", second["model_id"]),
        (f"{NAME}@previous", first["model_id"]),
        (f"{NAME}@1", first["model_id"]),
        (first["model_id"], first["model_id"]),
    ]:
        assert client.get(f"/v1/models/{ref}").json["id"] == model_id, ref
    answer = predict(client, f"{NAME}@1")
    assert answer.status_code == 200 and answer.json["model_version"] == 1
    assert answer.headers["X-Model-Version"] == "1"
    assert predict(client, NAME).json["model_version"] == 2
    evaluation = client.post(f"/v1/models/{NAME}@1/evaluate", json={"dataset": "iris"})
    assert evaluation.status_code == 200 and evaluation.json["n_samples"] == 150
    weights = client.get(f"/v1/models/{NAME}@1/weights")
    assert weights.status_code == 200 and f"{first['model_id']}.npz" in weights.headers["Content-Disposition"]

    v2 = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": [v for row in ROWS for v in row]}]}
    infer = client.post(f"/v2/models/{NAME}/versions/1/infer", json=v2)
    assert infer.status_code == 200 and infer.headers["X-Model-Version"] == "1"
    assert client.post(f"/v2/models/{NAME}/infer", json=v2).headers["X-Model-Version"] == "2"
    assert client.get(f"/v2/models/{NAME}/versions/2/ready").status_code == 200
    assert client.get(f"/v2/models/{NAME}/versions/3/ready").status_code == 404


def test_an_unknown_reference_is_a_404_naming_what_was_not_found(client, run_jobs):
    trained_version(client, run_jobs)
    for ref, detail in [
        ("nobody", "no registered model 'nobody'"),
        (f"{NAME}@7", f"'{NAME}' has no version 7"),
        (f"{NAME}@staging", f"'{NAME}' has no alias 'staging'"),
        ("mdl_nope", "no model 'mdl_nope'"),
        ("bad ref!", "no model 'bad ref!'"),
    ]:
        response = client.get(f"/v1/models/{ref}")
        assert response.status_code == 404 and detail in response.json["detail"], (ref, response.json)
        assert predict(client, ref).status_code == 404


def test_aliases_are_set_moved_and_deleted_with_their_statuses(client, run_jobs):
    trained_version(client, run_jobs)
    trained_version(client, run_jobs)
    put = client.put(f"/v1/registry/{NAME}/aliases/staging", json={"version": 1})
    assert put.status_code == 200 and put.json["aliases"]["staging"] == 1
    assert client.get(f"/v1/models/{NAME}@staging").json["version"] == 1
    assert client.put(f"/v1/registry/{NAME}/aliases/latest", json={"version": 1}).status_code == 409
    assert client.delete(f"/v1/registry/{NAME}/aliases/latest").status_code == 409
    missing = client.put(f"/v1/registry/{NAME}/aliases/staging", json={"version": 9})
    assert missing.status_code == 404 and "no version 9" in missing.json["detail"]
    assert client.put("/v1/registry/nobody/aliases/staging", json={"version": 1}).status_code == 404
    assert client.put(f"/v1/registry/{NAME}/aliases/9bad", json={"version": 1}).status_code == 422
    assert client.put(f"/v1/registry/{NAME}/aliases/staging", json={"version": "1"}).status_code == 422
    assert client.put(f"/v1/registry/{NAME}/aliases/staging", json={}).status_code == 422
    assert client.delete(f"/v1/registry/{NAME}/aliases/staging").status_code == 204
    assert client.delete(f"/v1/registry/{NAME}/aliases/staging").status_code == 404

    # Without current, a bare name is latest.
    assert client.delete(f"/v1/registry/{NAME}/aliases/current").status_code == 204
    assert predict(client, NAME).json["model_version"] == 2


def test_rollback_moves_current_back_and_previous_follows(client, run_jobs):
    trained_version(client, run_jobs)
    trained_version(client, run_jobs)
    assert predict(client, NAME).json["model_version"] == 2  # warm: the state is cached in this process
    put = client.put(f"/v1/registry/{NAME}/aliases/current", json={"version": 1})
    assert put.json["aliases"] == {"current": 1, "previous": 2, "latest": 2}
    assert predict(client, NAME).json["model_version"] == 1
    events = client.get(f"/v1/registry/{NAME}").json["events"]
    assert events[0]["by"] == "api" and {events[0]["alias"], events[1]["alias"]} == {"current", "previous"}


def test_deleting_a_version_an_alias_points_at_is_a_409_unless_forced(client, run_jobs):
    first = trained_version(client, run_jobs)
    trained_version(client, run_jobs)
    client.put(f"/v1/registry/{NAME}/aliases/champion", json={"version": 2})
    refused = client.delete(f"/v1/models/{NAME}@2")
    assert refused.status_code == 409
    assert "current" in refused.json["detail"] and "champion" in refused.json["detail"]
    assert client.delete(f"/v1/models/{NAME}@2?force=true").status_code == 204
    aliases = client.get(f"/v1/registry/{NAME}").json["aliases"]
    assert aliases == {"previous": 1, "latest": 1}  # latest moved down; current and champion went
    assert client.get(f"/v1/models/{NAME}@2").status_code == 404
    assert predict(client, NAME).json["model_version"] == 1
    # previous points at 1: deleting 1 by its id is refused the same way
    assert client.delete(f"/v1/models/{first['model_id']}").status_code == 409
    # A new run takes the next number, never a deleted one.
    assert trained_version(client, run_jobs)["version"] == 3


def test_deleting_a_name_removes_every_version(client, run_jobs):
    first = trained_version(client, run_jobs)
    second = trained_version(client, run_jobs)
    assert client.delete(f"/v1/registry/{NAME}").status_code == 204
    for model_id in (first["model_id"], second["model_id"]):
        assert client.get(f"/v1/models/{model_id}").status_code == 404
    assert client.get(f"/v1/registry/{NAME}").status_code == 404
    assert client.delete(f"/v1/registry/{NAME}").status_code == 404
    assert client.get("/v1/registry").json["total"] == 0


def test_promote_never_registers_without_moving_current_but_a_first_version_becomes_current(client, run_jobs):
    assert trained_version(client, run_jobs, promote="never")["version"] == 1
    trained_version(client, run_jobs, promote="never")
    assert client.get(f"/v1/registry/{NAME}").json["aliases"] == {"current": 1, "latest": 2}


def _held_out_score(client, job, model_id, metric="accuracy") -> float:
    """``model_id``'s metric on the rows ``job`` held out, computed here from the engine."""
    from nnserve.service import builtin

    _, x, y = builtin.load("iris")
    fresh = engine.build(job["model"], job["training"])
    session = engine.TrainingSession(fresh, x, y, task="classification")
    held_out = np.setdiff1d(np.arange(len(x)), session.train_rows)
    model = engine.loads(client.get(f"/v1/models/{model_id}/weights").data)
    from nnserve.service.registry import scores_on

    return scores_on(model, x[held_out], y[held_out], [metric])[metric]


def test_if_better_promotes_a_better_model_and_keeps_current_for_a_worse_one_on_the_same_rows(client, run_jobs):
    better = {"if_better": {"metric": "val_accuracy", "min_delta": 0.05}}
    weak = trained_version(client, run_jobs, training=BAD)
    strong = trained_version(client, run_jobs, training=GOOD, promote=better)
    decision = strong["promotion"]
    assert decision["decision"] == "promoted" and decision["metric"] == "val_accuracy", decision
    assert decision["new"] > decision["current"] + 0.05
    assert decision["current"] == pytest.approx(_held_out_score(client, strong, weak["model_id"]), abs=1e-12)

    worse = trained_version(client, run_jobs, training={**BAD, "seed": 11}, promote=better)
    decision = worse["promotion"]
    assert decision["decision"] == "kept" and decision["new"] < decision["current"], decision
    # Both scored on this job's own held-out rows (its seed draws another split than the strong job's).
    assert decision["current"] == pytest.approx(_held_out_score(client, worse, strong["model_id"]), abs=1e-12)
    assert decision["new"] == pytest.approx(_held_out_score(client, worse, worse["model_id"]), abs=1e-12)
    assert client.get(f"/v1/registry/{NAME}").json["aliases"]["current"] == 2
    shown = {v["version"]: v.get("promotion") for v in client.get(f"/v1/registry/{NAME}").json["versions"]}
    assert shown[3]["decision"] == "kept"


def test_if_better_with_no_current_promotes_and_says_so(client, run_jobs):
    job = trained_version(client, run_jobs, training=GOOD, promote={"if_better": {"metric": "val_loss"}})
    assert job["promotion"]["decision"] == "promoted" and "no current" in job["promotion"]["reason"]


def test_a_split_sends_each_routing_key_to_one_version_in_proportion(client, run_jobs):
    trained_version(client, run_jobs)
    trained_version(client, run_jobs)
    put = client.put(f"/v1/registry/{NAME}/aliases/current", json={"split": {"1": 90, "2": 10}})
    assert put.status_code == 200 and put.json["aliases"]["current"] == {"split": {"1": 90, "2": 10}}
    versions = [predict(client, NAME, **{"X-Routing-Key": f"caller-{i}"}).json["model_version"] for i in range(1000)]
    share = versions.count(1) / len(versions)
    assert 0.85 <= share <= 0.95, share
    for key in ("caller-1", "caller-2", "caller-3"):
        assert len({predict(client, NAME, **{"X-Routing-Key": key}).json["model_version"] for _ in range(20)}) == 1
    bad = client.put(f"/v1/registry/{NAME}/aliases/current", json={"split": {"one": 90}})
    assert bad.status_code == 422
    missing = client.put(f"/v1/registry/{NAME}/aliases/current", json={"split": {"1": 50, "5": 50}})
    assert missing.status_code == 404 and "no version 5" in missing.json["detail"]


def test_a_shadow_answers_nothing_and_reports_agreement(app, client, run_jobs):
    trained_version(client, run_jobs)
    trained_version(client, run_jobs, training={**QUICK, "seed": 2})
    put = client.put(f"/v1/registry/{NAME}/aliases/current", json={"version": 1, "shadow": 2})
    assert put.status_code == 200
    alone = predict(client, f"{NAME}@1").json
    for _ in range(30):
        answer = predict(client, NAME)
        assert answer.json == {**alone, "model_version": 1}
    app.extensions["nnserve"].shadows.drain()
    shadow = client.get(f"/v1/registry/{NAME}").json["shadow"]
    assert shadow["version"] == 1 and shadow["shadow"] == 2
    assert shadow["requests"] == 30 and shadow["rows"] == 60
    assert 0 <= shadow["label_agreement"] <= 1 and shadow["mean_abs_diff"] >= 0


def test_the_registry_list_is_paged_like_the_other_lists(client, run_jobs):
    for name in ("alpha", "beta", "gamma"):
        trained_version(client, run_jobs, name=name, training={**QUICK, "epochs": 1})
    first = client.get("/v1/registry?limit=2")
    assert first.json["total"] == 3 and [i["name"] for i in first.json["items"]] == ["gamma", "beta"]
    assert first.json["next"] == "/v1/registry?offset=2&limit=2" and 'rel="next"' in first.headers["Link"]
    second = client.get(first.json["next"]).json
    assert [i["name"] for i in second["items"]] == ["alpha"] and second["next"] is None
    assert client.get("/v1/registry?limit=0").status_code == 422
