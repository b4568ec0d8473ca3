"""``connect URL``: point a PixSim7 client at a host, after checking who answers there."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pixsim_host.cli.common import HOSTS, JsonOption, add_command, seconds, usage_error
from pixsim_host.cli.output import emit, info, iso_time, table

Opt = Path | None


def connect(
    url: Annotated[str | None, typer.Argument(help="The host's backend URL, e.g. http://192.168.1.20:8000.",
                                              show_default=False)] = None,
    accept_new_identity: Annotated[bool, typer.Option(
        "--accept-new-identity", help="Trust the host now at URL even though it is not the one seen there "
                                      "before.")] = False,
    env_file: Annotated[Opt, typer.Option(
        "--env-file", help="Also set VITE_BACKEND_URL in this client .env file (other lines are kept).",
        show_default=False)] = None,
    ca_cert: Annotated[Opt, typer.Option(
        "--ca-cert", help="Trust this CA (PEM) for an https:// host with its own certificate.",
        show_default=False)] = None,
    list_known: Annotated[bool, typer.Option("--list", help="List the hosts connected to before.")] = False,
    forget: Annotated[bool, typer.Option("--forget", help="Forget the host known at URL.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait to connect and for each answer.",
                                           callback=seconds)] = 5.0,
    as_json: JsonOption = False,
) -> None:
    """Check the host at URL speaks the PixSim7 contract, pin its identity, print the client line.

    The first answer at a URL is remembered; a different host answering there later is
    refused (exit code 3) until --accept-new-identity.

    Examples:
      pixsim-host connect http://192.168.1.20:8000
      pixsim-host connect https://pixsim.example.org --env-file ../pixsim7/frontend/.env.local
      pixsim-host connect --list
    """
    from pixsim_host.connect import DEADLINE, forget_known, known_hosts_path, load_known, write_env_file
    from pixsim_host.connect import connect as connect_to
    from pixsim_host.hosts import client_line

    if list_known:
        _list(load_known(), as_json)
        return
    if url is None:
        raise usage_error("give the host's URL (e.g. `pixsim-host connect http://192.168.1.20:8000`), "
                        "or --list to see the hosts you connected to before")
    if forget:
        entry = forget_known(url)
        if emit({"forgotten": _known_doc(url, entry)}):
            return
        info(f"Forgot {url} (host {entry.get('name')!r}, {entry['host_id']}).")
        return
    result = connect_to(url, accept_new_identity=accept_new_identity, ca_cert=ca_cert, timeout=timeout,
                     deadline=max(DEADLINE, timeout * 2))
    remote = result.remote
    changed = write_env_file(env_file, remote.url) if env_file is not None else False
    document = remote.as_json()
    document["backend_url"] = document.pop("url")
    if emit({**document, "outcome": result.outcome, "known_hosts": str(known_hosts_path()),
             "also_known_at": result.also_known_at, "frontend": client_line(remote.url),
             "env_file": str(env_file) if env_file else None, "env_file_changed": changed,
             "previous": _known_doc(url, result.previous) if result.previous else None}):
        return
    if result.outcome == "new":
        info(f"First connection to {remote.url}: host {remote.server_name!r} ({remote.server_id}).")
        info("Remembered its identity; if another host ever answers at this URL, connect will refuse it.")
    elif result.outcome == "known":
        info(f"{remote.url} is host {remote.server_name!r} ({remote.server_id}), the same host as before.")
    else:
        assert result.previous is not None
        info(f"Re-pinned {remote.url} to host {remote.server_name!r} ({remote.server_id}); it was "
             f"{result.previous.get('name')!r} ({result.previous['host_id']}).")
    info(f"  version {remote.version}, API {remote.api_version}"
         + (f", build {remote.build_sha}" if remote.build_sha else ""))
    if remote.description:
        info(f"  {remote.description}")
    for other in result.also_known_at:
        info(f"  the same host is also known at {other}")
    info("Client configuration (the PixSim7 frontend's .env.local):")
    info(f"  {client_line(remote.url)}")
    if env_file is not None:
        info(f"{'Wrote' if changed else 'Already set in'} {env_file}.")


def _known_doc(url: str, entry: dict[str, Any]) -> dict[str, Any]:
    """A pinned host in the shared vocabulary: ``backend_url``, times in ISO 8601 UTC."""
    doc: dict[str, Any] = {"backend_url": url}
    for key, value in entry.items():
        if key.endswith("_seen") and isinstance(value, int | float) and not isinstance(value, bool):
            doc[f"{key}_at"] = iso_time(float(value))
        elif key != "url":
            doc[key] = value
    return doc


def _list(known: dict[str, dict[str, Any]], as_json: bool) -> None:
    import time

    if emit({"hosts": [_known_doc(url, entry) for url, entry in sorted(known.items())]}):
        return
    if not known:
        info("No known hosts yet; `pixsim-host connect URL` checks a host and remembers it.")
        return
    rows = []
    for url, entry in sorted(known.items()):
        seen = entry.get("last_seen")
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(seen)) if isinstance(seen, int | float) else "?"
        rows.append((url, str(entry.get("name", "?")), str(entry["host_id"]),
                     str(entry.get("api_version", "?")), when))
    table(("BACKEND URL", "NAME", "HOST_ID", "API", "LAST SEEN"), rows)


def register(app: typer.Typer) -> None:
    add_command(app, connect, HOSTS, "connect")
