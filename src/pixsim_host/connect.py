"""The client side: check a host at a URL speaks the contract, and remember who it is.

``connect URL`` fetches ``/api/v1/server/info`` and ``/api/v1/version`` and pins the answer's
``server_id`` (the host_id) to the URL in ``known-hosts.json`` in the data directory, trust on
first use like SSH. A known URL that later answers with another host_id is refused until the
user re-pins it: the worlds and sessions they had there belong to the old host.

A host_id is not a secret, so pinning catches a different host at a familiar address
(a reinstall, a DHCP reshuffle, a mistyped port), not an attacker who copies the id; TLS
(an https:// URL) is what authenticates a host.

Everything fetched is bounded (see webclient): connect and read timeouts plus one overall
deadline across both requests, their headers and bodies (a server dripping one header line
at a time cannot hold us), a cap on the body size (counted after decompression), JSON
nesting depth, redirects followed only within the same origin, JSON objects required.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

from pixsim_host import webclient as web
from pixsim_host.errors import HostError
from pixsim_host.webclient import WebClient

KNOWN_HOSTS_FILE = "known-hosts.json"
KNOWN_HOSTS_VERSION = 1
TIMEOUT = 5.0  # per connect / read
DEADLINE = 10.0  # per request, whatever the server does
MAX_BYTES = 256 * 1024  # a contract answer is a few hundred bytes
MAX_REDIRECTS = 3
SUPPORTED_API = ("v1",)
IDENTITY_CHANGED_EXIT = 3
_UNPRINTABLE = web.UNPRINTABLE
printable = web.safe_text  # a string from the network, safe to print


# ---- URLs ----------------------------------------------------------------------------------


def normalize_url(raw: str) -> str:
    """``raw`` as a canonical backend base URL: scheme, lowercase host, port only if not the
    default, path prefix without a trailing slash. ``host:port`` alone means http://."""
    text = raw.strip()
    shown = printable(re.sub(r"//[^/@?#]*@", "//***@", text))  # never echo a password
    if not text:
        raise HostError("the URL is empty; give the host's backend URL, e.g. http://192.168.1.20:8000")
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise HostError(f"{shown!r} is not a valid URL ({exc}); "
                        "give it like http://192.168.1.20:8000") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise HostError(f"{shown!r} is not an http:// or https:// URL; a PixSim7 backend speaks HTTP")
    if not parts.hostname:
        raise HostError(f"{shown!r} has no host name; give it like http://192.168.1.20:8000")
    if parts.username is not None or parts.password is not None:
        raise HostError(f"{shown!r} contains a user name or password; a backend URL never "
                        "needs one, and it would be stored in plain text: remove it")
    if parts.query or parts.fragment:
        raise HostError(f"{shown!r} has a query or fragment (? or #); give the backend's "
                        "base URL only")
    if _UNPRINTABLE.search(text) or " " in text:
        raise HostError(f"{shown!r} contains spaces or control characters")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    default = 443 if scheme == "https" else 80
    netloc = host if port in (None, default) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), "", ""))


def origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


# ---- fetching --------------------------------------------------------------------------------


@dataclass
class RemoteHost:
    url: str
    server_id: str
    server_name: str
    description: str
    version: str
    api_version: str
    build_sha: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "url": self.url, "host_id": self.server_id, "name": self.server_name,
            "description": self.description, "version": self.version,
            "api_version": self.api_version, "build_sha": self.build_sha,
        }


def fetch_json(client: WebClient, base: str, path: str, *,
               max_bytes: int = MAX_BYTES) -> dict[str, Any]:
    """GET ``base + path`` as a JSON object, or a one-line HostError saying what went wrong.

    Redirects are followed only within the same origin; the client's deadline bounds the
    whole exchange, redirects included.
    """
    url = base + path
    first = url
    for _ in range(MAX_REDIRECTS + 1):
        try:
            reply = client.get(url, max_bytes=max_bytes)
            if reply.is_redirect:
                target = urljoin(url, reply.headers["location"])
                if origin(target) != origin(first):
                    raise HostError(
                        f"{first} redirects to another origin ({printable(target)}); refusing to "
                        "follow it. If that is where the host really is, connect to that URL"
                    )
                url = target
                continue
            if reply.status != 200:
                raise web.BadStatus(url, reply.status)
            return reply.json_object()
        except web.Timeout as exc:
            if exc.deadline_passed:
                raise HostError(f"{url} is answering too slowly (no complete answer after "
                                f"{client.deadline.seconds or 0:.0f} s); check the host and the "
                                "network") from None
            if exc.phase == "connect":
                raise HostError(f"connecting to {url} timed out; check the address and port, and "
                                "that the host is up and reachable from here (firewall, VPN)") from None
            raise HostError(f"{url} accepted the connection but did not answer in time; the host "
                            "may be overloaded or not a PixSim7 backend") from None
        except web.TLSFailure as exc:
            if "hostname mismatch" in exc.reason.lower() or "not valid for" in exc.reason:
                # Trusted or not, the certificate names another host: a CA would not help.
                raise HostError(f"cannot connect securely to {url}: {exc.reason}; use the name or "
                                "address the host's certificate is for (its tls.domain, which its "
                                "operator sets)") from None
            raise HostError(f"cannot connect securely to {url}: {exc.reason}; if the host uses its "
                            "own certificate, pass its CA with --ca-cert FILE") from None
        except (web.Refused, web.Unreachable) as exc:
            raise HostError(f"cannot connect to {url} ({exc.reason}); check the address and port, "
                            "and that the host is up (`pixsim-host status` on its machine)") from None
        except web.TooBig as exc:
            size = f"{exc.declared} bytes" if exc.declared is not None else f"more than {exc.limit} bytes"
            raise HostError(f"{url} answered {size}, far more than a PixSim7 contract answer "
                            f"(limit {exc.limit}); this is not a PixSim7 backend") from None
        except web.BadStatus as exc:
            hint = "this is not a PixSim7 backend, or not its base URL" if exc.status == 404 else \
                "the host is not healthy"
            raise HostError(f"{url} answered HTTP {exc.status}; {hint}") from None
        except web.TooDeep as exc:
            raise HostError(f"{url} {exc.reason}; this is not a PixSim7 backend") from None
        except web.NotJSON as exc:
            if exc.reason.endswith("not an object"):
                raise HostError(f"{url} answered JSON that is not an object; this is not a "
                                "PixSim7 backend") from None
            kind = "an HTML page" if exc.html else "something that is not JSON"
            raise HostError(f"{url} answered {kind}; this is not a PixSim7 backend's base URL "
                            "(the frontend's URL instead of the backend's?)") from None
    raise HostError(f"{first} redirects more than {MAX_REDIRECTS} times; check the URL")


def make_client(ca_cert: Path | None = None, timeout: float = TIMEOUT,
                deadline: float = DEADLINE) -> WebClient:
    # One deadline for the whole conversation with the host (both contract requests).
    return WebClient(timeout=timeout, deadline=deadline, max_bytes=MAX_BYTES,
                     verify=web.tls_context(ca_cert))


def _text(data: dict[str, Any], key: str, where: str, *, required: bool = True) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise HostError(f"{where} has no valid {key!r}; this host does not speak the PixSim7 host "
                        "contract (an old or modified backend?)")
    return value


def fetch_remote(url: str, *, ca_cert: Path | None = None, timeout: float = TIMEOUT,
                 deadline: float = DEADLINE, max_bytes: int = MAX_BYTES) -> RemoteHost:
    """What the host at ``url`` (normalized) says it is, checked against the contract."""
    with make_client(ca_cert, timeout, deadline) as client:
        info = fetch_json(client, url, "/api/v1/server/info", max_bytes=max_bytes)
        where = f"{url}/api/v1/server/info"
        server_id = _text(info, "server_id", where)
        if len(server_id) > 200 or _UNPRINTABLE.search(server_id):
            raise HostError(f"{where} has a server_id that is not a host id; this is not a PixSim7 host")
        name = _text(info, "server_name", where, required=False)
        description = _text(info, "server_description", where, required=False)
        api_version = _text(info, "api_version", where)
        version_data = fetch_json(client, url, "/api/v1/version", max_bytes=max_bytes)
    # /api/v1/version's "api_version" is the application's version in PixSim7 ("0.1.0"),
    # not the API generation: server info's api_version ("v1") is the one that decides.
    _text(version_data, "api_version", f"{url}/api/v1/version")
    if api_version not in SUPPORTED_API:
        raise HostError(f"{url} speaks API {printable(api_version)!r}; this pixsim-host and client "
                        f"speak {', '.join(SUPPORTED_API)}: update the one that is older")
    sha = version_data.get("build_sha")
    return RemoteHost(
        url=url, server_id=server_id, server_name=printable(name or "(unnamed)"),
        description=printable(description, 300), version=printable(str(info.get("version") or "?")),
        api_version=api_version, build_sha=printable(sha) if isinstance(sha, str) else None,
    )


# ---- known hosts ---------------------------------------------------------------------------


def known_hosts_path() -> Path:
    from pixsim_host.hosts import data_dir

    return data_dir() / KNOWN_HOSTS_FILE


_FIX_KNOWN = "move it aside (you will confirm each remote host again at its next `pixsim-host connect`)"


def load_known(path: Path | None = None) -> dict[str, dict[str, Any]]:
    from pixsim_host.hosts import read_json_file

    path = path or known_hosts_path()
    data = read_json_file(path, "the known-hosts file", _FIX_KNOWN)
    if data is None:
        return {}
    hosts = data.get("hosts")
    if data.get("version") != KNOWN_HOSTS_VERSION or not isinstance(hosts, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("host_id"), str) for v in hosts.values()
    ):
        raise HostError(f"the known-hosts file {path} is damaged or from another version; {_FIX_KNOWN}")
    return hosts


@contextmanager
def edit_known() -> Iterator[dict[str, dict[str, Any]]]:
    from pixsim_host.fsutil import atomic_write
    from pixsim_host.hosts import data_lock

    path = known_hosts_path()
    with data_lock(path, "the known-hosts file"):
        hosts = load_known(path)
        before = json.dumps(hosts, sort_keys=True)
        yield hosts
        if json.dumps(hosts, sort_keys=True) != before:
            data = {"version": KNOWN_HOSTS_VERSION, "hosts": dict(sorted(hosts.items()))}
            atomic_write(path, json.dumps(data, indent=2) + "\n", mode=0o600)


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


@dataclass
class ConnectResult:
    remote: RemoteHost
    outcome: str  # "new", "known" or "re-pinned"
    first_seen: float
    previous: dict[str, Any] | None  # the old pin when re-pinned
    also_known_at: list[str]


def connect(raw_url: str, *, accept_new_identity: bool = False, ca_cert: Path | None = None,
            timeout: float = TIMEOUT, deadline: float = DEADLINE) -> ConnectResult:
    url = normalize_url(raw_url)
    remote = fetch_remote(url, ca_cert=ca_cert, timeout=timeout, deadline=deadline)
    now = time.time()
    with edit_known() as known:
        pinned = known.get(url)
        previous = None
        if pinned is None:
            outcome, first_seen = "new", now
        elif pinned["host_id"] == remote.server_id:
            outcome, first_seen = "known", float(pinned.get("first_seen", now))
        elif not accept_new_identity:
            old_name = printable(str(pinned.get("name", "?")))
            raise HostError(
                f"IDENTITY CHANGED: {url} now answers as host {remote.server_id} "
                f"({remote.server_name!r}), but it was host {pinned['host_id']} ({old_name!r}) when "
                f"you connected on {_when(float(pinned.get('first_seen', 0)))}. This is a different "
                "host (reinstalled, another machine at that address, or one pretending); your worlds "
                "and sessions there are not on it. Nothing was changed. If you expected this, run "
                f"`pixsim-host connect {url} --accept-new-identity`",
                exit_code=IDENTITY_CHANGED_EXIT,
            )
        else:
            outcome, first_seen, previous = "re-pinned", now, dict(pinned)
        known[url] = {
            "host_id": remote.server_id, "name": remote.server_name,
            "api_version": remote.api_version, "version": remote.version,
            "first_seen": first_seen, "last_seen": now,
        }
        others = sorted(u for u, e in known.items() if e["host_id"] == remote.server_id and u != url)
    return ConnectResult(remote, outcome, first_seen, previous, others)


def forget_known(raw_url: str) -> dict[str, Any]:
    url = normalize_url(raw_url)
    with edit_known() as known:
        entry = known.pop(url, None)
    if entry is None:
        raise HostError(f"{url} is not a known host; see `pixsim-host connect --list`")
    return entry


# ---- the client's configuration ------------------------------------------------------------


def write_env_file(path: Path, url: str) -> bool:
    """Set ``VITE_BACKEND_URL`` in a client .env file, keeping its other lines; True if changed."""
    from pixsim_host.fsutil import atomic_write

    line = f"VITE_BACKEND_URL={url}"
    try:
        current = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        current, mode = "", 0o644
    except (OSError, UnicodeDecodeError) as exc:
        raise HostError(f"cannot read {path} ({exc}); give a writable .env file for --env-file") from None
    pattern = re.compile(r"^\s*(export\s+)?VITE_BACKEND_URL\s*=")
    lines: list[str] = []
    replaced = False
    for existing in current.splitlines():
        if not pattern.match(existing):
            lines.append(existing)
        elif not replaced:  # the first assignment becomes ours; later ones would override it
            lines.append(line)
            replaced = True
    if not replaced:
        lines.append(line)
    text = "\n".join(lines) + "\n"
    if text == current:
        return False
    try:
        atomic_write(path, text, mode=mode)
    except OSError as exc:
        raise HostError(f"cannot write {path} ({exc.strerror}); check the directory") from None
    return True
