"""The machine-local registry of hosts: which hosts live on this machine, and where.

``hosts.json`` in the user's data directory (``$PIXSIM_HOST_HOME`` overrides it) lists every
host ``init`` created here: name, host_id, directory, model, backend URL and port. Writers
hold a file lock for the whole read-check-write and replace the file atomically, so any
number of concurrent ``init``s all land and a reader never sees half a file.

An entry *claims* its name (and Docker project) and its backend port until it is forgotten,
so two hosts on one machine never collide. The registry is an index, never the truth: a
host's own directory is. A directory moved or deleted behind the registry's back is
reported by ``hosts list`` and ``doctor``, never fatal to anything else.

Kept light at import: ``hosts list`` and ``--host NAME`` read the registry and each host's
config with plain JSON and YAML, without pydantic.
"""

from __future__ import annotations

import ipaddress
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pixsim_host.errors import HostError
from pixsim_host.hostdir import CONFIG_FILE, HostDir

if TYPE_CHECKING:
    from collections.abc import Callable

    from pixsim_host.config import HostConfig

HOME_ENV_VAR = "PIXSIM_HOST_HOME"
REGISTRY_FILE = "hosts.json"
REGISTRY_VERSION = 1
LOCK_TIMEOUT = 30.0
PROBE_TIMEOUT = 0.4  # every registered host is on this machine: a healthy one answers in ms
MAX_INFO_BYTES = 64 * 1024

# Statuses ``hosts list`` reports.
UP, DOWN, NO_ANSWER, WRONG_HOST, BAD_ANSWER = "up", "down", "no answer", "wrong host", "bad answer"
MISSING, NOT_A_HOST, OTHER_HOST = "directory missing", "not a host", "other host"


def data_dir() -> Path:
    """Where pixsim-host keeps per-user state: the registry and the known remote hosts."""
    override = os.environ.get(HOME_ENV_VAR)
    if override:
        return Path(override).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_data_dir("pixsim-host", appauthor=False))


def registry_path() -> Path:
    return data_dir() / REGISTRY_FILE


@contextmanager
def data_lock(path: Path, what: str) -> Iterator[None]:
    """Exclusive access to one file of the data directory (``<file>.lock`` beside it)."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(path) + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock.acquire(timeout=LOCK_TIMEOUT)
    except OSError as exc:
        raise HostError(
            f"cannot use pixsim-host's data directory {path.parent} ({exc.strerror or exc}); fix its "
            f"permissions, or point {HOME_ENV_VAR} at a writable directory"
        ) from None
    except Timeout:
        raise HostError(
            f"{what} {path} stayed locked for {LOCK_TIMEOUT:.0f} s by another pixsim-host command; "
            "retry when it has finished"
        ) from None
    try:
        yield
    finally:
        lock.release()


def read_json_file(path: Path, what: str, fix: str) -> dict[str, Any] | None:
    """A JSON object from ``path``, None when the file does not exist yet."""
    from pixsim_host import safeload

    damaged = f"the file is damaged: {fix}"
    text = safeload.read_text(path, what, damaged, missing_ok=True)
    if text is None:
        return None
    data = safeload.parse_json(text, f"{what} {path}", damaged)
    if not isinstance(data, dict):
        raise HostError(f"{what} {path} is damaged (not a JSON object); {fix}")
    return data


# ---- entries ----------------------------------------------------------------------------------


@dataclass
class HostEntry:
    name: str
    host_id: str
    directory: str
    model: str
    backend_url: str  # what clients use (public_url, else local_url)
    local_url: str  # what this machine probes
    port: int
    bind: str
    project: str
    registered_at: float = field(default_factory=time.time)
    # Other ports the host listens on (the native runtime's PostgreSQL and Redis).
    extra_ports: list[int] = field(default_factory=list)
    # The last upgrade or rollback that finished: kind, id, finished_at, and the versions
    # (images, checkout revision) before and after it. Written by upgrade, kept by record.
    versions: dict[str, Any] | None = None

    @property
    def all_ports(self) -> list[int]:
        return [self.port, *self.extra_ports]

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> HostEntry:
        if not isinstance(data, dict):
            raise ValueError("an entry is not an object")
        try:
            return cls(
                name=str(data["name"]), host_id=str(data["host_id"]),
                directory=str(data["directory"]), model=str(data.get("model", "self")),
                backend_url=str(data.get("backend_url", "")), local_url=str(data.get("local_url", "")),
                port=int(data["port"]), bind=str(data.get("bind", "127.0.0.1")),
                project=str(data.get("project", "")),
                registered_at=float(data.get("registered_at", 0.0)),
                extra_ports=[int(p) for p in data.get("extra_ports") or []],
                versions=data["versions"] if isinstance(data.get("versions"), dict) else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"an entry lacks or mangles {exc}") from None

    @classmethod
    def of(cls, host: HostDir, config: HostConfig) -> HostEntry:
        return cls(
            name=config.name, host_id=config.host_id, directory=str(host.root), model=config.model,
            backend_url=config.client_url, local_url=config.local_url, port=config.backend.port,
            bind=config.backend.bind, project=config.project, extra_ports=_extra_ports(config),
        )


def _extra_ports(config: HostConfig) -> list[int]:
    return _server_ports(config) + _http_service_ports(config)


def _http_service_ports(config: HostConfig) -> list[int]:
    """The ports of the host's HTTP services beside the backend (backend.services)."""
    from pixsim_host.services import resolve_http_services

    try:
        return [service.port for service in resolve_http_services(config)]
    except HostError:
        return []  # a declaration gone or broken: up and doctor say so


def _server_ports(config: HostConfig) -> list[int]:
    return [*config.local_service_ports, *config.tls_ports]


@dataclass
class Registry:
    path: Path
    entries: list[HostEntry]

    def find(self, key: str) -> HostEntry | None:
        """The entry named ``key`` (exactly, then ignoring case), or with that host_id."""
        for found in (
            [e for e in self.entries if e.name == key],
            [e for e in self.entries if e.host_id == key],
            [e for e in self.entries if e.name.casefold() == key.casefold()],
        ):
            if len(found) == 1:
                return found[0]
        return None

    def by_host_id(self, host_id: str) -> HostEntry | None:
        return next((e for e in self.entries if e.host_id == host_id), None)

    def port_claims(self, exclude_host_id: str | None = None) -> dict[int, HostEntry]:
        return {port: e for e in self.entries if e.host_id != exclude_host_id for port in e.all_ports}


_FIX_REGISTRY = (
    "move it aside and register your hosts again with `pixsim-host hosts add DIR` "
    "(host directories are not affected)"
)


def load_registry(path: Path | None = None) -> Registry:
    """The registry as it is now (no lock needed: writers replace the file atomically)."""
    path = path or registry_path()
    data = read_json_file(path, "the host registry", _FIX_REGISTRY)
    if data is None:
        return Registry(path, [])
    version = data.get("version")
    if version != REGISTRY_VERSION:
        raise HostError(
            f"the host registry {path} has version {version!r}, but this pixsim-host reads version "
            f"{REGISTRY_VERSION}; use the pixsim-host release that wrote it, or {_FIX_REGISTRY}"
        )
    hosts = data.get("hosts")
    if not isinstance(hosts, list):
        raise HostError(f"the host registry {path} is damaged (no host list); {_FIX_REGISTRY}")
    try:
        entries = [HostEntry.from_json(item) for item in hosts]
    except ValueError as exc:
        raise HostError(f"the host registry {path} is damaged ({exc}); {_FIX_REGISTRY}") from None
    return Registry(path, entries)


def save_registry(registry: Registry) -> None:
    from pixsim_host.fsutil import atomic_write

    entries = sorted(registry.entries, key=lambda e: (e.name.casefold(), e.host_id))
    data = {"version": REGISTRY_VERSION, "hosts": [e.as_json() for e in entries]}
    try:
        atomic_write(registry.path, json.dumps(data, indent=2) + "\n", mode=0o600)
    except OSError as exc:
        raise HostError(f"cannot write the host registry {registry.path} ({exc.strerror or exc}); "
                        f"fix its directory's permissions or free disk space") from None


@contextmanager
def edit_registry() -> Iterator[Registry]:
    """The registry, locked against other writers; saved on a clean exit if it changed."""
    path = registry_path()
    with data_lock(path, "the host registry"):
        registry = load_registry(path)
        before = [e.as_json() for e in registry.entries]
        yield registry
        if [e.as_json() for e in registry.entries] != before:
            save_registry(registry)


# ---- what a directory holds ---------------------------------------------------------------------


def read_host_fields(directory: Path) -> dict[str, Any] | None:
    """The raw config of the host in ``directory`` (plain YAML, no validation), or None."""
    from pixsim_host import safeload

    try:
        data = safeload.load_yaml(directory / CONFIG_FILE, "the host config", "fix it")
    except HostError:
        return None
    return data if isinstance(data, dict) else None


def holds(directory: str | Path, host_id: str) -> bool:
    """Whether ``directory`` still holds the host ``host_id``."""
    data = read_host_fields(Path(directory))
    return data is not None and data.get("host_id") == host_id


def _proxy_url(tls: Any) -> str | None:
    """The TLS proxy's URL from a config's raw ``tls`` section (as HostConfig.tls_url), or None."""
    if not isinstance(tls, dict) or tls.get("mode", "off") == "off":
        return None
    name, port = str(tls.get("domain") or "127.0.0.1"), tls.get("port", 8443)
    host = f"[{name}]" if ":" in name else name
    return f"https://{host}" + ("" if port == 443 else f":{port}")


def local_url(bind: str, port: int) -> str:
    """Where this machine reaches a backend bound to ``bind:port`` (as HostConfig.local_url)."""
    try:
        address = ipaddress.ip_address(bind)
    except ValueError:
        address = ipaddress.ip_address("127.0.0.1")
    if address.is_unspecified:
        address = ipaddress.ip_address("127.0.0.1" if address.version == 4 else "::1")
    text = str(address)
    return f"http://{f'[{text}]' if ':' in text else text}:{port}"


# ---- claims: names, projects, ports ---------------------------------------------------------------


def _where(entry: HostEntry) -> str:
    state = "" if Path(entry.directory, CONFIG_FILE).is_file() else ", which no longer exists"
    return f"{entry.directory}{state}"


def _check_claims(registry: Registry, *, host_id: str | None, directory: str | None,
                  name: str | None, project: str | None, port: int | None,
                  port_fix: str = "choose another port, or leave it out to get a free one") -> None:
    """Refuse a name, project or port another registered host claims."""
    for entry in registry.entries:
        if entry.host_id == host_id:
            continue
        if directory is not None and entry.directory == directory and not holds(directory, entry.host_id):
            continue  # that host's files are gone from this directory; its entry gets replaced
        gone = ("" if Path(entry.directory, CONFIG_FILE).is_file() else
                f"; if that host is gone for good, run `pixsim-host hosts forget {entry.name}`")
        if name is not None and entry.name.casefold() == name.casefold():
            raise HostError(
                f"a host named {entry.name!r} is already registered on this machine "
                f"(host_id {entry.host_id}, in {_where(entry)}); choose another --name{gone}"
            )
        if project is not None and entry.project == project:
            raise HostError(
                f"the name {name!r} would use Docker project {project}, which host {entry.name!r} "
                f"(in {_where(entry)}) already uses; choose a name that differs in letters or "
                f"digits{gone}"
            )
        if port is not None and port in entry.all_ports:
            raise HostError(
                f"port {port} is claimed by host {entry.name!r} (in {_where(entry)}); "
                f"{port_fix}{gone}"
            )


def check_port_claim(port: int, host_id: str | None = None) -> None:
    """Refuse ``port`` when another registered host (not ``host_id``) claims it.

    For ``config set backend.port`` and anything else that moves a host to a new port.
    """
    _check_claims(load_registry(), host_id=host_id, directory=None, name=None, project=None, port=port)


# An extra port (a service's, the TLS proxy's, the native PostgreSQL's or Redis's) is a setting
# of its own: leaving the backend's port out would not move it.
_EXTRA_PORT_FIX = ("move that one to a free port (its key in pixsim-host.yaml: backend.services, "
                   "tls.port, native.postgres_port or native.redis_port)")


def check_claims(config: HostConfig) -> None:
    """Refuse a changed config whose name, project or port another registered host claims."""
    registry = load_registry()
    _check_claims(registry, host_id=config.host_id, directory=None, name=config.name,
                  project=config.project, port=config.backend.port)
    for port in _extra_ports(config):
        _check_claims(registry, host_id=config.host_id, directory=None, name=None, project=None,
                      port=port, port_fix=_EXTRA_PORT_FIX)


def record(host: HostDir, config: HostConfig) -> list[str]:
    """Register the host, or bring its entry up to date (after init, a config change, a move)."""
    with edit_registry() as registry:
        return _upsert(registry, HostEntry.of(host, config))


def record_versions(host: HostDir, config: HostConfig, versions: dict[str, Any]) -> None:
    """Put the versions before and after a finished upgrade or rollback in the host's entry."""
    with edit_registry() as registry:
        entry = HostEntry.of(host, config)
        entry.versions = versions
        _upsert(registry, entry)


def _upsert(registry: Registry, entry: HostEntry) -> list[str]:
    _check_claims(registry, host_id=entry.host_id, directory=entry.directory,
                  name=entry.name, project=entry.project, port=entry.port)
    for port in entry.extra_ports:
        _check_claims(registry, host_id=entry.host_id, directory=entry.directory, name=None,
                      project=None, port=port, port_fix=_EXTRA_PORT_FIX)
    warnings: list[str] = []
    kept: list[HostEntry] = []
    for other in registry.entries:
        if other.host_id == entry.host_id:
            if other.directory != entry.directory and holds(other.directory, other.host_id):
                raise HostError(
                    f"{entry.directory} holds host {entry.host_id}, which is registered in "
                    f"{other.directory} and still there: a copied host directory is the same host "
                    "and must not run twice; create a new host with `pixsim-host init` instead, or "
                    "delete one of the copies"
                )
            entry.registered_at = other.registered_at or entry.registered_at
            entry.versions = entry.versions or other.versions
            continue
        if other.directory == entry.directory:
            warnings.append(f"replaced the registry entry of host {other.name!r} ({other.host_id}), "
                            f"whose files are no longer in {entry.directory}")
            continue
        kept.append(other)
    registry.entries = [*kept, entry]
    return warnings


def forget(key: str) -> HostEntry:
    with edit_registry() as registry:
        entry = registry.find(key)
        if entry is None:
            raise HostError(f"no registered host is named {key!r}; see `pixsim-host hosts list`")
        registry.entries = [e for e in registry.entries if e.host_id != entry.host_id]
    return entry


def _existing_name(root: Path) -> tuple[str | None, str | None, str | None]:
    data = read_host_fields(root) or {}
    host_id, name, project = data.get("host_id"), data.get("name"), data.get("project")
    return (str(host_id) if host_id else None, str(name) if name else None,
            str(project) if project else None)


def create_registered(root: Path, name: str | None, port: int | None,
                      create: Callable[[set[int]], tuple[HostDir, HostConfig]], *,
                      force: bool = False) -> list[str]:
    """Make a host under the registry lock: its name and port checked against the other
    hosts, ``create`` given the ports they claim, what it made registered. The notes.

    The lock is held from the checks to the registration, so concurrent ``init``s never pick
    the same port or name.
    """
    from pixsim_host.config import slugify

    root = root.expanduser().resolve()
    with edit_registry() as registry:
        host_id, current_name, current_project = _existing_name(root) if force else (None, None, None)
        name = name if name is not None else current_name
        project = current_project if current_project else (f"pixsim-{slugify(name)}" if name else None)
        _check_claims(registry, host_id=host_id, directory=str(root), name=name,
                      project=project, port=port)
        host, config = create(set(registry.port_claims(exclude_host_id=host_id)))
        return _upsert(registry, HostEntry.of(host, config))


def lookup_directory(key: str) -> HostDir | None:
    """The directory of the registered host named ``key``; None if no host has that name.

    Raises when the host is registered but its directory is gone or holds another host.
    """
    entry = load_registry().find(key)
    if entry is None:
        return None
    fields = read_host_fields(Path(entry.directory))
    if fields is None and Path(entry.directory, CONFIG_FILE).is_file():
        return HostDir(Path(entry.directory))  # there but unreadable: loading it says exactly why
    if fields is None:
        raise HostError(
            f"host {entry.name!r} is registered in {entry.directory}, but there is no host there "
            f"any more; if you moved it, run `pixsim-host hosts add NEW_DIR`; if it is gone, "
            f"`pixsim-host hosts forget {entry.name}`"
        )
    if fields.get("host_id") != entry.host_id:
        raise HostError(
            f"host {entry.name!r} is registered in {entry.directory}, but that directory now holds "
            f"another host ({fields.get('host_id')}); run `pixsim-host hosts add {entry.directory}` to "
            f"register what is there, or `pixsim-host hosts forget {entry.name}`"
        )
    return HostDir(Path(entry.directory))


# ---- live status --------------------------------------------------------------------------------


@dataclass
class HostStatus:
    entry: HostEntry
    status: str
    detail: str = ""
    # What the host's directory says now (it wins over the registry where they differ).
    name: str = ""
    model: str = ""
    backend_url: str = ""
    local_url: str = ""
    port: int = 0
    stale: list[str] = field(default_factory=list)  # registry fields that differ from the config

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "host_id": self.entry.host_id, "directory": self.entry.directory,
            "model": self.model, "backend_url": self.backend_url, "local_url": self.local_url,
            "port": self.port, "status": self.status, "detail": self.detail,
            "registered_name": self.entry.name, "registry_stale": self.stale,
            "versions": self.entry.versions,
        }


def _current(entry: HostEntry) -> tuple[HostStatus, bool]:
    """The entry as its directory describes it now; whether the directory holds it."""
    status = HostStatus(entry, "", name=entry.name, model=entry.model, backend_url=entry.backend_url,
                        local_url=entry.local_url or local_url(entry.bind, entry.port), port=entry.port)
    directory = Path(entry.directory)
    if not directory.is_dir():
        status.status, status.detail = MISSING, "moved or deleted"
        return status, False
    data = read_host_fields(directory)
    if data is None:
        status.status = NOT_A_HOST
        status.detail = (f"{CONFIG_FILE} there cannot be read (run `pixsim-host doctor --dir {directory}`)"
                         if (directory / CONFIG_FILE).is_file() else f"no {CONFIG_FILE} there")
        return status, False
    if data.get("host_id") != entry.host_id:
        status.status = OTHER_HOST
        status.detail = f"the directory now holds host {data.get('host_id')!r}"
        return status, False
    backend = data.get("backend") if isinstance(data.get("backend"), dict) else {}
    assert isinstance(backend, dict)
    try:
        port = int(backend.get("port", 8000))
    except (TypeError, ValueError):
        port = entry.port
    bind = str(backend.get("bind", "127.0.0.1"))
    status.name = str(data.get("name", entry.name))
    status.model = str(data.get("model", entry.model))
    status.port = port
    proxy = _proxy_url(data.get("tls"))
    # Behind the TLS proxy the backend answers plain HTTP on loopback only.
    status.local_url = local_url("127.0.0.1" if proxy else bind, port)
    status.backend_url = str(backend.get("public_url") or proxy or status.local_url).rstrip("/")
    if data.get("runtime", "docker") != "docker" and not proxy:
        status.local_url = status.backend_url  # no port on this machine: ask where clients go
    for key, now, then in (("name", status.name, entry.name), ("port", port, entry.port),
                           ("model", status.model, entry.model),
                           ("backend_url", status.backend_url, entry.backend_url)):
        if now != then:
            status.stale.append(key)
    return status, True


def _probe(client: Any, status: HostStatus) -> tuple[str, str]:
    from pixsim_host import webclient as web

    url = status.local_url + "/api/v1/server/info"
    try:
        info = client.get_json(url, max_bytes=MAX_INFO_BYTES)
    except (web.Refused, web.Unreachable):
        return DOWN, "nothing listening"
    except web.Timeout:
        return NO_ANSWER, "did not answer in time"
    except web.TooBig:
        return BAD_ANSWER, "answers far more than server info"
    except web.BadStatus as exc:
        return BAD_ANSWER, f"/api/v1/server/info answered HTTP {exc.status}"
    except web.NotJSON as exc:
        return BAD_ANSWER, f"/api/v1/server/info {exc.reason.removeprefix('answered ')}"
    except web.WebError as exc:
        return BAD_ANSWER, exc.reason
    server_id = info.get("server_id")
    if server_id != status.entry.host_id:
        from pixsim_host.webclient import safe_text

        return WRONG_HOST, (f"{status.local_url} answers as {safe_text(str(server_id))!r} "
                            f"({safe_text(str(info.get('server_name')))})")
    return UP, ""


def probe_hosts(entries: list[HostEntry], timeout: float = PROBE_TIMEOUT) -> list[HostStatus]:
    """Every entry's live status, probed in parallel: the whole takes about one timeout."""
    from concurrent.futures import ThreadPoolExecutor

    from pixsim_host.webclient import WebClient

    if not entries:
        return []
    # The probes run in parallel under one deadline: a slow host cannot stretch the listing.
    with WebClient(timeout=timeout, deadline=timeout * 2, max_connections=len(entries)) as client:

        def one(entry: HostEntry) -> HostStatus:
            status, present = _current(entry)
            state, detail = _probe(client, status)
            if present:
                status.status, status.detail = state, detail
            elif state == UP:
                status.detail += f"; its backend still answers at {status.local_url}"
            return status

        with ThreadPoolExecutor(max_workers=min(32, len(entries))) as pool:
            return list(pool.map(one, entries))


# ---- friends ----------------------------------------------------------------------------------


def friend_urls(config: HostConfig) -> list[str]:
    """The URLs other machines can use for this host: the public URL, then this machine's
    addresses the backend listens on. Empty when it listens on loopback only."""
    from pixsim_host.netaddr import reachable_addresses, url_host

    urls: list[str] = []
    if config.backend.public_url:
        urls.append(config.backend.public_url)
    if config.tls_url and config.tls.domain and config.tls_url not in urls:
        urls.append(config.tls_url)  # behind the TLS proxy: the name its certificate holds
    if config.tls_url:
        # The proxy's certificate names tls.domain (and localhost, 127.0.0.1): an https:// URL
        # on any other of this machine's addresses would not verify.
        return urls
    for address in reachable_addresses(config.backend.bind):
        url = f"http://{url_host(address)}:{config.backend.port}"
        if url not in urls:
            urls.append(url)
    return urls


def friends_cannot_reach(config: HostConfig) -> str | None:
    """Why no machine but this one can use the host (None when some can), with the fix."""
    if friend_urls(config):
        return None
    if config.tls_url:
        return ("friends cannot use this host over HTTPS yet: its certificate names only localhost "
                "and 127.0.0.1; set tls.domain to the name or address they dial (`pixsim-host "
                "config set tls.domain 192.168.1.20`), then run `pixsim-host up`")
    return (f"friends cannot reach this host: it listens on {config.backend.bind} only; run "
            "`pixsim-host config set backend.bind 0.0.0.0` (or your LAN/VPN address)")


def client_line(url: str) -> str:
    """The line a PixSim7 client's .env needs to use the backend at ``url``."""
    return f"VITE_BACKEND_URL={url}"
