"""The native proxy's admin endpoint: a unix socket (mode 0600) in the host's private state
directory, never a TCP port; Docker's proxy keeps none. Checked on the rendered Caddyfile,
by Caddy itself, and on a running Caddy (the socket's mode, a graceful reload through it)."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from pixsim_host import tls
from pixsim_host.config import HostConfig, new_host_config
from pixsim_host.errors import HostError
from pixsim_host.hostdir import HostDir
from pixsim_host.render import render_host
from pixsim_host.runtime import native_candidate


def config(runtime: str) -> HostConfig:
    return new_host_config(name="Admin socket", runtime=runtime, model="friend",
                           backend={"bind": "127.0.0.1", "port": 8000},
                           tls={"mode": "internal", "port": 8443})


def caddyfile(tmp_path: Path, host_config: HostConfig) -> str:
    return render_host(HostDir(tmp_path), host_config).files[tls.CADDYFILE]


def test_native_caddyfile_has_a_unix_admin_socket(tmp_path: Path) -> None:
    text = caddyfile(tmp_path, config("native"))
    assert '\tadmin "unix/admin.sock|0600"\n' in text
    assert "admin off" not in text
    assert "no other local user may reconfigure the proxy" in text
    assert "localhost:2019" not in text and "tcp/" not in text.split("admin", 1)[1].split("\n", 1)[0]


def test_docker_caddyfile_keeps_no_admin_endpoint(tmp_path: Path) -> None:
    text = caddyfile(tmp_path, config("docker"))
    assert "\tadmin off\n" in text and "admin.sock" not in text


def test_the_socket_is_in_the_private_state_directory(tmp_path: Path) -> None:
    host = HostDir(tmp_path)
    assert tls.admin_socket(host) == host.state_dir / "caddy-config" / "admin.sock"
    assert tls.admin_socket(host).parent == tls.config_dir(host)


def test_the_switch_caddyfile_differs_only_in_the_upstream(tmp_path: Path) -> None:
    host_config = config("native")
    own = caddyfile(tmp_path, host_config)
    switched = caddyfile(tmp_path, native_candidate.with_backend_port(host_config, 8123))
    assert "reverse_proxy 127.0.0.1:8000\n" in own
    assert switched == own.replace("reverse_proxy 127.0.0.1:8000\n", "reverse_proxy 127.0.0.1:8123\n")


def test_caddy_validates_the_native_caddyfile(tmp_path: Path) -> None:
    path = tmp_path / "Caddyfile"
    path.write_text(caddyfile(tmp_path, config("native")), encoding="utf-8")
    problem = tls.validate_caddyfile(tls.caddy_binary(config("native")), path, tmp_path / "work")
    assert problem is None, problem


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_running_proxy_is_reloaded_through_its_socket_only(tmp_path: Path) -> None:
    """A plain-HTTP Caddyfile with the rendered admin line: the socket is 0600 in the 0700
    directory, reload_proxy switches the upstream, and a refused config says so in one line."""
    host = HostDir(tmp_path)
    host_config = config("native")
    binary = tls.caddy_binary(host_config)
    workdir = tls.config_dir(host)
    workdir.mkdir(parents=True)
    os.chmod(workdir, 0o700)
    port = _free_port()
    admin = f'admin "{tls.ADMIN_SOCKET_ADDRESS}"'
    assert admin in caddyfile(tmp_path, host_config)

    def site(answer: str) -> str:
        return (f"{{\n\t{admin}\n\tpersist_config off\n}}\n"
                f"http://127.0.0.1:{port} {{\n\trespond \"{answer}\"\n}}\n")

    first, second, broken = tmp_path / "one", tmp_path / "two", tmp_path / "broken"
    first.write_text(site("one"), encoding="utf-8")
    second.write_text(site("two"), encoding="utf-8")
    broken.write_text("{\n\tnot_a_directive\n}\n", encoding="utf-8")
    proxy = subprocess.Popen([str(binary), "run", "--config", str(first), "--adapter", "caddyfile"],
                             cwd=workdir, env=tls.caddy_environment(host),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not tls.admin_socket(host).exists():
            assert proxy.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        assert stat.S_IMODE(tls.admin_socket(host).stat().st_mode) == 0o600
        assert stat.S_IMODE(workdir.stat().st_mode) == 0o700

        def answer() -> str:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                conn.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                return conn.makefile("rb").read().decode().rsplit("\r\n", 1)[-1]

        while True:
            try:
                assert answer() == "one"
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        tls.reload_proxy(host_config, host, second)
        assert answer() == "two"
        with pytest.raises(HostError, match="the proxy refused the new configuration"):
            tls.reload_proxy(host_config, host, broken)
        assert answer() == "two"  # a refused config changes nothing
    finally:
        proxy.terminate()
        proxy.wait(timeout=20)
