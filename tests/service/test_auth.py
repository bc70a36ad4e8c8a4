"""API keys: 401s, open routes, tenants that see only their own records, keys kept out of Redis and logs."""

from __future__ import annotations

import hashlib
import hmac

import pytest
import requests
from pydantic import SecretStr, ValidationError

from nnserve.service import auth, store
from nnserve.service.routes.ops import SWAGGER_UI
from nnserve.service.settings import Settings
from tests.service.helpers import submit, train

ALICE = "alice-key-0123456789abcdef"
BOB = "bob-key-0123456789abcdef-longer"


def keyed(app, key: str | None):
    """A test client that sends ``Authorization: Bearer <key>`` with every request."""
    client = app.test_client()
    if key is not None:
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    return client


@pytest.fixture
def keyed_app(make_app):
    return make_app(api_keys=(SecretStr(ALICE), SecretStr(BOB)))


def tenant(key: str) -> str:
    return auth.tenant_of(hashlib.sha256(key.encode()).digest())


def assert_401(response, error: str | None):
    assert response.status_code == 401 and response.mimetype == "application/problem+json", response.data
    assert response.json["status"] == 401 and response.json["type"] == "urn:nnserve:problem:unauthorized"
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="nnserve"')
    assert (f'error="{error}"' in challenge) if error else ("error=" not in challenge)


@pytest.mark.parametrize(
    "header, error",
    [
        (None, None),
        ("", None),
        ("Bearer", None),
        ("Bearer   ", None),
        (f"Basic {ALICE}", None),
        (ALICE, None),
        ("Bearer wrong-key-0123456789abcdef", "invalid_token"),
        (f"Bearer {ALICE[:-1]}", "invalid_token"),
        (f"Bearer {ALICE}x", "invalid_token"),
        (f"Bearer {ALICE},{BOB}", "invalid_token"),
        ("Bearer é-ünïcode", "invalid_token"),
    ],
)
def test_versioned_routes_need_a_valid_bearer_key(keyed_app, header, error):
    client = keyed_app.test_client()
    headers = {} if header is None else {"Authorization": header}
    for method, path in [
        ("get", "/v1/datasets"),
        ("post", "/v1/jobs"),
        ("get", "/v1/jobs/job_x"),
        ("post", "/v1/models/mdl_x/predict"),
        ("delete", "/v1/datasets/iris"),
        ("get", "/v1/nothing"),
        ("get", "/v9/jobs"),
        ("get", "/v1"),
    ]:
        response = getattr(client, method)(path, headers=headers, json={"anything": 1})
        assert_401(response, error)
        assert "Bearer" in response.json["detail"] or "not valid" in response.json["detail"]


def test_a_valid_key_in_any_case_of_the_scheme_is_accepted(keyed_app):
    for header in (f"Bearer {ALICE}", f"bearer {ALICE}", f"BEARER  {ALICE} "):
        response = keyed_app.test_client().get("/v1/datasets", headers={"Authorization": header})
        assert response.status_code == 200, header


def test_operations_and_docs_stay_open(keyed_app):
    client = keyed_app.test_client()
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", f"{SWAGGER_UI}/swagger-ui.css"):
        with client.get(path) as response:
            assert response.status_code == 200, path
    assert client.get("/nowhere").status_code == 404  # outside the API: not a 401


def test_without_keys_nothing_is_asked_and_everything_is_public(client, redis):
    assert client.get("/v1/datasets").status_code == 200
    job = submit(client).json
    assert store.get_job(redis, job["id"])["tenant"] == store.PUBLIC


def test_each_key_sees_only_its_own_datasets_jobs_and_models(keyed_app, run_jobs):
    alice, bob = keyed(keyed_app, ALICE), keyed(keyed_app, BOB)
    dataset = alice.post(
        "/v1/datasets",
        json={"features": [[0.0], [1.0], [2.0], [3.0]] * 5, "targets": ["a", "b", "a", "b"] * 5, "name": "alice's"},
    ).json
    job = train(
        alice,
        run_jobs,
        dataset=dataset["id"],
        model={"layers": [{"type": "dense", "units": 2, "activation": "softmax"}]},
        training={"epochs": 2},
    )
    assert job["status"] == "succeeded"
    model_id = job["model_id"]

    # Alice sees hers.
    assert alice.get(f"/v1/datasets/{dataset['id']}").status_code == 200
    assert alice.get(f"/v1/jobs/{job['id']}").status_code == 200
    assert alice.post(f"/v1/models/{model_id}/predict", json={"inputs": [[1.0]]}).status_code == 200
    assert [d["id"] for d in alice.get("/v1/datasets").json["items"]] == ["iris", "blobs", "linear", dataset["id"]]

    # Bob gets 404s for every one of her ids, and lists without them; the built-ins are everyone's.
    for method, path, body in [
        ("get", f"/v1/datasets/{dataset['id']}", None),
        ("delete", f"/v1/datasets/{dataset['id']}", None),
        ("get", f"/v1/jobs/{job['id']}", None),
        ("post", f"/v1/jobs/{job['id']}/cancel", None),
        ("get", f"/v1/models/{model_id}", None),
        ("post", f"/v1/models/{model_id}/predict", {"inputs": [[1.0]]}),  # the model is in this process's cache
        ("post", f"/v1/models/{model_id}/evaluate", {"dataset": "iris"}),
        ("get", f"/v1/models/{model_id}/weights", None),
        ("delete", f"/v1/models/{model_id}", None),
    ]:
        response = getattr(bob, method)(path, json=body)
        assert response.status_code == 404 and response.mimetype == "application/problem+json", (path, response.json)
    assert [d["id"] for d in bob.get("/v1/datasets").json["items"]] == ["iris", "blobs", "linear"]
    assert bob.get("/v1/jobs").json["items"] == [] and bob.get("/v1/models").json["items"] == []
    response = submit(bob, dataset=dataset["id"])
    assert response.status_code == 422 and response.json["errors"][0]["loc"] == "dataset"
    assert bob.post(f"/v1/models/{model_id}/evaluate", json={"dataset": dataset["id"]}).status_code == 404
    assert submit(bob, training={"epochs": 1}).status_code == 202  # on iris
    assert len(bob.get("/v1/jobs").json["items"]) == 1 and len(alice.get("/v1/jobs").json["items"]) == 1

    # Nothing of Alice's was touched by Bob's attempts.
    assert alice.get(f"/v1/models/{model_id}").json["status"] == "ready"
    assert alice.get(f"/v1/datasets/{dataset['id']}").status_code == 200


def test_tenants_are_hashes_and_no_key_reaches_redis(keyed_app, run_jobs, redis):
    alice = keyed(keyed_app, ALICE)
    job = train(alice, run_jobs, training={"epochs": 1})
    record = store.get_job(redis, job["id"])
    assert record["tenant"] == tenant(ALICE) and record["tenant"].startswith("t_") and len(record["tenant"]) == 18
    assert tenant(ALICE) != tenant(BOB)
    assert redis.exists(store.index_key(tenant(ALICE), store.JOBS))
    for key in redis.keys("*"):
        assert ALICE.encode() not in key
        kind = redis.type(key)
        values = {
            b"hash": lambda: b"".join(redis.hgetall(key).values()),
            b"string": lambda: redis.get(key),
            b"list": lambda: b"".join(redis.lrange(key, 0, -1)),
            b"zset": lambda: b"".join(redis.zrange(key, 0, -1)),
            b"set": lambda: b"".join(redis.smembers(key)),
        }
        assert ALICE.encode() not in values.get(kind, lambda: b"")(), key


def test_every_configured_key_is_compared(monkeypatch):
    """No early exit: the time taken must not tell which key matched, so each one is compared."""
    keys = auth.Keys([ALICE, BOB, "carol-key-0123456789abcdef"])
    calls, compare = [], hmac.compare_digest

    def counting(a, b):
        calls.append((len(a), len(b)))
        return compare(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    for presented, expected in [(ALICE, tenant(ALICE)), (BOB, tenant(BOB)), ("nope", None), ("", None)]:
        calls.clear()
        assert keys.tenant(presented) == expected
        assert calls == [(32, 32)] * 3  # digests: the same length whatever was presented


def test_api_keys_setting(monkeypatch):
    monkeypatch.delenv("NNSERVE_API_KEYS", raising=False)
    settings = Settings(api_keys=f" {ALICE} ,, {BOB},")
    assert [key.get_secret_value() for key in settings.api_keys] == [ALICE, BOB]
    assert ALICE not in repr(settings) and ALICE not in str(settings.model_dump())
    assert Settings().api_keys == ()  # none by default
    assert Settings(api_keys="").api_keys == ()
    with pytest.raises(ValidationError) as error:
        Settings(api_keys=f"{ALICE},short-secret")
    assert "API key 2 is shorter than 16 characters" in str(error.value) and "short-secret" not in str(error.value)


def test_openapi_declares_the_bearer_scheme(client):
    document = client.get("/openapi.json").json
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    create = document["paths"]["/v1/jobs"]["post"]
    assert create["security"] == [{"bearer": []}] and "401" in create["responses"] and "429" in create["responses"]
    assert (
        "security" not in document["paths"]["/healthz"]["get"]
        and "401" not in document["paths"]["/healthz"]["get"]["responses"]
    )


def test_keys_are_not_logged_by_gunicorn_or_the_service(processes, monkeypatch):
    """The real server, with gunicorn's access log on and debug logging: no key in any line."""
    monkeypatch.setenv("GUNICORN_CMD_ARGS", "--access-logfile -")
    url = processes.api(api_keys=f"{ALICE},{BOB}", log_level="DEBUG")
    wrong = "wrong-key-0123456789abcdef-xyz"
    assert (
        requests.get(f"{url}/v1/datasets", headers={"Authorization": f"Bearer {ALICE}"}, timeout=10).status_code == 200
    )
    response = requests.get(f"{url}/v1/datasets", headers={"Authorization": f"Bearer {wrong}"}, timeout=10)
    assert response.status_code == 401 and response.headers["Content-Type"] == "application/problem+json"
    assert wrong not in response.text
    assert (
        requests.post(
            f"{url}/v1/jobs",
            data="{",
            headers={"Authorization": f"Bearer {BOB}", "Content-Type": "application/json"},
            timeout=10,
        ).status_code
        == 400
    )
    processes.stop_all()
    log = (processes.tmp / "api-0.log").read_text()
    assert '"GET /v1/datasets HTTP/1.1" 401' in log  # the access log was on
    for secret in (ALICE, BOB, wrong):
        assert secret not in log
