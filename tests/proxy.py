"""The shipped nginx configuration (``deploy/nginx.conf.template``), run for real with Debian's nginx
in front of a running ``nnserve api``, as docker-compose.yml's proxy service runs it.

The official image renders the template with envsubst (only the variables set in the container's
environment) into ``conf.d/default.conf``, which its main configuration includes inside ``http {}``.
:class:`Nginx` does the same: :func:`render` substitutes the variables the compose file sets, and a
minimal main configuration like the image's includes the result, adding only what a test needs
(a prefix of its own for the pid file, logs and temporary files, no daemon).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port

TEMPLATE = ROOT / "deploy" / "nginx.conf.template"
MAIN = """\
worker_processes 1;
{user}error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {prefix}/default.conf;
}}
"""


def nginx_binary() -> str:
    """Debian's nginx (in /usr/sbin, which a non-root PATH may lack). CI must run the proxy tests: there
    a missing nginx is a failure, elsewhere a skip."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is not installed (apt-get install nginx; .ci/run does)")
        pytest.skip("needs Debian's nginx (apt-get install nginx)")
    return found


def render(template: str, env: dict[str, str]) -> str:
    """envsubst restricted to ``env``'s names, as the official image's entry point runs it."""
    return re.sub(
        r"\$\{(\w+)\}|\$(\w+)",
        lambda m: env.get(m.group(1) or m.group(2), m.group(0)),
        template,
    )


class Nginx:
    """nginx with the shipped configuration on a free port of 127.0.0.1, in front of ``api``."""

    def __init__(self, prefix: Path, api: str, max_body_bytes: int):
        self.prefix = prefix
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            "NGINX_PORT": f"127.0.0.1:{self.port}",
            "NNSERVE_API": api.removeprefix("http://"),
            "NNSERVE_MAX_BODY_BYTES": str(max_body_bytes),
        }
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Nginx:
        binary = nginx_binary()
        self.prefix.mkdir(parents=True, exist_ok=True)
        text = render(TEMPLATE.read_text(), self.env)
        assert "${" not in text, "the template uses a variable the compose file does not set"
        (self.prefix / "default.conf").write_text(text)
        # As root, nginx's workers would switch to an unprivileged user that cannot write here.
        user = "user root;\n" if os.geteuid() == 0 else ""
        (self.prefix / "nginx.conf").write_text(MAIN.format(prefix=self.prefix, user=user))
        with open(self.prefix / "stderr.log", "wb") as log:
            self.process = subprocess.Popen(
                [binary, "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf"), "-g", "daemon off;"],
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + 20
        while not self._listening():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise AssertionError("nginx did not start: " + (self.prefix / "stderr.log").read_text())
            time.sleep(0.05)
        return self

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
