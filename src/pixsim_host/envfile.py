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

from pixsim_host import safeload
from pixsim_host.errors import HostError
from pixsim_host.fsutil import atomic_write

SECRET_KEYS = ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "SECRET_KEY")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "$": "$"}
MAX_ENV_BYTES = 64 * 1024
_PLAIN = re.compile(r"[A-Za-z0-9_\-.~+/=:@,%]*")
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
    lines += [f"{key}={_quoted(values[key])}" for key in sorted(values)]
    atomic_write(path, "\n".join(lines) + "\n", mode=0o600)


def _quoted(value: str) -> str:
    """``value`` as parse_env (and Compose) will read it back unchanged."""
    if _PLAIN.fullmatch(value):
        return value
    if "'" not in value and "\n" not in value:
        return f"'{value}'"
    escaped = "".join({"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\", '"': '\\"'}
                      .get(char, char) for char in value)
    if "$" in escaped:
        raise HostError("a secret holds both a quote or line break and a $, which a .env file "
                        "cannot hold for Compose; choose another value")
    return f'"{escaped}"'


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
    fix = "restore it from a backup made with --include-secrets"
    # Not the codec's message: a broken secrets file is no place to echo fragments of it.
    text = safeload.read_text(path, "the secrets file", fix, limit=MAX_ENV_BYTES)
    assert text is not None
    values = parse_env(text, path.name)
    missing = [key for key in SECRET_KEYS if not values.get(key)]
    if missing:
        raise HostError(
            f"{path.name} lacks {', '.join(missing)}; restore the file from a backup "
            "(a host's secrets are never regenerated behind its data's back)"
        )
    return values


def parse_env(text: str, name: str) -> dict[str, str]:
    """``KEY=VALUE`` lines read the way Compose and dotenv read them.

    ``export KEY=...`` is allowed; a double-quoted value has its quotes removed and its
    escapes (``\\n``, ``\\"``, ``\\\\``...) applied and may span lines; a single-quoted
    one is literal; an unquoted one ends at `` #`` (a comment) and is trimmed. A key set
    twice is an error (which one wins differs between tools), and so is a ``$`` outside
    single quotes, which Compose would replace by a variable. Messages name lines, never
    values: this file holds secrets.
    """
    values: dict[str, str] = {}
    first_line: dict[str, int] = {}
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        number, line = index + 1, lines[index].strip()
        index += 1
        if not line or line.startswith("#"):
            continue
        if line.startswith("export ") or line.startswith("export\t"):
            line = line[len("export"):].lstrip()
        key, sep, rest = line.partition("=")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key):
            raise HostError(f"{name} line {number} is not KEY=VALUE; fix or restore the file")
        rest = rest.lstrip()
        if rest.startswith("'"):
            closing = rest.find("'", 1)
            if closing < 0:
                raise HostError(f"{name} line {number}: the single quote is never closed; "
                                "fix or restore the file")
            value, after = rest[1:closing], rest[closing + 1:]
        elif rest.startswith('"'):
            value, after, index = _double_quoted(rest, lines, index, name, number)
        else:
            value = re.split(r"\s#", rest, maxsplit=1)[0].strip()
            after = ""
            if "$" in value:
                raise HostError(_dollar(name, number))
            if value[:1] in ("'", '"'):
                raise HostError(f"{name} line {number}: a quote inside an unquoted value; "
                                "fix or restore the file")
        after = after.strip()
        if after and not after.startswith("#"):
            raise HostError(f"{name} line {number} has text after the closing quote; "
                            "fix or restore the file")
        if key in values:
            raise HostError(f"{name} sets {key} twice (lines {first_line[key]} and {number}); "
                            "keep the right one and remove the other")
        values[key], first_line[key] = value, number
    return values


def _double_quoted(rest: str, lines: list[str], index: int, name: str,
                   number: int) -> tuple[str, str, int]:
    """A double-quoted value starting at ``rest`` (which may continue on the next lines):
    the value, what follows the closing quote, the index of the next line to read."""
    chunks: list[str] = []
    text, position = rest, 1
    while True:
        char = text[position] if position < len(text) else None
        if char is None:
            if index >= len(lines):
                raise HostError(f"{name} line {number}: the double quote is never closed; "
                                "fix or restore the file")
            chunks.append("\n")
            text, position, index = lines[index], 0, index + 1
            continue
        if char == '"':
            return "".join(chunks), text[position + 1:], index
        if char == "\\" and position + 1 < len(text):
            following = text[position + 1]
            chunks.append(_ESCAPES.get(following, "\\" + following))
            position += 2
            continue
        if char == "$":
            raise HostError(_dollar(name, number))
        chunks.append(char)
        position += 1


def _dollar(name: str, number: int) -> str:
    return (f"{name} line {number}: a value with $ outside single quotes, which Compose would "
            "replace by a variable; put the value in single quotes ('...')")


def redact(text: str, secret_values: Iterable[str]) -> str:
    """``text`` with every secret value replaced by a mask (for logs and errors we print)."""
    for value in sorted((v for v in secret_values if len(v) >= 6), key=len, reverse=True):
        text = text.replace(value, MASK)
    return text
