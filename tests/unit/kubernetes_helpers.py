"""Helpers for the Kubernetes tests: hosts on that runtime, kubectl, a fake runner, a stub backend.

No cluster runs here. What a cluster would be asked is read back from :class:`FakeRunner`;
what kubectl does on the client side (``kubectl kustomize``, and its errors when the
cluster cannot be reached) runs for real when a kubectl is installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from pixsim_host.config import HostConfig, parse_config, save_config
from pixsim_host.envfile import generate_secrets, read_secrets, write_secrets
from pixsim_host.hostdir import HostDir
from pixsim_host.render import render_host, write_rendered
from pixsim_host.runtime.kubernetes import Completed

REQUIRED = os.environ.get("PIXSIM_HOST_E2E") == "required"


def make_k8s_host(root: Path, name: str = "k8s-host", **values: Any) -> tuple[HostDir, HostConfig]:
    """A rendered host on the Kubernetes runtime, without touching the machine's host registry."""
    config = parse_config(
        {"host_id": str(uuid.uuid4()), "name": name, "runtime": "kubernetes", **values},
        source="the test config",
    )
    host = HostDir(root)
    root.mkdir(parents=True)
    host.plugins_dir.mkdir()
    write_secrets(host.secrets_file, generate_secrets(), config.host_id)
    save_config(config, host.config_file)
    write_rendered(host, render_host(host, config))
    return host, config


def secrets_of(host: HostDir) -> dict[str, str]:
    return read_secrets(host.secrets_file)


def rendered_documents(host: HostDir) -> dict[str, list[dict[str, Any]]]:
    """Every YAML document of every rendered file under kubernetes/ (kustomization included)."""
    docs = {}
    for path in sorted((host.root / "kubernetes").glob("*.yaml")):
        docs[path.name] = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    return docs


# ---- a real kubectl, for `kubectl kustomize` and client-side errors ------------------------


def _kubectl_builds_outside_files(kubectl: str) -> bool:
    try:
        result = subprocess.run([kubectl, "kustomize", "--help"], capture_output=True, text=True,
                                timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and "--load-restrictor" in result.stdout


def find_kubectl() -> str:
    """kubectl with kustomize's --load-restrictor (1.21+); skip without one, unless CI."""
    kubectl = shutil.which("kubectl")
    if kubectl and _kubectl_builds_outside_files(kubectl):
        return kubectl
    why = ("no kubectl with `kustomize --load-restrictor` on PATH "
           "(scripts/ensure-kubectl.sh installs one)")
    if REQUIRED:
        pytest.fail(why)
    pytest.skip(why)


def kustomize(kubectl: str, host: HostDir) -> list[dict[str, Any]]:
    result = subprocess.run(
        [kubectl, "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(host.root / "kubernetes")],
        capture_output=True, text=True, timeout=120, env=kubectl_env(),
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def kubectl_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    env.update(extra)
    return env


# ---- a fake runner: the cluster's side of the conversation ---------------------------------


Handler = Callable[[list[str], "str | None"], "Completed | None"]


@dataclass
class FakeForward:
    lines: list[str]
    running: bool = True
    stderr: str = ""
    stopped: bool = False

    def readline(self, timeout: float) -> str | None:
        return self.lines.pop(0) if self.lines else None

    def alive(self) -> bool:
        return self.running

    def stop(self) -> str:
        self.stopped = True
        self.running = False
        return self.stderr


@dataclass
class FakeRunner:
    """Records every command; answers from ``handlers`` (first that returns), else success."""

    handlers: list[Handler] = field(default_factory=list)
    forward_port: int | None = None
    log_lines: list[str] = field(default_factory=list)
    has_kubectl: bool = True
    calls: list[list[str]] = field(default_factory=list)
    stdins: list[str | None] = field(default_factory=list)
    forwards: list[FakeForward] = field(default_factory=list)

    def available(self) -> bool:
        return self.has_kubectl

    def run(self, args: Sequence[str], *, stdin: str | None = None,
            timeout: float | None = None) -> Completed:
        argv = list(args)
        self.calls.append(argv)
        self.stdins.append(stdin)
        for handler in self.handlers:
            answer = handler(argv, stdin)
            if answer is not None:
                return answer
        return Completed(tuple(argv), 0, "", "")

    def stream(self, args: Sequence[str]) -> Iterator[str]:
        self.calls.append(list(args))
        self.stdins.append(None)
        yield from self.log_lines

    def start(self, args: Sequence[str]) -> FakeForward:
        self.calls.append(list(args))
        self.stdins.append(None)
        if self.forward_port is None:  # kubectl gives up at once, as with no running pod
            forward = FakeForward([], running=False, stderr=(
                "error: unable to forward port because pod is not running. Current status=Pending"))
            self.forwards.append(forward)
            return forward
        lines = [f"Forwarding from 127.0.0.1:{self.forward_port} -> 8000",
                 f"Forwarding from [::1]:{self.forward_port} -> 8000"]
        forward = FakeForward(lines)
        self.forwards.append(forward)
        return forward


def ok(stdout: str = "") -> Completed:
    return Completed((), 0, stdout, "")


def failed(stderr: str, code: int = 1) -> Completed:
    return Completed((), code, "", stderr)


def when(predicate: Callable[[list[str]], bool], answer: Completed) -> Handler:
    def handler(args: list[str], stdin: str | None) -> Completed | None:
        return answer if predicate(args) else None

    return handler


def verb(args: list[str]) -> list[str]:
    """The command after kubectl's global flags (--context C, -n NS)."""
    rest = args[1:]
    while rest and rest[0] in ("--context", "-n"):
        rest = rest[2:]
    return rest


def normalise(args: list[str]) -> list[str]:
    """Commands with their computed rollout timeouts replaced by a placeholder."""
    return ["--timeout=Ns" if a.startswith("--timeout=") and a != "--timeout=300s" else a
            for a in args]


# ---- a stub backend: the host contract over HTTP -------------------------------------------


@dataclass
class StubBackend:
    host_id: str
    server_id: str | None = None
    plugins: list[dict[str, Any]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answers(self) -> dict[str, Any]:
        return {
            "/api/v1/server/info": {"server_id": self.server_id or self.host_id, "server_name": "stub",
                                    "server_description": "", "version": "0", "api_version": "v1"},
            "/health": {"status": "healthy", "database": "connected", "redis": "connected",
                        "providers": []},
            "/ready": {"status": "ready", "database": "connected", "redis": "connected",
                       "plugins_loaded": len(self.plugins)},
            "/api/v1/version": {"api_version": "0.1.0", "build_sha": "stub", "build_time": "",
                                "server_time": ""},
            "/api/v1/admin/plugins/list": {"feature_plugins": self.plugins, "route_plugins": [],
                                           "total": len(self.plugins)},
        }


def start_stub(host_id: str, **kwargs: Any) -> StubBackend:
    stub = StubBackend(host_id, **kwargs)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            answer = stub.answers().get(self.path)
            body = json.dumps(answer if answer is not None else {"detail": "not found"}).encode()
            self.send_response(200 if answer is not None else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    stub.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=stub.server.serve_forever, daemon=True).start()
    return stub


# ---- a stub API server: just enough for kubectl to reach an RBAC refusal -------------------


def _resource(name: str, kind: str, namespaced: bool = True) -> dict[str, Any]:
    return {"name": name, "singularName": "", "namespaced": namespaced, "kind": kind,
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}


_DISCOVERY: dict[str, Any] = {
    # Asked first by some kubectl builds (a version dispatcher picks its client by it).
    "/version": {"major": "1", "minor": "32", "gitVersion": "v1.32.0", "platform": "linux/amd64"},
    "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
        {"name": group, "versions": [{"groupVersion": f"{group}/v1", "version": "v1"}],
         "preferredVersion": {"groupVersion": f"{group}/v1", "version": "v1"}}
        for group in ("apps", "networking.k8s.io")]},
    "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
        _resource("namespaces", "Namespace", namespaced=False), _resource("services", "Service"),
        _resource("configmaps", "ConfigMap"), _resource("secrets", "Secret"),
        _resource("persistentvolumeclaims", "PersistentVolumeClaim"), _resource("pods", "Pod")]},
    "/apis/apps/v1": {"kind": "APIResourceList", "groupVersion": "apps/v1", "resources": [
        _resource("deployments", "Deployment"), _resource("statefulsets", "StatefulSet")]},
    "/apis/networking.k8s.io/v1": {"kind": "APIResourceList", "groupVersion": "networking.k8s.io/v1",
                                   "resources": [_resource("ingresses", "Ingress")]},
}


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


@dataclass
class StubApi:
    """An API server whose user "jane" may discover but do nothing (RBAC's own wording).

    ``namespace_exists=False`` answers NotFound for the namespace, so kubectl is asked to
    create it (and is refused). Only discovery and refusals: nothing is ever stored.
    """

    namespace_exists: bool = True
    requests: list[str] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, method: str, path: str) -> tuple[int, dict[str, Any]]:
        path = path.split("?")[0]
        if method == "GET" and path in _DISCOVERY:
            return 200, _DISCOVERY[path]
        parts = path.strip("/").split("/")
        if len(parts) < 3 or parts[0] not in ("api", "apis"):
            return 404, _status(404, "NotFound", "the server could not find the requested resource")
        group = "" if parts[0] == "api" else parts[1]
        namespace = parts[parts.index("namespaces") + 1] if "namespaces" in parts[:-1] else None
        if parts[-2:] == ["namespaces", parts[-1]] and len(parts) == 4 and method == "GET":
            if not self.namespace_exists:
                return 404, _status(404, "NotFound", f'namespaces "{parts[-1]}" not found')
            resource, name, verb = "namespaces", parts[-1], "get"
        elif parts[-1] == "namespaces" and method == "POST":
            return 403, _status(403, "Forbidden", 'namespaces is forbidden: User "jane" cannot create '
                                'resource "namespaces" in API group "" at the cluster scope')
        else:
            resource = parts[-1] if namespace is None or parts[-2] == namespace else parts[-2]
            name = None if resource == parts[-1] else parts[-1]
            verb = {"GET": "list" if name is None else "get", "POST": "create", "PATCH": "patch",
                    "DELETE": "delete" if name else "deletecollection"}.get(method, "get")
        subject = f'{resource} "{name}"' if name else resource
        where = f'in the namespace "{namespace or name}"'
        return 403, _status(403, "Forbidden", f'{subject} is forbidden: User "jane" cannot {verb} '
                            f'resource "{resource}" in API group "{group}" {where}')


def start_stub_api(**kwargs: Any) -> StubApi:
    api = StubApi(**kwargs)

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            api.requests.append(f"{self.command} {self.path}")
            code, body = api.answer(self.command, self.path)
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    api.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=api.server.serve_forever, daemon=True).start()
    return api


def write_kubeconfig(path: Path, server: str, context: str = "prod") -> Path:
    path.write_text(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n"
        f"    server: {server}\ncontexts:\n- name: {context}\n"
        f"  context: {{cluster: c, user: jane}}\ncurrent-context: {context}\nusers:\n- name: jane\n"
        "  user: {token: not-a-real-token}\n", encoding="utf-8")
    return path
