"""Under --json every command prints exactly one JSON document on stdout, valid against the
schema shipped for it (or the error schema), and the documents share one vocabulary.

Commands that need a running host (up, restart, backup, restore, clone, a healthy status)
are checked against their schemas by tests/e2e/test_cli_pipes.py.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

from cli_helpers import check_schema, invoke, one_document, schema_names, schemas

ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_every_schema_is_a_valid_schema_and_documented() -> None:
    from jsonschema import Draft202012Validator

    docs = (Path(__file__).resolve().parents[2] / "docs" / "json.md").read_text(encoding="utf-8")
    for name, schema in schemas().items():
        Draft202012Validator.check_schema(schema)
        assert f"schemas/{name}.json" in docs, f"docs/json.md does not document {name}"


def test_init_info_render_config_documents(tmp_path: Path) -> None:
    host = tmp_path / "h"
    init = one_document(invoke("init", str(host), "--yes", "--name", "schema-h", "--port", "18950",
                               "--runtime", "docker", "--json"), "init")
    assert init["created"] is True and init["backend_url"] == "http://127.0.0.1:18950"
    info = one_document(invoke("info", "--dir", str(host), "--json"), "info")
    assert (info["host_id"], info["backend_url"]) == (init["host_id"], init["backend_url"])
    one_document(invoke("render", "--dir", str(host), "--json"), "render")
    one_document(invoke("render", "--check", "--dir", str(host), "--json"), "render")
    shown = one_document(invoke("config", "show", "--dir", str(host), "--json"), "config-show")
    assert set(shown["secrets"].values()) == {"********"} or all("*" in v for v in shown["secrets"].values())
    got = one_document(invoke("config", "get", "backend.port", "--dir", str(host), "--json"), "config-get")
    assert got == {"key": "backend.port", "value": 18950}
    changed = one_document(invoke("config", "set", "description", "A test host", "--dir", str(host),
                                  "--json"), "config-set")
    assert changed["value"] == "A test host"
    # Without an engine: status and down could not tell or could not act, as error documents.
    for args in (("status",), ("down",), ("logs",), ("restart",), ("up", "--timeout", "1")):
        outcome = invoke(*args, "--dir", str(host), "--json")
        assert outcome.code == 1, str(outcome)
        one_document(outcome, "error")
    doctor = invoke("doctor", "--dir", str(host), "--json")
    assert doctor.code == 1 and one_document(doctor, "doctor")["health"] == "unhealthy"


def test_native_host_status_down_destroy_documents(tmp_path: Path) -> None:
    host = tmp_path / "n"
    made = invoke("init", str(host), "--yes", "--name", "schema-n", "--port", "18951",
                  "--runtime", "native", "--json")
    one_document(made, "init")
    status = invoke("status", "--dir", str(host), "--json")
    assert status.code == 4, str(status)  # answered: not running, so not healthy
    document = one_document(status, "status")
    assert document["health"] == "unhealthy" and document["running"] is False
    assert ISO_UTC.match(document["checked_at"])
    one_document(invoke("down", "--dir", str(host), "--json"), "down")
    listed = one_document(invoke("hosts", "list", "--json"), "hosts-list")
    assert [h["name"] for h in listed["hosts"]] == ["schema-n"]
    destroyed = one_document(invoke("destroy", "--dir", str(host), "--yes", "--json"), "destroy")
    assert destroyed["forgotten"] is True and not host.exists()
    assert one_document(invoke("hosts", "list", "--json"), "hosts-list")["hosts"] == []


def test_hosts_and_connect_documents(tmp_path: Path) -> None:
    host = tmp_path / "r"
    one_document(invoke("init", str(host), "--yes", "--name", "schema-r", "--port", "18952",
                        "--runtime", "docker", "--json"), "init")
    forgotten = one_document(invoke("hosts", "forget", "schema-r", "--json"), "hosts-forget")
    assert ISO_UTC.match(forgotten["forgotten"]["registered_at"])
    one_document(invoke("hosts", "add", str(host), "--json"), "hosts-add")
    one_document(invoke("connect", "--list", "--json"), "connect-list")
    refused = invoke("connect", f"http://127.0.0.1:{_closed_port()}", "--timeout", "1", "--json")
    assert refused.code == 1
    one_document(refused, "error")


def test_plugin_documents_before_the_first_up(tmp_path: Path) -> None:
    host = tmp_path / "p"
    invoke("init", str(host), "--yes", "--name", "schema-p", "--port", "18953", "--runtime", "docker")
    for args in (("plugins", "list"), ("plugins", "show", "romance"), ("plugins", "enable", "romance"),
                 ("plugins", "disable", "romance"), ("plugins", "remove", "romance")):
        outcome = invoke(*args, "--dir", str(host), "--json")
        assert outcome.code == 1, str(outcome)
        one_document(outcome, "error")


def test_usage_and_config_errors_are_error_documents(tmp_path: Path) -> None:
    for args in (("up", "--bogus"), ("init", "--model", "bogus"), ("up", "--pull", "sometimes"),
                 ("connect",), ("logs", "--follow"), ("init", str(tmp_path / "b"), "--bind", "localhost")):
        outcome = invoke(*args, "--json", cwd=tmp_path)
        assert outcome.code == 2, str(outcome)
        assert one_document(outcome, "error")["error"]["code"] == "usage"
    host = tmp_path / "c"
    invoke("init", str(host), "--yes", "--name", "schema-c", "--port", "18954", "--runtime", "docker")
    (host / "pixsim-host.yaml").write_text("version: 1\nname: [unclosed\n", encoding="utf-8")
    broken = invoke("info", "--dir", str(host), "--json")
    assert broken.code == 2, str(broken)
    assert one_document(broken, "error")["error"]["code"] in ("usage", "config")
    (host / "pixsim-host.yaml").write_text(
        (host / "pixsim-host.yaml").read_text(encoding="utf-8").replace("[unclosed", "schema-c"),
        encoding="utf-8")
    invalid = host / "pixsim-host.yaml"
    text = invalid.read_text(encoding="utf-8")
    invalid.write_text(text + "model: public\nbackend:\n  port: -1\n", encoding="utf-8")
    two = invoke("info", "--dir", str(host), "--json")
    error = one_document(two, "error")["error"]
    assert two.code == 2 and error["code"] == "config", str(two)
    assert len(error["problems"]) >= 2 and error["hint"].startswith("fix the file"), error


def test_every_document_schema_is_exercised() -> None:
    """The schemas this file and tests/e2e/test_cli_pipes.py check, against those shipped."""
    here = Path(__file__).read_text(encoding="utf-8")
    e2e = Path(__file__).resolve().parents[1] / "e2e"
    pipes = "".join((e2e / name).read_text(encoding="utf-8")
                    for name in ("test_cli_pipes.py", "test_upgrade.py"))
    unchecked = [name for name in schema_names() if f'"{name}"' not in here + pipes]
    assert unchecked == [], f"no test validates {unchecked}"


def test_the_vocabulary_is_one(tmp_path: Path) -> None:
    """No schema spells a concept two ways: the URL clients use is always backend_url, health
    is a word, times end in _at."""
    text = json.dumps(schemas())
    for banned in ('"ok"', '"healthy":', '"url": {"$ref"', '"taken_at": {"type": "number"',
                   '"last_seen":', '"first_seen":'):
        assert banned not in text, banned
    check_schema("error", {"error": {"code": "usage", "message": "m", "hint": None, "exit_code": 2}})


def test_connect_documents() -> None:
    import sys
    import uuid

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
    from test_hosts_fakes import fake_backend

    host_id = str(uuid.uuid4())
    with fake_backend(host_id, "Schema host") as backend:
        first = one_document(invoke("connect", backend.url, "--json"), "connect")
        assert (first["outcome"], first["host_id"], first["backend_url"]) == ("new", host_id, backend.url)
        listed = one_document(invoke("connect", "--list", "--json"), "connect-list")
        assert [pin["backend_url"] for pin in listed["hosts"]] == [backend.url]
        assert ISO_UTC.match(listed["hosts"][0]["first_seen_at"])
        backend.server_id, backend.name = str(uuid.uuid4()), "Another host"
        refused = invoke("connect", backend.url, "--json")
        assert refused.code == 3, str(refused)
        assert one_document(refused, "error")["error"]["code"] == "identity_changed"
        one_document(invoke("connect", backend.url, "--forget", "--json"), "connect-forget")


def test_every_command_with_json_has_a_schema() -> None:
    """A new command with --json must ship its schema (and so a section in docs/json.md)."""
    from test_exit_codes import COMMANDS

    shipped = set(schema_names())
    for path in COMMANDS:
        helped = invoke(*path, "--help", columns=120).stdout
        if "--json" in helped:
            assert "-".join(path) in shipped, f"`pixsim-host {' '.join(path)} --json` has no schema"


def test_boot_documents(tmp_path: Path) -> None:
    import shutil

    import pytest

    if shutil.which("systemd-analyze") is None:
        pytest.skip("boot install verifies its unit with systemd-analyze, which is not installed")
    host = tmp_path / "b"
    one_document(invoke("init", str(host), "--yes", "--name", "schema-b", "--port", "18955",
                        "--runtime", "native", "--json"), "init")
    units = {"XDG_CONFIG_HOME": str(tmp_path / "config-home")}  # never the user's own units
    printed = one_document(invoke("boot", "install", "--dir", str(host), "--user", "--print", "--json",
                                  env=units), "boot-install")
    assert printed["written"] is False and not (tmp_path / "config-home").exists()
    removed = one_document(invoke("boot", "remove", "--dir", str(host), "--user", "--json", env=units),
                           "boot-remove")
    assert removed["removed"] is False
