"""HTTP services beside the backend (PixSim7's generation-api): chosen by id in
``backend.services``, read from the declarations, rendered with their port and health check,
their ports claimed in the host registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from unit_helpers import run_cli

from pixsim_host.config import HostConfig, new_host_config, parse_config
from pixsim_host.errors import ConfigError, HostError
from pixsim_host.hostdir import HostDir
from pixsim_host.render import render_host
from pixsim_host.services import resolve_http_services, service_urls


def declare(root: Path, sid: str, **fields: object) -> None:
    path = root / "services" / sid / "pixsim.service.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"id": sid, **fields}), encoding="utf-8")


def pixsim7_like(tmp_path: Path) -> Path:
    root = tmp_path / "pixsim7"
    declare(root, "main-api", type="backend", module="pixsim7.backend.main.main:app",
            ports=[{"env": "BACKEND_PORT", "default_port": 8000}])
    declare(root, "generation-api", type="backend", module="pixsim7.backend.generation.main:app",
            port_env="GENERATION_API_PORT", default_port=8001,
            ports=[{"name": "Generation API", "env": "GENERATION_API_PORT", "default_port": 8001}],
            health_endpoint="/health")
    declare(root, "embedder", type="inference", module="pixsim7.embedding.server:app",
            ports=[{"env": "EMBEDDING_PORT", "default_port": 8010}], health_endpoint="/healthz")
    declare(root, "worker", type="worker", module="arq", args=["x.WorkerSettings"])
    declare(root, "launcher-ui", type="frontend", module="launcher.ui")
    declare(root, "launcher-api", category="launcher", type="backend", module="launcher.api.main:app",
            port_env="LAUNCHER_PORT", default_port=8100)
    return root


def host_with(runtime: str = "docker", **backend: object) -> HostConfig:
    data = new_host_config(name="svc", runtime=runtime).model_dump(mode="json")
    data["backend"].update(backend)
    return parse_config(data, source="test")


def test_by_default_a_host_runs_no_service_beside_its_backend(tmp_path: Path) -> None:
    assert host_with().backend.services == []
    assert resolve_http_services(host_with(source=str(pixsim7_like(tmp_path)))) == []


def test_a_declared_service_brings_its_port_variable_and_health_endpoint(tmp_path: Path) -> None:
    config = host_with(source=str(pixsim7_like(tmp_path)), services=["generation-api", "embedder"])
    gen, embedder = resolve_http_services(config, python="/venv/bin/python")
    assert (gen.port, gen.listen_port, gen.port_env, gen.health_endpoint) == \
        (8001, 8001, "GENERATION_API_PORT", "/health")
    # uvicorn, with where to listen added, as PixSim7's own launcher does.
    assert gen.argv("127.0.0.1", 8001) == ["/venv/bin/python", "-m", "uvicorn",
                                            "pixsim7.backend.generation.main:app",
                                            "--host", "127.0.0.1", "--port", "8001"]
    assert gen.environment(8001) == {"GENERATION_API_PORT": "8001"}
    assert (embedder.port, embedder.health_endpoint) == (8010, "/healthz")


def test_a_declared_service_can_be_moved_to_another_port(tmp_path: Path) -> None:
    config = host_with(source=str(pixsim7_like(tmp_path)),
                       services=[{"name": "generation-api", "port": 8011}])
    (gen,) = resolve_http_services(config)
    # Published on 8011; inside a container it still listens on its declared 8001.
    assert (gen.port, gen.listen_port) == (8011, 8001)
    assert service_urls(config) == {"generation-api": "http://127.0.0.1:8011"}


def test_without_a_checkout_a_service_is_a_command_with_its_port() -> None:
    config = host_with(image="example/backend:1", services=[{
        "name": "gen", "command": "python -m gen --listen {bind}:{port}", "port": 8021,
        "port_env": "GEN_PORT", "health_endpoint": "/ping"}])
    (gen,) = resolve_http_services(config, python="/opt/py")
    assert gen.argv("0.0.0.0", 8021) == ["/opt/py", "-m", "gen", "--listen", "0.0.0.0:8021"]
    assert (gen.port_env, gen.health_endpoint, gen.declared_in) == ("GEN_PORT", "/ping", "")


def test_unknown_unfit_and_clashing_services_are_clear_errors(tmp_path: Path) -> None:
    root = str(pixsim7_like(tmp_path))
    with pytest.raises(HostError, match="does not declare; it declares: embedder, generation-api"):
        resolve_http_services(host_with(source=root, services=["media-api"]))
    for unfit in ("main-api", "launcher-ui", "launcher-api"):
        with pytest.raises(HostError, match="does not run beside its backend"):
            resolve_http_services(host_with(source=root, services=[unfit]))
    with pytest.raises(HostError, match="gives no port"):
        resolve_http_services(host_with(source=root, services=["worker"]))
    with pytest.raises(HostError, match="which backend.port takes"):
        resolve_http_services(host_with(source=root, port=8001, services=["generation-api"]))
    with pytest.raises(HostError, match="which backend.services generation-api takes"):
        resolve_http_services(host_with(source=root, services=[
            "generation-api", {"name": "embedder", "port": 8001}]))


@pytest.mark.parametrize(("services", "problem"), [
    ([{"name": "gen", "command": "python -m gen"}], "needs its port too"),
    (["generation-api", "generation-api"], "names a service twice"),
    (["backend"], "one of pixsim-host's own services"),
    ([{"name": "gen", "port": 8011, "port_env": "DATABASE_URL"}], "set by pixsim-host"),
    ([{"name": "gen", "port": 8011, "health_endpoint": "health"}], "must be a path"),
])
def test_bad_service_entries_are_config_errors(services: list[object], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        host_with(services=services)


def test_a_service_is_not_a_worker_too() -> None:
    with pytest.raises(ConfigError, match="both backend.workers and backend.services"):
        host_with(workers=["worker"], services=["worker"])


def test_compose_runs_it_from_the_backends_image_with_the_backends_variables(tmp_path: Path) -> None:
    config = host_with(services=[{"name": "generation-api", "port": 8011}])
    host = HostDir(tmp_path / "h")
    host.root.mkdir()
    files = render_host(host, config).files
    services = yaml.safe_load(files["compose.yaml"])["services"]
    gen, backend = services["generation-api"], services["backend"]
    assert gen["image"] == backend["image"] == config.backend.image
    assert gen["command"] == ["python", "-m", "pixsim_reference_backend", "serve-generation"]
    assert gen["environment"] == {**backend["environment"], "GENERATION_API_PORT": "8001"}
    assert gen["ports"] == [{"target": 8001, "published": "8011", "host_ip": "127.0.0.1",
                             "protocol": "tcp"}]
    assert "http://127.0.0.1:8001/health" in gen["healthcheck"]["test"][-1]
    assert gen["labels"]["org.pixsim-host.service"] == "generation-api"
    assert gen["volumes"] == backend["volumes"]
    frontend = files["frontend.env"]
    assert "VITE_GENERATION_API_URL='http://127.0.0.1:8011'" in frontend
    assert "GENERATION_API_PORT='8011'" in frontend


def test_config_set_claims_its_port_in_the_registry(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    assert run_cli("init", str(first), "--yes", "--name", "http-first", "--port", "18790").returncode == 0
    assert run_cli("init", str(second), "--yes", "--name", "http-second", "--port", "18791").returncode == 0
    done = run_cli("config", "set", "backend.services", "[{name: generation-api, port: 18795}]",
                   "--dir", str(first))
    assert done.returncode == 0, str(done)
    from pixsim_host.hosts import load_registry

    assert load_registry().port_claims()[18795].name == "http-first"
    refused = run_cli("config", "set", "backend.services", "[{name: generation-api, port: 18795}]",
                      "--dir", str(second))
    assert refused.returncode != 0
    assert "port 18795 is claimed by host 'http-first'" in refused.stderr


def test_kubernetes_runs_it_as_a_deployment_and_a_service(tmp_path: Path) -> None:
    from kubernetes_helpers import make_k8s_host, rendered_documents

    from pixsim_host.kubernetes_manifests import workloads

    host, config = make_k8s_host(tmp_path / "k8s", backend={"services": ["generation-api"]})
    docs = [doc for docs in rendered_documents(host).values() for doc in docs]
    name = f"{config.project}-generation-api"
    [service] = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == name]
    [deployment] = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name]
    assert service["spec"]["ports"] == [{"name": "http", "port": 8001, "targetPort": "http"}]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["python", "-m", "pixsim_reference_backend", "serve-generation"]
    assert container["ports"] == [{"name": "http", "containerPort": 8001}]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["GENERATION_API_PORT"] == "8001" and "DATABASE_URL" in env
    assert container["envFrom"] == [{"configMapRef": {"name": f"{config.project}-backend-env"}}]
    assert workloads(config)["generation-api"] == f"deployment/{name}"


def test_a_new_backend_image_keeps_its_services_as_commands() -> None:
    from pixsim_host.upgrade import changed_config

    old = host_with(services=[{"name": "generation-api", "port": 8011}])
    new = changed_config(old, {"backend.image": "example/backend:2"})
    # The new image's declarations cannot be read: the service is written down as it ran.
    (entry,) = new.backend.services
    assert not isinstance(entry, str)
    assert (entry.command, entry.port, entry.port_env, entry.health_endpoint) == (
        "python -m pixsim_reference_backend serve-generation", 8011, "GENERATION_API_PORT", "/health")
    (before,), (after,) = resolve_http_services(old), resolve_http_services(new)
    assert after.argv("0.0.0.0", after.listen_port) == before.argv("0.0.0.0", before.listen_port)
    assert after.environment(after.port) == {"GENERATION_API_PORT": "8011"}


def test_an_http_service_is_not_taken_as_a_worker(tmp_path: Path) -> None:
    from pixsim_host.services import resolve_workers

    with pytest.raises(HostError, match="an HTTP service .*; move it to backend.services"):
        resolve_workers(host_with(source=str(pixsim7_like(tmp_path)), workers=["generation-api"]))


@pytest.mark.parametrize("runtime", ["docker", "native"])
def test_behind_the_tls_proxy_a_service_listens_on_loopback_only(tmp_path: Path, runtime: str) -> None:
    """A friend host (bind 0.0.0.0) with TLS on: the proxy is what friends reach; the backend's
    sibling services must not answer in clear text on every interface."""
    data = new_host_config(name="svc", runtime=runtime).model_dump(mode="json")
    data["model"] = "friend"
    data["backend"].update(bind="0.0.0.0", services=[
        {"name": "generation-api", "port": 8011},
        # Told where to listen on its command line, as uvicorn is for a declared app.
        {"name": "media-api", "command": "python -m media_api --listen {bind}:{port}", "port": 8012}])
    if runtime == "native":
        data["native"].update(postgres_port=15501, redis_port=16501)
    data["tls"] = {"mode": "internal", "domain": "pixsim.example.test"}
    config = parse_config(data, source="test")
    assert config.backend_listen_address == "127.0.0.1"
    if runtime == "docker":
        host = HostDir(tmp_path / "h")
        host.root.mkdir()
        services = yaml.safe_load(render_host(host, config).files["compose.yaml"])["services"]
        assert services["generation-api"]["ports"][0]["host_ip"] == "127.0.0.1"
        assert services["media-api"]["ports"][0]["host_ip"] == "127.0.0.1"
        return
    from pixsim_host.runtime.native import NativeRuntime

    host = HostDir(tmp_path / "n")
    host.root.mkdir()
    secrets = {"POSTGRES_PASSWORD": "p" * 24, "REDIS_PASSWORD": "r" * 24, "SECRET_KEY": "s" * 40}
    runtime_ = NativeRuntime(host, config, secrets)
    assert runtime_._http_service_launch("generation-api").env["HOST"] == "127.0.0.1"
    argv = runtime_._http_service_launch("media-api").argv
    assert argv[-1] == "127.0.0.1:8012", argv
