"""``plugins list | show | enable | disable | install | remove`` end to end, on a real engine.

The proof is always the backend's own answer: ``GET /api/v1/admin/plugins/list`` on the
host's port, and the routes the plugins mount. Every command runs as a user runs it:
``python -m pixsim_host ...`` in a subprocess, no stdin, output captured and checked for
secrets. Every host is created with ``init`` under a unique name and port; its teardown runs
``down --volumes --yes`` and then checks that nothing labelled with its Docker project is
left.

One module-scoped host (``shared``) serves the tests that can put it back as they found it
(every plugin enabled, nothing installed); the ``plugin_host`` fixture checks that state,
restoring it if an earlier test failed half-way, so each test starts from the same host.
Tests that take a host down or break it on purpose get hosts of their own (``make_host``).
"""

from __future__ import annotations

import json
import re
import shutil
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
import yaml
from e2e_helpers import (
    IMAGES,
    PROJECT_LABEL,
    SERVICE_LABEL,
    Host,
    assert_clean_failure,
    assert_ok,
    destroy,
    host_maker,
    registry_home,  # noqa: F401 (an autouse fixture: this module's own host registry)
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "plugins"
# Ids, as the backend lists them: folder stealth holds game_stealth; game_npcs is both a
# feature and a route plugin; admin_plugins serves the list itself.
BUILTINS = ("admin_plugins", "dialogue_extras", "game_npcs", "game_stealth", "romance", "stats_basic")
ALL_ENABLED = dict.fromkeys(BUILTINS, True)
LIST_PATH = "/api/v1/admin/plugins/list"
DETAILS_PATH = "/api/v1/admin/plugins"  # + /{id}/details


# ---- hosts ----------------------------------------------------------------------------------


class PluginHost(Host):
    """A host created with ``pixsim-host init`` for a test, and what it says of its plugins."""

    @property
    def plugins_dir(self) -> Path:
        return self.dir / "plugins"

    def plugins_config(self) -> dict[str, list[str]]:
        plugins = yaml.safe_load(self.config_file.read_text()).get("plugins") or {}
        return {"enabled": list(plugins.get("enabled") or []),
                "disabled": list(plugins.get("disabled") or [])}

    def installed(self) -> list[str]:
        return sorted(p.name for p in self.plugins_dir.iterdir()) if self.plugins_dir.is_dir() else []

    def backend_plugins(self) -> dict[str, dict[str, Any]]:
        """The backend's own plugin list, by id."""
        with self.http() as http:
            answer = http.get(LIST_PATH)
        assert answer.status_code == 200, answer.text
        data = answer.json()
        entries = [*data["feature_plugins"], *data["route_plugins"]]
        assert data["total"] == len(entries), data
        return {entry["id"]: entry for entry in entries}

    def backend_enabled(self) -> dict[str, bool]:
        return {pid: entry["enabled"] for pid, entry in self.backend_plugins().items()}

    def list_json(self) -> dict[str, Any]:
        run = assert_ok(self.run("plugins", "list", "--json"))
        data: dict[str, Any] = run.json()
        return data

    def listed_loaded(self) -> dict[str, Any]:
        """``plugins list --json``: id -> loaded (None when the backend is down)."""
        return {row["id"]: row["loaded"] for row in self.list_json()["plugins"]}

    def get(self, path: str) -> httpx.Response:
        with self.http() as http:
            return http.get(path)


def backend_container(client: docker.DockerClient, host: PluginHost) -> Any:
    found = client.containers.list(all=True, filters={"label": [f"{PROJECT_LABEL}={host.project}",
                                                                f"{SERVICE_LABEL}=backend"]})
    assert len(found) == 1, f"expected one backend container, found {[c.name for c in found]}"
    return found[0]


def backend_id_and_start(client: docker.DockerClient, host: PluginHost) -> tuple[str, str]:
    container = backend_container(client, host)
    return container.id, container.attrs["State"]["StartedAt"]


def put_back(host: PluginHost) -> None:
    """Bring the shared host back to every plugin enabled and nothing installed."""
    for name in host.installed():
        if host.run("plugins", "remove", name).code != 0:
            shutil.rmtree(host.plugins_dir / name)
    disabled = host.plugins_config()["disabled"]
    if disabled:
        assert_ok(host.run("plugins", "enable", *disabled))
    host.up_ok()


def archive_of(folder: Path, dest: Path, kind: str) -> Path:
    """A .tar.gz or .zip holding ``folder`` (as its one top-level folder)."""
    files = sorted(p for p in folder.rglob("*") if "__pycache__" not in p.parts)
    if kind == "tar.gz":
        path = dest / f"{folder.name}.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            tar.add(folder, arcname=folder.name, recursive=False)
            for item in files:
                tar.add(item, arcname=f"{folder.name}/{item.relative_to(folder).as_posix()}",
                        recursive=False)
        return path
    path = dest / f"{folder.name}.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for item in files:
            if item.is_file():
                archive.write(item, f"{folder.name}/{item.relative_to(folder).as_posix()}")
    return path


# ---- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared(docker_client: docker.DockerClient, require_images: Callable[..., None],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[PluginHost]:
    """A host brought up once for the module; tests put its plugin set back as they found it."""
    require_images(*IMAGES)
    host = PluginHost.init(tmp_path_factory.mktemp("plugins-shared"))
    try:
        host.up_ok()
        yield host
    finally:
        destroy(docker_client, host)


@pytest.fixture
def plugin_host(shared: PluginHost) -> PluginHost:
    """The shared host, up, with every built-in plugin enabled and nothing installed."""
    if shared.installed() or shared.plugins_config()["disabled"]:
        put_back(shared)  # an earlier test failed before it could
    else:
        shared.up_ok()
    assert shared.installed() == []
    assert shared.plugins_config()["disabled"] == []
    assert shared.backend_enabled() == ALL_ENABLED
    return shared


@pytest.fixture
def make_host(docker_client: docker.DockerClient, require_images: Callable[..., None],
              tmp_path: Path) -> Iterator[Callable[[], PluginHost]]:
    """Creates hosts of the test's own; all are torn down (and checked) when it ends."""
    yield from host_maker(docker_client, require_images, tmp_path, PluginHost)


# ---- the shared host ------------------------------------------------------------------------


@pytest.mark.engine
def test_disable_and_enable_as_the_backend_reports_them(plugin_host: PluginHost,
                                                        docker_client: docker.DockerClient) -> None:
    host = plugin_host
    before, _ = backend_id_and_start(docker_client, host)

    disabled = assert_ok(host.run("plugins", "disable", "game_stealth"))
    assert "Disabled game_stealth." in disabled.stdout, str(disabled)
    assert host.plugins_config()["disabled"] == ["game_stealth"]
    assert host.backend_enabled() == {**ALL_ENABLED, "game_stealth": False}
    assert backend_id_and_start(docker_client, host)[0] != before, "the backend was not recreated"
    listed = host.list_json()
    assert listed["live"] is True
    rows = {row["id"]: row for row in listed["plugins"]}
    assert {pid: row["loaded"] for pid, row in rows.items()} == {**ALL_ENABLED, "game_stealth": False}
    assert rows["game_stealth"]["config"] == "disabled"
    assert rows["game_stealth"]["dependencies"] == ["stats_basic"]
    assert "game_stealth" not in assert_ok(host.run("up", "--json")).json()["plugins_enabled"]

    enabled = assert_ok(host.run("plugins", "enable", "game_stealth"))
    assert "Enabled game_stealth." in enabled.stdout, str(enabled)
    assert "Also enabling" not in enabled.stdout, "stats_basic was enabled all along"
    assert host.plugins_config()["disabled"] == []
    assert host.backend_enabled() == ALL_ENABLED
    assert host.listed_loaded() == ALL_ENABLED
    assert assert_ok(host.run("status")).code == 0


@pytest.mark.engine
def test_enable_pulls_in_what_a_plugin_needs(plugin_host: PluginHost,
                                             docker_client: docker.DockerClient) -> None:
    """dialogue_extras needs romance: enabling it enables romance too, and says so.

    pixsim-host itself never disables romance while dialogue_extras is loaded, so the set
    that needs repair comes from a hand edit, which `up` refuses before touching anything.
    """
    host = plugin_host
    backend = backend_id_and_start(docker_client, host)
    assert_ok(host.run("config", "set", "plugins.disabled", '["romance", "dialogue_extras"]'))

    refused = host.run("up")
    assert_clean_failure(refused)
    assert "dialogue_extras depends on romance" in refused.stderr, str(refused)
    assert "plugins enable" in refused.stderr, str(refused)
    assert backend_id_and_start(docker_client, host) == backend
    assert host.backend_enabled() == ALL_ENABLED

    run = assert_ok(host.run("plugins", "enable", "dialogue_extras"))
    assert "Also enabling romance (required by dialogue_extras)." in run.stdout, str(run)
    assert host.plugins_config()["disabled"] == []
    assert host.backend_enabled() == ALL_ENABLED
    greetings = host.get("/api/v1/plugins/dialogue_extras/greetings")
    assert greetings.status_code == 200, greetings.text
    assert host.get("/api/v1/plugins/romance/status").json()["status"] == "ok"
    assert_ok(host.run("status"))


@pytest.mark.engine
def test_unknown_id_is_refused_with_the_closest_id(plugin_host: PluginHost,
                                                   docker_client: docker.DockerClient) -> None:
    host = plugin_host
    config = host.config_file.read_bytes()
    backend = backend_id_and_start(docker_client, host)
    for verb in ("enable", "disable"):
        run = host.run("plugins", verb, "game_stealh")
        assert_clean_failure(run)
        assert "'game_stealh'" in run.stderr, str(run)
        assert "did you mean game_stealth" in run.stderr, str(run)  # the closest first
        # The built-in folder stealth holds game_stealth: a denylist of 'stealth' would match nothing.
        folder = host.run("plugins", verb, "stealth")
        assert_clean_failure(folder)
        assert "stealth is a plugin folder, not a plugin id" in folder.stderr, str(folder)
        assert "use game_stealth" in folder.stderr, str(folder)
    shown = host.run("plugins", "show", "romanse")
    assert_clean_failure(shown)
    assert "did you mean romance?" in shown.stderr, str(shown)
    assert host.config_file.read_bytes() == config
    assert backend_id_and_start(docker_client, host) == backend
    assert host.backend_enabled() == ALL_ENABLED


@pytest.mark.engine
def test_disabling_a_dependency_is_refused_and_changes_nothing(
        plugin_host: PluginHost, docker_client: docker.DockerClient) -> None:
    host = plugin_host
    config, compose = host.config_file.read_bytes(), (host.dir / "compose.yaml").read_bytes()
    backend = backend_id_and_start(docker_client, host)

    refused = host.run("plugins", "disable", "stats_basic")
    assert_clean_failure(refused)
    assert "cannot disable stats_basic" in refused.stderr, str(refused)
    for dependent in ("game_stealth", "romance", "dialogue_extras"):
        assert dependent in refused.stderr, f"{dependent} not named in {refused}"
    # Built-in dependents stay loaded whatever is disabled, so --cascade is not offered.
    assert "built into the backend, so stats_basic must stay enabled" in refused.stderr, str(refused)

    # Even with --cascade: the dependents are built in, so they stay loaded, and PixSim7
    # aborts start-up when any loaded plugin (disabled or not) depends on a disabled one.
    cascade = host.run("plugins", "disable", "stats_basic", "--cascade")
    assert_clean_failure(cascade)
    assert "aborts start-up" in cascade.stderr, str(cascade)
    assert "even a disabled one" in cascade.stderr, str(cascade)
    assert "romance depends on stats_basic" in cascade.stderr, str(cascade)

    # A plugin others need, named by what depends on it.
    middle = host.run("plugins", "disable", "romance")
    assert_clean_failure(middle)
    assert "dialogue_extras" in middle.stderr and "stats_basic" not in middle.stderr, str(middle)

    assert host.config_file.read_bytes() == config
    assert (host.dir / "compose.yaml").read_bytes() == compose
    assert backend_id_and_start(docker_client, host) == backend, "a refused change touched the backend"
    assert host.backend_enabled() == ALL_ENABLED
    shown = assert_ok(host.run("plugins", "show", "stats_basic", "--json")).json()
    assert shown["required_by"] == ["dialogue_extras", "game_npcs", "game_stealth", "romance"]


@pytest.mark.engine
def test_install_enables_the_disabled_dependency(plugin_host: PluginHost) -> None:
    host = plugin_host
    assert_ok(host.run("plugins", "disable", "game_stealth"))
    assert host.backend_enabled()["game_stealth"] is False

    run = assert_ok(host.run("plugins", "install", str(FIXTURES / "stealth_addon")))
    assert "Also enabling game_stealth" in run.stdout, str(run)
    assert host.installed() == ["stealth_addon"]
    assert host.plugins_config()["disabled"] == []
    assert host.backend_enabled() == {**ALL_ENABLED, "stealth_addon": True}
    # The list has no dependencies (as PixSim7's); the details do.
    assert "dependencies" not in host.backend_plugins()["stealth_addon"]
    assert host.get(f"{DETAILS_PATH}/stealth_addon/details").json()["dependencies"] == ["game_stealth"]
    assert host.listed_loaded() == {**ALL_ENABLED, "stealth_addon": True}
    ping = host.get("/api/v1/plugins/stealth_addon/ping")
    assert ping.status_code == 200 and ping.json() == {"pong": "stealth_addon"}, ping.text

    # Now game_stealth has an installed dependent: disabling it is refused, and so is
    # --cascade, because stealth_addon would still be loaded (and abort start-up).
    config = host.config_file.read_bytes()
    refused = host.run("plugins", "disable", "game_stealth")
    assert_clean_failure(refused)
    assert "stealth_addon" in refused.stderr, str(refused)
    cascade = host.run("plugins", "disable", "game_stealth", "--cascade")
    assert_clean_failure(cascade)
    assert "stealth_addon depends on game_stealth" in cascade.stderr, str(cascade)
    assert "plugins remove" in cascade.stderr, str(cascade)
    assert host.config_file.read_bytes() == config
    assert host.backend_enabled()["game_stealth"] is True

    removed = assert_ok(host.run("plugins", "remove", "stealth_addon"))
    assert "Removed stealth_addon." in removed.stdout, str(removed)
    assert host.installed() == []
    assert host.backend_enabled() == ALL_ENABLED
    assert host.get("/api/v1/plugins/stealth_addon/ping").status_code == 404


@pytest.mark.engine
def test_failing_plugin_is_rolled_back_and_the_host_stays_healthy(
        plugin_host: PluginHost, docker_client: docker.DockerClient) -> None:
    host = plugin_host
    config = host.config_file.read_bytes()
    state_before = sorted(p.name for p in (host.dir / ".pixsim-host").iterdir())

    run = host.run("plugins", "install", str(FIXTURES / "broken_plugin"))
    assert_clean_failure(run)
    # PixSim7 leaves a plugin that failed to import out of its list: pixsim-host notices.
    assert "broken_plugin (installed in plugins/broken_plugin) did not load" in run.stderr, str(run)
    assert "broken on purpose for tests" in run.stderr, str(run)
    assert "The previous configuration was put back and the host is healthy again" in run.stderr, \
        str(run)

    assert not (host.plugins_dir / "broken_plugin").exists()
    assert host.installed() == []
    assert host.config_file.read_bytes() == config
    assert sorted(p.name for p in (host.dir / ".pixsim-host").iterdir()) == state_before
    status = host.run("status")
    assert status.code == 0, str(status)
    assert host.backend_enabled() == ALL_ENABLED, "broken_plugin is still known to the backend"
    with host.http() as http:
        ready = http.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready", ready.text
    assert backend_container(docker_client, host).status == "running"


@pytest.mark.engine
@pytest.mark.parametrize("form", ["folder", "tar.gz", "zip"])
def test_install_and_remove_an_external_plugin(plugin_host: PluginHost, tmp_path: Path, form: str) -> None:
    host = plugin_host
    source = FIXTURES / "hello_external" if form == "folder" else archive_of(
        FIXTURES / "hello_external", tmp_path, form)
    assert host.get("/api/v1/plugins/hello_external/hello").status_code == 404

    run = assert_ok(host.run("plugins", "install", str(source)))
    assert "Installed hello_external" in run.stdout, str(run)
    assert "Also enabling" not in run.stdout, str(run)
    assert host.installed() == ["hello_external"]
    assert sorted(p.relative_to(host.plugins_dir / "hello_external").as_posix()
                  for p in (host.plugins_dir / "hello_external").rglob("*")
                  if "__pycache__" not in p.parts) == ["backend", "backend/manifest.py"]
    hello = host.get("/api/v1/plugins/hello_external/hello")
    assert hello.status_code == 200 and hello.json() == {"hello": "world"}, hello.text
    entry = host.backend_plugins()["hello_external"]
    assert entry["enabled"] is True, entry
    shown = assert_ok(host.run("plugins", "show", "hello_external", "--json")).json()
    assert (shown["source"], shown["folder"], shown["installed_in_host_dir"]) == (
        "external", "hello_external", True), shown
    assert host.listed_loaded() == {**ALL_ENABLED, "hello_external": True}

    again = host.run("plugins", "install", str(source))
    assert_clean_failure(again)
    assert "already installed" in again.stderr, str(again)

    removed = assert_ok(host.run("plugins", "remove", "hello_external"))
    assert "Removed hello_external." in removed.stdout, str(removed)
    assert host.installed() == []
    assert host.get("/api/v1/plugins/hello_external/hello").status_code == 404
    assert host.backend_enabled() == ALL_ENABLED
    leftovers = [p.name for p in (host.dir / ".pixsim-host").iterdir()
                 if p.name.startswith(("install-", "removed-"))]
    assert leftovers == [], leftovers

    builtin = host.run("plugins", "remove", "romance")
    assert_clean_failure(builtin)
    assert "not installed" in builtin.stderr, str(builtin)


@pytest.mark.engine
def test_no_restart_records_the_choice_for_the_next_up(plugin_host: PluginHost,
                                                       docker_client: docker.DockerClient) -> None:
    host = plugin_host
    backend = backend_id_and_start(docker_client, host)

    run = assert_ok(host.run("plugins", "disable", "dialogue_extras", "--no-restart"))
    assert "next `pixsim-host up`" in run.stdout, str(run)
    assert host.plugins_config()["disabled"] == ["dialogue_extras"]
    assert "dialogue_extras" in (host.dir / "compose.yaml").read_text()
    installed = assert_ok(host.run("plugins", "install", str(FIXTURES / "hello_external"),
                                   "--no-restart"))
    assert "next `pixsim-host up`" in installed.stdout, str(installed)
    assert host.installed() == ["hello_external"]
    # Recorded only: the running backend is the same container, never restarted.
    assert backend_id_and_start(docker_client, host) == backend
    assert host.backend_enabled() == ALL_ENABLED
    assert host.get("/api/v1/plugins/hello_external/hello").status_code == 404

    report = host.up_ok()
    assert report["actions"]["backend"] == "recreated", report["actions"]
    assert report["actions"]["db"] == "unchanged" and report["actions"]["redis"] == "unchanged"
    assert host.backend_enabled() == {**ALL_ENABLED, "dialogue_extras": False, "hello_external": True}
    assert sorted(report["plugins_enabled"]) == ["admin_plugins", "game_npcs", "game_stealth",
                                                 "hello_external", "romance", "stats_basic"]
    assert host.get("/api/v1/plugins/hello_external/hello").json() == {"hello": "world"}
    assert host.get("/api/v1/plugins/dialogue_extras/greetings").status_code == 404

    assert_ok(host.run("plugins", "remove", "hello_external"))
    assert_ok(host.run("plugins", "enable", "dialogue_extras"))
    assert host.backend_enabled() == ALL_ENABLED


@pytest.mark.engine
def test_two_hosts_report_their_own_plugin_sets(plugin_host: PluginHost,
                                               make_host: Callable[[], PluginHost]) -> None:
    a = plugin_host
    b = make_host()
    b.up_ok()
    assert_ok(a.run("plugins", "disable", "game_stealth"))
    assert_ok(b.run("plugins", "disable", "dialogue_extras"))
    assert_ok(b.run("plugins", "install", str(FIXTURES / "hello_external")))

    a_set = {**ALL_ENABLED, "game_stealth": False}
    b_set = {**ALL_ENABLED, "dialogue_extras": False, "hello_external": True}
    assert a.backend_enabled() == a_set
    assert b.backend_enabled() == b_set
    assert a.listed_loaded() == a_set
    assert b.listed_loaded() == b_set
    # The routes each backend mounts follow its own set.
    assert a.get("/api/v1/plugins/dialogue_extras/greetings").status_code == 200
    assert b.get("/api/v1/plugins/dialogue_extras/greetings").status_code == 404
    assert a.get("/api/v1/plugins/hello_external/hello").status_code == 404
    assert b.get("/api/v1/plugins/hello_external/hello").json() == {"hello": "world"}
    for host in (a, b):
        with host.http() as http:
            assert http.get("/api/v1/server/info").json()["server_id"] == host.host_id

    # Changing one host leaves the other's set alone.
    assert_ok(a.run("plugins", "enable", "game_stealth"))
    assert a.backend_enabled() == ALL_ENABLED
    assert b.backend_enabled() == b_set


# ---- hosts of their own ---------------------------------------------------------------------


@pytest.mark.engine
def test_list_when_down_reads_the_saved_catalog(make_host: Callable[[], PluginHost]) -> None:
    host = make_host()
    never = host.run("plugins", "list")
    assert_clean_failure(never)
    assert "never been up" in never.stderr, str(never)

    host.up_ok()
    live = host.list_json()
    assert live["live"] is True
    assert {row["id"]: row["loaded"] for row in live["plugins"]} == ALL_ENABLED
    assert_ok(host.run("down"))

    run = assert_ok(host.run("plugins", "list"))
    assert "saved" in run.stderr and "catalog" in run.stderr, str(run)
    assert "backend is down" in run.stdout, str(run)
    for pid in BUILTINS:
        assert re.search(rf"^{pid}\s", run.stdout, re.MULTILINE), f"{pid} missing from {run}"
    saved = host.run("plugins", "list", "--json")
    assert saved.code == 0, str(saved)
    assert "saved" in saved.stderr, str(saved)
    data = saved.json()
    assert data["live"] is False
    assert data["taken_at"] == pytest.approx(live["taken_at"], abs=120)
    assert {row["id"]: row["loaded"] for row in data["plugins"]} == dict.fromkeys(BUILTINS)
    assert {row["id"]: row["dependencies"] for row in data["plugins"]} == {
        "admin_plugins": [], "dialogue_extras": ["romance"], "game_npcs": ["stats_basic"],
        "game_stealth": ["stats_basic"], "romance": ["stats_basic"], "stats_basic": []}

    # A change while down is recorded and applied by the next `up`.
    changed = assert_ok(host.run("plugins", "disable", "game_stealth"))
    assert "next `pixsim-host up`" in changed.stdout, str(changed)
    report = host.up_ok()
    assert "game_stealth" not in report["plugins_enabled"]
    assert host.backend_enabled() == {**ALL_ENABLED, "game_stealth": False}


@pytest.mark.engine
def test_up_fails_when_a_plugin_did_not_load(make_host: Callable[[], PluginHost]) -> None:
    host = make_host()
    host.up_ok()
    # Copied by hand, bypassing `plugins install` and its rollback.
    shutil.copytree(FIXTURES / "broken_plugin", host.plugins_dir / "broken_plugin",
                    ignore=shutil.ignore_patterns("__pycache__"))

    failed = host.run("up")
    assert_clean_failure(failed)
    # As PixSim7, the backend leaves a plugin that failed to import out of its list.
    assert "broken_plugin (installed in plugins/broken_plugin) did not load" in failed.stderr, str(failed)
    assert "broken_plugin" not in host.backend_plugins()
    logs = assert_ok(host.run("logs", "backend", "--tail", "200"))
    assert "broken on purpose for tests" in logs.output, str(logs)
    listed = assert_ok(host.run("plugins", "list"))
    assert re.search(r"^broken_plugin\s.*\sno\s", listed.stdout, re.MULTILINE), str(listed)

    # Disabling it is accepted: the backend still tries to import it, but nothing expects it.
    assert_ok(host.run("plugins", "disable", "broken_plugin"))
    assert host.plugins_config()["disabled"] == ["broken_plugin"]
    assert_ok(host.run("up"))
    assert_ok(host.run("status"))
    assert host.backend_enabled() == ALL_ENABLED

    # Or the folder goes (by hand again): `up` notices and the backend forgets it.
    shutil.rmtree(host.plugins_dir / "broken_plugin")
    report = host.up_ok()
    assert report["actions"]["backend"] == "recreated", report["actions"]
    assert host.backend_enabled() == ALL_ENABLED


# ---- ids, details and the list endpoint as PixSim7 has them ---------------------------------


@pytest.mark.engine
def test_an_unsafe_disable_is_refused_with_dependencies_only_details_give(
        plugin_host: PluginHost, docker_client: docker.DockerClient) -> None:
    host = plugin_host
    listed = host.backend_plugins()
    assert not [e for e in listed.values() if "dependencies" in e], "the list must not say"
    assert host.get(f"{DETAILS_PATH}/game_npcs/details").json()["dependencies"] == ["stats_basic"]
    config = host.config_file.read_bytes()
    backend = backend_id_and_start(docker_client, host)
    refused = host.run("plugins", "disable", "stats_basic")
    assert_clean_failure(refused)
    assert "game_npcs" in refused.stderr and "game_stealth" in refused.stderr, str(refused)
    assert host.config_file.read_bytes() == config
    assert backend_id_and_start(docker_client, host) == backend, "a refused change touched the backend"
    # What details taught is saved: while the backend is down the guard still knows it.
    saved = json.loads((host.dir / ".pixsim-host" / "plugins.json").read_text())
    deps = {p["id"]: (p["dependencies"], p["dependencies_from"]) for p in saved["plugins"]}
    assert deps["game_npcs"] == (["stats_basic"], "details"), deps


@pytest.mark.engine
def test_an_installed_package_is_known_by_its_manifest_id(plugin_host: PluginHost,
                                                          tmp_path: Path) -> None:
    host = plugin_host
    source = tmp_path / "hello_folder"
    shutil.copytree(FIXTURES / "hello_external", source, ignore=shutil.ignore_patterns("__pycache__"))
    run = assert_ok(host.run("plugins", "install", str(source)))
    assert "Installed hello_external" in run.stdout, str(run)
    assert host.installed() == ["hello_folder"]
    assert host.backend_enabled() == {**ALL_ENABLED, "hello_external": True}
    # The same id again, from another folder, is refused: it would shadow the first.
    again = tmp_path / "again" / "hello_again"
    shutil.copytree(source, again)
    duplicate = host.run("plugins", "install", str(again))
    assert_clean_failure(duplicate)
    assert "hello_external" in duplicate.stderr and "already installed" in duplicate.stderr
    # An id a built-in has is refused too.
    clash = tmp_path / "clash" / "my_romance" / "backend"
    clash.mkdir(parents=True)
    (clash / "manifest.py").write_text('manifest = {"id": "romance", "kind": "route"}\n')
    refused = host.run("plugins", "install", str(clash.parent))
    assert_clean_failure(refused)
    assert "romance" in refused.stderr and "built into the backend" in refused.stderr, str(refused)
    assert host.installed() == ["hello_folder"]

    by_folder = host.run("plugins", "remove", "hello_folder")
    assert_clean_failure(by_folder)
    assert "use hello_external" in by_folder.stderr, str(by_folder)
    assert_ok(host.run("plugins", "remove", "hello_external"))
    assert host.installed() == []
    assert host.backend_enabled() == ALL_ENABLED


@pytest.mark.engine
def test_disabling_the_list_endpoint_keeps_a_healthy_backend(
        make_host: Callable[[], PluginHost], docker_client: docker.DockerClient) -> None:
    """admin_plugins serves the list: with it disabled the list is 404, and that is said,
    not mistaken for a failed backend and rolled back."""
    host = make_host()
    host.up_ok()
    run = assert_ok(host.run("plugins", "disable", "admin_plugins"))
    assert "Disabled admin_plugins" in run.stdout, str(run)
    assert "rolling back" not in run.output, str(run)
    assert host.get(LIST_PATH).status_code == 404
    assert host.plugins_config()["disabled"] == ["admin_plugins"]
    report = host.up_ok()
    assert any("serves no plugin list" in note for note in report["notes"]), report["notes"]
    assert_ok(host.run("status"))

    listed = assert_ok(host.run("plugins", "list", "--json"))
    assert "serves no plugin list" in listed.stderr, str(listed)
    assert {p["id"] for p in listed.json()["plugins"]} >= set(BUILTINS)
    # The guard still works from what was learnt before.
    refused = host.run("plugins", "disable", "stats_basic")
    assert_clean_failure(refused)
    assert "game_stealth" in refused.stderr, str(refused)
    # A backup of it needs no list either.
    bundle = host.dir.parent / "no-list.tar.gz"
    assert_ok(host.run("backup", "-o", bundle))
    with tarfile.open(bundle, "r:gz") as archive:
        manifest = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest["plugins_enabled_from"] == "saved-catalog"
    bundle.unlink()

    assert_ok(host.run("plugins", "enable", "admin_plugins"))
    assert host.backend_enabled() == ALL_ENABLED
