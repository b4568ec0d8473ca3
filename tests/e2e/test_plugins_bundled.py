"""Plugins bundled with the operator's checkout stay visible when the host installs its own.

PixSim7 reads plugin packages from one EXTERNAL_PLUGINS_DIR, and ships its own in the
checkout's ``packages/plugins``. A host configured with a checkout gives the backend a view
of both (``.pixsim-host/plugin-view``), so installing a package adds to the bundled ones
instead of hiding them. Shown on the native runtime with the reference backend run from a
checkout directory (``native.backend_workdir``), and on Docker with the reference image and
the checkout as ``backend.source`` (bind-mounted read-only, the view's links resolving
inside the container); the rendered binds and links are in
``tests/unit/test_plugins_real_shapes.py``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import docker
import httpx
import pytest
from e2e_helpers import Host as DockerHost
from e2e_helpers import (
    Run,
    host_maker,
    registry_home,  # noqa: F401 (an autouse fixture: this module's own host registry)
)
from native_support import FIXTURES, Hosts, assert_clean_failure, assert_ok

GREETER = '''"""A plugin bundled with the checkout: folder greeter, id bundled_greeter."""

manifest = {
    "id": "bundled_greeter",
    "name": "Bundled Greeter",
    "version": "1.0.0",
    "kind": "route",
    "dependencies": [],
}


def hello(request_info):
    return 200, {"hello": "from the checkout"}


routes = {"/hello": hello}
'''




class AnyHost(Protocol):
    dir: Path

    def run(self, *args: str | Path, **kwargs: Any) -> Run: ...

    def http(self) -> httpx.Client: ...


def make_checkout(base: Path) -> Path:
    checkout = base / "checkout"
    (checkout / "packages" / "plugins" / "greeter" / "backend").mkdir(parents=True)
    (checkout / "packages" / "plugins" / "greeter" / "backend" / "manifest.py").write_text(GREETER)
    (checkout / "packages" / "plugins" / "README.md").write_text("not a package\n")
    # Readable by the container's own user: a bind mount keeps the host's modes.
    for path in [base, *base.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    return checkout


def plugins_enabled(host: AnyHost) -> dict[str, bool]:
    with host.http() as http:
        answer = http.get("/api/v1/admin/plugins/list").json()
    return {str(p["id"]): bool(p["enabled"])
            for p in [*answer["feature_plugins"], *answer["route_plugins"]]}


def check_bundled_beside_installed(host: AnyHost, checkout: Path, scratch: Path) -> None:
    """The host is up with ``checkout`` as its code: its bundled plugin is there, and stays
    there through install, disable/enable by id and remove of a plugin of the host's own."""
    assert plugins_enabled(host)["bundled_greeter"] is True
    with host.http() as http:
        hello = http.get("/api/v1/plugins/bundled_greeter/hello")
    assert hello.status_code == 200 and hello.json() == {"hello": "from the checkout"}, hello.text

    # Installing a package adds to the bundled ones; it does not hide them.
    assert_ok(host.run("plugins", "install", str(FIXTURES / "hello_external")))
    enabled = plugins_enabled(host)
    assert enabled["bundled_greeter"] is True and enabled["hello_external"] is True, enabled
    view = host.dir / ".pixsim-host" / "plugin-view"
    assert sorted(p.name for p in view.iterdir()) == ["greeter", "hello_external"]

    # The bundled plugin is named by its id; its folder name is refused naming the id.
    by_folder = host.run("plugins", "disable", "greeter")
    assert_clean_failure(by_folder)
    assert "use bundled_greeter" in by_folder.stderr, str(by_folder)
    assert_ok(host.run("plugins", "disable", "bundled_greeter"))
    assert plugins_enabled(host)["bundled_greeter"] is False
    assert_ok(host.run("plugins", "enable", "bundled_greeter"))
    assert plugins_enabled(host)["bundled_greeter"] is True

    # A package with the bundled plugin's id would shadow it: refused, nothing installed.
    clash = scratch / "clash" / "my_greeter"
    shutil.copytree(checkout / "packages" / "plugins" / "greeter", clash)
    refused = host.run("plugins", "install", str(clash))
    assert_clean_failure(refused)
    assert "bundled with the checkout" in refused.stderr, str(refused)
    assert sorted(p.name for p in (host.dir / "plugins").iterdir()) == ["hello_external"]

    assert_ok(host.run("plugins", "remove", "hello_external"))
    enabled = plugins_enabled(host)
    assert enabled["bundled_greeter"] is True and "hello_external" not in enabled, enabled


def test_bundled_plugins_load_beside_installed_ones(hosts: Hosts) -> None:
    checkout = make_checkout(hosts.base / "code")
    host = hosts.init()
    assert_ok(host.run("config", "set", "native.backend_workdir", str(checkout)))
    host.up()
    check_bundled_beside_installed(host, checkout, hosts.base)


@pytest.fixture
def make_host(docker_client: docker.DockerClient, require_images: Callable[..., None],
              tmp_path: Path) -> Iterator[Callable[..., DockerHost]]:
    yield from host_maker(docker_client, require_images, tmp_path, DockerHost, prefix="e2e-bundled")


@pytest.mark.engine
def test_bundled_plugins_load_beside_installed_ones_on_docker(
        make_host: Callable[..., DockerHost], tmp_path: Path) -> None:
    checkout = make_checkout(tmp_path / "code")
    host = make_host()
    # The reference image runs the code, the checkout gives the bundled plugins; what a
    # checkout would otherwise default to (PixSim7's migrations, workers) is the reference's.
    assert_ok(host.run("config", "set", "backend.source", str(checkout)))
    assert_ok(host.run("config", "set", "backend.migrate",
                       '["python -m pixsim_reference_backend migrate"]'))
    assert_ok(host.run("config", "set", "backend.workers", "[]"))
    host.up_ok()
    check_bundled_beside_installed(host, checkout, tmp_path)
