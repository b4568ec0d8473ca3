"""What a runtime can do is asked of the runtime, and refused in one place with one error.

Kubernetes moves no data (backup, restore, clone) and runs no package from the host's
plugins/ folder; Docker and native do both. The refusals are typed (NotSupportedByRuntime)
and say what to do instead, on one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes_helpers import FakeRunner, make_k8s_host

from pixsim_host import stack
from pixsim_host.config import parse_config
from pixsim_host.errors import NotSupportedByRuntime
from pixsim_host.runtime import kubernetes


def test_kubernetes_refuses_data_movement_and_host_plugins(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    host, config = make_k8s_host(tmp_path / "host", name="kube-host")
    runner = FakeRunner()
    monkeypatch.setattr(kubernetes, "SubprocessRunner", lambda: runner)
    runtime = stack.open_runtime(host, config)  # opening is fine: up, status, down work
    assert runtime.kind == "kubernetes" and not runtime.moves_data
    for refuse, words in ((lambda: stack.open_data_runtime(host, config), "does not move data"),
                          (lambda: stack.require_host_plugins(config), "only the plugins its image")):
        with pytest.raises(NotSupportedByRuntime) as caught:
            refuse()
        message = caught.value.message
        assert "runs on Kubernetes" in message and words in message
        assert "\n" not in message and "; " in message
    assert runner.calls == []  # refusing asks the cluster nothing


@pytest.mark.parametrize("kind", ["docker", "native"])
def test_local_runtimes_move_data_and_run_host_plugins(kind: str) -> None:
    config = parse_config({"host_id": "5f0c2a4e-8d1b-4c3e-9a7f-2b6d8e1c4a90", "name": "x",
                           "runtime": kind}, source="the test config")
    runtime_class: Any = stack.runtime_type(config)
    assert runtime_class.kind == kind
    assert runtime_class.moves_data and runtime_class.runs_host_plugins
    stack.require_host_plugins(config)  # no refusal
    assert "health" in runtime_class.doctor_checks
