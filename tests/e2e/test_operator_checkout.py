"""A host of the operator's own checkout on Docker: the image is built from it, rebuilt (and
migrated again) when its content changes, and its services come from its declarations."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
import yaml
from checkout_support import make_checkout
from e2e_helpers import (
    Host,
    assert_ok,
    cli,
    containers,
    destroy,
    free_port,
    registry_home,  # noqa: F401 (an autouse fixture: this module's own host registry)
    unique_name,
)

pytestmark = pytest.mark.engine


@pytest.fixture
def checkout_host(docker_client: docker.DockerClient, require_images: Callable[..., None],
                  tmp_path: Path) -> Iterator[Host]:
    require_images("pgvector/pgvector:pg16", "redis:7-alpine", "python:3.11-slim")
    source = make_checkout(tmp_path / "pixsim7")
    subprocess.run(["git", "init", "-q", str(source)], check=True)
    subprocess.run(["git", "-C", str(source), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(source), "-c", "user.name=t", "-c", "user.email=t@t", "commit",
                    "-q", "-m", "one"], check=True)
    name = unique_name("co")
    assert_ok(cli("init", tmp_path / "host", "--yes", "--name", name, "--port", str(free_port()),
                  "--source", source, "--dockerfile", "Dockerfile.host"))
    host = Host.load(tmp_path / "host")
    image = host.config["backend"]["image"]
    try:
        yield host
    finally:
        destroy(docker_client, host)
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(image, force=True)


def test_the_image_is_built_from_the_checkout_and_rebuilt_when_it_changes(
        checkout_host: Host, docker_client: docker.DockerClient) -> None:
    host = checkout_host
    config = yaml.safe_load(host.config_file.read_text())
    source = Path(config["backend"]["source"])
    assert config["backend"]["migrate"] == ["python scripts/migrate_all.py --scope all"]
    assert config["backend"]["workers"] == ["worker"]  # what the checkout declares of upstream's set
    first = host.up_ok()
    assert set(first["services"]) == {"backend", "db", "redis", "worker"}
    image = docker_client.images.get(config["backend"]["image"])
    running = containers(docker_client, host)
    assert running["backend"].image.id == image.id == running["worker"].image.id
    migrated = (host.dir / ".pixsim-host" / "migrations.json").read_text()
    # No change: no build, no migration, the same containers.
    assert_ok(host.run("up"))
    assert docker_client.images.get(config["backend"]["image"]).id == image.id
    assert (host.dir / ".pixsim-host" / "migrations.json").read_text() == migrated
    # A new commit in the checkout: a new image, migrations again, the backend replaced.
    (source / "VERSION").write_text("2\n")
    subprocess.run(["git", "-C", str(source), "-c", "user.name=t", "-c", "user.email=t@t", "commit",
                    "-q", "-am", "two"], check=True)
    again = host.up_ok()
    rebuilt = docker_client.images.get(config["backend"]["image"])
    assert rebuilt.id != image.id
    assert again["actions"]["backend"] == "recreated"
    assert (host.dir / ".pixsim-host" / "migrations.json").read_text() != migrated
