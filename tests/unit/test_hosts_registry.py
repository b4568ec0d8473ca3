"""The host registry: init registers, names and ports are claimed, hosts list/add/forget,
``--host NAME``, concurrent inits, directories moved or deleted behind its back.

CLI calls run in-process through the console script's entry point, the racing inits as real
processes; the registry lives in the test's own ``$PIXSIM_HOST_HOME`` (tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_hosts_fakes import (
    fake_backend,
    first_free_port,
    held_port,
    port_is_free,
    silent_listener,
    write_minimal_host,
)
from unit_helpers import CLI, assert_clean_failure, clean_env, read_config, run_cli, snapshot


def home() -> Path:
    return Path(os.environ["PIXSIM_HOST_HOME"])


def registry() -> dict[str, Any]:
    data = json.loads((home() / "hosts.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def entries() -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in registry()["hosts"]}


def init(directory: Path, name: str, *args: str) -> Any:
    return run_cli("init", str(directory), "--yes", "--name", name, *args)


def hosts_list() -> dict[str, dict[str, Any]]:
    result = run_cli("hosts", "list", "--json")
    assert result.returncode == 0, str(result)
    return {host["name"]: host for host in json.loads(result.stdout)["hosts"]}


# ---- init registers, claims are enforced -------------------------------------------------------


def test_init_registers_the_host(tmp_path: Path) -> None:
    result = init(tmp_path / "a", "Alpha", "--port", "18801")
    assert result.returncode == 0, str(result)
    config = read_config(tmp_path / "a")
    entry = entries()["Alpha"]
    assert entry["host_id"] == config["host_id"]
    assert entry["directory"] == str((tmp_path / "a").resolve())
    assert entry["model"] == "self"
    assert entry["port"] == 18801
    assert entry["backend_url"] == "http://127.0.0.1:18801"
    assert entry["project"] == "pixsim-alpha"
    assert stat.S_IMODE((home() / "hosts.json").stat().st_mode) == 0o600
    assert "registry" in result.stdout

    listed = hosts_list()["Alpha"]
    assert listed["status"] == "down" and listed["host_id"] == config["host_id"]
    assert listed["backend_url"] == "http://127.0.0.1:18801"
    table = run_cli("hosts", "list")
    assert "Alpha" in table.stdout and str(config["host_id"]) in table.stdout and "down" in table.stdout


def test_init_force_keeps_one_entry_and_follows_a_new_port(tmp_path: Path) -> None:
    assert init(tmp_path / "a", "alpha", "--port", "18802").returncode == 0
    result = run_cli("init", str(tmp_path / "a"), "--yes", "--force", "--port", "18803")
    assert result.returncode == 0, str(result)
    assert [e["port"] for e in registry()["hosts"]] == [18803]


@pytest.mark.parametrize("second", ["alpha", "ALPHA", "Alpha!"])
def test_a_second_host_with_the_same_name_or_project_is_refused(tmp_path: Path, second: str) -> None:
    assert init(tmp_path / "a", "alpha", "--port", "18804").returncode == 0
    result = init(tmp_path / "b", second, "--port", "18805")
    assert_clean_failure(result)
    assert result.stderr.count("\n") == 1, str(result)
    assert "'alpha'" in result.stderr and str((tmp_path / "a").resolve()) in result.stderr
    assert not (tmp_path / "b").exists(), "nothing is created for a refused host"
    assert list(entries()) == ["alpha"]


def test_an_explicit_port_claimed_by_another_host_is_refused_naming_it(tmp_path: Path) -> None:
    assert init(tmp_path / "a", "alpha", "--port", "18806").returncode == 0
    result = init(tmp_path / "b", "beta", "--port", "18806")
    assert_clean_failure(result)
    assert "port 18806 is claimed by host 'alpha'" in result.stderr, str(result)
    assert not (tmp_path / "b").exists()


def test_picked_ports_avoid_claimed_and_bound_ports(tmp_path: Path) -> None:
    # The first free port from 8000 is claimed by alpha (which is down: nothing binds it),
    # the next free one is bound by another program: beta must get neither.
    claimed = first_free_port()
    assert init(tmp_path / "a", "alpha", "--port", str(claimed)).returncode == 0
    with held_port(first_free_port(claimed + 1)) as bound:
        result = init(tmp_path / "b", "beta")
        assert result.returncode == 0, str(result)
        port = read_config(tmp_path / "b")["backend"]["port"]  # type: ignore[index]
        assert port not in (claimed, bound)
        assert port > claimed
        assert port_is_free(port)
    assert entries()["beta"]["port"] == port


def test_concurrent_inits_all_register_with_distinct_ports(tmp_path: Path) -> None:
    env = clean_env()
    procs = []
    for index in range(8):
        # Two of them also race for the same name: exactly one may win it.
        name = "racer" if index < 2 else f"host-{index}"
        procs.append(subprocess.Popen(
            [*CLI, "init", str(tmp_path / f"h{index}"), "--yes", "--name", name],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    codes = [code for code, _, _ in results]
    assert codes[2:] == [0] * 6, results
    assert sorted(codes[:2]) == [0, 1], results
    loser = results[0] if codes[0] else results[1]
    assert "already registered" in loser[2]

    data = registry()  # parses: never half written
    names = sorted(e["name"] for e in data["hosts"])
    assert names == sorted(["racer", *(f"host-{i}" for i in range(2, 8))])
    ports = [e["port"] for e in data["hosts"]]
    assert len(set(ports)) == 7, ports
    for entry in data["hosts"]:  # each entry is the host in its directory
        config = read_config(Path(entry["directory"]))
        assert config["host_id"] == entry["host_id"]
        assert config["backend"]["port"] == entry["port"]  # type: ignore[index]
    assert not list(home().glob("*.tmp")), "no temporary file is left behind"


# ---- forget, add, moved and deleted directories --------------------------------------------------


def test_forget_removes_the_entry_and_never_the_directory(tmp_path: Path) -> None:
    assert init(tmp_path / "a", "alpha", "--port", "18807").returncode == 0
    before = snapshot(tmp_path / "a")
    result = run_cli("hosts", "forget", "alpha")
    assert result.returncode == 0, str(result)
    assert "Nothing was deleted" in result.stdout
    assert snapshot(tmp_path / "a") == before
    assert entries() == {}
    # Its name and port are free again.
    assert init(tmp_path / "b", "alpha", "--port", "18807").returncode == 0

    missing = run_cli("hosts", "forget", "nobody")
    assert_clean_failure(missing)
    assert "no registered host is named 'nobody'" in missing.stderr


def test_a_deleted_directory_is_reported_not_fatal(tmp_path: Path) -> None:
    assert init(tmp_path / "a", "alpha", "--port", "18808").returncode == 0
    assert init(tmp_path / "b", "beta", "--port", "18809").returncode == 0
    shutil.rmtree(tmp_path / "a")
    listed = hosts_list()
    assert listed["alpha"]["status"] == "directory missing"
    assert listed["beta"]["status"] == "down"
    table = run_cli("hosts", "list")
    assert table.returncode == 0 and "directory missing" in table.stdout
    # Selecting it says what happened and what to do.
    result = run_cli("info", "--host", "alpha")
    assert_clean_failure(result)
    assert "no host there any more" in result.stderr and "hosts forget alpha" in result.stderr
    # Its claims stand until it is forgotten, and the refusal says how to release them.
    again = init(tmp_path / "c", "alpha", "--port", "18810")
    assert_clean_failure(again)
    assert "no longer exists" in again.stderr and "hosts forget alpha" in again.stderr
    # Other hosts work as before.
    assert run_cli("info", "--host", "beta").returncode == 0


def test_a_moved_host_is_found_again_with_hosts_add(tmp_path: Path) -> None:
    assert init(tmp_path / "a", "alpha", "--port", "18811").returncode == 0
    host_id = read_config(tmp_path / "a")["host_id"]
    (tmp_path / "a").rename(tmp_path / "moved")
    assert hosts_list()["alpha"]["status"] == "directory missing"
    result = run_cli("hosts", "add", str(tmp_path / "moved"))
    assert result.returncode == 0, str(result)
    assert entries()["alpha"]["directory"] == str((tmp_path / "moved").resolve())
    assert entries()["alpha"]["host_id"] == host_id
    assert hosts_list()["alpha"]["status"] == "down"
    assert len(registry()["hosts"]) == 1


def test_a_copied_host_directory_is_not_registered_twice(tmp_path: Path) -> None:
    assert init(tmp_path / "a", "alpha", "--port", "18812").returncode == 0
    shutil.copytree(tmp_path / "a", tmp_path / "copy")
    result = run_cli("hosts", "add", str(tmp_path / "copy"))
    assert_clean_failure(result)
    assert "same host" in result.stderr and "pixsim-host init" in result.stderr
    assert entries()["alpha"]["directory"] == str((tmp_path / "a").resolve())


def test_a_reinitialised_directory_replaces_the_stale_entry(tmp_path: Path) -> None:
    assert init(tmp_path / "a", "alpha", "--port", "18813").returncode == 0
    shutil.rmtree(tmp_path / "a")
    result = init(tmp_path / "a", "alpha", "--port", "18813")  # same place, a new host
    assert result.returncode == 0, str(result)
    assert "replaced the registry entry" in result.stderr
    assert entries()["alpha"]["host_id"] == read_config(tmp_path / "a")["host_id"]


def test_hosts_add_registers_an_unregistered_host_and_refreshes_a_stale_entry(tmp_path: Path) -> None:
    assert init(tmp_path / "a", "alpha", "--port", "18814").returncode == 0
    config_file = tmp_path / "a" / "pixsim-host.yaml"
    config = yaml.safe_load(config_file.read_text())
    config["backend"]["port"] = 18815
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    listed = hosts_list()["alpha"]
    assert listed["port"] == 18815 and listed["registry_stale"] == ["port", "backend_url"]
    assert "out of date" in run_cli("hosts", "list").stdout
    assert run_cli("hosts", "add", str(tmp_path / "a")).returncode == 0
    assert entries()["alpha"]["port"] == 18815
    assert hosts_list()["alpha"]["registry_stale"] == []

    run_cli("hosts", "forget", "alpha")
    assert run_cli("hosts", "add", str(tmp_path / "a")).returncode == 0
    assert entries()["alpha"]["host_id"] == config["host_id"]


def test_hosts_list_empty_and_damaged_registry(tmp_path: Path) -> None:
    empty = run_cli("hosts", "list")
    assert empty.returncode == 0 and "No hosts registered" in empty.stdout
    assert json.loads(run_cli("hosts", "list", "--json").stdout)["hosts"] == []

    assert init(tmp_path / "a", "alpha", "--port", "18816").returncode == 0
    (home() / "hosts.json").write_text('{"version": 1, "hosts": [', encoding="utf-8")
    for args in (("hosts", "list"), ("init", str(tmp_path / "b"), "--yes", "--name", "b")):
        result = run_cli(*args)
        assert_clean_failure(result)
        assert "is damaged" in result.stderr and "hosts.json" in result.stderr, str(result)
    # A host given by its directory does not need the registry.
    assert run_cli("info", "--dir", str(tmp_path / "a")).returncode == 0


# ---- --host NAME ----------------------------------------------------------------------------


def test_host_name_selects_a_host_from_anywhere(tmp_path: Path) -> None:
    assert init(tmp_path / "deep" / "a", "Alpha Host", "--port", "18817").returncode == 0
    host_id = str(read_config(tmp_path / "deep" / "a")["host_id"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = clean_env()
    for key in ("Alpha Host", "alpha host", host_id):
        result = run_cli("info", "--host", key, "--json", cwd=elsewhere, env=env)
        assert result.returncode == 0, str(result)
        assert json.loads(result.stdout)["host_id"] == host_id
    # The same option works on other commands (render, config).
    assert run_cli("render", "--check", "--host", "Alpha Host", cwd=elsewhere).returncode == 0
    got = run_cli("config", "get", "backend.port", "--host", "Alpha Host", cwd=elsewhere)
    assert got.stdout.strip() == "18817", str(got)

    unknown = run_cli("info", "--host", "nobody", cwd=elsewhere)
    assert_clean_failure(unknown)
    assert "no host is registered as 'nobody'" in unknown.stderr and "hosts list" in unknown.stderr


def test_a_name_that_is_also_another_local_host_directory_is_refused(tmp_path: Path) -> None:
    assert init(tmp_path / "registered", "alpha", "--port", "18818").returncode == 0
    assert init(tmp_path / "alpha", "beta", "--port", "18819").returncode == 0  # ./alpha is beta
    result = run_cli("info", "--host", "alpha", cwd=tmp_path)
    assert_clean_failure(result)
    assert "both the host directory" in result.stderr
    # Either one by its full path works.
    for path, name in ((tmp_path / "alpha", "beta"), (tmp_path / "registered", "alpha")):
        ok = run_cli("info", "--dir", str(path), "--json", cwd=tmp_path)
        assert json.loads(ok.stdout)["name"] == name
    # A plain directory name that is not a registered name still works as before.
    plain = run_cli("info", "--dir", "registered", "--json", cwd=tmp_path)
    assert json.loads(plain.stdout)["name"] == "alpha"


# ---- live status ------------------------------------------------------------------------------


def _entry(directory: Path, name: str, port: int, host_id: str | None = None) -> Any:
    from pixsim_host.hosts import HostEntry

    host_id = host_id or str(uuid.uuid4())
    write_minimal_host(directory, host_id, name, port)
    return HostEntry(name=name, host_id=host_id, directory=str(directory), model="self",
                     backend_url=f"http://127.0.0.1:{port}", local_url=f"http://127.0.0.1:{port}",
                     port=port, bind="127.0.0.1", project=f"pixsim-{name}")


def test_status_of_each_kind_of_host_probed_in_parallel(tmp_path: Path) -> None:
    from pixsim_host.hosts import probe_hosts

    up_id = str(uuid.uuid4())
    with held_port() as closed:
        pass  # now nothing listens there
    with fake_backend(up_id, "up") as up, fake_backend(str(uuid.uuid4()), "impostor") as other, \
            fake_backend("x", mode="html") as html, silent_listener() as hung:
        found = [
            _entry(tmp_path / "up", "up", up.port, up_id),
            _entry(tmp_path / "wrong", "wrong", other.port),
            _entry(tmp_path / "html", "html", html.port),
            _entry(tmp_path / "down", "down", closed),
            *[_entry(tmp_path / f"hung{i}", f"hung{i}", hung) for i in range(10)],
        ]
        gone = _entry(tmp_path / "gone", "gone", up.port, up_id + "x")
        shutil.rmtree(tmp_path / "gone")
        other_dir = _entry(tmp_path / "other", "other", 1)
        write_minimal_host(tmp_path / "other", str(uuid.uuid4()), "other", 1)
        started = time.monotonic()
        statuses = {s.name: s for s in probe_hosts([*found, gone, other_dir], timeout=0.5)}
        elapsed = time.monotonic() - started
    assert statuses["up"].status == "up"
    assert statuses["wrong"].status == "wrong host" and "impostor" in statuses["wrong"].detail
    assert statuses["html"].status == "bad answer"
    assert statuses["down"].status == "down"
    assert all(statuses[f"hung{i}"].status == "no answer" for i in range(10))
    assert statuses["gone"].status == "directory missing"
    assert statuses["other"].status == "other host"
    # Ten hosts that never answer cost one timeout, not ten: they are probed in parallel.
    assert elapsed < 1.5, elapsed


def test_local_url_matches_the_config_model() -> None:
    from pixsim_host.config import new_host_config
    from pixsim_host.hosts import local_url

    for model, bind in (("self", "127.0.0.1"), ("self", "::1"), ("friend", "0.0.0.0"),
                        ("friend", "::"), ("friend", "192.168.1.20")):
        config = new_host_config(name="x", model=model, backend={"bind": bind, "port": 18820})
        assert local_url(bind, 18820) == config.local_url


def test_check_port_claim_names_the_claiming_host(tmp_path: Path) -> None:
    from pixsim_host.errors import HostError
    from pixsim_host.hosts import check_port_claim

    assert init(tmp_path / "a", "alpha", "--port", "18821").returncode == 0
    own_id = str(read_config(tmp_path / "a")["host_id"])
    check_port_claim(18821, own_id)  # its own port
    check_port_claim(18822, str(uuid.uuid4()))  # nobody's
    with pytest.raises(HostError, match="port 18821 is claimed by host 'alpha'"):
        check_port_claim(18821, str(uuid.uuid4()))


def test_hosts_commands_keep_help_fast() -> None:
    # The registry modules are imported inside the commands only.
    code = ("import sys, pixsim_host.cli; "
            "print(sorted(m for m in ('httpx', 'pydantic', 'docker', 'jinja2', 'filelock', "
            "'platformdirs', 'pixsim_host.hosts', 'pixsim_host.connect', 'pixsim_host.doctor') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_an_unusable_data_directory_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = clean_env(PIXSIM_HOST_HOME=str(blocker / "home"))
    result = run_cli("init", str(tmp_path / "h"), "--yes", "--name", "h", env=env)
    assert_clean_failure(result)
    assert "PIXSIM_HOST_HOME" in result.stderr and str(blocker) in result.stderr
    assert not (tmp_path / "h").exists()
    listed = run_cli("hosts", "list", env=env)
    assert_clean_failure(listed)


def test_a_registered_host_with_a_broken_config_gets_the_config_error(tmp_path: Path) -> None:
    assert init(tmp_path / "a", "alpha", "--port", "18822").returncode == 0
    (tmp_path / "a" / "pixsim-host.yaml").write_text("name: [unclosed\n")
    result = run_cli("info", "--host", "alpha", cwd=tmp_path)
    assert_clean_failure(result)
    assert "YAML syntax error" in result.stderr, str(result)
    status = hosts_list()["alpha"]
    assert status["status"] == "not a host" and "doctor" in status["detail"]


# ---- versions of upgrades ---------------------------------------------------------------------


def test_the_versions_of_the_last_upgrade_outlive_later_records(tmp_path: Path) -> None:
    from pixsim_host.config import load_config
    from pixsim_host.hostdir import HostDir
    from pixsim_host.hosts import record, record_versions

    directory = tmp_path / "upgraded"
    assert init(directory, "upgraded", "--port", str(first_free_port())).returncode == 0
    assert hosts_list()["upgraded"]["versions"] is None
    host = HostDir(directory)
    versions = {"kind": "upgrade", "id": "20261201T000000000000Z", "finished_at": "2026-12-01T00:00:00Z",
                "before": {"images": {"backend.image": "old:1"}, "code_revision": None},
                "after": {"images": {"backend.image": "new:2"}, "code_revision": None}}
    record_versions(host, load_config(host.config_file), versions)
    assert entries()["upgraded"]["versions"] == versions
    # An up or a config change records the host again: its versions stay.
    assert run_cli("config", "set", "description", "upgraded once", "--dir", str(directory)).returncode == 0
    record(host, load_config(host.config_file))
    assert hosts_list()["upgraded"]["versions"] == versions
    # A hand-edited registry whose versions are not an object reads as none.
    data = registry()
    data["hosts"][0]["versions"] = ["not", "an", "object"]
    (home() / "hosts.json").write_text(json.dumps(data), encoding="utf-8")
    assert hosts_list()["upgraded"]["versions"] is None
