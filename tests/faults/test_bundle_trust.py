"""A bundle is code: restore and clone take its data and the settings that describe the host,
never, without --trust-bundle-settings, what runs a program, chooses a binary or directory,
or widens who can reach the host; its plugins pass the checks of `plugins install`; it and
every member in it are private (0600).
"""

from __future__ import annotations

import hashlib
import io
import json
import stat
import tarfile
from pathlib import Path

import pytest
import yaml
from native_support import Hosts, processes_under
from unit_helpers import run_cli

from pixsim_host.backup import UNTRUSTED_SETTINGS, distrust_settings
from pixsim_host.config import new_host_config


def members(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle, "r:gz") as archive:
        return {m.name: archive.extractfile(m).read()  # type: ignore[union-attr]
                for m in archive.getmembers() if m.isfile()}


def repack(bundle: Path, target: Path, changes: dict[str, bytes | None]) -> Path:
    """``bundle`` with members replaced, added or (None) removed, and a manifest to match:
    what a hostile bundle looks like (its checksums are right)."""
    files = members(bundle)
    manifest = json.loads(files.pop("manifest.json"))
    for name, content in changes.items():
        if content is None:
            files.pop(name, None)
        else:
            files[name] = content
    manifest["members"] = {name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
                           for name, data in files.items()}
    with tarfile.open(target, "w:gz") as archive:
        for name, data in [("manifest.json", json.dumps(manifest).encode()), *sorted(files.items())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return target


# ---- the rule, on its own ------------------------------------------------------------------


def hostile_config() -> dict[str, object]:
    data = new_host_config(name="stranger").model_dump(mode="json")
    data["model"] = "shared"
    data["backend"].update(bind="0.0.0.0", public_url="https://example.invalid",
                           cors_origins=["*"], command=["sh", "-c", "id"], env={"LD_PRELOAD": "/x"})
    data["native"].update(backend_command=["sh", "-c", "touch /tmp/owned"], python="/tmp/evil",
                          backend_workdir="/tmp", redis_server="/tmp/evil-redis")
    data["database"]["url"] = "postgresql://db.example.invalid/x"
    return data


def test_untrusted_settings_are_reset_and_said() -> None:
    data = hostile_config()
    safe = new_host_config(name="here").model_dump(mode="json")
    said: list[str] = []
    concerned = distrust_settings(data, safe, trust=False, progress=lambda _s, m: said.append(m))
    assert sorted(concerned) == sorted([
        "model", "backend.bind", "backend.public_url", "backend.cors_origins", "backend.command",
        "backend.env", "database.url", "native.python", "native.backend_command",
        "native.backend_workdir", "native.redis_server"])
    for key in concerned:
        section, _, name = key.rpartition(".")
        value = data[section][name] if section else data[key]  # type: ignore[index]
        expected = safe[section][name] if section else safe[key]
        assert value == expected, key
    assert ("the bundle sets native.backend_command, which runs a program of the bundle's choosing: "
            "not taken from it (pass --trust-bundle-settings to keep it, or set it later with "
            "`pixsim-host config set native.backend_command ...`)") in said
    assert all(key in UNTRUSTED_SETTINGS for key in concerned)


def test_trust_keeps_them_and_says_so() -> None:
    data = hostile_config()
    before = json.loads(json.dumps(data))
    said: list[str] = []
    distrust_settings(data, new_host_config(name="here").model_dump(mode="json"), trust=True,
                      progress=lambda _s, m: said.append(m))
    assert data == before
    assert "the bundle's backend.bind is kept (--trust-bundle-settings); it widens who can reach " \
           "the host" in said


# ---- through restore and clone -------------------------------------------------------------



@pytest.fixture
def native_bundle(hosts: Hosts, tmp_path: Path) -> Path:
    host = hosts.init()
    assert run_cli("up", "--dir", str(host.dir), "--timeout", "120").returncode == 0
    bundle = tmp_path / "origin.tar.gz"
    result = run_cli("backup", "--dir", str(host.dir), "-o", str(bundle), "--include-secrets")
    assert result.returncode == 0, str(result)
    plain = run_cli("backup", "--dir", str(host.dir), "-o", str(tmp_path / "plain.tar.gz"))
    assert plain.returncode == 0, str(plain)
    assert run_cli("down", "--dir", str(host.dir)).returncode == 0
    return bundle


@pytest.mark.native
def test_bundles_and_their_members_are_private(native_bundle: Path) -> None:
    plain = native_bundle.with_name("plain.tar.gz")  # made without --include-secrets
    for bundle in (native_bundle, plain):
        assert stat.S_IMODE(bundle.stat().st_mode) == 0o600, bundle
        with tarfile.open(bundle, "r:gz") as archive:
            modes = {m.name: m.mode for m in archive.getmembers()}
        assert all(mode == 0o600 for mode in modes.values()), modes
    assert "secrets.env" in members(native_bundle) and "secrets.env" not in members(plain)


@pytest.mark.native
def test_clone_drops_what_a_bundle_may_not_choose(hosts: Hosts, native_bundle: Path,
                                                  tmp_path: Path) -> None:
    marker = tmp_path / "the-bundle-ran-this"
    config = yaml.safe_load(members(native_bundle)["pixsim-host.yaml"])
    config["model"] = "shared"
    config["backend"]["bind"] = "0.0.0.0"
    config["native"]["backend_command"] = ["sh", "-c", f"touch {marker}; exec sleep 600"]
    hostile = repack(native_bundle, tmp_path / "hostile.tar.gz",
                     {"pixsim-host.yaml": yaml.safe_dump(config).encode()})
    target = hosts.base / "clone"
    result = run_cli("clone", str(hostile), "--dir", str(target), "--timeout", "120")
    hosts.adopt(target)
    assert result.returncode == 0, str(result)
    for key in ("model", "backend.bind", "native.backend_command"):
        assert f"the bundle sets {key}, which" in result.stderr, str(result)
    assert not marker.exists()
    cloned = yaml.safe_load((target / "pixsim-host.yaml").read_text())
    assert cloned["model"] == "self" and cloned["backend"]["bind"] == "127.0.0.1"
    assert cloned["native"]["backend_command"] is None
    assert not any(b"sleep 600" in Path(f"/proc/{pid}/cmdline").read_bytes()
                   for pid in processes_under(hosts.base))


@pytest.mark.native
@pytest.mark.parametrize(("plugin", "fragment"), [
    ({"plugins/Bad Name/backend/manifest.py": b"manifest = {'id': 'x'}\n"},
     "plugin folder name 'Bad Name'"),
    ({"plugins/quiet/backend/manifest.py": b"manifest = make_manifest()\n"},
     "quiet/backend/manifest.py has no literal id"),
    ({"plugins/one/backend/manifest.py": b"manifest = {'id': 'same'}\n",
      "plugins/two/backend/manifest.py": b"manifest = {'id': 'same'}\n"},
     "plugins/one and plugins/two both have the id 'same'; refused"),
    ({"plugins/nomanifest/readme.txt": b"hi\n"},
     "nomanifest is not a PixSim7 plugin package"),
])
def test_plugins_in_a_bundle_pass_the_install_checks(native_bundle: Path, tmp_path: Path,
                                                     plugin: dict[str, bytes], fragment: str) -> None:
    hostile = repack(native_bundle, tmp_path / "hostile.tar.gz", dict(plugin))
    target = tmp_path / "never"
    result = run_cli("clone", str(hostile), "--dir", str(target))
    assert result.returncode == 1, str(result)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and errors[0].startswith("Error: hostile.tar.gz: "), str(result)
    assert fragment in errors[0], str(result)
    assert not target.exists()
