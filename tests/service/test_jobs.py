"""/v1/jobs: submission and its validation, progress and history, cancel, failures (in-process worker)."""

from __future__ import annotations

import copy

import pytest
from rq.job import Job
from rq.serializers import JSONSerializer

from nnserve.service import store
from tests.service.helpers import IRIS_MODEL, submit, train


def test_submit_and_train(client, run_jobs, redis):
    response = submit(client, name="iris-8")
    assert response.status_code == 202
    job = response.json
    assert response.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["model_id"].startswith("mdl_") and job["name"] == "iris-8"
    assert job["progress"] == {"epoch": 0, "epochs": 60}
    # Enqueued by dotted path with the id only, JSON-serialized.
    rq_job = Job.fetch(job["id"], connection=redis, serializer=JSONSerializer)
    assert rq_job.func_name == "nnserve.worker.jobs.train" and list(rq_job.args) == [job["id"]]
    assert b"pickle" not in redis.hget(f"rq:job:{job['id']}", "data")
    # The normalized specs: every default, the resolved loss, the default metric, the seed.
    assert job["training"]["loss"] == "sparse_categorical_crossentropy"
    assert job["training"]["metrics"] == ["accuracy"] and job["training"]["seed"] == 1
    assert job["model"]["layers"][0]["kernel_initializer"] == "glorot_uniform"

    run_jobs()
    done = client.get(f"/v1/jobs/{job['id']}").json
    assert done["status"] == "succeeded" and done["attempts"] == 1
    assert done["progress"] == {"epoch": 60, "epochs": 60}
    assert len(done["history"]["loss"]) == 60 and len(done["history"]["accuracy"]) == 60
    assert done["started_at"] >= done["created_at"] and done["finished_at"] >= done["started_at"]
    assert "error" not in done
    assert not redis.exists(store.checkpoint_key(job["id"]))
    assert store.job_counts(redis) == {"queued": 0, "running": 0, "succeeded": 1}


def test_defaults_and_validation_split(client, run_jobs):
    job = train(
        client,
        run_jobs,
        dataset="linear",
        model={"layers": [{"type": "dense", "units": 1}]},
        training={"epochs": 3, "validation_split": 0.25, "seed": 0},
    )
    assert job["status"] == "succeeded"
    assert job["training"]["optimizer"]["name"] == "rmsprop" and job["training"]["batch_size"] == 32
    assert job["training"]["metrics"] == ["mae"] and job["training"]["loss"] == "mse"
    assert set(job["history"]) == {"loss", "mae", "val_loss", "val_mae", "learning_rate"}


def test_seed_is_drawn_and_kept(client):
    job = submit(client, training={"epochs": 1}).json
    assert isinstance(job["training"]["seed"], int)


def layer(**changes):
    spec = copy.deepcopy(IRIS_MODEL)
    spec["layers"][0].update(changes)
    return spec


@pytest.mark.parametrize(
    "model, training, loc, fragment",
    [
        (layer(units=0), None, "model.layers.0.units", ">= 1"),
        (layer(units="8"), None, "model.layers.0.units", "must be an integer"),
        (layer(activation="relu6"), None, "model.layers.0.activation", "'relu'"),
        (layer(type="conv3d"), None, "model.layers.0.type", "'dense'"),
        (layer(colour="red"), None, "model.layers.0.colour", "unknown field"),
        (
            {"layers": [{"type": "dense", "units": 8}, {"type": "dense", "units": 2, "activation": "softmax"}]},
            None,
            "model.layers.1.units",
            "one per class: 3",
        ),
        ({"layers": []}, None, "model.layers", "non-empty"),
        (
            {"layers": [{"type": "dropout", "rate": 1.5}, {"type": "dense", "units": 3}]},
            None,
            "model.layers.0.rate",
            "< 1.0",
        ),
        (None, {"loss": "nope"}, "training.loss", "'mse'"),
        (None, {"loss": {"name": "huber", "delta": -1}}, "training.loss.delta", ">"),
        (
            None,
            {"optimizer": {"name": "sgd", "learning_rate": -1}},
            "training.optimizer.learning_rate",
            "> 0.0",
        ),
        (None, {"optimizer": {"name": "sgd", "momentum": -0.5}}, "training.optimizer.momentum", ">="),
        (None, {"optimizer": {"name": "sgd", "mommentum": 0.9}}, "training.optimizer.mommentum", "unknown field"),
        (None, {"epochs": 0}, "training.epochs", ">= 1"),
        (None, {"epochs": 10**6}, "training.epochs", "at most 10000"),
        (None, {"batch_size": 10**6}, "training.batch_size", "at most 65536"),
        (None, {"metrics": ["mae"]}, "training.metrics.0", "regression metric"),
        (None, {"early_stopping": {"monitor": "val_loss"}}, "training.early_stopping.monitor", "validation_split"),
        (None, {"gradient": "finite_difference"}, "training.gradient", "not offered"),
        (
            {"layers": [{"type": "dense", "units": 3_000_000}, {"type": "dense", "units": 3}]},
            None,
            "model.layers",
            "parameters",
        ),
    ],
)
def test_validation_errors(client, redis, model, training, loc, fragment):
    response = submit(client, model=model, training=training)
    assert response.status_code == 422, response.json
    assert response.mimetype == "application/problem+json"
    errors = response.json["errors"]
    assert errors[0]["loc"] == loc, errors
    assert fragment in errors[0]["msg"], errors
    assert not redis.keys("nnserve:job:*") and redis.llen("rq:queue:nnserve") == 0


def test_loss_that_does_not_fit_the_task(client):
    response = submit(
        client,
        dataset="linear",
        model={"layers": [{"type": "dense", "units": 1}]},
        training={"loss": {"name": "categorical_crossentropy", "from_logits": True}},
    )
    assert response.status_code == 422 and response.json["errors"][0]["loc"] == "training.loss"
    assert "classification loss" in response.json["detail"]


def test_unknown_dataset_and_missing_fields(client):
    response = submit(client, dataset="nope")
    assert response.status_code == 422 and response.json["errors"][0]["loc"] == "dataset"
    response = client.post("/v1/jobs", json={"dataset": "iris"})
    assert [e["loc"] for e in response.json["errors"]] == ["model"]
    response = client.post("/v1/jobs", json=[1, 2])
    assert response.status_code == 422
    response = client.post("/v1/jobs", data="{", content_type="application/json")
    assert response.status_code == 400
    response = client.post("/v1/jobs", data="dataset=iris", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415


def test_list_and_show(client):
    ids = [submit(client, training={"epochs": 1}).json["id"] for _ in range(3)]
    items = client.get("/v1/jobs").json["items"]
    assert [j["id"] for j in items] == ids[::-1]
    assert all("history" not in j for j in items)
    assert client.get("/v1/jobs/job_nope").status_code == 404


def test_lists_page_with_total_next_and_link(client):
    """The same paging on every list: jobs here, datasets in test_datasets, models in test_models."""
    ids = [submit(client, training={"epochs": 1}).json["id"] for _ in range(5)][::-1]
    seen, url, pages = [], "/v1/jobs?limit=2", 0
    while url is not None:
        response = client.get(url)
        assert response.json["total"] == 5 and 'rel="first"' in response.headers["Link"]
        seen += [job["id"] for job in response.json["items"]]
        url, pages = response.json["next"], pages + 1
        if url is not None:
            assert f'<{url}>; rel="next"' in response.headers["Link"]
    assert seen == ids and pages == 3
    whole = client.get("/v1/jobs").json
    assert whole["next"] is None and whole["total"] == 5 and len(whole["items"]) == 5
    assert client.get("/v1/jobs?offset=10").json == {"items": [], "total": 5, "next": None}


def test_delete_a_finished_job_keeps_its_model(client, run_jobs, redis):
    running = submit(client, training={"epochs": 1}).json
    response = client.delete(f"/v1/jobs/{running['id']}")
    assert response.status_code == 409 and "still queued" in response.json["detail"]
    run_jobs()
    before = store.job_counts(redis)["succeeded"]
    assert client.delete(f"/v1/jobs/{running['id']}").status_code == 204
    assert client.get(f"/v1/jobs/{running['id']}").status_code == 404
    assert client.delete(f"/v1/jobs/{running['id']}").status_code == 404
    assert not redis.exists(store.job_key(running["id"]), store.history_key(running["id"]))
    assert store.job_counts(redis)["succeeded"] == before - 1
    assert client.get("/v1/jobs").json["total"] == 0
    assert client.get(f"/v1/models/{running['model_id']}").json["status"] == "ready"


def test_cancel_queued_job_never_runs(client, run_jobs, redis):
    job = submit(client).json
    response = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 202 and response.json["status"] == "canceled"
    assert redis.llen("rq:queue:nnserve") == 0
    run_jobs()
    after = client.get(f"/v1/jobs/{job['id']}").json
    assert after["status"] == "canceled" and after["progress"]["epoch"] == 0 and "started_at" not in after
    assert client.get(f"/v1/models/{job['model_id']}").json["status"] == "canceled"
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202  # idempotent


def test_cancel_of_a_finished_job_conflicts(client, run_jobs):
    job = train(client, run_jobs, training={"epochs": 1})
    response = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 409 and "succeeded" in response.json["detail"]


def test_a_cancel_that_reaches_a_dequeued_job_stops_it(client, run_jobs, redis):
    """A cancel that lands after a worker took the job but before it started: it never trains."""
    job = submit(client).json
    store.transition(
        redis, store.get_job(redis, job["id"]), [store.Step(["queued"], "queued", {"cancel_requested": True})]
    )
    run_jobs()
    assert client.get(f"/v1/jobs/{job['id']}").json["status"] == "canceled"


def test_failing_job_fails_with_the_message_and_the_worker_goes_on(client, run_jobs):
    diverging = {"optimizer": {"name": "sgd", "learning_rate": 1e30}, "epochs": 5, "seed": 0}
    bad = submit(
        client,
        dataset="linear",
        model={"layers": [{"type": "dense", "units": 1}], "input_scaling": "none"},
        training=diverging,
    ).json
    good = submit(client, training={"epochs": 2}).json
    run_jobs()
    failed = client.get(f"/v1/jobs/{bad['id']}").json
    assert failed["status"] == "failed" and failed["error"]["type"] == "NonFiniteError"
    assert "diverged" in failed["error"]["detail"] and failed["attempts"] == 1  # not retried
    assert client.get(f"/v1/models/{bad['model_id']}").json["status"] == "failed"
    assert client.get(f"/v1/jobs/{good['id']}").json["status"] == "succeeded"


def test_deleted_dataset_fails_the_job(client, run_jobs):
    dataset = client.post("/v1/datasets", json={"features": [[1], [2], [3], [4]], "targets": [0.1, 0.2, 0.3, 0.4]}).json
    job = submit(client, dataset=dataset["id"], model={"layers": [{"type": "dense", "units": 1}]}).json
    client.delete(f"/v1/datasets/{dataset['id']}")
    run_jobs()
    failed = client.get(f"/v1/jobs/{job['id']}").json
    assert (
        failed["status"] == "failed"
        and failed["error"]["type"] == "JobError"
        and "deleted" in failed["error"]["detail"]
    )
