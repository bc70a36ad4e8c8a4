"""API keys: 401s, open routes, tenants that see only their own records, keys kept out of Redis and logs;
scopes (403s, the route table, the fast path); keys stored at run time."""

from __future__ import annotations

import hashlib

import pytest
import requests
from pydantic import SecretStr, ValidationError

from nnserve.service import auth, errors, store
from nnserve.service.routes.ops import SWAGGER_UI
from nnserve.service.settings import ApiKey, Settings
from tests.conftest import wait_until
from tests.service.helpers import FlaskCalls, submit, train

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
    assert [d["id"] for d in alice.get("/v1/datasets").json["items"]] == [
        "iris",
        "blobs",
        "linear",
        "digits",
        dataset["id"],
    ]

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
    assert [d["id"] for d in bob.get("/v1/datasets").json["items"]] == ["iris", "blobs", "linear", "digits"]
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


def test_api_keys_setting(monkeypatch):
    monkeypatch.delenv("NNSERVE_API_KEYS", raising=False)
    settings = Settings(api_keys=f" {ALICE} ,, {BOB},")
    assert [key.get_secret_value() for key in settings.api_keys] == [ALICE, BOB]
    assert all(key.scopes == {"read", "predict", "train", "admin"} for key in settings.api_keys)
    assert ALICE not in repr(settings) and ALICE not in str(settings.model_dump())
    assert Settings().api_keys == ()  # none by default
    assert Settings(api_keys="").api_keys == ()
    with pytest.raises(ValidationError) as error:
        Settings(api_keys=f"{ALICE},short-secret")
    assert "API key 2 is shorter than 16 characters" in str(error.value) and "short-secret" not in str(error.value)


@pytest.mark.parametrize(
    "text, expected",
    [
        (f"{ALICE}:predict", [(ALICE, {"predict"})]),
        (f"{ALICE}:predict+read,{BOB}", [(ALICE, {"predict", "read"}), (BOB, {"read", "predict", "train", "admin"})]),
        (f"{ALICE}:predict,read,{BOB}:train", [(ALICE, {"predict", "read"}), (BOB, {"train"})]),
        (f" {ALICE} : Predict + READ , train ", [(ALICE, {"predict", "read", "train"})]),
        (f"{ALICE}:admin", [(ALICE, {"admin"})]),
        ("key:with:colons-0123456789", [("key:with:colons-0123456789", {"read", "predict", "train", "admin"})]),
    ],
)
def test_api_keys_with_scopes(text, expected):
    keys = Settings(api_keys=text).api_keys
    assert [(key.get_secret_value(), key.scopes) for key in keys] == expected


@pytest.mark.parametrize(
    "text, message",
    [
        (f"{ALICE}:predcit", "API key 1 names an unknown scope"),
        (f"{ALICE},{BOB}:read+writ", "API key 2 names an unknown scope"),
        (f"{ALICE}:read,wrte", "API key 1 names an unknown scope"),
        (f"{ALICE},read", "entry 2 is too short for an API key and follows no 'key:scope' entry"),
        ("read", "entry 1 is too short"),
        ("short-0123:read", "API key 1 is shorter than 16 characters"),
    ],
)
def test_api_keys_with_bad_scopes_stop_the_start_without_quoting_a_key(text, message):
    with pytest.raises(ValidationError) as error:
        Settings(api_keys=text)
    assert message in str(error.value)
    assert ALICE not in str(error.value) and BOB not in str(error.value) and "short-0123" not in str(error.value)
    assert "read, predict, train, admin" in str(error.value) or "16 characters" in str(error.value)


# Scopes ---------------------------------------------------------------------------------------------

ROUTE_SCOPES = {
    ("POST", "/v1/datasets"): ("train",),
    ("GET", "/v1/datasets"): ("read",),
    ("GET", "/v1/datasets/<dataset_id>"): ("read",),
    ("DELETE", "/v1/datasets/<dataset_id>"): ("train",),
    ("POST", "/v1/jobs"): ("train",),
    ("GET", "/v1/jobs"): ("read",),
    ("GET", "/v1/jobs/<job_id>"): ("read",),
    ("POST", "/v1/jobs/<job_id>/cancel"): ("train",),
    ("DELETE", "/v1/jobs/<job_id>"): ("train",),
    ("GET", "/v1/jobs/<job_id>/events"): ("read",),
    ("POST", "/v1/sweeps"): ("train",),
    ("GET", "/v1/sweeps"): ("read",),
    ("GET", "/v1/sweeps/<sweep_id>"): ("read",),
    ("POST", "/v1/sweeps/<sweep_id>/cancel"): ("train",),
    ("GET", "/v1/sweeps/<sweep_id>/events"): ("read",),
    ("GET", "/v1/models"): ("read", "predict"),
    ("POST", "/v1/models"): ("train",),
    ("GET", "/v1/models/<model_id>"): ("read", "predict"),
    ("DELETE", "/v1/models/<model_id>"): ("train",),
    ("POST", "/v1/models/<model_id>/evaluate"): ("predict",),
    ("POST", "/v1/models/<model_id>/predict"): ("predict",),
    ("GET", "/v1/models/<model_id>/weights"): ("read",),
    ("GET", "/v1/models/<model_id>/onnx"): ("read",),
    ("POST", "/v1/models/<name>:predict"): ("predict",),
    ("POST", "/v1/models/<name>/versions/<version>:predict"): ("predict",),
    ("POST", "/v1/models/<name>/labels/<label>:predict"): ("predict",),
    ("POST", "/v1/models/<ref>/invocations"): ("predict",),
    ("GET", "/v1/registry"): ("read", "predict"),
    ("GET", "/v1/registry/<name>"): ("read", "predict"),
    ("PUT", "/v1/registry/<name>/aliases/<alias>"): ("train",),
    ("DELETE", "/v1/registry/<name>/aliases/<alias>"): ("train",),
    ("DELETE", "/v1/registry/<name>"): ("train",),
    ("GET", "/v2"): ("read", "predict"),
    ("GET", "/v2/models/<model_name>"): ("read", "predict"),
    ("POST", "/v2/models/<model_name>/infer"): ("predict",),
    ("GET", "/v2/models/<model_name>/ready"): ("read", "predict"),
    ("GET", "/v2/models/<model_name>/versions/<version>"): ("read", "predict"),
    ("POST", "/v2/models/<model_name>/versions/<version>/infer"): ("predict",),
    ("GET", "/v2/models/<model_name>/versions/<version>/ready"): ("read", "predict"),
    ("GET", "/v2/models/<model_name>/config"): ("read", "predict"),
    ("GET", "/v2/models/<model_name>/versions/<version>/config"): ("read", "predict"),
    ("POST", "/v2/repository/index"): ("read", "predict"),
    ("GET", "/v2/models/stats"): ("read", "predict"),
    ("GET", "/v2/models/<model_name>/stats"): ("read", "predict"),
    ("GET", "/v2/models/<model_name>/versions/<version>/stats"): ("read", "predict"),
}
"""Every protected route and the scopes of which a key needs one. A new route fails this test until its
scope is decided here and, when its method's default is wrong for it, in auth.NEEDS."""

GRANTED = {
    "read": {"read"},
    "predict": {"predict"},
    "train": {"train", "read"},
    "admin": {"read", "predict", "train", "admin"},
}


def protected_routes(app) -> dict[tuple[str, str], tuple[str, ...]]:
    return {
        (method, rule.rule): auth.needs(rule.endpoint, method)
        for rule in app.url_map.iter_rules()
        if auth.protects(rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }


def test_the_scope_of_every_route(app):
    assert protected_routes(app) == ROUTE_SCOPES
    assert {scope: set(auth.GRANTS[scope]) for scope in auth.GRANTS} == GRANTED


def concrete(path: str) -> str:
    return (
        path.replace("<dataset_id>", "iris")
        .replace("<job_id>", "job_x")
        .replace("<sweep_id>", "swp_x")
        .replace("<model_id>", "mdl_x")
        .replace("<model_name>", "mdl_x")
        .replace("<name>", "mdl_x")
        .replace("<ref>", "mdl_x")
        .replace("<version>", "1")
        .replace("<label>", "stable")
        .replace("<alias>", "staging")
    )


@pytest.mark.parametrize("scope", ["read", "predict", "train", "admin"])
def test_a_key_reaches_exactly_the_routes_its_scope_grants(make_app, scope):
    """Each route, called with a key of one scope: a 403 exactly when the scope does not grant what the route
    needs, naming both; otherwise whatever the route answers (404 for the made-up ids, 422 for the body)."""
    key = f"{scope}-key-0123456789abcdef"
    client = keyed(make_app(api_keys=(ApiKey(key, frozenset({scope})),)), key)
    for (method, path), needed in ROUTE_SCOPES.items():
        with client.open(concrete(path), method=method, json={}) as response:
            allowed = bool(GRANTED[scope] & set(needed))
            assert (response.status_code == 403) != allowed, (scope, method, path, response.status_code)
            if allowed:
                continue
            dialect = errors.dialect_of(path)
            detail = response.json[{"oip": "error", "tfserving": "error", "mlflow": "message"}.get(dialect, "detail")]
            assert " or ".join(f"'{s}'" for s in needed) in detail and f"this key has '{scope}'" in detail, detail
            challenge = response.headers["WWW-Authenticate"]
            assert f'error="insufficient_scope", scope="{" ".join(needed)}"' in challenge
            if dialect is None:
                assert response.mimetype == "application/problem+json"
                assert response.json["type"] == "urn:nnserve:problem:forbidden" and response.json["status"] == 403


def test_a_predict_key_predicts_and_reads_models_but_cannot_train_upload_or_delete(client, iris_model, redis):
    """A stored predict key for the records made while the API was open (tenant ``public``)."""
    secret, _ = auth.create_key(redis, {"predict"}, tenant=store.PUBLIC)
    predictor = keyed(client.application, secret)
    rows = {"inputs": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}
    assert predictor.post(f"/v1/models/{iris_model}/predict", json=rows).json["predictions"] == [
        "setosa",
        "virginica",
    ]
    assert predictor.post(f"/v1/models/{iris_model}/evaluate", json={"dataset": "iris"}).status_code == 200
    assert predictor.get(f"/v1/models/{iris_model}").json["id"] == iris_model
    assert [m["id"] for m in predictor.get("/v1/models").json["items"]] == [iris_model]
    infer = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}
    assert predictor.post(f"/v2/models/{iris_model}/infer", json=infer).status_code == 200
    assert predictor.get(f"/v2/models/{iris_model}").status_code == 200

    job = predictor.get("/v1/jobs").json  # nor reads datasets, jobs or weights
    assert "'read' scope; this key has 'predict'" in job["detail"]
    for method, path, body in [
        ("post", "/v1/jobs", {"dataset": "iris", "model": {"layers": [{"type": "dense", "units": 3}]}}),
        ("post", "/v1/datasets", {"features": [[0.0], [1.0]], "targets": [0, 1]}),
        ("delete", f"/v1/models/{iris_model}", None),
        ("get", f"/v1/models/{iris_model}/weights", None),
        ("get", "/v1/datasets", None),
    ]:
        response = getattr(predictor, method)(path, json=body)
        assert response.status_code == 403, (path, response.json)
    assert client.application.test_client().get(f"/v1/models/{iris_model}").status_code == 401  # keys are on now
    assert redis.exists(store.model_key(iris_model))


def test_the_fast_path_honours_scopes(client, iris_model, redis):
    app = client.application
    predict_key, _ = auth.create_key(redis, {"predict"}, tenant=store.PUBLIC)
    read_key, _ = auth.create_key(redis, {"read", "train"}, tenant=store.PUBLIC)
    predictor, reader = keyed(app, predict_key), keyed(app, read_key)
    body = {"inputs": [[5.1, 3.5, 1.4, 0.2]]}
    cache = app.extensions["nnserve"].cache
    wait_until(
        lambda: (
            predictor.post(f"/v1/models/{iris_model}/predict", json=body).status_code == 200
            and iris_model in cache
            and app.extensions["nnserve"].cache.listening
        ),
        timeout=10,
        what="the model in the cache",
    )
    calls = FlaskCalls(app)
    assert predictor.post(f"/v1/models/{iris_model}/predict", json=body).json["predictions"] == ["setosa"]
    assert calls.count == 0  # answered by the fast path
    response = reader.post(f"/v1/models/{iris_model}/predict", json=body)
    assert response.status_code == 403 and "needs an API key with the 'predict' scope" in response.json["detail"]
    assert calls.count == 1  # left to Flask, which rendered the one 403
    assert keyed(app, None).post(f"/v1/models/{iris_model}/predict", json=body).status_code == 401


def test_openapi_declares_the_bearer_scheme(client):
    document = client.get("/openapi.json").json
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    create = document["paths"]["/v1/jobs"]["post"]
    assert create["security"] == [{"bearer": []}] and "401" in create["responses"] and "429" in create["responses"]
    assert "403" in create["responses"] and create["x-scopes"] == ["train"]
    assert document["paths"]["/v1/models/{model_id}"]["get"]["x-scopes"] == ["read", "predict"]
    assert document["paths"]["/v2/models/{model_name}/infer"]["post"]["x-scopes"] == ["predict"]
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


# Keys stored at run time ----------------------------------------------------------------------------


def listening(app) -> bool:
    return app.extensions["nnserve"].keys.stored.listening


def test_a_stored_key_turns_keys_on_and_its_revocation_reaches_every_process(make_app, redis):
    """Two apps stand for two API processes: neither restarts, both follow the key table."""
    apps = [make_app(), make_app()]
    for app in apps:
        assert app.test_client().get("/v1/datasets").status_code == 200  # open: no key made yet
        wait_until(lambda: listening(app), timeout=10, what="the key table's subscription")

    secret, record = auth.create_key(redis, {"read"})
    assert secret.startswith("nns_") and len(secret) > 40
    assert record["tenant"] == tenant(secret) and record["scopes"] == ["read"]
    for app in apps:
        assert keyed(app, secret).get("/v1/datasets").status_code == 200  # from the first request: Redis knows it
        assert keyed(app, secret).post("/v1/jobs", json={}).status_code == 403
        wait_until(lambda: app.test_client().get("/v1/datasets").status_code == 401, timeout=2, what="keys on")

    # A known key costs no Redis call while the subscription is up.
    keys = apps[0].extensions["nnserve"].keys
    before = redis.info("stats")["total_commands_processed"]
    for _ in range(20):
        assert keys.identify(f"Bearer {secret}").tenant == record["tenant"]
    assert redis.info("stats")["total_commands_processed"] - before <= 1  # INFO itself

    assert store.revoke_api_key(redis, record["id"])["revoked_at"] is not None
    for app in apps:
        wait_until(lambda: keyed(app, secret).get("/v1/datasets").status_code == 401, timeout=2, what="revocation")
        assert_401(keyed(app, secret).get("/v1/datasets"), "invalid_token")
        assert_401(app.test_client().get("/v1/datasets"), None)  # every key revoked: still closed, not open
    assert store.revoke_api_key(redis, "key_nothing") is None


NOWHERE = Settings(redis_url="redis://127.0.0.1:1/0", redis_timeout=0.2)
"""Settings of a Redis that is never there."""


def test_without_the_subscription_each_request_asks_redis(redis):
    """While the key table's subscription is down (here: it can never connect), lookups go to Redis, so a
    key works as soon as it is stored and stops as soon as it is revoked."""
    stored = auth.StoredKeys(redis, lambda: store.connect(NOWHERE))
    keys = auth.Keys([SecretStr(ALICE)], stored)
    assert keys.identify(f"Bearer {ALICE}").tenant == tenant(ALICE)  # configured keys need no Redis
    with pytest.raises(auth.Unauthorized):
        keys.identify("Bearer nns_not-a-key-at-all-0123456789")
    secret, record = auth.create_key(redis, {"predict", "read"}, tenant="acme")
    access = keys.identify(f"Bearer {secret}")
    assert (access.tenant, access.scopes) == ("acme", {"predict", "read"}) and not stored.listening
    store.revoke_api_key(redis, record["id"])
    with pytest.raises(auth.Unauthorized):
        keys.identify(f"Bearer {secret}")

    only_stored = auth.Keys([], auth.StoredKeys(redis, lambda: store.connect(NOWHERE)))
    with pytest.raises(auth.Unauthorized):  # a revoked key keeps keys on
        only_stored.identify(None)
    redis.delete(store.API_KEYS)
    assert only_stored.identify(None) is auth.OPEN


def test_a_stored_key_can_take_an_existing_tenant(make_app, redis, run_jobs):
    """Rotating a key of NNSERVE_API_KEYS to a stored one keeps its records: the new key takes its tenant."""
    app = make_app(api_keys=(SecretStr(ALICE),))
    job = train(keyed(app, ALICE), run_jobs, training={"epochs": 1})
    secret, _ = auth.create_key(redis, {"predict"}, tenant=tenant(ALICE))
    rotated = keyed(make_app(), secret)  # the API restarted without ALICE in NNSERVE_API_KEYS
    response = rotated.post(f"/v1/models/{job['model_id']}/predict", json={"inputs": [[5.1, 3.5, 1.4, 0.2]]})
    assert response.status_code == 200
    assert keyed(make_app(), ALICE).get("/v1/models").status_code == 401


def test_stored_keys_keep_no_secret(redis):
    secret, _ = auth.create_key(redis, {"admin"})
    assert list(store.api_keys(redis)) == [hashlib.sha256(secret.encode()).hexdigest()]
    for key in redis.keys("*"):
        value = redis.hgetall(key) if redis.type(key) == b"hash" else {}
        assert secret.encode() not in key and all(secret.encode() not in v for v in value.values())
