"""Plugins bundled with the operator's checkout stay visible when the host installs its own.

PixSim7 reads plugin packages from one EXTERNAL_PLUGINS_DIR, and ships its own in the
checkout's ``packages/plugins``. A host configured with a checkout gives the backend a view
of both (``.pixsim-host/plugin-view``), so installing a package adds to the bundled ones
instead of hiding them. Shown on the native runtime with the reference backend run from a
checkout directory (``native.backend_workdir``); the Docker side of the same view is in
``tests/unit/test_plugins_real_shapes.py`` (the rendered binds and links).
"""

from __future__ import annotations

import shutil
from pathlib import Path

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




def make_checkout(base: Path) -> Path:
    checkout = base / "checkout"
    (checkout / "packages" / "plugins" / "greeter" / "backend").mkdir(parents=True)
    (checkout / "packages" / "plugins" / "greeter" / "backend" / "manifest.py").write_text(GREETER)
    (checkout / "packages" / "plugins" / "README.md").write_text("not a package\n")
    return checkout


def test_bundled_plugins_load_beside_installed_ones(hosts: Hosts) -> None:
    checkout = make_checkout(hosts.base)
    host = hosts.init()
    assert_ok(host.run("config", "set", "native.backend_workdir", str(checkout)))
    host.up()
    assert host.plugins_enabled()["bundled_greeter"] is True
    with host.http() as http:
        hello = http.get("/api/v1/plugins/bundled_greeter/hello")
    assert hello.status_code == 200 and hello.json() == {"hello": "from the checkout"}, hello.text

    # Installing a package adds to the bundled ones; it does not hide them.
    assert_ok(host.run("plugins", "install", str(FIXTURES / "hello_external")))
    enabled = host.plugins_enabled()
    assert enabled["bundled_greeter"] is True and enabled["hello_external"] is True, enabled
    view = host.dir / ".pixsim-host" / "plugin-view"
    assert sorted(p.name for p in view.iterdir()) == ["greeter", "hello_external"]

    # The bundled plugin is named by its id; its folder name is refused naming the id.
    by_folder = host.run("plugins", "disable", "greeter")
    assert_clean_failure(by_folder)
    assert "use bundled_greeter" in by_folder.stderr, str(by_folder)
    assert_ok(host.run("plugins", "disable", "bundled_greeter"))
    assert host.plugins_enabled()["bundled_greeter"] is False
    assert_ok(host.run("plugins", "enable", "bundled_greeter"))
    assert host.plugins_enabled()["bundled_greeter"] is True

    # A package with the bundled plugin's id would shadow it: refused, nothing installed.
    clash = hosts.base / "clash" / "my_greeter"
    shutil.copytree(checkout / "packages" / "plugins" / "greeter", clash)
    refused = host.run("plugins", "install", str(clash))
    assert_clean_failure(refused)
    assert "bundled with the checkout" in refused.stderr, str(refused)
    assert sorted(p.name for p in (host.dir / "plugins").iterdir()) == ["hello_external"]

    assert_ok(host.run("plugins", "remove", "hello_external"))
    enabled = host.plugins_enabled()
    assert enabled["bundled_greeter"] is True and "hello_external" not in enabled, enabled
