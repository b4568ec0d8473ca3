"""The two ways `up` waits for health, chosen by the engine's API version.

The test engine is Docker 20.10 (API 1.41), so only active probing runs end to end; the
StartInterval path of Docker 25+ (API >= 1.44) is pinned here against a scripted engine.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from pixsim_host.errors import HostError
from pixsim_host.runtime.compose import parse_project
from pixsim_host.runtime.docker import ContainerState, DockerRuntime
from pixsim_host.runtime.engine import Engine, EngineEndpoint

COMPOSE = {
    "name": "pixsim-health",
    "services": {
        "db": {
            "image": "pgvector/pgvector:pg16",
            "healthcheck": {"test": ["CMD", "pg_isready"], "interval": "10s", "timeout": "5s",
                            "retries": 5, "start_period": "30s"},
        },
    },
}


class ScriptedApi:
    """Answers inspect_container from a script of health states; records exec calls."""

    def __init__(self, healths: list[str], exec_exit: int = 0) -> None:
        self.healths = healths
        self.exec_exit = exec_exit
        self.execs: list[list[str]] = []

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        health = self.healths.pop(0) if len(self.healths) > 1 else self.healths[0]
        return {
            "Id": container_id, "Name": "/pixsim-health-db-1", "RestartCount": 0,
            "State": {"Status": "running", "Running": True, "StartedAt": "2026-01-01T00:00:00Z",
                      "ExitCode": 0, "Health": {"Status": health}},
            "Config": {"Labels": {}}, "NetworkSettings": {"Ports": {}},
        }

    def exec_create(self, container_id: str, command: list[str], **_: Any) -> dict[str, str]:
        self.execs.append(command)
        return {"Id": "exec1"}

    def exec_start(self, exec_id: str) -> bytes:
        return b""

    def exec_inspect(self, exec_id: str) -> dict[str, int]:
        return {"ExitCode": self.exec_exit}


class QuietWatcher:
    def raise_if_died(self, runtime: Any, container_id: str, service: str) -> None:
        return None


def runtime_for(api: ScriptedApi, version: tuple[int, int]) -> DockerRuntime:
    engine = Engine(api, EngineEndpoint("unix:///fake.sock", "test"), version, "test")
    project = parse_project(COMPOSE, Path("/nonexistent"), {})
    return DockerRuntime(engine, project, "0b6a3d7e-6f1c-4f4e-9d2a-3c5b7e9f1a2b", {})


def state() -> ContainerState:
    return ContainerState("db", "c1", "pixsim-health-db-1", "running", "starting", None, 0, 0)


def test_start_interval_is_sent_only_to_engines_that_know_it() -> None:
    spec = runtime_for(ScriptedApi(["starting"]), (1, 44)).project.services["db"]
    new = runtime_for(ScriptedApi(["starting"]), (1, 44))._create_body(spec, "sha256:x")
    old = runtime_for(ScriptedApi(["starting"]), (1, 41))._create_body(spec, "sha256:x")
    assert new["Healthcheck"]["StartInterval"] == 1_000_000_000
    assert "StartInterval" not in old["Healthcheck"]
    # The rest of the healthcheck is the compose file's, on both.
    for body in (new, old):
        assert body["Healthcheck"]["Interval"] == 10_000_000_000
        assert body["Healthcheck"]["StartPeriod"] == 30_000_000_000


def test_new_engines_are_trusted_for_health_without_exec_probes() -> None:
    api = ScriptedApi(["starting", "starting", "healthy"])
    runtime = runtime_for(api, (1, 44))
    runtime.wait_ready("db", state(), time.monotonic() + 10, QuietWatcher(), lambda *_: None)  # type: ignore[arg-type]
    assert api.execs == []


def test_old_engines_are_probed_actively_instead_of_waiting_an_interval() -> None:
    api = ScriptedApi(["starting"])  # the engine would say "starting" for a whole interval
    runtime = runtime_for(api, (1, 41))
    started = time.monotonic()
    runtime.wait_ready("db", state(), started + 10, QuietWatcher(), lambda *_: None)  # type: ignore[arg-type]
    assert api.execs == [["pg_isready"]]
    assert time.monotonic() - started < 2


def test_a_probe_that_keeps_failing_ends_at_the_deadline_naming_the_service() -> None:
    api = ScriptedApi(["starting"], exec_exit=1)
    runtime = runtime_for(api, (1, 41))
    runtime.log_tail = lambda service, tail=30: ""  # type: ignore[method-assign]
    with pytest.raises(HostError, match="service 'db' did not become healthy before the timeout"):
        runtime.wait_ready("db", state(), time.monotonic() + 0.5, QuietWatcher(), lambda *_: None)  # type: ignore[arg-type]
    assert len(api.execs) >= 2
