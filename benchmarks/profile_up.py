"""Where the time of one `pixsim-host up` goes: used by ``up_vs_compose.py --profile``.

For the benchmark's host (clean: no containers, no volumes), in this order:

1. a cold ``up`` and a no-change ``up``, each line pixsim-host prints time-stamped from the
   start of the process (its own progress lines are the phases), with the process's CPU time;
2. the no-change ``up`` again under ``python -X importtime``: import time per top-level
   package (self time summed), i.e. what start-up costs before any work;
3. a cold and a no-change ``up`` under cProfile: the functions with the most cumulative time.

It runs the CLI as ``python -m pixsim_host`` with the interpreter running the benchmark (the
same installation as the ``pixsim-host`` script next to it). No instrumentation inside
pixsim-host is needed. Standard library only.
"""

from __future__ import annotations

import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

TIMEOUT = 300.0


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["NO_COLOR"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def timeline(argv: list[str]) -> dict[str, Any]:
    """Run argv, stamping every output line (stdout and stderr merged) as it arrives."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=_env())
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append((time.perf_counter() - started, line.rstrip()))
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "user": usage.ru_utime,
            "sys": usage.ru_stime, "lines": lines, "returncode": proc.returncode}


def import_times(argv: list[str]) -> dict[str, Any]:
    """Self import time per top-level package, from ``-X importtime`` (microseconds on stderr)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", *argv], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, env=_env(), timeout=TIMEOUT)
    per_package: dict[str, int] = defaultdict(int)
    total = 0
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        fields = line[len("import time:"):].split("|")
        if len(fields) != 3:
            continue
        self_us = int(fields[0])
        package = fields[2].strip().split(".")[0]
        per_package[package] += self_us
        total += self_us
    ranked = sorted(per_package.items(), key=lambda item: item[1], reverse=True)
    return {"total_s": total / 1e6, "packages": [(name, us / 1e6) for name, us in ranked],
            "returncode": proc.returncode}


def cprofile(argv: list[str], top: int = 15) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pixsim-bench-prof-") as folder:
        out = Path(folder) / "up.prof"
        proc = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(out), *argv],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, env=_env(),
                              timeout=TIMEOUT)
        if not out.exists():
            return {"returncode": proc.returncode, "rows": [], "total": 0.0}
        stats = pstats.Stats(str(out))
        rows = []
        # (file, line, name) -> (primitive calls, calls, tottime, cumtime, callers)
        entries = stats.stats  # type: ignore[attr-defined]
        for (filename, lineno, name), (_, calls, tottime, cumtime, _) in entries.items():
            short = filename
            for marker in ("site-packages/", "/src/", "/lib/python3"):
                if marker in filename:
                    short = filename.split(marker, 1)[1]
                    break
            rows.append((cumtime, tottime, calls, f"{short}:{lineno}({name})"))
        total = stats.total_tt  # type: ignore[attr-defined]
        # pixsim-host's own functions below its entry points (which contain everything), by
        # cumulative time; and any function by self time (where the CPU or the waiting is).
        entry = ("__main__.py", "cli/__init__.py")
        own = sorted((r for r in rows if r[3].startswith("pixsim_host/") and not r[3].startswith(
            tuple(f"pixsim_host/{e}" for e in entry))), reverse=True)
        by_self = sorted(rows, key=lambda r: r[1], reverse=True)
        return {"returncode": proc.returncode, "total": total, "rows": own[:top],
                "self": by_self[:8]}


def _format_timeline(title: str, result: dict[str, Any]) -> list[str]:
    out = [f"{title}: {result['wall']:.2f} s wall, CPU {result['cpu']:.2f} s "
           f"(user {result['user']:.2f}, sys {result['sys']:.2f}), exit {result['returncode']}"]
    previous = 0.0
    for stamp, line in result["lines"]:
        out.append(f"  +{stamp:6.3f} s  (+{stamp - previous:5.3f})  {line}")
        previous = stamp
    out.append(f"  +{result['wall']:6.3f} s  (+{result['wall'] - previous:5.3f})  <process exit>")
    return out


def profile(px: list[str], hostdir: Path, clean: list[str]) -> dict[str, Any]:
    cli = ["-m", "pixsim_host"]
    up = ["up", "--dir", str(hostdir), "--pull", "never"]

    def reset() -> None:
        subprocess.run(clean, stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT)

    reset()
    cold = timeline([*px, *up])
    nochange = timeline([*px, *up])
    imports = import_times([*cli, *up])
    reset()
    cold_prof = cprofile([*cli, *up])
    nochange_prof = cprofile([*cli, *up])
    reset()
    startup = timeline([sys.executable, "-c", "pass"])
    version = timeline([*px, "--version"])

    text: list[str] = ["profile of one `up` (pixsim-host's own output lines, time-stamped):"]
    text += _format_timeline("cold up", cold)
    text += _format_timeline("no-change up", nochange)
    text.append(f"for scale: python start-up alone {startup['wall']:.3f} s, "
                f"pixsim-host --version {version['wall']:.3f} s (CPU {version['cpu']:.3f} s)")
    text.append(f"imports of a no-change up (python -X importtime, self time per top-level package; "
                f"total {imports['total_s']:.3f} s):")
    for name, seconds in imports["packages"][:15]:
        text.append(f"  {seconds:6.3f} s  {name}")
    for title, prof in (("cold up", cold_prof), ("no-change up", nochange_prof)):
        text.append(f"cProfile of a {title} (exit {prof['returncode']}; pixsim-host's functions by "
                    f"cumulative time, then any function by self time):")
        text.append("  cumtime  tottime    calls  function")
        for cumtime, tottime, calls, where in prof["rows"]:
            text.append(f"  {cumtime:7.3f}  {tottime:7.3f}  {calls:7d}  {where}")
        text.append("  --- by self time:")
        for cumtime, tottime, calls, where in prof.get("self", []):
            text.append(f"  {cumtime:7.3f}  {tottime:7.3f}  {calls:7d}  {where}")
    return {"text": "\n".join(text),
            "cold": {k: v for k, v in cold.items() if k != "lines"} | {"lines": cold["lines"]},
            "nochange": nochange, "imports": imports,
            "cprofile": {"cold": cold_prof["rows"], "nochange": nochange_prof["rows"]}}
