"""Plugins as the real PixSim7 backend reports them, against fakes of its exact answers.

PixSim7's ``GET /api/v1/admin/plugins/list`` gives ``{id, name, version, kind, service,
enabled}`` per plugin and no dependencies; ``GET /api/v1/admin/plugins/{id}/details``
gives them (``plugin_id``, ..., ``dependencies``); a plugin's id is its manifest's
(folder ``stealth`` holds ``game_stealth``); disabling ``admin_plugins`` makes both 404.
The fakes below answer with those shapes through ``httpx.MockTransport``.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pixsim_host import health
from pixsim_host.config import HostConfig
from pixsim_host.errors import HostError
from pixsim_host.hostdir import HostDir
from pixsim_host.plugins import (
    PluginListUnavailable,
    fetch_catalog,
    install_package,
    installed_package,
    load_catalog,
    plan_disable,
    plugin_search_dir,
    save_catalog,
    static_manifest,
    trap_problems,
    verify_registration,
    with_installed,
)

URL = "http://127.0.0.1:18999"

# id -> (kind, dependencies, enabled), shaped like a real PixSim7 host's plugin set.
REAL_SET: dict[str, tuple[str, list[str], bool]] = {
    "auth": ("route", [], True),
    "admin": ("route", ["auth"], True),
    "admin_plugins": ("route", ["admin"], True),
    "assets": ("route", ["auth"], True),
    "analyses": ("route", ["auth", "assets"], True),
    "game_stealth": ("feature", [], True),
    "romance": ("feature", [], True),
}


class FakeBackend:
    """PixSim7's two plugin endpoints, with the real response shapes."""

    def __init__(self, plugins: dict[str, tuple[str, list[str], bool]], *,
                 list_enabled: bool = True, broken_details: frozenset[str] = frozenset()) -> None:
        self.plugins = plugins
        self.list_enabled = list_enabled
        self.broken_details = broken_details
        self.requests: list[str] = []

    def entry(self, pid: str) -> dict[str, Any]:
        kind, _deps, enabled = self.plugins[pid]
        # Exactly the list's fields: no dependencies, no source, no error.
        return {"id": pid, "name": pid.replace("_", " ").title(), "version": "1.0.0",
                "kind": kind, "service": "core", "enabled": enabled}

    def details(self, pid: str) -> dict[str, Any]:
        kind, deps, enabled = self.plugins[pid]
        return {"plugin_id": pid, "name": pid.title(), "version": "1.0.0", "description": None,
                "author": "PixSim Team", "kind": kind, "service": "core", "enabled": enabled,
                "permissions": [], "dependencies": list(deps), "requires_db": False,
                "requires_redis": False, "metrics": None,
                "behavior_extensions": {"conditions": [], "effects": []}}

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.requests.append(path)
        if not self.list_enabled and path.startswith("/api/v1/admin/plugins/"):
            return httpx.Response(404, json={"detail": "Not Found"})
        if path == "/api/v1/admin/plugins/list":
            feature = [self.entry(p) for p in self.plugins if self.plugins[p][0] == "feature"]
            route = [self.entry(p) for p in self.plugins if self.plugins[p][0] == "route"]
            return httpx.Response(200, json={"feature_plugins": feature, "route_plugins": route,
                                             "total": len(feature) + len(route)})
        prefix, suffix = "/api/v1/admin/plugins/", "/details"
        if path.startswith(prefix) and path.endswith(suffix):
            pid = path[len(prefix):-len(suffix)]
            if pid in self.plugins and pid not in self.broken_details:
                return httpx.Response(200, json=self.details(pid))
            return httpx.Response(404, json={"detail": f"Plugin '{pid}' not found"})
        return httpx.Response(404, json={"detail": "Not Found"})



def route(monkeypatch: pytest.MonkeyPatch, transport: httpx.MockTransport) -> None:
    """Every HTTP client pixsim-host opens from now on talks to ``transport``."""
    try:
        from pixsim_host import webclient
    except ImportError:  # the plain httpx client
        monkeypatch.setattr(health, "make_client",
                            lambda timeout=3.0: httpx.Client(transport=transport))
    else:
        monkeypatch.setattr(webclient, "TRANSPORT", transport)


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Callable[[FakeBackend], FakeBackend]:
    """Route every client pixsim-host makes to a fake backend."""

    def install(backend: FakeBackend) -> FakeBackend:
        route(monkeypatch, httpx.MockTransport(backend.handle))
        return backend

    return install


@pytest.fixture
def host(tmp_path: Path) -> Iterator[HostDir]:
    root = tmp_path / "host"
    (root / ".pixsim-host").mkdir(parents=True)
    (root / "plugins").mkdir()
    yield HostDir(root)


def config(disabled: list[str] | None = None, checkout: Path | None = None,
           image: str = "example.org/operator/backend:1") -> HostConfig:
    """A host of an operator's own backend image (not the reference one, whose built-in
    manifests pixsim-host would read), with a checkout if given."""
    return HostConfig(host_id=str(uuid.uuid4()), name="real-shapes",
                      plugins={"enabled": [], "disabled": disabled or []},
                      backend={"image": image},
                      native={"backend_workdir": str(checkout) if checkout else None})


def package(root: Path, folder: str, manifest: str) -> Path:
    where = root / folder / "backend"
    where.mkdir(parents=True)
    (where / "manifest.py").write_text(manifest)
    return root / folder


STEALTH_MANIFEST = '''
from fastapi import APIRouter
from backend.models import PickpocketRequest

FRONTEND_MANIFEST = {"pluginId": "game_stealth"}

manifest = PluginManifest(
    id="game_stealth",
    name="Game Stealth & Pickpocket",
    version="3.0.0",
    kind="feature",
    dependencies=["romance"],
    enabled=True,
    frontend_manifest=FRONTEND_MANIFEST,
)
'''


# ---- dependencies come from details ----------------------------------------------------------


def test_dependencies_missing_from_the_list_come_from_details(serve: Any) -> None:
    backend = serve(FakeBackend(REAL_SET))
    catalog = fetch_catalog(URL, [])
    assert catalog.plugins["analyses"].dependencies == ("auth", "assets")
    assert catalog.plugins["admin_plugins"].dependencies == ("admin",)
    assert {p.dependencies_from for p in catalog.plugins.values()} == {"details"}
    # One list, then one details request per plugin.
    assert backend.requests[0] == "/api/v1/admin/plugins/list"
    assert sorted(backend.requests[1:]) == sorted(
        f"/api/v1/admin/plugins/{pid}/details" for pid in REAL_SET)


def test_disabling_auth_is_refused_upfront_with_dependencies_only_details_gave(serve: Any) -> None:
    serve(FakeBackend(REAL_SET))
    catalog = fetch_catalog(URL, [])
    with pytest.raises(HostError, match="enabled plugins depend on it") as caught:
        plan_disable(config(), catalog, ["auth"], cascade=False)
    for dependent in ("admin", "admin_plugins", "assets", "analyses"):
        assert dependent in caught.value.message
    # --cascade cannot help either: PixSim7 imports disabled plugins too and aborts.
    with pytest.raises(HostError, match="even a disabled one"):
        plan_disable(config(), catalog, ["auth"], cascade=True)


def test_a_disabled_dependent_still_aborts_start_up(serve: Any) -> None:
    """The rule: ANY loaded plugin, enabled or not, depending on a disabled one aborts."""
    serve(FakeBackend({**REAL_SET, "analyses": ("route", ["auth", "assets"], False)}))
    catalog = fetch_catalog(URL, ["analyses"])
    problems = trap_problems(catalog, {"analyses", "assets"})
    assert problems == ["analyses depends on assets, which would be disabled"]
    with pytest.raises(HostError, match="analyses depends on assets"):
        plan_disable(config(disabled=["analyses"]), catalog, ["assets"], cascade=False)


def test_without_details_dependencies_are_unknown_not_empty(serve: Any) -> None:
    """Without details the dependencies are unknown, not empty: the guard needs them."""
    serve(FakeBackend(REAL_SET, broken_details=frozenset(REAL_SET)))
    catalog = fetch_catalog(URL, [])
    assert {p.dependencies_from for p in catalog.plugins.values()} == {"unknown"}


def test_manifests_fill_what_details_did_not_give(serve: Any, host: HostDir, tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    package(checkout / "packages" / "plugins", "stealth", STEALTH_MANIFEST)
    serve(FakeBackend(REAL_SET, broken_details=frozenset({"game_stealth"})))
    cfg = config(checkout=checkout)
    catalog = with_installed(fetch_catalog(URL, []), host, cfg)
    stealth = catalog.plugins["game_stealth"]
    assert (stealth.dependencies, stealth.dependencies_from) == (("romance",), "manifest")
    assert stealth.folder == "stealth"
    with pytest.raises(HostError, match="game_stealth"):
        plan_disable(cfg, catalog, ["romance"], cascade=False)


def test_the_saved_catalog_keeps_what_details_and_manifests_taught(
        serve: Any, host: HostDir, tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    package(checkout / "packages" / "plugins", "stealth", STEALTH_MANIFEST)
    serve(FakeBackend(REAL_SET, broken_details=frozenset({"game_stealth"})))
    cfg = config(checkout=checkout)
    verify_registration(host, cfg, URL)
    saved = load_catalog(host)
    assert saved is not None
    assert saved.plugins["analyses"].dependencies == ("auth", "assets")
    assert saved.plugins["game_stealth"].dependencies == ("romance",)
    assert saved.plugins["game_stealth"].folder == "stealth"
    data = json.loads((host.state_dir / "plugins.json").read_text())
    assert {p["id"]: p["dependencies_from"] for p in data["plugins"]}["analyses"] == "details"
    # The backend down: the guard still knows them.
    with pytest.raises(HostError, match="enabled plugins depend on it"):
        plan_disable(cfg, with_installed(saved, host, cfg), ["auth"], cascade=False)


# ---- ids are the manifests' ------------------------------------------------------------------


def test_a_folder_name_is_refused_naming_the_id(serve: Any, host: HostDir) -> None:
    package(host.plugins_dir, "stealth", STEALTH_MANIFEST)
    serve(FakeBackend(REAL_SET))
    catalog = with_installed(fetch_catalog(URL, []), host, config())
    assert "stealth" not in catalog.plugins
    with pytest.raises(HostError, match="stealth is a plugin folder, not a plugin id.*use game_stealth"):
        catalog.get("stealth")
    with pytest.raises(HostError, match="use game_stealth"):
        plan_disable(config(), catalog, ["stealth"], cascade=False)
    with pytest.raises(HostError, match="use game_stealth"):
        installed_package(host, "stealth")
    assert installed_package(host, "game_stealth").folder == host.plugins_dir / "stealth"


def test_install_refuses_an_id_the_backend_has(host: HostDir, tmp_path: Path) -> None:
    source = package(tmp_path / "src", "my_romance", 'manifest = {"id": "romance"}\n')
    with pytest.raises(HostError, match="already has a plugin 'romance'"):
        install_package(host, source, config=config(), known=REAL_SET)
    assert list(host.plugins_dir.iterdir()) == []


def test_install_refuses_an_id_bundled_with_the_checkout(host: HostDir, tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    package(checkout / "packages" / "plugins", "stealth", STEALTH_MANIFEST)
    source = package(tmp_path / "src", "stealth_fork", 'manifest = {"id": "game_stealth"}\n')
    with pytest.raises(HostError, match="bundled with the checkout"):
        install_package(host, source, config=config(checkout=checkout))
    # And a folder name the checkout uses (the backend sees both in one directory).
    other = package(tmp_path / "src2", "stealth", 'manifest = {"id": "sneaking"}\n')
    with pytest.raises(HostError, match="folder named stealth is already in use"):
        install_package(host, other, config=config(checkout=checkout))
    assert list(host.plugins_dir.iterdir()) == []


@pytest.mark.parametrize(("manifest", "match"), [
    ("manifest = PluginManifest(id=make_id())\n", "no literal id"),
    ("manifest = {'name': 'no id'}\n", "no literal id"),
    ("manifest = {'id': 'Bad-Id'}\n", "manifest id 'Bad-Id'"),
    ("manifest = {'id': 'core'}\n", "reserved name"),
])
def test_install_refuses_a_missing_or_invalid_id(host: HostDir, tmp_path: Path, manifest: str,
                                                 match: str) -> None:
    source = package(tmp_path / "src", "pkg", manifest)
    with pytest.raises(HostError, match=match):
        install_package(host, source, config=config())
    assert list(host.plugins_dir.iterdir()) == []


def test_install_keeps_the_folder_and_reports_the_id(host: HostDir, tmp_path: Path) -> None:
    source = package(tmp_path / "src", "stealth", STEALTH_MANIFEST)
    installed = install_package(host, source, config=config(), known=["romance"])
    assert installed.id == "game_stealth"
    assert installed.folder == host.plugins_dir / "stealth"


def test_an_annotated_manifest_is_read(tmp_path: Path) -> None:
    folder = package(tmp_path, "typed", 'manifest: PluginManifest = PluginManifest(id="typed_one", '
                                        'dependencies=["auth"])\n')
    assert static_manifest(folder) == {"id": "typed_one", "dependencies": ["auth"]}


# ---- the list endpoint disabled ---------------------------------------------------------------


def test_a_disabled_list_endpoint_is_said_so(serve: Any) -> None:
    serve(FakeBackend(REAL_SET, list_enabled=False))
    with pytest.raises(PluginListUnavailable, match="admin_plugins plugin is disabled"):
        fetch_catalog(URL, ["admin_plugins"])


def test_verification_without_the_list_passes_and_says_so(serve: Any, host: HostDir) -> None:
    serve(FakeBackend(REAL_SET))
    cfg = config(disabled=["admin_plugins"])
    verify_registration(host, config(), URL)
    before = (host.state_dir / "plugins.json").read_text()
    serve(FakeBackend(REAL_SET, list_enabled=False))
    notes: list[str] = []
    assert verify_registration(host, cfg, URL, notes) == []
    assert len(notes) == 1 and "serves no plugin list" in notes[0] and "identity and health" in notes[0]
    # The last real catalog is kept: enabling it again still knows what it needs.
    assert (host.state_dir / "plugins.json").read_text() == before


def test_a_backend_that_does_not_answer_is_not_mistaken_for_a_disabled_list(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    route(monkeypatch, httpx.MockTransport(refuse))
    with pytest.raises(HostError, match="did not list its plugins") as caught:
        fetch_catalog(URL, [])
    assert not isinstance(caught.value, PluginListUnavailable)


def test_an_installed_plugin_missing_from_the_list_failed_to_load(serve: Any, host: HostDir) -> None:
    """PixSim7 leaves a plugin that failed to import out of its list: up must not say verified."""
    package(host.plugins_dir, "broken_pkg", 'manifest = {"id": "broken_one"}\n')
    serve(FakeBackend(REAL_SET))
    with pytest.raises(HostError, match=r"broken_one \(installed in plugins/broken_pkg\) did not load"):
        verify_registration(host, config(), URL)
    # The backend's own words about it are quoted (other lines are not).
    log = ("INFO started\nplugin warning: external plugin folder 'broken_pkg' failed to load: "
           "ModuleNotFoundError: No module named 'torch'\nINFO listening\n")
    with pytest.raises(HostError) as caught:
        verify_registration(host, config(), URL, backend_log=lambda: log)
    assert "the backend said: plugin warning: external plugin folder 'broken_pkg' failed to load: " \
           "ModuleNotFoundError: No module named 'torch'" in caught.value.message
    assert "listening" not in caught.value.message
    # Disabled on purpose, it is not a failure.
    assert "auth" in verify_registration(host, config(disabled=["broken_one"]), URL)


def test_save_and_load_round_trip(serve: Any, host: HostDir) -> None:
    serve(FakeBackend(REAL_SET))
    catalog = fetch_catalog(URL, [])
    save_catalog(host, catalog)
    loaded = load_catalog(host)
    assert loaded is not None
    assert {p.id: p.dependencies for p in loaded.plugins.values()} == {
        pid: tuple(deps) for pid, (_kind, deps, _on) in REAL_SET.items()}


# ---- bundled plugins stay visible -----------------------------------------------------------


def test_without_a_checkout_the_backend_reads_plugins_itself(host: HostDir) -> None:
    assert plugin_search_dir(host, config()) == host.plugins_dir


def test_the_view_shows_bundled_and_installed_packages(host: HostDir, tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    bundled = checkout / "packages" / "plugins"
    package(bundled, "stealth", STEALTH_MANIFEST)
    package(bundled, "romance", 'manifest = {"id": "romance"}\n')
    (bundled / "README.md").write_text("not a package")
    package(host.plugins_dir, "my_plugin", 'manifest = {"id": "mine"}\n')
    cfg = config(checkout=checkout)
    view = plugin_search_dir(host, cfg)
    assert view == host.state_dir / "plugin-view"
    assert sorted(p.name for p in view.iterdir()) == ["my_plugin", "romance", "stealth"]
    # What the backend's discovery reads through the links: <name>/backend/manifest.py.
    assert (view / "stealth" / "backend" / "manifest.py").read_text() == STEALTH_MANIFEST
    assert (view / "my_plugin").resolve() == (host.plugins_dir / "my_plugin").resolve()
    # Installing or removing a package changes the view at the next start.
    package(host.plugins_dir, "second", 'manifest = {"id": "second"}\n')
    shutil.rmtree(bundled / "romance")
    assert sorted(p.name for p in plugin_search_dir(host, cfg).iterdir()) == [
        "my_plugin", "second", "stealth"]
    assert not [p for p in host.state_dir.iterdir() if p.name.startswith(".plugin-view")]


def test_a_container_view_points_at_its_mounts(host: HostDir, tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    package(checkout / "packages" / "plugins", "stealth", STEALTH_MANIFEST)
    package(host.plugins_dir, "my_plugin", 'manifest = {"id": "mine"}\n')
    view = plugin_search_dir(host, config(checkout=checkout), bundled_at="/srv/b",
                             installed_at="/srv/h")
    assert {p.name: os.readlink(p) for p in view.iterdir()} == {
        "stealth": "/srv/b/stealth", "my_plugin": "/srv/h/my_plugin"}


def test_built_in_manifests_give_folders_and_dependencies(serve: Any, host: HostDir) -> None:
    """The reference backend's built-ins are read from its package (a checkout's from
    pixsim7/backend/main/plugins and routes): folder stealth holds game_stealth."""
    from pixsim_host.config import REFERENCE_BACKEND_IMAGE

    cfg = config(image=REFERENCE_BACKEND_IMAGE)
    serve(FakeBackend({"game_stealth": ("feature", [], True), "stats_basic": ("feature", [], True)},
                      broken_details=frozenset({"game_stealth"})))
    catalog = with_installed(fetch_catalog(URL, []), host, cfg)
    stealth = catalog.plugins["game_stealth"]
    assert (stealth.folder, stealth.source) == ("stealth", "builtin")
    assert (stealth.dependencies, stealth.dependencies_from) == (("stats_basic",), "manifest")
    with pytest.raises(HostError, match="use game_stealth"):
        catalog.get("stealth")


def test_a_checkouts_built_in_plugins_are_read(host: HostDir, tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    for where, folder, manifest in (
            ("pixsim7/backend/main/routes", "auth", 'manifest = PluginManifest(id="auth")\n'),
            ("pixsim7/backend/main/routes", "assets",
             'manifest = PluginManifest(id="assets", dependencies=["auth"])\n'),
            ("pixsim7/backend/main/plugins", "npcs", 'manifest = PluginManifest(id="game_npcs")\n')):
        (checkout / where / folder).mkdir(parents=True)
        (checkout / where / folder / "manifest.py").write_text(manifest)
    from pixsim_host.plugins import Catalog

    catalog = with_installed(Catalog({}, 0.0), host, config(checkout=checkout))
    assert {p.id: (p.folder, p.dependencies) for p in catalog.plugins.values()} == {
        "auth": ("auth", ()), "assets": ("assets", ("auth",)), "game_npcs": ("npcs", ())}
    # Installing a package with a built-in's id is refused; a folder named like one is not.
    source = package(tmp_path / "src", "my_auth", 'manifest = {"id": "auth"}\n')
    with pytest.raises(HostError, match="built into the backend"):
        install_package(host, source, config=config(checkout=checkout))
    other = package(tmp_path / "src2", "auth", 'manifest = {"id": "auth_extras"}\n')
    assert install_package(host, other, config=config(checkout=checkout)).id == "auth_extras"


def test_compose_mounts_the_view_with_a_checkout(host: HostDir, tmp_path: Path) -> None:
    from pixsim_host.plugins import compose_plugin_mounts, compose_plugin_view

    target = "/srv/pixsim/external-plugins"
    plain = config()
    assert compose_plugin_mounts(host, plain, target) == [{"source": "./plugins", "target": target}]
    assert compose_plugin_view(host, plain) == ""

    checkout = tmp_path / "checkout"
    package(checkout / "packages" / "plugins", "stealth", STEALTH_MANIFEST)
    package(host.plugins_dir, "my_plugin", 'manifest = {"id": "mine"}\n')
    cfg = HostConfig(host_id=str(uuid.uuid4()), name="with-checkout",
                     backend={"image": "example.org/operator/backend:1", "source": str(checkout)})
    assert compose_plugin_mounts(host, cfg, target) == [
        {"source": str(checkout), "target": "/srv/pixsim/checkout"},
        {"source": "./plugins", "target": "/srv/pixsim/host-plugins"},
        {"source": "./.pixsim-host/plugin-view", "target": target}]
    assert compose_plugin_view(host, cfg) == "my_plugin,stealth"
    links = {p.name: os.readlink(p) for p in (host.state_dir / "plugin-view").iterdir()}
    assert links == {"stealth": "/srv/pixsim/checkout/packages/plugins/stealth",
                     "my_plugin": "/srv/pixsim/host-plugins/my_plugin"}
    # A checkout without bundled plugins still gets the (mounted) view, of plugins/ alone.
    shutil.rmtree(checkout / "packages")
    assert compose_plugin_view(host, cfg) == "my_plugin"


def test_the_rendered_compose_file_mounts_what_the_view_needs(host: HostDir, tmp_path: Path) -> None:
    import yaml

    from pixsim_host.render import render_host

    checkout = tmp_path / "checkout"
    package(checkout / "packages" / "plugins", "stealth", STEALTH_MANIFEST)
    cfg = HostConfig(host_id=str(uuid.uuid4()), name="with-checkout",
                     backend={"image": "example.org/operator/backend:1", "source": str(checkout)})
    compose = yaml.safe_load(render_host(host, cfg).files["compose.yaml"])
    backend = compose["services"]["backend"]
    binds = {v["target"]: v["source"] for v in backend["volumes"] if isinstance(v, dict)}
    assert binds == {"/srv/pixsim/checkout": str(checkout), "/srv/pixsim/host-plugins": "./plugins",
                     "/srv/pixsim/external-plugins": "./.pixsim-host/plugin-view"}
    assert all(v["read_only"] for v in backend["volumes"] if isinstance(v, dict))
    assert backend["environment"]["EXTERNAL_PLUGINS_DIR"] == "/srv/pixsim/external-plugins"
