"""``doctor``: everything that must hold for a host to come up and stay up, checked one by one.

Each check passes, warns, fails or is skipped (when what it needs failed first), and says
how to fix what it found. Doctor only reads: it never renders, starts or changes anything.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import shutil
import socket
import stat
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pixsim_host.errors import HostError
from pixsim_host.hostdir import HostDir

if TYPE_CHECKING:
    from pixsim_host.config import HostConfig
    from pixsim_host.runtime import RuntimeType
    from pixsim_host.runtime.engine import Engine

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
GIB = 1024**3
MIN_FREE = 1 * GIB  # below this a database or an image pull fails
WARN_FREE = 5 * GIB


@dataclass
class Check:
    name: str
    status: str
    message: str
    hint: str = ""

    def as_json(self) -> dict[str, str]:
        return asdict(self)


def _split(message: str) -> tuple[str, str]:
    """A HostError message ("what is wrong; what to do") as (message, hint)."""
    what, sep, todo = message.partition("; ")
    return (what, todo) if sep else (message, "")


def _failed(name: str, exc: HostError) -> Check:
    message, hint = _split(exc.message)
    return Check(name, FAIL, message, hint)


@dataclass
class Context:
    host: HostDir | None
    config: HostConfig | None = None
    engine: Engine | None = None
    min_free: int = MIN_FREE
    warn_free: int = WARN_FREE
    probe_timeout: float = 2.0


# ---- the checks ------------------------------------------------------------------------------


def check_engine(ctx: Context) -> Check:
    from pixsim_host.runtime.engine import connect

    try:
        ctx.engine = connect(timeout=5.0)
    except HostError as exc:
        return _failed("engine", exc)
    engine = ctx.engine
    major, minor = engine.api_version
    return Check("engine", PASS,
                 f"Docker {engine.server_version} (API {major}.{minor}) answers at {engine.endpoint.url}")


def check_config(ctx: Context) -> Check:
    from pixsim_host.config import load_config

    assert ctx.host is not None
    try:
        ctx.config = load_config(ctx.host.config_file)
    except HostError as exc:
        return _failed("config", exc)
    return Check("config", PASS, f"{ctx.host.config_file.name} is valid (host {ctx.config.name!r}, "
                                 f"{ctx.config.host_id})")


def check_secrets(ctx: Context) -> Check:
    from pixsim_host.envfile import read_secrets

    assert ctx.host is not None
    path = ctx.host.secrets_file
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return Check("secrets", FAIL, f"{path} is missing, so the host has no secrets",
                     "restore .env from a backup; secrets are never regenerated behind the data's back")
    if mode != 0o600:
        return Check("secrets", FAIL, f"{path} has mode {oct(mode)}, not 0o600: others may read the "
                                      "host's passwords", f"chmod 600 {path}")
    try:
        read_secrets(path)
    except HostError as exc:
        return _failed("secrets", exc)
    return Check("secrets", PASS, f"{path.name} is private (0600) and holds every secret")


PRIVATE_DIRS = ("data/redis", "data/home", "data/caddy", "logs", ".pixsim-host/run", "backups")
PRIVATE_FILES = (".pixsim-host/hash-key",)


def check_permissions(ctx: Context) -> Check:
    """What holds players' data or is derived from secrets is readable by this user only."""
    assert ctx.host is not None
    root = ctx.host.root
    exposed: list[str] = []

    def look(path: Path, allowed: int) -> None:
        with contextlib.suppress(OSError):
            info = path.lstat()
            if not stat.S_ISLNK(info.st_mode) and stat.S_IMODE(info.st_mode) & ~allowed & 0o077:
                exposed.append(f"{path.relative_to(root)} ({oct(stat.S_IMODE(info.st_mode))})")

    data = root / "data"
    if data.is_dir():
        # PostgreSQL, run as another account by root, must traverse data/ (0711), never list it.
        look(data, 0o711)
        look(data / "postgres", 0o700)
    for name in PRIVATE_DIRS:
        folder = root / name
        if not folder.is_dir():
            continue
        if name != "backups":  # the bundles in it are private, the folder need not be
            look(folder, 0o700)
        for path in sorted(folder.rglob("*"))[:1000]:
            look(path, 0o700 if path.is_dir() else 0o600)
    for name in PRIVATE_FILES:
        if (root / name).exists():
            look(root / name, 0o600)
    if exposed:
        shown = ", ".join(exposed[:5]) + (f" and {len(exposed) - 5} more" if len(exposed) > 5 else "")
        present = " ".join(n for n in PRIVATE_DIRS if (root / n).exists())
        return Check("permissions", FAIL, f"other users can read the host's private data: {shown}",
                     f"cd {root} && chmod -R go-rwx {present}"
                     + (" && chmod 711 data" if data.is_dir() else ""))
    return Check("permissions", PASS, "data, logs, pid files and backups are private to this user")


def check_rendered(ctx: Context) -> Check:
    from pixsim_host.render import diff_rendered, render_host

    assert ctx.host is not None and ctx.config is not None
    try:
        diffs = diff_rendered(ctx.host, render_host(ctx.host, ctx.config))
    except HostError as exc:
        return _failed("rendered", exc)
    if diffs:
        verb = "differs" if len(diffs) == 1 else "differ"
        return Check("rendered", FAIL,
                     f"{', '.join(diffs)} {verb} from what pixsim-host.yaml renders "
                     "(stale, or edited by hand)",
                     "`pixsim-host render --check` shows the difference; move hand edits into "
                     "pixsim-host.yaml or a template override, then run `pixsim-host render`")
    return Check("rendered", PASS, "compose.yaml and frontend.env match pixsim-host.yaml")


def _bind_problem(bind: str, port: int) -> int | None:
    """None if ``bind:port`` can be bound now, else the errno."""
    family = socket.AF_INET6 if ipaddress.ip_address(bind).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((bind, port))
        except OSError as exc:
            return exc.errno or errno.EADDRINUSE
    return None


def _answers_as(url: str, host_id: str, timeout: float) -> str | None:
    """The server_id the backend at ``url`` reports, or None when nothing sensible answers."""
    from pixsim_host.health import ProbeError, get_json, make_client

    with make_client(timeout) as client:
        try:
            info = get_json(client, url, "/api/v1/server/info")
        except ProbeError:
            return None
    server_id = info.get("server_id")
    return str(server_id) if server_id is not None else None


def _container_on_port(engine: Engine | None, port: int) -> str | None:
    if engine is None:
        return None
    try:
        for summary in engine.api.containers():
            for binding in summary.get("Ports") or []:
                if binding.get("PublicPort") == port:
                    name = (summary.get("Names") or ["?"])[0].lstrip("/")
                    owner = (summary.get("Labels") or {}).get("org.pixsim-host.host-name")
                    return f"container {name}" + (f" of pixsim host {owner!r}" if owner else "")
    except Exception:  # noqa: BLE001 - naming the holder is a courtesy, never a failure
        return None
    return None


def _suggest_port(bind: str, claimed: set[int], start: int) -> int | None:
    from pixsim_host.ports import pick_port

    try:
        return pick_port(bind, claimed, start=start)
    except HostError:
        return None


def check_port(ctx: Context) -> Check:
    """The backend's port, then the ports of the HTTP services beside it (backend.services)."""
    backend = _check_backend_port(ctx)
    if backend.status != PASS:
        return backend
    return _check_service_ports(ctx) or backend


def _check_service_ports(ctx: Context) -> Check | None:
    from pixsim_host.hosts import load_registry
    from pixsim_host.services import resolve_http_services, service_urls

    assert ctx.config is not None
    config = ctx.config
    try:
        services, urls = resolve_http_services(config), service_urls(config)
    except HostError:
        return None  # backend-code reports it
    try:
        claims = load_registry().port_claims(exclude_host_id=config.host_id)
    except HostError:
        claims = {}
    hint = "give it another port in backend.services: {name: NAME, port: PORT}"
    for service in services:
        port, bind = service.port, config.backend.bind
        if port in claims:
            return Check("port", FAIL, f"port {port} ({service.name}) is also claimed by host "
                                       f"{claims[port].name!r} ({claims[port].directory})", hint)
        if _bind_problem(bind, port) != errno.EADDRINUSE:
            continue
        holder = _container_on_port(ctx.engine, port)
        if holder and f"pixsim host {config.name!r}" in holder:
            continue
        if _answers_as(urls[service.name], config.host_id, ctx.probe_timeout) == config.host_id:
            continue
        if not holder and _runs_as_this_host(ctx, service.name):
            continue  # its runtime holds it (a pid file whose process listens there)
        if holder:
            return Check("port", FAIL, f"port {port} on {bind} ({service.name}) is in use by {holder}",
                         f"stop it, or {hint}")
        return Check("port", WARN, f"port {port} on {bind} ({service.name}) is in use by another program, "
                                   "or by this host's service (which does not say which host it is)",
                     f"see `ss -ltnp 'sport = :{port}'` and `pixsim-host status`; if it is not this "
                     f"host's, {hint}")
    return None


def _runs_as_this_host(ctx: Context, service: str) -> bool:
    """Whether the host's runtime has ``service`` running (a service that has no identity
    endpoint, like PixSim7's generation API, cannot say so itself)."""
    from pixsim_host import stack

    assert ctx.host is not None and ctx.config is not None
    if "engine" in stack.runtime_type(ctx.config).doctor_checks:
        return False  # a container on the port was looked for already
    try:
        state = stack.open_runtime(ctx.host, ctx.config, refresh=False).states().get(service)
    except HostError:
        return False
    return state is not None and state.status == "running" and state.health != "unhealthy"


def _check_backend_port(ctx: Context) -> Check:
    from pixsim_host.hosts import load_registry

    assert ctx.host is not None and ctx.config is not None
    config = ctx.config
    port, bind = config.backend.port, config.backend.bind
    try:
        claims = load_registry().port_claims(exclude_host_id=config.host_id)
    except HostError:
        claims = {}  # the registry check reports that
    suggestion = _suggest_port(bind, set(claims), port + 1)
    move = (f"move this host with `pixsim-host config set backend.port {suggestion}`" if suggestion
            else "move this host to a free port with `pixsim-host config set backend.port PORT`")
    if port in claims:
        other = claims[port]
        return Check("port", FAIL, f"port {port} is also claimed by host {other.name!r} ({other.directory})",
                     move)
    problem = _bind_problem(bind, port)
    if problem is None:
        return Check("port", PASS, f"port {port} on {bind} is free for this host")
    if problem == errno.EADDRNOTAVAIL:
        return Check("port", FAIL, f"backend.bind {bind} is not an address of this machine",
                     "set an address it has with `pixsim-host config set backend.bind ADDRESS` "
                     "(0.0.0.0 for every interface)")
    if problem != errno.EADDRINUSE:
        return Check("port", FAIL, f"port {port} on {bind} cannot be used ({errno.errorcode.get(problem)})",
                     move)
    server_id = _answers_as(config.local_url, config.host_id, ctx.probe_timeout)
    if server_id == config.host_id:
        return Check("port", PASS, f"port {port} is held by this host's backend")
    holder = _container_on_port(ctx.engine, port) or (
        f"another host ({server_id})" if server_id else
        f"another program (see `ss -ltnp 'sport = :{port}'`)")
    return Check("port", FAIL, f"port {port} on {bind} is in use by {holder}",
                 f"stop it, or {move}")


def check_images(ctx: Context) -> Check:
    from pixsim_host.config import REFERENCE_BACKEND_IMAGE

    assert ctx.config is not None
    if ctx.engine is None:
        return Check("images", SKIP, "needs the Docker Engine")
    config = ctx.config
    wanted = {"backend": config.backend.image, "db": config.database.image, "redis": config.redis.image}
    if config.tls.mode != "off":
        wanted["proxy"] = config.tls.image
    from docker.errors import DockerException, ImageNotFound, NotFound

    missing: list[str] = []
    built: list[str] = []
    for service, image in wanted.items():
        try:
            ctx.engine.api.inspect_image(image)
        except (ImageNotFound, NotFound):
            (built if image == REFERENCE_BACKEND_IMAGE else missing).append(f"{image} ({service})")
        except DockerException as exc:
            return Check("images", FAIL, f"cannot inspect image {image}: {exc}", "check the Docker Engine")
    if missing:
        return Check("images", FAIL, f"missing from the engine: {', '.join(missing)}",
                     "`pixsim-host up` pulls them (--pull missing), or load them with `docker load`; "
                     "or point the host at images you have with `pixsim-host config set`")
    if built:
        return Check("images", WARN, f"{', '.join(built)} is not built yet",
                     "`pixsim-host up` builds it (its base image python:3.11-slim must be present)")
    return Check("images", PASS, f"all {len(wanted)} images are present")


def _free_check(paths: list[tuple[str, Path]], min_free: int, warn_free: int) -> Check:
    worst: tuple[int, str] | None = None
    seen: set[int] = set()
    for label, path in paths:
        try:
            device = path.stat().st_dev
            free = shutil.disk_usage(path).free
        except OSError:
            continue
        if device in seen:
            continue
        seen.add(device)
        if worst is None or free < worst[0]:
            worst = (free, f"{label} ({path})")
    if worst is None:
        return Check("disk", SKIP, "no local path to measure")
    free, where = worst
    text = f"{free / GIB:.1f} GiB free for {where}"
    if free < min_free:
        return Check("disk", FAIL, f"only {text}; the database and image pulls need at least "
                                   f"{min_free / GIB:.0f} GiB", "free disk space (`docker system prune` "
                                   "removes unused images and build cache)")
    if free < warn_free:
        return Check("disk", WARN, f"{text}, which is getting low", "free some disk space soon")
    return Check("disk", PASS, text)


def check_disk(ctx: Context) -> Check:
    from pixsim_host.hosts import data_dir

    paths: list[tuple[str, Path]] = []
    if ctx.host is not None:
        paths.append(("the host directory", ctx.host.root))
    if ctx.engine is not None and ctx.engine.endpoint.url.startswith("unix://"):
        try:
            root = str(ctx.engine.api.info().get("DockerRootDir") or "")
        except Exception:  # noqa: BLE001 - an engine that cannot say is measured no further
            root = ""
        if root:
            paths.append(("Docker's data", Path(root)))
    home = data_dir()
    paths.append(("pixsim-host's data", home if home.exists() else home.parent))
    return _free_check(paths, ctx.min_free, ctx.warn_free)


def check_registry(ctx: Context) -> Check:
    from pixsim_host.hostdir import CONFIG_FILE
    from pixsim_host.hosts import load_registry, local_url

    try:
        registry = load_registry()
    except HostError as exc:
        return _failed("registry", exc)
    gone = [e.name for e in registry.entries if not Path(e.directory, CONFIG_FILE).is_file()]
    ports: dict[int, list[str]] = {}
    for entry in registry.entries:
        ports.setdefault(entry.port, []).append(entry.name)
    shared = {port: names for port, names in ports.items() if len(names) > 1}
    if shared:
        port, names = next(iter(shared.items()))
        return Check("registry", FAIL, f"hosts {', '.join(names)} are registered with the same port {port}",
                     "move one with `pixsim-host config set backend.port PORT --host NAME`, then "
                     "`pixsim-host hosts add DIR` to refresh its entry")
    if ctx.host is not None and ctx.config is not None:
        config, root = ctx.config, str(ctx.host.root)
        mine = registry.by_host_id(config.host_id)
        add = f"pixsim-host hosts add {root}"
        if mine is None:
            return Check("registry", FAIL, "this host is not in the host registry, so its name and port "
                                           "are not reserved against other hosts", f"run `{add}`")
        if mine.directory != root:
            return Check("registry", FAIL, f"the registry has this host in {mine.directory}, not here",
                         f"if the host moved here, run `{add}`")
        stale = [key for key, now, then in (
            ("name", config.name, mine.name), ("port", config.backend.port, mine.port),
            ("model", config.model, mine.model), ("backend URL", config.client_url, mine.backend_url),
            ("local URL", config.local_url, mine.local_url or local_url(mine.bind, mine.port)),
        ) if now != then]
        if stale:
            return Check("registry", FAIL, f"the registry's {', '.join(stale)} for this host differ from "
                                           "pixsim-host.yaml", f"run `{add}` to refresh the entry")
    if gone:
        return Check("registry", WARN, f"{len(registry.entries)} registered; the directory of "
                                       f"{', '.join(gone)} is gone",
                     "`pixsim-host hosts add NEW_DIR` if moved, `pixsim-host hosts forget NAME` if deleted")
    count = len(registry.entries)
    return Check("registry", PASS, f"{count} host{'s' if count != 1 else ''} registered, consistent")


def check_health(ctx: Context) -> Check:
    """The host's services as its runtime sees them now, and the backend's own answers."""
    from pixsim_host import stack
    from pixsim_host.health import probe_status
    from pixsim_host.progress import quiet

    assert ctx.host is not None and ctx.config is not None
    config = ctx.config
    kind = stack.runtime_type(config)
    if "engine" in kind.doctor_checks and ctx.engine is None:
        return Check("health", SKIP, "needs the Docker Engine")
    try:
        runtime = stack.open_runtime(ctx.host, config, refresh=False)  # doctor only reads
        found = runtime.states()
    except HostError as exc:
        return _failed("health", exc)
    if not found:
        return Check("health", SKIP, f"the host is not up (no {kind.words.units})")
    problems = []
    for service, state in found.items():
        if state.status != "running":
            problems.append(f"{service} is {state.status}")
        elif state.health == "unhealthy":
            problems.append(f"{service} is unhealthy")
    try:
        with runtime.backend_endpoint(config, quiet) as endpoint:
            report, why = probe_status(endpoint.url, config.host_id)
    except HostError as exc:  # the way to the backend (a port-forward) failed
        report, why = None, exc.message
    if report is None:
        problems.append(f"the backend at {runtime.public_backend(config)[0]} does not pass its checks "
                        f"({why})")
    if problems:
        return Check("health", FAIL, "; ".join(problems),
                     "see `pixsim-host status` and `pixsim-host logs SERVICE`; `pixsim-host up` "
                     "repairs what it can")
    return Check("health", PASS, f"{len(found)} {kind.words.units} running; the backend answers as this "
                                 "host, healthy")


def check_backend_code(ctx: Context) -> Check:
    """The backend's own code: its declared workers and services resolve, and no stray .env
    feeds it."""
    from pixsim_host.services import migrate_lines, resolve_http_services, resolve_workers, stray_dotenv_notes

    assert ctx.config is not None
    try:
        workers = resolve_workers(ctx.config)
        services = resolve_http_services(ctx.config)
    except HostError as exc:
        return _failed("backend-code", exc)
    stray = stray_dotenv_notes(ctx.config)
    if stray:
        message, hint = _split(stray[0])
        return Check("backend-code", WARN, message, hint)
    names = ", ".join(w.name for w in workers) or "none"
    migrations = len(migrate_lines(ctx.config))
    served = ", ".join(f"{s.name} (port {s.port})" for s in services) or "none"
    return Check("backend-code", PASS, f"workers: {names}; services: {served}; migrations: "
                                       f"{migrations} command(s)")


def check_tls(ctx: Context) -> Check:
    """The TLS proxy: Caddy to run it (native) and its image (Docker), the Caddyfile as
    Caddy itself reads it, the proxy's port, the exported CA (internal mode)."""
    import tempfile

    from pixsim_host import tls

    assert ctx.host is not None and ctx.config is not None
    config = ctx.config
    if not tls.enabled(config):
        return Check("tls", SKIP, "tls.mode is off: the backend itself serves plain HTTP")
    try:
        binary = tls.caddy_binary(config)
    except HostError as exc:
        if not config.proxy_in_container:
            return _failed("tls", exc)
        binary = None  # the proxy runs from tls.image; the image check covers it
    caddyfile = ctx.host.root / tls.CADDYFILE
    if binary is not None and caddyfile.is_file():
        with tempfile.TemporaryDirectory(prefix="pixsim-host-caddy-") as work:
            problem = tls.validate_caddyfile(binary, caddyfile, Path(work))
        if problem:
            return Check("tls", FAIL, f"Caddy refuses {tls.CADDYFILE}: {problem}",
                         "run `pixsim-host render` (or fix the template override)")
    if config.tls.mode == "internal" and not tls.ca_file(ctx.host).is_file():
        return Check("tls", WARN, f"the host's CA is not exported yet ({tls.CA_FILE})",
                     "run `pixsim-host up`: it exports it and prints how friends pin it")
    checked = "validated by Caddy" if binary is not None and caddyfile.is_file() else "rendered"
    return Check("tls", PASS, f"HTTPS ({config.tls.mode}) on port {config.tls.port}; {tls.CADDYFILE} "
                              f"{checked}")


# ---- running them ---------------------------------------------------------------------------


HOST_CHECKS: list[tuple[str, Callable[[Context], Check], tuple[str, ...]]] = [
    # (name, check, what must have passed first)
    ("engine", check_engine, ()),
    ("config", check_config, ()),
    ("secrets", check_secrets, ()),
    ("permissions", check_permissions, ()),
    ("rendered", check_rendered, ("config",)),
    ("port", check_port, ("config",)),
    ("images", check_images, ("config",)),
    ("disk", check_disk, ()),
    ("registry", check_registry, ()),
    ("health", check_health, ("config",)),
    ("backend-code", check_backend_code, ("config",)),
    ("tls", check_tls, ("config",)),
]
MACHINE_CHECKS = ("engine", "disk", "registry")


# The checks that depend on how the host runs: each runtime names those that apply to it
# (a native host needs no Docker engine, a Kubernetes one no local port).
RUNTIME_CHECKS = ("engine", "port", "images", "health")


def _runtime_hint(host: HostDir | None) -> str | None:
    """The runtime the host's config names, read before the config check validates it."""
    if host is None:
        return None
    from pixsim_host.hosts import read_host_fields

    data = read_host_fields(host.root)
    runtime = data.get("runtime") if isinstance(data, dict) else None
    return str(runtime) if isinstance(runtime, str) else None


def _runtime_type(ctx: Context) -> RuntimeType | None:
    """The host's runtime (its class: nothing is opened), from the config once it is valid."""
    from pixsim_host import stack

    if ctx.config is not None:
        return stack.runtime_type(ctx.config)
    hint = _runtime_hint(ctx.host)
    return stack.runtime_type_named(hint) if hint is not None else None


def run_checks(host: HostDir | None, **options: Any) -> list[Check]:
    """Every check, in order; with no host, only the machine's (engine, disk, registry)."""
    ctx = Context(host, **options)
    results: dict[str, Check] = {}
    for name, check, needs in HOST_CHECKS:
        if host is None and name not in MACHINE_CHECKS:
            continue
        blocked = [need for need in needs if results[need].status == FAIL]
        if blocked:
            results[name] = Check(name, SKIP, f"needs a valid {blocked[0]}")
            continue
        kind = _runtime_type(ctx)
        if name in RUNTIME_CHECKS and kind is not None and name not in kind.doctor_checks:
            results[name] = Check(name, SKIP, f"the host runs on {kind.kind}, where this check does "
                                              "not apply")
            continue
        try:
            results[name] = check(ctx)
        except HostError as exc:
            results[name] = _failed(name, exc)
        except Exception as exc:  # noqa: BLE001 - one broken check must not hide the others
            results[name] = Check(name, FAIL, f"the check itself failed: {type(exc).__name__}: {exc}",
                                  "please report this as a pixsim-host bug")
    return list(results.values())
