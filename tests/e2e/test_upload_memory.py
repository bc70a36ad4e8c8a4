"""Uploads hold the API process to a memory bound: its peak RSS grows by at most 3x the body plus a
constant, measured on a real ``nnserve api`` with one gunicorn worker.

The peak is the worker's own high-water mark (``VmHWM``), lowered to its current RSS before each
upload (Linux: writing 5 to ``/proc/<pid>/clear_refs``), so the figure is the upload's alone and
does not depend on when it is sampled or on what else runs on the machine. The bodies are the
worst shapes for the bound: values of one character (``1,``: 2 bytes of body, 4 bytes of float32),
60 MiB ones that stop at the row limit (the 2.5 and 3.4 GB of the issue), and ones within limits
that are stored.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import requests

MiB = 1024 * 1024
CONSTANT = 64 * MiB
"""What an upload may cost beyond 3x its body: parse buffers, a block of each array, the request."""


def gunicorn_worker(supervisor: int) -> int:
    """The pid of the one gunicorn worker under ``nnserve api`` (supervisor -> gunicorn -> worker)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    (gunicorn,) = children[supervisor]
    (worker,) = children[gunicorn]
    return worker


def memory(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def peak_growth(pid: int, upload) -> tuple[requests.Response, int]:
    """``(response, bytes the worker's peak RSS rose above its RSS before the upload)``."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    before = memory(pid, "VmRSS")
    response = upload()
    return response, memory(pid, "VmHWM") - before


def csv_body(rows: int, width: int) -> bytes:
    header = ",".join(f"x{i}" for i in range(width)) + ",y\n"
    row = "1," * width
    return (header + "".join(f"{row}{i % 2}\n" for i in range(rows))).encode()


def npz_body(samples: int, dtype) -> bytes:
    """An .npz of ``samples`` 28x28 grey images of ``dtype`` and their labels, as numpy.savez writes it."""
    buffer = io.BytesIO()
    x = (np.arange(samples * 784) % 251).astype(dtype).reshape(samples, 28, 28, 1)
    np.savez(buffer, x=x, y=np.arange(samples) % 10)
    return buffer.getvalue()


def json_images_body(samples: int) -> bytes:
    """JSON of ``samples`` 28x28x1 images nested in lists, one-character values."""
    image = "[" + ",".join(["[" + ",".join(["[1]"] * 28) + "]"] * 28) + "]"
    labels = ",".join("01"[i % 2] for i in range(samples))
    return ('{"features":[' + ",".join([image] * samples) + '],"targets":[' + labels + "]}").encode()


def json_body(rows: int, width: int) -> bytes:
    row = "[" + ",".join("1" * width) + "]"
    labels = ",".join("01"[i % 2] for i in range(rows))
    return ('{"features":[' + ",".join([row] * rows) + '],"targets":[' + labels + "]}").encode()


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux's /proc peak RSS reset")
def test_upload_memory_is_bounded_by_the_body(processes):
    api = processes.api(api_workers=1)
    worker = gunicorn_worker(processes.started[-1].pid)
    warm = requests.post(f"{api}/v1/datasets", json={"features": [[1], [2]], "targets": [1.5, 2.5]}, timeout=30)
    assert warm.status_code == 201  # imports and first-use caches are not the upload's

    def post_csv(body: bytes):
        return lambda: requests.post(f"{api}/v1/datasets", files={"file": ("d.csv", body)}, timeout=300)

    def post_json(body: bytes):
        headers = {"Content-Type": "application/json"}
        return lambda: requests.post(f"{api}/v1/datasets", data=body, headers=headers, timeout=300)

    cases = [
        # 60 MiB of tiny rows, 15 million of them: the row limit (1,000,000) stops the upload.
        ("csv over the row limit", post_csv, b"a,b\n" + b"1,2\n" * (15 * MiB), 422),
        ("json over the row limit", post_json, b'{"features":[' + b"[1]," * (15 * MiB) + b"[1]]}", 422),
        # Within the limits, stored: 32 MiB of one-character values.
        ("csv within limits", post_csv, csv_body(540_000, 30), 201),
        ("json within limits", post_json, json_body(540_000, 30), 201),
    ]
    for name, post, body, status in cases:
        response, growth = peak_growth(worker, post(body))
        assert response.status_code == status, (name, response.text[:300])
        bound = 3 * len(body) + CONSTANT
        assert growth <= bound, f"{name}: peak RSS +{growth / MiB:.0f} MiB for {len(body) / MiB:.0f} MiB of body"
        if status == 422:
            assert "the limit is 1000000" in response.json()["detail"]
        else:
            assert response.json()["n_samples"] == 540_000 and response.json()["n_features"] == 30


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux's /proc peak RSS reset")
def test_image_upload_memory_is_about_two_copies(processes):
    """Binary uploads hold at most about two copies of the dataset as stored (float32): the npz being
    packed for Redis, and what Redis's client sends of it. Nested JSON images stay within the bound
    of JSON bodies."""
    api = processes.api(api_workers=1, max_body_bytes=256 * MiB)
    worker = gunicorn_worker(processes.started[-1].pid)
    warm = requests.post(f"{api}/v1/datasets", files={"file": ("w.npz", npz_body(10, np.uint8))}, timeout=30)
    assert warm.status_code == 201, warm.text

    def post_npz(body: bytes):
        return lambda: requests.post(f"{api}/v1/datasets", files={"file": ("d.npz", body)}, timeout=300)

    for name, samples, dtype in (("float32", 12_000, np.float32), ("uint8", 40_000, np.uint8)):
        body = npz_body(samples, dtype)
        stored = samples * 784 * 4
        response, growth = peak_growth(worker, post_npz(body))
        assert response.status_code == 201, (name, response.text[:300])
        assert response.json()["sample_shape"] == [28, 28, 1] and response.json()["n_samples"] == samples
        assert growth <= 2 * stored + CONSTANT, f"npz {name}: +{growth / MiB:.0f} MiB for {stored / MiB:.0f} MiB stored"

    body = json_images_body(8_000)
    response, growth = peak_growth(
        worker,
        lambda: requests.post(
            f"{api}/v1/datasets", data=body, headers={"Content-Type": "application/json"}, timeout=300
        ),
    )
    assert response.status_code == 201, response.text[:300]
    assert response.json()["sample_shape"] == [28, 28, 1]
    assert growth <= 3 * len(body) + CONSTANT, f"json images: +{growth / MiB:.0f} MiB for {len(body) / MiB:.0f} MiB"
