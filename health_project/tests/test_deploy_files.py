"""The deploy files (Dockerfile, compose.yaml, .env.example, .dockerignore, deploy/) held to code.

Docker is not available where this project is built, so the images are never built here and
compose is never run: these tests check instead that what the files name exists in the code.
Every command is a registered management command (its arguments parse) or a granian app that
imports; every variable given to the app is one that production settings read; the NATS
nodes form a JetStream cluster; the build-time collectstatic imports settings with no server;
and `check --deploy` passes with the compose values. See docs/phase-3/deploy.md.
"""

from __future__ import annotations

import atexit
import base64
import fnmatch
import importlib.util
import json
import os
import re
import secrets
import shlex
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from django.core.management import get_commands, load_command_class
from django.test import Client, override_settings
from granian.cli import cli as granian_cli

from core.consumers import processes
from health_project.serving import granian_args

PROJECT = Path(__file__).resolve().parents[2]
COMPOSE = PROJECT / "compose.yaml"
DOCKERFILE = PROJECT / "Dockerfile"
ENV_EXAMPLE = PROJECT / ".env.example"
DOCKERIGNORE = PROJECT / ".dockerignore"
DEPLOY = PROJECT / "deploy"

APP_IMAGE = "health-integrations:local"
BACKING_SERVICES = {"postgres", "minio", "nats-1", "nats-2", "nats-3"}
PROCESS_SERVICES = {"web", "relay", "normalizer", "worker", "scheduler"}
NATS_NODES = ("nats-1", "nats-2", "nats-3")
# Variables of the images we do not build: they configure those servers, not our settings.
IMAGE_VARIABLES = {
    "postgres": {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"},
    "minio": {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "MINIO_KMS_SECRET_KEY"},
}
# Read by Python itself or the shell, not by settings; allowed in the image's ENV only.
INTERPRETER_VARIABLES = {"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}
# Never written into compose.yaml: only interpolated from .env, and empty in .env.example.
SECRETS = {
    "DJANGO_SECRET_KEY",
    "TOKEN_ENCRYPTION_KEYS",
    "PERSON_HASH_KEY",
    "ADMIN_URL_PREFIX",  # not a secret, but each deployment's own: generated, never committed
    "OURA_CLIENT_SECRET",
    "OURA_CLIENT_SECRET_PREVIOUS",
    "OURA_WEBHOOK_VERIFICATION_TOKEN",
    "S3_SECRET_ACCESS_KEY",
    "POSTGRES_PASSWORD",
    "MINIO_ROOT_PASSWORD",
    "MINIO_KMS_SECRET_KEY",
}
COMPILERS = ("build-essential", "gcc", "g++", "clang", "make", "libc6-dev", "python3-dev")


# --- Reading the files -------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def services() -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose()["services"]
    return result


def app_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services().items() if s.get("image") == APP_IMAGE}


def env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example: not NAME=value: {line!r}"
            values[name.strip()] = value.strip()
    return values


@cache
def operator_values() -> dict[str, str]:
    """.env as an operator fills it in: .env.example, with every empty secret generated."""

    def generated(name: str) -> str:
        if name == "DJANGO_SECRET_KEY":
            return secrets.token_urlsafe(50)
        if name == "TOKEN_ENCRYPTION_KEYS":
            return base64.urlsafe_b64encode(os.urandom(32)).decode()
        if name == "MINIO_KMS_SECRET_KEY":
            return "health-sse:" + base64.b64encode(os.urandom(32)).decode()
        return secrets.token_hex(16)

    optional = {"OURA_CLIENT_SECRET_PREVIOUS", "SENTRY_DSN"}
    return {
        name: value or ("" if name in optional else generated(name))
        for name, value in env_example().items()
    }


_INTERPOLATION = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}"
)


def interpolated_names(text: str) -> set[str]:
    return {m["name"] for m in _INTERPOLATION.finditer(text) if m["name"]}


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, $$."""

    def replace(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name, op, arg = match["name"], match["op"] or "", match["arg"]
        current = variables.get(name)
        missing = current is None or (op.startswith(":") and current == "")
        if op.endswith("?") and missing:
            raise AssertionError(f"compose would refuse to start: {name}: {arg}")
        if op.endswith("-") and missing:
            return arg
        return current or ""

    return _INTERPOLATION.sub(replace, value)


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def resolved_environment(service: str) -> dict[str, str]:
    values = operator_values()
    return {k: interpolate(v, values) for k, v in environment(services()[service]).items()}


def command(service: str) -> list[str]:
    cmd = services()[service]["command"]
    return shlex.split(cmd) if isinstance(cmd, str) else [str(part) for part in cmd]


def nats_flags(node: str) -> dict[str, str]:
    argv = command(node)
    flags: dict[str, str] = {}
    i = 0
    while i < len(argv):
        flag = argv[i].lstrip("-")
        assert argv[i].startswith("-"), f"{node}: unexpected argument {argv[i]!r}"
        if flag in ("jetstream", "js"):
            flags["jetstream"] = "true"
            i += 1
        else:
            flags[flag] = argv[i + 1]
            i += 2
    return flags


@cache
def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """[[(INSTRUCTION, arguments), ...] per stage], continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    stages: list[list[tuple[str, str]]] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        assert stages, f"instruction before FROM: {line}"
        stages[-1].append((keyword.upper(), rest.strip()))
    return stages


def final_stage() -> list[tuple[str, str]]:
    return dockerfile_stages()[-1]


def final_stage_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in final_stage():
        if keyword == "ENV":
            for item in shlex.split(rest):
                name, _, value = item.partition("=")
                env[name] = value
    return env


def exec_form(keyword: str) -> list[str]:
    forms = [rest for kw, rest in final_stage() if kw == keyword]
    assert forms, f"the final stage has no {keyword}"
    text = forms[-1].split(" CMD ", 1)[-1] if keyword == "HEALTHCHECK" else forms[-1]
    argv = json.loads(text)
    assert isinstance(argv, list)
    return [str(a) for a in argv]


def load_script(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- Production settings, as the containers get them -------------------------------------

_PROBE = r"""
import importlib, json, sys
import health_project.env as env

read = set()
_raw = env._raw
def recording(name):
    read.add(name)
    return _raw(name)
env._raw = recording  # every env_*() helper reads through this

import os
import django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "health_project.settings")  # as manage.py does
django.setup()
from django.core.management import get_commands

apps = {}
for target in json.loads(sys.argv[1]):
    module, _, attribute = target.partition(":")
    apps[target] = callable(getattr(importlib.import_module(module), attribute, None))
print(json.dumps({"read": sorted(read), "commands": get_commands(), "apps": apps}))
"""


def container_env(service: str = "web") -> dict[str, str]:
    """The environment of a container of `service`: the image's ENV, then compose's, and no
    connection to anything on this machine (no test-session URLs leak in)."""
    image_env = {k: v for k, v in final_stage_env().items() if k != "PATH"}
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        **image_env,
        **resolved_environment(service),
    }
    if env.get("PROMETHEUS_MULTIPROC_DIR"):
        # A tmpfs in the container (checked below); a folder of this machine's here.
        env["PROMETHEUS_MULTIPROC_DIR"] = _metrics_folder()
    return env


@cache
def _metrics_folder() -> str:
    folder = tempfile.TemporaryDirectory(prefix="metrics-")
    atexit.register(folder.cleanup)
    return folder.name


def wsgi_targets() -> list[str]:
    targets = [granian_cli.make_context("granian", exec_form("CMD")[1:]).params["app"]]
    for name in app_services():
        argv = command(name)
        if argv[0] == "granian":
            targets.append(granian_cli.make_context("granian", argv[1:]).params["app"])
    return sorted(set(targets))


@pytest.fixture(scope="module")
def production() -> dict[str, Any]:
    """What production settings read, the commands they register, and which apps import."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(wsgi_targets())],
        cwd=PROJECT,
        env=container_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


# --- compose.yaml: services and their commands ---------------------------------------------


def test_compose_has_backing_services_provision_and_one_service_per_process() -> None:
    assert set(services()) == BACKING_SERVICES | PROCESS_SERVICES | {"provision"}
    assert set(app_services()) == PROCESS_SERVICES | {"provision"}
    assert services()["postgres"]["image"].startswith("postgres:")
    assert all(services()[n]["image"].startswith("nats:") for n in NATS_NODES)
    assert "minio" in services()["minio"]["image"]


@pytest.mark.parametrize("service", sorted(PROCESS_SERVICES | {"provision"}))
def test_every_service_command_exists(service: str, production: dict[str, Any]) -> None:
    argv = command(service)
    if argv[0] == "granian":
        app = granian_cli.make_context("granian", argv[1:]).params["app"]  # unknown flags fail
        assert production["apps"][app], f"{service}: {app} does not import as a callable"
        return
    assert argv[:2] in (["python", "manage.py"], ["python3", "manage.py"]), (
        f"{service}: neither granian nor `python manage.py ...`: {argv}"
    )
    name, args = argv[2], argv[3:]
    assert name in production["commands"], f"{service}: no management command {name!r}"
    parser = load_command_class(production["commands"][name], name).create_parser("manage.py", name)
    parser.parse_args(args)  # CommandError on an unknown argument or choice


def test_the_web_server_has_the_shape_make_run_and_the_benches_use() -> None:
    """The image's and compose's granian: health_project.serving's interface, application
    and workers, which devrun and bench/ import, so a measured shape is the shipped one."""
    keys = ("interface", "app", "workers", "blocking_threads")
    shipped = granian_args(host="0.0.0.0", port=8000)  # noqa: S104 - as the image listens
    expected = granian_cli.make_context("granian", shipped).params
    for where, argv in (("Dockerfile CMD", exec_form("CMD")), ("compose web", command("web"))):
        params = granian_cli.make_context("granian", argv[1:]).params
        shape = tuple(params[key] for key in keys)
        assert shape == tuple(expected[key] for key in keys), f"{where}: {shape}"


def test_run_consumer_names_a_registered_consumer() -> None:
    consumers = [command(s)[3:] for s in app_services() if command(s)[2:3] == ["run_consumer"]]
    assert consumers, "no service runs a bus consumer"
    names = processes()
    for args in consumers:
        assert args[0] in names, f"run_consumer {args[0]!r}: not in core.consumers' registry"
    assert {args[0] for args in consumers} == set(names), "a registered consumer has no service"


def test_processes_start_after_provision_which_waits_for_healthy_backing_services() -> None:
    provision = services()["provision"]
    assert command("provision")[2:] == ["provision"]
    assert provision["restart"] == "no"
    assert provision["depends_on"] == {
        name: {"condition": "service_healthy"} for name in sorted(BACKING_SERVICES)
    }
    for name in BACKING_SERVICES:
        assert services()[name]["healthcheck"]["test"], f"{name} has no healthcheck"
    for name in PROCESS_SERVICES:
        depends = services()[name]["depends_on"]
        assert depends["provision"] == {"condition": "service_completed_successfully"}, name


def test_only_web_has_the_http_healthcheck_and_it_probes_healthz() -> None:
    for name in PROCESS_SERVICES - {"web"} | {"provision"}:
        assert services()[name]["healthcheck"] == {"disable": True}, name
    web_check = services()["web"]["healthcheck"]["test"]
    assert web_check == ["CMD", *exec_form("HEALTHCHECK")]
    assert web_check[-1] == "deploy/healthcheck.py"


def test_the_healthcheck_probe_gets_200_from_healthz_as_configured(
    production: dict[str, Any],
) -> None:
    probe = load_script(DEPLOY / "healthcheck.py")
    url = urlsplit(probe.URL)
    assert url.path == "/healthz"
    web = granian_cli.make_context("granian", command("web")[1:]).params
    assert url.port == web["port"]
    assert f"{web['port']}:{web['port']}" in services()["web"]["ports"]
    allowed = resolved_environment("web")["DJANGO_ALLOWED_HOSTS"]
    with override_settings(
        ALLOWED_HOSTS=[h.strip() for h in allowed.split(",")], SECURE_SSL_REDIRECT=True
    ):
        response = Client().get(
            url.path, HTTP_HOST=probe.host_header(allowed), HTTP_X_FORWARDED_PROTO="https"
        )
    assert response.status_code == 200


# --- Environment variables -------------------------------------------------------------------


def test_every_app_service_writes_metrics_to_a_fresh_tmpfs_and_serves_them() -> None:
    """Each container's processes share a multiprocess folder that is empty at every start
    (docs/phase-3/metrics.md); all but web serve it on the port the scrape config names."""
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    for name in app_services():
        folder = environment(services()[name])["PROMETHEUS_MULTIPROC_DIR"]
        assert folder in services()[name].get("tmpfs", []), name
        if name in PROCESS_SERVICES - {"web"}:
            argv = command(name)
            port = int(argv[argv.index("--metrics-port") + 1])
            assert jobs[name]["dns_sd_configs"][0] == {"names": [name], "type": "A", "port": port}
    assert jobs["web"]["static_configs"][0]["targets"] == ["web:8000"]


def test_app_services_share_one_environment() -> None:
    first = environment(services()["web"])
    for name in app_services():
        assert environment(services()[name]) == first, f"{name} is configured differently"


def test_every_app_variable_is_one_production_settings_read(production: dict[str, Any]) -> None:
    read = set(production["read"])
    assert {"DATABASE_URL", "NATS_URL", "DJANGO_SECRET_KEY"} <= read  # the probe works
    for name in app_services():
        unknown = set(environment(services()[name])) - read
        assert not unknown, f"{name}: settings never read {sorted(unknown)}"
    unknown_in_image = set(final_stage_env()) - read - INTERPRETER_VARIABLES
    assert not unknown_in_image, f"Dockerfile ENV: settings never read {sorted(unknown_in_image)}"


def test_backing_services_get_only_their_images_variables() -> None:
    for name in BACKING_SERVICES:
        allowed = IMAGE_VARIABLES.get(name, set())
        unknown = set(environment(services()[name])) - allowed
        assert not unknown, f"{name}: {sorted(unknown)} are not variables of its image"


def test_env_example_documents_exactly_what_compose_interpolates(
    production: dict[str, Any],
) -> None:
    documented = set(env_example())
    interpolated = interpolated_names(COMPOSE.read_text())
    assert interpolated == documented, (
        f"only in compose: {sorted(interpolated - documented)}; "
        f"only in .env.example: {sorted(documented - interpolated)}"
    )
    known = set(production["read"]).union(*IMAGE_VARIABLES.values())
    assert documented <= known, f"read by nobody: {sorted(documented - known)}"


def test_secrets_are_never_in_the_files() -> None:
    example = env_example()
    for name in SECRETS & set(example):
        assert example[name] == "", f".env.example gives {name} a value: leave it empty"
    for service in services().values():
        for name, value in environment(service).items():
            if name in SECRETS:
                assert interpolated_names(value), f"{name} is written into compose.yaml"
    for name in SECRETS - {"OURA_CLIENT_SECRET_PREVIOUS"}:
        # Required ones: compose refuses to start while they are empty.
        uses = [m for m in _INTERPOLATION.finditer(COMPOSE.read_text()) if m["name"] == name]
        assert all(m["op"] == ":?" for m in uses), f"{name} must be ${{{name}:?...}}"


def test_connection_variables_point_at_the_compose_services() -> None:
    env = resolved_environment("web")
    values = operator_values()

    db = urlsplit(env["DATABASE_URL"])
    pg = environment(services()["postgres"])
    assert db.hostname == "postgres"
    assert db.port == 5432
    assert db.username == pg["POSTGRES_USER"]
    assert db.path.lstrip("/") == pg["POSTGRES_DB"]
    assert db.password == values["POSTGRES_PASSWORD"]

    s3 = urlsplit(env["S3_ENDPOINT_URL"])
    minio = environment(services()["minio"])
    assert (s3.hostname, s3.port) == ("minio", 9000)
    assert env["S3_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
    assert env["S3_SECRET_ACCESS_KEY"] == values["MINIO_ROOT_PASSWORD"]
    # SSE-S3 on MinIO needs its KMS key.
    assert env["S3_SSE"] != "AES256" or "MINIO_KMS_SECRET_KEY" in minio

    seeds = [urlsplit(u.strip()) for u in env["NATS_URL"].split(",")]
    assert seeds
    for seed in seeds:
        assert seed.scheme == "nats"
        assert seed.hostname in NATS_NODES
        assert seed.port == 4222
    assert int(env["NATS_STREAM_REPLICAS"]) == len(NATS_NODES) == 3


# --- NATS cluster ----------------------------------------------------------------------------


def test_nats_is_a_three_node_jetstream_cluster_routing_to_each_other() -> None:
    volumes: set[str] = set()
    for node in NATS_NODES:
        flags = nats_flags(node)
        assert flags.get("server_name") == node
        assert flags.get("jetstream") == "true", f"{node}: JetStream off"
        assert flags.get("cluster_name") == "health"
        assert urlsplit(flags["cluster"]).port == 6222
        routes = {urlsplit(r.strip()) for r in flags["routes"].split(",")}
        assert {(r.hostname, r.port) for r in routes} >= {
            (other, 6222) for other in NATS_NODES if other != node
        }, f"{node} does not route to every other node"
        store = flags["store_dir"]
        mounts = [v for v in services()[node]["volumes"] if v.split(":")[1] == store]
        assert len(mounts) == 1, f"{node}: its JetStream store {store} is not on a volume"
        volumes.add(mounts[0].split(":")[0])
        assert "8222/healthz" in " ".join(services()[node]["healthcheck"]["test"])
        assert flags.get("http_port") == "8222"
    assert len(volumes) == 3, "nodes share a volume"
    assert volumes <= set(compose()["volumes"])


# --- Dockerfile ------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_with_a_slim_final_stage_without_compilers() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    assert final_stage()[0][1].split()[0] == "python:3.11-slim"
    final_text = " ".join(rest for _, rest in final_stage())
    for word in COMPILERS:
        assert not re.search(rf"(?<![\w.+-]){re.escape(word)}(?![\w.+-])", final_text), word
    builder_copies = [rest for kw, rest in final_stage() if kw == "COPY" and "--from=" in rest]
    assert builder_copies, "the final stage copies nothing from the builder"
    assert all(rest.split()[1] == "/opt/venv" for rest in builder_copies), builder_copies


def test_dockerfile_final_stage_runs_as_a_non_root_user() -> None:
    users = [rest for kw, rest in final_stage() if kw == "USER"]
    assert users, "no USER in the final stage"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    creates = " ".join(rest for kw, rest in final_stage() if kw == "RUN")
    assert re.search(rf"useradd\b[^&;]*\b{re.escape(user)}\b", creates), f"{user} is never created"


def test_dockerfile_collects_static_files_at_build() -> None:
    keywords = [kw for kw, _ in final_stage()]
    runs = [rest for kw, rest in final_stage() if kw == "RUN"]
    assert "RUN sh deploy/collectstatic.sh" in [f"RUN {r}" for r in runs]
    assert "manage.py collectstatic --noinput" in (DEPLOY / "collectstatic.sh").read_text()
    # Collected before switching user, so the files are not writable by the app.
    collect = next(i for i, (kw, r) in enumerate(final_stage()) if "collectstatic" in r)
    assert collect < keywords.index("USER")


def test_build_time_collectstatic_needs_no_server_and_no_outside_variable() -> None:
    result = subprocess.run(
        ["sh", str(DEPLOY / "collectstatic.sh"), "--dry-run"],
        cwd=PROJECT,
        env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": "/tmp"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"\d+ static files? copied", result.stdout), result.stdout[-500:]


def test_dockerfile_default_command_is_the_web_service_and_entrypoint_execs_it() -> None:
    assert exec_form("CMD") == command("web")
    assert exec_form("ENTRYPOINT") == ["tini", "--"]
    assert "8000" in [rest for kw, rest in final_stage() if kw == "EXPOSE"]


def test_dockerignore_excludes_dev_folders_and_keeps_what_the_image_needs() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for excluded in (".venv", ".devstack", ".devstack-*", "bench/results", ".pytest_cache",
                     ".mypy_cache", ".ruff_cache", ".env", ".git"):  # fmt: skip
        assert excluded in patterns, f"{excluded} is sent to the build"

    def ignored(path: str) -> bool:
        result = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            pattern = pattern.lstrip("!").removeprefix("**/")
            if fnmatch.fnmatch(path, pattern) or any(
                fnmatch.fnmatch(part, pattern) for part in path.split("/")
            ):
                result = not negate
        return result

    from django.apps import apps

    needed = ["manage.py", "requirements.txt", "templates", "deploy/collectstatic.sh",
              "deploy/healthcheck.py", "health_project/settings.py"]  # fmt: skip
    needed += [
        str(Path(config.path).relative_to(PROJECT))
        for config in apps.get_app_configs()
        if Path(config.path).is_relative_to(PROJECT)
        and not Path(config.path).is_relative_to(sys.prefix)  # installed apps: in the venv
    ]
    for path in needed:
        assert (PROJECT / path).exists(), path
        assert not ignored(path), f"{path} is needed in the image but ignored"


# --- check --deploy with the compose values --------------------------------------------------


def test_check_deploy_passes_with_the_compose_values_and_no_server() -> None:
    env = container_env("web")
    assert env["HEALTH_ENV"] == "production"
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_management_commands_are_the_same_in_tests_and_production(
    production: dict[str, Any],
) -> None:
    # The in-process parsers above come from the test settings' apps; make sure they agree.
    assert production["commands"] == get_commands()
