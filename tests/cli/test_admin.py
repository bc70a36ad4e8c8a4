"""``nnserve keys`` as a subprocess against a real Redis: what it prints, and its refusals. (The keys taking
effect in running APIs: tests/e2e/test_keys.py; backup and restore: tests/service/test_backup.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from nnserve.service import auth, store
from tests.conftest import free_port

OWNER = "owner-key-0123456789abcdef"


def nnserve(redis_url: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NNSERVE_")}
    environ.update(REDIS_URL=redis_url, **env)
    command = [sys.executable, "-m", "nnserve", *args]
    return subprocess.run(command, check=False, capture_output=True, text=True, env=environ, timeout=60)


def test_create_prints_the_key_alone_on_stdout_and_list_never_shows_it(redis, redis_server):
    created = nnserve(redis_server.url, "keys", "create", "--scope", "predict", "--scope", "read")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert created.stdout == secret + "\n" and secret.startswith(auth.KEY_PREFIX)
    record = store.api_keys(redis)[auth.digest(secret).hex()]
    assert record["scopes"] == ["read", "predict"] and record["tenant"] == auth.tenant_of(auth.digest(secret))
    assert f"created {record['id']} for tenant {record['tenant']} with scope read+predict" in created.stderr

    listed = nnserve(redis_server.url, "keys", "list", "--json", NNSERVE_API_KEYS=f"{OWNER},{OWNER[::-1]}:train")
    rows = json.loads(listed.stdout)
    assert [(row["id"], row["scopes"], row["source"]) for row in rows] == [
        (record["id"], ["read", "predict"], "redis"),
        ("env:1", ["read", "predict", "train", "admin"], "NNSERVE_API_KEYS"),
        ("env:2", ["train"], "NNSERVE_API_KEYS"),
    ]
    assert rows[1]["tenant"] == auth.tenant_of(auth.digest(OWNER))
    table = nnserve(redis_server.url, "keys", "list", NNSERVE_API_KEYS=OWNER)
    assert table.stdout.splitlines()[0].split() == ["ID", "TENANT", "SCOPES", "CREATED", "REVOKED", "SOURCE"]
    for output in (listed.stdout, table.stdout):
        assert secret not in output and OWNER not in output and OWNER[::-1] not in output


def test_create_for_a_tenant_without_records_says_so(redis, redis_server):
    created = nnserve(redis_server.url, "keys", "create", "--scope", "admin", "--tenant", "t_0123456789abcdef")
    assert created.returncode == 0 and "a tenant with no records yet" in created.stderr
    assert [record["tenant"] for record in store.api_keys(redis).values()] == ["t_0123456789abcdef"]


def test_refusals(redis, redis_server):
    for args, status, message in [
        (("keys", "create", "--scope", "predcit"), 2, "unknown scope 'predcit'; the scopes are read, predict"),
        (("keys", "create"), 2, "the following arguments are required: --scope"),
        (("keys", "create", "--scope", "read", "--tenant", "a:b"), 2, "a tenant is 1 to 64 letters"),
        (("keys", "revoke", "env:1"), 1, "take it out of that variable and restart"),
        (("keys", "revoke", "key_0000000000000000"), 1, "no stored key 'key_0000000000000000'"),
    ]:
        result = nnserve(redis_server.url, *args)
        assert (result.returncode, message in result.stderr) == (status, True), (args, result.stderr)
    assert not redis.exists(store.API_KEYS)
    nowhere = nnserve(f"redis://127.0.0.1:{free_port()}/0", "keys", "list")
    assert nowhere.returncode == 1 and "nnserve keys list: cannot reach Redis (REDIS_URL)" in nowhere.stderr
