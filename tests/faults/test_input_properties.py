"""Property: whatever becomes of a file pixsim-host reads, a command ends in success or in
exactly one ``Error:`` line, never a traceback.

Every file the tool parses (pixsim-host.yaml, .env, compose.yaml, the host registry, the
known-hosts file, a bundle's manifest, a plugin's manifest) is replaced by a random mutation
of a valid one: nested thousands of levels deep (JSON, YAML flow and block style), bytes that
are not UTF-8 spliced in, truncated, padded past the size limit, or random bytes.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from unit_helpers import Result, run_cli

from pixsim_host import safeload
from pixsim_host.errors import HostError

EXAMPLES = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


def _nest(kind: str, depth: int) -> bytes:
    if kind == "json-list":
        return b"[" * depth + b"]" * depth
    if kind == "json-object":
        return b'{"a":' * depth + b"1" + b"}" * depth
    if kind == "yaml-block":
        return b"".join(b" " * i + b"k:\n" for i in range(depth)) + b" " * depth + b"v: 1\n"
    return b"a: " + b"[" * depth + b"]" * depth  # YAML flow


@st.composite
def mutations(draw: st.DrawFn, base: bytes) -> bytes:
    choice = draw(st.sampled_from(["nest", "nest-inside", "splice", "truncate", "pad", "random"]))
    if choice == "nest":
        kind = draw(st.sampled_from(["json-list", "json-object", "yaml-block", "yaml-flow"]))
        return _nest(kind, draw(st.integers(min_value=50, max_value=3000)))
    if choice == "nest-inside":  # a valid file with one value replaced by a deep structure
        depth = draw(st.integers(min_value=50, max_value=2000))
        at = draw(st.integers(min_value=0, max_value=len(base)))
        return base[:at] + b"[" * depth + b"]" * depth + base[at:]
    if choice == "splice":
        junk = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x00", b"\xfe\xff",
                                     b"\x1b[31m", b"\xe2\x80\xae"]))
        at = draw(st.integers(min_value=0, max_value=len(base)))
        return base[:at] + junk + base[at:]
    if choice == "truncate":
        return base[:draw(st.integers(min_value=0, max_value=max(0, len(base) - 1)))]
    if choice == "pad":
        return base + b"#" * (safeload.MAX_FILE_BYTES + 1)
    return draw(st.binary(max_size=3000))


def assert_success_or_one_error(result: Result, *, details: bool = False) -> None:
    """``details``: the command may print more after its error line (render --check's diff,
    the list of a config's problems)."""
    assert "Traceback" not in result.output, result.output[:3000]
    if result.returncode != 0:
        assert result.stderr.startswith("Error: "), result.output[:3000]
        assert details or result.stderr.count("\n") == 1, result.output[:3000]


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("property-host")
    result = run_cli("init", str(root / "h"), "--yes", "--name", "property-host", "--port", "18950",
                     "--runtime", "docker")
    assert result.returncode == 0, str(result)
    return root / "h"


def _mutated(path: Path, content: bytes, check: Callable[[], None]) -> None:
    original = path.read_bytes() if path.exists() else None
    path.write_bytes(content)
    try:
        check()
    finally:
        if original is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(original)


HOST_FILES = {  # file in the host directory -> commands that read it, and whether their
    # errors may list details (a config's validation problems, one per line; a diff)
    "pixsim-host.yaml": ([("info",), ("config", "show")], True),
    ".env": ([("config", "show")], False),
    "compose.yaml": ([("render", "--check")], True),
}


@pytest.mark.parametrize("name", sorted(HOST_FILES))
def test_host_files(host: Path, name: str) -> None:
    path = host / name
    base = path.read_bytes()

    @EXAMPLES
    @given(content=mutations(base))
    def run(content: bytes) -> None:
        def check() -> None:
            commands, details = HOST_FILES[name]
            for command in commands:
                assert_success_or_one_error(run_cli(*command, "--dir", str(host)), details=details)
            if name == "compose.yaml":
                from pixsim_host.runtime.compose import load_project

                with contextlib.suppress(HostError):  # a HostError is the one failure allowed
                    load_project(path, {})

        _mutated(path, content, check)
        if name == ".env":
            os.chmod(path, 0o600)

    run()


DATA_FILES = {
    "hosts.json": (("hosts", "list"), {"version": 1, "hosts": []}),
    "known-hosts.json": (("connect", "--list"), {"version": 1, "hosts": {
        "http://127.0.0.1:8000": {"host_id": "x", "name": "n", "first_seen": 1.0, "last_seen": 2.0}}}),
}


@pytest.mark.parametrize("name", sorted(DATA_FILES))
def test_data_files(name: str) -> None:
    command, valid = DATA_FILES[name]
    base = json.dumps(valid, indent=2).encode()

    @EXAMPLES
    @given(content=mutations(base))
    def run(content: bytes) -> None:
        path = Path(os.environ["PIXSIM_HOST_HOME"]) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        _mutated(path, content, lambda: assert_success_or_one_error(run_cli(*command)))

    run()


def test_bundle_manifests(tmp_path: Path) -> None:
    base = json.dumps({"format": "pixsim-host-bundle", "format_version": 1, "members": {},
                       "origin": {"host_id": "x"}}, indent=2).encode()

    @EXAMPLES
    @given(content=mutations(base))
    def run(content: bytes) -> None:
        bundle = tmp_path / "b.tar.gz"
        with tarfile.open(bundle, "w:gz") as archive:
            info = tarfile.TarInfo("manifest.json")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
        target = tmp_path / "target"
        assert_success_or_one_error(run_cli("restore", str(bundle), "--dir", str(target), "--yes"))
        assert not target.exists()

    run()


def test_plugin_manifests(tmp_path: Path) -> None:
    from pixsim_host.plugins import static_manifest

    base = b"manifest = {'id': 'romance', 'name': 'Romance', 'dependencies': ['npcs']}\n"

    @EXAMPLES
    @given(content=mutations(base))
    def run(content: bytes) -> None:
        folder = tmp_path / "plugin"
        shutil.rmtree(folder, ignore_errors=True)
        (folder / "backend").mkdir(parents=True)
        (folder / "backend" / "manifest.py").write_bytes(content)
        found = static_manifest(folder)  # read without running it: a dict or nothing
        assert found is None or isinstance(found, dict)

    run()
