"""Settings read from the environment the way the upstream pydantic-settings model does.

Names are case-insensitive and unprefixed. Every problem is collected, so an operator sees
all of them at once instead of fixing one per restart.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .pg import mask_url, parse_pg_url
from .redis_client import parse_redis_url

PACKAGE_PLUGINS_DIR = Path(__file__).resolve().parent / "plugins"
PACKAGE_MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
DEFAULT_EXTERNAL_PLUGINS_DIR = "/srv/pixsim/external-plugins"
DEFAULT_PIXSIM_HOME = "/data"
MIN_SECRET_KEY_LENGTH = 16
PIXSIM_HOME_SUBDIRS = ("media", "uploads", "logs", "exports", "cache")
# Upstream's default origins: the local dev frontends and admin panel.
DEFAULT_CORS_ORIGINS = (
    "http://localhost:5173",
    "http://localhost:5174",
    "http://localhost:5175",
    "http://localhost:8001",
    "http://localhost:8002",
)

_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off"}


class SettingsError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass
class Settings:
    database_url: str
    redis_url: str
    secret_key: str = field(repr=False)
    server_id: str = "local"
    server_name: str = "Local Server"
    server_description: str = ""
    debug: bool = False
    plugin_allowlist: list[str] | None = None
    plugin_denylist: list[str] | None = None
    cors_origins: list[str] = field(default_factory=lambda: list(DEFAULT_CORS_ORIGINS))
    pixsim_home: Path = Path(DEFAULT_PIXSIM_HOME)
    feature_plugins_dir: Path = PACKAGE_PLUGINS_DIR
    external_plugins_dir: Path = Path(DEFAULT_EXTERNAL_PLUGINS_DIR)
    migrations_dir: Path = PACKAGE_MIGRATIONS_DIR
    worker_name: str = ""
    host: str = "0.0.0.0"
    port: int = 8000
    database_wait_seconds: float = 30.0
    build_sha: str | None = None
    build_time: str | None = None
    from_dotenv: tuple[str, ...] = ()  # names (never values) the working directory's .env set

    def describe(self) -> str:
        """One log line with no secrets in it."""
        line = (
            f"server_id={self.server_id} database={mask_url(self.database_url)} "
            f"redis={mask_url(self.redis_url)} home={self.pixsim_home} debug={self.debug}"
        )
        if self.from_dotenv:
            line += f" from ./{DOTENV_NAME}: {', '.join(self.from_dotenv)}"
        return line


def _ci_env(environ: Mapping[str, str]) -> dict[str, str]:
    # An exact upper-case name wins over other spellings, so the result does not depend on
    # the environment's ordering.
    result: dict[str, str] = {}
    for key, value in environ.items():
        lower = key.lower()
        if lower not in result or key == key.upper():
            result[lower] = value
    return result


def _parse_id_list(name: str, raw: str, problems: list[str]) -> list[str] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        problems.append(
            f"{name}: must be a JSON array of plugin ids, e.g. [\"romance\",\"game_stealth\"] "
            f"(a comma-separated value or an empty string is not accepted)"
        )
        return None
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(f"{name}: must be a JSON array of strings")
        return None
    return value or None


def _parse_cors(raw: str, problems: list[str]) -> list[str]:
    raw = raw.strip()
    if raw == "*":
        return ["*"]
    if raw.startswith("["):
        try:
            value = json.loads(raw)
        except ValueError:
            problems.append("CORS_ORIGINS: looks like a JSON array but is not valid JSON")
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            problems.append("CORS_ORIGINS: JSON value must be an array of strings")
            return []
        return [v.strip() for v in value if v.strip()]
    return [part.strip() for part in raw.split(",") if part.strip()]


DOTENV_NAME = ".env"
_DOTENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")
_DOTENV_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"'}


def parse_dotenv(text: str) -> dict[str, str]:
    """``KEY=VALUE`` lines as python-dotenv reads them: comments, ``export``, quotes."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        match = _DOTENV_LINE.match(line)
        if match is None or line.lstrip().startswith("#"):
            continue
        key, raw = match.groups()
        if len(raw) >= 2 and raw[0] == raw[-1] == "'":
            value = raw[1:-1]
        elif len(raw) >= 2 and raw[0] == raw[-1] == '"':
            value = re.sub(r"\\(.)", lambda m: _DOTENV_ESCAPES.get(m.group(1), m.group(0)),
                           raw[1:-1])
        else:
            value = re.sub(r"\s+#.*$", "", raw)
        values[key] = value
    return values


def dotenv_additions(environ: Mapping[str, str], directory: Path) -> dict[str, str]:
    """What ``directory/.env`` adds to ``environ``: upstream's settings read the working
    directory's .env, and the environment wins (names compared case-insensitively)."""
    try:
        text = (directory / DOTENV_NAME).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    present = {key.lower() for key in environ}
    return {k: v for k, v in parse_dotenv(text).items() if k.lower() not in present}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from the environment; raise SettingsError listing every problem.

    Without ``environ``: the process environment plus what the working directory's .env
    adds, as upstream (so a stray .env changes what a backend does: hosts must know).
    """
    if environ is None:
        added = dotenv_additions(os.environ, Path.cwd())
        environ = {**os.environ, **added}
    else:
        added = {}
    env = _ci_env(environ)
    problems: list[str] = []

    database_url = env.get("database_url", "")
    if not database_url:
        problems.append("DATABASE_URL: required (postgresql://user:pass@host:5432/db)")
    elif not database_url.startswith("postgresql://"):
        problems.append("DATABASE_URL: scheme must be postgresql://")
    else:
        try:
            parse_pg_url(database_url)
        except ValueError as exc:
            problems.append(f"DATABASE_URL: {exc}")

    redis_url = env.get("redis_url", "")
    if not redis_url:
        problems.append("REDIS_URL: required (redis://[:password@]host:6379/0)")
    else:
        try:
            parse_redis_url(redis_url)
        except ValueError as exc:
            problems.append(f"REDIS_URL: {exc}")

    secret_key = env.get("secret_key", "")
    if not secret_key:
        problems.append("SECRET_KEY: required")
    elif len(secret_key) < MIN_SECRET_KEY_LENGTH:
        problems.append(f"SECRET_KEY: too short (at least {MIN_SECRET_KEY_LENGTH} characters)")

    debug = False
    if "debug" in env:
        raw = env["debug"].strip().lower()
        if raw in _TRUE:
            debug = True
        elif raw in _FALSE:
            debug = False
        else:
            problems.append("DEBUG: must be a boolean (true/false)")

    allowlist = denylist = None
    if "plugin_allowlist" in env:
        allowlist = _parse_id_list("PLUGIN_ALLOWLIST", env["plugin_allowlist"], problems)
    if "plugin_denylist" in env:
        denylist = _parse_id_list("PLUGIN_DENYLIST", env["plugin_denylist"], problems)

    cors = (_parse_cors(env["cors_origins"], problems) if "cors_origins" in env
            else list(DEFAULT_CORS_ORIGINS))

    port = 8000
    if "port" in env:
        try:
            port = int(env["port"])
            if not 0 < port < 65536:
                raise ValueError
        except ValueError:
            problems.append("PORT: must be an integer between 1 and 65535")

    wait = 30.0
    if "database_wait_seconds" in env:
        try:
            wait = float(env["database_wait_seconds"])
            if wait < 0:
                raise ValueError
        except ValueError:
            problems.append("DATABASE_WAIT_SECONDS: must be a non-negative number")

    pixsim_home = Path(env.get("pixsim_home") or DEFAULT_PIXSIM_HOME)
    try:
        pixsim_home.mkdir(parents=True, exist_ok=True)
        for sub in PIXSIM_HOME_SUBDIRS:
            (pixsim_home / sub).mkdir(exist_ok=True)
    except OSError as exc:
        problems.append(f"PIXSIM_HOME: cannot create {pixsim_home}: {exc.strerror or exc}")

    feature_dir = Path(env.get("feature_plugins_dir") or PACKAGE_PLUGINS_DIR)
    if not feature_dir.is_dir():
        problems.append(f"FEATURE_PLUGINS_DIR: {feature_dir} is not a directory")
    external_dir = Path(env.get("external_plugins_dir") or DEFAULT_EXTERNAL_PLUGINS_DIR)
    migrations_dir = Path(env.get("migrations_dir") or PACKAGE_MIGRATIONS_DIR)
    if not migrations_dir.is_dir():
        problems.append(f"MIGRATIONS_DIR: {migrations_dir} is not a directory")

    host = env.get("host") or "0.0.0.0"
    server_id = env.get("server_id", "local")
    if not server_id.strip():
        problems.append("SERVER_ID: must not be empty (it is this host's identity)")

    if problems:
        raise SettingsError(problems)
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        secret_key=secret_key,
        server_id=server_id,
        server_name=env.get("server_name", "Local Server"),
        server_description=env.get("server_description", ""),
        debug=debug,
        plugin_allowlist=allowlist,
        plugin_denylist=denylist,
        cors_origins=cors,
        pixsim_home=pixsim_home,
        feature_plugins_dir=feature_dir,
        external_plugins_dir=external_dir,
        migrations_dir=migrations_dir,
        worker_name=env.get("worker_name", ""),
        host=host,
        port=port,
        database_wait_seconds=wait,
        build_sha=env.get("build_sha") or env.get("git_sha") or None,
        build_time=env.get("build_time") or None,
        from_dotenv=tuple(sorted(added)),
    )
