"""serve-generation: the reference backend's second HTTP service (PixSim7's generation-api)."""

from __future__ import annotations

import json
from pathlib import Path

from rb_support import Backend, BackendFactory, free_port

from pixsim_host.services import read_declarations


def generation(backends: BackendFactory, env: dict[str, str]) -> Backend:
    service = backends.spawn(env, "serve-generation")
    service.port = int(env["GENERATION_API_PORT"])
    return service.wait_listening()


def test_answers_health_identity_and_its_own_status_on_its_own_port(backends: BackendFactory) -> None:
    env = backends.env(SERVER_ID="host-gen", GENERATION_API_PORT=str(free_port()),
                       CORS_ORIGINS='["http://localhost:5174"]')
    api = backends.run(env)
    assert api.request("POST", "/api/v1/jobs", body={"kind": "render", "text": "x"}).status == 202
    service = generation(backends, env)
    assert service.port != api.port

    health = service.get("/health")
    assert (health.status, health.body["status"], health.body["database"]) == (200, "healthy", "connected")
    assert service.get("/api/v1/server/info").body["server_id"] == "host-gen"
    status = service.get("/api/v1/generation/status").body
    assert status == {"service": "generation-api", "server_id": "host-gen", "port": service.port,
                      "jobs": {"queued": 1}}
    # The backend's own routes are not this service's.
    assert service.get("/api/v1/jobs").status == 404
    # CORS as the backend's: the configured origins only.
    allowed = service.get("/health", headers={"Origin": "http://localhost:5174"})
    assert allowed.headers.get("Access-Control-Allow-Origin") == "http://localhost:5174"
    refused = service.get("/health", headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in refused.headers
    assert service.stop() == 0


def test_refuses_an_unmigrated_database_like_the_backend(backends: BackendFactory) -> None:
    bare = backends.postgres.new_database()
    env = backends.env(database=bare, GENERATION_API_PORT=str(free_port()))
    service = backends.spawn(env, "serve-generation")
    assert service.wait_exit() == 3
    assert "not migrated" in service.stderr


def test_a_bad_port_variable_is_a_settings_error(backends: BackendFactory) -> None:
    env = backends.env(GENERATION_API_PORT="eighty")
    service = backends.spawn(env, "serve-generation")
    assert service.wait_exit() == 2
    assert "GENERATION_API_PORT" in service.stderr


def test_it_is_declared_with_its_port_variable_and_health_endpoint() -> None:
    import pixsim_reference_backend

    folder = Path(pixsim_reference_backend.__file__).parent / "services"
    declared = read_declarations(folder)["generation-api"]
    assert (declared.module, declared.args) == ("pixsim_reference_backend", ("serve-generation",))
    assert (declared.port_env, declared.default_port, declared.health_endpoint) == \
        ("GENERATION_API_PORT", 8001, "/health")
    raw = json.loads((folder / "generation-api" / "pixsim.service.json").read_text())
    assert raw["type"] == "backend" and raw["ports"][0]["env"] == "GENERATION_API_PORT"
