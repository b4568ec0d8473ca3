"""``config show | get | set``: read and change pixsim-host.yaml safely."""

from __future__ import annotations

from typing import Annotated

import typer

from pixsim_host.cli.common import DirOption, JsonOption, open_host
from pixsim_host.cli.output import info, print_json

app = typer.Typer(help="Show and change the host configuration.", no_args_is_help=True)


@app.command("show")
def show(
    directory: DirOption = None,
    reveal: Annotated[bool, typer.Option("--reveal", help="Also print the secrets from .env.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Print the configuration; secrets are masked unless --reveal."""
    import yaml

    from pixsim_host.envfile import MASK, read_secrets

    host, config = open_host(directory)
    data = config.model_dump(mode="json")
    stored = read_secrets(host.secrets_file)
    data["secrets"] = {key: (value if reveal else MASK) for key, value in sorted(stored.items())}
    if as_json:
        print_json(data)
    else:
        typer.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip("\n"))


@app.command("get")
def get(key: Annotated[str, typer.Argument(help="A dotted key, e.g. backend.port.")],
        directory: DirOption = None) -> None:
    """Print one value."""
    import json

    from pixsim_host.config import get_key

    _, config = open_host(directory)
    value = get_key(config, key)
    typer.echo(value if isinstance(value, str) else json.dumps(value))


@app.command("set")
def set_(
    key: Annotated[str, typer.Argument(help="A dotted key, e.g. backend.port.")],
    value: Annotated[str, typer.Argument(help="The new value; lists as [a, b].")],
    directory: DirOption = None,
) -> None:
    """Change one value, validate it, save and re-render."""
    from pixsim_host import hosts
    from pixsim_host.config import load_config, save_config, set_key
    from pixsim_host.locking import host_lock
    from pixsim_host.render import render_host, write_rendered

    host, config = open_host(directory)
    hosts.check_claims(set_key(config, key, value))  # a bad value neither waits nor writes
    with host_lock(host, command="config set"):
        updated = set_key(load_config(host.config_file), key, value)  # re-read under the lock
        hosts.check_claims(updated)  # another registered host's name or port is refused
        rendered = render_host(host, updated)  # render before saving: a bad value writes nothing
        save_config(updated, host.config_file)
        written = write_rendered(host, rendered)
        hosts.record(host, updated)
    info(f"Set {key}." + (f" Rendered {', '.join(written)}." if written else ""))
    if written:
        info("Run `pixsim-host up` to apply it to a running host.")


_ = print_json
