"""Read a rendered ``compose.yaml`` into the plain specs a runtime applies.

pixsim-host does not need the Compose CLI, but the file it renders must mean the same
thing to both. This module implements the part of the Compose specification our
templates use (interpolation, services, healthchecks, ports, volumes, networks,
depends_on) and refuses anything else by name, so a key a user adds to a template
override is never silently ignored.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pixsim_host.errors import HostError

_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

SERVICE_KEYS = frozenset({
    "image", "restart", "command", "environment", "volumes", "healthcheck", "networks",
    "labels", "ports", "depends_on", "pull_policy", "stop_grace_period",
})


@dataclass(frozen=True)
class Healthcheck:
    test: list[str]  # Engine form: ["CMD", ...], ["CMD-SHELL", "..."] or ["NONE"]
    interval: float = 30.0
    timeout: float = 30.0
    retries: int = 3
    start_period: float = 0.0
    start_interval: float | None = None


@dataclass(frozen=True)
class PortBinding:
    target: int
    published: int
    host_ip: str
    protocol: str = "tcp"


@dataclass(frozen=True)
class Mount:
    type: str  # "volume" or "bind"
    source: str  # a volume key of the project, or an absolute host path
    target: str
    read_only: bool = False


@dataclass
class ServiceSpec:
    name: str
    image: str
    command: list[str] | None = None
    environment: dict[str, str] = field(default_factory=dict)
    healthcheck: Healthcheck | None = None
    restart: str = "no"
    ports: list[PortBinding] = field(default_factory=list)
    mounts: list[Mount] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    depends_on: dict[str, str] = field(default_factory=dict)  # service -> condition
    stop_grace_period: float = 10.0


@dataclass
class ProjectSpec:
    name: str
    directory: Path
    services: dict[str, ServiceSpec]
    network_labels: dict[str, str]
    volumes: dict[str, dict[str, str]]  # volume key -> labels

    def levels(self) -> list[list[str]]:
        """Services grouped so each group depends only on earlier groups."""
        remaining = dict(self.services)
        done: set[str] = set()
        levels: list[list[str]] = []
        while remaining:
            ready = sorted(name for name, svc in remaining.items() if set(svc.depends_on) <= done)
            if not ready:
                raise HostError(
                    f"compose.yaml has a depends_on cycle among {', '.join(sorted(remaining))}; "
                    "fix the template override"
                )
            levels.append(ready)
            done.update(ready)
            for name in ready:
                del remaining[name]
        return levels

    def dependents(self, service: str) -> set[str]:
        found: set[str] = set()
        frontier = {service}
        while frontier:
            frontier = {
                name for name, svc in self.services.items()
                if set(svc.depends_on) & frontier and name not in found
            }
            found |= frontier
        return found


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Compose-style ``$`` interpolation; ``$$`` is a literal dollar."""

    def substitute(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("braced") or match.group("named")
        value = variables.get(name)
        op, arg = match.group("op"), match.group("arg") or ""
        if op in (":?", "?"):
            if value is None or (op == ":?" and value == ""):
                raise HostError(f"compose.yaml needs {name}, which {arg or 'is not set'}")
            return value
        if op in (":-", "-"):
            if value is None or (op == ":-" and value == ""):
                return arg
            return value
        return value or ""

    return _VAR.sub(substitute, text)


def _interpolate_tree(node: Any, variables: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, variables)
    if isinstance(node, list):
        return [_interpolate_tree(item, variables) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate_tree(value, variables) for key, value in node.items()}
    return node


def parse_duration(value: Any, where: str) -> float:
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise HostError(f"compose.yaml {where}: {text!r} is not a duration like 10s or 1m30s")
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


def _labels(node: Any, where: str) -> dict[str, str]:
    if node is None:
        return {}
    if isinstance(node, list):
        pairs = [str(item).partition("=") for item in node]
        return {key: value for key, _, value in pairs}
    if isinstance(node, dict):
        return {str(k): "" if v is None else str(v) for k, v in node.items()}
    raise HostError(f"compose.yaml {where}: labels must be a mapping or a list")


def _environment(node: Any, where: str) -> dict[str, str]:
    env = _labels(node, where)
    return {key: value for key, value in env.items()}


def _command(node: Any) -> list[str] | None:
    if node is None:
        return None
    if isinstance(node, str):
        return shlex.split(node)
    return [str(part) for part in node]


def _healthcheck(node: Any, where: str) -> Healthcheck | None:
    if node is None:
        return None
    if node.get("disable"):
        return Healthcheck(test=["NONE"])
    test = node.get("test")
    if isinstance(test, str):
        test = ["CMD-SHELL", test]
    if not isinstance(test, list) or not test or test[0] not in ("CMD", "CMD-SHELL", "NONE"):
        raise HostError(f"compose.yaml {where}.test must be a string or start with CMD or CMD-SHELL")
    start_interval = node.get("start_interval")
    return Healthcheck(
        test=[str(part) for part in test],
        interval=parse_duration(node.get("interval", "30s"), f"{where}.interval"),
        timeout=parse_duration(node.get("timeout", "30s"), f"{where}.timeout"),
        retries=int(node.get("retries", 3)),
        start_period=parse_duration(node.get("start_period", "0s"), f"{where}.start_period"),
        start_interval=(
            parse_duration(start_interval, f"{where}.start_interval")
            if start_interval is not None else None
        ),
    )


def _ports(node: Any, where: str) -> list[PortBinding]:
    ports = []
    for item in node or []:
        if isinstance(item, dict):
            ports.append(PortBinding(
                target=int(item["target"]),
                published=int(item["published"]),
                host_ip=str(item.get("host_ip", "0.0.0.0")),
                protocol=str(item.get("protocol", "tcp")),
            ))
            continue
        text, _, protocol = str(item).partition("/")
        host_ip, published, target = "0.0.0.0", "", ""
        if text.startswith("["):
            host_ip, _, rest = text[1:].partition("]:")
            published, _, target = rest.partition(":")
        else:
            pieces = text.split(":")
            if len(pieces) == 3:
                host_ip, published, target = pieces
            elif len(pieces) == 2:
                published, target = pieces
            else:
                raise HostError(f"compose.yaml {where}: port {item!r} must publish a host port")
        ports.append(PortBinding(int(target), int(published), host_ip, protocol or "tcp"))
    return ports


def _mounts(node: Any, where: str, directory: Path, volume_keys: set[str]) -> list[Mount]:
    mounts = []
    for item in node or []:
        if isinstance(item, str):
            source, _, rest = item.partition(":")
            target, _, options = rest.partition(":")
            read_only = "ro" in options.split(",")
            kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        else:
            kind = item.get("type", "volume")
            source, target = item.get("source", ""), item.get("target", "")
            read_only = bool(item.get("read_only", False))
        if kind == "bind":
            source = str((directory / Path(source).expanduser()).resolve())
        elif kind == "volume" and source not in volume_keys:
            raise HostError(
                f"compose.yaml {where}: volume {source!r} is not declared under the top-level "
                "volumes key"
            )
        elif kind not in ("bind", "volume"):
            raise HostError(f"compose.yaml {where}: mount type {kind!r} is not supported")
        mounts.append(Mount(kind, source, target, read_only))
    return mounts


def parse_project(data: Any, directory: Path, variables: Mapping[str, str]) -> ProjectSpec:
    if not isinstance(data, dict) or not isinstance(data.get("services"), dict):
        raise HostError("compose.yaml has no services; run `pixsim-host render`")
    data = _interpolate_tree({k: v for k, v in data.items() if not str(k).startswith("x-")},
                             variables)
    name = str(data.get("name") or "")
    if not re.match(r"^[a-z0-9][a-z0-9_-]*$", name):
        raise HostError("compose.yaml must set a project name (name: ...); run `pixsim-host render`")
    unknown_networks = set(data.get("networks") or {}) - {"default"}
    if unknown_networks:
        raise HostError(
            f"compose.yaml declares networks {', '.join(sorted(unknown_networks))}; "
            "pixsim-host runs each host on its one default network"
        )
    network_labels = _labels((data.get("networks") or {}).get("default", {}).get("labels"),
                             "networks.default")
    volumes = {
        str(key): _labels((spec or {}).get("labels"), f"volumes.{key}")
        for key, spec in (data.get("volumes") or {}).items()
    }
    services: dict[str, ServiceSpec] = {}
    for svc_name, svc in data["services"].items():
        where = f"services.{svc_name}"
        if not isinstance(svc, dict) or not svc.get("image"):
            raise HostError(f"compose.yaml {where} must be a mapping with an image")
        unsupported = sorted(set(svc) - SERVICE_KEYS)
        if unsupported:
            raise HostError(
                f"compose.yaml {where} uses {', '.join(unsupported)}, which pixsim-host does not "
                "apply; remove it from your template override"
            )
        networks = svc.get("networks") or {"default": {}}
        if isinstance(networks, list):
            networks = {net: {} for net in networks}
        if set(networks) - {"default"}:
            raise HostError(f"compose.yaml {where}.networks may only name the default network")
        depends = svc.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {dep: {"condition": "service_started"} for dep in depends}
        services[svc_name] = ServiceSpec(
            name=svc_name,
            image=str(svc["image"]),
            command=_command(svc.get("command")),
            environment=_environment(svc.get("environment"), f"{where}.environment"),
            healthcheck=_healthcheck(svc.get("healthcheck"), f"{where}.healthcheck"),
            restart=str(svc.get("restart", "no")),
            ports=_ports(svc.get("ports"), f"{where}.ports"),
            mounts=_mounts(svc.get("volumes"), f"{where}.volumes", directory, set(volumes)),
            aliases=sorted({svc_name, *((networks.get("default") or {}).get("aliases") or [])}),
            labels=_labels(svc.get("labels"), f"{where}.labels"),
            depends_on={
                dep: str((cond or {}).get("condition", "service_started"))
                for dep, cond in depends.items()
            },
            stop_grace_period=parse_duration(svc.get("stop_grace_period", "10s"),
                                             f"{where}.stop_grace_period"),
        )
    for svc in services.values():
        missing = set(svc.depends_on) - set(services)
        if missing:
            raise HostError(
                f"compose.yaml services.{svc.name} depends on unknown {', '.join(sorted(missing))}"
            )
    return ProjectSpec(name, directory, services, network_labels, volumes)


def load_project(path: Path, variables: Mapping[str, str]) -> ProjectSpec:
    try:
        from pixsim_host.safeload import parse_yaml

        data = parse_yaml(path.read_text(encoding="utf-8"), path.name, "run `pixsim-host render`")
    except FileNotFoundError:
        raise HostError(f"{path} is missing; run `pixsim-host render`") from None
    except UnicodeDecodeError:
        raise HostError(f"{path} is not UTF-8 text; run `pixsim-host render`") from None
    except OSError as exc:
        raise HostError(f"cannot read {path}: {exc.strerror or exc}; run `pixsim-host render`") from None
    except yaml.YAMLError as exc:
        from pixsim_host.render import yaml_problem

        raise HostError(
            f"{path.name} is not valid YAML ({yaml_problem(exc)}); run `pixsim-host render`"
        ) from None
    return parse_project(data, path.parent, variables)
