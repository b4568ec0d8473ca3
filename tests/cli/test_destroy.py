"""destroy removes a host for good, and only after a confirmation that names the host and
everything it deletes; declined or not confirmed, nothing is touched."""

from __future__ import annotations

from pathlib import Path

from cli_helpers import invoke, one_document


def _native_host(tmp_path: Path, name: str, port: str) -> Path:
    host = tmp_path / name
    made = invoke("init", str(host), "--yes", "--name", name, "--port", port, "--runtime", "native")
    assert made.code == 0, str(made)
    (host / "data").mkdir(exist_ok=True)
    (host / "data" / "db-file").write_text("precious\n", encoding="utf-8")
    return host


def test_without_yes_and_no_terminal_nothing_is_deleted(tmp_path: Path) -> None:
    host = _native_host(tmp_path, "destroy-a", "18995")
    refused = invoke("destroy", "--dir", str(host))
    assert refused.code == 2, str(refused)
    line = refused.stderr.strip()
    assert line.startswith("Error: destroy would delete host 'destroy-a'"), line
    assert str(host) in line and str(host / "data") in line and "--yes" in line and "--backup" in line
    assert (host / "data" / "db-file").is_file()
    as_json = invoke("destroy", "--dir", str(host), "--json")
    assert as_json.code == 2 and one_document(as_json, "error")["error"]["code"] == "usage"
    assert [h["name"] for h in invoke("hosts", "list", "--json").json()["hosts"]] == ["destroy-a"]


def test_declined_at_the_terminal_nothing_is_deleted_and_yes_deletes_everything(tmp_path: Path) -> None:
    host = _native_host(tmp_path, "destroy-b", "18996")
    declined = invoke("destroy", "--dir", str(host), answers="n\n")
    assert declined.code == 1 and "nothing was deleted" in declined.stderr, str(declined)
    assert "Delete host 'destroy-b'" in declined.stderr and str(host) in declined.stderr
    assert (host / "data" / "db-file").is_file()
    confirmed = invoke("destroy", "--dir", str(host), answers="y\n")
    assert confirmed.code == 0, str(confirmed)
    assert "Destroyed host 'destroy-b'" in confirmed.stdout and not host.exists()
    assert invoke("hosts", "list", "--json").json()["hosts"] == []


def test_a_backup_inside_the_host_directory_is_refused(tmp_path: Path) -> None:
    host = _native_host(tmp_path, "destroy-c", "18997")
    refused = invoke("destroy", "--dir", str(host), "--backup", str(host / "keep.tar.gz"), "--yes")
    assert refused.code == 2 and "inside the host directory" in refused.stderr, str(refused)
    assert host.is_dir()
    not_running = invoke("destroy", "--dir", str(host), "--backup", str(tmp_path / "keep.tar.gz"),
                         "--yes")
    assert not_running.code == 1 and "not running, so it cannot be backed up" in not_running.stderr
    assert (host / "data" / "db-file").is_file()
