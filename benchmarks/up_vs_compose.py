#!/usr/bin/env python3
"""pixsim-host `up` / no-change `up` / `down` against Docker Compose v2 at its best, and the floor.

    python benchmarks/up_vs_compose.py [--rounds 5] [--json] [--pixsim-host CMD] [--profile]
    DOCKER_HOST=unix:///var/run/docker26.sock python benchmarks/up_vs_compose.py   # other engine

One run, one engine (the one ``DOCKER_HOST`` names; run it once per engine), the same images
and the same rendered ``compose.yaml``:

* pixsim-host: ``init`` a throw-away host (``bench-<hex>``, a free port) in a temp dir, then
  time the real CLI in a subprocess: ``up --pull never`` from nothing (no containers, no
  volumes, no network) to verified healthy, a second ``up`` (nothing changed) and ``down``.
  ``down --volumes --yes`` between rounds is not timed.
* Compose at its best: ``docker compose -f FILE --env-file DIR/.env -p <other project>``
  ``up -d --wait --pull never`` from nothing, the same again (nothing changed) and ``down``;
  ``down -v`` between rounds is not timed. From nothing, db and redis come first, then the
  migrations (``run --rm --no-deps backend ...migrate``: the backend refuses an unmigrated
  database), then the rest; services whose healthcheck is disabled (the worker) get an
  ``up -d`` of their own, since Compose 2.26's ``--wait`` fails on them. ``--wait`` waits
  for the containers' own healthchecks. Where the engine honours ``start_interval`` (API >=
  1.44, Docker 25), FILE is a copy of the rendered file with ``start_interval: 1s`` added to
  every healthcheck (the rendered 10-15 s intervals would otherwise hold Compose back);
  elsewhere FILE is the rendered file itself.
* The floor, measured in the same run: ``docker compose create`` (untimed) makes the
  containers from the same file under a third project; then they are started through the
  Engine API and PostgreSQL, Redis and the backend are timed from their container's start
  until each answers its own protocol (see floor.py): floor = max(db, redis) + migrate + backend.

Both tools publish the same host port, so they never run at the same time; the order
alternates every round. The engine may be shared: a sample during which one of the
compose file's images was re-tagged (someone rebuilt a stand-in or the reference backend,
so the tool rightly recreated containers), or whose no-change ``up`` recreated containers,
is flagged and left out of the medians (unless every sample of that cell was). One untimed
warm-up round of each tool comes first (the first pixsim-host ``up`` builds the reference
backend image when it is missing or stale).

Figures: medians (min-max) of wall time, the client CPU time (user+sys of the tool's
processes: pixsim-host's own process and its children, against the docker CLI and its
Compose plugin) and the ratios against the goals: cold ``up`` <= 0.5 x Compose at its best
and <= 1.25 x the floor; no-change ``up`` <= 0.3 x Compose's, with client CPU <= 2 x
Compose's; ``down`` <= 0.8 x Compose's.

``--profile`` adds a per-phase timeline of one cold and one no-change ``up`` (the time of
each progress line pixsim-host prints), the slowest imports (``python -X importtime``) and
the functions with the most cumulative time (cProfile).

It reports, it never asserts: the exit code is 0 whatever the figures (130 on Ctrl-C).
Whatever happens, all three projects' containers, volumes and networks and the temp dir are
removed (try/finally), and anything that could not be removed is reported. The benchmark's
host is registered in a throw-away registry (``PIXSIM_HOST_HOME`` in the temp dir). Only
the standard library is used (and PyYAML, a dependency of pixsim-host, for the copy of the
compose file); ``docker`` must be on PATH. Images are never pulled.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import floor  # noqa: E402  (the benchmarks folder is not a package)

PIXSIM = "pixsim-host"
COMPOSE = "compose"
TOOLS = (PIXSIM, COMPOSE)
OPERATIONS = ("cold_up", "nochange_up", "down")
# The reference backend's schema migrations (its default backend.migrate).
MIGRATE = ["python", "-m", "pixsim_reference_backend", "migrate"]
LABELS = {
    "cold_up": "cold up (nothing -> healthy)",
    "nochange_up": "no-change up",
    "down": "down",
}
PROJECT_LABEL = "com.docker.compose.project"
OP_TIMEOUT = 300.0  # seconds, for any one subprocess
MAX_FAILURES = 2  # failed rounds after which a tool is given up


class StepFailed(Exception):
    def __init__(self, what: str, proc: subprocess.CompletedProcess[str] | None, reason: str = "") -> None:
        tail = ""
        if proc is not None:
            text = (proc.stderr or "") + (proc.stdout or "")
            tail = "\n".join(text.strip().splitlines()[-12:])
            reason = reason or f"exit code {proc.returncode}"
        super().__init__(f"{what}: {reason}" + (f"\n{tail}" if tail else ""))
        self.what = what


@dataclass
class Sample:
    seconds: float
    cpu: float = 0.0  # user+sys seconds of the tool's client processes
    round: int = 0
    note: str = ""
    disturbed: bool = False  # something outside the benchmark changed the engine meanwhile

    def flag(self, note: str) -> None:
        self.note = f"{self.note}; {note}" if self.note else note
        self.disturbed = True


@dataclass
class Results:
    samples: dict[str, dict[str, list[Sample]]] = field(
        default_factory=lambda: {op: {tool: [] for tool in TOOLS} for op in OPERATIONS}
    )
    errors: dict[str, str] = field(default_factory=dict)  # tool -> first failure
    notes: list[str] = field(default_factory=list)
    floor: list[dict[str, float]] = field(default_factory=list)  # per round: db, redis, backend, floor


def log(message: str) -> None:
    sys.stderr.write(f"[bench] {message}\n")
    sys.stderr.flush()


def run(cmd: list[str], what: str, *, check: bool = True,
        timeout: float = OP_TIMEOUT) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise StepFailed(what, None, f"no answer after {timeout:.0f} s") from None
    if check and proc.returncode in (130, -signal.SIGINT):
        raise KeyboardInterrupt  # the child got the Ctrl-C (e.g. from the terminal) first
    if check and proc.returncode != 0:
        raise StepFailed(what, proc)
    return proc


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmds: list[list[str]], what: str, index: int) -> Sample:
    """Wall clock of the commands (one after the other), and the CPU time their processes used."""
    cpu = children_cpu()
    started = time.perf_counter()
    for cmd in cmds:
        run(cmd, what)
    wall = time.perf_counter() - started
    return Sample(wall, children_cpu() - cpu, index)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pixsim_command(explicit: str | None) -> list[str]:
    if explicit:
        return explicit.split()
    found = shutil.which("pixsim-host")
    if found:
        return [found]
    sibling = Path(sys.executable).with_name("pixsim-host")
    if sibling.exists():
        return [str(sibling)]
    return [sys.executable, "-m", "pixsim_host"]


# ---- engine-side bookkeeping (untimed) --------------------------------------------------------

def project_resources(project: str) -> dict[str, list[str]]:
    """Containers, volumes and networks carrying this Compose project label."""
    flt = f"label={PROJECT_LABEL}={project}"
    out: dict[str, list[str]] = {}
    for kind, cmd in (
        ("containers", ["docker", "ps", "-a", "-q", "--no-trunc", "--filter", flt]),
        ("volumes", ["docker", "volume", "ls", "-q", "--filter", flt]),
        ("networks", ["docker", "network", "ls", "-q", "--no-trunc", "--filter", flt]),
    ):
        proc = run(cmd, f"list {kind} of {project}", check=False, timeout=60)
        out[kind] = proc.stdout.split()
    # Also by name, in case something was created without labels.
    proc = run(["docker", "network", "ls", "-q", "--no-trunc", "--filter", f"name=^{project}_default$"],
               "list network by name", check=False, timeout=60)
    out["networks"] = sorted(set(out["networks"]) | set(proc.stdout.split()))
    return out


def container_ids(project: str) -> list[str]:
    return sorted(project_resources(project)["containers"])


def assert_nothing(project: str, what: str) -> None:
    left = {k: v for k, v in project_resources(project).items() if v}
    if left:
        raise StepFailed(what, None, f"project {project} is not empty before a cold start: {left}")


def image_ids(images: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for image in images:
        proc = run(["docker", "image", "inspect", "--format", "{{.Id}}", image], "inspect image",
                   check=False, timeout=60)
        out[image] = (proc.stdout.strip() or None) if proc.returncode == 0 else None
    return out


def changed_images(before: dict[str, str | None], after: dict[str, str | None]) -> list[str]:
    return [image for image in before if before[image] != after.get(image)]


def sweep(project: str) -> dict[str, list[str]]:
    """Remove whatever is left of a project; return what could not be removed."""
    res = project_resources(project)
    if res["containers"]:
        run(["docker", "rm", "-f", "-v", *res["containers"]], f"rm containers of {project}",
            check=False, timeout=120)
    if res["networks"]:
        run(["docker", "network", "rm", *res["networks"]], f"rm network of {project}",
            check=False, timeout=60)
    if res["volumes"]:
        run(["docker", "volume", "rm", "-f", *res["volumes"]], f"rm volumes of {project}",
            check=False, timeout=60)
    return {k: v for k, v in project_resources(project).items() if v}


# ---- the two tools ----------------------------------------------------------------------------

def yaml_db_env(compose_file: Path) -> tuple[str, str]:
    import yaml

    env = yaml.safe_load(compose_file.read_text())["services"]["db"].get("environment", {})
    user = str(env.get("POSTGRES_USER", "postgres"))
    return user, str(env.get("POSTGRES_DB", user))


def compose_services(compose_file: Path) -> tuple[list[str], list[str]]:
    """The file's services, and those of them whose healthcheck is disabled."""
    import yaml

    services = yaml.safe_load(compose_file.read_text())["services"]
    unchecked = [name for name, spec in services.items()
                 if (spec.get("healthcheck") or {}).get("disable")]
    return sorted(services), sorted(unchecked)


def compose_at_best(rendered: Path, target: Path) -> Path:
    """A copy of the rendered file whose healthchecks run every second during their start
    period (``start_interval``, honoured from API 1.44 on), which is how a user who tuned
    Compose would run it."""
    import yaml

    data = yaml.safe_load(rendered.read_text())
    for service in data.get("services", {}).values():
        check = service.get("healthcheck")
        if check and not check.get("disable"):
            check.setdefault("start_period", "60s")
            check["start_interval"] = "1s"
    data = {k: v for k, v in data.items() if not k.startswith("x-")}
    target.write_text(yaml.safe_dump(data, sort_keys=False))
    return target


def read_env(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            out[key.strip()] = value.strip().strip("'\"")
    return out


class Bench:
    def __init__(self, pixsim: list[str], hostdir: Path, compose_project: str, pixsim_project: str,
                 images: list[str], compose_file: Path, floor_project: str) -> None:
        self.px = [*pixsim]
        self.dir = hostdir
        self.cp = compose_project
        self.pp = pixsim_project
        self.fp = floor_project
        self.images = images
        self.compose_file = compose_file
        # --project-directory: relative paths in the file (./plugins) are the host directory's,
        # wherever the copy with start_interval lives.
        files = ["-f", str(compose_file), "--project-directory", str(hostdir),
                 "--env-file", str(hostdir / ".env")]
        self.compose = ["docker", "compose", *files, "-p", compose_project]
        self.floor_compose = ["docker", "compose", *files, "-p", floor_project]
        self.secrets = read_env(hostdir / ".env")
        db_env = yaml_db_env(compose_file)
        self.services, self.unchecked = compose_services(compose_file)
        self.db_user, self.db_name = db_env

    def floor(self, index: int) -> dict[str, float]:
        """Create the containers (untimed), then time each service from its start to answering."""
        assert_nothing(self.fp, "floor")
        try:
            run([*self.floor_compose, "create", "--pull", "never"], "floor: compose create")
            return floor.docker_floor(self.fp, self.secrets, self.db_user, self.db_name,
                                      migrate=[MIGRATE])
        except TimeoutError as exc:
            # Say why: the state and last log lines of each container.
            states = run(["docker", "ps", "-a", "--filter", f"label={PROJECT_LABEL}={self.fp}",
                          "--format", "{{.Names}} {{.Status}}"], "floor: states", check=False).stdout
            logs = run([*self.floor_compose, "logs", "--tail", "5", "--no-color"], "floor: logs",
                       check=False).stdout
            raise RuntimeError(f"{exc}\n{states.strip()}\n{logs.strip()}") from None
        finally:
            run([*self.floor_compose, "down", "-v", "--remove-orphans"], "floor clean-up", check=False)

    def project(self, tool: str) -> str:
        return self.pp if tool == PIXSIM else self.cp

    def commands(self, tool: str) -> dict[str, list[list[str]]]:
        """Each operation's commands, run one after the other."""
        if tool == PIXSIM:
            d = ["--dir", str(self.dir)]
            up = [*self.px, "up", *d, "--pull", "never"]
            return {"cold_up": [up], "nochange_up": [up], "down": [[*self.px, "down", *d]],
                    "clean": [[*self.px, "down", *d, "--volumes", "--yes"]]}
        up = [*self.compose, "up", "-d", "--wait", "--pull", "never"]
        # `up --wait` fails on a service without a healthcheck (Compose 2.26: the worker's is
        # disabled), so those are brought up by a second `up` that does not wait.
        checked = [name for name in self.services if name not in self.unchecked]
        both = [[*up, *checked], [*self.compose, "up", "-d", "--pull", "never", *self.unchecked]]
        if not self.unchecked:
            both = [up]
        # The backend refuses an unmigrated database (as PixSim7's does): a Compose user
        # starts the data services, runs the migrations once, then brings up the rest.
        cold = [[*up, "db", "redis"],
                [*self.compose, "run", "--rm", "--no-deps", "backend", *MIGRATE],
                *both]
        return {"cold_up": cold, "nochange_up": both, "down": [[*self.compose, "down"]],
                "clean": [[*self.compose, "down", "-v", "--remove-orphans"]]}

    def clean(self, tool: str) -> None:
        for cmd in self.commands(tool)["clean"]:
            run(cmd, f"{tool} clean-up", check=False)

    def round(self, tool: str, index: int) -> dict[str, Sample]:
        """One cold up / no-change up / down; leaves the project empty (volumes removed).

        The engine is shared: when an image is re-tagged meanwhile (someone rebuilt a
        stand-in or the reference backend), both tools recreate containers, which is not
        what is measured; such samples are flagged ``disturbed``.
        """
        cmds = self.commands(tool)
        project = self.project(tool)
        assert_nothing(project, f"{tool} cold up")
        out: dict[str, Sample] = {}
        try:
            images = image_ids(self.images)
            for op in OPERATIONS:
                ids = container_ids(project)
                sample = out[op] = timed(cmds[op], f"{tool} {LABELS[op]}", index)
                now = image_ids(self.images)
                moved = changed_images(images, now)
                images = now
                after = container_ids(project)
                if op == "cold_up" and len(after) != len(self.services):
                    raise StepFailed(f"{tool} cold up", None,
                                     f"{len(after)} containers instead of {len(self.services)}")
                if op == "nochange_up" and after != ids:
                    sample.flag("containers were recreated")
                if moved:
                    why = "built by this up" if tool == PIXSIM and op == "cold_up" else "by someone else"
                    sample.flag(f"image {', '.join(moved)} changed during this operation ({why})")
                if op == "down":
                    left = project_resources(project)
                    if left["containers"] or left["networks"]:
                        sample.note = "containers or network left after down"
        finally:
            self.clean(tool)
        return out


# ---- report -----------------------------------------------------------------------------------

def summary(samples: list[Sample]) -> dict[str, Any] | None:
    if not samples:
        return None
    values = [s.seconds for s in samples]
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values), "samples": [round(v, 4) for v in values],
            "cpu_median": statistics.median(s.cpu for s in samples)}


def usable(samples: list[Sample]) -> list[Sample]:
    """Undisturbed samples; all of them when every one was disturbed."""
    return [s for s in samples if not s.disturbed] or list(samples)


GOALS = {
    # operation -> (what the ratio compares, limit)
    "cold_up": (("compose", 0.5), ("floor", 1.25)),
    "nochange_up": (("compose", 0.3), ("compose_cpu", 2.0)),
    "down": (("compose", 0.8),),
}


def floor_summary(results: Results) -> dict[str, Any] | None:
    if not results.floor:
        return None
    out: dict[str, Any] = {}
    for part in ("db", "redis", "migrate", "backend", "floor"):
        values = [r[part] for r in results.floor]
        out[part] = {"median": statistics.median(values), "min": min(values), "max": max(values),
                     "n": len(values), "samples": [round(v, 4) for v in values]}
    return out


def evaluate(results: Results) -> dict[str, Any]:
    ops: dict[str, Any] = {}
    floor_stats = floor_summary(results)
    for op in OPERATIONS:
        px = summary(usable(results.samples[op][PIXSIM]))
        cp = summary(usable(results.samples[op][COMPOSE]))
        ratios: dict[str, float | None] = {
            "compose": px["median"] / cp["median"] if px and cp and cp["median"] > 0 else None,
            "compose_cpu": (px["cpu_median"] / cp["cpu_median"]
                            if px and cp and cp["cpu_median"] > 0 else None),
            "floor": (px["median"] / floor_stats["floor"]["median"]
                      if px and floor_stats and op == "cold_up" else None),
        }
        goals = []
        for against, limit in GOALS[op]:
            ratio = ratios[against]
            goals.append({"against": against, "limit": limit, "ratio": ratio,
                          "result": "N/A" if ratio is None else ("PASS" if ratio <= limit else "MISS")})
        notes = []
        for tool in TOOLS:
            excluded = len(usable(results.samples[op][tool])) < len(results.samples[op][tool])
            for s in results.samples[op][tool]:
                if s.note:
                    left_out = " (left out of the figures)" if s.disturbed and excluded else ""
                    notes.append(f"{tool} round {s.round}: {s.seconds:.3f} s, {s.note}{left_out}")
        ops[op] = {"pixsim-host": px, "compose": cp, "ratios": ratios, "goals": goals, "notes": notes,
                   "all_samples": {tool: [{"round": s.round, "seconds": round(s.seconds, 4),
                                           "cpu_seconds": round(s.cpu, 4),
                                           "disturbed": s.disturbed, "note": s.note}
                                          for s in results.samples[op][tool]] for tool in TOOLS}}
    ops["floor"] = floor_stats
    return ops


def fmt(stat: dict[str, Any] | None, total: int) -> str:
    if not stat:
        return "-"
    used = f" [{stat['n']} of {total}]" if stat["n"] < total else ""
    return f"{stat['median']:.2f} ({stat['min']:.2f}-{stat['max']:.2f}){used}"


GOAL_NAMES = {"compose": "x Compose", "compose_cpu": "x Compose's client CPU", "floor": "x floor"}


def table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    rule = "  ".join("-" * w for w in widths)
    lines = [rule]
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            lines.append(rule)
    lines.append(rule)
    return lines


def print_table(ops: dict[str, Any], meta: dict[str, Any], results: Results) -> None:
    floor_stats = ops["floor"]
    rows: list[tuple[str, ...]] = [("operation", "pixsim-host s", "Compose s", "floor s",
                                    "CPU px / compose s", "goal: ratio", "result")]
    for op in OPERATIONS:
        o = ops[op]
        px, cp = (fmt(o[tool], len(results.samples[op][tool])) for tool in TOOLS)
        fl = fmt(floor_stats["floor"], len(results.floor)) if op == "cold_up" and floor_stats else ""
        cpu = (f"{o[PIXSIM]['cpu_median']:.2f} / {o[COMPOSE]['cpu_median']:.2f}"
               if o[PIXSIM] and o[COMPOSE] else "-")
        for i, goal in enumerate(o["goals"]):
            ratio = f"{goal['ratio']:.2f}" if goal["ratio"] is not None else "-"
            text = f"{ratio} (<= {goal['limit']:g}{GOAL_NAMES[goal['against']]})"
            first = i == 0
            rows.append((LABELS[op] if first else "", px if first else "", cp if first else "",
                         fl if first else "", cpu if first else "", text, goal["result"]))
    print(f"pixsim-host vs docker compose ({meta['compose_file']}): {meta['rounds']} rounds, "
          f"engine {meta['engine']}, {meta['compose_version']}")
    print("\n".join(table(rows)))
    print("times: median (min-max) seconds of wall clock; CPU: median user+sys seconds of the client")
    if floor_stats:
        parts = ", ".join(f"{part} {fmt(floor_stats[part], len(results.floor))}"
                          for part in ("db", "redis", "migrate", "backend"))
        print(f"floor parts (from each container's start to answering): {parts}")
    print(f"load average before/after: {meta['load_before']} / {meta['load_after']} on {os.cpu_count()} CPUs")
    for op in OPERATIONS:
        for note in ops[op]["notes"]:
            print(f"note ({LABELS[op]}): {note}")
    for tool, error in results.errors.items():
        print(f"ERROR ({tool}): {error}")
    for note in results.notes:
        print(f"note: {note}")


# ---- main -------------------------------------------------------------------------------------

def engine_meta() -> dict[str, Any]:
    proc = run(["docker", "version", "--format", "{{.Server.Version}} {{.Server.APIVersion}}"],
               "docker version", check=False, timeout=60)
    version, _, api = proc.stdout.strip().partition(" ")
    comp = run(["docker", "compose", "version", "--short"], "docker compose version", check=False, timeout=60)
    try:
        start_interval = tuple(int(x) for x in api.split(".")) >= (1, 44)
    except ValueError:
        start_interval = False
    return {"engine": f"{version} (API {api})" if version else "unreachable",
            "compose_version": f"Compose {comp.stdout.strip()}" if comp.returncode == 0 else "no Compose v2",
            "start_interval": start_interval}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per tool (default 5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--pixsim-host", dest="pixsim", default=None,
                        help="command that runs pixsim-host (default: pixsim-host on PATH)")
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up round")
    parser.add_argument("--profile", action="store_true",
                        help="also print a per-phase timeline of one cold and one no-change up")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    # SIGTERM is handled like Ctrl-C, so the clean-up below runs either way.
    def _term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)

    results = Results()
    meta = engine_meta()
    meta["rounds"] = args.rounds
    meta["compose_file"] = "the rendered compose.yaml"
    meta["load_before"] = [round(x, 2) for x in os.getloadavg()]
    if not meta["start_interval"]:
        results.notes.append("engine API < 1.44: no healthcheck start_interval, so `compose up --wait` "
                             "(on the rendered file) waits for the first healthcheck run at "
                             "`interval`; pixsim-host probes actively")
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        results.notes.append("PYTHONDONTWRITEBYTECODE is set: modules without a .pyc (an editable "
                             "checkout's) are compiled on every start, unlike an installed wheel's")
    px = pixsim_command(args.pixsim)
    suffix = secrets.token_hex(4)
    name = f"bench-{suffix}"
    tmp = Path(tempfile.mkdtemp(prefix=f"pixsim-bench-{suffix}-"))
    # The benchmark's host is registered in a throw-away registry, never the user's.
    os.environ["PIXSIM_HOST_HOME"] = str(tmp / "pixsim-home")
    hostdir = tmp / "host"
    bench: Bench | None = None
    projects: list[str] = []
    interrupted = False
    try:
        port = free_port()
        run([*px, "init", str(hostdir), "--yes", "--name", name, "--port", str(port)], "pixsim-host init")
        text = (hostdir / "compose.yaml").read_text()
        match = re.search(r"^name:\s*['\"]?([^'\"\s]+)", text, re.M)
        if not match:
            raise StepFailed("read compose.yaml", None, "no top-level `name:`")
        pixsim_project = match.group(1)
        images = sorted(set(re.findall(r"^    image:\s*['\"]?([^'\"\s]+)", text, re.M)))
        compose_project = f"cmp-{name}"
        floor_project = f"floor-{name}"
        projects = [pixsim_project, compose_project, floor_project]
        rendered = hostdir / "compose.yaml"
        compose_file = (compose_at_best(rendered, tmp / "compose-start-interval.yaml")
                        if meta["start_interval"] else rendered)
        meta["compose_file"] = ("a copy of the rendered compose.yaml with start_interval: 1s"
                                if meta["start_interval"] else "the rendered compose.yaml")
        bench = Bench(px, hostdir, compose_project, pixsim_project, images, compose_file, floor_project)
        meta.update(host=name, port=port,
                    projects={PIXSIM: pixsim_project, COMPOSE: compose_project, "floor": floor_project},
                    images=images, pixsim_host=" ".join(px))
        log(f"host {name} on 127.0.0.1:{port}; projects {', '.join(projects)}")

        failures: dict[str, int] = {}
        plan = [] if args.no_warmup else [("warm-up", 0)]
        plan += [(f"round {i}/{args.rounds}", i) for i in range(1, args.rounds + 1)]
        for label, index in plan:
            order = TOOLS if index % 2 == 0 else TOOLS[::-1]
            for tool in order:
                if tool in results.errors:
                    continue
                try:
                    samples = bench.round(tool, index)
                except StepFailed as exc:
                    # One failed round (a loaded machine can push a healthcheck past its
                    # timeout) is reported and retried next round; a second one ends the tool.
                    failures[tool] = failures.get(tool, 0) + 1
                    log(f"{tool} failed in {label}: {exc}")
                    if failures[tool] >= MAX_FAILURES:
                        results.errors[tool] = f"{label}: {exc}"
                    else:
                        results.notes.append(f"{tool} failed once, in {label} (retried): "
                                             f"{str(exc).splitlines()[0]}; last line: "
                                             f"{str(exc).splitlines()[-1]}")
                    continue
                log(f"{label} {tool}: " + ", ".join(f"{op} {s.seconds:.3f}s" for op, s in samples.items()))
                if index == 0:
                    continue
                for op, sample in samples.items():
                    results.samples[op][tool].append(sample)
            if index > 0 and "floor" not in results.errors:
                try:
                    parts = bench.floor(index)
                except (StepFailed, RuntimeError, TimeoutError, OSError) as exc:
                    results.errors["floor"] = f"{label}: {exc}"
                    log(f"floor failed in {label}: {exc}")
                else:
                    results.floor.append(parts)
                    log(f"{label} floor: " + ", ".join(f"{k} {v:.3f}s" for k, v in parts.items()))
            if all(tool in results.errors for tool in TOOLS):
                break
        if args.profile:
            import profile_up

            meta["profile"] = profile_up.profile(px, hostdir, bench.commands(PIXSIM)["clean"][0])
    except KeyboardInterrupt:
        interrupted = True
        results.notes.append("interrupted (Ctrl-C): partial results")
        log("interrupted; cleaning up")
    except StepFailed as exc:
        results.errors["setup"] = str(exc)
        log(f"setup failed: {exc}")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the clean-up
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if bench is not None:
            for tool in TOOLS:
                bench.clean(tool)
        leftovers = {p: left for p in projects if (left := sweep(p))}
        if leftovers:
            results.notes.append(f"could NOT remove: {leftovers}")
            log(f"left behind: {leftovers}")
        shutil.rmtree(tmp, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    meta["leftovers"] = leftovers
    meta["load_after"] = [round(x, 2) for x in os.getloadavg()]

    ops = evaluate(results)
    if args.json:
        out = {"meta": meta, "operations": ops, "errors": results.errors, "notes": results.notes,
               "interrupted": interrupted}
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_table(ops, meta, results)
        if meta.get("profile"):
            print()
            print(meta["profile"]["text"])
    return 130 if interrupted else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
