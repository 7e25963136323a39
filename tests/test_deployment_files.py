"""Static checks of the deployment files: Containerfile, build-context ignores, compose.yaml.

No container engine runs here, so these tests parse the files and assert the properties a
production deployment relies on.
"""

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN", re.IGNORECASE)
# `${NAME:?message}`: Compose refuses to start unless NAME is set in the environment.
REQUIRED_INTERPOLATION = re.compile(r"\$\{[A-Z_][A-Z0-9_]*:\?[^}]*\}")


def containerfile() -> list[tuple[str, str]]:
    """The Containerfile as (INSTRUCTION, arguments) pairs, comments dropped, `\\` lines joined."""
    lines = (ROOT / "Containerfile").read_text().splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    text = re.sub(r"\\\n", " ", text)
    pairs = []
    for line in text.splitlines():
        if line.strip():
            instruction, _, args = line.strip().partition(" ")
            pairs.append((instruction.upper(), args.strip()))
    return pairs


def final_stage() -> list[tuple[str, str]]:
    instructions = containerfile()
    last_from = max(i for i, (instruction, _) in enumerate(instructions) if instruction == "FROM")
    return instructions[last_from + 1 :]


def args_of(instructions: list[tuple[str, str]], name: str) -> list[str]:
    return [args for instruction, args in instructions if instruction == name]


def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def service(name: str) -> dict:
    return compose()["services"][name]


def network_names(svc: dict) -> list[str]:
    networks = svc.get("networks", [])
    return list(networks) if isinstance(networks, dict) else networks


def healthcheck_command(svc: dict) -> str:
    test = svc["healthcheck"]["test"]
    return test if isinstance(test, str) else " ".join(test)


# --- Containerfile ----------------------------------------------------------------------


def test_containerfile_is_multi_stage_on_a_slim_python_base():
    images = [
        next(word for word in args.split() if not word.startswith("--"))
        for args in args_of(containerfile(), "FROM")
    ]
    assert len(images) >= 2
    assert all(image.startswith("python:3.11-slim") for image in images), images
    # The venv's python is a symlink into the base image: builder and final must match.
    assert len(set(images)) == 1, images
    stages = {
        args.split()[-1] for args in args_of(containerfile(), "FROM") if " AS " in args.upper()
    }
    sources = re.findall(r"--from=(\S+)", " ".join(args_of(containerfile(), "COPY")))
    assert sources and set(sources) <= stages, (sources, stages)


def test_final_image_runs_as_non_root_user():
    users = args_of(final_stage(), "USER")
    assert users, "the final stage never switches away from root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}


def test_final_image_installs_from_the_lock_file():
    instructions = containerfile()
    assert any("uv.lock" in args for args in args_of(instructions, "COPY"))
    syncs = [args for args in args_of(instructions, "RUN") if "uv sync" in args]
    assert syncs
    assert all("--frozen" in args and "--no-dev" in args for args in syncs), syncs
    assert any(
        "--from=builder" in args and "/app/.venv" in args for args in args_of(final_stage(), "COPY")
    )


def test_final_stage_has_no_build_tools_or_secrets():
    for run in args_of(final_stage(), "RUN"):
        words = set(shlex.split(run))
        assert not words & {"gcc", "g++", "build-essential", "make", "uv"}, run
        assert "pip" not in words and "pip3" not in words, run
    # ENV and ARG values end up in the image's metadata and history: never put secrets there.
    for instruction, args in containerfile():
        if instruction in {"ENV", "ARG"}:
            words = shlex.split(args)  # `KEY=value ...`, `KEY value` or a bare `ARG KEY`
            names = [word.split("=")[0] for word in words if "=" in word] or words[:1]
            assert not any(SECRET_NAME.search(name) for name in names), args


def test_final_image_serves_keel_under_granian_with_a_liveness_healthcheck():
    stage = final_stage()
    assert json.loads(args_of(stage, "CMD")[-1]) == ["keel", "serve"]
    assert "/health/live" in args_of(stage, "HEALTHCHECK")[-1]
    assert "8000" in args_of(stage, "EXPOSE")[-1].split()
    env = " ".join(args_of(stage, "ENV"))
    # granian must listen on all interfaces, or nothing outside the container reaches it.
    assert "HOST=0.0.0.0" in env and "PORT=8000" in env
    assert "APP_ENV=production" in env


@pytest.mark.parametrize("name", [".containerignore", ".dockerignore"])
def test_build_context_leaves_out_git_venvs_tests_and_dotenv(name):
    ignored = set((ROOT / name).read_text().splitlines())
    assert {".git", ".venv", ".env", "tests/", "var/"} <= ignored
    assert (ROOT / name).read_text() == (ROOT / ".containerignore").read_text()


# --- compose.yaml -----------------------------------------------------------------------


def test_compose_has_app_worker_migrate_postgres_and_valkey():
    spec = compose()
    assert "version" not in spec  # obsolete in the Compose spec
    assert {"app", "worker", "migrate", "postgres", "valkey"} <= set(spec["services"])


def test_postgres_is_16_and_valkey_is_valkey():
    assert service("postgres")["image"].startswith("postgres:16")
    assert service("valkey")["image"].startswith("valkey/valkey:")


def test_databases_publish_no_host_ports_and_sit_on_an_internal_network():
    networks = compose()["networks"]
    for name in ("postgres", "valkey"):
        svc = service(name)
        assert "ports" not in svc, name
        assert network_names(svc), f"{name} would join the default, non-internal network"
        for network in network_names(svc):
            assert (networks[network] or {}).get("internal") is True, (name, network)


def test_app_publishes_a_port_and_waits_for_healthy_dependencies():
    app = service("app")
    assert any(str(port).endswith(":8000") for port in app["ports"])
    assert "/health/live" in healthcheck_command(app)
    assert app["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "valkey": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }
    worker = service("worker")
    assert "ports" not in worker
    for dependency in ("postgres", "valkey"):
        assert worker["depends_on"][dependency]["condition"] == "service_healthy"
        assert service("migrate")["depends_on"][dependency]["condition"] == "service_healthy"


def test_stateful_services_have_healthchecks_and_named_volumes():
    declared = set(compose()["volumes"])
    assert "pg_isready" in healthcheck_command(service("postgres"))
    assert "ping" in healthcheck_command(service("valkey"))
    for name in ("postgres", "valkey"):
        volumes = service(name)["volumes"]
        assert volumes, name
        assert all(volume.split(":")[0] in declared for volume in volumes), volumes


def test_worker_runs_keel_worker_and_migrate_runs_db_upgrade():
    app, worker, migrate = service("app"), service("worker"), service("migrate")
    assert worker["command"] == ["keel", "worker"]
    assert migrate["command"] == ["keel", "db", "upgrade"]
    assert migrate["restart"] == "no"  # a one-shot job; unquoted `no` would parse as False
    assert app["image"] == worker["image"] == migrate["image"]
    assert app["environment"] == worker["environment"] == migrate["environment"]


def test_compose_holds_no_secrets():
    for name, svc in compose()["services"].items():
        environment = svc.get("environment", {})
        if isinstance(environment, list):
            environment = dict(item.partition("=")[::2] for item in environment)
        for key, value in environment.items():
            value = str(value)
            if SECRET_NAME.search(key):
                assert REQUIRED_INTERPOLATION.fullmatch(value), (name, key, value)
            password_in_url = re.search(r"://[^/:@]+:([^@]+)@", value)
            if password_in_url:
                assert REQUIRED_INTERPOLATION.fullmatch(password_in_url[1]), (name, key)
    assert "SECRET_KEY" in service("app")["environment"]


def test_compose_asks_for_the_sites_public_address():
    """Production refuses to start without PUBLIC_URL; Compose says so before it starts."""
    assert REQUIRED_INTERPOLATION.fullmatch(service("app")["environment"]["PUBLIC_URL"])
