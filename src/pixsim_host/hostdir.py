"""Where a host lives on disk, and how a command finds it.

Kept free of heavy imports: every command resolves its host directory first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pixsim_host.errors import HostError

CONFIG_FILE = "pixsim-host.yaml"
SECRETS_FILE = ".env"
COMPOSE_FILE = "compose.yaml"
FRONTEND_FILE = "frontend.env"
PLUGINS_DIR = "plugins"
TEMPLATES_DIR = "templates"
STATE_DIR = ".pixsim-host"
DIR_ENV_VAR = "PIXSIM_HOST_DIR"


@dataclass(frozen=True)
class HostDir:
    """The files of one host. Paths only: nothing is read until asked."""

    root: Path

    @property
    def config_file(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def secrets_file(self) -> Path:
        return self.root / SECRETS_FILE

    @property
    def compose_file(self) -> Path:
        return self.root / COMPOSE_FILE

    @property
    def frontend_file(self) -> Path:
        return self.root / FRONTEND_FILE

    @property
    def plugins_dir(self) -> Path:
        return self.root / PLUGINS_DIR

    @property
    def templates_dir(self) -> Path:
        return self.root / TEMPLATES_DIR

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    def exists(self) -> bool:
        return self.config_file.is_file()


def resolve_host_dir(explicit: Path | None) -> HostDir:
    """The host named by ``--dir``, else ``$PIXSIM_HOST_DIR``, else the current directory."""
    if explicit is not None:
        origin, path = "--dir", explicit
    elif os.environ.get(DIR_ENV_VAR):
        origin, path = DIR_ENV_VAR, Path(os.environ[DIR_ENV_VAR])
    else:
        origin, path = "the current directory", Path.cwd()
    host = HostDir(path.expanduser().resolve())
    if not host.exists():
        raise HostError(
            f"no pixsim-host host in {host.root} (from {origin}): {CONFIG_FILE} is missing; "
            f"create one with `pixsim-host init DIR`, or point at one with --dir or {DIR_ENV_VAR}"
        )
    return host
