"""Upload cost: time and the API process's peak memory for large dataset uploads.

    python bench/uploads.py                          # 60 MiB bodies against a fresh `nnserve api`
    python bench/uploads.py --mib 30
    python bench/uploads.py --python OTHER/venv/bin/python   # the API of another install, for a before/after

It starts a redis-server and ``nnserve api`` with one gunicorn worker (from a temporary directory, so
the API imports the installed nnserve), uploads four bodies of about ``--mib`` MiB each and prints,
per upload, its status, seconds and how far the worker's peak RSS (VmHWM, lowered to its RSS before
each upload through /proc/<pid>/clear_refs; Linux) rose, also as a multiple of the body:

- CSV and JSON of tiny rows (``1,2``; ``[1]``), millions of them: stopped by the row limit (422);
- CSV and JSON of 1,000,000 rows of one-character values, within the limits: stored (201);
- images: 28x28x1 samples as JSON nested lists (one-character values), and binary ``.npz`` uploads
  (``numpy.savez``) of float32 and of uint8 images, stored as float32 (201). The last column is the
  rise as a multiple of the dataset as stored (float32 features, int64 labels): what "the API holds at
  most about two copies of a dataset while uploading it" is measured against.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

from nnserve.cli.supervisor import free_port

MiB = 1024 * 1024
ROWS = 1_000_000


def npz(samples: int, dtype) -> bytes:
    buffer = io.BytesIO()
    x = (np.arange(samples * 784) % 251).astype(dtype).reshape(samples, 28, 28, 1)
    np.savez(buffer, x=x, y=np.arange(samples) % 10)
    return buffer.getvalue()


def bodies(size: int) -> list[tuple[str, str, bytes, int]]:
    """``(name, kind, body, bytes stored)``: 0 stored for a body refused at the row limit."""
    width = size // ROWS // 2 - 1  # one-character values: 2 bytes each, and the label
    csv_rows = b"".join(b"1," * width + (b"0\n" if i % 2 else b"1\n") for i in range(ROWS))
    row = b"[" + b",".join([b"1"] * width) + b"]"
    labels = b",".join([b"0", b"1"] * (ROWS // 2))
    images = size // (28 * 28 * 4)  # as many 28x28 float32 images as the body size holds
    image = b"[" + b",".join([b"[" + b",".join([b"[1]"] * 28) + b"]"] * 28) + b"]"
    json_images = size // len(image)
    image_labels = b",".join(b"%d" % (i % 10) for i in range(json_images))
    return [
        ("csv, tiny rows (row limit)", "csv", b"a,b\n" + b"1,2\n" * (size // 4), 0),
        (
            f"csv, {ROWS} x {width} (stored)",
            "csv",
            b",".join(b"x%d" % i for i in range(width)) + b",y\n" + csv_rows,
            ROWS * (4 * width + 8),
        ),
        ("json, tiny rows (row limit)", "json", b'{"features":[' + b"[1]," * (size // 4 - 1) + b"[1]]}", 0),
        (
            f"json, {ROWS} x {width} (stored)",
            "json",
            b'{"features":[' + b",".join([row] * ROWS) + b'],"targets":[' + labels + b"]}",
            ROWS * (4 * width + 8),
        ),
        (
            f"json, {json_images} x 28x28x1 nested",
            "json",
            b'{"features":[' + b",".join([image] * json_images) + b'],"targets":[' + image_labels + b"]}",
            json_images * (4 * 784 + 8),
        ),
        (f"npz, {images} x 28x28x1 float32", "npz", npz(images, np.float32), images * (4 * 784 + 8)),
        (f"npz, {images * 4} x 28x28x1 uint8", "npz", npz(images * 4, np.uint8), images * 4 * (4 * 784 + 8)),
    ]


def wait_for(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {seconds} s")


def gunicorn_worker(supervisor: int) -> int:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(parent, []).append(int(entry.name))
    return children[children[supervisor][0]][0]


def memory(pid: int, field: str) -> int:
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1]) * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=float, default=60, help="size of each body (default 60)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter that runs nnserve api")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nnserve-bench-"))
    redis_port, port = free_port(), free_port()
    redis = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(redis_port), "--save", "", "--dir", str(work)],
        stdout=subprocess.DEVNULL,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNSERVE_")}
    env.update(
        REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        NNSERVE_API_WORKERS="1",
        NNSERVE_LOG_LEVEL="WARNING",
        NNSERVE_MAX_BODY_BYTES=str(int(4 * args.mib * MiB) + MiB),  # the nested JSON images are ~3x the size
    )
    api = subprocess.Popen(
        [args.python, "-m", "nnserve", "api", "--port", str(port)], env=env, cwd=work, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/healthz")
        worker = gunicorn_worker(api.pid)
        requests.post(f"{url}/v1/datasets", json={"features": [[1], [2]], "targets": [1.5, 2.5]}, timeout=60)
        print(
            f"{'upload':36} {'body':>9} {'status':>6} {'seconds':>8} {'peak RSS rise':>20} {'stored':>9} {'x stored':>8}"
        )
        for name, kind, body, stored in bodies(int(args.mib * MiB)):
            Path(f"/proc/{worker}/clear_refs").write_text("5")
            before = memory(worker, "VmRSS")
            start = time.perf_counter()
            if kind in ("csv", "npz"):
                response = requests.post(f"{url}/v1/datasets", files={"file": (f"d.{kind}", body)}, timeout=900)
            else:
                headers = {"Content-Type": "application/json"}
                response = requests.post(f"{url}/v1/datasets", data=body, headers=headers, timeout=900)
            seconds = time.perf_counter() - start
            rise = memory(worker, "VmHWM") - before
            of_stored = f"{stored / MiB:5.0f} MiB {rise / stored:7.2f}x" if stored else f"{'-':>9} {'-':>8}"
            print(
                f"{name:36} {len(body) / MiB:5.1f} MiB {response.status_code:>6} {seconds:8.1f} "
                f"{rise / MiB:8.0f} MiB ({rise / len(body):4.1f}x) {of_stored}",
                flush=True,
            )
    finally:
        os.killpg(api.pid, signal.SIGTERM)
        api.wait(30)
        redis.terminate()
        redis.wait(30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
