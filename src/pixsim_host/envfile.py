"""The host's secrets: generated once, kept only in ``<dir>/.env`` with mode 0600.

Compose interpolates them into the rendered files (``${POSTGRES_PASSWORD}``), so no
rendered file, config file or command output ever holds their values.
"""

from __future__ import annotations

import re
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path

from pixsim_host.errors import HostError
from pixsim_host.fsutil import atomic_write

SECRET_KEYS = ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "SECRET_KEY")
_LINE = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")
MASK = "********"


def generate_secrets() -> dict[str, str]:
    # token_urlsafe: URL-safe, so the passwords go into DATABASE_URL/REDIS_URL unescaped,
    # and never contain '$', which Compose would try to interpolate.
    return {
        "POSTGRES_PASSWORD": secrets.token_urlsafe(32),
        "REDIS_PASSWORD": secrets.token_urlsafe(32),
        "SECRET_KEY": secrets.token_urlsafe(48),
    }


def write_secrets(path: Path, values: dict[str, str], host_id: str) -> None:
    lines = [
        f"# Secrets of pixsim-host host {host_id}.",
        "# Private to this host (mode 0600); never commit or share this file.",
    ]
    lines += [f"{key}={values[key]}" for key in sorted(values)]
    atomic_write(path, "\n".join(lines) + "\n", mode=0o600)


def read_secrets(path: Path) -> dict[str, str]:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise HostError(
            f"{path} is missing, so this host has no secrets; restore it from a backup made "
            "with --include-secrets, or create a new host with `pixsim-host init`"
        ) from None
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise HostError(
            f"{path} is readable by other users (mode {oct(stat.S_IMODE(info.st_mode))}); "
            f"run `chmod 600 {path}` and retry"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        # Not the codec's message: it quotes neither the bytes nor the line, but a
        # broken secrets file is no place to start echoing fragments of it.
        raise HostError(
            f"{path} is not UTF-8 text; restore it from a backup made with --include-secrets"
        ) from None
    except OSError as exc:
        raise HostError(
            f"cannot read {path}: {exc.strerror or exc}; it must be the host's secrets file "
            "(KEY=VALUE lines, mode 0600): restore it from a backup made with --include-secrets"
        ) from None
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line.strip())
        if not match:
            raise HostError(f"{path.name} line {number} is not KEY=VALUE; fix or restore the file")
        values[match.group(1)] = match.group(2)
    missing = [key for key in SECRET_KEYS if not values.get(key)]
    if missing:
        raise HostError(
            f"{path.name} lacks {', '.join(missing)}; restore the file from a backup "
            "(a host's secrets are never regenerated behind its data's back)"
        )
    return values


def redact(text: str, secret_values: Iterable[str]) -> str:
    """``text`` with every secret value replaced by a mask (for logs and errors we print)."""
    for value in sorted((v for v in secret_values if len(v) >= 6), key=len, reverse=True):
        text = text.replace(value, MASK)
    return text
