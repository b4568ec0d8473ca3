"""Static checks of the image contract and of the stdlib-only rule (no Docker needed)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from rb_support import SRC

PACKAGE = SRC / "pixsim_reference_backend"


def test_package_imports_only_the_standard_library() -> None:
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top == "pixsim_reference_backend", (
                    f"{path.name} imports {name}, which is not in the standard library")


def test_dockerfile_contract() -> None:
    text = (PACKAGE / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.strip().startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    assert 'CMD ["python", "-m", "pixsim_reference_backend"]' in lines  # serve
    assert "migrate" in text and "worker" in text  # the same image runs the other commands
    assert "EXPOSE 8000" in lines
    assert "WORKDIR /app" in lines
    assert any(line.startswith("COPY") and "/app/pixsim_reference_backend" in line
               for line in lines)
    assert any(line.startswith("USER ") and line != "USER root" for line in lines)
    assert "pip" not in text
    assert "/data" in text and "/srv/pixsim/external-plugins" in text


SERVICE_FIELDS = {"id", "type", "module", "args", "depends_on", "auto_start", "enabled",
                  "settings"}


def service_command(declaration: dict[str, object]) -> list[str]:
    """The rule the package README states: ``module:app`` is ASGI, anything else
    ``python -m <module> <args...>``."""
    module = str(declaration["module"])
    assert ":" not in module, "the reference backend declares no ASGI application"
    return [sys.executable, "-m", module, *[str(a) for a in declaration["args"]]]  # type: ignore[attr-defined]


def test_services_are_declared_like_pixsim7s() -> None:
    found = {}
    for path in sorted((PACKAGE / "services").glob("*/pixsim.service.json")):
        declaration = json.loads(path.read_text())
        assert declaration["id"] == path.parent.name
        assert set(declaration) >= SERVICE_FIELDS, path
        found[declaration["id"]] = declaration
    assert set(found) == {"main-api", "generation-api", "worker"}
    api, worker, generation = found["main-api"], found["worker"], found["generation-api"]
    # A second HTTP service, declared as PixSim7 declares its generation-api.
    assert (generation["type"], generation["module"], generation["args"]) == (
        "backend", "pixsim_reference_backend", ["serve-generation"])
    assert generation["ports"] == [{"name": "Generation API", "env": "GENERATION_API_PORT",
                                    "default_port": 8001}]
    assert generation["health_endpoint"] == "/health"
    assert (api["type"], api["module"], api["args"]) == ("backend", "pixsim_reference_backend",
                                                         ["serve"])
    assert api["ports"] == [{"name": "Backend API", "env": "PORT", "default_port": 8000}]
    assert {"key": "port", "env_export": "PORT"} in api["settings"]
    assert (worker["type"], worker["module"], worker["args"]) == (
        "worker", "pixsim_reference_backend", ["worker"])
    assert "ports" not in worker
    for declaration in found.values():
        for setting in declaration["settings"]:
            assert set(setting) >= {"key", "env_export"}


def test_each_declared_command_is_a_real_command(tmp_path: Path) -> None:
    # Run with no settings at all: a real command reads them and fails on them (exit 2),
    # an unknown one is refused with the usage line before it reads anything.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(SRC),
           "PIXSIM_HOME": str(tmp_path)}
    for path in (PACKAGE / "services").glob("*/pixsim.service.json"):
        argv = service_command(json.loads(path.read_text()))
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
        assert done.returncode == 2, (argv, done.stderr)
        assert "settings error: DATABASE_URL: required" in done.stderr
        assert "usage" not in done.stderr
    for extra in (["migrate"], []):
        done = subprocess.run([sys.executable, "-m", "pixsim_reference_backend", *extra], env=env,
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 2 and "settings error: DATABASE_URL" in done.stderr
    wrong = subprocess.run([sys.executable, "-m", "pixsim_reference_backend", "serve", "--now"],
                           env=env, capture_output=True, text=True, timeout=30)
    assert wrong.returncode == 2
    assert wrong.stderr.splitlines() == [
        "usage: python -m pixsim_reference_backend [serve|serve-generation|migrate|worker]",
        "unknown arguments: serve --now"]
