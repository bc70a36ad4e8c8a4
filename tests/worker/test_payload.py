"""What a worker reads from Redis is untrusted: job specs are validated again, tenants are checked
again, and nothing is unpickled (RQ's payload is JSON). Each test tampers with Redis directly, as
someone who got past the API would, and expects a cleanly failed job and a worker that goes on."""

from __future__ import annotations

import pickle
import zlib

import orjson
import pytest
from pydantic import SecretStr

from nnserve.service import store
from tests.service.helpers import IRIS_MODEL, submit
from tests.service.test_auth import ALICE, BOB, keyed

TINY = {"epochs": 1, "seed": 0}


def tamper(redis, job_id: str, **fields) -> None:
    redis.hset(store.job_key(job_id), mapping={name: orjson.dumps(value) for name, value in fields.items()})


@pytest.mark.parametrize(
    "fields, loc",
    [
        ({"model": {"layers": [{"type": "dense", "units": -3}]}}, "layers[0].units"),
        ({"model": {"layers": [{"type": "lambda", "function": "__import__('os').system('id')"}]}}, "layers[0].type"),
        ({"model": "__import__('os').system('id')"}, "must be an object"),
        ({"model": {**IRIS_MODEL, "activation_hook": "x"}}, "activation_hook"),
        ({"training": {"epochs": 1, "loss": "os.system"}}, "training.loss"),
        ({"training": {"epochs": -1}}, "training.epochs"),
    ],
)
def test_a_tampered_spec_fails_the_job_cleanly(client, run_jobs, redis, fields, loc):
    job = submit(client, training=TINY).json
    tamper(redis, job["id"], **fields)
    after = submit(client, training=TINY).json
    run_jobs()
    failed = store.get_job(redis, job["id"])  # read from the store: the API would not show a record this broken
    assert failed["status"] == "failed" and failed["attempts"] == 1, failed  # deterministic: not retried
    assert failed["error"]["type"] == "SpecError" and loc in failed["error"]["detail"], failed["error"]
    assert store.get_model(redis, job["model_id"], store.PUBLIC)["status"] == "failed"
    assert client.get(f"/v1/jobs/{after['id']}").json["status"] == "succeeded"  # the worker went on


def test_a_job_pointed_at_another_tenants_dataset_does_not_read_it(make_app, run_jobs, redis):
    app = make_app(api_keys=(SecretStr(ALICE), SecretStr(BOB)))
    alice, bob = keyed(app, ALICE), keyed(app, BOB)
    dataset = alice.post(
        "/v1/datasets", json={"features": [[0.0, 1.0]] * 4 + [[1.0, 0.0]] * 4, "targets": [0] * 4 + [1] * 4}
    ).json
    job = submit(
        bob, dataset="blobs", model={"layers": [{"type": "dense", "units": 3, "activation": "softmax"}]}, training=TINY
    ).json
    tamper(redis, job["id"], dataset_id=dataset["id"])
    run_jobs()
    failed = bob.get(f"/v1/jobs/{job['id']}").json
    assert failed["status"] == "failed" and dataset["id"] in failed["error"]["detail"], failed
    assert failed["attempts"] == 1 and "history" in failed and failed["history"] == {}


def test_the_worker_never_unpickles_the_queue_payload(client, run_jobs, redis, tmp_path):
    """RQ's job payload is JSON: a pickle planted in its place is never loaded, so its code never runs."""
    marker = tmp_path / "unpickled"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    job = submit(client, training=TINY).json
    redis.hset(
        f"rq:job:{job['id']}", "data", zlib.compress(pickle.dumps(("nnserve.worker.jobs.train", None, [Exploit()], {})))
    )
    after = submit(client, training=TINY).json
    run_jobs()
    assert not marker.exists()
    assert client.get(f"/v1/jobs/{after['id']}").json["status"] == "succeeded"  # the worker went on
    planted = client.get(f"/v1/jobs/{job['id']}").json
    assert planted["status"] == "failed" and planted["error"]["type"] == "DeserializationError", planted
    assert planted["attempts"] == 0  # train() never ran
