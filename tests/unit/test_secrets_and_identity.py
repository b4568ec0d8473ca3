"""A host's identity and secrets never change, and secret values never leave ``.env``."""

from __future__ import annotations

from pathlib import Path

import pytest
from unit_helpers import (
    SECRET_NAMES,
    MakeHost,
    assert_no_secret,
    read_config,
    read_secrets,
    run_cli,
)


def _identity(host: Path) -> tuple[object, bytes]:
    return read_config(host)["host_id"], (host / ".env").read_bytes()


def test_render_and_config_set_keep_host_id_and_secrets(make_host: MakeHost) -> None:
    host = make_host()
    before = _identity(host)
    steps = [
        ("render",),
        ("config", "set", "name", "Renamed Host"),
        ("config", "set", "backend.port", "18710"),
        ("config", "set", "plugins.disabled", "[romance, game_stealth]"),
        ("config", "set", "description", "A new description"),
        ("init", str(host), "--yes", "--force", "--name", "Again"),
        ("render",),
    ]
    for step in steps:
        result = run_cli(*step, "--dir", str(host)) if step[0] != "init" else run_cli(*step)
        assert result.returncode == 0, str(result)
        assert _identity(host) == before, f"{step} changed the host's identity or secrets"
    config = read_config(host)
    assert config["name"] == "Again"
    assert config["backend"]["port"] == 18710  # type: ignore[index]
    assert config["plugins"]["disabled"] == ["romance", "game_stealth"]  # type: ignore[index]
    compose = (host / "compose.yaml").read_text(encoding="utf-8")
    assert 'PLUGIN_DENYLIST: "[\\"romance\\",\\"game_stealth\\"]"' in compose


@pytest.mark.parametrize("key", ["host_id", "version"])
def test_identity_keys_cannot_be_set(make_host: MakeHost, key: str) -> None:
    host = make_host()
    before = (host / "pixsim-host.yaml").read_bytes()
    result = run_cli("config", "set", key, "6c1f4a52-4a0d-4c1e-9d0b-0d4f2a1e6c11", "--dir", str(host))
    assert result.returncode != 0, str(result)
    assert "Traceback" not in result.output
    assert f"Error: {key} cannot be changed" in result.stderr
    assert (host / "pixsim-host.yaml").read_bytes() == before


def test_no_secret_in_generated_files(make_host: MakeHost) -> None:
    for model in ("self", "friend", "shared"):
        host = make_host("--model", model)
        secrets = read_secrets(host)
        assert set(SECRET_NAMES) <= set(secrets)
        for name in ("compose.yaml", "frontend.env", "pixsim-host.yaml"):
            assert_no_secret((host / name).read_text(encoding="utf-8"), secrets)
        # The compose file refers to them by name instead.
        compose = (host / "compose.yaml").read_text(encoding="utf-8")
        for name in SECRET_NAMES:
            assert "${" + name + ":?" in compose


def test_no_secret_in_any_command_output(make_host: MakeHost, tmp_path: Path) -> None:
    host = make_host()
    secrets = read_secrets(host)
    d = ("--dir", str(host))
    commands = [
        ("info", *d),
        ("info", "--json", *d),
        ("config", "show", *d),
        ("config", "show", "--json", *d),
        ("config", "get", "backend", *d),
        ("config", "get", "name", *d),
        ("render", *d),
        ("render", "--check", *d),
        ("init", str(host), "--yes", "--force"),
        # Error paths.
        ("config", "set", "backend.port", "70000", *d),
        ("config", "set", "backend.prot", "1", *d),
        ("config", "set", "host_id", "x", *d),
        ("config", "get", "secrets", *d),
        ("config", "get", "SECRET_KEY", *d),
        ("init", str(host), "--yes"),
    ]
    for command in commands:
        result = run_cli(*command)
        assert "Traceback" not in result.output, str(result)
        assert_no_secret(result.output, secrets)

    # The masked view says the secrets exist without showing them.
    shown = run_cli("config", "show", *d).stdout
    for name in SECRET_NAMES:
        assert f"{name}: '********'" in shown


def test_config_show_reveal_prints_the_secrets(make_host: MakeHost) -> None:
    host = make_host()
    secrets = read_secrets(host)
    shown = run_cli("config", "show", "--reveal", "--dir", str(host)).stdout
    for name in SECRET_NAMES:
        assert secrets[name] in shown  # the opt-in works, so the masking above is meaningful


def test_first_init_output_has_no_secret(tmp_path: Path) -> None:
    host = tmp_path / "h"
    result = run_cli("init", str(host), "--yes", "--name", "x", "--port", "18711")
    assert result.returncode == 0, str(result)
    assert_no_secret(result.output, read_secrets(host))


def test_render_check_does_not_print_a_secret_pasted_into_a_generated_file(
    make_host: MakeHost,
) -> None:
    # A plausible hand edit: replacing the interpolation with the password itself. The
    # diff that `render --check` prints must not carry it to a terminal or CI log.
    host = make_host()
    secrets = read_secrets(host)
    compose = host / "compose.yaml"
    text = compose.read_text(encoding="utf-8")
    ref = '"${POSTGRES_PASSWORD:?is not set; pixsim-host reads it from this host\'s .env}"'
    assert ref in text
    compose.write_text(text.replace(ref, f'"{secrets["POSTGRES_PASSWORD"]}"'), encoding="utf-8")
    result = run_cli("render", "--check", "--dir", str(host))
    assert result.returncode != 0, str(result)
    assert "POSTGRES_PASSWORD" in result.stderr  # the diff is still shown, the value is masked
    assert_no_secret(result.output, secrets)


def test_env_readable_by_others_is_refused_without_printing_it(make_host: MakeHost) -> None:
    host = make_host()
    secrets = read_secrets(host)
    (host / ".env").chmod(0o644)
    result = run_cli("config", "show", "--dir", str(host))
    assert result.returncode != 0, str(result)
    assert "chmod 600" in result.stderr
    assert_no_secret(result.output, secrets)
