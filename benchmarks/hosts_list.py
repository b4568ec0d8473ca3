"""How long ``pixsim-host hosts list`` takes with 20 registered hosts (goal: under 1 s).

Sets up, in a throw-away data directory (``$PIXSIM_HOST_HOME``) and temp host directories:

* 20 hosts made with pixsim-host's own ``init`` code, each a real host directory;
* 8 of them "up": a small backend on 127.0.0.1 answers ``/api/v1/server/info`` with the
  host's host_id (as a real backend does; no Docker needed, so the figure is the CLI's own);
* 2 answer as another host (wrong host), 1 accepts connections and never answers (the worst
  case: it costs a whole probe timeout), 1 host directory is deleted, 8 are down.

Then runs the real CLI (``python -m pixsim_host hosts list``, and ``--json``) several times
as a user would and prints min / median / max wall time against the goal, with the
interpreter start-up alone for comparison. It reports, never asserts: exit code 0 whatever
the figures. Everything it starts or creates is stopped and removed at the end.

    python benchmarks/hosts_list.py [--runs 10]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

GOAL = 1.0
HOSTS = 20
UP, WRONG, HUNG, GONE = 8, 2, 1, 1


class Backend:
    """Answers the identity endpoint as ``server_id``, on 127.0.0.1 and a kernel-picked port."""

    def __init__(self, server_id: str) -> None:
        self.server_id = server_id
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                body = json.dumps({"server_id": backend.server_id, "server_name": "bench",
                                   "server_description": "", "version": "0", "api_version": "v1"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def timed(argv: list[str], env: dict[str, str], runs: int) -> tuple[list[float], str]:
    times, out = [], ""
    for _ in range(runs):
        started = time.perf_counter()
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=60)
        times.append(time.perf_counter() - started)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stderr}")
        out = proc.stdout
    return times, out


def line(label: str, times: list[float], goal: float | None = GOAL) -> str:
    text = (f"  {label:44} min {min(times):6.3f} s   median {statistics.median(times):6.3f} s   "
            f"max {max(times):6.3f} s")
    if goal is not None:
        verdict = "under" if max(times) < goal else "OVER"
        text += f"   {verdict} the {goal:.0f} s goal (max = {max(times) / goal:.0%} of it)"
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="pixsim-bench-hosts-"))
    home = root / "home"
    os.environ["PIXSIM_HOST_HOME"] = str(home)  # the in-process init below registers here
    env = {**os.environ, "PIXSIM_HOST_HOME": str(home), "NO_COLOR": "1"}
    env.pop("PIXSIM_HOST_DIR", None)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from pixsim_host.create import InitOptions
    from pixsim_host.hosts import init_registered

    with ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, root, True)
        hung = socket.create_server(("127.0.0.1", 0), backlog=64)
        cleanup.callback(hung.close)
        made = []
        started = time.perf_counter()
        for index in range(HOSTS):
            port = free_port() if index >= UP + WRONG else None
            if index == UP + WRONG:
                port = int(hung.getsockname()[1])
            result, _ = init_registered(root / f"host{index:02}",
                                        InitOptions(name=f"bench-{index:02}", port=port or free_port()))
            made.append(result.config)
        setup = time.perf_counter() - started
        for index, config in enumerate(made[:UP + WRONG]):
            server_id = config.host_id if index < UP else "someone-else"
            backend = Backend(server_id)
            cleanup.callback(backend.close)
            # Point the host (config and registry) at its backend's port, as `config set` would.
            result, _ = init_registered(root / f"host{index:02}", InitOptions(port=backend.port), force=True)
        shutil.rmtree(root / f"host{HOSTS - 1:02}")

        cli = [sys.executable, "-m", "pixsim_host"]
        startup, _ = timed([sys.executable, "-c", "pass"], env, args.runs)
        version, _ = timed([*cli, "--version"], env, args.runs)
        listing, table = timed([*cli, "hosts", "list"], env, args.runs)
        as_json, out = timed([*cli, "hosts", "list", "--json"], env, args.runs)
        statuses = Counter(h["status"] for h in json.loads(out)["hosts"])
        hung.close()  # now nothing listens there: the worst case is gone
        no_hang, _ = timed([*cli, "hosts", "list", "--json"], env, args.runs)

        print(f"hosts list with {HOSTS} registered hosts, {args.runs} runs each "
              f"(setup: {HOSTS} inits in {setup:.1f} s)")
        print(f"  statuses: {dict(sorted(statuses.items()))}")
        print(line("python start-up alone", startup, None))
        print(line("pixsim-host --version", version, None))
        print(line("pixsim-host hosts list", listing))
        print(line("pixsim-host hosts list --json", as_json))
        print(line("hosts list --json, no host that hangs", no_hang))
        print("  (the host that never answers costs one probe timeout, 0.4 s by default: every")
        print("   host is probed at once, so 20 such hosts would cost the same as one)")
        print()
        print(table.rstrip())
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
