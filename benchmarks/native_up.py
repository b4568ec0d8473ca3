#!/usr/bin/env python3
"""Cold `up` to verified healthy: the native runtime beside the Docker runtime, in one run.

    python benchmarks/native_up.py [--rounds 3] [--json] [--pixsim-host CMD] [--no-docker]

Two throw-away hosts are created in a temp dir (registered in a throw-away registry), one
with ``--runtime native`` and one with ``--runtime docker``. Each round times, through the
real CLI in a subprocess:

* cold ``up``: from nothing (no processes or containers, no data: PostgreSQL is initialised
  and its database created) to verified healthy (health, ready, identity, plugins);
* no-change ``up``: the same again, with everything running;
* ``down`` (data kept).

``down --volumes --yes`` between rounds is not timed. One untimed warm-up round of each
runtime comes first (the Docker one builds the reference backend image when it is missing).
The two hosts use different ports and run one after the other, alternating which goes
first. The figures are medians (min-max) of the rounds.

The native floor is measured in the same run, every round (see floor.py): initdb with a
scram password and CREATE DATABASE, as pixsim-host does it, then PostgreSQL and Redis from
the same packages started at once until each answers its own protocol; floor = initdb +
max(PostgreSQL, Redis). The goal: native cold ``up`` <= 1.25 x that floor.

It reports, it never asserts: the exit code is 0 whatever the figures (130 on Ctrl-C).
Whatever happens, both hosts are taken down with their data, any process still running in
the temp dir is killed by pid, and the Docker project's leftovers are removed. Without a
Docker engine (or with ``--no-docker``) only the native figures are printed. Only the
standard library is used; the native runtime needs ``pixsim-host[native]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import floor  # noqa: E402  (the benchmarks folder is not a package)

NATIVE_FLOOR_GOAL = 1.25
RUNTIMES = ("native", "docker")
OPERATIONS = ("cold_up", "nochange_up", "down")
LABELS = {"cold_up": "cold up (nothing -> verified healthy)", "nochange_up": "no-change up",
          "down": "down (data kept)"}
TIMEOUT = 300.0


def log(message: str) -> None:
    sys.stderr.write(f"[bench] {message}\n")
    sys.stderr.flush()


def pixsim_command(explicit: str | None) -> list[str]:
    if explicit:
        return explicit.split()
    sibling = Path(sys.executable).with_name("pixsim-host")
    if sibling.exists():
        return [str(sibling)]
    found = shutil.which("pixsim-host")
    return [found] if found else [sys.executable, "-m", "pixsim_host"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def docker_answers() -> str | None:
    try:
        proc = subprocess.run(["docker", "version", "--format", "{{.Server.Version}} {{.Server.APIVersion}}"],
                              capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def processes_under(base: Path) -> list[int]:
    found = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode("utf-8", "replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if str(base) in cmdline or cwd.startswith(str(base)):
            found.append(int(entry.name))
    return found


def sweep_docker(project: str) -> None:
    flt = f"label=com.docker.compose.project={project}"
    for kind, listing, remove in (
        ("containers", ["docker", "ps", "-aq", "--filter", flt], ["docker", "rm", "-fv"]),
        ("networks", ["docker", "network", "ls", "-q", "--filter", flt], ["docker", "network", "rm"]),
        ("volumes", ["docker", "volume", "ls", "-q", "--filter", flt], ["docker", "volume", "rm", "-f"]),
    ):
        ids = subprocess.run(listing, capture_output=True, text=True, timeout=60).stdout.split()
        if ids:
            log(f"removing leftover {kind} of {project}")
            subprocess.run([*remove, *ids], capture_output=True, timeout=120)


def summary(values: list[float]) -> dict[str, Any] | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values), "samples": [round(v, 4) for v in values]}


def fmt(stat: dict[str, Any] | None) -> str:
    return "-" if not stat else f"{stat['median']:.3f} ({stat['min']:.3f}-{stat['max']:.3f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per runtime (default 3)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--pixsim-host", dest="pixsim", default=None, help="command that runs pixsim-host")
    parser.add_argument("--no-docker", action="store_true", help="time the native runtime only")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    def _term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    px = pixsim_command(args.pixsim)
    engine = None if args.no_docker else docker_answers()
    runtimes = [r for r in RUNTIMES if r == "native" or engine]
    suffix = secrets.token_hex(4)
    base = Path(tempfile.mkdtemp(prefix=f"pixsim-native-bench-{suffix}-", dir="/tmp"))
    os.chmod(base, 0o755)  # as root, PostgreSQL runs as 'nobody', which must reach its data
    env = {**os.environ, "PIXSIM_HOST_HOME": str(base / "registry")}
    env.pop("PIXSIM_HOST_DIR", None)
    dirs = {runtime: base / runtime for runtime in runtimes}
    samples: dict[str, dict[str, list[float]]] = {op: {r: [] for r in runtimes} for op in OPERATIONS}
    errors: dict[str, str] = {}
    notes: list[str] = []
    projects: list[str] = []
    floors: list[dict[str, float]] = []
    interrupted = False
    load_before = [round(x, 2) for x in os.getloadavg()]
    try:
        for runtime in runtimes:
            name = f"bench-{runtime}-{suffix}"
            run([*px, "init", str(dirs[runtime]), "--yes", "--name", name, "--runtime", runtime,
                 "--port", str(free_port())], env, f"init {runtime}")
            if runtime == "docker":
                projects.append(f"pixsim-{name}")
            else:
                # Free ports picked now: the throw-away registry knows nothing of other hosts
                # on this machine, whose PostgreSQL may hold the default port.
                for key in ("native.postgres_port", "native.redis_port"):
                    run([*px, "config", "set", "--dir", str(dirs[runtime]), key, str(free_port())],
                        env, f"config set {key}")
        floor_bins: tuple[Path, Path] | None = None
        try:
            floor_bins = floor.native_binaries(base / "floor-bin")
        except (OSError, RuntimeError) as exc:
            errors["floor"] = f"setup: {exc}"
        plan = [("warm-up", 0)] + [(f"round {i}/{args.rounds}", i) for i in range(1, args.rounds + 1)]
        for label, index in plan:
            order = runtimes if index % 2 == 0 else runtimes[::-1]
            for runtime in order:
                if runtime in errors:
                    continue
                d = ["--dir", str(dirs[runtime])]
                up = [*px, "up", *d, "--pull", "never"] if runtime == "docker" else [*px, "up", *d]
                try:
                    times = {"cold_up": run(up, env, f"{runtime} cold up"),
                             "nochange_up": run(up, env, f"{runtime} no-change up"),
                             "down": run([*px, "down", *d], env, f"{runtime} down")}
                except Failed as exc:
                    errors[runtime] = f"{label}: {exc}"
                    log(f"{runtime} failed in {label}: {exc}")
                    continue
                finally:
                    run([*px, "down", *d, "--volumes", "--yes"], env, f"{runtime} clean-up", check=False)
                log(f"{label} {runtime}: " + ", ".join(f"{op} {t:.3f}s" for op, t in times.items()))
                if index:
                    for op, seconds in times.items():
                        samples[op][runtime].append(seconds)
            if index and floor_bins is not None and "floor" not in errors:
                work = base / f"floor-{index}"
                work.mkdir(mode=0o755)
                try:
                    parts = floor.native_floor(work, *floor_bins, free_port(), free_port())
                except (OSError, RuntimeError, TimeoutError, subprocess.CalledProcessError) as exc:
                    errors["floor"] = f"{label}: {exc}"
                else:
                    floors.append(parts)
                    log(f"{label} native floor: " + ", ".join(f"{k} {v:.3f}s" for k, v in parts.items()))
                finally:
                    shutil.rmtree(work, ignore_errors=True)
    except KeyboardInterrupt:
        interrupted = True
        notes.append("interrupted (Ctrl-C): partial results")
    except Failed as exc:
        errors["setup"] = str(exc)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for runtime, directory in dirs.items():
            if (directory / "pixsim-host.yaml").is_file():
                run([*px, "down", "--dir", str(directory), "--volumes", "--yes"], env,
                    f"{runtime} clean-up", check=False)
        left = processes_under(base)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if left:
            notes.append(f"killed processes left in {base}: {left}")
        for project in projects:
            sweep_docker(project)
        shutil.rmtree(base, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if not engine:
        notes.append("no Docker engine answered (or --no-docker): native figures only")

    ops: dict[str, Any] = {}
    for op in OPERATIONS:
        native, docker = summary(samples[op]["native"]), summary(samples[op].get("docker", []))
        ratio = native["median"] / docker["median"] if native and docker and docker["median"] else None
        ops[op] = {"native": native, "docker": docker, "ratio_native_to_docker": ratio}
    floor_stats = {part: summary([f[part] for f in floors])
                   for part in ("initdb", "db", "redis", "floor", "migrate", "backend", "full_floor")}
    native_cold = ops["cold_up"]["native"]
    floor_ratio = (native_cold["median"] / floor_stats["floor"]["median"]
                   if native_cold and floor_stats["floor"] else None)
    full_ratio = (native_cold["median"] / floor_stats["full_floor"]["median"]
                  if native_cold and floor_stats["full_floor"] else None)
    ops["native_floor"] = {**floor_stats, "ratio_cold_up_to_floor": floor_ratio,
                           "ratio_cold_up_to_full_floor": full_ratio, "goal": NATIVE_FLOOR_GOAL}
    meta = {"rounds": args.rounds, "engine": engine, "pixsim_host": " ".join(px),
            "load_before": load_before, "load_after": [round(x, 2) for x in os.getloadavg()],
            "cpus": os.cpu_count()}
    if args.json:
        json.dump({"meta": meta, "operations": ops, "errors": errors, "notes": notes,
                   "interrupted": interrupted}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 130 if interrupted else 0
    rows = [("operation", "native s median (min-max)", "docker s median (min-max)", "native/docker")]
    for op in OPERATIONS:
        ratio = ops[op]["ratio_native_to_docker"]
        rows.append((LABELS[op], fmt(ops[op]["native"]), fmt(ops[op]["docker"]),
                     f"{ratio:.2f}" if ratio is not None else "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    print(f"pixsim-host: native runtime vs Docker runtime, {args.rounds} rounds, "
          f"engine {engine or 'none'}")
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    if floor_stats["floor"]:
        parts = ", ".join(f"{part} {fmt(floor_stats[part])}" for part in ("initdb", "db", "redis"))
        verdict = ("PASS" if floor_ratio is not None and floor_ratio <= NATIVE_FLOOR_GOAL else "MISS")
        ratio_text = f"{floor_ratio:.2f}" if floor_ratio is not None else "-"
        print(f"native floor {fmt(floor_stats['floor'])} s ({parts}); native cold up / floor = "
              f"{ratio_text} (goal <= {NATIVE_FLOOR_GOAL:g}): {verdict}")
        if floor_stats["full_floor"] and full_ratio is not None:
            more = ", ".join(f"{part} {fmt(floor_stats[part])}" for part in ("migrate", "backend"))
            print(f"with the backend's migrations and start ({more}): full floor "
                  f"{fmt(floor_stats['full_floor'])} s; native cold up / full floor = {full_ratio:.2f}")
    print(f"load average before/after: {meta['load_before']} / {meta['load_after']} on {meta['cpus']} CPUs")
    for runtime, error in errors.items():
        print(f"ERROR ({runtime}): {error}")
    for note in notes:
        print(f"note: {note}")
    return 130 if interrupted else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
