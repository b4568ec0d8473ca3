"""``init``, ``render`` and ``info``: creating a host and describing it."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from pixsim_host.cli.common import (
    HOSTS,
    LIFECYCLE,
    DirOption,
    JsonOption,
    Model,
    RuntimeName,
    YesOption,
    add_command,
    host_identity,
    http_service_urls,
    open_host,
    stdin_is_tty,
    usage_error,
)
from pixsim_host.cli.output import emit, info, warn


def _bind_problem(value: str) -> str | None:
    """Why ``value`` cannot be a listen address (checked before a port is picked on it)."""
    import ipaddress

    try:
        ipaddress.ip_address(value.strip())
    except ValueError:
        what = f"{value!r} is not an IP address" if value.strip() else "the address is empty"
        return f"{what}; give one such as 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)"
    return None


def _ask(question: str, default: str, problem: Callable[[str], str | None]) -> str:
    """Prompt until the answer is valid; a bad answer is an error line, then the question again."""
    while True:
        answer = str(typer.prompt(question, default=default, err=True)).strip()
        why = problem(answer)
        if why is None:
            return answer
        sys.stderr.write(f"Error: {why}\n")


def init(
    # Text, not Path: Typer turns an empty argument into Path("."), which would quietly
    # make a host of the current directory.
    directory: Annotated[
        str, typer.Argument(help="Where to create the host (created if missing).")
    ] = ".",
    name: Annotated[str | None, typer.Option(help="Host name; its slug names the Docker project.")] = None,
    model: Annotated[
        Model | None, typer.Option(help="Hosting model: self (just you), friend (a few friends) or "
                                        "shared (a public server).", show_default=False)
    ] = None,
    port: Annotated[int | None, typer.Option(help="Backend port (default: first free from 8000).")] = None,
    bind: Annotated[
        str | None, typer.Option(help="Address the backend listens on (127.0.0.1 for 'self').")
    ] = None,
    public_url: Annotated[
        str | None, typer.Option(help="URL clients use when it differs (TLS proxy, DNS name).")
    ] = None,
    description: Annotated[str | None, typer.Option(help="Shown to clients in server info.")] = None,
    backend_image: Annotated[
        str | None, typer.Option(help="Backend image (default: the bundled reference backend).")
    ] = None,
    postgres_image: Annotated[str | None, typer.Option(help="PostgreSQL image.")] = None,
    redis_image: Annotated[str | None, typer.Option(help="Redis image.")] = None,
    source: Annotated[
        str | None, typer.Option(help="Your PixSim7 checkout: its services, migrations and plugins "
                                      "are the host's.", show_default=False)
    ] = None,
    dockerfile: Annotated[
        str | None, typer.Option(help="Docker: build the backend image from --source with this "
                                      "Dockerfile (a path inside it).", show_default=False)
    ] = None,
    python: Annotated[
        str | None, typer.Option(help="Native: the Python of your PixSim7 environment (its venv's "
                                      "bin/python).", show_default=False)
    ] = None,
    runtime: Annotated[
        RuntimeName | None, typer.Option(help="Where the host runs: docker (the default when a Docker "
                                              "engine answers), native (local processes, no Docker) or "
                                              "kubernetes.", show_default=False)
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Re-render an existing host; host_id and secrets are kept.")
    ] = False,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Create a new host: host_id, secrets, config and rendered files.

    Asks for the name and model on a terminal unless given (or --yes).

    Examples:
      pixsim-host init my-host --name "My host"
      pixsim-host init friends --model friend --bind 192.168.1.20
      pixsim-host init my-host --runtime native --yes
      pixsim-host init pixsim7 --source ~/pixsim7 --dockerfile Dockerfile.host
      pixsim-host init pixsim7 --runtime native --source ~/pixsim7 --python ~/pixsim7/.venv/bin/python
    """
    from pixsim_host.config import HOSTING_MODELS, slugify
    from pixsim_host.create import InitOptions, init_registered
    from pixsim_host.stack import runtime_type

    if bind is not None and (why := _bind_problem(bind)) is not None:
        raise usage_error(f"--bind: {why}")
    options = InitOptions(
        name=name, model=model.value if model else None, port=port,
        bind=bind.strip() if bind is not None else None, public_url=public_url,
        description=description, backend_image=backend_image,
        postgres_image=postgres_image, redis_image=redis_image,
        runtime=runtime.value if runtime else None,
        source=source, dockerfile=dockerfile, python=python,
    )
    if not directory.strip():
        raise usage_error("the host directory is empty; give a directory, e.g. `pixsim-host init my-host`")
    root = Path(directory).expanduser().resolve()
    fresh = not (root / "pixsim-host.yaml").exists()
    if fresh and not yes and stdin_is_tty():
        if options.name is None:
            options.name = typer.prompt("Host name", default=slugify(root.name) or "my-host", err=True)
        if options.model is None:
            sys.stderr.write("self: just you; friend: a few friends; shared: a public server\n")
            options.model = _ask(
                "Hosting model", "self",
                lambda answer: None if answer in HOSTING_MODELS else
                f"{answer!r} is not a hosting model; answer {', '.join(HOSTING_MODELS)}",
            )
        if options.model != "self" and options.bind is None:
            options.bind = _ask("Listen address (0.0.0.0: every interface)", "0.0.0.0", _bind_problem)
    if fresh and options.name is None:
        options.name = slugify(root.name) or "my-host"
    notes: list[str] = []
    if fresh and options.runtime is None:
        from pixsim_host.runtime.native import docker_problem, native_available

        problem = docker_problem()
        if problem is not None:
            options.runtime = "native"
            notes.append(f"no Docker engine answers ({problem}), so this host uses the native runtime: "
                 "PostgreSQL, Redis and the backend run as local processes (pass --runtime docker "
                 "to choose Docker anyway)")
            missing = native_available()
            if missing is not None:
                notes.append(f"the native runtime cannot run yet: {missing}; install them with "
                     "`pip install 'pixsim-host[native]'` before `pixsim-host up`")

    result, registry_notes = init_registered(root, options, force=force)
    notes += result.warnings + registry_notes
    for message in notes:
        warn(message)
    config = result.config
    if emit({
        "created": result.created,
        **host_identity(result.host, config),
        "port": config.backend.port,
        "rendered": list(result.written),
        "notes": notes,
    }):
        return
    verb = "Created" if result.created else "Re-rendered"
    info(f"{verb} host {config.name!r} in {result.host.root}")
    info(f"  host_id   {config.host_id}")
    info(f"  model     {config.model}")
    kind = runtime_type(config).kind
    if kind != "docker":  # the default goes without saying
        info(f"  runtime   {kind}")
    info(f"  backend   {config.client_url}")
    info(f"  config    {result.host.config_file.name}   secrets {result.host.secrets_file.name} (0600)")
    info(f"  rendered  {', '.join(result.written) if result.written else 'nothing changed'}")
    info(f"  registry  as {config.name!r}, port {config.backend.port} (`pixsim-host hosts list`)")
    if result.created:
        info(f"Next: pixsim-host up --dir {result.host.root}")


def render(
    directory: DirOption = None,
    check: Annotated[
        bool, typer.Option("--check", help="Only compare; exit 1 with a diff if a file differs.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Re-render every generated file (compose.yaml, frontend.env, ...) from the config.

    Examples:
      pixsim-host render --dir my-host
      pixsim-host render --check --dir my-host   # in CI: fails on a hand-edited file
    """
    from pixsim_host.errors import HostError
    from pixsim_host.render import diff_rendered, render_host, write_rendered

    host, config = open_host(directory)
    rendered = render_host(host, config)
    if check:
        diffs = diff_rendered(host, rendered)
        if diffs:
            from pixsim_host.envfile import read_secrets, redact

            # A hand edit may have pasted a secret into a generated file, and this diff
            # goes to terminals and CI logs: mask every secret value in it.
            try:
                secret_values = list(read_secrets(host.secrets_file).values())
            except HostError:
                secret_values = []  # no usable .env here (a checkout in CI): nothing to mask
            raise HostError(
                f"{', '.join(diffs)} differ from what pixsim-host.yaml renders; move your edits "
                "into pixsim-host.yaml or a template override, then run `pixsim-host render`",
                details=redact("".join(diffs.values()), secret_values),
            )
        if emit({"check": True, "rendered": [], "up_to_date": True}):
            return
        info("All generated files are up to date.")
        return
    written = write_rendered(host, rendered)
    if emit({"check": False, "rendered": list(written), "up_to_date": not written}):
        return
    info(f"Rendered {', '.join(written)}." if written else "All generated files were up to date.")


def host_info(directory: DirOption = None, as_json: JsonOption = False) -> None:
    """Show the host's identity (host_id, name, model) and how clients reach it.

    Examples:
      pixsim-host info --dir my-host
      pixsim-host info --host my-host --json
    """
    host, config = open_host(directory)
    data: dict[str, object] = {
        **host_identity(host, config),
        "description": config.description,
        "project": config.project,
    }
    from pixsim_host.hosts import client_line, friend_urls, friends_cannot_reach

    friends = friend_urls(config)
    data["friend_urls"] = friends
    if config.model == "friend":
        data["friend_frontend"] = client_line(friends[0]) if friends else None
    if emit(data):
        return
    for key, value in data.items():
        if key not in ("friend_urls", "friend_frontend", "service_urls", "tls"):
            info(f"{key:12} {value}")
    from pixsim_host.tls import tls_lines

    for line in tls_lines(host, config):
        info(f"{'tls':12} {line}")
    for name, url in http_service_urls(config).items():
        info(f"{name:12} {url}")
    if config.model == "friend":
        reason = friends_cannot_reach(config)
        if reason:
            warn(reason)
        for index, url in enumerate(friends):
            info(f"{'friends' if index == 0 else '':12} {url}")
        if friends:
            info(f"{'':12} give a friend's client: {client_line(friends[0])}")


def register(app: typer.Typer) -> None:
    add_command(app, init, LIFECYCLE)
    add_command(app, render, LIFECYCLE)
    add_command(app, host_info, HOSTS, "info")
