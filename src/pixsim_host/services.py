"""The backend's own services: migrations and workers, as PixSim7 declares them.

PixSim7 declares what it runs in ``services/<id>/pixsim.service.json`` (``type``,
``module``, ``args``, ``ports``, ...). A host runs its backend (``main-api``) plus the
workers the operator selects by id, each from the backend's image or environment with
the backend's variables, so a service upstream adds is seen without a pixsim-host
release. Without a checkout (an image only) ``backend.workers`` gives commands instead.

A declaration becomes a command line by one rule: an ASGI target (``pkg.mod:app``) runs
under uvicorn, anything else as ``python -m <module> <args...>``.

Pure: reads declaration files, never runs anything.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pixsim_host.errors import HostError

if TYPE_CHECKING:
    from collections.abc import Callable

    from pixsim_host.config import HostConfig

SERVICES_DIR = "services"
DECLARATION = "pixsim.service.json"
# The PixSim7 launcher's own types that are not part of a host (the launcher, the
# database it would start, frontends): never started as workers.
_NOT_WORKERS = frozenset({"platform", "database", "frontend", "launcher"})
_MAX_DECLARATION = 256 * 1024
DEFAULT_HEALTH_ENDPOINT = "/health"


@dataclass(frozen=True)
class Declaration:
    """One ``pixsim.service.json``, reduced to what a host needs."""

    id: str
    type: str
    module: str
    args: tuple[str, ...]
    enabled: bool
    path: Path
    # The first declared port: the variable that carries it and its default (HTTP services).
    port_env: str = ""
    default_port: int | None = None
    health_endpoint: str = DEFAULT_HEALTH_ENDPOINT
    category: str = ""

    @property
    def runs_in_a_host(self) -> bool:
        """Not the launcher, its platform, the database it would start or a frontend (by type
        or by category: PixSim7's launcher API is a ``backend`` of category ``launcher``)."""
        return self.type not in _NOT_WORKERS and self.category not in _NOT_WORKERS

    @property
    def asgi(self) -> bool:
        return ":" in self.module

    def argv(self, python: str = "python") -> list[str]:
        if ":" in self.module:
            # An ASGI application: the backend's own API, or a second HTTP service.
            return [python, "-m", "uvicorn", self.module, *self.args]
        return [python, "-m", self.module, *self.args]


@dataclass(frozen=True)
class Worker:
    """A worker process of the host: a name (its service name) and its command."""

    name: str
    argv: tuple[str, ...]
    declared_in: str = ""  # the declaration it came from, or "" for an explicit command


def read_declarations(directory: Path) -> dict[str, Declaration]:
    """Every service declared under ``directory`` (``<id>/pixsim.service.json``), by id."""
    found: dict[str, Declaration] = {}
    if not directory.is_dir():
        return found
    for path in sorted(directory.glob(f"*/{DECLARATION}")):
        declaration = _read_declaration(path)
        if declaration is not None:
            found[declaration.id] = declaration
    return found


def _read_declaration(path: Path) -> Declaration | None:
    try:
        if path.stat().st_size > _MAX_DECLARATION:
            raise HostError(f"{path} is larger than {_MAX_DECLARATION // 1024} KiB; it is not a "
                            "service declaration: remove it or fix the checkout")
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).splitlines()[0]
        raise HostError(f"cannot read the service declaration {path}: {reason}; fix the file or "
                        "leave that service out of backend.workers") from None
    if not isinstance(data, dict):
        return None
    sid, module, args = data.get("id"), data.get("module"), data.get("args", [])
    if not isinstance(sid, str) or not isinstance(module, str) or not module:
        return None  # a declaration of something pixsim-host does not run (no module)
    if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
        raise HostError(f"{path}: 'args' must be a list of strings; fix the declaration")
    port_env, default_port = _declared_port(data)
    health = data.get("health_endpoint")
    return Declaration(id=sid, type=str(data.get("type", "")), module=module, args=tuple(args),
                       enabled=data.get("enabled", True) is not False, path=path,
                       port_env=port_env, default_port=default_port,
                       category=str(data.get("category", "")),
                       health_endpoint=health if isinstance(health, str) and health.startswith("/")
                       else DEFAULT_HEALTH_ENDPOINT)


def _declared_port(data: dict[str, Any]) -> tuple[str, int | None]:
    """The service's own port: the first of ``ports`` (PixSim7's list), else ``port_env`` and
    ``default_port`` (its older single fields)."""
    ports = data.get("ports")
    first = ports[0] if isinstance(ports, list) and ports and isinstance(ports[0], dict) else data
    env, default = first.get("env", first.get("port_env")), first.get("default_port")
    name = env if isinstance(env, str) and re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", env) else ""
    port = default if isinstance(default, int) and not isinstance(default, bool) \
        and 1 <= default <= 65535 else None
    return name, port


def declarations_dir(config: HostConfig) -> Path | None:
    """Where this host's backend declares its services: the checkout, else the reference's."""
    if config.backend.source:
        return Path(config.backend.source).expanduser() / SERVICES_DIR
    if config.uses_reference_backend:
        from importlib import resources

        return Path(str(resources.files("pixsim_reference_backend"))) / SERVICES_DIR
    return None


def migrate_lines(config: HostConfig) -> list[str]:
    """``backend.migrate``, or the backend's own when it is null: the reference backend's
    command, PixSim7's entry point with a checkout, none for an image pixsim-host does not know."""
    from pixsim_host.config import REFERENCE_MIGRATE

    if config.backend.migrate is not None:
        return list(config.backend.migrate)
    if config.uses_reference_backend:
        return [REFERENCE_MIGRATE]
    return pixsim7_migrations(Path(config.backend.source)) if config.backend.source else []


def pixsim7_migrations(checkout: Path) -> list[str]:
    """PixSim7's own entry point, plus the chain it leaves out when the checkout has it."""
    from pixsim_host.config import PIXSIM7_AUTOMATION_MIGRATE, PIXSIM7_MIGRATE

    commands = [PIXSIM7_MIGRATE]
    if (checkout.expanduser() / "alembic_automation.ini").is_file():
        commands.append(PIXSIM7_AUTOMATION_MIGRATE)
    return commands


def worker_entries(config: HostConfig) -> list[Any]:
    """``backend.workers``, or the backend's own when it is null (see :func:`migrate_lines`)."""
    from pixsim_host.config import PIXSIM7_WORKERS, REFERENCE_WORKERS

    if config.backend.workers is not None:
        return list(config.backend.workers)
    if config.uses_reference_backend:
        return list(REFERENCE_WORKERS)
    if config.backend.source:
        where = declarations_dir(config)
        declared = read_declarations(where) if where is not None else {}
        return [worker for worker in PIXSIM7_WORKERS if worker in declared]
    return []


def resolve_workers(config: HostConfig, python: str = "python") -> list[Worker]:
    """The host's workers as commands: ids looked up in the declarations, commands as given."""
    workers: list[Worker] = []
    declared: dict[str, Declaration] | None = None
    for entry in worker_entries(config):
        if not isinstance(entry, str):  # {name, command}
            argv = entry.argv()
            if argv[0] in ("python", "python3"):
                argv[0] = python
            workers.append(Worker(entry.name, tuple(argv)))
            continue
        if declared is None:
            where = declarations_dir(config)
            declared = read_declarations(where) if where is not None else {}
        declaration = _declared(config, declared, "backend.workers", entry, "as a worker",
                                "{name: NAME, command: 'CMD ...'}",
                                lambda d: d.runs_in_a_host)
        if declaration.type == "backend":
            raise HostError(f"backend.workers names {entry!r}, an HTTP service (it listens on a port); "
                            "move it to backend.services")
        workers.append(Worker(entry, tuple(declaration.argv(python)), str(declaration.path)))
    return workers


@dataclass(frozen=True)
class HttpService:
    """A second HTTP service of the backend (PixSim7's ``generation-api``): its command, the
    port it is published on, the variable that tells it its port and where it answers health."""

    name: str
    command: tuple[str, ...]  # may hold {bind} and {port}, filled in where it runs
    port: int  # on the host's bind address, like backend.port
    listen_port: int  # where it listens inside a container or pod: its declared port
    port_env: str  # "" when the service is given no port variable
    health_endpoint: str
    asgi: bool  # uvicorn: --host and --port are added, as PixSim7's launcher does
    declared_in: str = ""

    def argv(self, bind: str, port: int) -> list[str]:
        """The command line that makes it listen on ``bind:port``."""
        argv = [part.replace("{bind}", bind).replace("{port}", str(port)) for part in self.command]
        return [*argv, "--host", bind, "--port", str(port)] if self.asgi else argv

    def environment(self, port: int) -> dict[str, str]:
        """What it gets beyond the backend's variables: its own port variable."""
        return {self.port_env: str(port)} if self.port_env else {}


def resolve_http_services(config: HostConfig, python: str = "python") -> list[HttpService]:
    """``backend.services`` as runnable services: ids looked up in the declarations (their
    port, port variable and health endpoint), commands as given."""
    from pixsim_host.config import CONTRACT_VARIABLES, split_command

    found: list[HttpService] = []
    declared: dict[str, Declaration] | None = None
    for entry in config.backend.services:
        name = entry if isinstance(entry, str) else entry.name
        if not isinstance(entry, str) and entry.command is not None:
            argv = split_command(entry.command, f"backend.services {name}")
            if argv[0] in ("python", "python3"):
                argv[0] = python
            assert entry.port is not None  # the config's validator requires it with a command
            found.append(HttpService(name, tuple(argv), entry.port, entry.port, entry.port_env or "",
                                     entry.health_endpoint or DEFAULT_HEALTH_ENDPOINT, asgi=False))
            continue
        if declared is None:
            where = declarations_dir(config)
            declared = read_declarations(where) if where is not None else {}
        declaration = _http_declaration(config, declared, name)
        port = entry.port if not isinstance(entry, str) and entry.port is not None \
            else declaration.default_port
        if port is None:
            raise HostError(f"backend.services names {name!r}, whose declaration gives no port; give "
                            f"one: {{name: {name}, port: PORT}}")
        port_env = (entry.port_env if not isinstance(entry, str) else None) or declaration.port_env
        health = (entry.health_endpoint if not isinstance(entry, str) else None) \
            or declaration.health_endpoint
        found.append(HttpService(name, tuple(declaration.argv(python)), port,
                                 declaration.default_port or port, port_env, health,
                                 asgi=declaration.asgi, declared_in=str(declaration.path)))
    taken = {config.backend.port: "backend.port"}
    for port in config.local_service_ports:  # the native runtime's PostgreSQL and Redis
        taken[port] = "native.postgres_port" if port == config.native.postgres_port else "native.redis_port"
    for service in found:
        if service.port in taken:
            raise HostError(f"backend.services {service.name} would listen on port {service.port}, "
                            f"which {taken[service.port]} takes; give it another: "
                            f"{{name: {service.name}, port: PORT}}")
        taken[service.port] = f"backend.services {service.name}"
        if service.port_env.upper() in CONTRACT_VARIABLES:
            raise HostError(f"backend.services {service.name}: its port variable {service.port_env} is "
                            "one pixsim-host sets for the backend; give it another (port_env)")
    return found


def _http_declaration(config: HostConfig, declared: dict[str, Declaration], name: str) -> Declaration:
    return _declared(config, declared, "backend.services", name, "beside its backend",
                     "{name: NAME, command: 'CMD ...', port: PORT}",
                     lambda d: d.runs_in_a_host and d.id != "main-api" and bool(d.default_port))


def _declared(config: HostConfig, declared: dict[str, Declaration], key: str, name: str, role: str,
              command_form: str, listed: Callable[[Declaration], bool]) -> Declaration:
    """The declaration ``key`` names by id; a clear error when there is none, or when it is
    one a host does not run (``role``: how it would run); ``listed``: the ids to suggest."""
    declaration = declared.get(name)
    if declaration is None:
        known = sorted(d.id for d in declared.values() if listed(d))
        source = "the checkout (backend.source)" if config.backend.source else "the backend"
        listing = f"; it declares: {', '.join(known)}" if known else ""
        raise HostError(
            f"{key} names {name!r}, which {source} does not declare{listing}; fix the list "
            f"(`pixsim-host config set {key} \"[ID, ...]\"`), or give a command: {command_form}"
        )
    if not declaration.runs_in_a_host or declaration.id == "main-api":
        raise HostError(f"{key} names {name!r}, a {declaration.type or 'core'} service that a host "
                        f"does not run {role}; remove it from {key}")
    return declaration


def service_urls(config: HostConfig) -> dict[str, str]:
    """Where this machine reaches each HTTP service: the backend's local address with the
    service's own port (a public URL is the backend's alone: a proxy in front of it says
    nothing about the other ports)."""
    from urllib.parse import urlsplit, urlunsplit

    urls: dict[str, str] = {}
    for service in resolve_http_services(config):
        parts = urlsplit(config.local_url)
        host = parts.hostname or "127.0.0.1"
        netloc = f"[{host}]:{service.port}" if ":" in host else f"{host}:{service.port}"
        urls[service.name] = urlunsplit((parts.scheme, netloc, "", "", ""))
    return urls


def migrate_commands(config: HostConfig, python: str = "python") -> list[list[str]]:
    """``backend.migrate`` as argument lists; a leading ``python`` is the backend's interpreter."""
    from pixsim_host.config import split_command  # pydantic: only when a host is read

    commands = []
    for command in migrate_lines(config):
        argv = split_command(command, "backend.migrate entry")
        if argv[0] in ("python", "python3"):
            argv[0] = python
        commands.append(argv)
    return commands


def dotenv_keys(path: Path) -> list[str]:
    """The variable names a dotenv file sets (values are never read into memory for long)."""
    try:
        if not path.is_file() or path.stat().st_size > 1024 * 1024:
            return []
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    keys = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("export "):
            line = line[7:].lstrip()
        name, sep, _ = line.partition("=")
        if sep and re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name.strip()):
            keys.append(name.strip())
    return keys


def stray_dotenv_notes(config: HostConfig) -> list[str]:
    """Warnings about a ``.env`` in the backend's working directory.

    PixSim7 calls ``load_dotenv()`` there, so a variable the host does not set would come,
    unnoticed, from the operator's checkout.
    """
    from pixsim_host.backend_env import Endpoints, backend_environment

    workdir = config.native.backend_workdir or config.backend.source
    if not workdir:
        return []
    path = Path(workdir).expanduser() / ".env"
    contract = {key.upper() for key in backend_environment(config, Endpoints("", "", "", "", ""))}
    stray = sorted(key for key in dotenv_keys(path) if key.upper() not in contract)
    if not stray:
        return []
    shown = ", ".join(stray[:8]) + (f" and {len(stray) - 8} more" if len(stray) > 8 else "")
    return [f"{path} sets {shown}, which this host does not: the backend reads that file at start-up "
            "and will use them; move what the host needs into pixsim-host.yaml and remove the file"]
