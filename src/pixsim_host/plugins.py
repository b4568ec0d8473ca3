"""A host's plugin set: the catalog its backend reports, dependency resolution, installs.

PixSim7 reads ``PLUGIN_ALLOWLIST``/``PLUGIN_DENYLIST`` once at start-up, imports every
plugin it finds (disabled ones too), and aborts start-up when *any* of them depends on
a plugin that is disabled or missing. So pixsim-host resolves the whole set before it
writes anything: a list it renders can never take the host down. It only renders a
denylist; an allowlist would disable every unlisted plugin, dependencies of installed
plugins included, which is exactly the trap.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import shutil
import stat
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pixsim_host.config import HostConfig, plugin_id_problem
from pixsim_host.errors import HostError
from pixsim_host.fsutil import atomic_write
from pixsim_host.hostdir import HostDir

CATALOG_FILE = "plugins.json"
MAX_PLUGIN_BYTES = 20 * 1024 * 1024
MAX_PLUGIN_FILES = 2000
LIST_PATH = "/api/v1/admin/plugins/list"
DETAILS_PATH = "/api/v1/admin/plugins/{}/details"
# PixSim7 serves LIST_PATH and DETAILS_PATH from this plugin: with it disabled they are 404.
LIST_PLUGIN = "admin_plugins"
# Where PixSim7's checkout keeps the plugins it ships (its default EXTERNAL_PLUGINS_DIR).
BUNDLED_PLUGINS = Path("packages") / "plugins"
PLUGIN_VIEW_DIR = "plugin-view"
# With a checkout, where compose.yaml mounts (read-only, in the backend's and the workers'
# containers) what the plugin view's links point at.
COMPOSE_CHECKOUT_DIR = "/srv/pixsim/checkout"
COMPOSE_INSTALLED_DIR = "/srv/pixsim/host-plugins"


@dataclass(frozen=True)
class PluginInfo:
    id: str
    name: str
    version: str
    kind: str | None
    dependencies: tuple[str, ...]
    source: str  # builtin | external
    enabled: bool  # as the backend reported it when the catalog was taken
    default_enabled: bool  # what the plugin's manifest says without any list
    error: str | None = None
    description: str = ""
    # The package folder (installed or bundled), which may differ from the id.
    folder: str | None = None
    # Where the dependencies were learnt: list, details, manifest, saved, or unknown.
    dependencies_from: str = "list"

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "version": self.version, "kind": self.kind,
            "dependencies": list(self.dependencies), "source": self.source,
            "enabled": self.enabled, "default_enabled": self.default_enabled,
            "error": self.error, "description": self.description,
            "folder": self.folder, "dependencies_from": self.dependencies_from,
        }


@dataclass
class Catalog:
    plugins: dict[str, PluginInfo]
    taken_at: float
    live: bool = False  # True when read from the running backend just now
    # False when the backend answers but does not list its plugins (admin_plugins disabled).
    listed: bool = True

    def get(self, plugin_id: str) -> PluginInfo:
        found = self.plugins.get(plugin_id)
        if found is None:
            check_not_a_folder(plugin_id, self)
            close = difflib.get_close_matches(plugin_id, sorted(self.plugins), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else (
                "; see `pixsim-host plugins list`")
            raise HostError(f"this host's backend has no plugin {plugin_id!r}{hint}")
        return found

    def dependents(self, plugin_id: str) -> set[str]:
        """Every plugin that depends on ``plugin_id``, directly or not."""
        found: set[str] = set()
        frontier = {plugin_id}
        while frontier:
            frontier = {
                p.id for p in self.plugins.values()
                if set(p.dependencies) & frontier and p.id not in found
            }
            found |= frontier
        return found

    def requirements(self, plugin_id: str) -> set[str]:
        """Every plugin ``plugin_id`` needs, directly or not."""
        found: set[str] = set()
        frontier = {plugin_id}
        while frontier:
            nxt: set[str] = set()
            for pid in frontier:
                info = self.plugins.get(pid)
                nxt |= set(info.dependencies) if info else set()
            frontier = nxt - found
            found |= frontier
        return found


def listed_plugins(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The plugin entries of a ``/api/v1/admin/plugins/list`` answer (feature and route
    plugins alike) that have an id; anything malformed is left out."""
    return [entry for entry in [*(answer.get("feature_plugins") or []), *(answer.get("route_plugins") or [])]
            if isinstance(entry, dict) and entry.get("id")]


def catalog_from_list(answer: dict[str, Any], denylist: list[str], taken_at: float) -> Catalog:
    """Build a catalog from ``/api/v1/admin/plugins/list`` and the denylist it ran with."""
    plugins: dict[str, PluginInfo] = {}
    for entry in listed_plugins(answer):
        pid = str(entry["id"])
        enabled = bool(entry.get("enabled"))
        error = entry.get("error")
        plugins[pid] = PluginInfo(
            id=pid,
            name=str(entry.get("name") or pid),
            version=str(entry.get("version") or ""),
            kind=entry.get("kind"),
            dependencies=tuple(str(d) for d in entry.get("dependencies") or []),
            source=str(entry.get("source") or "builtin"),
            enabled=enabled,
            # Only the denylist can have turned a plugin off (we never render an allowlist).
            default_enabled=enabled or (pid in denylist and not error),
            error=str(error) if error else None,
            description=str(entry.get("description") or ""),
        )
    return Catalog(plugins, taken_at)


def save_catalog(host: HostDir, catalog: Catalog) -> None:
    data = {"taken_at": catalog.taken_at,
            "plugins": [p.as_json() for p in sorted(catalog.plugins.values(), key=lambda p: p.id)]}
    atomic_write(host.state_dir / CATALOG_FILE, json.dumps(data, indent=2) + "\n")


def load_catalog(host: HostDir) -> Catalog | None:
    try:
        data = json.loads((host.state_dir / CATALOG_FILE).read_text(encoding="utf-8"))
        plugins = {
            str(p["id"]): PluginInfo(
                id=str(p["id"]), name=str(p.get("name") or p["id"]),
                version=str(p.get("version") or ""), kind=p.get("kind"),
                dependencies=tuple(p.get("dependencies") or []),
                source=str(p.get("source") or "builtin"), enabled=bool(p.get("enabled")),
                default_enabled=bool(p.get("default_enabled")), error=p.get("error"),
                description=str(p.get("description") or ""),
                folder=str(p["folder"]) if p.get("folder") else None,
                dependencies_from=str(p.get("dependencies_from") or "saved"),
            )
            for p in data["plugins"]
        }
        return Catalog(plugins, float(data.get("taken_at") or 0))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None


class PluginListUnavailable(HostError):
    """The backend answers, but serves no plugin list: PixSim7 with ``admin_plugins`` disabled."""


def fetch_catalog(url: str, denylist: list[str], *, client: Any = None) -> Catalog:
    """The running backend's plugins, with their dependencies.

    PixSim7's list has no dependencies: they come from each plugin's details (one request
    per plugin the list gives without them). A plugin whose details cannot be read keeps
    ``dependencies_from="unknown"`` for :func:`with_installed` to fill from its manifest.
    """
    from pixsim_host.health import make_client

    if client is None:
        with make_client() as own:
            return fetch_catalog(url, denylist, client=own)
    answer = _get_list(client, url)
    catalog = catalog_from_list(answer, denylist, time.time())
    lacking = {str(entry["id"]) for entry in listed_plugins(answer) if "dependencies" not in entry}
    for pid in sorted(lacking & set(catalog.plugins)):
        dependencies = _details_dependencies(client, url, pid)
        catalog.plugins[pid] = replace(
            catalog.plugins[pid], dependencies=dependencies or (),
            dependencies_from="details" if dependencies is not None else "unknown")
    catalog.live = True
    return catalog


def _get_list(client: Any, url: str) -> dict[str, Any]:
    from pixsim_host.health import ProbeError, get_json

    try:
        return get_json(client, url, LIST_PATH)
    except ProbeError as exc:
        failure = str(exc)
    if failure.endswith("answered HTTP 404"):
        # The backend answered (the caller verified who it is): only the route is gone.
        raise PluginListUnavailable(
            f"the backend at {url} serves no plugin list ({LIST_PATH} is 404: its "
            f"{LIST_PLUGIN} plugin is disabled), so pixsim-host cannot see which plugins it "
            f"loaded; enable it again with `pixsim-host plugins enable {LIST_PLUGIN}`")
    raise HostError(f"the backend at {url} did not list its plugins ({failure}); "
                    "check `pixsim-host status`")


def _details_dependencies(client: Any, url: str, plugin_id: str) -> tuple[str, ...] | None:
    """``dependencies`` from the plugin's details, or None when they cannot be read."""
    from urllib.parse import quote

    from pixsim_host.health import ProbeError, get_json

    try:
        details = get_json(client, url, DETAILS_PATH.format(quote(plugin_id, safe="")))
    except ProbeError:
        return None
    found = details.get("dependencies")
    if not isinstance(found, list) or not all(isinstance(d, str) for d in found):
        return None
    return tuple(found)


# ---- resolution -------------------------------------------------------------------


@dataclass
class PluginChange:
    enabled: list[str]
    disabled: list[str]
    also: list[str] = field(default_factory=list)  # what resolution added, to tell the user


def effective_enabled(catalog: Catalog, disabled: set[str]) -> set[str]:
    return {
        p.id for p in catalog.plugins.values()
        if p.default_enabled and not p.error and p.id not in disabled
    }


def trap_problems(catalog: Catalog, disabled: set[str]) -> list[str]:
    """What would abort the backend's start-up with this denylist (PixSim7's rule)."""
    on = effective_enabled(catalog, disabled)
    problems = []
    for plugin in sorted(catalog.plugins.values(), key=lambda p: p.id):
        if plugin.error:
            continue  # a plugin that failed to import is not loaded, so not checked
        for dep in plugin.dependencies:
            if dep not in catalog.plugins or catalog.plugins[dep].error:
                problems.append(f"{plugin.id} depends on {dep}, which is not installed")
            elif dep not in on:
                problems.append(f"{plugin.id} depends on {dep}, which would be disabled")
    return problems


def plan_enable(config: HostConfig, catalog: Catalog, ids: list[str]) -> PluginChange:
    for pid in ids:
        catalog.get(pid)
    wanted = set(ids)
    for pid in ids:
        wanted |= catalog.requirements(pid)
    missing = sorted(d for d in wanted if d not in catalog.plugins)
    if missing:
        raise HostError(f"cannot enable {', '.join(ids)}: it needs {', '.join(missing)}, which "
                        "this backend does not have; install it with `pixsim-host plugins install`")
    # Only what was off is news: a requirement already enabled is not "also enabled".
    already_on = effective_enabled(catalog, set(config.plugins.disabled))
    also = sorted(wanted - set(ids) - already_on)
    enabled = sorted(set(config.plugins.enabled) | wanted)
    disabled = sorted(set(config.plugins.disabled) - wanted)
    return PluginChange(enabled, disabled, also)


def plan_disable(config: HostConfig, catalog: Catalog, ids: list[str], cascade: bool) -> PluginChange:
    for pid in ids:
        catalog.get(pid)
    targets = set(ids)
    dependents = set().union(*(catalog.dependents(pid) for pid in ids)) - targets
    on = effective_enabled(catalog, set(config.plugins.disabled))
    enabled_dependents = sorted(dependents & on)
    if enabled_dependents and not cascade:
        # Suggest --cascade only where it can work: a dependent that stays installed aborts
        # start-up even when disabled, so built-in dependents mean the plugin stays on.
        if trap_problems(catalog, set(config.plugins.disabled) | targets | dependents):
            raise HostError(
                f"cannot disable {', '.join(ids)}: enabled plugins depend on it "
                f"({', '.join(enabled_dependents)}) and PixSim7 aborts start-up when any installed "
                f"plugin, even a disabled one, depends on a disabled plugin; "
                + _keep_or_remove(catalog, ids, dependents)
            )
        raise HostError(
            f"cannot disable {', '.join(ids)}: enabled plugins depend on it "
            f"({', '.join(enabled_dependents)}); disable those first, or pass --cascade"
        )
    if cascade:
        targets |= dependents
    disabled = set(config.plugins.disabled) | targets
    problems = trap_problems(catalog, disabled)
    if problems:
        raise HostError(
            f"cannot disable {', '.join(sorted(targets))}: PixSim7 aborts start-up when any installed "
            f"plugin, even a disabled one, depends on a disabled plugin ({'; '.join(problems)}); "
            "remove the dependent plugins (`pixsim-host plugins remove ID` for installed ones) or "
            "keep it enabled"
        )
    enabled = sorted(set(config.plugins.enabled) - targets)
    return PluginChange(enabled, sorted(disabled), sorted(targets - set(ids)))


def _keep_or_remove(catalog: Catalog, ids: list[str], dependents: set[str]) -> str:
    """Advice that works when dependents block a disable: remove external ones, or keep it."""
    builtin = sorted(d for d in dependents if catalog.plugins[d].source != "external")
    external = sorted(d for d in dependents if catalog.plugins[d].source == "external")
    if builtin:
        return (f"{', '.join(builtin)} {'is' if len(builtin) == 1 else 'are'} built into the backend, "
                f"so {', '.join(ids)} must stay enabled")
    return (f"remove {', '.join(external)} first (`pixsim-host plugins remove {external[0]}`), "
            f"then disable {', '.join(ids)}")


def registration_problems(config: HostConfig, catalog: Catalog) -> list[str]:
    """Why the running backend's plugin set is not the one this host's config asks for."""
    problems = []
    for pid in config.plugins.enabled:
        info = catalog.plugins.get(pid)
        if info is None:
            problems.append(f"{pid} is not known to the backend")
        elif info.error:
            problems.append(f"{pid} failed to load: {info.error}")
        elif not info.enabled:
            reason = ("its manifest disables it by default, which configuration cannot override"
                      if not info.default_enabled else "the backend reports it disabled")
            problems.append(f"{pid} is not enabled ({reason})")
    for pid in config.plugins.disabled:
        info = catalog.plugins.get(pid)
        if info is not None and info.enabled:
            problems.append(f"{pid} is still enabled although this host disables it")
    for info in catalog.plugins.values():
        if info.error and info.id not in config.plugins.disabled and info.id not in config.plugins.enabled:
            problems.append(f"{info.id} failed to load: {info.error}")
    return problems


def verify_registration(host: HostDir, config: HostConfig, url: str,
                        notes: list[str] | None = None, *,
                        backend_log: Callable[[], str] | None = None) -> list[str]:
    """Check what the running backend loaded against this host's set; the enabled ids.

    The catalog (completed from the manifests) is saved for commands run while the
    backend is down. A backend that serves no plugin list (``admin_plugins`` disabled)
    was verified by identity and health already: that is said in ``notes``, and the
    last catalog is kept, rather than failing (and rolling back) a healthy backend.
    ``backend_log`` gives the backend's last (masked) log lines: what it said of a plugin
    that did not load is quoted.
    """
    try:
        live = fetch_catalog(url, list(config.plugins.disabled))
    except PluginListUnavailable:
        if notes is not None:
            notes.append(f"the backend serves no plugin list (its {LIST_PLUGIN} plugin is "
                         "disabled): its identity and health are verified, its plugin set "
                         "cannot be")
        return []
    problems = registration_problems(config, live)
    for package in read_packages(host.plugins_dir, "external"):
        # PixSim7 leaves a plugin that failed to import out of its list altogether.
        if package.id and package.id not in live.plugins and package.id not in config.plugins.disabled:
            said = _log_lines_about(backend_log() if backend_log else "",
                                    {package.id, package.folder.name})
            problems.append(f"{package.id} (installed in plugins/{package.folder.name}) did not "
                            f"load{f' (the backend said: {said})' if said else ''}: see "
                            "`pixsim-host logs backend`")
    save_catalog(host, with_installed(live, host, config))
    if problems:
        raise HostError(
            f"the backend is up but its plugins are not this host's set: {'; '.join(problems)}; "
            "fix or disable them (`pixsim-host plugins disable ID`, `pixsim-host plugins list`)"
        )
    return sorted(p.id for p in live.plugins.values() if p.enabled)


def _log_lines_about(log: str, names: set[str], limit: int = 2) -> str:
    """The last ``limit`` log lines that name one of ``names`` (quoted), shortened."""
    found = [line.strip() for line in log.splitlines()
             if any(f"'{n}'" in line or f'"{n}"' in line or f"/{n}/" in line for n in names)]
    return " / ".join(line[:240] for line in found[-limit:])


# ---- external plugin packages -------------------------------------------------------


def _check_tree(root: Path, name: str) -> None:
    size = 0
    for count, path in enumerate(root.rglob("*"), start=1):
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            raise HostError(f"plugin {name} contains a link ({path.relative_to(root)}); "
                            "links are refused, copy the files instead")
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise HostError(f"plugin {name} contains a special file ({path.relative_to(root)})")
        size += path.lstat().st_size if stat.S_ISREG(mode) else 0
        if count > MAX_PLUGIN_FILES or size > MAX_PLUGIN_BYTES:
            raise HostError(
                f"plugin {name} is larger than the limit ({MAX_PLUGIN_FILES} files, "
                f"{MAX_PLUGIN_BYTES // (1024 * 1024)} MiB); ship media separately"
            )


def _validate_package(folder: Path) -> PluginPackage:
    name = folder.name
    problem = plugin_id_problem(name)
    if problem:
        # PixSim7 silently skips such a folder: installed, it would never load.
        raise HostError(f"plugin folder name {name!r} {problem}; rename the folder")
    if not (folder / "backend" / "manifest.py").is_file():
        raise HostError(f"{name} is not a PixSim7 plugin package: {name}/backend/manifest.py is missing")
    _check_tree(folder, name)
    package = PluginPackage(folder, "external", static_manifest(folder) or {})
    if package.id is None:
        raise HostError(f"{name}/backend/manifest.py has no literal id (like `id=\"my_plugin\"`): "
                        "pixsim-host reads manifests without running them and needs the id, "
                        "which PixSim7 names the plugin by; write the id as a plain string")
    problem = plugin_id_problem(package.id)
    if problem:
        raise HostError(f"{name}'s manifest id {package.id!r} {problem}; fix the manifest's id")
    return package


def check_bundled_packages(root: Path) -> list[str]:
    """The plugin folders a bundle carries pass the checks `plugins install` makes (name,
    manifest, id, links, special files, size), and no two share an id; their ids."""
    seen: dict[str, str] = {}
    for folder in sorted(root.iterdir(), key=lambda p: p.name):
        if folder.is_symlink() or not folder.is_dir():
            raise HostError(f"plugins/{folder.name} is not a plugin folder; refused")
        package = _validate_package(folder)
        assert package.id is not None
        if package.id in seen:
            raise HostError(f"plugins/{seen[package.id]} and plugins/{folder.name} both have the "
                            f"id {package.id!r}; refused")
        seen[package.id] = folder.name
    return sorted(seen)


def _safe_members_tar(archive: tarfile.TarFile, source: Path) -> None:
    total = 0
    for member in archive.getmembers():
        _check_member_name(member.name, source)
        if member.issym() or member.islnk():
            raise HostError(f"{source.name} contains a link ({member.name}); refused")
        if not (member.isfile() or member.isdir()):
            raise HostError(f"{source.name} contains a special file ({member.name}); refused")
        total += member.size
        if total > MAX_PLUGIN_BYTES or len(archive.getmembers()) > MAX_PLUGIN_FILES:
            raise HostError(f"{source.name} unpacks to more than the plugin size limit; refused")


def _safe_members_zip(archive: zipfile.ZipFile, source: Path) -> None:
    total = 0
    infos = archive.infolist()
    if len(infos) > MAX_PLUGIN_FILES:
        raise HostError(f"{source.name} has more than {MAX_PLUGIN_FILES} files; refused")
    for info in infos:
        _check_member_name(info.filename, source)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise HostError(f"{source.name} contains a link ({info.filename}); refused")
        total += info.file_size
        if total > MAX_PLUGIN_BYTES:
            raise HostError(f"{source.name} unpacks to more than the plugin size limit; refused")


def _check_member_name(name: str, source: Path) -> None:
    parts = Path(name).parts
    if name.startswith(("/", "\\")) or (parts and ":" in parts[0]) or ".." in parts or "\\" in name:
        raise HostError(f"{source.name} has a member outside its folder ({name!r}); refused")


def _unpack(source: Path, into: Path) -> Path:
    """Unpack an archive into ``into`` after checking every member; return its one folder."""
    name = source.name.lower()
    if name.endswith((".tar.gz", ".tgz")):
        try:
            with tarfile.open(source, "r:gz") as archive:
                _safe_members_tar(archive, source)
                # Every member was checked above; the "data" filter (Python 3.11.4+) is a
                # second line of defence where the interpreter has it.
                if hasattr(tarfile, "data_filter"):
                    archive.extractall(into, filter="data")
                else:
                    archive.extractall(into)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise HostError(f"{source.name} is not a readable .tar.gz ({exc}); check the file") from None
    elif name.endswith(".zip"):
        try:
            with zipfile.ZipFile(source) as archive:
                _safe_members_zip(archive, source)
                archive.extractall(into)
        except (zipfile.BadZipFile, OSError) as exc:
            raise HostError(f"{source.name} is not a readable .zip ({exc}); check the file") from None
    else:
        raise HostError(f"{source.name}: a plugin package is a folder, a .tar.gz or a .zip")
    entries = [p for p in into.iterdir()]
    if len(entries) != 1 or not entries[0].is_dir():
        raise HostError(f"{source.name} must hold exactly one folder, the plugin (named like its id)")
    return entries[0]


def install_package(host: HostDir, source: Path, *, config: HostConfig | None = None,
                    known: Iterable[str] = (),
                    on_place: Callable[[Path], None] | None = None) -> PluginPackage:
    """Copy a validated plugin package into the host's plugins/; return it (id from its manifest).

    Refused when its id is one the backend already has (``known``: the catalog's ids) or
    another package here holds, or its folder name is taken (installed or bundled with
    the checkout: the backend sees both in one directory). The package is unpacked and
    checked in a staging directory and then renamed into place whole; ``on_place`` is told
    the folder it is about to become (to journal it) just before.
    """
    source = source.expanduser()
    if not source.exists():
        raise HostError(f"{source} does not exist; give a plugin folder, .tar.gz or .zip")
    host.state_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=host.state_dir, prefix="install-") as tmp:
        staging = Path(tmp) / "unpacked"
        staging.mkdir()
        if source.is_dir():
            if source.is_symlink():
                raise HostError(f"{source} is a link; give the plugin folder itself")
            _check_tree(source, source.name)
            folder = staging / source.name
            shutil.copytree(source, folder, symlinks=True)
        else:
            folder = _unpack(source, staging)
        package = _validate_package(folder)
        pid, name = package.id, folder.name
        assert pid is not None
        present = host_packages(host, config)
        holder = next((p for p in present if p.id == pid), None)
        if holder is not None:
            where = {"external": "installed in this host",
                     "bundled": f"bundled with the checkout ({holder.folder})"}.get(
                         holder.source, f"built into the backend ({holder.folder})")
            fix = (f"`pixsim-host plugins remove {pid}` first" if holder.source == "external"
                   else "give the package another id, or leave the bundled one in use")
            raise HostError(f"plugin {pid} (folder {name}) is already {where}; {fix}")
        if pid in set(known):
            raise HostError(f"this host's backend already has a plugin {pid!r}; a second package "
                            "with the same id would replace or shadow it: give it another id")
        taken = next((p for p in present if p.folder.name == name and p.source != "builtin"), None)
        if taken is not None or (host.plugins_dir / name).exists():
            raise HostError(f"a plugin folder named {name} is already in use"
                            f"{f' (by {taken.id})' if taken and taken.id else ''}; rename the "
                            "package's folder")
        host.plugins_dir.mkdir(exist_ok=True)
        for path in [folder, *folder.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)  # the backend runs as another user
        target = host.plugins_dir / name
        if on_place is not None:
            on_place(target)
        folder.rename(target)
    return PluginPackage(target, "external", package.manifest)


@dataclass(frozen=True)
class PluginPackage:
    """A plugin package on disk: this host's plugins/ or the checkout's packages/plugins."""

    folder: Path
    source: str  # external (this host's plugins/) | bundled (the operator's checkout)
    manifest: dict[str, Any]

    @property
    def id(self) -> str | None:
        """The manifest's id: PixSim7's name for the plugin (the folder name is not)."""
        value = self.manifest.get("id")
        return value if isinstance(value, str) and value else None


def checkout_dir(host: HostDir, config: HostConfig) -> Path | None:
    """The operator's PixSim7 checkout, when this host is configured with one."""
    raw = getattr(config.backend, "source", None) or config.native.backend_workdir
    if not raw:
        return None
    path = Path(str(raw)).expanduser()
    return path if path.is_absolute() else host.root / path


def bundled_plugins_dir(host: HostDir, config: HostConfig | None) -> Path | None:
    """The checkout's ``packages/plugins`` (PixSim7's own plugins), if there is one."""
    checkout = checkout_dir(host, config) if config is not None else None
    found = checkout / BUNDLED_PLUGINS if checkout is not None else None
    return found if found is not None and found.is_dir() else None


def read_packages(root: Path | None, source: str, *, nested: bool = True) -> list[PluginPackage]:
    """Every folder PixSim7 would discover under ``root``: ``<name>/backend/manifest.py``
    (packages), or ``<name>/manifest.py`` with ``nested=False`` (built-in plugins)."""
    if root is None or not root.is_dir():
        return []
    found = []
    for folder in sorted(root.iterdir(), key=lambda p: p.name):
        manifest = folder / "backend" / "manifest.py" if nested else folder / "manifest.py"
        if folder.is_dir() and plugin_id_problem(folder.name) is None and manifest.is_file():
            found.append(PluginPackage(folder, source, read_manifest(manifest) or {}))
    return found


# PixSim7's own built-in plugins in a checkout (its FEATURE_PLUGINS_DIR and ROUTE_PLUGINS_DIR).
CHECKOUT_BUILTIN_DIRS = (Path("pixsim7/backend/main/plugins"), Path("pixsim7/backend/main/routes"))


def reference_backend_in_use(host: HostDir, config: HostConfig) -> bool:
    """Whether the host runs pixsim-host's reference backend (its image, or natively its code)."""
    if checkout_dir(host, config) is not None:
        return False
    return config.uses_reference_backend


def builtin_plugin_dirs(host: HostDir, config: HostConfig | None) -> list[Path]:
    """Where the backend's built-in plugins' manifests can be read: the checkout's, or the
    reference backend's own package."""
    if config is None:
        return []
    checkout = checkout_dir(host, config)
    if checkout is not None:
        return [checkout / d for d in CHECKOUT_BUILTIN_DIRS if (checkout / d).is_dir()]
    if reference_backend_in_use(host, config):
        from importlib import resources

        return [Path(str(resources.files("pixsim_reference_backend"))) / "plugins"]
    return []


def host_packages(host: HostDir, config: HostConfig | None = None) -> list[PluginPackage]:
    """This host's installed packages, then (with a config) the ones bundled with its
    checkout and the backend's built-in plugins: every manifest pixsim-host can read."""
    return [*read_packages(host.plugins_dir, "external"),
            *read_packages(bundled_plugins_dir(host, config), "bundled"),
            *(package for root in builtin_plugin_dirs(host, config)
              for package in read_packages(root, "builtin", nested=False))]


def plugin_search_dir(host: HostDir, config: HostConfig, *, bundled_at: str | None = None,
                      installed_at: str | None = None, always: bool = False) -> Path:
    """The directory to give the backend as EXTERNAL_PLUGINS_DIR.

    PixSim7 reads plugin packages from that one directory, and its own ship in the
    checkout's ``packages/plugins``: pointing it at this host's plugins/ alone would hide
    them. Without a checkout that has them, it is plugins/ itself. With one, it is a view
    (``.pixsim-host/plugin-view``): one link per package folder, the bundled ones and then
    this host's, each pointing at its folder, so both are seen and nothing is copied. Links
    point at ``bundled_at``/``installed_at`` when the backend sees those directories
    elsewhere (a container's mounts), else at the folders on this machine. Rebuilt only when
    its links change, and swapped in whole. ``always``: a view even without bundled
    plugins (compose.yaml mounts it whenever the host has a checkout).
    """
    bundled = bundled_plugins_dir(host, config)
    if bundled is None and not always:
        return host.plugins_dir
    wanted: dict[str, str] = {}
    for root, seen_at in ((bundled, bundled_at), (host.plugins_dir, installed_at)):
        for package in read_packages(root, ""):
            name = package.folder.name
            wanted[name] = f"{seen_at}/{name}" if seen_at else str(package.folder.resolve())
    view = host.state_dir / PLUGIN_VIEW_DIR
    with contextlib.suppress(OSError):
        current = {p.name: os.readlink(p) for p in view.iterdir()}
        if current == wanted:
            return view
    host.state_dir.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(dir=host.state_dir, prefix=f".{PLUGIN_VIEW_DIR}-"))
    for name, target in sorted(wanted.items()):
        (fresh / name).symlink_to(target)
    fresh.chmod(0o755)  # the backend may run as another user
    stale = host.state_dir / f".{PLUGIN_VIEW_DIR}-old"
    shutil.rmtree(stale, ignore_errors=True)
    if view.exists():
        view.rename(stale)
    fresh.rename(view)
    shutil.rmtree(stale, ignore_errors=True)
    return view


def compose_plugin_mounts(host: HostDir, config: HostConfig, target: str) -> list[dict[str, str]]:
    """The read-only binds compose.yaml gives the backend and workers for plugins: plugins/
    at ``target``; with a checkout (backend.source), the checkout, plugins/ and the plugin
    view, which is then what ``target`` shows (see :func:`compose_plugin_view`)."""
    checkout = checkout_dir(host, config) if config.backend.source else None
    if checkout is None:
        return [{"source": "./plugins", "target": target}]
    return [{"source": str(checkout), "target": COMPOSE_CHECKOUT_DIR},
            {"source": "./plugins", "target": COMPOSE_INSTALLED_DIR},
            {"source": f"./{host.state_dir.name}/{PLUGIN_VIEW_DIR}", "target": target}]


def compose_plugin_view(host: HostDir, config: HostConfig) -> str:
    """Build the view compose.yaml mounts (when the host has a checkout); a fingerprint of
    what it shows ('' without one), so a changed set recreates the backend."""
    if not config.backend.source:
        return ""
    view = plugin_search_dir(host, config, always=True, installed_at=COMPOSE_INSTALLED_DIR,
                             bundled_at=f"{COMPOSE_CHECKOUT_DIR}/{BUNDLED_PLUGINS.as_posix()}")
    return ",".join(sorted(p.name for p in view.iterdir()))


def installed_ids(host: HostDir) -> list[str]:
    """The ids (from their manifests) of the packages installed in this host's plugins/."""
    return sorted(p.id for p in read_packages(host.plugins_dir, "external") if p.id)


def installed_package(host: HostDir, plugin_id: str) -> PluginPackage:
    """The installed package whose manifest id is ``plugin_id``; a folder name is refused."""
    packages = read_packages(host.plugins_dir, "external")
    for package in packages:
        if package.id == plugin_id:
            return package
    for package in packages:
        if package.folder.name == plugin_id and package.id:
            raise _folder_not_id(plugin_id, package.id)
    raise HostError(f"{plugin_id!r} is not installed in {host.plugins_dir}; only plugins "
                    "added with `pixsim-host plugins install` can be removed")


def _folder_not_id(folder: str, plugin_id: str) -> HostError:
    return HostError(f"{folder} is a plugin folder, not a plugin id: the plugin in it is "
                     f"{plugin_id!r} (PixSim7 names plugins by their manifest's id); use "
                     f"{plugin_id}")


def check_not_a_folder(name: str, catalog: Catalog) -> None:
    """Refuse a folder name given where an id is meant, naming the id to use."""
    for info in catalog.plugins.values():
        if info.folder == name and info.id != name:
            raise _folder_not_id(name, info.id)


def static_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of the package in ``folder`` (``backend/manifest.py``), read without running it."""
    return read_manifest(folder / "backend" / "manifest.py")


def read_manifest(path: Path) -> dict[str, Any] | None:
    """Read ``manifest = {...}`` or ``manifest = PluginManifest(...)`` without running it.

    An installed package is untrusted until the backend loads it, and pixsim-host must
    know its dependencies before that (to keep the dependency rule), so the manifest is
    parsed, never imported. Values that are not literals are ignored.
    """
    import ast

    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) \
                and node.target.id == "manifest" and node.value is not None:
            value = node.value  # manifest: PluginManifest = PluginManifest(...)
        elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "manifest" for t in node.targets):
            value = node.value
        else:
            continue
        pairs: list[tuple[str, ast.expr]] = []
        if isinstance(value, ast.Dict):
            pairs = [(k.value, v) for k, v in zip(value.keys, value.values, strict=True)
                     if isinstance(k, ast.Constant) and isinstance(k.value, str)]
        elif isinstance(value, ast.Call):
            pairs = [(kw.arg, kw.value) for kw in value.keywords if kw.arg]
        data: dict[str, Any] = {}
        for key, expr in pairs:
            try:
                data[key] = ast.literal_eval(expr)
            except (ValueError, TypeError, RecursionError, MemoryError):
                continue
        return data
    return None


def with_installed(catalog: Catalog, host: HostDir, config: HostConfig | None = None) -> Catalog:
    """The catalog completed from the manifests pixsim-host can read.

    Packages installed here (and, with ``config``, bundled with its checkout) that the
    backend has not loaded yet are added; for those it has, the folder is recorded and
    dependencies the backend did not give (``unknown``) or that are only remembered
    (``saved``) come from the manifest, which is what the next start-up will read.
    """
    plugins = dict(catalog.plugins)
    seen: set[str] = set()
    for package in host_packages(host, config):
        pid = package.id
        if pid is None or pid in seen:
            continue  # no literal id; or a bundled package shadowed by an installed one
        seen.add(pid)
        manifest = package.manifest
        raw = manifest.get("dependencies")
        dependencies = tuple(str(d) for d in raw) if isinstance(raw, list | tuple) else None
        known = plugins.get(pid)
        if known is not None:
            # The list says nothing of where a plugin comes from: the package on disk does.
            update: dict[str, Any] = {"folder": package.folder.name, "source": package.source}
            if dependencies is not None and known.dependencies_from in ("unknown", "saved"):
                update.update(dependencies=dependencies, dependencies_from="manifest")
            plugins[pid] = replace(known, **update)
            continue
        plugins[pid] = PluginInfo(
            id=pid, name=str(manifest.get("name") or pid), version=str(manifest.get("version") or ""),
            kind=manifest.get("kind") if isinstance(manifest.get("kind"), str) else None,
            dependencies=dependencies or (),
            source=package.source, enabled=False,
            default_enabled=bool(manifest.get("enabled", True)),
            description=str(manifest.get("description") or ""),
            folder=package.folder.name,
            dependencies_from="manifest" if dependencies is not None else "unknown",
        )
    return Catalog(plugins, catalog.taken_at, catalog.live, catalog.listed)


def check_plugin_lists(host: HostDir, config: HostConfig) -> None:
    """Refuse a plugin set that would abort the backend's start-up (hand-edited config)."""
    saved = load_catalog(host)
    if saved is None:
        return
    problems = trap_problems(with_installed(saved, host, config), set(config.plugins.disabled))
    if problems:
        raise HostError(
            f"plugins.disabled in pixsim-host.yaml would abort the backend's start-up "
            f"({'; '.join(problems)}); enable them again with `pixsim-host plugins enable ID`"
        )
