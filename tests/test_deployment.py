"""The Dockerfile and docker-compose.yml, checked against the code (there is no Docker engine here):
the commands are real CLI verbs and flags, the environment names are settings, the ports agree,
the health checks ask real routes, the image runs as a non-root user with an exec-form entry point,
the proxy fronts the API with the shipped nginx config (run for real in tests/e2e/test_slow_clients.py),
and every setting is documented."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import sys
import tomllib

import pytest
import yaml

from nnserve import cli
from nnserve.service.settings import Settings
from tests.conftest import ROOT, free_port

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
NOT_IN_COMPOSE = {
    "host": "given as --host in the api command",
    "port": "given as --port in the api command",
    "workers": "nnserve up only; compose scales the worker service instead",
    "embedded_redis_port": "nnserve up only; compose runs its own Redis",
    "data_dir": "nnserve up only",
    "metrics_dir": "set up by nnserve api inside the container",
}


def instructions(text: str) -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    result = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


DOCKERFILE = instructions((ROOT / "Dockerfile").read_text())


def final_stage() -> list[tuple[str, str]]:
    last = max(i for i, (word, _) in enumerate(DOCKERFILE) if word == "FROM")
    return DOCKERFILE[last:]


def exec_form(arguments: str) -> list[str]:
    """An exec-form (JSON array) argument list; fails on shell form."""
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), arguments
    return value


def one(word: str) -> str:
    found = [args for w, args in final_stage() if w == word]
    assert len(found) == 1, (word, found)
    return found[0]


def run_cli(argv: list[str], monkeypatch) -> tuple[Settings, object]:
    """What ``nnserve <argv>`` would run, with what settings: the real parser and settings, with the
    verb recorded instead of started. Unknown verbs or flags exit, as they would in the container."""
    ran = []
    for verb in ("up", "api", "worker"):
        monkeypatch.setattr(
            cli.server, f"cmd_{verb}", lambda settings, args, verb=verb: ran.append((verb, settings, args)) or 0
        )
    for name in [n for n in os.environ if n.startswith("NNSERVE_") or n == "REDIS_URL"]:
        monkeypatch.delenv(name)
    assert cli.main(argv) == 0
    verb, settings, args = ran[0]
    assert verb == argv[0]
    return settings, args


def env_names(service: dict) -> list[str]:
    return [entry.split("=", 1)[0] for entry in service["environment"]]


def setting_of(env_name: str) -> str:
    """The Settings field an environment variable sets (REDIS_URL or NNSERVE_<FIELD>)."""
    if env_name == "REDIS_URL":
        return "redis_url"
    assert env_name.startswith("NNSERVE_"), env_name
    field = env_name.removeprefix("NNSERVE_").lower()
    assert field in Settings.model_fields, f"{env_name} is set in docker-compose.yml but no setting reads it"
    return field


# The image ------------------------------------------------------------------------------------------


def test_the_image_is_multi_stage_from_slim_python_and_installs_the_built_wheel():
    stages = [args for word, args in DOCKERFILE if word == "FROM"]
    assert len(stages) == 2 and stages[0] == "python:3.11-slim AS build" and stages[1] == "python:3.11-slim"
    build = DOCKERFILE[: [w for w, _ in DOCKERFILE].index("FROM", 1)]
    assert any(word == "RUN" and "pip wheel" in args and "--wheel-dir /wheels" in args for word, args in build)
    install = [args for word, args in final_stage() if word == "RUN" and "pip install" in args]
    assert len(install) == 1 and "from=build" in install[0] and "--no-index" in install[0] and "nnserve" in install[0]
    assert not any(word == "COPY" and "--from" not in args for word, args in final_stage())  # no sources


def test_the_build_context_has_what_the_build_copies():
    """Each COPY source exists and .dockerignore (an allow-list) lets it in."""
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        verdict = False
        for rule in rules:
            negated, pattern = rule.startswith("!"), rule.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path.split("/")[0], pattern):
                verdict = not negated
        return verdict

    sources = []
    for word, args in DOCKERFILE:
        if word == "COPY" and "--from" not in args:
            sources += args.split()[:-1]
    assert {"pyproject.toml", "README.md", "nnserve", "engine", "service", "worker"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not ignored(source), f"{source} is excluded by .dockerignore"
    for inside in ("nnserve/__init__.py", "service/builtin/iris.csv", "engine/model.py", "worker/jobs.py"):
        assert not ignored(inside)
    for kept_out in (".venv", ".git", "tests", "bench", ".nnserve", "service/__pycache__"):
        assert ignored(kept_out), kept_out


def test_the_image_runs_as_a_non_root_user():
    user = one("USER")
    assert (
        user.split(":")[0] not in ("root", "0") and user.split(":")[0].isdigit()
    )  # numeric: checkable by runAsNonRoot
    words = [word for word, _ in final_stage()]
    assert words.index("USER") < words.index("ENTRYPOINT")
    assert any(
        word == "RUN" and "useradd" in args and f"--uid {user.split(':')[0]}" in args for word, args in final_stage()
    )


def test_the_entrypoint_is_the_nnserve_script_in_exec_form():
    assert exec_form(one("ENTRYPOINT")) == ["nnserve"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["nnserve"] == "nnserve.cli:main"


def test_the_default_command_starts_the_api_on_the_exposed_port(monkeypatch):
    command = exec_form(one("CMD"))
    settings, _ = run_cli(command, monkeypatch)
    assert settings.host == "0.0.0.0" and settings.port == int(one("EXPOSE")) == 8000


def healthcheck_code() -> str:
    arguments = one("HEALTHCHECK")
    options, _, command = arguments.partition("CMD ")
    assert "--interval" in options and "--timeout" in options
    argv = exec_form(command)
    assert argv[:2] == ["python", "-c"] and len(argv) == 3  # Python's urllib: the slim image has no curl
    return argv[2]


def test_the_health_check_asks_a_real_route_on_the_exposed_port(app):
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", healthcheck_code())
    assert url and int(url.group(1)) == int(one("EXPOSE"))
    assert url.group(2) in {rule.rule for rule in app.url_map.iter_rules()} and url.group(2) == "/healthz"
    assert app.test_client().get(url.group(2)).status_code == 200


def test_the_health_check_passes_against_a_running_api_and_fails_without_one(processes):
    api = processes.api()
    code = healthcheck_code()
    here = code.replace("http://127.0.0.1:8000", api)
    assert subprocess.run([sys.executable, "-c", here], check=False, capture_output=True, timeout=30).returncode == 0
    nowhere = code.replace("http://127.0.0.1:8000", f"http://127.0.0.1:{free_port()}")
    assert subprocess.run([sys.executable, "-c", nowhere], check=False, capture_output=True, timeout=30).returncode != 0


# The compose file ---------------------------------------------------------------------------------


def test_redis_is_durable_and_checked():
    redis = SERVICES["redis"]
    assert redis["image"].startswith("redis:")  # the official image
    command = redis["command"]
    assert command[0] == "redis-server"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"
    volume, target = redis["volumes"][0].split(":")
    assert volume in COMPOSE["volumes"] and target == "/data"  # a named volume at the image's data directory
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_the_api_service(monkeypatch):
    api = SERVICES["api"]
    assert api["build"] == "." and api["depends_on"] == {"redis": {"condition": "service_healthy"}}
    settings, _ = run_cli(api["command"], monkeypatch)
    assert settings.port == int(one("EXPOSE")) and settings.host == "0.0.0.0"
    assert "ports" not in api  # clients come through the proxy


def compose_env(service: dict, environ: dict[str, str] | None = None) -> dict[str, str]:
    """A service's environment as compose sets it: ``${NAME:-default}`` and ``${NAME}`` filled in from
    ``environ`` (the environment of ``docker compose``, empty here)."""
    environ = environ or {}

    def fill(match: re.Match) -> str:
        name, default = match.group(1), match.group(3)
        return environ.get(name) or (default if default is not None else "")

    pairs = (entry.split("=", 1) for entry in service["environment"] if "=" in entry)
    return {name: re.sub(r"\$\{(\w+)(:-([^}]*))?\}", fill, value) for name, value in pairs}


def test_the_proxy_service_fronts_the_api_with_the_shipped_config(monkeypatch):
    proxy = SERVICES["proxy"]
    assert proxy["image"].startswith("nginx:")  # the official image, which renders templates at start
    source, target, mode = proxy["volumes"][0].split(":")
    assert (ROOT / source).resolve() == ROOT / "deploy" / "nginx.conf.template" and mode == "ro"
    assert target.startswith("/etc/nginx/templates/") and target.endswith(".conf.template")
    env = compose_env(proxy)
    settings, _ = run_cli(SERVICES["api"]["command"], monkeypatch)
    assert env["NNSERVE_API"] == f"api:{settings.port}"
    assert env["NNSERVE_MAX_BODY_BYTES"] == str(Settings().max_body_bytes)
    assert compose_env(proxy, {"NNSERVE_MAX_BODY_BYTES": "1000"})["NNSERVE_MAX_BODY_BYTES"] == "1000"
    published, container = proxy["ports"][0].split(":")
    assert int(published) == 8000 and container == env["NGINX_PORT"]
    assert proxy["depends_on"] == {"api": {"condition": "service_healthy"}}
    # Every variable the template uses is set (the image substitutes only those; nginx's own stay).
    used = set(re.findall(r"\$\{(\w+)\}", (ROOT / "deploy" / "nginx.conf.template").read_text()))
    assert used == set(env)


def test_the_proxy_and_the_api_agree_on_timeouts():
    text = (ROOT / "deploy" / "nginx.conf.template").read_text()
    defaults = Settings()
    assert re.search(r"client_header_timeout (\d+)s;", text).group(1) == f"{defaults.header_timeout:g}"
    assert re.search(r"client_body_timeout (\d+)s;", text).group(1) == f"{defaults.body_timeout:g}"
    # nginx drops idle upstream connections before gunicorn does (a POST on one gunicorn closed is not retried).
    command = cli.server.gunicorn_command(defaults)
    keepalive = command[command.index("--keep-alive") + 1]
    assert int(re.search(r"keepalive_timeout (\d+)s;", text).group(1)) < int(keepalive)


def test_the_worker_service_scales(monkeypatch):
    worker = SERVICES["worker"]
    _, args = run_cli(worker["command"], monkeypatch)
    assert args.burst is False
    assert worker["depends_on"] == {"redis": {"condition": "service_healthy"}}
    # Anything fixed per container would stop `--scale worker=4`.
    assert not {"ports", "container_name", "hostname"} & set(worker)
    assert worker["healthcheck"] == {"disable": True}  # the image's check is the API's
    assert worker["image"] == SERVICES["api"]["image"] and worker["build"] == SERVICES["api"]["build"]


def seconds(duration: str) -> float:
    return sum(
        float(n) * {"s": 1, "m": 60, "h": 3600}[unit] for n, unit in re.findall(r"(\d+(?:\.\d+)?)([smh])", duration)
    )


def test_workers_get_time_to_checkpoint_when_stopped():
    grace = seconds(SERVICES["worker"]["stop_grace_period"])
    assert grace >= Settings().shutdown_timeout + 10  # the checkpoint and requeue, with room to spare
    assert SERVICES["worker"].get("stop_signal", "SIGTERM") == "SIGTERM"


def test_every_service_restarts():
    for name, service in SERVICES.items():
        assert service["restart"] in ("unless-stopped", "always"), name


def test_every_environment_name_is_a_setting():
    for name in ("api", "worker"):
        for env_name in env_names(SERVICES[name]):
            setting_of(env_name)
    assert compose_env(SERVICES["api"]) == {"REDIS_URL": "redis://redis:6379/0", "NNSERVE_FORWARDED_HOPS": "1"}


def test_every_setting_reaches_the_containers_or_is_known_not_to():
    passed = {setting_of(name) for name in env_names(SERVICES["api"])}
    assert env_names(SERVICES["api"]) == env_names(SERVICES["worker"])
    missing = set(Settings.model_fields) - passed - set(NOT_IN_COMPOSE)
    assert not missing, f"settings docker-compose.yml does not pass on: {sorted(missing)}"
    assert not passed & set(NOT_IN_COMPOSE)


def test_compose_environment_makes_valid_settings(monkeypatch):
    """With only what compose sets, the settings validate (the unset names stay unset)."""
    for name, value in compose_env(SERVICES["api"]).items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.redis_url == "redis://redis:6379/0" and settings.forwarded_hops == 1


# The documentation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("field", list(Settings.model_fields))
def test_every_setting_is_documented(field):
    text = (ROOT / "docs" / "deployment.md").read_text()
    name = "REDIS_URL" if field == "redis_url" else f"NNSERVE_{field.upper()}"
    assert f"`{name}`" in text, f"docs/deployment.md does not document {name}"
