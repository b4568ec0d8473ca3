"""The rendered kubernetes/ folder, proven offline.

Every object validates against the Kubernetes API schemas of a current release
(kubernetes-validate ships them), `kubectl kustomize` builds the folder, secrets appear
only inside the Secret, every object carries the host's labels, and two hosts in one
namespace collide on nothing.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_helpers import (
    find_kubectl,
    kustomize,
    make_k8s_host,
    rendered_documents,
    secrets_of,
)
from unit_helpers import assert_clean_failure, clean_env, compose_unescape, run_cli

from pixsim_host.config import HostConfig
from pixsim_host.errors import HostError
from pixsim_host.hostdir import HostDir
from pixsim_host.render import diff_rendered, render_host
from pixsim_host.services import resolve_http_services, resolve_workers

K8S_VERSION = kubernetes_validate.latest_version()
SPECIAL_NAME = "Bob's \"$HOME\" {{ x }} #1: $(SECRET_KEY) $$ 😀 - [a] &b *c"
SPECIAL_DESCRIPTION = "line one\nline two: ${SECRET_KEY} `cmd` 'q' \"dq\" # not a comment\t\\n"
HOST_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
               "app.kubernetes.io/part-of", "org.pixsim-host/host-id")

# The variants every property is checked on.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "managed-services": {
        "database": {"url": "postgresql://pixsim@db.example.org:5432/pixsim?sslmode=require"},
        "redis": {"url": "rediss://cache.example.org:6380/0"},
    },
    "ingress-tls": {
        "model": "shared",
        "backend": {"bind": "0.0.0.0", "public_url": "https://play.example.org", "replicas": 3},
        "kubernetes": {"namespace": "games", "context": "prod", "ingress_host": "play.example.org",
                       "ingress_class": "nginx", "tls_secret": "play-tls",
                       "storage_class": "fast-ssd", "database_storage": "50Gi",
                       "service_type": "LoadBalancer"},
        "plugins": {"disabled": ["romance"]},
    },
    "special-text": {
        "name": SPECIAL_NAME,
        "description": SPECIAL_DESCRIPTION,
        "backend": {"command": ["uvicorn", "app:main", "--root-path", "$(NOT_EXPANDED)"]},
    },
    "http-services": {
        "backend": {"services": ["generation-api",
                                 {"name": "media-api", "command": "python -m media --port {port}",
                                  "port": 8031, "port_env": "MEDIA_PORT", "health_endpoint": "/ok"}]},
    },
}


@pytest.fixture(params=sorted(VARIANTS))
def variant(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[HostDir, HostConfig]:
    values = dict(VARIANTS[request.param])
    name = values.pop("name", f"host {request.param}")
    return make_k8s_host(tmp_path / "host", name=name, **values)


def _validate(obj: dict[str, Any]) -> None:
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = "/".join(str(p) for p in exc.caught_exception.absolute_path)
        raise AssertionError(f"{obj['kind']} {obj['metadata'].get('name')} at {where}: {exc}") from None


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item for item in container.get("env", [])}


def _by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


# ---- schemas --------------------------------------------------------------------------------


def test_every_rendered_object_validates_against_the_api_schemas(variant: tuple[HostDir, HostConfig]) -> None:
    host, _ = variant
    count = 0
    for name, docs in rendered_documents(host).items():
        for doc in docs:
            if doc.get("kind") == "Kustomization":
                assert name == "kustomization.yaml"
                continue
            _validate(doc)
            count += 1
    assert count >= 3  # ConfigMap, Deployment, Service at least


def test_every_built_object_validates_against_the_api_schemas(variant: tuple[HostDir, HostConfig]) -> None:
    host, config = variant
    built = kustomize(find_kubectl(), host)
    kinds = sorted(obj["kind"] for obj in built)
    # One Deployment for the backend and one per worker (the reference backend has one).
    workers = resolve_workers(config)
    expected = ["ConfigMap", "Deployment", "Secret", "Service", *["Deployment"] * len(workers)]
    # And a Deployment and a Service per HTTP service beside the backend.
    expected += ["Deployment", "Service"] * len(resolve_http_services(config))
    if config.database.url is None:
        expected += ["Service", "StatefulSet"]
    if config.redis.url is None:
        expected += ["Service", "StatefulSet"]
    if config.kubernetes.ingress_host:
        expected.append("Ingress")
    assert kinds == sorted(expected)
    for obj in built:
        _validate(obj)
        assert obj["metadata"]["namespace"] == config.kubernetes.namespace


# ---- labels and names -----------------------------------------------------------------------


def _label_sets(obj: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    """The object's labels, and those of everything it creates (pods, claims)."""
    found = [(f"{obj['kind']}", obj["metadata"].get("labels") or {})]
    spec = obj.get("spec") or {}
    template = spec.get("template")
    if template:
        found.append((f"{obj['kind']} pod template", template["metadata"].get("labels") or {}))
    for claim in spec.get("volumeClaimTemplates") or []:
        found.append((f"{obj['kind']} claim template", claim["metadata"].get("labels") or {}))
    return found


def test_every_object_carries_the_hosts_labels(variant: tuple[HostDir, HostConfig]) -> None:
    host, config = variant
    for obj in kustomize(find_kubectl(), host):
        for what, labels in _label_sets(obj):
            missing = [key for key in HOST_LABELS if key not in labels]
            assert not missing, f"{what} {obj['metadata']['name']} lacks {missing}"
            assert labels["org.pixsim-host/host-id"] == config.host_id
            assert labels["app.kubernetes.io/instance"] == config.project
            assert labels["app.kubernetes.io/part-of"] == "pixsim7"
        assert obj["metadata"]["name"].startswith(config.project + "-")


def test_two_hosts_in_one_namespace_collide_on_nothing(tmp_path: Path) -> None:
    kubectl = find_kubectl()
    a, config_a = make_k8s_host(tmp_path / "a", name="alpha", kubernetes={"namespace": "shared"})
    b, config_b = make_k8s_host(tmp_path / "b", name="beta", kubernetes={"namespace": "shared"})
    built_a, built_b = kustomize(kubectl, a), kustomize(kubectl, b)
    keys_a, keys_b = {_key(o) for o in built_a}, {_key(o) for o in built_b}
    assert len(keys_a) == len(built_a) and len(keys_b) == len(built_b)
    assert not keys_a & keys_b
    # The claims a StatefulSet creates are named <template>-<statefulset>-<ordinal>.
    claims = [f"{c['metadata']['name']}-{o['metadata']['name']}-0"
              for o in built_a + built_b if o["kind"] == "StatefulSet"
              for c in o["spec"]["volumeClaimTemplates"]]
    assert len(claims) == len(set(claims)) == 4
    # No selector of one host selects the pods of the other.
    for mine, theirs in ((built_a, built_b), (built_b, built_a)):
        pods = [o["spec"]["template"]["metadata"]["labels"]
                for o in theirs if "template" in o.get("spec", {})]
        for obj in mine:
            spec = obj.get("spec") or {}
            wanted = spec.get("selector")
            if obj["kind"] != "Service":
                wanted = (wanted or {}).get("matchLabels")
            if not wanted:
                continue
            for labels in pods:
                assert not all(labels.get(k) == v for k, v in wanted.items()), obj["metadata"]["name"]
    assert config_a.host_id != config_b.host_id


def test_an_overlong_project_name_is_refused_clearly(tmp_path: Path) -> None:
    name = "a" * 40  # pixsim-aaaa...: the Redis StatefulSet name would be 53 characters
    with pytest.raises(HostError, match="Redis StatefulSet .* longer than the 52"):
        make_k8s_host(tmp_path / "long", name=name)
    host, config = make_k8s_host(tmp_path / "managed", name=name,
                                 redis={"url": "redis://cache.example.org:6379/0"})
    assert len(config.project) == 47
    assert (host.root / "kubernetes" / "backend.yaml").is_file()


# ---- secrets --------------------------------------------------------------------------------


def _encodings(value: str) -> list[str]:
    return [value, base64.b64encode(value.encode()).decode()]


def test_the_rendered_folder_holds_no_secret(variant: tuple[HostDir, HostConfig]) -> None:
    host, _ = variant
    secrets = secrets_of(host)
    for path in sorted((host.root / "kubernetes").iterdir()):
        text = path.read_text(encoding="utf-8")
        for key, value in secrets.items():
            for form in _encodings(value):
                assert form not in text, f"{key} is in {path.name}"
    kustomization = yaml.safe_load((host.root / "kubernetes" / "kustomization.yaml").read_text())
    assert kustomization["secretGenerator"][0]["envs"] == ["../.env"]


def test_secrets_appear_only_inside_the_secret(variant: tuple[HostDir, HostConfig]) -> None:
    host, config = variant
    secrets = secrets_of(host)
    built = kustomize(find_kubectl(), host)
    [secret] = _by_kind(built, "Secret")
    assert secret["metadata"]["name"].startswith(f"{config.project}-secrets-")
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == secrets
    assert "stringData" not in secret
    rest = json.dumps([obj for obj in built if obj["kind"] != "Secret"])
    for key, value in secrets.items():
        for form in _encodings(value):
            assert form not in rest, f"{key} leaked outside the Secret"
    # Every workload refers to the generated (hash-suffixed) Secret by its real name.
    refs = {item["valueFrom"]["secretKeyRef"]["name"]
            for obj in built if obj["kind"] in ("Deployment", "StatefulSet")
            for container in obj["spec"]["template"]["spec"]["containers"]
            for item in container.get("env", []) if "valueFrom" in item}
    assert refs == {secret["metadata"]["name"]}


# ---- the backend's environment: the same contract as on Docker ------------------------------


def _backend(built: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, str]]:
    # The backend's Deployment among the workers' (those are labelled with their own component).
    [deployment] = [obj for obj in _by_kind(built, "Deployment")
                    if obj["metadata"]["labels"]["app.kubernetes.io/component"] == "backend"]
    [config_map] = _by_kind(built, "ConfigMap")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return container, config_map["data"]


def test_the_backend_gets_the_compose_environment_contract(variant: tuple[HostDir, HostConfig]) -> None:
    host, config = variant
    built = kustomize(find_kubectl(), host)
    container, data = _backend(built)
    compose = yaml.safe_load((host.root / "compose.yaml").read_text(encoding="utf-8"))
    secret_refs = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY")  # ${NAME} interpolations from .env
    docker_env = {k: v if k in secret_refs else compose_unescape(v)
                  for k, v in compose["services"]["backend"]["environment"].items()}
    env = _env(container)
    # Every variable the backend gets on Docker, it gets here; secrets through the Secret.
    assert set(docker_env) == set(data) | set(secret_refs)
    for key, value in data.items():
        assert value == docker_env[key], key
    assert data["SERVER_ID"] == config.host_id
    assert data["SERVER_NAME"] == config.name
    assert data["SERVER_DESCRIPTION"] == config.description
    assert json.loads(data["PLUGIN_DENYLIST"]) == config.plugins.disabled
    assert data["PLUGIN_ALLOWLIST"] == "[]"
    assert env["SECRET_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "SECRET_KEY"
    assert env["PIXSIM_HOST_DB_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "POSTGRES_PASSWORD"
    # The URLs refer to the password variables, defined before them, as $(NAME).
    names = [item["name"] for item in container["env"]]
    assert names.index("PIXSIM_HOST_DB_PASSWORD") < names.index("DATABASE_URL")
    assert names.index("PIXSIM_HOST_REDIS_PASSWORD") < names.index("REDIS_URL")
    n = config.project
    if config.database.url is None:
        assert env["DATABASE_URL"]["value"] == (
            f"postgresql://pixsim:$(PIXSIM_HOST_DB_PASSWORD)@{n}-db:5432/pixsim")
    else:
        assert env["DATABASE_URL"]["value"] == (
            "postgresql://pixsim:$(PIXSIM_HOST_DB_PASSWORD)@db.example.org:5432/pixsim?sslmode=require")
    if config.redis.url is None:
        assert env["REDIS_URL"]["value"] == f"redis://:$(PIXSIM_HOST_REDIS_PASSWORD)@{n}-redis:6379/0"
    else:
        assert env["REDIS_URL"]["value"] == "rediss://:$(PIXSIM_HOST_REDIS_PASSWORD)@cache.example.org:6380/0"
    if config.backend.command:
        # Kubernetes expands $(NAME) in args; a literal '$' is written '$$'.
        assert container["args"] == [a.replace("$", "$$") for a in config.backend.command]


def test_the_deployment_probes_scales_and_requests(variant: tuple[HostDir, HostConfig]) -> None:
    host, config = variant
    built = kustomize(find_kubectl(), host)
    container, _ = _backend(built)
    [deployment] = [obj for obj in _by_kind(built, "Deployment")
                    if obj["metadata"]["labels"]["app.kubernetes.io/component"] == "backend"]
    assert deployment["spec"]["replicas"] == config.backend.replicas
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["image"] == config.backend.image
    for obj in built:
        if obj["kind"] in ("Deployment", "StatefulSet"):
            for c in obj["spec"]["template"]["spec"]["containers"]:
                assert set(c["resources"]["requests"]) == {"cpu", "memory"}, obj["metadata"]["name"]
    services = {o["metadata"]["name"]: o for o in _by_kind(built, "Service")}
    assert services[f"{config.project}-backend"]["spec"]["type"] == config.kubernetes.service_type
    for service in services.values():
        if service["metadata"]["labels"]["app.kubernetes.io/component"] in ("database", "redis"):
            assert service["spec"]["clusterIP"] == "None"  # headless, for the StatefulSets
        else:  # the backend's, and those of the HTTP services beside it
            assert service["spec"]["type"] == config.kubernetes.service_type
    for sts in _by_kind(built, "StatefulSet"):
        assert sts["spec"]["replicas"] == 1  # one primary, one Redis: they do not scale
        [claim] = sts["spec"]["volumeClaimTemplates"]
        assert claim["spec"].get("storageClassName") == config.kubernetes.storage_class


def test_the_ingress_follows_the_config(tmp_path: Path) -> None:
    values = VARIANTS["ingress-tls"]
    host, config = make_k8s_host(tmp_path / "h", name="ingress", **values)
    [ingress] = _by_kind(kustomize(find_kubectl(), host), "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"hosts": ["play.example.org"], "secretName": "play-tls"}]
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == "play.example.org"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": f"{config.project}-backend", "port": {"name": "http"}}
    plain, _ = make_k8s_host(tmp_path / "plain", name="plain")
    assert not (yaml.safe_load((plain.root / "kubernetes" / "ingress.yaml").read_text()) or {})


# ---- rendering integration ------------------------------------------------------------------


def test_rendering_is_deterministic_and_check_covers_the_folder(tmp_path: Path) -> None:
    host, config = make_k8s_host(tmp_path / "h", **VARIANTS["ingress-tls"])
    again = render_host(host, config)
    assert diff_rendered(host, again) == {}
    assert again.files == render_host(host, config).files
    path = host.root / "kubernetes" / "backend.yaml"
    path.write_text(path.read_text().replace("replicas: 3", "replicas: 9"), encoding="utf-8")
    diffs = diff_rendered(host, render_host(host, config))
    assert list(diffs) == ["kubernetes/backend.yaml"]
    assert "-  replicas: 9" in diffs["kubernetes/backend.yaml"]


def test_init_runtime_kubernetes_and_render_check_through_the_cli(tmp_path: Path) -> None:
    env = clean_env(PIXSIM_HOST_HOME=str(tmp_path / "home"))
    root = tmp_path / "h"
    created = run_cli("init", str(root), "--yes", "--name", "cli-k8s", "--runtime", "kubernetes", env=env)
    assert created.returncode == 0, str(created)
    assert "kubernetes/kustomization.yaml" in created.stdout
    assert yaml.safe_load((root / "pixsim-host.yaml").read_text())["runtime"] == "kubernetes"
    assert run_cli("render", "--check", "--dir", str(root), env=env).returncode == 0
    (root / "kubernetes" / "database.yaml").write_text("# edited\n", encoding="utf-8")
    check = run_cli("render", "--check", "--dir", str(root), env=env)
    assert_clean_failure(check)
    assert "kubernetes/database.yaml" in check.stderr.splitlines()[0]
    bad = run_cli("init", str(tmp_path / "bad"), "--yes", "--name", "bad", "--runtime", "nomad", env=env)
    assert_clean_failure(bad)
    assert "runtime" in bad.stderr


def test_config_set_runtime_kubernetes_renders_the_folder(tmp_path: Path) -> None:
    env = clean_env(PIXSIM_HOST_HOME=str(tmp_path / "home"))
    root = tmp_path / "h"
    assert run_cli("init", str(root), "--yes", "--name", "docker-first", env=env).returncode == 0
    assert not (root / "kubernetes").exists()
    result = run_cli("config", "set", "runtime", "kubernetes", "--dir", str(root), env=env)
    assert result.returncode == 0, str(result)
    assert (root / "kubernetes" / "kustomization.yaml").is_file()
    for key, value in (("kubernetes.namespace", "games"), ("backend.replicas", "4"),
                       ("kubernetes.ingress_host", "play.example.org")):
        result = run_cli("config", "set", key, value, "--dir", str(root), env=env)
        assert result.returncode == 0, str(result)
    assert 'namespace: "games"' in (root / "kubernetes" / "kustomization.yaml").read_text()
    assert "replicas: 4" in (root / "kubernetes" / "backend.yaml").read_text()
    assert "  - ingress.yaml" in (root / "kubernetes" / "kustomization.yaml").read_text()
    assert run_cli("render", "--check", "--dir", str(root), env=env).returncode == 0


def test_a_template_override_in_the_host_directory_wins(tmp_path: Path) -> None:
    host, config = make_k8s_host(tmp_path / "h")
    override = host.templates_dir / "kubernetes" / "backend-env.yaml.j2"
    override.parent.mkdir(parents=True)
    packaged = (Path(__file__).resolve().parents[2] / "templates" / "kubernetes" / "backend-env.yaml.j2")
    override.write_text(packaged.read_text() + '  "EXTRA_SETTING": "on"\n', encoding="utf-8")
    rendered = render_host(host, config)
    assert '"EXTRA_SETTING": "on"' in rendered.files["kubernetes/backend-env.yaml"]
    override.write_text("key: [unclosed\n", encoding="utf-8")
    with pytest.raises(HostError, match="kubernetes/backend-env.yaml is not valid YAML"):
        render_host(host, config)


def test_pods_migrate_before_the_backend_and_workers_share_its_image_and_environment(
        tmp_path: Path) -> None:
    host, config = make_k8s_host(tmp_path / "h", name="jobs")
    built = kustomize(find_kubectl(), host)
    container, _ = _backend(built)
    [backend] = [obj for obj in _by_kind(built, "Deployment")
                 if obj["metadata"]["labels"]["app.kubernetes.io/component"] == "backend"]
    [migrate] = backend["spec"]["template"]["spec"]["initContainers"]
    assert migrate["args"] == ["python", "-m", "pixsim_reference_backend", "migrate"]
    assert migrate["image"] == container["image"]
    assert migrate["env"] == container["env"] and migrate["envFrom"] == container["envFrom"]
    [worker] = [obj for obj in _by_kind(built, "Deployment")
                if obj["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"]
    assert worker["metadata"]["name"] == f"{config.project}-worker"
    [runs] = worker["spec"]["template"]["spec"]["containers"]
    assert runs["args"] == ["python", "-m", "pixsim_reference_backend", "worker"]
    assert (runs["image"], runs["env"], runs["envFrom"]) == (container["image"], container["env"],
                                                            container["envFrom"])
    assert worker["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "worker"
