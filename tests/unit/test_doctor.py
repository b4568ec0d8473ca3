"""``doctor``: each condition it checks, broken on purpose, fails (with a fix hint) while the
others still pass; exit code 1 on any failure; ``--json`` for scripts.

The engine is pointed at a socket that does not exist, so these tests need no Docker; the
engine-backed checks (images present, health when up, exit 0 on a good host) run against a
real engine in tests/e2e/test_hosts_e2e.py.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_hosts_fakes import fake_backend, held_port
from unit_helpers import assert_clean_failure, clean_env, run_cli

NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent.sock"}
LOCAL = ("config", "secrets", "rendered", "port", "disk", "registry")


def doctor(*args: str, cwd: Path | None = None) -> tuple[int, dict[str, dict[str, str]], str]:
    result = run_cli("doctor", "--json", *args, cwd=cwd, env=clean_env(**NO_ENGINE))
    assert "Traceback" not in result.output, str(result)
    data = json.loads(result.stdout)
    checks = {check["name"]: check for check in data["checks"]}
    assert data["health"] == ("healthy" if result.returncode == 0 else "unhealthy")
    return result.returncode, checks, result.stderr


def make(tmp_path: Path, name: str = "doc", *args: str) -> Path:
    host = tmp_path / name
    result = run_cli("init", str(host), "--yes", "--name", name, *args)  # a free, unclaimed port
    assert result.returncode == 0, str(result)
    return host


def edit_config(host: Path, **changes: Any) -> None:
    path = host / "pixsim-host.yaml"
    data = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("__")
        for part in parents:
            node = node[part]
        node[last] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def assert_only_fails(checks: dict[str, dict[str, str]], *failing: str) -> None:
    for name in LOCAL:
        expected = "fail" if name in failing else "pass"
        if checks[name]["status"] != expected:
            raise AssertionError(f"{name}: expected {expected}, got {checks[name]}")
    for name in failing:
        assert checks[name]["hint"], f"{name} fails without saying how to fix it"


def test_a_fresh_host_passes_everything_but_the_missing_engine(tmp_path: Path) -> None:
    host = make(tmp_path)
    code, checks, stderr = doctor("--dir", str(host))
    assert code == 1
    assert checks["engine"]["status"] == "fail" and "start Docker" in checks["engine"]["hint"]
    assert checks["images"]["status"] == "skip" and checks["health"]["status"] == "skip"
    assert_only_fails(checks)
    assert checks["permissions"]["status"] == "pass", checks["permissions"]
    assert stderr.startswith(f"Error: 1 of {len(checks)} checks failed (engine)")
    table = run_cli("doctor", "--dir", str(host), env=clean_env(**NO_ENGINE))
    assert "FAIL  engine" in table.stdout and "fix: start Docker" in table.stdout
    assert "ok    secrets" in table.stdout
    assert_clean_failure(table)


def test_secrets_readable_by_others(tmp_path: Path) -> None:
    host = make(tmp_path)
    (host / ".env").chmod(0o644)
    _, checks, _ = doctor("--dir", str(host))
    assert_only_fails(checks, "secrets")
    assert checks["secrets"]["hint"] == f"chmod 600 {host / '.env'}"


def test_secrets_missing_or_incomplete(tmp_path: Path) -> None:
    host = make(tmp_path)
    env = host / ".env"
    env.write_text("\n".join(line for line in env.read_text().splitlines()
                             if not line.startswith("SECRET_KEY")) + "\n")
    _, checks, _ = doctor("--dir", str(host))
    assert_only_fails(checks, "secrets")
    assert "SECRET_KEY" in checks["secrets"]["message"]
    env.unlink()
    _, checks, _ = doctor("--dir", str(host))
    assert_only_fails(checks, "secrets")
    assert "missing" in checks["secrets"]["message"]


def test_rendered_files_edited_or_stale(tmp_path: Path) -> None:
    host = make(tmp_path)
    with (host / "compose.yaml").open("a") as handle:
        handle.write("# edited by hand\n")
    _, checks, _ = doctor("--dir", str(host))
    assert_only_fails(checks, "rendered")
    assert "compose.yaml differs" in checks["rendered"]["message"]
    assert "pixsim-host render" in checks["rendered"]["hint"]


def test_an_invalid_config_skips_what_depends_on_it(tmp_path: Path) -> None:
    host = make(tmp_path)
    (host / "pixsim-host.yaml").write_text("name: [unclosed\n")
    code, checks, _ = doctor("--dir", str(host))
    assert code == 1
    assert checks["config"]["status"] == "fail" and "YAML" in checks["config"]["message"]
    for name in ("rendered", "port", "images", "health"):
        assert checks[name]["status"] == "skip", checks[name]
    assert checks["secrets"]["status"] == "pass"


def test_backend_port_used_by_another_program(tmp_path: Path) -> None:
    host = make(tmp_path)
    port = int(yaml.safe_load((host / "pixsim-host.yaml").read_text())["backend"]["port"])
    with held_port(port):
        _, checks, _ = doctor("--dir", str(host))
    assert_only_fails(checks, "port")
    assert "in use by another program" in checks["port"]["message"]
    assert "config set backend.port" in checks["port"]["hint"]


def test_backend_port_held_by_this_host_passes_by_another_host_fails(tmp_path: Path) -> None:
    host = make(tmp_path)
    config = yaml.safe_load((host / "pixsim-host.yaml").read_text())
    with fake_backend(config["host_id"]) as backend:
        edit_config(host, backend__port=backend.port)
        run_cli("hosts", "add", str(host))  # keep the registry in step with the hand edit
        _, checks, _ = doctor("--dir", str(host))
        assert_only_fails(checks, "rendered")  # the hand edit left compose.yaml stale
        assert "held by this host's backend" in checks["port"]["message"]
        backend.server_id = str(uuid.uuid4())
        _, checks, _ = doctor("--dir", str(host))
        assert checks["port"]["status"] == "fail"
        assert f"another host ({backend.server_id})" in checks["port"]["message"]


def test_bind_address_this_machine_does_not_have(tmp_path: Path) -> None:
    host = make(tmp_path, "doc", "--model", "friend", "--bind", "192.0.2.123")
    _, checks, _ = doctor("--dir", str(host))
    assert_only_fails(checks, "port")
    assert "not an address of this machine" in checks["port"]["message"]


def test_port_claimed_by_another_registered_host(tmp_path: Path) -> None:
    host, other = make(tmp_path, "doc"), make(tmp_path, "other")
    registry_file = Path(os.environ["PIXSIM_HOST_HOME"]) / "hosts.json"
    data = json.loads(registry_file.read_text())
    ports = {entry["name"]: entry["port"] for entry in data["hosts"]}
    for entry in data["hosts"]:  # as if someone edited the other host to this port by hand
        if entry["name"] == "other":
            entry["port"] = ports["doc"]
    registry_file.write_text(json.dumps(data))
    edit_config(other, backend__port=ports["doc"])
    _, checks, _ = doctor("--dir", str(host))
    assert_only_fails(checks, "port", "registry")
    assert "also claimed by host 'other'" in checks["port"]["message"]
    assert "same port" in checks["registry"]["message"]


def test_registry_without_this_host_stale_or_damaged(tmp_path: Path) -> None:
    host = make(tmp_path)
    assert run_cli("hosts", "forget", "doc").returncode == 0
    _, checks, _ = doctor("--dir", str(host))
    assert_only_fails(checks, "registry")
    assert "not in the host registry" in checks["registry"]["message"]
    assert checks["registry"]["hint"] == f"run `pixsim-host hosts add {host.resolve()}`"

    assert run_cli("hosts", "add", str(host)).returncode == 0
    edit_config(host, name="renamed by hand")
    _, checks, _ = doctor("--dir", str(host))
    assert checks["registry"]["status"] == "fail" and "name" in checks["registry"]["message"]

    (Path(os.environ["PIXSIM_HOST_HOME"]) / "hosts.json").write_text("[]")
    _, checks, _ = doctor("--dir", str(host))
    assert checks["registry"]["status"] == "fail" and "damaged" in checks["registry"]["message"]


def test_a_host_whose_directory_is_gone_is_a_warning(tmp_path: Path) -> None:
    host, gone = make(tmp_path, "doc"), make(tmp_path, "gone")
    shutil.rmtree(gone)
    _, checks, _ = doctor("--dir", str(host))
    assert checks["registry"]["status"] == "warn" and "gone" in checks["registry"]["message"]
    assert "hosts forget" in checks["registry"]["hint"]


def test_disk_space_thresholds(tmp_path: Path) -> None:
    from pixsim_host.doctor import GIB, _free_check

    paths = [("here", tmp_path)]
    assert _free_check(paths, min_free=1, warn_free=2).status == "pass"
    low = _free_check(paths, min_free=1, warn_free=10**18)
    assert low.status == "warn"
    full = _free_check(paths, min_free=10**18, warn_free=10**18)
    assert full.status == "fail" and "GiB" in full.message and "prune" in full.hint
    assert _free_check([("nowhere", tmp_path / "missing")], GIB, GIB).status == "skip"


def test_without_a_host_only_the_machine_is_checked(tmp_path: Path) -> None:
    code, checks, _ = doctor(cwd=tmp_path)
    assert sorted(checks) == ["disk", "engine", "registry"]
    assert code == 1  # the engine is missing
    missing = run_cli("doctor", "--dir", str(tmp_path / "nothing"), env=clean_env(**NO_ENGINE))
    assert_clean_failure(missing)


@pytest.mark.parametrize("runtime", ["kubernetes"])
def test_docker_checks_are_skipped_for_other_runtimes(tmp_path: Path, runtime: str) -> None:
    host = make(tmp_path)
    edit_config(host, runtime=runtime)
    code, checks, _ = doctor("--dir", str(host))
    if checks["config"]["status"] != "pass":
        pytest.skip(f"this config schema has no runtime {runtime!r}")
    for name in ("port", "images", "health"):
        assert checks[name]["status"] == "skip" and runtime in checks[name]["message"]
