"""The Redis store: the keys a full round trip touches, atomic job status moves. (Its arrays are the
engine's archives: see tests/engine/test_archive.py.)"""

from __future__ import annotations

from nnserve.service import store
from tests.service.helpers import submit


def test_keys_of_a_full_round_trip(client, run_jobs, redis):
    dataset = client.post(
        "/v1/datasets", json={"features": [[0.0], [1.0], [2.0], [3.0]] * 5, "targets": ["a", "b", "a", "b"] * 5}
    ).json
    job = submit(
        client,
        dataset=dataset["id"],
        model={"layers": [{"type": "dense", "units": 2, "activation": "softmax"}]},
        training={"epochs": 3, "seed": 0},
    ).json
    run_jobs()
    assert client.post(f"/v1/models/{job['model_id']}/predict", json={"inputs": [[1.0]]}).status_code == 200
    ours = {k.decode() for k in redis.keys("nnserve:*")}
    assert ours == {
        f"nnserve:dataset:{dataset['id']}",
        f"nnserve:dataset:{dataset['id']}:arrays",
        f"nnserve:job:{job['id']}",
        f"nnserve:job:{job['id']}:history",
        f"nnserve:model:{job['model_id']}",
        f"nnserve:model:{job['model_id']}:weights",
        "nnserve:tenant:public:datasets",
        "nnserve:tenant:public:jobs",
        "nnserve:tenant:public:models",
        "nnserve:stats:jobs",
    }  # the checkpoint is gone once the job succeeded
    assert all(k.startswith(b"rq:") for k in redis.keys("*") if not k.startswith(b"nnserve:"))
    assert redis.type(store.history_key(job["id"])) == b"list" and redis.llen(store.history_key(job["id"])) == 3
    assert store.get_job(redis, job["id"])["tenant"] == "public"


def test_records_are_tenant_scoped(client, redis):
    job = submit(client).json
    assert store.get_job(redis, job["id"], "public")["id"] == job["id"]
    assert store.get_job(redis, job["id"], "someone-else") is None
    assert store.get_model(redis, job["model_id"], "someone-else") is None
    assert store.get_dataset(redis, "iris", "someone-else") is not None  # built-ins are everyone's


def test_transitions_are_conditional_and_counted(client, redis):
    job = store.get_job(redis, submit(client).json["id"])
    assert store.transition(redis, job, "running", ["queued"]) == (True, "queued")
    assert store.transition(redis, job, "canceled", ["queued"]) == (False, "running")
    assert store.finish_job(redis, job, "failed", {"type": "X", "detail": "y"})
    assert store.get_job(redis, job["id"])["error"] == {"type": "X", "detail": "y"}
    assert store.get_model(redis, job["model_id"], "public")["status"] == "failed"
    assert store.job_counts(redis) == {"queued": 0, "running": 0, "failed": 1}
    assert store.transition(redis, {"id": "job_nope", "model_id": "mdl_nope"}, "running", ["queued"]) == (False, None)
