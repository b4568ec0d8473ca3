"""Masks secrets on their way into a native service's log file.

PixSim7 logs its ``REDIS_URL``, password included, when it starts, and so do its workers;
``pixsim-host logs`` masks on read, but the file on disk would keep the secret. So the
backend's and the workers' output goes through this relay: ``python -m
pixsim_host.runtime.logmask LOG FD`` reads the secret values (a JSON list) from the
inherited file descriptor ``FD``, then copies its standard input to ``LOG`` line by line
with every value replaced by the mask. It ends when the service closes its output.

Kept to the standard library and ``envfile.redact``: it runs beside every native backend.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

from pixsim_host.envfile import redact


def relay(log_path: str, secrets_fd: int) -> None:
    with os.fdopen(secrets_fd, "rb") as source:
        values = [str(v) for v in json.loads(source.read() or b"[]")]
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
    with os.fdopen(os.open(log_path, flags, 0o600), "ab", buffering=0) as log:
        for raw in sys.stdin.buffer:
            log.write(redact(raw.decode("utf-8", "replace"), values).encode("utf-8"))


def main() -> None:
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        relay(sys.argv[1], int(sys.argv[2]))


if __name__ == "__main__":
    main()
