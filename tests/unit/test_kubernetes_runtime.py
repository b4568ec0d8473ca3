"""The live Kubernetes path, read back from a fake runner (no cluster can run here).

up, down, status, logs and restart are sequences of kubectl commands; these tests pin the
sequences (with --context and -n), run the real health, identity and plugin verification
against a stub backend reached through the (fake) port-forward or the public URL, and
check that kubectl's failures become one clear error each. Where a real kubectl is
installed, its own client-side errors (cluster unreachable, unknown context) are used.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kubernetes_helpers import (
    FakeRunner,
    failed,
    find_kubectl,
    kubectl_env,
    make_k8s_host,
    normalise,
    ok,
    secrets_of,
    start_stub,
    start_stub_api,
    verb,
    when,
    write_kubeconfig,
)
from unit_helpers import assert_clean_failure, clean_env, run_cli

from pixsim_host import stack
from pixsim_host.config import HostConfig
from pixsim_host.errors import HostError
from pixsim_host.hostdir import HostDir
from pixsim_host.runtime import kubernetes
from pixsim_host.runtime.kubernetes import CLAIM_KIND, OBJECT_KINDS
from pixsim_host.services import resolve_workers

BUILT = "# the built manifests (kubectl kustomize's stdout)\n"
FORBIDDEN = ('Error from server (Forbidden): deployments.apps is forbidden: User "jane" cannot list '
             'resource "deployments" in API group "apps" in the namespace "games"')


def _host(tmp_path: Path, **values: Any) -> tuple[HostDir, HostConfig]:
    values.setdefault("kubernetes", {"namespace": "games", "context": "prod"})
    return make_k8s_host(tmp_path / "host", name="kube-host", **values)


def _applied(config: HostConfig) -> str:
    """What server-side apply prints for this host's manifests."""
    p = config.project
    refs = [f"configmap/{p}-backend-env", f"secret/{p}-secrets-abc123", f"service/{p}-backend",
            f"deployment.apps/{p}-backend",
            *(f"deployment.apps/{p}-{worker.name}" for worker in resolve_workers(config))]
    if config.database.url is None:
        refs += [f"service/{p}-db", f"statefulset.apps/{p}-db"]
    if config.redis.url is None:
        refs += [f"service/{p}-redis", f"statefulset.apps/{p}-redis"]
    return "".join(f"{ref} serverside-applied\n" for ref in refs)


def _cluster(config: HostConfig, *, owned_extra: str = "") -> list[Any]:
    """A healthy cluster: kustomize builds, the namespace exists, everything rolls out."""
    p = config.project
    owned = (f"configmap/{p}-backend-env\nsecret/{p}-secrets-abc123\nservice/{p}-backend\n"
             f"service/{p}-db\nservice/{p}-redis\ndeployment.apps/{p}-backend\n"
             f"statefulset.apps/{p}-db\nstatefulset.apps/{p}-redis\n" + owned_extra)
    return [
        when(lambda a: a[1] == "kustomize", ok(BUILT)),
        when(lambda a: verb(a)[:2] == ["get", "namespace"], ok("namespace/games\n")),
        when(lambda a: verb(a)[:1] == ["apply"], ok(_applied(config))),
        when(lambda a: verb(a)[:2] == ["get", OBJECT_KINDS], ok(owned)),
    ]


def _expected_up(host: HostDir, config: HostConfig, *, stale: list[str] | None = None,
                 forward: bool = True) -> list[list[str]]:
    p, hid = config.project, config.host_id
    base = ["kubectl", "--context", "prod", "-n", "games"]
    commands = [
        ["kubectl", "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(host.root / "kubernetes")],
        ["kubectl", "--context", "prod", "get", "namespace", "games", "-o", "name"],
        [*base, "get", f"{OBJECT_KINDS},{CLAIM_KIND}", "-l",
         f"app.kubernetes.io/instance={p},org.pixsim-host/host-id!={hid}", "-o", "name"],
        [*base, "apply", "--server-side", "--force-conflicts", "--field-manager=pixsim-host", "-f", "-"],
        [*base, "get", OBJECT_KINDS, "-l", f"org.pixsim-host/host-id={hid}", "-o", "name"],
    ]
    if stale:
        commands.append([*base, "delete", *stale, "--ignore-not-found"])
    commands += [
        [*base, "rollout", "status", f"statefulset/{p}-db", "--timeout=Ns"],
        [*base, "rollout", "status", f"statefulset/{p}-redis", "--timeout=Ns"],
        [*base, "rollout", "status", f"deployment/{p}-backend", "--timeout=Ns"],
        # The workers' Deployments roll out with the backend (the reference backend has one).
        *([*base, "rollout", "status", f"deployment/{p}-{worker.name}", "--timeout=Ns"]
          for worker in resolve_workers(config)),
    ]
    if forward:
        commands.append([*base, "port-forward", "--address", "127.0.0.1", f"svc/{p}-backend", ":8000"])
    return commands


def _quiet(service: str, message: str) -> None:
    pass


def _runtime(host: HostDir, config: HostConfig, runner: FakeRunner) -> kubernetes.KubernetesRuntime:
    return kubernetes.KubernetesRuntime(host, config, secrets_of(host), runner)


def _up(host: HostDir, config: HostConfig, runner: FakeRunner, *, timeout: float) -> stack.UpReport:
    """stack.up (the same for every runtime) on this host, kubectl being ``runner``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kubernetes, "SubprocessRunner", lambda: runner)
        return stack.up(host, config, timeout=timeout, progress=_quiet)


def _status(host: HostDir, config: HostConfig, runner: FakeRunner) -> dict[str, Any]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kubernetes, "SubprocessRunner", lambda: runner)
        return stack.status(host, config)


@pytest.fixture
def swap_runner(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make the dispatch from stack.py and the CLI use a given fake runner."""

    def swap(runner: FakeRunner) -> None:
        monkeypatch.setattr(kubernetes, "SubprocessRunner", lambda: runner)

    return swap


# ---- up -------------------------------------------------------------------------------------


def test_up_applies_waits_and_verifies_through_a_port_forward(tmp_path: Path, swap_runner: Any) -> None:
    host, config = _host(tmp_path)
    stub = start_stub(config.host_id, plugins=[{"id": "stats_basic", "name": "Stats", "enabled": True}])
    stale = f"secret/{config.project}-secrets-old999"
    runner = FakeRunner(_cluster(config, owned_extra=stale + "\n"), forward_port=stub.port)
    swap_runner(runner)
    report = stack.up(host, config, timeout=60, progress=_quiet)  # dispatched by runtime
    assert [normalise(c) for c in runner.calls] == _expected_up(host, config, stale=[stale])
    # The Secret travels from kustomize to apply through memory only.
    assert runner.stdins[3] == BUILT
    assert all(s is None for i, s in enumerate(runner.stdins) if i != 3)
    assert all(f.stopped for f in runner.forwards)
    assert report.host_id == config.host_id
    assert report.plugins == ["stats_basic"]
    assert report.backend["server"]["server_id"] == config.host_id
    assert set(report.services) == {"db", "redis", "backend", "worker"}
    assert report.actions == {"db": "serverside-applied", "redis": "serverside-applied",
                              "backend": "serverside-applied", "worker": "serverside-applied"}
    assert any("no public URL" in note for note in report.notes)
    assert any("reference backend" in note for note in report.notes)
    assert (host.state_dir / "plugins.json").is_file() or list(host.state_dir.iterdir())


def test_up_verifies_through_the_public_url_without_port_forward(tmp_path: Path) -> None:
    host0, config0 = _host(tmp_path)
    stub = start_stub(config0.host_id)
    host, config = _host(tmp_path / "b", backend={"public_url": stub.url, "image": "example/pixsim7:1"})
    stub.host_id = config.host_id
    runner = FakeRunner(_cluster(config))
    report = _up(host, config, runner, timeout=60)
    assert [normalise(c) for c in runner.calls] == _expected_up(host, config, forward=False)
    assert report.url == stub.url
    assert report.client_url == stub.url
    assert not any("reference backend" in note for note in report.notes)
    assert host0 != host


def test_up_without_context_uses_the_current_one(tmp_path: Path) -> None:
    host, config = _host(tmp_path, kubernetes={"namespace": "pixsim"})
    stub = start_stub(config.host_id)
    runner = FakeRunner(_cluster(config), forward_port=stub.port)
    _up(host, config, runner, timeout=60)
    assert all("--context" not in c for c in runner.calls)
    namespaced = [c for c in runner.calls if c[1] != "kustomize" and c[1:3] != ["get", "namespace"]]
    assert len(namespaced) == len(runner.calls) - 2
    assert all(c[1:3] == ["-n", "pixsim"] for c in namespaced)


def test_up_with_managed_services_waits_only_for_the_backend(tmp_path: Path) -> None:
    host, config = _host(tmp_path, database={"url": "postgresql://pixsim@db.example.org/pixsim"},
                         redis={"url": "redis://cache.example.org:6379/0"})
    stub = start_stub(config.host_id)
    runner = FakeRunner(_cluster(config), forward_port=stub.port)
    report = _up(host, config, runner, timeout=60)
    rollouts = [c[-2] for c in runner.calls if "rollout" in c]
    assert rollouts == [f"deployment/{config.project}-backend", f"deployment/{config.project}-worker"]
    assert set(report.services) == {"backend", "worker"}
    # What the host ran in-cluster before (its StatefulSets) is pruned, its claims are not.
    deletes = [c for c in runner.calls if "delete" in c]
    assert len(deletes) == 1
    assert f"statefulset.apps/{config.project}-db" in deletes[0]
    assert not any(CLAIM_KIND in arg or "persistentvolumeclaim" in arg for arg in deletes[0])


def test_up_creates_a_missing_namespace(tmp_path: Path) -> None:
    host, config = _host(tmp_path)
    stub = start_stub(config.host_id)
    runner = FakeRunner([
        when(lambda a: verb(a)[:2] == ["get", "namespace"],
             failed('Error from server (NotFound): namespaces "games" not found')),
        *_cluster(config),
    ], forward_port=stub.port)
    _up(host, config, runner, timeout=60)
    assert runner.calls[2] == ["kubectl", "--context", "prod", "create", "namespace", "games"]


def test_up_goes_on_when_namespaces_may_not_be_read(tmp_path: Path) -> None:
    """A user limited to one namespace cannot get Namespace objects; that alone is fine."""
    host, config = _host(tmp_path)
    stub = start_stub(config.host_id)
    runner = FakeRunner([
        when(lambda a: verb(a)[:2] == ["get", "namespace"], failed(
            'Error from server (Forbidden): namespaces "games" is forbidden: User "jane" cannot get '
            'resource "namespaces" in API group "" in the namespace "games"')),
        *_cluster(config),
    ], forward_port=stub.port)
    _up(host, config, runner, timeout=60)
    assert any(verb(c)[:1] == ["apply"] for c in runner.calls)


def test_up_refuses_a_namespace_holding_another_host_of_the_same_name(tmp_path: Path) -> None:
    host, config = _host(tmp_path)
    runner = FakeRunner([
        when(lambda a: "host-id!=" in " ".join(a), ok(f"persistentvolumeclaim/data-{config.project}-db-0\n")),
        *_cluster(config),
    ])
    with pytest.raises(HostError, match="already holds persistentvolumeclaim/.* of another host"):
        _up(host, config, runner, timeout=60)
    assert not any(verb(c)[:1] == ["apply"] for c in runner.calls)


def test_up_fails_clearly_when_another_host_answers(tmp_path: Path) -> None:
    host, config = _host(tmp_path)
    stub = start_stub(config.host_id, server_id="11111111-2222-4333-8444-555555555555")
    runner = FakeRunner(_cluster(config), forward_port=stub.port)
    with pytest.raises(HostError, match="answers as host '11111111-"):
        _up(host, config, runner, timeout=30)
    assert all(f.stopped for f in runner.forwards)


def test_up_reports_a_rollout_that_does_not_finish(tmp_path: Path) -> None:
    host, config = _host(tmp_path)
    runner = FakeRunner([
        when(lambda a: verb(a)[:2] == ["rollout", "status"] and "deployment/" in a[-2],
             failed("error: timed out waiting for the condition")),
        *_cluster(config),
    ])
    with pytest.raises(HostError) as caught:
        _up(host, config, runner, timeout=30)
    message = caught.value.message
    assert f"deployment/{config.project}-backend did not finish rolling out" in message
    assert "pixsim-host logs" in message and "\n" not in message


def test_up_masks_secrets_in_kubectl_errors(tmp_path: Path) -> None:
    host, config = _host(tmp_path)
    password = secrets_of(host)["POSTGRES_PASSWORD"]
    runner = FakeRunner([
        when(lambda a: verb(a)[:1] == ["apply"],
             failed(f'The Secret "x" is invalid: data[POSTGRES_PASSWORD]: Invalid value: "{password}"')),
        *_cluster(config),
    ])
    with pytest.raises(HostError) as caught:
        _up(host, config, runner, timeout=30)
    assert password not in caught.value.message
    assert "********" in caught.value.message


# ---- error translation ----------------------------------------------------------------------


@pytest.mark.parametrize(("stderr", "expected"), [
    (FORBIDDEN, "may not use namespace 'games'"),
    ("E1126 07:53:58.734475   10551 memcache.go:265] couldn't get current server API group list\n"
     "The connection to the server 10.0.0.1:6443 was refused - did you specify the right host or port?",
     "cannot reach the Kubernetes cluster of context 'prod'"),
    ("Unable to connect to the server: dial tcp: lookup k8s.example.org: no such host",
     "cannot reach the Kubernetes cluster"),
    ('error: context "prod" does not exist', "kubectl has no context 'prod' in its kubeconfig"),
    ("error: You must be logged in to the server (Unauthorized)", "rejected kubectl's credentials"),
    ('Error from server (NotFound): namespaces "games" not found', "namespace 'games' does not exist"),
    ("error: something else entirely", "kubectl failed while"),
])
def test_kubectl_errors_become_one_clear_line(tmp_path: Path, stderr: str, expected: str) -> None:
    host, config = _host(tmp_path)
    runner = FakeRunner([when(lambda a: verb(a)[:1] == ["get"] and "host-id!=" in " ".join(a),
                              failed(stderr)), *_cluster(config)])
    with pytest.raises(HostError) as caught:
        _up(host, config, runner, timeout=30)
    message = caught.value.message
    assert expected in message
    assert "\n" not in message and "; " in message  # what is wrong; what to do
    assert "memcache.go" not in message


def test_missing_kubectl_is_a_clear_error(tmp_path: Path) -> None:
    host, config = _host(tmp_path)
    for call in (lambda r: _up(host, config, r, timeout=5),
                 lambda r: _runtime(host, config, r).stop_and_remove(_quiet),
                 lambda r: _status(host, config, r),
                 lambda r: list(_runtime(host, config, r).stream_logs(["db", "redis", "backend"], 5, False))):
        runner = FakeRunner(has_kubectl=False)
        with pytest.raises(HostError, match="kubectl is not installed or not on PATH"):
            call(runner)
        assert runner.calls == []


def test_missing_kubectl_through_the_cli(tmp_path: Path) -> None:
    host, _ = _host(tmp_path)
    env = clean_env(PATH=str(tmp_path / "empty-bin"), PIXSIM_HOST_HOME=str(tmp_path / "home"))
    for command in (["up"], ["down"], ["status"], ["logs"]):
        result = run_cli(*command, "--dir", str(host.root), env=env)
        assert_clean_failure(result)
        assert result.stderr.startswith("Error: kubectl is not installed or not on PATH"), str(result)
        assert len(result.stderr.strip().splitlines()) == 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _kubeconfig(path: Path, port: int) -> Path:
    return write_kubeconfig(path, f"https://127.0.0.1:{port}")


def test_a_real_kubectl_against_an_unreachable_cluster(tmp_path: Path) -> None:
    """kubectl's own text for a refused connection (loopback, nothing listening)."""
    find_kubectl()
    host, _ = _host(tmp_path)
    kubeconfig = _kubeconfig(tmp_path / "kubeconfig", _closed_port())
    env = clean_env(KUBECONFIG=str(kubeconfig), PIXSIM_HOST_HOME=str(tmp_path / "home"))
    for command in (["up", "--timeout", "20"], ["status"], ["down"]):
        result = run_cli(*command, "--dir", str(host.root), env=env)
        assert result.returncode == 1 and "Traceback" not in result.output, str(result)
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1, str(result)
        assert errors[0].startswith("Error: cannot reach the Kubernetes cluster of context 'prod'")
        assert "cluster-info" in errors[0] and "memcache" not in result.stderr


def test_a_real_kubectl_with_an_unknown_context(tmp_path: Path) -> None:
    find_kubectl()
    host, _ = _host(tmp_path, kubernetes={"namespace": "games", "context": "staging"})
    kubeconfig = _kubeconfig(tmp_path / "kubeconfig", _closed_port())
    env = clean_env(KUBECONFIG=str(kubeconfig), PIXSIM_HOST_HOME=str(tmp_path / "home"))
    result = run_cli("status", "--dir", str(host.root), env=env)
    assert_clean_failure(result)
    assert "kubectl has no context 'staging'" in result.stderr, str(result)


@pytest.mark.parametrize("namespace_exists", [True, False])
def test_a_real_kubectl_refused_by_rbac(tmp_path: Path, namespace_exists: bool) -> None:
    """kubectl's own Forbidden text, from a stub API server that refuses user jane."""
    find_kubectl()
    api = start_stub_api(namespace_exists=namespace_exists)
    host, config = _host(tmp_path)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.url)
    env = clean_env(KUBECONFIG=str(kubeconfig), PIXSIM_HOST_HOME=str(tmp_path / "home"))
    commands = [["up", "--timeout", "20"]] + ([["status"], ["down"]] if namespace_exists else [])
    for command in commands:
        result = run_cli(*command, "--dir", str(host.root), env=env)
        assert result.returncode == 1 and "Traceback" not in result.output, str(result)
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1, str(result)
        assert errors[0].startswith("Error: context 'prod' may not use namespace 'games' ("), str(result)
        assert 'User "jane" cannot' in errors[0] and "ask the cluster's admin for a Role" in errors[0]
    if namespace_exists:
        # up went past the (refused) namespace lookup and stopped at its first namespaced
        # step, the check for other hosts: nothing was applied.
        assert "GET /api/v1/namespaces/games" in api.requests
        assert any("/namespaces/games/deployments?labelSelector" in r for r in api.requests)
    else:
        assert any(r.startswith("POST /api/v1/namespaces") for r in api.requests)
    assert not any(r.startswith(("PATCH", "PUT")) for r in api.requests)
    assert config.kubernetes.namespace == "games"


def test_the_folder_builds_with_the_exact_command_up_runs(tmp_path: Path) -> None:
    """up's first step, run for real: the Secret comes out, the folder stays secret-free."""
    kubectl = find_kubectl()
    host, config = _host(tmp_path)
    runner = kubernetes.SubprocessRunner()
    kube = kubernetes.Kubectl(config, runner)
    built = kube.build(host)
    assert "kind: Secret" in built
    bad = subprocess.run([kubectl, "kustomize", str(host.root / "kubernetes")], capture_output=True,
                         text=True, timeout=120, env=kubectl_env())
    # Why up does not use plain `apply -k`: kustomize refuses ../.env without the flag.
    assert bad.returncode != 0 and "not in or below" in bad.stderr


# ---- down, volumes, status, logs, restart -------------------------------------------------


def test_down_deletes_by_label_and_keeps_the_claims(tmp_path: Path, swap_runner: Any) -> None:
    host, config = _host(tmp_path)
    p = config.project
    runner = FakeRunner([when(lambda a: verb(a)[:1] == ["delete"], ok(
        f'deployment.apps "{p}-backend" deleted\nstatefulset.apps "{p}-db" deleted\n'))])
    swap_runner(runner)
    removed = stack.down(host, config, progress=_quiet)
    assert runner.calls == [[
        "kubectl", "--context", "prod", "-n", "games", "delete", OBJECT_KINDS,
        "-l", f"org.pixsim-host/host-id={config.host_id}", "--ignore-not-found",
        "--cascade=foreground", "--wait=true", "--timeout=300s",
    ]]
    assert removed == [f"deployment.apps/{p}-backend", f"statefulset.apps/{p}-db"]
    assert "persistentvolumeclaim" not in OBJECT_KINDS


def test_down_volumes_lists_then_deletes_exactly_the_claims(tmp_path: Path, swap_runner: Any) -> None:
    host, config = _host(tmp_path)
    p = config.project
    claims = f"persistentvolumeclaim/data-{p}-db-0\npersistentvolumeclaim/data-{p}-redis-0\n"
    runner = FakeRunner([when(lambda a: verb(a)[:2] == ["get", CLAIM_KIND], ok(claims))])
    swap_runner(runner)
    names = stack.host_volumes(host, config)
    assert names == [f"data-{p}-db-0", f"data-{p}-redis-0"]
    stack.down(host, config, progress=_quiet)
    stack.remove_volumes(host, config, names)
    base = ["kubectl", "--context", "prod", "-n", "games"]
    assert runner.calls == [
        [*base, "get", CLAIM_KIND, "-l", f"org.pixsim-host/host-id={config.host_id}", "-o", "name"],
        [*base, "delete", OBJECT_KINDS, "-l", f"org.pixsim-host/host-id={config.host_id}",
         "--ignore-not-found", "--cascade=foreground", "--wait=true", "--timeout=300s"],
        [*base, "delete", CLAIM_KIND, f"data-{p}-db-0", f"data-{p}-redis-0", "--ignore-not-found",
         "--wait=true", "--timeout=300s"],
    ]


def test_down_volumes_asks_first_as_on_docker(tmp_path: Path, swap_runner: Any) -> None:
    from typer.testing import CliRunner

    from pixsim_host.cli import app

    host, config = _host(tmp_path)
    claims = f"persistentvolumeclaim/data-{config.project}-db-0\n"
    runner = FakeRunner([when(lambda a: verb(a)[:2] == ["get", CLAIM_KIND], ok(claims))])
    swap_runner(runner)
    result = CliRunner().invoke(app, ["down", "--volumes", "--dir", str(host.root)])
    assert isinstance(result.exception, HostError)
    assert (f"would delete the data of host {config.name!r} (data-{config.project}-db-0); pass --yes"
            in result.exception.message)
    assert not any("delete" in c for c in runner.calls)
    result = CliRunner().invoke(app, ["down", "--volumes", "--yes", "--dir", str(host.root)])
    assert result.exit_code == 0, result.output
    assert [verb(c)[:2] for c in runner.calls if "delete" in c] == [
        ["delete", OBJECT_KINDS], ["delete", CLAIM_KIND]]


def _workloads(config: HostConfig, backend_ready: int = 2) -> str:
    import json

    p = config.project

    def item(kind: str, name: str, want: int, ready: int) -> dict[str, Any]:
        return {"kind": kind, "metadata": {"name": name}, "spec": {"replicas": want},
                "status": {"readyReplicas": ready, "updatedReplicas": want}}

    return json.dumps({"items": [item("StatefulSet", f"{p}-db", 1, 1),
                                 item("StatefulSet", f"{p}-redis", 1, 1),
                                 item("Deployment", f"{p}-backend", 2, backend_ready),
                                 *(item("Deployment", f"{p}-{worker.name}", 1, 1)
                                   for worker in resolve_workers(config))]})


def test_status_reads_the_workloads_and_probes_the_backend(tmp_path: Path, swap_runner: Any) -> None:
    host, config = _host(tmp_path, backend={"replicas": 2})
    stub = start_stub(config.host_id)
    runner = FakeRunner([when(lambda a: verb(a)[:1] == ["get"], ok(_workloads(config)))],
                        forward_port=stub.port)
    swap_runner(runner)
    report = stack.status(host, config)
    assert report["healthy"] is True
    assert report["services"]["backend"]["replicas"] == "2/2"
    assert report["backend"]["verified"] is True
    base = ["kubectl", "--context", "prod", "-n", "games"]
    assert runner.calls == [
        [*base, "get", "statefulsets.apps,deployments.apps", "-l",
         f"org.pixsim-host/host-id={config.host_id}", "-o", "json"],
        [*base, "port-forward", "--address", "127.0.0.1", f"svc/{config.project}-backend", ":8000"],
    ]
    runner.handlers = [when(lambda a: verb(a)[:1] == ["get"], ok(_workloads(config, backend_ready=1)))]
    degraded = stack.status(host, config)
    assert degraded["healthy"] is False
    assert degraded["services"]["backend"]["state"] == "starting"
    runner.handlers = [when(lambda a: verb(a)[:1] == ["get"], ok('{"items": []}'))]
    gone = stack.status(host, config)
    assert gone["healthy"] is False
    assert {s["state"] for s in gone["services"].values()} == {"missing"}


def test_logs_select_by_label_and_mask_secrets(tmp_path: Path) -> None:
    host, config = _host(tmp_path)
    secret = secrets_of(host)["SECRET_KEY"]
    runner = FakeRunner(log_lines=[f"[pod/{config.project}-backend-x/backend] key={secret}"])
    lines = [line for _, line in _runtime(host, config, runner).stream_logs(["backend"], 50, True)]
    assert lines == [f"[pod/{config.project}-backend-x/backend] key=********"]
    assert runner.calls == [[
        "kubectl", "--context", "prod", "-n", "games", "logs", "-l",
        f"org.pixsim-host/host-id={config.host_id},app.kubernetes.io/component=backend",
        "--all-containers", "--prefix", "--tail=50", "--max-log-requests=20", "--follow",
    ]]
    with pytest.raises(HostError, match="no service 'web'"):
        _runtime(host, config, runner).stream_logs(["web"], 5, False)


def test_restart_rolls_the_workloads(tmp_path: Path) -> None:
    host, config = _host(tmp_path)
    runner = FakeRunner()
    _runtime(host, config, runner).restart(["backend"], _quiet)
    assert runner.calls == [["kubectl", "--context", "prod", "-n", "games", "rollout", "restart",
                             f"deployment/{config.project}-backend"]]


def test_docker_only_commands_refuse_a_kubernetes_host(tmp_path: Path, swap_runner: Any) -> None:
    host, config = _host(tmp_path)
    swap_runner(FakeRunner())
    with pytest.raises(HostError, match="runs on Kubernetes"):
        stack.open_data_runtime(host, config)


def test_the_runtime_module_imports_nothing_heavy() -> None:
    code = ("import sys, pixsim_host.runtime.kubernetes; "
            "print(sorted(m for m in ('jinja2', 'pydantic', 'httpx', 'docker', 'yaml') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


# ---- the real runner's plumbing (with stand-in programs, not kubectl) ----------------------


def test_the_subprocess_runner_passes_stdin_streams_and_stops(tmp_path: Path) -> None:
    runner = kubernetes.SubprocessRunner()
    done = runner.run([sys.executable, "-c", "import sys; print(sys.stdin.read().upper())"], stdin="abc")
    assert (done.returncode, done.stdout) == (0, "ABC\n")
    slow = runner.run([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.5)
    assert slow.returncode == 124
    assert list(runner.stream([sys.executable, "-c", "print('a'); print('b')"])) == ["a", "b"]
    with pytest.raises(kubernetes.CommandFailed) as caught:
        list(runner.stream([sys.executable, "-c", "import sys; sys.exit('boom')"]))
    assert "boom" in caught.value.completed.stderr
    forward = runner.start([sys.executable, "-u", "-c",
                            "import time; print('Forwarding from 127.0.0.1:4321 -> 8000'); time.sleep(60)"])
    host, config = _host(tmp_path)
    kube = kubernetes.Kubectl(config, FakeRunner())
    assert kube._forwarded_port(forward, "svc/x") == 4321
    assert forward.alive()
    forward.stop()
    assert not forward.alive()
    dead = runner.start([sys.executable, "-c", "import sys; sys.exit('error: no ready pods')"])
    with pytest.raises(HostError, match="kubectl failed while port-forwarding svc/x"):
        kube._forwarded_port(dead, "svc/x")


def test_status_reports_a_port_forward_that_fails(tmp_path: Path, swap_runner: Any) -> None:
    host, config = _host(tmp_path)
    runner = FakeRunner([when(lambda a: verb(a)[:1] == ["get"], ok(_workloads(config)))])
    assert runner.forward_port is None  # the fake kubectl port-forward exits with an error
    swap_runner(runner)
    report = stack.status(host, config)
    assert report["healthy"] is False
    assert "port-forwarding" in report["backend"]["problem"]
    assert "pod is not running" in report["backend"]["problem"]
