"""Console entry point.

``--version`` is answered before Typer and Rich are imported: it is the command
scripts call most, and importing the CLI costs more than everything else it does.
"""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:] in (["--version"], ["-V"]):
        from pixsim_host import __version__

        sys.stdout.write(f"pixsim-host {__version__}\n")
        return
    from pixsim_host.cli import run

    run()


if __name__ == "__main__":
    main()
