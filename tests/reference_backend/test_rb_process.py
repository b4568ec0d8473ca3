"""The reference backend as a real process against real PostgreSQL and Redis."""

from __future__ import annotations

import re
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from rb_support import FIXTURE_PLUGINS, PG_PASSWORD, BackendFactory, Relay, free_port


def test_contract_endpoints(backends: BackendFactory, external_hello: Path) -> None:
    b = backends.run(backends.env(EXTERNAL_PLUGINS_DIR=str(external_hello)))

    root = b.get("/")
    assert root.status == 200
    assert root.body == {"name": "PixSim7 reference backend", "version": "0.1.0",
                         "status": "running"}

    health = b.get("/health")
    assert health.status == 200
    assert health.body == {"status": "healthy", "database": "connected", "redis": "connected",
                           "providers": []}

    ready = b.get("/ready")
    assert ready.status == 200
    assert ready.body == {"status": "ready", "database": "connected", "redis": "connected",
                          "plugins_loaded": True}

    version = b.get("/api/v1/version").body
    assert set(version) == {"api_version", "build_sha", "build_time", "server_time"}
    # As upstream: the application's version, while server info gives the API generation.
    assert version["api_version"] == "0.1.0"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", version["server_time"])

    assert b.get("/api/v1/server/info").body == {
        "server_id": "host-test", "server_name": "Test Host",
        "server_description": "reference backend under test", "version": "0.1.0",
        "api_version": "v1",
    }

    listing = b.get("/api/v1/admin/plugins/list").body
    # game_npcs is a feature and a route plugin: listed in both, counted twice.
    assert [p["id"] for p in listing["feature_plugins"]] == [
        "game_npcs", "stats_basic", "game_stealth"]
    assert [p["id"] for p in listing["route_plugins"]] == [
        "admin_plugins", "dialogue_extras", "game_npcs", "romance", "hello_external"]
    assert listing["total"] == 8
    routes = {p["id"]: p for p in listing["route_plugins"]}
    # Exactly upstream's fields: no dependencies, no source, no error.
    assert routes["romance"] == {"id": "romance", "name": "Romance", "version": "1.2.0",
                                 "kind": "route", "service": None, "enabled": True}
    for entry in listing["feature_plugins"] + listing["route_plugins"]:
        assert set(entry) == {"id", "name", "version", "kind", "service", "enabled"}

    details = b.get("/api/v1/admin/plugins/romance/details")
    assert details.status == 200
    assert details.body == {
        "plugin_id": "romance", "name": "Romance", "version": "1.2.0",
        "description": "Affinity and relationship stages between NPCs and the player.",
        "author": "", "kind": "route", "service": None, "enabled": True,
        "permissions": ["world:read", "session:write"], "dependencies": ["stats_basic"],
        "requires_db": True, "requires_redis": False, "metrics": None,
        "behavior_extensions": {"conditions": [], "effects": []},
    }
    # The folder is plugins/stealth; the plugin is known only by its manifest's id.
    stealth = b.get("/api/v1/admin/plugins/game_stealth/details")
    assert (stealth.status, stealth.body["dependencies"]) == (200, ["stats_basic"])
    folder = b.get("/api/v1/admin/plugins/stealth/details")
    assert (folder.status, folder.body) == (404, {"detail": "Plugin 'stealth' not found"})
    assert b.get("/api/v1/admin/plugins/hello_external/details").body["dependencies"] == []

    hello = b.get("/api/v1/plugins/hello_external/hello")
    assert (hello.status, hello.body) == (200, {"hello": "world"})
    assert b.get("/api/v1/plugins/romance/status").body["status"] == "ok"
    assert b.get("/api/v1/plugins/dialogue_extras/greetings?stage=friend").body == {
        "stage": "friend", "greeting": "Good to see you!"}
    assert b.get("/api/v1/plugins/romance/nope").status == 404

    missing = b.get("/no/such/path")
    assert (missing.status, missing.body) == (404, {"detail": "Not Found"})
    assert b.request("DELETE", "/health").status == 405
    bad = b.request("POST", "/api/v1/worlds", body="{not json",
                    headers={"Content-Type": "application/json"})
    assert (bad.status, bad.body) == (400, {"detail": "invalid JSON body"})

    assert "GET /health 200" in b.stdout


def test_cors_origins(backends: BackendFactory) -> None:
    b = backends.run(backends.env(CORS_ORIGINS='["http://a.example","http://b.example"]'))
    allowed = b.get("/", headers={"Origin": "http://b.example"})
    assert allowed.headers.get("Access-Control-Allow-Origin") == "http://b.example"
    other = b.get("/", headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    b.stop()
    star = backends.run(backends.env(CORS_ORIGINS="*"))
    assert star.get("/", headers={"Origin": "http://x"}).headers[
        "Access-Control-Allow-Origin"] == "*"


def test_worlds_and_kv_survive_restart(backends: BackendFactory) -> None:
    db = backends.postgres.migrated_database()
    env = backends.env(database=db)
    b = backends.run(env)
    created = b.request("POST", "/api/v1/worlds",
                        body={"name": "Harbor Town", "meta": {"stats_config": {"mood": 1}}})
    assert created.status == 201
    world = created.body
    assert world["name"] == "Harbor Town" and world["meta"] == {"stats_config": {"mood": 1}}
    assert isinstance(world["id"], int)
    # Hostile-looking input is data, never SQL.
    odd = b.request("POST", "/api/v1/worlds", body={"name": "x'); DROP TABLE worlds; --"})
    assert odd.status == 201
    assert b.request("POST", "/api/v1/worlds", body={"meta": {}}).status == 422

    put = b.request("PUT", "/api/v1/kv/greeting", body="héllo wörld")
    assert put.body == {"key": "greeting", "value": "héllo wörld"}
    assert b.get("/api/v1/kv/never-set").status == 404
    assert b.stop() == 0

    again = backends.run(env)
    worlds = again.get("/api/v1/worlds").body["worlds"]
    assert [w["name"] for w in worlds] == ["Harbor Town", "x'); DROP TABLE worlds; --"]
    assert again.get(f"/api/v1/worlds/{world['id']}").body == world
    assert again.get("/api/v1/worlds/999999").status == 404
    assert again.get("/api/v1/kv/greeting").body == {"key": "greeting", "value": "héllo wörld"}


def test_identity_is_recorded_and_enforced(backends: BackendFactory) -> None:
    db = backends.postgres.migrated_database()
    first = backends.run(backends.env(database=db, SERVER_ID="host-alpha"))
    assert first.get("/api/v1/server/info").body["server_id"] == "host-alpha"
    assert first.stop() == 0

    other = backends.spawn(backends.env(database=db, SERVER_ID="host-beta"))
    assert other.wait_exit() == 3
    assert ("refusing to start: this database belongs to host host-alpha, "
            "but SERVER_ID is host-beta") in other.stderr

    same = backends.run(backends.env(database=db, SERVER_ID="host-alpha"))
    assert same.get("/").status == 200


def _enabled(listing: dict[str, Any]) -> dict[str, bool]:
    return {p["id"]: p["enabled"] for p in listing["feature_plugins"] + listing["route_plugins"]}


def test_allow_and_deny_lists(backends: BackendFactory) -> None:
    denied = backends.run(backends.env(PLUGIN_DENYLIST='["dialogue_extras","game_npcs"]'))
    listing = denied.get("/api/v1/admin/plugins/list").body
    enabled = _enabled(listing)
    assert enabled["dialogue_extras"] is False and enabled["game_npcs"] is False
    assert enabled["romance"] is True
    # The id switches off both halves of a feature-and-route plugin.
    assert [p["enabled"] for p in listing["feature_plugins"] if p["id"] == "game_npcs"] == [False]
    assert denied.get("/api/v1/plugins/dialogue_extras/greetings").status == 404
    assert denied.get("/api/v1/plugins/game_npcs/npcs").status == 404
    assert denied.get("/api/v1/admin/plugins/game_npcs/details").body["enabled"] is False
    denied.stop()

    allowed = backends.run(backends.env(
        PLUGIN_ALLOWLIST='["stats_basic","romance","admin_plugins","no_such_plugin"]',
        PLUGIN_DENYLIST="[]"))
    listing = allowed.get("/api/v1/admin/plugins/list").body
    assert {pid for pid, on in _enabled(listing).items() if on} == {
        "stats_basic", "romance", "admin_plugins"}
    assert listing["total"] == 7
    npcs = allowed.get("/api/v1/plugins/game_npcs/npcs")
    assert npcs.status == 404


def test_lists_match_manifest_ids_not_folders(backends: BackendFactory) -> None:
    # plugins/stealth holds game_stealth: a denylist naming the folder matches nothing.
    by_folder = backends.run(backends.env(PLUGIN_DENYLIST='["stealth"]'))
    assert _enabled(by_folder.get("/api/v1/admin/plugins/list").body)["game_stealth"] is True
    by_folder.stop()
    by_id = backends.run(backends.env(PLUGIN_DENYLIST='["game_stealth"]'))
    assert _enabled(by_id.get("/api/v1/admin/plugins/list").body)["game_stealth"] is False


def test_disabling_admin_plugins_removes_its_endpoints(backends: BackendFactory) -> None:
    b = backends.run(backends.env(PLUGIN_DENYLIST='["admin_plugins"]'))
    for path in ("/api/v1/admin/plugins/list", "/api/v1/admin/plugins/romance/details"):
        gone = b.get(path)
        assert (gone.status, gone.body) == (404, {"detail": "Not Found"}), path
    assert b.get("/api/v1/plugins/romance/status").status == 200
    assert b.get("/ready").body["status"] == "ready"


def test_list_settings_must_be_json_arrays(backends: BackendFactory) -> None:
    for value in ("romance,stats_basic", "", "romance"):
        b = backends.spawn(backends.env(database="postgres", PLUGIN_ALLOWLIST=value))
        assert b.wait_exit() == 2, b.stderr
        assert "PLUGIN_ALLOWLIST" in b.stderr and "JSON array" in b.stderr
    short = backends.spawn(backends.env(database="postgres", SECRET_KEY="short", DEBUG="maybe",
                                        DATABASE_URL="mysql://u:p@h/d"))
    assert short.wait_exit() == 2
    lines = short.stderr.strip().splitlines()
    assert len(lines) == 3
    assert any("SECRET_KEY" in line for line in lines)
    assert "short" not in short.stderr.replace("too short", "")


def test_dependency_trap_aborts_startup(backends: BackendFactory) -> None:
    forgot = backends.spawn(backends.env(PLUGIN_ALLOWLIST='["romance","game_stealth"]'))
    assert forgot.wait_exit() == 3
    assert "Plugin 'romance' depends on 'stats_basic' which is disabled" in forgot.stderr
    assert "Plugin 'game_stealth' depends on 'stats_basic'" in forgot.stderr

    # Upstream checks disabled plugins too: denying only the dependency is not enough.
    denied = backends.spawn(backends.env(PLUGIN_DENYLIST='["stats_basic","romance"]'))
    assert denied.wait_exit() == 3
    assert "'stats_basic'" in denied.stderr


def test_broken_plugin_is_not_listed_and_degrades_ready(backends: BackendFactory) -> None:
    b = backends.run(backends.env(EXTERNAL_PLUGINS_DIR=str(FIXTURE_PLUGINS)))
    listing = b.get("/api/v1/admin/plugins/list").body
    everything = _enabled(listing)
    # As upstream: a plugin whose manifest fails to load is not loaded, so not listed.
    assert "broken_plugin" not in everything
    assert b.get("/api/v1/admin/plugins/broken_plugin/details").status == 404
    assert everything["hello_external"] is True and everything["stealth_addon"] is True
    # Folder voices, id npc_voices: known by its id only.
    assert everything["npc_voices"] is True and "voices" not in everything
    assert b.get("/api/v1/plugins/npc_voices/lines").status == 200
    assert b.get("/api/v1/admin/plugins/npc_voices/details").body["dependencies"] == ["game_npcs"]
    assert ("plugin warning: external plugin folder 'broken_plugin' failed to load: "
            "RuntimeError: broken on purpose for tests") in b.stderr
    ready = b.get("/ready")
    assert (ready.status, ready.body["status"]) == (200, "degraded")
    assert b.get("/health").body["status"] == "healthy"


def test_plugin_depending_on_a_broken_one_aborts_startup(backends: BackendFactory,
                                                         tmp_path: Path) -> None:
    external = tmp_path / "external"
    shutil.copytree(FIXTURE_PLUGINS / "broken_plugin", external / "broken_plugin")
    needs = external / "needs_broken" / "backend"
    needs.mkdir(parents=True)
    (needs / "manifest.py").write_text(
        "manifest = {'id': 'needs_broken', 'kind': 'route', 'dependencies': ['broken_plugin']}\n")
    b = backends.spawn(backends.env(EXTERNAL_PLUGINS_DIR=str(external)))
    assert b.wait_exit() == 3
    assert "ValueError: Missing dependency: broken_plugin (needed by needs_broken)" in b.stderr


def test_redis_down_is_degraded_not_fatal(backends: BackendFactory) -> None:
    b = backends.run(backends.env(REDIS_URL=f"redis://:nope@127.0.0.1:{free_port()}/0"))
    health = b.get("/health").body
    assert health["redis"] == "disconnected" and health["database"] == "connected"
    ready = b.get("/ready")
    assert ready.status == 200
    assert ready.body["status"] == "degraded" and ready.body["redis"] == "disconnected"
    assert b.get("/api/v1/kv/anything").status == 503


def test_database_loss_makes_ready_503(backends: BackendFactory) -> None:
    relay = Relay(backends.postgres.port)
    db = backends.postgres.migrated_database()
    url = backends.postgres.url(db).replace(f":{backends.postgres.port}/", f":{relay.port}/")
    b = backends.run(backends.env(database=db, DATABASE_URL=url))
    assert b.get("/ready").status == 200
    relay.cut()
    ready = b.get("/ready")
    assert ready.status == 503
    assert ready.body["status"] == "unavailable"
    assert ready.body["database"].startswith("error: ")
    health = b.get("/health")
    assert health.status == 200 and health.body["status"] == "degraded"
    assert b.get("/api/v1/worlds").status == 503
    assert b.get("/").status == 200


def test_database_unreachable_or_rejecting(backends: BackendFactory) -> None:
    gone = backends.spawn(backends.env(
        database="postgres", DATABASE_WAIT_SECONDS="1",
        DATABASE_URL=f"postgresql://u:{PG_PASSWORD}@127.0.0.1:{free_port()}/x"))
    assert gone.wait_exit() == 1
    assert "unreachable after 1 s" in gone.stderr

    wrong = backends.spawn(backends.env(
        DATABASE_URL=backends.postgres.url("postgres", password="wrong-password-123")))
    started = time.monotonic()
    assert wrong.wait_exit() == 1
    assert time.monotonic() - started < 4  # an auth failure is not retried
    assert "28P01" in wrong.stderr
    assert "wrong-password-123" not in wrong.stdout + wrong.stderr


def test_sigterm_stops_promptly(backends: BackendFactory) -> None:
    b = backends.run(backends.env())
    assert b.get("/health").status == 200
    assert b.proc is not None
    started = time.monotonic()
    b.proc.send_signal(signal.SIGTERM)
    assert b.wait_exit(5) == 0
    assert time.monotonic() - started < 1.0

    c = backends.run(backends.env())
    assert c.proc is not None
    c.proc.send_signal(signal.SIGINT)
    assert c.wait_exit(5) == 0


def test_no_secret_in_output(backends: BackendFactory) -> None:
    # The backends fixture also checks every run; this one drives the paths that log URLs.
    b = backends.run(backends.env(REDIS_URL=f"redis://:secret-redis-pw@127.0.0.1:{free_port()}/0"))
    b.get("/health")
    b.get("/api/v1/kv/x")
    b.stop()
    output = b.stdout + b.stderr
    assert "secret-redis-pw" not in output
    assert "***" in output  # the masked URL was logged


def test_working_directory_env_file_fills_in_what_the_environment_lacks(
        backends: BackendFactory) -> None:
    # As upstream's settings: a .env in the working directory is read, the environment wins.
    (backends.workdir / ".env").write_text(
        "SERVER_NAME=Name From File\nSERVER_DESCRIPTION='described by a stray file'\n"
        "PLUGIN_DENYLIST=[\"game_stealth\"]\n")
    b = backends.run(backends.env())
    info = b.get("/api/v1/server/info").body
    assert info["server_name"] == "Test Host"
    assert info["server_description"] == "reference backend under test"
    listing = b.get("/api/v1/admin/plugins/list").body
    assert _enabled(listing)["game_stealth"] is False
    assert "from ./.env: PLUGIN_DENYLIST\n" in b.stdout
    assert "game_stealth" not in b.stdout.split("enabled:")[0]  # names only, never values
