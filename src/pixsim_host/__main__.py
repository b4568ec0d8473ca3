"""Console entry point.

``--version`` is answered before Typer and Rich are imported: it is the command
scripts call most, and importing the CLI costs more than everything else it does.
"""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:] in (["--version"], ["-V"]):
        from pixsim_host import __version__

        try:
            sys.stdout.write(f"pixsim-host {__version__}\n")
            sys.stdout.flush()
        except BrokenPipeError:  # its reader left (a pipe into `true`): quietly done
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    from pixsim_host.cli import run

    run()


if __name__ == "__main__":
    main()
