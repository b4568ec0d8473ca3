"""Plugin discovery and loading with PixSim7's rules, including its dependency trap.

Layouts:
  built-in  <FEATURE_PLUGINS_DIR>/<name>/manifest.py
  external  <EXTERNAL_PLUGINS_DIR>/<name>/backend/manifest.py

A manifest module exports ``manifest`` (a dict) and optionally ``routes`` mapping a
sub-path such as ``"/hello"`` to ``fn(request_info) -> (status, json_body)``.

A plugin is known by its manifest's ``id``; the folder name only locates it (the built-in
folder ``stealth`` holds ``game_stealth``). A feature and a route plugin may share an id,
as upstream's ``game_npcs`` does: both are listed, and the id enables or disables both.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VALID_FOLDER = re.compile(r"^[a-z][a-z0-9_-]*$")
RESERVED_FOLDERS = frozenset({"plugin", "plugins", "core", "system", "internal", "test", "tests"})
KINDS = ("feature", "route")

RouteFn = Callable[[dict[str, Any]], tuple[int, Any]]


class ManifestError(Exception):
    """The manifest module imported but does not describe a usable plugin."""


class PluginDependencyError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass
class Plugin:
    id: str
    folder: str
    source: str  # "builtin" | "external"
    name: str
    version: str = ""
    description: str = ""
    kind: str | None = None
    service: str | None = None
    dependencies: list[str] = field(default_factory=list)
    required: bool = False
    permissions: list[str] = field(default_factory=list)
    requires_db: bool = False
    requires_redis: bool = False
    author: str = ""
    manifest_enabled: bool = True
    enabled: bool = False
    disabled_reason: str | None = None
    routes: dict[str, RouteFn] = field(default_factory=dict)

    def list_entry(self) -> dict[str, Any]:
        """One entry of the list endpoint: exactly upstream's fields, no dependencies."""
        return {
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            "service": self.service,
            "enabled": self.enabled,
        }

    def details(self) -> dict[str, Any]:
        """The details endpoint's answer, in upstream's shape (its key is plugin_id)."""
        return {
            "plugin_id": self.id,
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "author": self.author,
            "kind": self.kind,
            "service": self.service,
            "enabled": self.enabled,
            "permissions": list(self.permissions),
            "dependencies": list(self.dependencies),
            "requires_db": self.requires_db,
            "requires_redis": self.requires_redis,
            "metrics": None,
            "behavior_extensions": {"conditions": [], "effects": []},
        }


@dataclass(frozen=True)
class FailedPlugin:
    """A plugin folder whose manifest could not be loaded: upstream does not list it, and
    a plugin depending on it finds it missing."""

    folder: str
    source: str
    error: str


@dataclass
class PluginSet:
    # One entry per manifest: a plugin that is both a feature and a route plugin (like
    # upstream's game_npcs) has two entries with one id.
    plugins: list[Plugin]
    failed: list[FailedPlugin] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def by_id(self, plugin_id: str) -> Plugin | None:
        for plugin in self.plugins:
            if plugin.id == plugin_id:
                return plugin
        return None

    def is_enabled(self, plugin_id: str) -> bool:
        plugin = self.by_id(plugin_id)
        return plugin is not None and plugin.enabled

    @property
    def enabled(self) -> list[Plugin]:
        return [p for p in self.plugins if p.enabled]

    def find_route(self, plugin_id: str, subpath: str) -> RouteFn | None:
        for plugin in self.plugins:
            if plugin.id == plugin_id and plugin.enabled and subpath in plugin.routes:
                return plugin.routes[subpath]
        return None

    def listing(self) -> dict[str, Any]:
        feature = [p.list_entry() for p in self.plugins if p.kind == "feature"]
        route = [p.list_entry() for p in self.plugins if p.kind == "route"]
        return {"feature_plugins": feature, "route_plugins": route,
                "total": len(feature) + len(route)}


def valid_folder_name(name: str) -> bool:
    return bool(VALID_FOLDER.match(name)) and name not in RESERVED_FOLDERS


def discover(feature_dir: Path, external_dir: Path) -> list[tuple[str, str, Path]]:
    """Return (folder, source, manifest_path) for every candidate, built-ins first."""
    found: list[tuple[str, str, Path]] = []
    for source, root, rel in (("builtin", feature_dir, "manifest.py"),
                              ("external", external_dir, "backend/manifest.py")):
        if not root.is_dir():
            continue
        for entry in sorted(root.iterdir(), key=lambda p: p.name):
            if not entry.is_dir() or not valid_folder_name(entry.name):
                continue
            manifest_path = entry / rel
            if manifest_path.is_file():
                found.append((entry.name, source, manifest_path))
    return found


def _import_manifest(folder: str, source: str, path: Path) -> types.ModuleType:
    # A synthetic package around the plugin folder lets a manifest use relative imports
    # of its own helper modules without the folder being on sys.path.
    safe = re.sub(r"[^a-z0-9_]", "_", folder)
    pkg_name = f"_pixsim_plugins_{source}.{safe}"
    parent_name = f"_pixsim_plugins_{source}"
    if parent_name not in sys.modules:
        parent = types.ModuleType(parent_name)
        parent.__path__ = []
        sys.modules[parent_name] = parent
    pkg = types.ModuleType(pkg_name)
    pkg.__path__ = [str(path.parent)]
    sys.modules[pkg_name] = pkg
    mod_name = f"{pkg_name}.manifest"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path.name}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(mod_name, None)
        raise
    return module


def _str_list(manifest: Mapping[str, Any], key: str) -> list[str]:
    value = manifest.get(key, [])
    if value is None:
        return []
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ManifestError(f"'{key}' must be a list of strings")
    return list(value)


def _bool(manifest: Mapping[str, Any], key: str, default: bool) -> bool:
    value = manifest.get(key, default)
    if not isinstance(value, bool):
        raise ManifestError(f"'{key}' must be true or false")
    return value


def _build(folder: str, source: str, module: types.ModuleType) -> Plugin:
    manifest = getattr(module, "manifest", None)
    if not isinstance(manifest, Mapping):
        raise ManifestError("manifest.py must export a dict named 'manifest'")
    plugin_id = manifest.get("id")
    if not isinstance(plugin_id, str) or not plugin_id:
        raise ManifestError("manifest 'id' must be a non-empty string")
    kind = manifest.get("kind", "feature")
    if kind not in KINDS:
        raise ManifestError(f"manifest 'kind' must be one of {', '.join(KINDS)}")
    for key in ("name", "version", "description", "author"):
        if key in manifest and not isinstance(manifest[key], str):
            raise ManifestError(f"manifest '{key}' must be a string")
    service = manifest.get("service")
    if service is not None and not isinstance(service, str):
        raise ManifestError("manifest 'service' must be a string")
    raw_routes = getattr(module, "routes", None) or {}
    if not isinstance(raw_routes, Mapping):
        raise ManifestError("'routes' must be a dict of sub-path to function")
    routes: dict[str, RouteFn] = {}
    for sub, fn in raw_routes.items():
        if not isinstance(sub, str) or not sub.startswith("/") or not callable(fn):
            raise ManifestError("each route must map a sub-path starting with '/' to a function")
        routes[sub] = fn
    return Plugin(
        id=plugin_id,
        folder=folder,
        source=source,
        name=manifest.get("name") or plugin_id,
        version=manifest.get("version", "0.0.0"),
        description=manifest.get("description", ""),
        author=manifest.get("author", ""),
        kind=kind,
        service=service,
        dependencies=_str_list(manifest, "dependencies"),
        required=_bool(manifest, "required", False),
        permissions=_str_list(manifest, "permissions"),
        requires_db=_bool(manifest, "requires_db", False),
        requires_redis=_bool(manifest, "requires_redis", False),
        manifest_enabled=_bool(manifest, "enabled", True),
        routes=routes,
    )


def load_plugins(
    feature_dir: Path,
    external_dir: Path,
    allowlist: list[str] | None = None,
    denylist: list[str] | None = None,
) -> PluginSet:
    """Import every plugin, decide which are enabled, then enforce the dependency rule.

    Raises PluginDependencyError when any loaded plugin, enabled or not, depends on a
    plugin that is missing (never there, or its manifest failed to load) or disabled:
    upstream aborts start-up in those cases, and pixsim-host must see the same behaviour
    to learn to avoid it. Allow and deny lists match manifest ids, not folder names.
    """
    plugins: list[Plugin] = []
    failed: list[FailedPlugin] = []
    warnings: list[str] = []
    seen: dict[tuple[str, str | None], Plugin] = {}
    for folder, source, path in discover(feature_dir, external_dir):
        try:
            module = _import_manifest(folder, source, path)
            plugin = _build(folder, source, module)
        except Exception as exc:  # a broken plugin must not take the others down
            failed.append(FailedPlugin(folder, source, f"{type(exc).__name__}: {exc}"))
            continue
        key = (plugin.id, plugin.kind)
        if key in seen:
            other = seen[key]
            warnings.append(
                f"{plugin.kind} plugin id '{plugin.id}' from {source} folder '{folder}' "
                f"ignored: already provided by {other.source} folder '{other.folder}'"
            )
            continue
        seen[key] = plugin
        plugins.append(plugin)

    allow = set(allowlist) if allowlist else None
    deny = set(denylist or ())
    for plugin in plugins:
        if not plugin.manifest_enabled:
            plugin.enabled, plugin.disabled_reason = False, "disabled in its manifest"
        elif plugin.id in deny:
            plugin.enabled, plugin.disabled_reason = False, "listed in PLUGIN_DENYLIST"
        elif allow is not None and plugin.id not in allow:
            plugin.enabled, plugin.disabled_reason = False, "not in PLUGIN_ALLOWLIST"
        else:
            plugin.enabled = True

    loaded = PluginSet(plugins, failed, warnings)
    problems: list[str] = []
    for plugin in plugins:
        for dep in plugin.dependencies:
            target = loaded.by_id(dep)
            if target is None:
                problems.append(f"ValueError: Missing dependency: {dep} (needed by {plugin.id})")
            elif not target.enabled:
                problems.append(f"ValueError: Plugin '{plugin.id}' depends on '{dep}' which is "
                                f"disabled ({target.disabled_reason})")
    if problems:
        raise PluginDependencyError(list(dict.fromkeys(problems)))
    return loaded
