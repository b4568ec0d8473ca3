"""`pixsim-host init`: the files it creates, the identity it keeps, what it refuses."""

from __future__ import annotations

import os
import stat
import subprocess
import uuid
from pathlib import Path

import yaml
from unit_helpers import (
    CLI,
    SECRET_NAMES,
    MakeHost,
    Result,
    assert_clean_failure,
    clean_env,
    read_config,
    read_secrets,
    run_cli,
    snapshot,
)


def test_init_creates_the_host_directory(tmp_path: Path) -> None:
    host = tmp_path / "new" / "host"  # parents are created too
    result = run_cli("init", str(host), "--yes", "--name", "Alice's Host", "--port", "18701")
    assert result.returncode == 0, str(result)

    assert (host / "pixsim-host.yaml").is_file()
    assert (host / "compose.yaml").is_file()
    assert (host / "frontend.env").is_file()
    assert (host / "plugins").is_dir()
    env_mode = stat.S_IMODE((host / ".env").stat().st_mode)
    assert env_mode == 0o600, oct(env_mode)

    config = read_config(host)
    assert config["version"] == 1
    assert config["name"] == "Alice's Host"
    assert config["model"] == "self"
    assert config["backend"]["bind"] == "127.0.0.1"  # type: ignore[index]
    assert config["backend"]["port"] == 18701  # type: ignore[index]
    parsed = uuid.UUID(str(config["host_id"]))
    assert parsed.version == 4
    assert str(parsed) == config["host_id"]

    compose = yaml.safe_load((host / "compose.yaml").read_text(encoding="utf-8"))
    assert compose["name"] == "pixsim-alice-s-host"
    assert set(compose["services"]) == {"db", "redis", "backend", "worker"}
    backend_env = compose["services"]["backend"]["environment"]
    assert backend_env["SERVER_ID"] == config["host_id"]
    assert backend_env["PIXSIM_HOST_ID"] == config["host_id"]
    assert backend_env["SERVER_NAME"] == "Alice's Host"
    assert backend_env["DEBUG"] == "false"
    assert backend_env["PLUGIN_ALLOWLIST"] == "[]"
    assert compose["services"]["backend"]["ports"] == [
        {"target": 8000, "published": "18701", "host_ip": "127.0.0.1", "protocol": "tcp"}
    ]
    for service in ("db", "redis"):  # only the backend is reachable from outside
        assert "ports" not in compose["services"][service]
    for service in compose["services"].values():
        assert "container_name" not in service  # two hosts must coexist
        assert service["labels"]["org.pixsim-host.host-id"] == config["host_id"]

    frontend = (host / "frontend.env").read_text(encoding="utf-8")
    assert "VITE_BACKEND_URL='http://127.0.0.1:18701'\n" in frontend

    # The summary names the host and where to go next.
    assert str(config["host_id"]) in result.stdout
    assert "pixsim-host up" in result.stdout


def test_secrets_are_long_random_and_differ_between_hosts(make_host: MakeHost) -> None:
    first, second = read_secrets(make_host()), read_secrets(make_host())
    for name in SECRET_NAMES:
        assert len(first[name]) >= 32, name
        assert first[name] != second[name], name
        # URL-safe, so they sit in DATABASE_URL/REDIS_URL unescaped and never contain '$'.
        assert all(c.isalnum() or c in "-_" for c in first[name]), name
    values = [first[name] for name in SECRET_NAMES]
    assert len(set(values)) == len(values)  # each secret is generated on its own
    assert read_config(make_host())["host_id"] != read_config(make_host())["host_id"]


def test_init_refuses_an_existing_host_and_changes_nothing(make_host: MakeHost) -> None:
    host = make_host()
    before = snapshot(host)
    result = run_cli("init", str(host), "--yes", "--name", "other", "--port", "18702")
    assert_clean_failure(result)
    assert result.stderr.count("\n") == 1, "the refusal is one line"
    assert "already holds host 'test-host'" in result.stderr
    assert "--force" in result.stderr  # says what to do instead
    assert snapshot(host) == before


def test_init_refuses_an_env_without_a_config(tmp_path: Path) -> None:
    host = tmp_path / "orphan"
    host.mkdir()
    (host / ".env").write_text("SECRET_KEY=keep-me\n", encoding="utf-8")
    before = snapshot(host)
    result = run_cli("init", str(host), "--yes", "--name", "x", "--port", "18703")
    assert_clean_failure(result)
    assert ".env exists but pixsim-host.yaml does not" in result.stderr
    assert snapshot(host) == before


def test_init_force_keeps_identity_and_secrets(make_host: MakeHost) -> None:
    host = make_host()
    config, env_bytes = read_config(host), (host / ".env").read_bytes()
    (host / "compose.yaml").write_text("edited\n", encoding="utf-8")
    result = run_cli("init", str(host), "--yes", "--force", "--port", "18704")
    assert result.returncode == 0, str(result)
    assert (host / ".env").read_bytes() == env_bytes
    updated = read_config(host)
    assert updated["host_id"] == config["host_id"]
    assert updated["name"] == config["name"]
    assert updated["backend"]["port"] == 18704  # type: ignore[index]
    assert "published: \"18704\"" in (host / "compose.yaml").read_text(encoding="utf-8")
    assert "Re-rendered" in result.stdout


def test_self_model_refuses_a_non_loopback_bind(tmp_path: Path) -> None:
    host = tmp_path / "h"
    result = run_cli("init", str(host), "--yes", "--name", "x", "--model", "self",
                     "--bind", "0.0.0.0", "--port", "18705")
    assert_clean_failure(result)
    assert "loopback" in result.stderr and "'self'" in result.stderr
    assert not host.exists()  # validation happens before anything is written


def test_self_model_accepts_ipv6_loopback(tmp_path: Path) -> None:
    host = tmp_path / "h"
    result = run_cli("init", str(host), "--yes", "--name", "x", "--bind", "::1", "--port", "18706")
    assert result.returncode == 0, str(result)
    assert "VITE_BACKEND_URL='http://[::1]:18706'" in (host / "frontend.env").read_text()


def test_friend_and_shared_without_bind_listen_everywhere_with_a_warning(tmp_path: Path) -> None:
    for port, model in ((18707, "friend"), (18717, "shared")):
        host = tmp_path / model
        result = run_cli("init", str(host), "--yes", "--name", model, "--model", model,
                         "--port", str(port))
        assert result.returncode == 0, str(result)
        assert read_config(host)["backend"]["bind"] == "0.0.0.0"  # type: ignore[index]
        assert "Warning:" in result.stderr and "0.0.0.0" in result.stderr, str(result)
        compose = yaml.safe_load((host / "compose.yaml").read_text(encoding="utf-8"))
        assert compose["services"]["backend"]["ports"][0]["host_ip"] == "0.0.0.0"


def test_friend_with_explicit_bind_has_no_warning(tmp_path: Path) -> None:
    host = tmp_path / "f"
    result = run_cli("init", str(host), "--yes", "--name", "f", "--model", "friend",
                     "--bind", "127.0.0.1", "--public-url", "http://pixsim.lan:18708",
                     "--port", "18708")
    assert result.returncode == 0, str(result)
    assert "Warning" not in result.stderr
    assert "VITE_BACKEND_URL='http://pixsim.lan:18708'" in (host / "frontend.env").read_text()


def test_init_without_a_name_uses_the_directory_name(tmp_path: Path) -> None:
    host = tmp_path / "Game Night"
    result = run_cli("init", str(host), "--yes", "--port", "18709")
    assert result.returncode == 0, str(result)
    assert read_config(host)["name"] == "game-night"


def test_unknown_model_is_refused(tmp_path: Path) -> None:
    result = run_cli("init", str(tmp_path / "h"), "--yes", "--name", "x", "--model", "public")
    assert_clean_failure(result)
    assert result.returncode == 2  # a usage error, like every bad option value
    assert "'public' is not one of 'self', 'friend', 'shared'" in result.stderr


def test_commands_find_the_host(make_host: MakeHost, tmp_path: Path) -> None:
    host = make_host()
    host_id = str(read_config(host)["host_id"])
    by_flag = run_cli("info", "--dir", str(host))
    by_env = run_cli("info", env=clean_env(PIXSIM_HOST_DIR=str(host)))
    by_cwd = run_cli("info", cwd=host)
    for result in (by_flag, by_env, by_cwd):
        assert result.returncode == 0, str(result)
        assert host_id in result.stdout
    assert "VITE_BACKEND_URL=http://127.0.0.1:18700" in by_flag.stdout

    nowhere = tmp_path / "empty"
    nowhere.mkdir()
    result = run_cli("info", cwd=nowhere)
    assert_clean_failure(result)
    assert "no pixsim-host host in" in result.stderr and "PIXSIM_HOST_DIR" in result.stderr


def test_version_and_help() -> None:
    from pixsim_host import __version__

    assert run_cli("--version").stdout == f"pixsim-host {__version__}\n"
    for command in ([], ["init"], ["render"], ["info"], ["config"], ["config", "set"]):
        result = run_cli(*command, "--help")
        assert result.returncode == 0, str(result)
        assert "Usage:" in result.stdout


def _init_on_a_tty(host: Path, answers: bytes, *args: str) -> Result:
    """Run init with a terminal as stdin (output stays piped), typing ``answers``."""
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen([*CLI, "init", str(host), *args], stdin=slave,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=clean_env())
        os.close(slave)
        os.write(master, answers)
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(master)
    return Result(("init", str(host), *args), proc.returncode, out, err)


def test_init_prompts_on_a_terminal(tmp_path: Path) -> None:
    host = tmp_path / "h"
    # An invalid model is asked again; the bind is asked because 'friend' is not local.
    result = _init_on_a_tty(host, b"My Host\npublic\nfriend\n127.0.0.1\n", "--port", "18713")
    assert result.returncode == 0, str(result)
    # Questions go to stderr: stdout holds only the result.
    assert "Host name [h]:" in result.stderr
    assert "Error: 'public' is not a hosting model; answer self, friend, shared" in result.stderr
    config = read_config(host)
    assert (config["name"], config["model"]) == ("My Host", "friend")
    assert config["backend"]["bind"] == "127.0.0.1"  # type: ignore[index]


def test_init_yes_never_prompts_even_on_a_terminal(tmp_path: Path) -> None:
    host = tmp_path / "h"
    result = _init_on_a_tty(host, b"", "--yes", "--port", "18714")
    assert result.returncode == 0, str(result)
    assert "Host name" not in result.stdout
    assert read_config(host)["name"] == "h"
