"""Backups: ``nnserve backup`` and ``nnserve restore`` as real processes, into a fresh redis-server that then
serves the same records and predictions (and trains nothing); the archive's form (JSON and npz, no pickle);
refusals, ``--force`` and ``--tenant``."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import zipfile
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import redis as redis_lib

from nnserve.service import auth, backup, store
from tests.conftest import RedisServer
from tests.service.helpers import submit, train

TINY = {"features": [[0.0, 1.0], [1.0, 0.0], [0.2, 0.9], [0.9, 0.1]] * 10, "targets": ["a", "b", "a", "b"] * 10}
PREDICT = {"tiny": [[0.2, 0.9], [0.8, 0.1]], "linear": [[0.5], [1.5]]}


def keyed(app, key):
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    return client


def nnserve(redis_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNSERVE_")}
    env["REDIS_URL"] = redis_url
    return subprocess.run(
        [sys.executable, "-m", "nnserve", *args], check=False, capture_output=True, text=True, env=env, timeout=120
    )


@pytest.fixture
def populated(client, run_jobs, redis):
    """Records of two tenants: ``public``, made while the API was open (two trained models, a canceled job and
    a job still queued), then keys for it; and ``acme``, made with a stored key of its own."""
    dataset = client.post("/v1/datasets", json={**TINY, "name": "tiny"}).json
    classifier = train(
        client,
        run_jobs,
        dataset=dataset["id"],
        model={"layers": [{"type": "dense", "units": 4, "activation": "relu"}, {"type": "dense", "units": 2}]},
        training={"epochs": 5, "validation_split": 0.25, "seed": 3},
    )
    regressor = train(client, run_jobs, dataset="linear", model={"layers": [{"type": "dense", "units": 1}]})
    canceled = submit(client, training={"epochs": 1}).json
    assert client.post(f"/v1/jobs/{canceled['id']}/cancel").status_code == 202
    queued = submit(client, training={"epochs": 1}).json
    admin_key, _ = auth.create_key(redis, {"admin"}, tenant=store.PUBLIC)
    predict_key, _ = auth.create_key(redis, {"predict"}, tenant=store.PUBLIC)
    acme_key, _ = auth.create_key(redis, {"train"}, tenant="acme")
    acme_dataset = keyed(client.application, acme_key).post("/v1/datasets", json={**TINY, "name": "acme's"}).json
    return SimpleNamespace(
        models={classifier["model_id"]: "tiny", regressor["model_id"]: "linear"},
        dataset=dataset["id"],
        queued=queued,
        admin_key=admin_key,
        predict_key=predict_key,
        acme_key=acme_key,
        acme_dataset=acme_dataset["id"],
    )


def snapshot(client, models: dict[str, str]) -> dict:
    """Everything a tenant can read, and its predictions, through the API."""
    seen = {name: client.get(f"/v1/{name}").json["items"] for name in ("datasets", "jobs", "models")}
    seen["job"] = {job["id"]: client.get(f"/v1/jobs/{job['id']}").json for job in seen["jobs"]}
    for model_id, dataset in models.items():
        seen[model_id] = {
            "weights": client.get(f"/v1/models/{model_id}/weights").data,
            "predict": client.post(f"/v1/models/{model_id}/predict", json={"inputs": PREDICT[dataset]}).data,
        }
    return seen


@pytest.fixture
def fresh(tmp_path):
    server = RedisServer(tmp_path / "fresh")
    server.start()
    client = redis_lib.Redis.from_url(server.url)
    yield SimpleNamespace(url=server.url, redis=client)
    client.close()
    server.stop()


def test_a_backup_restored_into_an_empty_redis_serves_the_same_records_and_predictions(
    populated, client, redis, redis_server, make_app, fresh, tmp_path
):
    archive = tmp_path / "all.zip"
    made = nnserve(redis_server.url, "backup", "-o", str(archive))
    assert made.returncode == 0, made.stderr
    assert "2 datasets, 4 jobs, 4 models, 0 registered names, 3 keys of all tenants" in made.stderr
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600

    restored = nnserve(fresh.url, "restore", str(archive))
    assert restored.returncode == 0, restored.stderr
    assert "restored 2 datasets, 4 jobs, 4 models, 0 registered names, 3 keys" in restored.stderr

    before = snapshot(keyed(client.application, populated.admin_key), populated.models)
    after_app = make_app(redis_url=fresh.url)
    after = snapshot(keyed(after_app, populated.admin_key), populated.models)
    queued_job = populated.queued["id"]
    assert before["job"][queued_job]["status"] == "queued"
    assert after["job"][queued_job]["status"] == "failed"  # caught in flight: restored as failed, with why
    assert after["job"][queued_job]["error"]["type"] == "Interrupted"
    assert [m["status"] for m in after["models"] if m["job_id"] == queued_job] == ["failed"]
    for side in (before, after):
        del side["job"][queued_job]
        side["jobs"] = [job for job in side["jobs"] if job["id"] != queued_job]
        side["models"] = [model for model in side["models"] if model["job_id"] != queued_job]
    assert after == before  # datasets, jobs with their histories, models, weights and predictions
    assert any(job["history"] for job in after["job"].values())

    # The other tenant and the keys came too: scopes and revocations hold.
    acme = keyed(after_app, populated.acme_key)
    assert [d["id"] for d in acme.get("/v1/datasets").json["items"]][-1] == populated.acme_dataset
    predictor = keyed(after_app, populated.predict_key)
    model_id = next(iter(populated.models))
    assert predictor.post(f"/v1/models/{model_id}/predict", json={"inputs": PREDICT["tiny"]}).status_code == 200
    assert predictor.get("/v1/datasets").status_code == 403
    assert after_app.test_client().get("/v1/models").status_code == 401

    # Nothing was queued or trained, and the job counts (/metrics) agree with the records.
    assert fresh.redis.keys("rq:*") == []
    statuses = Counter(
        store.get_job(fresh.redis, i.decode())["status"]
        for tenant in store.tenants(fresh.redis)
        for i in fresh.redis.zrange(store.index_key(tenant, store.JOBS), 0, -1)
    )
    assert {k: v for k, v in store.job_counts(fresh.redis).items() if v} == dict(statuses)
    metrics = after_app.test_client().get("/metrics").text
    assert 'nnserve_jobs{status="failed"} 1.0' in metrics and 'nnserve_jobs{status="succeeded"} 2.0' in metrics


def test_restore_refuses_to_overwrite_unless_forced(populated, redis, make_app, fresh, tmp_path):
    archive = tmp_path / "all.zip"
    backup.backup(redis, archive)
    backup.restore(fresh.redis, archive)
    app = make_app(redis_url=fresh.url)
    admin = keyed(app, populated.admin_key)
    deleted = next(iter(populated.models))
    assert admin.delete(f"/v1/models/{deleted}").status_code == 204
    counts = store.job_counts(fresh.redis)

    refused = nnserve(fresh.url, "restore", str(archive))
    assert refused.returncode == 1
    assert (
        "records of the backup already exist (datasets/" in refused.stderr and "nothing was restored" in refused.stderr
    )
    assert admin.get(f"/v1/models/{deleted}").status_code == 404  # nothing written, not even the missing model

    # --force replaces what exists and brings back what is missing; the job counts are not doubled.
    acme_key_id = store.api_keys(fresh.redis)[auth.digest(populated.acme_key).hex()]["id"]
    assert store.revoke_api_key(fresh.redis, acme_key_id) is not None
    forced = nnserve(fresh.url, "restore", "--force", str(archive))
    assert forced.returncode == 0, forced.stderr
    assert admin.get(f"/v1/models/{deleted}").status_code == 200
    assert admin.post(f"/v1/models/{deleted}/predict", json={"inputs": PREDICT["tiny"]}).status_code == 200
    assert store.job_counts(fresh.redis) == counts
    # A key revoked since the backup stays revoked.
    assert keyed(app, populated.acme_key).get("/v1/datasets").status_code == 401


def test_a_backup_of_one_tenant_holds_only_its_records_and_keys(populated, redis_server, make_app, fresh, tmp_path):
    archive = tmp_path / "acme.zip"
    made = nnserve(redis_server.url, "backup", "-o", str(archive), "--tenant", "acme")
    assert made.returncode == 0, made.stderr
    assert "1 datasets, 0 jobs, 0 models, 0 registered names, 1 keys of tenant acme" in made.stderr
    backup.restore(fresh.redis, archive)
    assert store.tenants(fresh.redis) == {"acme"}
    acme = keyed(make_app(redis_url=fresh.url), populated.acme_key)
    assert [d["id"] for d in acme.get("/v1/datasets").json["items"]] == [
        "iris",
        "blobs",
        "linear",
        "digits",
        populated.acme_dataset,
    ]
    assert keyed(make_app(redis_url=fresh.url), populated.admin_key).get("/v1/models").status_code == 401


def test_the_archive_is_json_and_npz_without_pickle(populated, redis, tmp_path):
    archive = tmp_path / "all.zip"
    backup.backup(redis, archive)
    with zipfile.ZipFile(archive) as opened:
        names = opened.namelist()
        assert {name.rsplit(".", 1)[1] for name in names} == {"json", "npz"}
        assert backup.MANIFEST in names and backup.KEYS in names
        for name in names:
            if name.endswith(".npz"):
                with np.load(io.BytesIO(opened.read(name)), allow_pickle=False) as arrays:
                    assert all(arrays[key].dtype != object for key in arrays.files)
        keys = opened.read(backup.KEYS)
        for secret in (populated.admin_key, populated.predict_key, populated.acme_key):
            assert secret.encode() not in keys


def tampered(archive, out, name_part: str, replace) -> None:
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(out, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            target.writestr(item, replace(data) if name_part in item.filename else data)


def pickled_npz(_: bytes) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, features=np.array([{"a": 1}], dtype=object))  # an object array: pickled inside the npz
    return buffer.getvalue()


@pytest.mark.parametrize(
    "name_part, replace, message",
    [
        (".arrays.npz", pickled_npz, "is not an .npz of plain arrays (pickled objects are refused)"),
        (backup.MANIFEST, lambda data: data.replace(b'"nnserve-backup"', b'"other"'), "is not an nnserve backup"),
        (backup.MANIFEST, lambda data: data.replace(b'"version": 1', b'"version": 9'), "format version 9"),
        ("datasets/", lambda data: data.replace(b'"id": "ds_', b'"id": "ds:x'), "'id' must be letters"),
        ("jobs/", lambda data: data.replace(b'"tenant": "public"', b'"tenant": "a:b"', 1), "'tenant' must be"),
        (backup.KEYS, lambda data: data.replace(b'"predict"', b'"root"'), "each entry must be a SHA-256"),
    ],
)
def test_a_tampered_archive_is_refused_whole(populated, redis, fresh, tmp_path, name_part, replace, message):
    archive, bad = tmp_path / "all.zip", tmp_path / "bad.zip"
    backup.backup(redis, archive)
    tampered(archive, bad, name_part, replace)
    result = nnserve(fresh.url, "restore", str(bad))
    assert result.returncode == 1 and message in result.stderr and "nothing was restored" in result.stderr, (
        result.stderr
    )
    assert fresh.redis.dbsize() == 0


def test_restore_of_what_is_no_archive(fresh, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    result = nnserve(fresh.url, "restore", str(text))
    assert result.returncode == 1 and "is not a zip archive" in result.stderr
    missing = nnserve(fresh.url, "restore", str(tmp_path / "nowhere.zip"))
    assert missing.returncode == 1 and "nowhere.zip" in missing.stderr


NAME = "iris-clf"
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
REFS = (NAME, f"{NAME}@staging", f"{NAME}@2", f"{NAME}@1", f"{NAME}@previous")


@pytest.fixture
def registered(client, run_jobs, redis):
    """Two versions of ``NAME`` in ``public``, ``current`` moved back to 1 and ``staging`` on 2; and the same name
    in tenant ``acme`` (a name is unique within its tenant only), with one version."""
    versions = [train(client, run_jobs, name=NAME)["model_id"] for _ in range(2)]
    assert client.put(f"/v1/registry/{NAME}/aliases/current", json={"version": 1}).status_code == 200
    assert client.put(f"/v1/registry/{NAME}/aliases/staging", json={"version": 2}).status_code == 200
    admin_key, _ = auth.create_key(redis, {"admin"}, tenant=store.PUBLIC)
    acme_key, _ = auth.create_key(redis, {"admin"}, tenant="acme")
    acme = keyed(client.application, acme_key)
    assert train(acme, run_jobs, name=NAME, training={"epochs": 2, "seed": 5})["status"] == "succeeded"
    return SimpleNamespace(versions=versions, admin_key=admin_key, acme_key=acme_key)


def registry_view(client) -> dict:
    """The name as the API shows it, and the answers through each of its references."""
    seen = {"name": client.get(f"/v1/registry/{NAME}").json}
    for ref in REFS:
        answer = client.post(f"/v1/models/{ref}/predict", json={"inputs": ROWS})
        seen[ref] = (answer.status_code, answer.json)
    return seen


def test_a_restored_registry_resolves_every_reference_as_before(
    registered, client, redis, redis_server, make_app, fresh, tmp_path
):
    archive = tmp_path / "all.zip"
    made = nnserve(redis_server.url, "backup", "-o", str(archive))
    assert made.returncode == 0, made.stderr
    assert "3 models, 2 registered names, 2 keys" in made.stderr
    with zipfile.ZipFile(archive) as opened:
        assert {f"registry/public/{NAME}.json", f"registry/acme/{NAME}.json"} <= set(opened.namelist())
    restored = nnserve(fresh.url, "restore", str(archive))
    assert restored.returncode == 0, restored.stderr
    assert fresh.redis.keys("rq:*") == []

    before = registry_view(keyed(client.application, registered.admin_key))
    after_app = make_app(redis_url=fresh.url)
    after = registry_view(keyed(after_app, registered.admin_key))
    assert after == before
    assert after["name"]["aliases"] == {"current": 1, "previous": 2, "staging": 2, "latest": 2}
    assert [after[ref][1]["model_version"] for ref in REFS] == [1, 2, 2, 1, 2]
    first = keyed(after_app, registered.admin_key).post(
        f"/v1/models/{registered.versions[0]}/predict", json={"inputs": ROWS}
    )
    assert first.json["probabilities"] == after[NAME][1]["probabilities"]  # NAME is version 1's model
    assert {(e["alias"], e["to"]) for e in after["name"]["events"]} >= {("current", 1), ("staging", 2)}
    acme = keyed(after_app, registered.acme_key).get(f"/v1/registry/{NAME}").json
    assert acme["aliases"] == {"current": 1, "latest": 1}

    # The next run under the name takes a fresh version number, in the restored Redis too.
    assert store.registry_state(fresh.redis, store.PUBLIC, NAME).record["next_version"] == 2

    # Flushed and restored under the running API: the same answers again.
    redis.flushall()
    backup.restore(redis, archive)
    assert registry_view(keyed(client.application, registered.admin_key)) == before


def test_a_version_whose_model_is_not_in_the_backup_is_dropped_with_its_aliases(
    registered, redis, make_app, fresh, tmp_path
):
    archive, partial = tmp_path / "all.zip", tmp_path / "partial.zip"
    backup.backup(redis, archive)
    # As if version 2 was registered after the backup had read the models (a job finishing meanwhile).
    second = f'"models/{registered.versions[1]}.json",'.encode()
    tampered(archive, partial, backup.MANIFEST, lambda data: data.replace(second, b""))
    backup.restore(fresh.redis, partial)
    admin = keyed(make_app(redis_url=fresh.url), registered.admin_key)
    name = admin.get(f"/v1/registry/{NAME}").json
    assert name["aliases"] == {"current": 1, "latest": 1}  # staging and previous named version 2: gone
    assert {(e["alias"], e["by"]) for e in name["events"][:2]} == {
        ("staging", "restore: no model"),
        ("previous", "restore: no model"),
    }
    assert admin.post(f"/v1/models/{NAME}/predict", json={"inputs": ROWS}).json["model_version"] == 1
    for ref in (f"{NAME}@2", f"{NAME}@staging"):
        assert admin.post(f"/v1/models/{ref}/predict", json={"inputs": ROWS}).status_code == 404


@pytest.mark.parametrize(
    "replace, message",
    [
        (lambda data: data.replace(b'"staging": 2', b'"staging": 7'), "alias 'staging' names a version that is not in"),
        (lambda data: data.replace(b'"staging": 2', b'"staging": {"split": 5}'), "alias 'staging' must be a version"),
        (lambda data: data.replace(b'"next_version": 2', b'"next_version": 1'), "'next_version' must be a number"),
        (lambda data: data.replace(b'"1": "mdl_', b'"one": "mdl_'), "'versions' must map version numbers"),
        (lambda data: data.replace(b'"versions": {', b'"versions": {"3": 3, '), "'versions' must map names to strings"),
        (lambda data: data.replace(f'"id": "{NAME}"'.encode(), b'"id": "9lives"'), "'id' must start with a letter"),
    ],
)
def test_a_malformed_registry_document_is_refused_whole(registered, redis, fresh, tmp_path, replace, message):
    archive, bad = tmp_path / "all.zip", tmp_path / "bad.zip"
    backup.backup(redis, archive)
    tampered(archive, bad, f"registry/public/{NAME}", replace)
    with zipfile.ZipFile(bad) as opened:
        assert opened.read(f"registry/public/{NAME}.json") != zipfile.ZipFile(archive).read(
            f"registry/public/{NAME}.json"
        )
    result = nnserve(fresh.url, "restore", str(bad))
    assert result.returncode == 1 and message in result.stderr and "nothing was restored" in result.stderr, (
        result.stderr
    )
    assert fresh.redis.dbsize() == 0
