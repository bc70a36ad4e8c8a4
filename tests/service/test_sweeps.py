"""/v1/sweeps with an in-process worker (RQ's SimpleWorker, burst): the checks made before anything is
queued, grids, seeded random and TPE sweeps, pruning, cancel; trials are ordinary jobs on their own queue."""

from __future__ import annotations

import itertools

import pytest
from rq.job import Job
from rq.serializers import JSONSerializer

from nnserve.service import queue, store, sweeps
from tests.service.helpers import IRIS_MODEL

TRAINING = {
    "optimizer": {"name": "adam", "learning_rate": 0.05},
    "epochs": 8,
    "batch_size": 16,
    "validation_split": 0.2,
    "seed": 1,
}


def sweep_body(**extra) -> dict:
    body = {
        "dataset": "iris",
        "model": IRIS_MODEL,
        "training": TRAINING,
        "search_space": {"training.optimizer.learning_rate": {"log_uniform": [0.001, 0.1]}},
        "strategy": "random",
        "trials": 3,
        "seed": 7,
    }
    return {**body, **extra}


def post(client, **extra):
    return client.post("/v1/sweeps", json=sweep_body(**extra))


def run_sweep(client, run_jobs, **extra) -> dict:
    response = post(client, **extra)
    assert response.status_code == 202, response.json
    run_jobs()
    return client.get(f"/v1/sweeps/{response.json['id']}").json


# Checked before anything is queued ----------------------------------------------------------------

BAD_SPACES = [
    ({}, "search_space", "empty"),
    ({"model.layers.5.units": {"choice": [4, 8]}}, "search_space.model.layers.5.units", "no item '5'"),
    ({"training.scheduler.rate": {"uniform": [0, 1]}}, "search_space.training.scheduler.rate", "has no 'scheduler'"),
    (
        {"training.optimizer.momentum_x": {"uniform": [0.1, 0.9]}},
        "search_space.training.optimizer.momentum_x",
        "unknown field",
    ),
    ({"model.layers.0.units": {"choice": [0, 8]}}, "search_space.model.layers.0.units", "0 makes an invalid job"),
    ({"training.batch_size": {"int": [8, 10**9]}}, "search_space.training.batch_size", "server's limit"),
    ({"training.epochs": {"uniform": [5, 1]}}, "search_space.training.epochs", "low < high"),
    (
        {"training.optimizer.learning_rate": {"log_uniform": [0, 1]}},
        "search_space.training.optimizer.learning_rate",
        "low > 0",
    ),
    ({"training.seed": {"normal": [0, 1]}}, "search_space.training.seed", "one distribution"),
    ({"training.optimizer.name": {"choice": [["adam"]]}}, "search_space.training.optimizer.name", "choice takes"),
    ({"dataset": {"choice": ["iris", "blobs"]}}, "search_space.dataset", "start with 'model.'"),
]


@pytest.mark.parametrize(("space", "loc", "words"), BAD_SPACES, ids=[case[1] + ":" + case[2] for case in BAD_SPACES])
def test_a_bad_search_space_is_a_422_naming_the_path_and_queues_nothing(client, redis, space, loc, words):
    response = post(client, search_space=space)
    assert response.status_code == 422, response.json
    assert response.json["errors"][0]["loc"] == loc and words in response.json["detail"]
    assert not list(redis.scan_iter(store.sweep_key("*"))) and not redis.exists("rq:queue:" + queue.SWEEP_QUEUE_NAME)


@pytest.mark.parametrize(
    ("extra", "loc"),
    [
        ({"strategy": "grid", "trials": None}, "search_space.training.optimizer.learning_rate"),  # not a choice
        ({"strategy": "random", "trials": None}, "trials"),
        ({"objective": {"metric": "val_auc"}}, "objective.metric"),
        ({"training": {**TRAINING, "epochs": 0}}, "training.epochs"),
        ({"pruner": {"name": "median", "reduction_factor": 3}}, "pruner.reduction_factor"),
        ({"strategy": "anneal"}, "strategy"),
    ],
)
def test_the_rest_of_the_request_is_checked_too(client, extra, loc):
    response = post(client, **extra)
    assert response.status_code == 422 and response.json["errors"][0]["loc"] == loc, response.json


def test_a_field_the_document_leaves_out_may_be_searched(client):
    """Adam's beta_1 is not in the base document's optimizer, but the spec has it."""
    response = post(client, search_space={"training.optimizer.beta_1": {"uniform": [0.8, 0.95]}})
    assert response.status_code == 202, response.json


# Running ------------------------------------------------------------------------------------------


def test_a_grid_runs_exactly_its_product_and_trials_are_jobs(client, run_jobs, redis):
    space = {"model.layers.0.units": {"choice": [4, 8]}, "training.batch_size": {"choice": [16, 32, 64]}}
    response = post(client, strategy="grid", trials=None, search_space=space, parallelism=2, name="iris-grid")
    assert response.status_code == 202, response.json
    created = response.json
    assert response.headers["Location"] == f"/v1/sweeps/{created['id']}"
    assert created["trials_total"] == 6 and created["status"] == "running"
    queued = client.get(f"/v1/sweeps/{created['id']}").json
    assert queued["counts"]["queued"] == 2 and len(queued["trials"]) == 2  # parallelism
    first = queued["trials"][0]["job_id"]
    rq_job = Job.fetch(first, connection=redis, serializer=JSONSerializer)
    assert rq_job.origin == queue.SWEEP_QUEUE_NAME and rq_job.func_name == queue.TRAIN_TRIAL

    run_jobs()
    sweep = client.get(f"/v1/sweeps/{created['id']}").json
    assert sweep["status"] == "succeeded" and sweep["counts"]["succeeded"] == 6
    points = sorted(
        (t["parameters"]["model.layers.0.units"], t["parameters"]["training.batch_size"]) for t in sweep["trials"]
    )
    assert points == sorted(itertools.product([4, 8], [16, 32, 64]))
    assert all(t["epochs"] == 8 and t["duration_s"] > 0 for t in sweep["trials"])
    # minimize val_loss by default; the best is the lowest
    assert sweep["objective"] == {"metric": "val_loss", "direction": "minimize"}
    assert sweep["best"]["objective"] == min(t["objective"] for t in sweep["trials"])
    # A trial is an ordinary job that knows its sweep; its model has no name (trials register nothing).
    job = client.get(f"/v1/jobs/{first}").json
    assert job["sweep_id"] == created["id"] and job["status"] == "succeeded" and "name" not in job
    assert job["model"]["layers"][0]["units"] == sweep["trials"][0]["parameters"]["model.layers.0.units"]
    # The winner is registered under the sweep's name, and answers through it (the first version is current).
    assert sweep["winner"]["job_id"] == sweep["best"]["job_id"] and sweep["winner"]["name"] == "iris-grid"
    assert sweep["winner"]["promote"] == "if_better" and sweep["winner"]["version"] == 1
    winner_model = client.get(f"/v1/jobs/{sweep['best']['job_id']}").json["model_id"]
    assert client.get("/v1/models/iris-grid").json["id"] == winner_model
    registered = client.get("/v1/registry/iris-grid").json
    assert [v["model_id"] for v in registered["versions"]] == [winner_model]
    assert registered["events"][0]["by"] == f"sweep {created['id']}"
    listed = client.get("/v1/sweeps").json
    assert listed["total"] == 1 and listed["items"][0]["id"] == created["id"] and "trials" not in listed["items"][0]


@pytest.mark.parametrize("strategy", ["random", "tpe"])
def test_the_same_seed_samples_the_same_trials(client, run_jobs, strategy):
    space = {
        "training.optimizer.learning_rate": {"log_uniform": [0.001, 0.1]},
        "model.layers.0.units": {"int": [2, 16]},
        "training.batch_size": {"choice": [16, 32]},
    }
    extra = {
        "strategy": strategy,
        "search_space": space,
        "trials": 4,
        "parallelism": 1,
        "training": {**TRAINING, "epochs": 2},
    }

    def parameters(seed: int) -> list[dict]:
        sweep = run_sweep(client, run_jobs, seed=seed, **extra)
        assert sweep["status"] == "succeeded" and sweep["counts"]["succeeded"] == 4
        return [t["parameters"] for t in sweep["trials"]]

    first = parameters(7)
    assert parameters(7) == first
    assert parameters(8) != first
    assert len({t["training.optimizer.learning_rate"] for t in first}) == 4


def test_asha_prunes_the_trials_in_a_bad_region_of_learning_rates(client, run_jobs):
    """Learning rates of 1e-5 barely move the loss in 18 epochs; 0.05 learns iris. Once a good trial has
    reached a rung, ASHA stops the bad ones there."""
    space = {"training.optimizer.learning_rate": {"choice": [0.00001, 0.05]}}
    sweep = run_sweep(
        client,
        run_jobs,
        search_space=space,
        trials=10,
        parallelism=1,
        training={**TRAINING, "epochs": 18},
        pruner={"name": "asha", "min_epochs": 2, "reduction_factor": 3},
    )
    assert sweep["status"] == "succeeded"
    trials = sweep["trials"]
    good = [t["number"] for t in trials if t["parameters"]["training.optimizer.learning_rate"] == 0.05]
    assert good, "the seed sampled no good trial"
    late_bad = [
        t for t in trials if t["number"] > good[0] and t["parameters"]["training.optimizer.learning_rate"] < 0.001
    ]
    assert late_bad and all(t["status"] == "pruned" for t in late_bad), trials
    for trial in late_bad:
        assert trial["epochs"] < 18 and trial["pruned"]["epoch"] == trial["epochs"] and trial["pruned"]["rung"] >= 0
    assert sweep["best"]["parameters"]["training.optimizer.learning_rate"] == 0.05
    assert sweep["counts"]["pruned"] == len([t for t in trials if t["status"] == "pruned"])
    job = client.get(f"/v1/jobs/{late_bad[0]['job_id']}").json
    assert job["status"] == "pruned" and job["pruned"] == late_bad[0]["pruned"]


@pytest.mark.parametrize("pruner", ["median", "hyperband"])
def test_the_other_pruners_run(client, run_jobs, pruner):
    space = {"training.optimizer.learning_rate": {"choice": [0.00001, 0.05]}}
    sweep = run_sweep(client, run_jobs, search_space=space, trials=8, parallelism=1, pruner=pruner)
    assert sweep["status"] == "succeeded" and sum(sweep["counts"].values()) == 8
    assert sweep["pruner"]["name"] == pruner


def test_maximizing_an_accuracy(client, run_jobs):
    sweep = run_sweep(client, run_jobs, objective={"metric": "val_accuracy"}, trials=2)
    assert sweep["objective"] == {"metric": "val_accuracy", "direction": "maximize"}
    assert sweep["best"]["objective"] == max(t["objective"] for t in sweep["trials"])


def test_cancel_cancels_queued_trials_keeps_finished_ones_and_ends_the_sweep(client, run_jobs, redis):
    created = post(client, trials=5, parallelism=2).json
    canceled = client.post(f"/v1/sweeps/{created['id']}/cancel")
    assert canceled.status_code == 202
    sweep = canceled.json
    assert sweep["status"] == "canceled" and sweep["counts"]["canceled"] == 2 and sweep["finished_at"]
    assert redis.llen("rq:queue:" + queue.SWEEP_QUEUE_NAME) == 0
    run_jobs()  # nothing more is asked for
    after = client.get(f"/v1/sweeps/{created['id']}").json
    assert len(after["trials"]) == 2 and after["status"] == "canceled" and after.get("best") is None
    again = client.post(f"/v1/sweeps/{created['id']}/cancel")
    assert again.status_code == 409 and "canceled" in again.json["detail"]
    assert client.get("/v1/sweeps/swp_nope").status_code == 404


def test_an_idempotency_key_makes_one_sweep(client, redis):
    first = client.post("/v1/sweeps", json=sweep_body(), headers={"Idempotency-Key": "k1"})
    again = client.post("/v1/sweeps", json=sweep_body(), headers={"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 202 and first.json["id"] == again.json["id"]
    assert redis.zcard(store.index_key(store.PUBLIC, store.SWEEPS)) == 1


def test_a_sweep_over_the_trial_limit_is_refused(make_app):
    client = make_app(max_sweep_trials=2).test_client()
    response = post(client, trials=3)
    assert response.status_code == 422 and response.json["errors"][0]["loc"] == "trials"


def test_a_trial_asked_for_but_never_recorded_is_taken_up_again(client, run_jobs, redis):
    """A crash between Optuna's journal entry for a new trial and our record of it leaves the study a
    trial ahead: the next advance takes that trial up (same number, same parameters), asks none anew."""
    created = post(client, trials=3, parallelism=1).json
    drawn, told = sweeps.ask(redis, store.get_sweep(redis, created["id"]), 1)  # and then the process died
    assert not told
    run_jobs()
    sweep = client.get(f"/v1/sweeps/{created['id']}").json
    assert sweep["status"] == "succeeded" and [t["number"] for t in sweep["trials"]] == [0, 1, 2]
    assert sweep["trials"][1]["parameters"] == drawn
    assert len(sweeps.load_study(redis, store.get_sweep(redis, created["id"])).get_trials()) == 3


def test_the_events_of_a_sweep_replay_its_trials_best_and_end(client, run_jobs):
    from tests.service.test_events import parse

    sweep = run_sweep(client, run_jobs, trials=2)
    response = client.get(f"/v1/sweeps/{sweep['id']}/events")
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    events = [e for e in parse(response.get_data(as_text=True)) if "event" in e]
    assert [e["event"] for e in events] == ["trial", "trial", "best", "status"]
    assert [e["data"]["job_id"] for e in events[:2]] == [t["job_id"] for t in sweep["trials"]]
    assert events[2]["data"] == sweep["best"] and events[3]["data"]["status"] == "succeeded"
    assert client.get("/v1/sweeps/swp_nope/events").status_code == 404


def test_a_sweep_is_its_tenants_alone(make_app, run_jobs):
    from pydantic import SecretStr

    alice, bob = "a" * 32, "b" * 32
    client = make_app(api_keys=(SecretStr(alice), SecretStr(bob))).test_client()
    created = client.post("/v1/sweeps", json=sweep_body(trials=1), headers={"Authorization": f"Bearer {alice}"})
    assert created.status_code == 202, created.json
    as_bob = {"Authorization": f"Bearer {bob}"}
    sweep_id = created.json["id"]
    assert client.get(f"/v1/sweeps/{sweep_id}", headers=as_bob).status_code == 404
    assert client.post(f"/v1/sweeps/{sweep_id}/cancel", headers=as_bob).status_code == 404
    assert client.get("/v1/sweeps", headers=as_bob).json["total"] == 0
    run_jobs()
    done = client.get(f"/v1/sweeps/{sweep_id}", headers={"Authorization": f"Bearer {alice}"}).json
    assert done["status"] == "succeeded"
    trial = done["trials"][0]["job_id"]
    assert client.get(f"/v1/jobs/{trial}", headers=as_bob).status_code == 404


def test_if_better_registers_every_winner_but_moves_current_only_for_a_better_one(client, run_jobs):
    """Two sweeps under one name on the same rows (same dataset, split and seed): the second, searching
    learning rates far too small to learn in 8 epochs, registers version 2 and leaves current on 1."""
    good = run_sweep(client, run_jobs, name="iris-tuned")
    assert good["winner"]["version"] == 1 and good["winner"]["promotion"]["decision"] == "promoted"
    bad_space = {"training.optimizer.learning_rate": {"log_uniform": [1e-7, 1e-6]}}
    bad = run_sweep(client, run_jobs, name="iris-tuned", search_space=bad_space)
    promotion = bad["winner"]["promotion"]
    assert bad["winner"]["version"] == 2 and promotion["decision"] == "kept" and "reason" not in promotion
    assert promotion["metric"] == "val_loss" and promotion["new"] > promotion["current"]
    registered = client.get("/v1/registry/iris-tuned").json
    assert registered["aliases"]["current"] == 1 and registered["aliases"]["latest"] == 2
