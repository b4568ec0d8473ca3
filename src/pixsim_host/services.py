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
    from pixsim_host.config import HostConfig

SERVICES_DIR = "services"
DECLARATION = "pixsim.service.json"
# The PixSim7 launcher's own types that are not part of a host (the launcher, the
# database it would start, frontends): never started as workers.
_NOT_WORKERS = frozenset({"platform", "database", "frontend", "launcher"})
_MAX_DECLARATION = 256 * 1024


@dataclass(frozen=True)
class Declaration:
    """One ``pixsim.service.json``, reduced to what a host needs."""

    id: str
    type: str
    module: str
    args: tuple[str, ...]
    enabled: bool
    path: Path

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
    return Declaration(id=sid, type=str(data.get("type", "")), module=module, args=tuple(args),
                       enabled=data.get("enabled", True) is not False, path=path)


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
        declaration = declared.get(entry)
        if declaration is None:
            known = sorted(d.id for d in declared.values() if d.type not in _NOT_WORKERS)
            source = "the checkout (backend.source)" if config.backend.source else "the backend"
            listing = f"; it declares: {', '.join(known)}" if known else ""
            raise HostError(
                f"backend.workers names {entry!r}, which {source} does not declare{listing}; "
                "fix the list (`pixsim-host config set backend.workers \"[ID, ...]\"`), or give a "
                "command: {name: NAME, command: 'CMD ...'}"
            )
        if declaration.type in _NOT_WORKERS or declaration.id == "main-api":
            raise HostError(f"backend.workers names {entry!r}, a {declaration.type or 'core'} service "
                            "that a host does not run as a worker; remove it from backend.workers")
        workers.append(Worker(entry, tuple(declaration.argv(python)), str(declaration.path)))
    return workers


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
