"""restore and clone check the ports before loading any data, and name the registered host
that holds one: usually the original host, still running, which a restore (a move) must
not run beside."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from cli_helpers import invoke

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_bundle_safety import correct_parts, gz, tar_bytes  # noqa: E402


def _bundle_of(host: Path, tmp_path: Path) -> Path:
    parts = correct_parts((host / "pixsim-host.yaml").read_bytes())
    for member in [name for name in parts.files if name.startswith("plugins/")]:
        del parts.files[member], parts.manifest["members"][member]  # no plugin: data only
    parts.manifest["plugins_enabled"] = []
    bundle = tmp_path / "bundle.tar.gz"
    bundle.write_bytes(gz(tar_bytes(parts.entries())))
    return bundle


def test_restore_beside_the_running_original_is_refused_before_any_data(tmp_path: Path) -> None:
    original = tmp_path / "original"
    assert invoke("init", str(original), "--yes", "--name", "ports-o", "--port", "18980",
                  "--runtime", "docker").code == 0
    bundle = _bundle_of(original, tmp_path)
    with socket.create_server(("127.0.0.1", 18980)):  # the original host, still running
        refused = invoke("restore", str(bundle), "--dir", str(tmp_path / "moved"))
    assert refused.code == 1, str(refused)
    line = refused.stderr.strip().splitlines()[-1]  # after the "bundle verified" step
    assert line.startswith("Error: port 18980 is held by this same host, still running from "
                           f"{original}"), line
    assert f"`pixsim-host down --dir {original}`" in line and "`pixsim-host clone`" in line
    assert not (tmp_path / "moved").exists(), "data was loaded before the port was checked"


def test_a_port_taken_by_another_program_is_said_with_a_free_one(tmp_path: Path) -> None:
    original = tmp_path / "original"
    assert invoke("init", str(original), "--yes", "--name", "ports-p", "--port", "18981",
                  "--runtime", "docker").code == 0
    bundle = _bundle_of(original, tmp_path)
    assert invoke("hosts", "forget", "ports-p").code == 0
    with socket.create_server(("127.0.0.1", 18981)):
        refused = invoke("restore", str(bundle), "--dir", str(tmp_path / "moved"))
        assert refused.code == 1, str(refused)
        assert "in use by a program that is not a registered host" in refused.stderr
        suggested = refused.stderr.rsplit("--port ", 1)[1].split()[0]
        assert suggested.isdigit() and int(suggested) != 18981
    assert not (tmp_path / "moved").exists()
