"""The rendered compose.yaml is accepted, and read as we mean it, by the real Compose v2.

`docker compose config` parses, interpolates and validates a file without an engine.
Without Compose v2 these tests skip, unless PIXSIM_HOST_E2E=required (CI), where a
missing Compose is a failure: a skipped check there would prove nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from unit_helpers import (
    SECRET_NAMES,
    MakeHost,
    compose_unescape,
    read_config,
    read_secrets,
    run_cli,
)

from pixsim_host.config import parse_config
from pixsim_host.envfile import generate_secrets, write_secrets
from pixsim_host.errors import HostError
from pixsim_host.hostdir import HostDir
from pixsim_host.render import render_host

HOST_ID = "0d9e6c1a-3b7f-4e2d-8a5c-9f1b2e3d4c5a"
SPECIAL_NAME = "Bob's \"$HOME\" {{ x }} #1: ${PATH} $$ 😀 - [a] &b *c"
SPECIAL_DESCRIPTION = "line one\nline two: ${SECRET_KEY} `cmd` 'q' \"dq\" # not a comment\t\\n"


def _compose_env() -> dict[str, str]:
    # A secret (or COMPOSE_*) in the test's own environment would override .env.
    return {k: v for k, v in os.environ.items()
            if k not in SECRET_NAMES and not k.startswith("COMPOSE_")}


def _find_compose() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    try:
        result = subprocess.run([docker, "compose", "version", "--short"], capture_output=True,
                                text=True, timeout=30, env=_compose_env())
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0 or not result.stdout.strip().lstrip("v").startswith("2."):
        return None
    return [docker, "compose"]


@pytest.fixture(scope="module")
def compose() -> list[str]:
    found = _find_compose()
    if found is None:
        message = "Docker Compose v2 (`docker compose`) is not installed"
        if os.environ.get("PIXSIM_HOST_E2E") == "required":
            pytest.fail(f"{message}, and PIXSIM_HOST_E2E=required")
        pytest.skip(message)
    return found


def _config(compose: list[str], host: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = [*compose, "-f", "compose.yaml", "--env-file", ".env", "config", *extra]
    return subprocess.run(args, cwd=host, capture_output=True, text=True, timeout=60,
                          env=_compose_env())


def _unescape(node: Any) -> Any:
    if isinstance(node, str):
        return compose_unescape(node)
    if isinstance(node, list):
        return [_unescape(item) for item in node]
    if isinstance(node, dict):
        return {key: _unescape(value) for key, value in node.items()}
    return node


def _resolved(compose: list[str], host: Path) -> dict[str, Any]:
    """The values the containers get: Compose's model after YAML, merge keys, interpolation.

    `config` prints a file that is itself valid Compose, so it escapes each literal '$'
    of a value as '$$' again; undoing that once gives the value a container sees.
    """
    result = _config(compose, host, "--format", "json")
    assert result.returncode == 0, result.stderr
    data = _unescape(json.loads(result.stdout))
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("model", ["self", "friend", "shared"])
def test_compose_accepts_the_file_for_every_model(
    compose: list[str], make_host: MakeHost, model: str
) -> None:
    args = ["--model", model] + (["--bind", "127.0.0.1"] if model == "friend" else [])
    host = make_host(*args, name=f"{model} host")
    quiet = _config(compose, host, "--quiet")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == "" and quiet.stderr == "", quiet.stderr  # not even a warning

    config = read_config(host)
    secrets = read_secrets(host)
    data = _resolved(compose, host)
    assert data["name"] == f"pixsim-{model}-host"
    services = data["services"]
    assert set(services) == {"db", "redis", "backend", "worker"}  # the reference backend's worker
    backend = services["backend"]
    env = backend["environment"]
    assert env["SERVER_ID"] == env["PIXSIM_HOST_ID"] == config["host_id"]
    assert env["DEBUG"] == "false"
    assert json.loads(env["PLUGIN_ALLOWLIST"]) == [] == json.loads(env["PLUGIN_DENYLIST"])
    # The secrets reach the containers from .env by interpolation.
    assert env["SECRET_KEY"] == secrets["SECRET_KEY"]
    assert env["DATABASE_URL"] == (
        f"postgresql://pixsim:{secrets['POSTGRES_PASSWORD']}@db:5432/pixsim")
    assert env["REDIS_URL"] == f"redis://:{secrets['REDIS_PASSWORD']}@redis:6379/0"
    assert services["db"]["environment"]["POSTGRES_PASSWORD"] == secrets["POSTGRES_PASSWORD"]
    # The redis command keeps its '$' for the shell in the container, not for Compose.
    assert services["redis"]["command"][-1].startswith(
        'exec redis-server --requirepass "$REDIS_PASSWORD" ')

    bind = "127.0.0.1" if model in ("self", "friend") else "0.0.0.0"
    (port,) = backend["ports"]
    assert (port["target"], str(port["published"]), port["host_ip"]) == (8000, "18700", bind)
    for name in ("db", "redis"):
        assert "ports" not in services[name]
        assert services[name]["healthcheck"]["test"][0] == "CMD"
    assert backend["depends_on"]["db"]["condition"] == "service_healthy"
    assert backend["depends_on"]["redis"]["condition"] == "service_healthy"
    for section in (*services.values(), *data["volumes"].values(), *data["networks"].values()):
        assert section["labels"]["org.pixsim-host.host-id"] == config["host_id"]
        assert section["labels"]["org.pixsim-host.model"] == model


def test_compose_reads_a_name_full_of_special_characters_back_unchanged(
    compose: list[str], tmp_path: Path
) -> None:
    host = tmp_path / "special"
    created = run_cli("init", str(host), "--yes", "--name", SPECIAL_NAME,
                      "--description", SPECIAL_DESCRIPTION, "--port", "18731")
    assert created.returncode == 0, str(created)
    quiet = _config(compose, host, "--quiet")
    assert quiet.returncode == 0, quiet.stderr
    data = _resolved(compose, host)
    env = data["services"]["backend"]["environment"]
    assert env["SERVER_NAME"] == SPECIAL_NAME
    assert env["SERVER_DESCRIPTION"] == SPECIAL_DESCRIPTION
    assert data["services"]["db"]["labels"]["org.pixsim-host.host-name"] == SPECIAL_NAME
    assert data["volumes"]["db-data"]["labels"]["org.pixsim-host.host-name"] == SPECIAL_NAME
    assert data["name"] == "pixsim-bob-s-home-x-1-path-a-b-c"


def test_compose_refuses_to_run_without_the_hosts_env(
    compose: list[str], make_host: MakeHost, tmp_path: Path
) -> None:
    # Without .env, the secret references stop Compose instead of becoming empty passwords.
    host = make_host()
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(host / "compose.yaml", bare / "compose.yaml")
    result = subprocess.run([*compose, "-f", "compose.yaml", "config", "--quiet"], cwd=bare,
                            capture_output=True, text=True, timeout=60, env=_compose_env())
    assert result.returncode != 0
    assert "is not set; pixsim-host reads it from this host's .env" in result.stderr


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compose-property")
    write_secrets(root / ".env", generate_secrets(), HOST_ID)
    return root


text = st.one_of(
    st.text(max_size=40),
    st.lists(st.sampled_from(["$", "$$", "${X}", "$X", "{{", "'", '"', ": ", " #", "\\", "\n",
                              "\t", "😀", "\u2028", "\x85", "é", "a", "Z", "9", " ", "-"]),
             max_size=16).map(lambda parts: "a" + "".join(parts) + "z"),
)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(name=text, description=text)
def test_compose_reads_arbitrary_names_back_unchanged(
    compose: list[str], scratch: Path, name: str, description: str
) -> None:
    try:
        config = parse_config({"host_id": HOST_ID, "name": name, "description": description},
                              source="the test values")
    except HostError:
        return  # refusals are covered by test_render_properties
    files = render_host(HostDir(scratch), config).files
    (scratch / "compose.yaml").write_text(files["compose.yaml"], encoding="utf-8")
    data = _resolved(compose, scratch)
    env = data["services"]["backend"]["environment"]
    assert env["SERVER_NAME"] == name
    assert env["SERVER_DESCRIPTION"] == description
    assert data["services"]["backend"]["labels"]["org.pixsim-host.host-name"] == name
