"""The Redis store: the keys a full round trip touches, atomic job status moves. (Its arrays are the
engine's archives: see tests/engine/test_archive.py.)"""

from __future__ import annotations

from redis.commands.core import Script

from nnserve.service import lifecycle, store
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
        "nnserve:stats:job_durations",
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
    assert store.transition(redis, job, [store.Step(["queued"], "running")]) == (0, "queued")
    assert store.transition(redis, job, [store.Step(["queued"], "canceled")]) == (None, "running")
    assert lifecycle.fail(redis, job, {"type": "X", "detail": "y"})
    assert store.get_job(redis, job["id"])["error"] == {"type": "X", "detail": "y"}
    assert store.get_model(redis, job["model_id"], "public")["status"] == "failed"
    assert store.job_counts(redis) == {"queued": 0, "running": 0, "failed": 1}
    nothing = {"id": "job_nope", "model_id": "mdl_nope"}
    assert store.transition(redis, nothing, [store.Step(["queued"], "running")]) == (None, None)


def test_lua_scripts_are_registered_once_and_survive_a_script_flush(client, redis):
    """Every script runs by its SHA1 (EVALSHA): its text goes to Redis only when Redis does not know
    it, as after a restart or a SCRIPT FLUSH, and the call still succeeds then."""
    job = store.get_job(redis, submit(client).json["id"])
    scripts = [value for value in vars(store).values() if isinstance(value, Script)]
    # transition, record epoch, checkpoint, delete, job delete, rate count, idempotency reserve/renew/release,
    # the registry's version, alias set and delete, version delete, name delete
    assert len(scripts) == 14

    def every_script(attempt: int) -> None:
        lease = f"lease-{attempt}"
        assert lifecycle.start(redis, job, lease)[0]
        assert store.record_epoch(redis, job["id"], lease, 0, {"loss": 1.0}) is False
        store.save_checkpoint(redis, job["id"], lease, b"checkpoint", 1)
        assert store.count_request(redis, "predict", f"tenant-{attempt}", 10, 60)[:2] == (True, 1)
        key = store.idempotency_key(store.PUBLIC, f"key-{attempt}")
        assert store.reserve_idempotency_key(redis, key, b"reserved", 60) is None
        assert store.reserve_idempotency_key(redis, key, b"other", 60) == b"reserved"
        assert store.renew_idempotency_key(redis, key, b"reserved", 60)
        store.release_idempotency_key(redis, key, b"reserved")
        assert not redis.exists(key)
        assert store.delete_job(redis, {"id": "job_none", "tenant": store.PUBLIC}, keep=()) == (False, None)
        store.delete_dataset(redis, {"id": f"ds_{attempt}", "tenant": store.PUBLIC})
        name, model_id = f"reg-{attempt}", f"mdl_{attempt}"
        running = lifecycle.JobStatus.running
        assert store.register_version(redis, {**job, "name": name, "model_id": model_id}, lease, running, "keep", None)
        assert store.set_alias(redis, store.PUBLIC, name, "staging", 1, [1], "api") == (True, None)
        assert store.delete_alias(redis, store.PUBLIC, name, "staging", "api") == 2
        version = {"tenant": store.PUBLIC, "name": name, "id": model_id, "version": 1}
        assert store.delete_version(redis, version, False, "api") == (False, ["current"])
        assert store.delete_name(redis, store.PUBLIC, name)

    def calls(command: str) -> int:
        """Calls of ``command`` since the last reset (subcommands too: Redis 7.2 counts ``script|load`` apart)."""
        stats = redis.info("commandstats")
        return sum(stat["calls"] for name, stat in stats.items() if name.split("|")[0] == f"cmdstat_{command}")

    redis.script_flush()
    redis.config_resetstat()
    every_script(1)  # each script is loaded once, on its first NOSCRIPT
    assert calls("eval") == 0 and calls("script") == len(scripts)
    assert redis.script_exists(*(script.sha for script in scripts)) == [True] * len(scripts)

    redis.config_resetstat()
    every_script(2)  # now known: by their SHA1 alone
    assert calls("eval") == 0 and calls("script") == 0 and calls("evalsha") == 15
