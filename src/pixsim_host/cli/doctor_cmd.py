"""``doctor``: check everything a host needs, say how to fix what is wrong."""

from __future__ import annotations

from pathlib import Path

import typer

from pixsim_host.cli.common import DIAGNOSTICS, DirOption, JsonOption, add_command
from pixsim_host.cli.output import HEALTHY, UNHEALTHY, emit, table, wrapped


def doctor(directory: DirOption = None, as_json: JsonOption = False) -> None:
    """Check the engine, the host's files, port, images, disk, registry and health, each with a fix.

    Exits 1 when a check fails. Without a host (no --dir/--host, none here) it checks this
    machine only.

    Examples:
      pixsim-host doctor --dir my-host
      pixsim-host doctor --json | jq '.checks[] | select(.status != "pass")'
    """
    import os

    from pixsim_host.cli.common import resolve_host
    from pixsim_host.doctor import FAIL, PASS, SKIP, WARN, run_checks
    from pixsim_host.errors import HostError
    from pixsim_host.hostdir import CONFIG_FILE, DIR_ENV_VAR, HostDir

    host: HostDir | None
    if directory is None and not os.environ.get(DIR_ENV_VAR) and not (Path.cwd() / CONFIG_FILE).exists():
        host = None  # no host here: check the machine only
    else:
        host = resolve_host(directory)
    checks = run_checks(host)
    failed = [c for c in checks if c.status == FAIL]
    if not emit({"directory": str(host.root) if host else None,
                 "health": UNHEALTHY if failed else HEALTHY,
                 "checks": [{**c.as_json(), "hint": c.hint or None} for c in checks]}):
        wrapped("", f"Checking the host in {host.root}:" if host else
                "No host here (use --dir or --host); checking this machine only:", indent=0)
        marks = {PASS: "ok", WARN: "WARN", FAIL: "FAIL", SKIP: "skip"}
        rows = []
        for check in checks:
            text = check.message
            if check.hint and check.status in (FAIL, WARN):
                text += f"; fix: {check.hint}"
            rows.append((marks[check.status], check.name, text))
        table(("", "CHECK", "RESULT"), rows, indent=2)
    if failed:
        names = ", ".join(c.name for c in failed)
        raise HostError(f"{len(failed)} of {len(checks)} checks failed ({names}); fix them as shown "
                        "above and run `pixsim-host doctor` again")


def register(app: typer.Typer) -> None:
    add_command(app, doctor, DIAGNOSTICS, "doctor")
