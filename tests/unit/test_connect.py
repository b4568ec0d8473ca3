"""``connect URL``: trust on first use, a changed identity refused, the client config, and
every way a URL can fail (timeouts, TLS, redirects elsewhere, non-JSON, huge answers) as one
clear error in bounded time. The hosts here are small servers on 127.0.0.1 started by the
tests; tests/e2e/test_hosts_e2e.py connects to a real host brought up with ``up``.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_hosts_fakes import FakeBackend, fake_backend, held_port, silent_listener
from unit_helpers import Result, assert_clean_failure, run_cli


def known_file() -> Path:
    return Path(os.environ["PIXSIM_HOST_HOME"]) / "known-hosts.json"


def known() -> dict[str, dict[str, object]]:
    hosts = json.loads(known_file().read_text(encoding="utf-8"))["hosts"]
    assert isinstance(hosts, dict)
    return hosts


def timed(*args: str) -> tuple[Result, float]:
    started = time.monotonic()
    result = run_cli(*args)
    return result, time.monotonic() - started


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert_clean_failure(result)
    assert result.stderr.count("\n") == 1, str(result)
    for fragment in fragments:
        assert fragment in result.stderr, str(result)


# ---- trust on first use ----------------------------------------------------------------------


def test_first_use_same_identity_and_changed_identity(tmp_path: Path) -> None:
    first_id, second_id = str(uuid.uuid4()), str(uuid.uuid4())
    with fake_backend(first_id, "Friday game night") as backend:
        url = backend.url
        first = run_cli("connect", url)
        assert first.returncode == 0, str(first)
        assert "First connection" in first.stdout and first_id in first.stdout
        assert "Friday game night" in first.stdout
        assert f"VITE_BACKEND_URL={url}" in first.stdout
        assert known()[url]["host_id"] == first_id
        assert stat.S_IMODE(known_file().stat().st_mode) == 0o600

        again = run_cli("connect", url + "/")  # the same URL, written differently
        assert again.returncode == 0, str(again)
        assert "the same host as before" in again.stdout

        backend.server_id, backend.name = second_id, "Someone else"
        before = known_file().read_bytes()
        refused = run_cli("connect", url, "--env-file", str(tmp_path / "client.env"))
        assert refused.returncode == 3, str(refused)
        assert_one_line_error(refused, "IDENTITY CHANGED", first_id, second_id, "--accept-new-identity")
        assert known_file().read_bytes() == before, "a refused identity changes nothing"
        assert not (tmp_path / "client.env").exists()

        repinned = run_cli("connect", url, "--accept-new-identity")
        assert repinned.returncode == 0, str(repinned)
        assert "Re-pinned" in repinned.stdout and first_id in repinned.stdout
        assert known()[url]["host_id"] == second_id
        assert run_cli("connect", url).returncode == 0  # the new identity is the known one now


def test_list_json_and_forget() -> None:
    ids = [str(uuid.uuid4()) for _ in range(2)]
    with fake_backend(ids[0], "One") as one, fake_backend(ids[1], "Two") as two:
        for backend in (one, two):
            assert run_cli("connect", backend.url).returncode == 0
        listed = run_cli("connect", "--list")
        assert listed.returncode == 0
        assert one.url in listed.stdout and two.url in listed.stdout and ids[1] in listed.stdout
        data = json.loads(run_cli("connect", "--list", "--json").stdout)
        assert {h["backend_url"]: h["host_id"] for h in data["hosts"]} == {one.url: ids[0], two.url: ids[1]}
        report = json.loads(run_cli("connect", one.url, "--json").stdout)
        assert report["host_id"] == ids[0] and report["outcome"] == "known"
        assert report["frontend"] == f"VITE_BACKEND_URL={one.url}"

        forgot = run_cli("connect", one.url, "--forget")
        assert forgot.returncode == 0, str(forgot)
        assert list(known()) == [two.url]
        assert_one_line_error(run_cli("connect", one.url, "--forget"), "not a known host")
    empty_home = run_cli("connect", "--list")
    assert empty_home.returncode == 0


def test_env_file_sets_the_backend_line_and_keeps_the_rest(tmp_path: Path) -> None:
    env_file = tmp_path / ".env.local"
    env_file.write_text("# my client\nVITE_OTHER=1\nVITE_BACKEND_URL=http://old:8000\n"
                        "export VITE_BACKEND_URL=http://older:8000\nVITE_LAST=2\n")
    env_file.chmod(0o640)
    with fake_backend(str(uuid.uuid4())) as backend:
        result = run_cli("connect", backend.url, "--env-file", str(env_file))
        assert result.returncode == 0, str(result)
        assert f"Wrote {env_file}" in result.stdout
        assert env_file.read_text() == (f"# my client\nVITE_OTHER=1\nVITE_BACKEND_URL={backend.url}\n"
                                        "VITE_LAST=2\n")
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o640
        again = run_cli("connect", backend.url, "--env-file", str(env_file))
        assert "Already set" in again.stdout
        fresh = tmp_path / "new" / ".env"
        assert run_cli("connect", backend.url, "--env-file", str(fresh)).returncode == 0
        assert fresh.read_text() == f"VITE_BACKEND_URL={backend.url}\n"


def test_text_from_the_network_is_made_safe_to_print() -> None:
    with fake_backend(str(uuid.uuid4()), "Evil\x1b[2J\x1b]0;owned\x07 host\u202e") as backend:
        result = run_cli("connect", backend.url)
    assert result.returncode == 0, str(result)
    assert "\x1b" not in result.output and "\x07" not in result.output and "\u202e" not in result.output
    assert "Evil?[2J?]0;owned? host?" in result.stdout


def test_same_origin_redirects_are_followed() -> None:
    with fake_backend(str(uuid.uuid4()), mode="redirect-same") as backend:
        result = run_cli("connect", backend.url)
        assert result.returncode == 0, str(result)
        assert "/v2/api/v1/server/info" in backend.requests


# ---- URLs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "normal"), [
    ("127.0.0.1:8000", "http://127.0.0.1:8000"),
    ("HTTP://Example.COM:80/", "http://example.com"),
    ("https://pixsim.example.org:443/game/", "https://pixsim.example.org/game"),
    ("http://[::1]:8001", "http://[::1]:8001"),
    ("  http://192.168.1.20:8000  ", "http://192.168.1.20:8000"),
])
def test_urls_are_normalized(raw: str, normal: str) -> None:
    from pixsim_host.connect import normalize_url

    assert normalize_url(raw) == normal


@pytest.mark.parametrize(("raw", "problem"), [
    ("", "empty"), ("ftp://host", "http:// or https://"), ("http://user:secret@host", "password"),
    ("http://host/?x=1", "query"), ("http://host:99999", "not a valid URL"), ("http://", "no host"),
    ("http://me:secret@host:99999", "not a valid URL"),
])
def test_bad_urls_are_refused(raw: str, problem: str) -> None:
    result = run_cli("connect", raw)
    assert_one_line_error(result, problem)
    assert "secret" not in result.stderr


# ---- every failure: one clear line, never a hang -------------------------------------------------


def test_nothing_listening() -> None:
    with held_port() as port:
        pass
    result, elapsed = timed("connect", f"http://127.0.0.1:{port}")
    assert_one_line_error(result, "connection refused")
    assert elapsed < 5


def test_a_server_that_never_answers_times_out() -> None:
    with silent_listener() as port:
        result, elapsed = timed("connect", f"http://127.0.0.1:{port}", "--timeout", "1")
    assert_one_line_error(result, "did not answer in time")
    assert elapsed < 5, elapsed
    with fake_backend("x", mode="hang") as backend:
        result, elapsed = timed("connect", backend.url, "--timeout", "1")
    assert_one_line_error(result, "did not answer in time")
    assert elapsed < 5, elapsed


def test_a_server_dripping_bytes_hits_the_deadline() -> None:
    from pixsim_host.connect import fetch_remote
    from pixsim_host.errors import HostError

    with fake_backend("x", mode="drip") as backend:
        started = time.monotonic()
        with pytest.raises(HostError, match="answering too slowly"):
            fetch_remote(backend.url, timeout=1.0, deadline=1.5)
        assert time.monotonic() - started < 4


@pytest.mark.parametrize(("mode", "fragments"), [
    ("html", ["an HTML page", "not a PixSim7 backend"]),
    ("array", ["not an object"]),
    ("404", ["HTTP 404"]),
    ("huge", ["bytes", "far more than"]),
    ("huge-chunked", ["more than", "not a PixSim7 backend"]),
])
def test_answers_that_are_not_the_contract(mode: str, fragments: list[str]) -> None:
    with fake_backend("x", mode=mode) as backend:
        result, elapsed = timed("connect", backend.url)
    assert_one_line_error(result, *fragments)
    assert elapsed < 10
    assert not known_file().exists() or known() == {}


def test_a_redirect_to_another_origin_is_refused() -> None:
    with fake_backend(str(uuid.uuid4())) as elsewhere, \
            fake_backend("x", mode="redirect-other", redirect_to=f"http://localhost:{0}") as backend:
        backend.redirect_to = f"http://localhost:{elsewhere.port}"
        result = run_cli("connect", backend.url)
        assert_one_line_error(result, "redirects to another origin", f"localhost:{elsewhere.port}")
        assert elsewhere.requests == [], "the other origin is never contacted"


@pytest.mark.parametrize(("server_id", "api", "fragment"), [
    ("", "v1", "no valid 'server_id'"),
    ("x" * 300, "v1", "not a host id"),
    (str(uuid.uuid4()), "v9", "speaks API 'v9'"),
])
def test_a_host_that_does_not_speak_the_contract(server_id: str, api: str, fragment: str) -> None:
    with fake_backend(server_id, api_version=api) as backend:
        result = run_cli("connect", backend.url)
    assert_one_line_error(result, fragment)


def test_a_damaged_known_hosts_file_is_one_clear_error() -> None:
    known_file().parent.mkdir(parents=True, exist_ok=True)
    known_file().write_text("{not json")
    with fake_backend(str(uuid.uuid4())) as backend:
        result = run_cli("connect", backend.url)
    assert_one_line_error(result, "known-hosts file", "damaged")


# ---- TLS ---------------------------------------------------------------------------------------


def test_https_to_a_plain_http_server_is_a_tls_error() -> None:
    with fake_backend(str(uuid.uuid4())) as backend:
        result, elapsed = timed("connect", f"https://127.0.0.1:{backend.port}")
    assert_one_line_error(result, "cannot connect securely", "TLS")
    assert elapsed < 10


@pytest.fixture
def tls_backend(tmp_path: Path) -> Iterator[tuple[FakeBackend, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a self-signed certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    backend = FakeBackend(str(uuid.uuid4()), "TLS host")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    backend.httpd.socket = context.wrap_socket(backend.httpd.socket, server_side=True)
    try:
        yield backend, cert
    finally:
        backend.close()


def test_an_untrusted_certificate_then_its_ca(tls_backend: tuple[FakeBackend, Path]) -> None:
    backend, cert = tls_backend
    url = f"https://127.0.0.1:{backend.port}"
    result = run_cli("connect", url)
    assert_one_line_error(result, "certificate is not trusted", "--ca-cert")
    trusted = run_cli("connect", url, "--ca-cert", str(cert))
    assert trusted.returncode == 0, str(trusted)
    assert "First connection" in trusted.stdout and backend.server_id in trusted.stdout


def test_fake_servers_stop_cleanly() -> None:
    # The hang and drip servers release their handler threads when closed.
    before = threading.active_count()
    with fake_backend("x", mode="hang") as backend, silent_listener():
        run_cli("connect", backend.url, "--timeout", "0.5")
    time.sleep(0.3)
    assert threading.active_count() <= before + 1
