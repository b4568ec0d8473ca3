#!/usr/bin/env python3
"""How `hosts list`, `status` and `up` of one host grow with the number of registered hosts.

    python benchmarks/scale.py [--runs 5] [--levels 1,10,50] [--running 5] [--pixsim-host CMD]

In a throw-away registry (``PIXSIM_HOST_HOME`` in a temp dir) and temp host directories, real
Docker hosts are created with the real CLI: at each level N (1, 10, 50 registered hosts),
``min(running, N)`` of them are up on the engine (``DOCKER_HOST``; stand-in images, never
pulled), the others only registered. At every level the same host H (one of the running ones)
is timed, ``--runs`` times each, interleaved:

* ``pixsim-host hosts list`` (every registered host; the running ones are probed),
* ``pixsim-host status --dir H``,
* ``pixsim-host up --dir H --pull never`` (nothing changed).

It prints the median (min-max) per operation and level, and how each grows: the ratio of the
largest level's median to the smallest's, and the cost per extra registered host (the slope
between them). It reports, never asserts (exit 0; 130 on Ctrl-C). Everything it created is
removed at the end (the running hosts with ``down --volumes --yes``, leftovers by project
label, the temp dir), also on failure or Ctrl-C. Standard library only.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

OPERATIONS = ("hosts list", "status", "no-change up")
TIMEOUT = 300.0


def log(message: str) -> None:
    sys.stderr.write(f"[scale] {message}\n")
    sys.stderr.flush()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pixsim_command(explicit: str | None) -> list[str]:
    if explicit:
        return explicit.split()
    sibling = Path(sys.executable).with_name("pixsim-host")
    if sibling.exists():
        return [str(sibling)]
    found = shutil.which("pixsim-host")
    return [found] if found else [sys.executable, "-m", "pixsim_host"]


class Failed(Exception):
    pass


def run(cmd: list[str], env: dict[str, str], what: str, check: bool = True) -> float:
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=env,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise Failed(f"{what}: no answer after {TIMEOUT:.0f} s") from None
    elapsed = time.perf_counter() - started
    if proc.returncode in (130, -signal.SIGINT):
        raise KeyboardInterrupt
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stderr + proc.stdout).strip().splitlines()[-10:])
        raise Failed(f"{what}: exit code {proc.returncode}\n{tail}")
    return elapsed


def sweep_docker(project: str) -> None:
    flt = f"label=com.docker.compose.project={project}"
    for listing, remove in (
        (["docker", "ps", "-aq", "--filter", flt], ["docker", "rm", "-fv"]),
        (["docker", "network", "ls", "-q", "--filter", flt], ["docker", "network", "rm"]),
        (["docker", "volume", "ls", "-q", "--filter", flt], ["docker", "volume", "rm", "-f"]),
    ):
        ids = subprocess.run(listing, capture_output=True, text=True, timeout=60).stdout.split()
        if ids:
            log(f"removing leftovers of {project}")
            subprocess.run([*remove, *ids], capture_output=True, timeout=120)


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})" if values else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per operation and level")
    parser.add_argument("--levels", default="1,10,50", help="numbers of registered hosts")
    parser.add_argument("--running", type=int, default=5, help="hosts up at each level (at most N)")
    parser.add_argument("--pixsim-host", dest="pixsim", default=None, help="command that runs pixsim-host")
    args = parser.parse_args(argv)
    levels = sorted({int(x) for x in args.levels.split(",")})
    if not levels or levels[0] < 1 or args.runs < 1 or args.running < 1:
        parser.error("levels, --runs and --running must be at least 1")

    def _term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    px = pixsim_command(args.pixsim)
    suffix = secrets.token_hex(3)
    base = Path(tempfile.mkdtemp(prefix=f"pixsim-scale-{suffix}-"))
    env = {**os.environ, "PIXSIM_HOST_HOME": str(base / "registry"), "NO_COLOR": "1"}
    env.pop("PIXSIM_HOST_DIR", None)
    hosts: list[Path] = []
    up_hosts: list[Path] = []
    names: list[str] = []
    times: dict[str, dict[int, list[float]]] = {op: {n: [] for n in levels} for op in OPERATIONS}
    notes: list[str] = []
    interrupted = False
    load_before = [round(x, 2) for x in os.getloadavg()]
    try:
        for level in levels:
            while len(hosts) < level:
                index = len(hosts)
                name = f"scale-{suffix}-{index:02}"
                directory = base / name
                run([*px, "init", str(directory), "--yes", "--name", name, "--port", str(free_port())],
                    env, f"init {name}")
                hosts.append(directory)
                names.append(name)
            for directory in hosts[:min(args.running, level)]:
                if directory not in up_hosts:
                    up_hosts.append(directory)
                    seconds = run([*px, "up", "--dir", str(directory), "--pull", "never"], env,
                                  f"up {directory.name}")
                    log(f"{directory.name} up in {seconds:.1f} s")
            target = hosts[0]
            commands = {"hosts list": [*px, "hosts", "list"],
                        "status": [*px, "status", "--dir", str(target)],
                        "no-change up": [*px, "up", "--dir", str(target), "--pull", "never"]}
            for _ in range(args.runs):
                for op, cmd in commands.items():
                    times[op][level].append(run(cmd, env, f"{op} at {level} hosts"))
            log(f"{level} registered, {len(up_hosts)} running: " + ", ".join(
                f"{op} {statistics.median(times[op][level]):.3f}s" for op in OPERATIONS))
    except KeyboardInterrupt:
        interrupted = True
        notes.append("interrupted (Ctrl-C): partial results")
    except Failed as exc:
        notes.append(f"ERROR: {exc}")
        log(f"failed: {exc}")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for directory in up_hosts:
            run([*px, "down", "--dir", str(directory), "--volumes", "--yes"], env,
                f"clean-up {directory.name}", check=False)
        for name in names:
            sweep_docker(f"pixsim-{name}")
        shutil.rmtree(base, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    version = ["docker", "version", "--format", "{{.Server.Version}} (API {{.Server.APIVersion}})"]
    engine = subprocess.run(version, capture_output=True, text=True, timeout=60).stdout.strip()
    print(f"scale: one host's commands with 1..{levels[-1]} registered hosts ({args.running} running, "
          f"Docker runtime), {args.runs} runs each, engine {engine or 'unreachable'}")
    head = ["operation", *(f"{n} hosts s" for n in levels), f"x ({levels[-1]} vs {levels[0]})",
            "per extra host"]
    rows = [head]
    for op in OPERATIONS:
        cells = [fmt(times[op][n]) for n in levels]
        first, last = times[op][levels[0]], times[op][levels[-1]]
        if first and last and len(levels) > 1:
            growth = statistics.median(last) / statistics.median(first)
            slope = (statistics.median(last) - statistics.median(first)) / (levels[-1] - levels[0])
            rows.append([op, *cells, f"{growth:.2f}", f"{slope * 1000:+.1f} ms"])
        else:
            rows.append([op, *cells, "-", "-"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print(f"load average before/after: {load_before} / {[round(x, 2) for x in os.getloadavg()]} "
          f"on {os.cpu_count()} CPUs")
    for note in notes:
        print(f"note: {note}")
    return 130 if interrupted else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
