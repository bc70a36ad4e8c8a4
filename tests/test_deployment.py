"""The Dockerfile and docker-compose.yml, checked against the code (there is no Docker engine here):
the commands are real CLI verbs and flags, the environment names are settings, the ports agree,
the health checks ask real routes, the image runs as a non-root user with an exec-form entry point,
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


PLAIN_NAMES = {"redis_url", "redis_sentinels", "redis_sentinel_master", "redis_sentinel_password", "redis_sentinel_tls"}
"""Settings read under their conventional names (REDIS_URL, REDIS_SENTINELS...), without NNSERVE_."""


def env_name_of(field: str) -> str:
    return field.upper() if field in PLAIN_NAMES else f"NNSERVE_{field.upper()}"


def setting_of(env_name: str) -> str:
    """The Settings field an environment variable sets (REDIS_URL, REDIS_SENTINEL... or NNSERVE_<FIELD>)."""
    if env_name.lower() in PLAIN_NAMES:
        return env_name.lower()
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
    published, container = api["ports"][0].split(":")
    assert int(container) == settings.port == int(one("EXPOSE")) == int(published)
    assert settings.host == "0.0.0.0"


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
    assert dict(e.split("=", 1) for e in SERVICES["api"]["environment"] if "=" in e) == {
        "REDIS_URL": "redis://redis:6379/0"
    }


def test_every_setting_reaches_the_containers_or_is_known_not_to():
    passed = {setting_of(name) for name in env_names(SERVICES["api"])}
    assert env_names(SERVICES["api"]) == env_names(SERVICES["worker"])
    missing = set(Settings.model_fields) - passed - set(NOT_IN_COMPOSE)
    assert not missing, f"settings docker-compose.yml does not pass on: {sorted(missing)}"
    assert not passed & set(NOT_IN_COMPOSE)


def test_compose_environment_makes_valid_settings(monkeypatch):
    """With only what compose sets, the settings validate (the unset names stay unset)."""
    for entry in SERVICES["api"]["environment"]:
        if "=" in entry:
            monkeypatch.setenv(*entry.split("=", 1))
    assert Settings().redis_url == "redis://redis:6379/0"


# The documentation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("field", list(Settings.model_fields))
def test_every_setting_is_documented(field):
    text = (ROOT / "docs" / "deployment.md").read_text()
    name = env_name_of(field)
    assert f"`{name}`" in text, f"docs/deployment.md does not document {name}"
