"""The Dockerfile and docker-compose.yml, checked against the code (there is no Docker engine here):
the commands are real CLI verbs and flags, the environment names are settings, the ports agree,
the health checks ask real routes on the configured port, the image runs as a non-root user with an
exec-form entry point and installs its dependencies from the committed constraints in a layer of their
own, the proxy fronts the API with the shipped nginx config (run for real in tests/e2e/test_slow_clients.py)
and is published on loopback unless the operator says otherwise, workers have a memory limit,
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
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from nnserve import cli
from nnserve.service.settings import Settings
from tests.conftest import ROOT, free_port

COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
SERVICES = COMPOSE["services"]
NOT_IN_COMPOSE = {
    "host": "the image's NNSERVE_HOST: a container listens on all its interfaces; ports decide what reaches it",
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


def image_env() -> dict[str, str]:
    """The final stage's ENV, as every container of the image starts with it."""
    env = {}
    for word, args in final_stage():
        if word == "ENV":
            env.update(dict(pair.split("=", 1) for pair in args.split()))
    return env


def run_cli(argv: list[str], monkeypatch, env: dict[str, str] | None = None) -> tuple[Settings, object]:
    """What ``nnserve <argv>`` would run in the image (its ENV, plus ``env``), with what settings: the real
    parser and settings, with the verb recorded instead of started. Unknown verbs or flags exit, as they
    would in the container."""
    ran = []
    for verb in ("up", "api", "worker"):
        monkeypatch.setattr(
            cli.server, f"cmd_{verb}", lambda settings, args, verb=verb: ran.append((verb, settings, args)) or 0
        )
    for name in [n for n in os.environ if n.startswith("NNSERVE_") or n == "REDIS_URL"]:
        monkeypatch.delenv(name)
    for name, value in {**image_env(), **(env or {})}.items():
        monkeypatch.setenv(name, value)
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


def stages() -> dict[str, list[tuple[str, str]]]:
    """Each build stage's instructions by its name (the final one: "final")."""
    starts = [i for i, (word, _) in enumerate(DOCKERFILE) if word == "FROM"]
    found = {}
    for start, end in zip(starts, [*starts[1:], len(DOCKERFILE)]):
        base, _, name = DOCKERFILE[start][1].partition(" AS ")
        assert base == "python:3.11-slim"
        found[name or "final"] = DOCKERFILE[start + 1 : end]
    return found


def test_the_image_is_multi_stage_from_slim_python_and_installs_the_built_wheel():
    assert list(stages()) == ["dependencies", "build", "final"]
    build = stages()["build"]
    assert any(word == "RUN" and "pip wheel" in args and "--no-deps" in args for word, args in build)
    install = [args for word, args in final_stage() if word == "RUN" and "pip install" in args]
    assert len(install) == 2
    assert "from=build" in install[1] and "--no-index" in install[1] and "--no-deps" in install[1]
    assert install[1].endswith("&& pip check")  # nnserve's own requirements are met by the constraints
    assert not any(word == "COPY" and "--from" not in args for word, args in final_stage())  # no sources


def test_the_dependency_layers_come_from_the_committed_constraints_alone():
    """The dependencies stage sees the constraints file and nothing else, and the final stage installs its
    wheels in a layer before (and apart from) nnserve's: a change to the source reuses both from the cache."""
    dependencies = stages()["dependencies"]
    assert [word for word, _ in dependencies] == ["COPY", "RUN"]
    assert dependencies[0][1].split()[0] == "requirements/constraints.txt"
    assert "pip wheel" in dependencies[1][1] and "-r /wheels/constraints.txt" in dependencies[1][1]
    install = [args for word, args in final_stage() if word == "RUN" and "pip install" in args]
    assert (
        "from=dependencies" in install[0] and "--no-index" in install[0] and "-r /wheels/constraints.txt" in install[0]
    )


def constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version and " " not in line, f"not an exact pin: {line}"
            pins[canonicalize_name(name)] = version
    return pins


def test_the_constraints_pin_every_runtime_dependency_within_pyproject():
    """requirements/lock.sh writes them; after a change to the dependencies, this fails until it is run."""
    pins = constraints()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for text in project["dependencies"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is a dependency but requirements/constraints.txt does not pin it"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} is outside {requirement.specifier}"
    for dev_only in ("pytest", "keras", "jax", "ruff", "mypy", "torch", "nnserve"):
        assert dev_only not in pins


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
    expected = {"pyproject.toml", "README.md", "nnserve", "engine", "service", "worker", "requirements/constraints.txt"}
    assert expected <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not ignored(source), f"{source} is excluded by .dockerignore"
    for inside in ("nnserve/__init__.py", "service/builtin/iris.csv", "engine/model.py", "worker/jobs.py"):
        assert not ignored(inside)
    for kept_out in (".venv", ".git", "tests", "bench", ".nnserve", "service/__pycache__", "requirements/lock.sh"):
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
    moved, _ = run_cli(command, monkeypatch, {"NNSERVE_PORT": "9100"})
    assert moved.port == 9100


def healthcheck_code() -> str:
    arguments = one("HEALTHCHECK")
    options, _, command = arguments.partition("CMD ")
    assert "--interval" in options and "--timeout" in options
    argv = exec_form(command)
    assert argv[:2] == ["python", "-c"] and len(argv) == 3  # Python's urllib: the slim image has no curl
    return argv[2]


def test_the_health_check_asks_a_real_route_on_the_configured_port(app):
    code = healthcheck_code()
    assert "http://127.0.0.1:%s/healthz" in code and "os.environ.get('NNSERVE_PORT', '8000')" in code
    assert image_env()["NNSERVE_PORT"] == one("EXPOSE") == "8000"
    assert "/healthz" in {rule.rule for rule in app.url_map.iter_rules()}
    assert app.test_client().get("/healthz").status_code == 200


def test_the_health_check_follows_the_port_of_a_running_api_and_fails_without_one(processes):
    api = processes.api()
    port = api.rsplit(":", 1)[1]

    def check(env_port: str) -> int:
        env = {**os.environ, "NNSERVE_PORT": env_port}
        command = [sys.executable, "-c", healthcheck_code()]
        return subprocess.run(command, check=False, capture_output=True, timeout=30, env=env).returncode

    assert check(port) == 0
    assert check(str(free_port())) != 0


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


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ``${NAME:-default}``: the variable when it is set and not empty, else the default."""
    result = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: env.get(m.group(1)) or m.group(2), text)
    assert "$" not in result, text
    return result


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
    address, published, container = interpolate(proxy["ports"][0], {}).split(":")
    assert address == "127.0.0.1" and int(published) == 8000 and container == env["NGINX_PORT"]
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


def test_the_way_in_is_published_on_loopback_unless_the_operator_says_otherwise(monkeypatch):
    """Without keys the API is open, so by default only this machine reaches the proxy in front of it; the
    operator widens it on purpose. Moving NNSERVE_PORT moves the API's port, and the proxy follows."""
    assert "ports" not in SERVICES["api"]
    ports = SERVICES["proxy"]["ports"]
    assert len(ports) == 1 and interpolate(ports[0], {}) == "127.0.0.1:8000:8080"
    assert interpolate(ports[0], {"API_PUBLISH_ADDRESS": "0.0.0.0"}) == "0.0.0.0:8000:8080"
    settings, _ = run_cli(SERVICES["api"]["command"], monkeypatch, {"NNSERVE_PORT": "9100"})
    assert settings.port == 9100 and "NNSERVE_PORT" in env_names(SERVICES["api"])
    assert compose_env(SERVICES["proxy"], {"NNSERVE_PORT": "9100"})["NNSERVE_API"] == "api:9100"
    assert "API_PUBLISH_ADDRESS" in COMPOSE_TEXT.split("services:")[0]  # explained in the file's top comments


def memory(size: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kmg]?)b?", size.lower()).groups()
    return int(number) * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[unit]


def test_workers_have_a_memory_limit_and_no_swap_beyond_it():
    worker = SERVICES["worker"]
    limit, swap = interpolate(worker["mem_limit"], {}), interpolate(worker["memswap_limit"], {})
    assert limit == swap and memory(limit) >= 512 * 2**20
    assert (
        interpolate(worker["mem_limit"], {"WORKER_MEMORY": "8g"})
        == "8g"
        == interpolate(worker["memswap_limit"], {"WORKER_MEMORY": "8g"})
    )
    assert "OOM killer" in COMPOSE_TEXT and "Memory limits" in (ROOT / "docs" / "operations.md").read_text()


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
    name = env_name_of(field)
    assert f"`{name}`" in text, f"docs/deployment.md does not document {name}"
