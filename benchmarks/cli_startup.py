"""Wall time of pixsim-host's start-up, beside a minimal Typer app measured in the same run.

    python benchmarks/cli_startup.py [--runs 15] [--warmup 2] [--importtime]

Every command is a fresh process of the interpreter running this script, so the
numbers include interpreter start-up and imports: what a user waits for. The minimal
app (one command, a --version option callback) is the floor that Typer and Rich alone
cost on this machine; comparing with it in the same run cancels out the machine's speed.
Runs are interleaved (round robin), so a slow moment hurts every command alike.

Goals: --version < 100 ms, --help <= 1.25 x the minimal app's --help, init < 0.5 s.
The script reports; it never fails (exit 0), so it can run anywhere without flaking.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

MINIMAL_APP = '''\
import typer

app = typer.Typer()


def _version(value: bool) -> None:
    if value:
        typer.echo("minimal 0.0")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True),
) -> None:
    """A minimal Typer app."""


@app.command()
def hello(name: str = "world") -> None:
    """Say hello."""
    typer.echo(f"hello {name}")


if __name__ == "__main__":
    app()
'''

VERSION_GOAL_S = 0.100
HELP_RATIO_GOAL = 1.25
INIT_GOAL_S = 0.500


def pixsim_host_command() -> tuple[list[str], str]:
    """The console script installed beside this interpreter, else ``python -m pixsim_host``."""
    script = Path(sys.executable).parent / "pixsim-host"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)], f"{script.name} (console script of this interpreter)"
    found = shutil.which("pixsim-host")
    if found:
        print(f"note: {found} is not beside {sys.executable}; using python -m pixsim_host")
    return [sys.executable, "-m", "pixsim_host"], "python -m pixsim_host"


def timed(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({result.returncode}):\n"
                         f"{result.stderr.decode(errors='replace')}")
    return elapsed


def import_times(args: list[str], env: dict[str, str]) -> dict[str, tuple[int, int]]:
    """Module -> (self us, cumulative us) from Python's -X importtime, for one run of ``args``."""
    result = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            env={**env, "PYTHONPROFILEIMPORTTIME": "1"})
    times: dict[str, tuple[int, int]] = {}
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, cumulative, name = line.removeprefix("import time:").split("|", 2)
        times[name.strip()] = (int(own), int(cumulative))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="measured runs per command")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured runs per command first")
    parser.add_argument("--importtime", action="store_true",
                        help="print the import-time offenders of --help even if the goal is met")
    options = parser.parse_args()

    unwanted = ("PIXSIM_HOST_DIR", "PYTHONPROFILEIMPORTTIME")
    env = {k: v for k, v in os.environ.items() if k not in unwanted}
    pixsim, how = pixsim_host_command()
    with tempfile.TemporaryDirectory(prefix="pixsim-bench-") as tmp:
        root = Path(tmp)
        # init registers every host: use a throw-away registry, never the user's.
        env["PIXSIM_HOST_HOME"] = str(root / "pixsim-home")
        minimal_file = root / "minimal_app.py"
        minimal_file.write_text(MINIMAL_APP, encoding="utf-8")
        minimal = [sys.executable, str(minimal_file)]
        counter = iter(range(10**6))

        def init_args() -> list[str]:
            number = next(counter)  # the registry refuses a second host of the same name
            return [*pixsim, "init", str(root / f"host{number}"), "--yes", "--name", f"x{number}"]

        commands: dict[str, Callable[[], list[str]]] = {
            "minimal --version": lambda: [*minimal, "--version"],
            "minimal --help": lambda: [*minimal, "--help"],
            "pixsim-host --version": lambda: [*pixsim, "--version"],
            "pixsim-host --help": lambda: [*pixsim, "--help"],
            "pixsim-host init": init_args,
        }
        for _ in range(options.warmup):
            for make in commands.values():
                timed(make(), env)
        samples: dict[str, list[float]] = {label: [] for label in commands}
        for _ in range(options.runs):
            for label, make in commands.items():
                samples[label].append(timed(make(), env))

        median = {label: statistics.median(values) for label, values in samples.items()}
        version_ratio = median["pixsim-host --version"] / median["minimal --version"]
        help_ratio = median["pixsim-host --help"] / median["minimal --help"]
        goals = {
            "pixsim-host --version": (f"< {VERSION_GOAL_S * 1000:.0f} ms",
                                      median["pixsim-host --version"] < VERSION_GOAL_S),
            "pixsim-host --help": (f"<= {HELP_RATIO_GOAL} x minimal",
                                   help_ratio <= HELP_RATIO_GOAL),
            "pixsim-host init": (f"< {INIT_GOAL_S * 1000:.0f} ms",
                                 median["pixsim-host init"] < INIT_GOAL_S),
        }

        print(f"Python {sys.version.split()[0]} at {sys.executable}")
        print(f"pixsim-host run as: {how}; {options.runs} runs after {options.warmup} warm-up")
        print()
        print(f"{'command':24} {'median':>9} {'min':>9} {'max':>9}  {'goal':20} result")
        for label, values in samples.items():
            goal, ok = goals.get(label, ("", None))
            verdict = "" if ok is None else ("pass" if ok else "FAIL")
            print(f"{label:24} {median[label] * 1000:7.1f}ms {min(values) * 1000:7.1f}ms "
                  f"{max(values) * 1000:7.1f}ms  {goal:20} {verdict}")
        print()
        print(f"--version: pixsim-host / minimal = {version_ratio:.2f}")
        print(f"--help:    pixsim-host / minimal = {help_ratio:.2f} (goal <= {HELP_RATIO_GOAL})")

        if options.importtime or help_ratio > HELP_RATIO_GOAL:
            ours = import_times([*pixsim, "--help"], env)
            floor = import_times([*minimal, "--help"], env)
            extra = {name: t for name, t in ours.items() if name not in floor}
            print()
            own_total = sum(t[0] for t in extra.values()) / 1000
            print(f"Imports of `pixsim-host --help` that the minimal app does not make "
                  f"({len(extra)} modules, {own_total:.1f} ms self time):")
            print(f"  {'cumulative':>10} {'self':>8}  module")
            ranked = sorted(extra.items(), key=lambda item: item[1][1], reverse=True)
            for name, (own, cumulative) in ranked[:20]:
                print(f"  {cumulative / 1000:8.1f}ms {own / 1000:6.1f}ms  {name}")
            # The other direction explains a ratio below 1: what the floor pays for and we skip.
            skipped = {name: t for name, t in floor.items() if name not in ours}
            top = sorted(skipped.items(), key=lambda item: item[1][1], reverse=True)[:5]
            print(f"The minimal app's --help imports {len(skipped)} modules that pixsim-host's "
                  f"does not; largest: {', '.join(f'{n} ({t[1] / 1000:.1f} ms)' for n, t in top)}")


if __name__ == "__main__":
    main()
