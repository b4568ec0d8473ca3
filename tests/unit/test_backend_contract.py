"""The backend's environment (the PixSim7 contract) is the same on Docker, native and
Kubernetes: the same keys with the same values, once each runtime's secret references are
resolved, apart from where things are (hosts, ports, paths inside a container or on disk).

Compose and Kubernetes are read back from the files as rendered; the native runtime from
the environment it would start the backend with. Secrets stay out of the rendered files.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

from pixsim_host.config import HostConfig, parse_config
from pixsim_host.envfile import generate_secrets
from pixsim_host.hostdir import HostDir
from pixsim_host.render import render_host
from pixsim_host.runtime.native import NativeRuntime

# Where the backend's dependencies and data are: differs per runtime by design.
LOCATIONS = ("PIXSIM_HOME", "EXTERNAL_PLUGINS_DIR")
URLS = ("DATABASE_URL", "REDIS_URL")
# Process settings the native runtime adds (a container gets them from its image/ports).
NATIVE_PROCESS = ("HOST", "PORT", "PYTHONUNBUFFERED")


HOST_ID = str(uuid.uuid4())


def _config(runtime: str) -> HostConfig:
    """The same host on each runtime."""
    return parse_config({
        "host_id": HOST_ID,
        "name": 'Grand "$HOME" Hall',
        "description": "déjà vu: ${SECRET_KEY} and $(SECRET_KEY) stay literal",
        "runtime": runtime,
        "model": "friend",
        "backend": {"port": 18123, "bind": "0.0.0.0", "cors_origins": ["https://a.example", "*"],
                    "env": {"PIXSIM_FEATURE": "on $x"}},
        "plugins": {"disabled": ["romance", "game_stealth"]},
        "native": {"postgres_port": 15999, "redis_port": 16999},
    }, source="the test config")


def _compose_env(tmp_path: Path, secrets: dict[str, str]) -> tuple[dict[str, str], str]:
    config = _config("docker")
    rendered = render_host(HostDir(tmp_path / "docker"), config).files
    compose = rendered["compose.yaml"]
    env = yaml.safe_load(compose)["services"]["backend"]["environment"]

    def resolve(value: str) -> str:
        # Compose's own rules: ${NAME:?msg} from .env, $$ a literal $.
        value = re.sub(r"\$\{([A-Z_]+):\?[^}]*\}", lambda m: secrets[m.group(1)], value)
        return value.replace("$$", "$")

    return {str(k): resolve(str(v)) for k, v in env.items()}, compose


def _kubernetes_env(tmp_path: Path, secrets: dict[str, str]) -> tuple[dict[str, str], str]:
    config = _config("kubernetes")
    rendered = render_host(HostDir(tmp_path / "kube"), config).files
    configmap = yaml.safe_load(rendered["kubernetes/backend-env.yaml"])["data"]
    deployment = next(doc for doc in yaml.safe_load_all(rendered["kubernetes/backend.yaml"])
                      if doc and doc.get("kind") == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    variables: dict[str, str] = {}
    for entry in container["env"]:
        if "valueFrom" in entry:
            variables[entry["name"]] = secrets[entry["valueFrom"]["secretKeyRef"]["key"]]
    env = dict(configmap)  # envFrom: never expanded
    for entry in container["env"]:
        if "value" in entry:
            # Kubernetes expands $(NAME) from earlier variables; $$ is a literal $.
            value = re.sub(r"(?<!\$)\$\(([A-Z_]+)\)", lambda m: variables[m.group(1)], entry["value"])
            env[entry["name"]] = value.replace("$$", "$")
    env.update((k, v) for k, v in variables.items() if k == "SECRET_KEY")
    return env, "\n".join(rendered.values())


def _native_env(tmp_path: Path, secrets: dict[str, str]) -> dict[str, str]:
    host = HostDir(tmp_path / "native")
    host.root.mkdir()
    host.plugins_dir.mkdir()
    runtime = NativeRuntime(host, _config("native"), secrets)
    return {k: v for k, v in runtime.backend_environment().items() if k not in NATIVE_PROCESS}


def _where(url: str) -> tuple[Any, ...]:
    """A URL without its host and port: who connects, with what password, to which database."""
    parts = urlsplit(url)
    return parts.scheme, unquote(parts.username or ""), unquote(parts.password or ""), parts.path


def test_the_three_runtimes_give_the_backend_the_same_contract(tmp_path: Path) -> None:
    secrets = generate_secrets()
    compose, compose_text = _compose_env(tmp_path, secrets)
    kubernetes, kubernetes_text = _kubernetes_env(tmp_path, secrets)
    native = _native_env(tmp_path, secrets)

    assert set(compose) == set(kubernetes) == set(native), (
        set(compose) ^ set(kubernetes), set(compose) ^ set(native))
    for key in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "SERVER_ID", "SERVER_NAME",
                "SERVER_DESCRIPTION", "PLUGIN_ALLOWLIST", "PLUGIN_DENYLIST", "DEBUG",
                "CORS_ORIGINS", "PIXSIM_HOME", "PIXSIM_FEATURE"):
        assert key in compose
    for key in compose:
        if key in LOCATIONS:
            assert all(env[key].startswith("/") for env in (compose, kubernetes, native)), key
        elif key in URLS:
            assert _where(compose[key]) == _where(kubernetes[key]) == _where(native[key]), key
        else:
            assert compose[key] == kubernetes[key] == native[key], key
    assert compose["SERVER_NAME"] == 'Grand "$HOME" Hall'
    assert compose["PLUGIN_DENYLIST"] == '["romance","game_stealth"]'
    assert compose["PLUGIN_ALLOWLIST"] == "[]" and compose["DEBUG"] == "false"
    assert _where(native["DATABASE_URL"])[2] == secrets["POSTGRES_PASSWORD"]
    assert native["SECRET_KEY"] == secrets["SECRET_KEY"]


def test_secrets_stay_out_of_the_rendered_files(tmp_path: Path) -> None:
    secrets = generate_secrets()
    _, compose_text = _compose_env(tmp_path, secrets)
    _, kubernetes_text = _kubernetes_env(tmp_path, secrets)
    for text in (compose_text, kubernetes_text):
        for name in ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "SECRET_KEY"):
            assert secrets[name] not in text, name
    assert "${SECRET_KEY:?" in compose_text
    assert "$(PIXSIM_HOST_DB_PASSWORD)" in kubernetes_text
