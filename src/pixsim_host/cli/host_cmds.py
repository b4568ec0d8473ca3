"""``init``, ``render`` and ``info``: creating a host and describing it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pixsim_host.cli.common import DirOption, JsonOption, YesOption, open_host, stdin_is_tty
from pixsim_host.cli.output import info, print_json, warn


def init(
    # Text, not Path: Typer turns an empty argument into Path("."), which would quietly
    # make a host of the current directory.
    directory: Annotated[
        str, typer.Argument(help="Where to create the host (created if missing).")
    ] = ".",
    name: Annotated[str | None, typer.Option(help="Host name; its slug names the Docker project.")] = None,
    model: Annotated[
        str | None, typer.Option(help="Hosting model: self, friend or shared.", show_default=False)
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
    runtime: Annotated[
        str | None, typer.Option(help="Where the host runs: docker (the default when a Docker engine "
                                      "answers), native (local processes, no Docker) or kubernetes.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Re-render an existing host; host_id and secrets are kept.")
    ] = False,
    yes: YesOption = False,
) -> None:
    """Create a new host: host_id, secrets, config and rendered files."""
    from pixsim_host.config import HOSTING_MODELS, slugify
    from pixsim_host.create import InitOptions
    from pixsim_host.hosts import init_registered

    options = InitOptions(
        name=name, model=model, port=port, bind=bind, public_url=public_url,
        description=description, backend_image=backend_image,
        postgres_image=postgres_image, redis_image=redis_image, runtime=runtime,
    )
    if not directory.strip():
        from pixsim_host.errors import HostError

        raise HostError("the host directory is empty; give a directory, e.g. `pixsim-host init my-host`")
    root = Path(directory).expanduser().resolve()
    fresh = not (root / "pixsim-host.yaml").exists()
    if fresh and not yes and stdin_is_tty():
        if options.name is None:
            options.name = typer.prompt("Host name", default=slugify(root.name) or "my-host")
        if options.model is None:
            # A plain prompt checked here: newer Typer releases no longer export Choice.
            question = "Hosting model (self: just you; friend: a few friends; shared: a public server)"
            answer = typer.prompt(question, default="self")
            while answer not in HOSTING_MODELS:
                warn(f"choose one of {', '.join(HOSTING_MODELS)}")
                answer = typer.prompt(question, default="self")
            options.model = answer
        if options.model != "self" and options.bind is None:
            options.bind = typer.prompt("Listen address (0.0.0.0: every interface)", default="0.0.0.0")
    if fresh and options.name is None:
        options.name = slugify(root.name) or "my-host"
    if fresh and options.runtime is None:
        from pixsim_host.runtime.native import docker_problem, native_available

        problem = docker_problem()
        if problem is not None:
            options.runtime = "native"
            warn(f"no Docker engine answers ({problem}), so this host uses the native runtime: "
                 "PostgreSQL, Redis and the backend run as local processes (pass --runtime docker "
                 "to choose Docker anyway)")
            missing = native_available()
            if missing is not None:
                warn(f"the native runtime cannot run yet: {missing}; install them with "
                     "`pip install 'pixsim-host[native]'` before `pixsim-host up`")

    result, registry_notes = init_registered(root, options, force=force)
    for message in result.warnings + registry_notes:
        warn(message)
    config = result.config
    verb = "Created" if result.created else "Re-rendered"
    info(f"{verb} host {config.name!r} in {result.host.root}")
    info(f"  host_id   {config.host_id}")
    info(f"  model     {config.model}")
    if config.runtime != "docker":
        info(f"  runtime   {config.runtime}")
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
) -> None:
    """Re-render every generated file from the config."""
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
        info("All generated files are up to date.")
        return
    written = write_rendered(host, rendered)
    info(f"Rendered {', '.join(written)}." if written else "All generated files were up to date.")


def host_info(directory: DirOption = None, as_json: JsonOption = False) -> None:
    """Show the host's identity and how clients reach it."""
    host, config = open_host(directory)
    data: dict[str, object] = {
        "host_id": config.host_id,
        "name": config.name,
        "description": config.description,
        "model": config.model,
        "project": config.project,
        "directory": str(host.root),
        "backend_url": config.client_url,
        "local_url": config.local_url,
        "frontend": f"VITE_BACKEND_URL={config.client_url}",
    }
    from pixsim_host.hosts import client_line, friend_urls

    friends = friend_urls(config)
    data["friend_urls"] = friends
    if config.model == "friend":
        data["friend_frontend"] = client_line(friends[0]) if friends else None
    if as_json:
        print_json(data)
        return
    for key, value in data.items():
        if key not in ("friend_urls", "friend_frontend"):
            info(f"{key:12} {value}")
    if config.model == "friend":
        if not friends:
            warn(f"friends cannot reach this host: it listens on {config.backend.bind} only; run "
                 "`pixsim-host config set backend.bind 0.0.0.0` (or your LAN/VPN address)")
        for index, url in enumerate(friends):
            info(f"{'friends' if index == 0 else '':12} {url}")
        if friends:
            info(f"{'':12} give a friend's client: {client_line(friends[0])}")


def register(app: typer.Typer) -> None:
    app.command()(init)
    app.command()(render)
    app.command("info")(host_info)
