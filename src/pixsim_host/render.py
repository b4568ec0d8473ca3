"""Render a host's generated files from its config.

Rendering never sees a secret value: templates get ``${NAME:?...}`` references that
Compose (or our runtime) resolves from ``.env`` at run time. Every value reaches
YAML through a quoting filter, so no name or description can change a file's
structure, and output is byte-for-byte deterministic for the same config.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from pixsim_host import kubernetes_manifests, tls
from pixsim_host.backend_env import SECRET_BEARING, Endpoints, backend_environment
from pixsim_host.config import HostConfig
from pixsim_host.envfile import SECRET_KEYS
from pixsim_host.errors import HostError
from pixsim_host.fsutil import atomic_write
from pixsim_host.hostdir import COMPOSE_FILE, FRONTEND_FILE, HostDir
from pixsim_host.journal import fault_point
from pixsim_host.plugins import compose_plugin_mounts
from pixsim_host.services import resolve_http_services, resolve_workers, service_urls

INPUTS_KEY = "_inputs"
# Record entries of files being written right now (see write_rendered).
PENDING_PREFIX = "_pending/"
# Where compose.yaml mounts the backend's data volume and the host's plugins/.
COMPOSE_BACKEND_HOME = "/data"
COMPOSE_PLUGINS_DIR = "/srv/pixsim/external-plugins"
# Generated file -> template name. The template may be overridden per host.
GENERATED: dict[str, str] = {
    COMPOSE_FILE: "compose.yaml.j2",
    FRONTEND_FILE: "frontend.env.j2",
}


def _renders_kubernetes(config: HostConfig) -> bool:
    """Whether the host has the Kubernetes folder: what is rendered depends on the runtime
    before any runtime exists (init, config set, render), so this is read here."""
    return config.runtime == "kubernetes"


# The TLS proxy's configuration, rendered when tls.mode is not off.
TLS_GENERATED: dict[str, str] = {tls.CADDYFILE: "Caddyfile.j2"}


def generated_files(config: HostConfig) -> dict[str, str]:
    """The generated files of this host: the Kubernetes folder too on that runtime, the
    proxy's Caddyfile with TLS."""
    files = dict(GENERATED)
    if _renders_kubernetes(config):
        files.update(kubernetes_manifests.GENERATED)
    if tls.enabled(config):
        files.update(TLS_GENERATED)
    return files


def packaged_templates() -> Path:
    """The templates shipped with pixsim-host (inside the wheel, or the checkout's)."""
    shipped = resources.files("pixsim_host") / "templates"
    if shipped.is_dir():
        return Path(str(shipped))
    checkout = Path(__file__).resolve().parents[2] / "templates"
    if checkout.is_dir():
        return checkout
    raise HostError("pixsim-host's templates are missing from its installation; reinstall it")


def yaml_quote(value: Any) -> str:
    """A YAML scalar (double-quoted for text) that loads back as exactly ``value``."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(yaml_quote(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{yaml_quote(k)}: {yaml_quote(v)}" for k, v in value.items()) + "}"
    text = str(value)
    dumped = yaml.dump(text, Dumper=yaml.SafeDumper, default_style='"', width=2**31 - 1,
                       allow_unicode=True)
    return dumped.rstrip("\n").removesuffix("\n...")


def compose_quote(value: Any) -> str:
    """Quote for a Compose file: ``$`` is escaped too, so values are never interpolated."""
    if isinstance(value, list | tuple):
        return "[" + ", ".join(compose_quote(item) for item in value) + "]"
    if isinstance(value, str):
        value = value.replace("$", "$$")
    return yaml_quote(value)


def dotenv_quote(value: Any) -> str:
    """A dotenv value Vite and Compose read back unchanged (single quotes: no expansion)."""
    text = str(value)
    if "'" in text or "\n" in text:
        raise HostError(f"{text!r} cannot be written to a .env file; remove quotes and line breaks")
    return f"'{text}'"


def _comment_text(value: Any) -> str:
    return " ".join(str(value).split())


def secret_ref(name: str) -> str:
    return "${" + name + ":?is not set; pixsim-host reads it from this host's .env}"


@dataclass(frozen=True)
class Rendered:
    files: dict[str, str]


def template_context(config: HostConfig) -> dict[str, Any]:
    secret = {key: secret_ref(key) for key in SECRET_KEYS}
    where = Endpoints(
        # User-controlled parts are validated SQL names; only the secret is interpolated.
        database_url=(f"postgresql://{config.database.user}:{secret['POSTGRES_PASSWORD']}"
                      f"@db:5432/{config.database.name}"),
        redis_url=f"redis://:{secret['REDIS_PASSWORD']}@redis:6379/0",
        secret_key=secret["SECRET_KEY"],
        home=COMPOSE_BACKEND_HOME,
        plugins_dir=COMPOSE_PLUGINS_DIR,
    )
    return {
        "host": config,
        "secret": secret,
        "backend_env": backend_environment(config, where),
        "secret_bearing": SECRET_BEARING,
        # Inside the backend's image its environment's interpreter is `python`.
        "workers": resolve_workers(config, python="python"),
        "http_services": resolve_http_services(config, python="python"),
        "service_urls": service_urls(config),
    }


def render_host(host: HostDir, config: HostConfig) -> Rendered:
    """Every generated file's content, in memory; nothing is written."""
    import jinja2

    loaders: list[jinja2.BaseLoader] = []
    if host.templates_dir.is_dir():
        loaders.append(jinja2.FileSystemLoader(str(host.templates_dir)))
    loaders.append(jinja2.FileSystemLoader(str(packaged_templates())))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )
    env.filters.update(
        yaml=yaml_quote,
        compose=compose_quote,
        dotenv=dotenv_quote,
        dotenv_comment=_comment_text,
        tojson=lambda value: json.dumps(value, ensure_ascii=False, separators=(",", ":")),
    )
    context = template_context(config)
    # The plugin binds depend on the host directory (a checkout's view lives in it).
    context["plugin_mounts"] = compose_plugin_mounts(host, config, COMPOSE_PLUGINS_DIR)
    if _renders_kubernetes(config):
        context["k8s"] = kubernetes_manifests.template_context(config)
    if tls.enabled(config):
        context["tls"] = tls.caddyfile_context(config)
    files: dict[str, str] = {}
    for output, template_name in generated_files(config).items():
        try:
            files[output] = env.get_template(template_name).render(context)
        except jinja2.TemplateError as exc:
            where = getattr(exc, "lineno", None)
            line = f" line {where}" if where else ""
            raise HostError(
                f"template {template_name}{line} failed to render: {exc.message or exc}; "
                f"fix or remove the override in {host.templates_dir}"
            ) from None
        except HostError:
            raise  # a filter refused a value: its message already says what to do
        except UnicodeDecodeError:
            raise HostError(
                f"template {template_name} is not UTF-8 text; fix or remove the override in "
                f"{host.templates_dir}"
            ) from None
        except RecursionError:
            raise HostError(
                f"template {template_name} includes or extends itself without end; fix or remove "
                f"the override in {host.templates_dir}"
            ) from None
        except (ArithmeticError, AttributeError, LookupError, TypeError, ValueError) as exc:
            # An override is code: its expressions can fail like any Python expression.
            raise HostError(
                f"template {template_name} failed to render: {type(exc).__name__}: {exc}; "
                f"fix or remove the override in {host.templates_dir}"
            ) from None
    _check_compose(files[COMPOSE_FILE])
    for output in kubernetes_manifests.GENERATED:
        if output in files:
            _check_yaml(output, files[output])
    return Rendered(files)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error on one line: PyYAML's own text spans several and quotes the source."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return f"{exc.problem or exc.context or 'invalid YAML'}{where}"
    return " ".join(str(exc).split())


# libyaml's safe loader when PyYAML has it: checking our own rendered output with the pure
# Python one was about half of rendering's time.
_FAST_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _check_yaml(name: str, text: str) -> None:
    try:
        list(yaml.load_all(text, Loader=_FAST_LOADER))
    except yaml.YAMLError as exc:
        raise HostError(
            f"the rendered {name} is not valid YAML ({yaml_problem(exc)}); "
            "check your template overrides"
        ) from None


def _check_compose(text: str) -> None:
    try:
        data = yaml.load(text, Loader=_FAST_LOADER)
    except yaml.YAMLError as exc:
        raise HostError(
            f"the rendered {COMPOSE_FILE} is not valid YAML ({yaml_problem(exc)}); "
            "check your template overrides"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("services"), dict):
        raise HostError(f"the rendered {COMPOSE_FILE} has no services; check your template overrides")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _record_file(host: HostDir) -> Path:
    return host.state_dir / "rendered.json"


def _recorded(host: HostDir) -> dict[str, str]:
    try:
        data = json.loads(_record_file(host).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _on_disk(path: Path) -> str | None:
    """A generated file's text as it is on disk, None when there is none.

    Bytes that are not UTF-8 are replaced, so a mangled file reads as edited by hand
    (reported, or overwritten by `render`) instead of failing every command.
    """
    if path.is_file():
        try:
            return path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise HostError(f"cannot read {path}: {exc.strerror or exc}; check its permissions") from None
    if path.exists():
        raise HostError(
            f"{path} is not a file, so it cannot be rendered; move it out of the way and run "
            "`pixsim-host render`"
        )
    return None


def write_rendered(host: HostDir, rendered: Rendered) -> list[str]:
    """Write the files that changed; return their names.

    The digest of what was written is recorded, so later commands can tell a file that
    is merely stale (re-render it) from one a user edited by hand (respect it).
    """
    changed = [name for name, content in rendered.files.items()
               if _on_disk(host.root / name) != content]
    # What is about to be written is recorded first: a command killed between two files
    # leaves files the next one recognises as its own (re-rendered), not as hand edits.
    _update_record(host, {PENDING_PREFIX + name: _digest(rendered.files[name]) for name in changed})
    for name in changed:
        atomic_write(host.root / name, rendered.files[name], mode=0o644)
        fault_point("render.file-written")
    _update_record(host, {name: _digest(content) for name, content in rendered.files.items()},
                   drop=[PENDING_PREFIX + name for name in changed])
    return changed


def apply_config(host: HostDir, config: HostConfig, rendered: Rendered | None = None) -> list[str]:
    """Make ``config`` the host's: rendered first (a value that cannot render writes
    nothing), then pixsim-host.yaml saved, then the generated files that changed written.
    Returns their names. ``rendered``: what the caller rendered from ``config`` already."""
    from pixsim_host.config import save_config

    rendered = rendered or render_host(host, config)
    save_config(config, host.config_file)
    # Killed here, the config is newer than its rendered files: the next command's
    # refresh_rendered sees that and renders them.
    fault_point("config.saved")
    return write_rendered(host, rendered)


def _inputs_digest(host: HostDir) -> str:
    """What rendering depends on: the config file, the templates, pixsim-host's version."""
    from pixsim_host import __version__

    digest = hashlib.sha256(__version__.encode())
    digest.update(host.config_file.read_bytes())
    for template in sorted({**GENERATED, **kubernetes_manifests.GENERATED, **TLS_GENERATED}.values()):
        override = host.templates_dir / template
        source = override if override.is_file() else packaged_templates() / template
        digest.update(template.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()


def refresh_rendered(host: HostDir, config: HostConfig) -> tuple[list[str], list[str]]:
    """Bring generated files up to date before a command uses them.

    Returns (re-rendered, edited by hand). A hand-edited file is left as it is, since
    what the user sees in compose.yaml is what runs. When nothing that rendering reads
    has changed and the files are as last written, Jinja2 is not even imported.
    """
    inputs = _inputs_digest(host)
    recorded = _recorded(host)
    if recorded.get(INPUTS_KEY) == inputs and all(
        (current := _on_disk(host.root / name)) is not None and recorded.get(name) == _digest(current)
        for name in generated_files(config)
    ):
        return [], []
    rendered = render_host(host, config)
    recorded = _recorded(host)
    stale: dict[str, str] = {}
    edited: list[str] = []
    for name, content in rendered.files.items():
        path = host.root / name
        current = _on_disk(path)
        if current == content:
            continue
        if current is None or _digest(current) in (recorded.get(name),
                                                   recorded.get(PENDING_PREFIX + name)):
            stale[name] = content
        else:
            edited.append(name)
    if stale:
        write_rendered(host, Rendered(stale))
    if not edited:
        _update_record(host, {INPUTS_KEY: inputs})
    return sorted(stale), edited


def _update_record(host: HostDir, entries: dict[str, str], drop: list[str] | None = None) -> None:
    previous = _recorded(host)
    record = {key: value for key, value in {**previous, **entries}.items() if key not in (drop or ())}
    if record != previous:
        atomic_write(_record_file(host), json.dumps(record, indent=2, sort_keys=True) + "\n")


def diff_rendered(host: HostDir, rendered: Rendered) -> dict[str, str]:
    """Per file that differs on disk from what would be rendered, a unified diff."""
    diffs: dict[str, str] = {}
    for name, content in rendered.files.items():
        path = host.root / name
        current = _on_disk(path) or ""
        if current != content:
            diffs[name] = "".join(
                difflib.unified_diff(
                    current.splitlines(keepends=True),
                    content.splitlines(keepends=True),
                    fromfile=f"{name} (on disk)",
                    tofile=f"{name} (rendered)",
                )
            ) or f"{name} is missing\n"
    return diffs
