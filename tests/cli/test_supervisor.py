"""``nnserve up``'s supervisor: children die with it, a hang-up stops everything, one ``up`` per data
directory, a busy port is one line, and a crashing child is restarted with a growing delay."""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from nnserve.cli import supervisor as supervisor_module
from nnserve.cli.supervisor import Supervisor
from tests.conftest import free_port, wait_until


def up_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("NNSERVE_")}
    env.update(NNSERVE_LOG_LEVEL="WARNING")
    return env


def start_up(cwd: Path, port: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "nnserve", "up", "--port", str(port), "--workers", "1", *extra],
        cwd=cwd,
        env=up_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``, found through /proc (children leave its process group)."""
    found, frontier = set(), [pid]
    while frontier:
        parent = frontier.pop()
        children = subprocess.run(["pgrep", "-P", str(parent)], check=False, capture_output=True, text=True)
        for child in map(int, children.stdout.split()):
            if child not in found:
                found.add(child)
                frontier.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def stop(up: subprocess.Popen) -> None:
    if up.poll() is None:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
    up.stdout.close()


@pytest.fixture
def running_up(tmp_path):
    """A ``nnserve up`` started in ``tmp_path`` that has printed its banner, its port and the banner."""
    port = free_port()
    up = start_up(tmp_path, port)
    banner = up.stdout.readline()
    yield up, port, banner
    stop(up)


def test_the_banner_comes_once_the_api_is_ready(running_up):
    _up, port, banner = running_up
    assert f"http://127.0.0.1:{port}" in banner
    # No waiting: the banner promises a ready API.
    assert requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200


@pytest.mark.parametrize("how", ["sighup", "kill -9 of the process group"])
def test_children_do_not_outlive_the_supervisor(running_up, how, tmp_path):
    up, port, _ = running_up
    children = descendants(up.pid)
    assert len(children) >= 4  # redis-server, gunicorn and its workers, one RQ worker
    if how == "sighup":  # the terminal it runs in was closed
        up.send_signal(signal.SIGHUP)
        assert up.wait(40) == 0
    else:
        os.killpg(up.pid, signal.SIGKILL)
        up.wait()
    # Generous: gunicorn and the RQ worker stop gracefully on their parent-death signal, which takes
    # longer on a loaded machine.
    wait_until(lambda: not any(alive(pid) for pid in children), timeout=90, what="every child to stop")
    # The port and the data directory are free again: nnserve up starts there at once.
    again = start_up(tmp_path, port)
    try:
        assert f"http://127.0.0.1:{port}" in again.stdout.readline()
    finally:
        stop(again)


def test_a_second_up_on_the_same_data_directory_refuses(running_up, tmp_path):
    other = subprocess.run(
        [sys.executable, "-m", "nnserve", "up", "--port", str(free_port())],
        cwd=tmp_path,
        env=up_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert other.returncode != 0
    message = other.stderr.strip().splitlines()
    assert len(message) == 1 and "is in use by another nnserve up" in message[0] and "--data-dir" in message[0]


def test_a_busy_port_is_one_line(tmp_path):
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        run = subprocess.run(
            [sys.executable, "-m", "nnserve", "up", "--port", str(port), "--data-dir", str(tmp_path / "data")],
            cwd=tmp_path,
            env=up_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "--port" in lines[0]
    assert not (tmp_path / "data" / "redis").exists()  # nothing was started


def test_a_crashing_child_is_restarted_with_a_growing_delay(monkeypatch, capfd):
    monkeypatch.setattr(supervisor_module, "RESTART_DELAY", 0.2)
    supervisor = Supervisor()
    child = supervisor.start("crasher", ["false"], dict(os.environ), restart=True)
    launches = []
    deadline = time.monotonic() + 3.5
    pid = None
    while time.monotonic() < deadline:
        supervisor.poll()
        if child.process is not None and child.process.pid != pid:
            pid = child.process.pid
            launches.append(time.monotonic())
        time.sleep(0.02)
    supervisor.stop()
    delays = [float(d) for d in re.findall(r"restarting it in ([0-9.]+) s", capfd.readouterr().err)]
    # The delay doubles with each exit in a row (instead of a restart at every poll), and each restart
    # waited at least its delay, however long the machine took to start the child.
    assert len(launches) >= 3 and delays[:3] == [0.2, 0.4, 0.8], delays
    gaps = [later - earlier for earlier, later in itertools.pairwise(launches)]
    assert all(gap >= delay for gap, delay in zip(gaps, delays)), (gaps, delays)
    assert len(launches) <= 5  # 0.2 + 0.4 + 0.8 + 1.6 s fit in 3.5 s; a restart per poll would be ~150
