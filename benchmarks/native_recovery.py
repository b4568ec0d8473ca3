#!/usr/bin/env python3
"""A native host's recovery: from SIGKILL of one of its processes to a host answering again.

    python benchmarks/native_recovery.py [--rounds 3] [--json]

One throw-away native host (in a temp dir, registered in a throw-away registry) is brought
up through the real CLI; then, each round, each of its processes in turn (backend, worker,
Redis, PostgreSQL) is SIGKILLed and the time is taken until the supervisor has started a new
one (its pid file names a live process) and the backend answers ``/api/v1/server/info`` with
the host's id. The figures are medians (min-max) of the rounds.

It reports, it never asserts: the exit code is 0 whatever the figures (130 on Ctrl-C).
Whatever happens the host is taken down, any process still running in the temp dir is
killed by pid, and the temp dir is removed. Only the standard library is used; the native
runtime needs ``pixsim-host[native]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

SERVICES = ("backend", "worker", "redis", "db")
WAIT = 120.0


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pixsim_host", *args], env=env, text=True,
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=600, check=False)


def recorded(host: Path, service: str) -> int | None:
    try:
        return int(json.loads((host / ".pixsim-host" / "run" / f"{service}.pid").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def answers(url: str, host_id: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/v1/server/info", timeout=2) as reply:  # noqa: S310
            return bool(json.loads(reply.read()).get("server_id") == host_id)
    except (OSError, ValueError):
        return False


def recover(host: Path, service: str, url: str, host_id: str) -> float | None:
    old = recorded(host, service)
    if old is None:
        return None
    killed = time.monotonic()
    os.kill(old, signal.SIGKILL)
    while time.monotonic() - killed < WAIT:
        new = recorded(host, service)
        if new not in (None, old) and Path(f"/proc/{new}").exists() and answers(url, host_id):
            return time.monotonic() - killed
        time.sleep(0.02)
    return None


def leftovers(base: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if str(base) in (entry / "cmdline").read_bytes().decode(errors="replace") \
                        or os.readlink(entry / "cwd").startswith(str(base)):
                    found.append(int(entry.name))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="pixsim-bench-recovery-"))
    os.chmod(base, 0o755)  # as root, PostgreSQL runs as another account that must reach it
    env = {**os.environ, "PIXSIM_HOST_HOME": str(base / "registry")}
    env.pop("PIXSIM_HOST_DIR", None)
    host = base / "host"
    figures: dict[str, list[float]] = {service: [] for service in SERVICES}
    try:
        made = cli(env, "init", str(host), "--runtime", "native", "--yes", "--name",
                   f"bench-recovery-{os.getpid()}")
        if made.returncode != 0:
            print(made.stderr.strip(), file=sys.stderr)
            return 0
        up = cli(env, "up", "--dir", str(host), "--json")
        if up.returncode != 0:
            print(up.stderr.strip(), file=sys.stderr)
            return 0
        report = json.loads(up.stdout)
        url, host_id = report["local_url"], report["host_id"]
        for number in range(options.rounds):
            for service in SERVICES:
                took = recover(host, service, url, host_id)
                print(f"round {number + 1}: {service} "
                      f"{'not back' if took is None else f'{took:.2f} s'}", file=sys.stderr)
                if took is not None:
                    figures[service].append(took)
                time.sleep(11.0)  # past the backoff reset: every kill is a first crash
    except KeyboardInterrupt:
        return 130
    finally:
        if (host / "pixsim-host.yaml").is_file():
            cli(env, "down", "--dir", str(host))
        for pid in leftovers(base):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)
    summary = {service: {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
                         "max": round(max(values), 3), "rounds": len(values)}
               for service, values in figures.items() if values}
    if options.json:
        print(json.dumps(summary, indent=2))
    else:
        print("SIGKILL -> restarted by the supervisor and the host answering (median, min-max)")
        for service, value in summary.items():
            print(f"  {service:8} {value['median']:6.2f} s  ({value['min']:.2f}-{value['max']:.2f}, "
                  f"{value['rounds']} rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
