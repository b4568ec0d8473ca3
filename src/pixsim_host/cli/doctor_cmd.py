"""``doctor``: check everything a host needs, say how to fix what is wrong."""

from __future__ import annotations

from pathlib import Path

import typer

from pixsim_host.cli.common import DirOption, JsonOption
from pixsim_host.cli.output import info, print_json


def doctor(directory: DirOption = None, as_json: JsonOption = False) -> None:
    """Check the engine, the host's files, port, images, disk, registry and health; exit 1 on a failure."""
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
    if as_json:
        print_json({"host": str(host.root) if host else None, "ok": not failed,
                    "checks": [c.as_json() for c in checks]})
    else:
        info(f"Checking the host in {host.root}:" if host else
             "No host here (use --dir or --host); checking this machine only:")
        marks = {PASS: "ok  ", WARN: "WARN", FAIL: "FAIL", SKIP: "skip"}
        for check in checks:
            info(f"  {marks[check.status]}  {check.name:9} {check.message}")
            if check.hint and check.status in (FAIL, WARN):
                info(f"        {'':9} fix: {check.hint}")
    if failed:
        names = ", ".join(c.name for c in failed)
        raise HostError(f"{len(failed)} of {len(checks)} checks failed ({names}); fix them as shown "
                        "above and run `pixsim-host doctor` again")


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
