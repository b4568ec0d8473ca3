"""The templates ship inside the wheel: an installed pixsim-host renders without a checkout.

Builds the wheel from this checkout, installs it with --no-deps into a fresh venv whose
only other packages are the runtime dependencies of the interpreter running the tests
(added through a .pth file, after the venv's own site-packages), and runs the installed
console script from a directory outside the checkout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import yaml

CHECKOUT = Path(__file__).resolve().parents[2]


def _run(args: list[str], cwd: Path | None = None,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=cwd, env=env)
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


def test_an_installed_wheel_renders_from_its_packaged_templates(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(CHECKOUT)])
    (wheel,) = dist.glob("pixsim_host-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert {"pixsim_host/templates/compose.yaml.j2", "pixsim_host/templates/frontend.env.j2"} <= names
    # The JSON Schemas of the --json documents (docs/json.md) ship with the code they describe.
    assert {"pixsim_host/schemas/common.json", "pixsim_host/schemas/error.json",
            "pixsim_host/schemas/status.json"} <= names

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
          "--no-index", "--quiet", str(wheel)])
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
                .stdout.strip())
    # The runtime dependencies (typer, jinja2, pydantic, ...) from the test interpreter.
    # Listed after the venv's own site-packages, so pixsim_host is the wheel's copy.
    (site / "runtime-deps.pth").write_text(sysconfig.get_path("purelib") + "\n", encoding="utf-8")

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIXSIM_HOST_DIR")}
    where = _run([str(python), "-c",
                  "import pixsim_host.render as r; print(r.__file__); print(r.packaged_templates())"],
                 cwd=outside, env=env).stdout.split()
    assert Path(where[0]).is_relative_to(env_dir), where
    assert Path(where[1]).is_relative_to(env_dir), where

    script = env_dir / "bin" / "pixsim-host"
    assert script.is_file()
    result = _run([str(script), "init", "wheel-host", "--yes", "--name", "Wheel Host",
                   "--port", "18730"], cwd=outside, env=env)
    assert "Created host 'Wheel Host'" in result.stdout
    compose = yaml.safe_load((outside / "wheel-host" / "compose.yaml").read_text(encoding="utf-8"))
    assert compose["name"] == "pixsim-wheel-host"
    assert set(compose["services"]) == {"db", "redis", "backend", "worker"}
    assert (outside / "wheel-host" / "frontend.env").read_text(encoding="utf-8").endswith(
        "VITE_BACKEND_URL='http://127.0.0.1:18730'\n"
        "VITE_WS_URL='ws://127.0.0.1:18730/api/v1/ws/generations'\n")
