#!/usr/bin/env python3
"""How long `upgrade` and `rollback` take on Docker, and the way back after a failure.

    python benchmarks/upgrade.py [--rounds 2] [--json]

One throw-away Docker host of the reference backend (temp dir, throw-away registry) is
brought up through the real CLI. "Next versions" of the reference backend are built
locally from its image (never pulled): one with a new migration, one whose backend exits.
Each round times: a successful upgrade (safety backup, migration, new backend verified),
the rollback of it (database restored from the safety backup), and a failed upgrade (the
backend exits) until the old host is verified again. Figures are medians (min-max).

It reports, it never asserts: the exit code is 0 whatever the figures (130 on Ctrl-C).
The host is taken down with its volumes, the images it built are removed and the temp dir
is deleted, also on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pixsim_host", *args], env=env, text=True,
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=900, check=False)


def timed(env: dict[str, str], *args: str) -> tuple[float, int]:
    started = time.monotonic()
    done = cli(env, *args)
    elapsed = time.monotonic() - started
    if done.returncode not in (0, 1):
        print(f"  {' '.join(args[:3])}: exit {done.returncode}: {done.stderr.strip()[-300:]}",
              file=sys.stderr)
    return elapsed, done.returncode


def build(client: object, base: str, tag: str, lines: list[str]) -> None:
    dockerfile = "\n".join([f"FROM {base}", *lines]).encode()
    client.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, rm=True, pull=False)  # type: ignore[attr-defined]


def summary(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"{statistics.median(values):.1f} s ({min(values):.1f}-{max(values):.1f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()

    import docker

    from pixsim_host.config import REFERENCE_BACKEND_IMAGE

    client = docker.from_env(timeout=300)
    base = Path(tempfile.mkdtemp(prefix="pixsim-bench-upgrade-"))
    env = {**os.environ, "PIXSIM_HOST_HOME": str(base / "registry"), "NO_COLOR": "1"}
    env.pop("PIXSIM_HOST_DIR", None)
    host = base / "host"
    suffix = uuid.uuid4().hex[:8]
    good = f"pixsim-host/reference-backend:bench-next-{suffix}"
    failing = f"pixsim-host/reference-backend:bench-exits-{suffix}"
    figures: dict[str, list[float]] = {"upgrade": [], "rollback": [], "failed_upgrade_back": []}
    try:
        migration = ("USER root", "RUN printf 'CREATE TABLE IF NOT EXISTS bench_probe (id int);\\n' > "
                     "/app/pixsim_reference_backend/migrations/main/0099_bench.sql", "USER pixsim")
        build(client, REFERENCE_BACKEND_IMAGE, good, list(migration))
        build(client, REFERENCE_BACKEND_IMAGE, failing, [*migration,
                                                         'CMD ["python", "-c", "raise SystemExit(1)"]'])
        made = cli(env, "init", str(host), "--yes", "--name", f"bench-{suffix}", "--runtime", "docker")
        if made.returncode != 0 or cli(env, "up", "--dir", str(host)).returncode != 0:
            print("the host did not come up; no figures", file=sys.stderr)
            return 0
        for round_ in range(options.rounds):
            print(f"round {round_ + 1}", file=sys.stderr)
            seconds, code = timed(env, "upgrade", "--dir", str(host), "--image", good, "--yes")
            if code == 0:
                figures["upgrade"].append(seconds)
                seconds, code = timed(env, "rollback", "--dir", str(host), "--yes")
                if code == 0:
                    figures["rollback"].append(seconds)
            seconds, code = timed(env, "upgrade", "--dir", str(host), "--image", failing, "--yes",
                                  "--timeout", "60")
            if code == 1:
                figures["failed_upgrade_back"].append(seconds)
    except KeyboardInterrupt:
        return 130
    finally:
        if host.exists():
            cli(env, "down", "--dir", str(host), "--volumes", "--yes")
        for tag in (good, failing):
            with contextlib.suppress(docker.errors.DockerException):
                client.images.remove(tag, force=True)
        shutil.rmtree(base, ignore_errors=True)
    if options.json:
        print(json.dumps({name: values for name, values in figures.items()}, indent=2))
    else:
        print(f"upgrade (safety backup, migration, new backend verified): {summary(figures['upgrade'])}")
        print(f"rollback (database restored, old backend verified):       {summary(figures['rollback'])}")
        print(f"failed upgrade until the old host is verified again:      "
              f"{summary(figures['failed_upgrade_back'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
