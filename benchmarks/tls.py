#!/usr/bin/env python3
"""What the TLS proxy costs: `up` with and without it, and a request through it.

    python benchmarks/tls.py [--runtime native|docker] [--requests 300] [--json]

One throw-away host (temp dir, throw-away registry) of the reference backend is brought up
through the real CLI: cold without TLS, then `config set tls.mode internal` and `up` (the
proxy started, its CA made and exported, the identity checked over HTTPS), each followed by
an `up` with nothing changed. Then GET /api/v1/server/info is timed on one keep-alive connection,
straight to the backend (plain HTTP on loopback) and through the proxy (HTTPS trusting the
exported CA), and the first request of a new connection through the proxy (TLS handshake
included). Figures are medians (p95 for the requests).

It reports, it never asserts: the exit code is 0 whatever the figures (130 on Ctrl-C). The
host is destroyed (data and all) and the temp dir deleted, also on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cli(env: dict[str, str], *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pixsim_host", *args], env=env, text=True,
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=900, check=False)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"`pixsim-host {' '.join(args)}` failed: {done.stderr.strip()[-400:]}")
    return elapsed, done


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def timings(url: str, count: int, verify: ssl.SSLContext | bool) -> list[float]:
    import httpx

    found = []
    with httpx.Client(verify=verify, trust_env=False, timeout=10.0) as client:
        client.get(url).raise_for_status()  # the connection (and TLS session) made first
        for _ in range(count):
            started = time.perf_counter()
            client.get(url).raise_for_status()
            found.append((time.perf_counter() - started) * 1000)
    return found


def first_requests(url: str, count: int, verify: ssl.SSLContext) -> list[float]:
    import httpx

    found = []
    for _ in range(count):
        started = time.perf_counter()
        with httpx.Client(verify=verify, trust_env=False, timeout=10.0) as client:
            client.get(url).raise_for_status()
        found.append((time.perf_counter() - started) * 1000)
    return found


def p95(values: list[float]) -> float:
    return sorted(values)[max(0, int(len(values) * 0.95) - 1)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", choices=("native", "docker"), default="native")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pixsim-bench-tls-"))
    os.chmod(work, 0o755)  # as root a native host's PostgreSQL runs as another account
    env = {**os.environ, "PIXSIM_HOST_HOME": str(work / "registry"), "NO_COLOR": "1"}
    env.pop("PIXSIM_HOST_DIR", None)
    host = work / "host"
    figures: dict[str, float] = {}
    try:
        port, tls_port = free_port(), free_port()
        cli(env, "init", str(host), "--yes", "--name", f"bench-tls-{os.getpid()}", "--port", str(port),
            "--runtime", options.runtime)
        figures["up_cold_without_tls_seconds"], _ = cli(env, "up", "--dir", str(host))
        figures["up_unchanged_without_tls_seconds"], _ = cli(env, "up", "--dir", str(host))
        cli(env, "config", "set", "tls.port", str(tls_port), "--dir", str(host))
        cli(env, "config", "set", "tls.mode", "internal", "--dir", str(host))
        figures["up_turning_tls_on_seconds"], _ = cli(env, "up", "--dir", str(host))
        figures["up_unchanged_with_tls_seconds"], _ = cli(env, "up", "--dir", str(host))
        trust = ssl.create_default_context(cafile=str(host / "tls-ca.crt"))
        path = "/api/v1/server/info"
        direct = timings(f"http://127.0.0.1:{port}{path}", options.requests, False)
        proxied = timings(f"https://127.0.0.1:{tls_port}{path}", options.requests, trust)
        fresh = first_requests(f"https://127.0.0.1:{tls_port}{path}", 30, trust)
        figures.update({
            "request_direct_median_ms": statistics.median(direct), "request_direct_p95_ms": p95(direct),
            "request_proxied_median_ms": statistics.median(proxied),
            "request_proxied_p95_ms": p95(proxied),
            "new_tls_connection_median_ms": statistics.median(fresh),
        })
    except KeyboardInterrupt:
        return 130
    finally:
        if (host / "pixsim-host.yaml").is_file():
            subprocess.run([sys.executable, "-m", "pixsim_host", "destroy", "--dir", str(host), "--yes"],
                           env=env, capture_output=True, stdin=subprocess.DEVNULL, timeout=600, check=False)
        shutil.rmtree(work, ignore_errors=True)
    if options.json:
        print(json.dumps({"runtime": options.runtime, **{k: round(v, 3) for k, v in figures.items()}}))
        return 0
    print(f"TLS proxy on the {options.runtime} runtime (reference backend, {options.requests} requests)")
    for key, value in figures.items():
        unit = "s" if key.endswith("_seconds") else "ms"
        label = key.removesuffix("_seconds").removesuffix("_ms").replace("_", " ")
        print(f"  {label:34} {value:8.2f} {unit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
