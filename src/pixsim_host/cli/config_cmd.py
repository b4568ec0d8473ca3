"""``config show | get | set``: read and change pixsim-host.yaml safely."""

from __future__ import annotations

from typing import Annotated

import typer

from pixsim_host.cli.common import DirOption, JsonOption, finish_interrupted_changes, open_host
from pixsim_host.cli.output import emit, info

app = typer.Typer(help="Show, read and change the host's pixsim-host.yaml, validated and re-rendered.",
                  no_args_is_help=True, rich_markup_mode="rich")


@app.command("show")
def show(
    directory: DirOption = None,
    reveal: Annotated[bool, typer.Option("--reveal", help="Also print the secrets from .env.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Print the whole configuration and the secrets' names (values masked unless --reveal).

    Examples:
      pixsim-host config show --dir my-host
      pixsim-host config show --host my-host --json
    """
    import yaml

    from pixsim_host.envfile import MASK, read_secrets

    host, config = open_host(directory)
    data = config.model_dump(mode="json")
    stored = read_secrets(host.secrets_file)
    data["secrets"] = {key: (value if reveal else MASK) for key, value in sorted(stored.items())}
    if not emit(data):
        info(yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip("\n"))


@app.command("get")
def get(key: Annotated[str, typer.Argument(help="A dotted key, e.g. backend.port.")],
        directory: DirOption = None, as_json: JsonOption = False) -> None:
    """Print one value of the configuration (text as is, anything else as JSON).

    Examples:
      pixsim-host config get backend.port --dir my-host
      pixsim-host config get plugins.disabled --host my-host
    """
    import json

    from pixsim_host.config import get_key

    _, config = open_host(directory)
    value = get_key(config, key)
    if not emit({"key": key, "value": value}):
        info(value if isinstance(value, str) else json.dumps(value))


@app.command("set")
def set_(
    key: Annotated[str, typer.Argument(help="A dotted key, e.g. backend.port.")],
    value: Annotated[str, typer.Argument(help="The new value; a list as \\[a, b].")],
    directory: DirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Change one value: validated, saved, and the generated files re-rendered.

    Examples:
      pixsim-host config set backend.port 8010 --dir my-host
      pixsim-host config set plugins.disabled "[game_stealth]" --host my-host
    """
    from pixsim_host import hosts
    from pixsim_host.config import get_key, load_config, set_key
    from pixsim_host.errors import HostError
    from pixsim_host.journal import deferred_interrupts
    from pixsim_host.locking import host_lock
    from pixsim_host.render import apply_config

    host, config = open_host(directory)
    hosts.check_claims(set_key(config, key, value))  # a bad value neither waits nor writes
    with host_lock(host, command="config set"):
        finish_interrupted_changes(host, applies_next=False)  # never set over half a change
        updated = set_key(load_config(host.config_file), key, value)  # re-read under the lock
        hosts.check_claims(updated)  # another registered host's name or port is refused
        try:
            # Ctrl-C and SIGTERM wait until the config, its rendered files and the registry
            # agree: the change is made whole or not at all.
            with deferred_interrupts():
                written = apply_config(host, updated)  # a value that cannot render writes nothing
                hosts.record(host, updated)
        except KeyboardInterrupt:
            raise HostError(f"interrupted after the change was made: {key} is set and the "
                            "generated files are rendered; run `pixsim-host up` to apply it to a "
                            "running host", exit_code=130) from None
    import json

    value_set = get_key(updated, key)
    if emit({"key": key, "value": json.loads(json.dumps(value_set, default=str)),
             "rendered": list(written), "needs_up": bool(written)}):
        return
    info(f"Set {key}." + (f" Rendered {', '.join(written)}." if written else ""))
    if written:
        info("Run `pixsim-host up` to apply it to a running host.")
