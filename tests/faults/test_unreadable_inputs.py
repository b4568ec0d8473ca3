"""Every file and reply pixsim-host parses, made hostile: deeply nested, not UTF-8, huge.

Each must end in exactly one ``Error:`` line naming what was read and what to do, a
non-zero exit code and nothing changed on disk; never a traceback (a RecursionError from
the YAML composer or the json module was the old outcome of a 4 KB file).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from unit_helpers import MakeHost, Result, run_cli, snapshot

from pixsim_host import safeload
from pixsim_host.errors import HostError

DEEP_JSON = "[" * 3000 + "]" * 3000  # 6 KB
DEEP_YAML_FLOW = "a: " + "[" * 2000 + "]" * 2000  # 4 KB
DEEP_YAML_BLOCK = "".join(" " * i + f"k{i}:\n" for i in range(90)) + " " * 90 + "v: 1\n"


def assert_one_error_line(result: Result, *fragments: str) -> None:
    assert result.returncode != 0, str(result)
    assert "Traceback" not in result.output, str(result)
    assert result.stderr.startswith("Error: "), str(result)
    assert result.stderr.count("\n") == 1, str(result)
    for fragment in fragments:
        assert fragment in result.stderr, str(result)


def home() -> Path:
    return Path(os.environ["PIXSIM_HOST_HOME"])


# ---- the reader itself ---------------------------------------------------------------------


@pytest.mark.parametrize("text", [DEEP_JSON, '{"a":' * 2000 + "1" + "}" * 2000])
def test_deep_json_is_refused_before_the_parser_recurses(text: str) -> None:
    with pytest.raises(HostError) as caught:
        safeload.parse_json(text, "the thing", "do this")
    assert str(caught.value) == ("the thing nests deeper than 64 levels, which no real one does; "
                                 "do this")


def test_brackets_inside_json_strings_do_not_count_as_nesting() -> None:
    assert safeload.parse_json('{"a": "[[[[[[[[' + "[" * 100 + '\\"]"}', "x", "y") == {
        "a": "[" * 108 + '"]'}


@pytest.mark.parametrize(("text", "message"), [
    (DEEP_YAML_FLOW, "nests deeper than 64 levels"),
    (DEEP_YAML_BLOCK, "nests deeper than 64 levels"),
    ("a: &x [*x]\n", "a YAML alias that contains itself (*x)"),
    ("a: &x [1]\n" + "".join(f"b{i}: *x\n" for i in range(101)), "more than 100 YAML aliases"),
    ("a: 2026-13-45\n", "holds a value that cannot be read (month must be in 1..12)"),
    ("a: " + "9" * 5000 + "\n", "holds a value that cannot be read"),
])
def test_yaml_that_the_parser_cannot_take_is_one_error(text: str, message: str) -> None:
    with pytest.raises(HostError) as caught:
        safeload.parse_yaml(text, "the file", "fix it")
    assert message in str(caught.value)
    assert str(caught.value).startswith("the file ") and str(caught.value).endswith("; fix it")


def test_size_and_encoding_limits(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_bytes(b" " * 101)
    with pytest.raises(HostError, match=r"^the registry .*big.json is larger than 100 bytes"):
        safeload.load_json(big, "the registry", "move it aside", limit=100)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(HostError) as caught:
        safeload.load_yaml(latin, "the config", "fix it")
    assert str(caught.value) == f"the config {latin} is not UTF-8 text (byte 9); fix it"
    assert safeload.load_json(tmp_path / "missing.json", "x", "y", missing_ok=True) is None


# ---- through the commands ------------------------------------------------------------------


DATA_FILES = {  # file in the data directory: (command that reads it, what errors call it)
    "hosts.json": (("hosts", "list"), "the host registry"),
    "known-hosts.json": (("connect", "--list"), "the known-hosts file"),
}


@pytest.mark.parametrize("name", sorted(DATA_FILES))
@pytest.mark.parametrize(("content", "fragment"), [
    (DEEP_JSON.encode(), "nests deeper than 64 levels"),
    (b'{"version": 1, "hosts": {"\xff": 1}}', "is not UTF-8 text (byte 26)"),
    (b"\xfe\xff\x00{", "is not UTF-8 text (byte 0)"),
    (b"{" * 10 + b"\x00", "is not valid JSON"),
    (b"[]", "not a JSON object"),
])
def test_a_damaged_data_file_is_one_error(name: str, content: bytes, fragment: str) -> None:
    command, what = DATA_FILES[name]
    path = home() / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    result = run_cli(*command)
    assert_one_error_line(result, what, str(path), fragment, "move it aside")
    assert path.read_bytes() == content


@pytest.mark.parametrize(("content", "fragment"), [
    (DEEP_YAML_FLOW.encode(), "nests deeper than 64 levels"),
    (DEEP_YAML_BLOCK.encode(), "nests deeper than 64 levels"),
    (b"name: \xff\xfe\n", "is not UTF-8 text (byte 6)"),
    (b"host_id: &a [*a]\n", "contains itself"),
])
def test_a_hostile_host_config_is_one_error(make_host: MakeHost, content: bytes, fragment: str) -> None:
    host = make_host()
    (host / "pixsim-host.yaml").write_bytes(content)
    before = snapshot(host)
    for command in (["info"], ["config", "show"], ["render", "--check"]):
        result = run_cli(*command, "--dir", str(host))
        assert_one_error_line(result, fragment)
        assert "pixsim-host.yaml" in result.stderr
    assert snapshot(host) == before


def test_a_config_over_the_size_limit_is_one_error(make_host: MakeHost) -> None:
    host = make_host()
    config = host / "pixsim-host.yaml"
    config.write_bytes(config.read_bytes() + b"#" * safeload.MAX_FILE_BYTES)
    result = run_cli("info", "--dir", str(host))
    assert_one_error_line(result, "the host config", "is larger than 4194304 bytes")


def _bundle(path: Path, manifest: bytes) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        archive.addfile(info, io.BytesIO(manifest))
    return path


@pytest.mark.parametrize(("manifest", "fragment"), [
    (json.dumps({"format": "pixsim-host-bundle", "x": json.loads("[" * 60 + "]" * 60)}).encode()
     .replace(b"[]", b"[" * 10 + b"]" * 10), "nests deeper than 64 levels"),
    (b'{"format": "\xc3\x28"}', "is not UTF-8 text"),
    (b'{"format": ' + b"1" * 5000 + b"}", "is not valid JSON"),
])
def test_a_hostile_bundle_manifest_is_one_error(tmp_path: Path, manifest: bytes, fragment: str) -> None:
    bundle = _bundle(tmp_path / "evil.tar.gz", manifest)
    target = tmp_path / "restored"
    result = run_cli("restore", str(bundle), "--dir", str(target), "--yes")
    assert_one_error_line(result, "evil.tar.gz: manifest.json", fragment)
    assert not target.exists()


def test_a_plugin_manifest_the_parser_cannot_take_reads_as_none(tmp_path: Path) -> None:
    from pixsim_host.plugins import static_manifest

    folder = tmp_path / "plugin"
    (folder / "backend").mkdir(parents=True)
    for source in ("manifest = " + "-" * 200000 + "1\n",  # the compiler recurses per operator
                   "manifest = " + "(" * 300 + ")" * 300 + "\n",
                   "manifest = {'id': " + "[" * 150 + "]" * 150 + "}\n"):
        (folder / "backend" / "manifest.py").write_text(source, encoding="utf-8")
        assert static_manifest(folder) in (None, {"id": json.loads("[" * 150 + "]" * 150)}, {})


def test_a_hostile_compose_file_is_one_error(tmp_path: Path) -> None:
    from pixsim_host.runtime.compose import load_project

    compose = tmp_path / "compose.yaml"
    compose.write_text("services: " + "[" * 500 + "]" * 500 + "\n", encoding="utf-8")
    with pytest.raises(HostError) as caught:
        load_project(compose, {})
    assert str(caught.value) == ("compose.yaml nests deeper than 64 levels, which no real one does; "
                                 "run `pixsim-host render`")
