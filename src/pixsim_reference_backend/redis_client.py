"""Minimal RESP2 client: enough for PING, GET, SET and friends."""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["RedisError", "RedisConnectionError", "RedisUrl", "parse_redis_url", "Redis"]


class RedisError(Exception):
    """An error reply (``-ERR ...``) from the server."""


class RedisConnectionError(Exception):
    """The connection is unusable."""


@dataclass(frozen=True)
class RedisUrl:
    host: str
    port: int
    db: int
    username: str | None
    password: str | None


def parse_redis_url(url: str) -> RedisUrl:
    """Parse ``redis://[[user]:password@]host:port/db``."""
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise ValueError("Redis URL must start with redis://")
    host = parts.hostname or ""
    if not host:
        raise ValueError("Redis URL has no host")
    try:
        port = parts.port or 6379
    except ValueError as exc:
        raise ValueError("Redis URL has an invalid port") from exc
    path = parts.path.lstrip("/")
    try:
        db = int(path) if path else 0
    except ValueError as exc:
        raise ValueError("Redis URL database must be a number") from exc
    if db < 0:
        raise ValueError("Redis URL database must not be negative")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if username is not None and password is None:
        # redis://secret@host is the legacy "password only" form.
        username, password = None, username
    return RedisUrl(host, port, db, username, password)


def _encode(args: tuple[Any, ...]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode("utf-8")
        elif isinstance(arg, bool):
            raise TypeError("booleans are ambiguous in Redis commands")
        elif isinstance(arg, int | float):
            data = repr(arg).encode("ascii")
        else:
            raise TypeError(f"cannot send {type(arg).__name__} to Redis")
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class Redis:
    """One connection; commands are serialised with a lock so threads may share it."""

    def __init__(self, url: str | RedisUrl, *, timeout: float = 5.0) -> None:
        self.url = parse_redis_url(url) if isinstance(url, str) else url
        self.closed = False
        self._lock = threading.Lock()
        self._buf = b""
        try:
            self._sock = socket.create_connection((self.url.host, self.url.port), timeout=timeout)
        except OSError:
            self.closed = True
            raise
        try:
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.url.password is not None:
                if self.url.username:
                    self.command("AUTH", self.url.username, self.url.password)
                else:
                    self.command("AUTH", self.url.password)
            if self.url.db:
                self.command("SELECT", self.url.db)
        except BaseException:
            self._abort()
            raise

    def _abort(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self._sock.close()

    def _fill(self) -> None:
        try:
            chunk = self._sock.recv(65536)
        except OSError as exc:
            self._abort()
            raise RedisConnectionError(f"connection lost: {exc}") from exc
        if not chunk:
            self._abort()
            raise RedisConnectionError("connection closed by server")
        self._buf += chunk

    def _readline(self) -> bytes:
        while True:
            idx = self._buf.find(b"\r\n")
            if idx >= 0:
                line, self._buf = self._buf[:idx], self._buf[idx + 2 :]
                return line
            self._fill()

    def _read_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._fill()
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def _read_reply(self) -> Any:
        line = self._readline()
        if not line:
            self._abort()
            raise RedisConnectionError("protocol violation: empty reply line")
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode("utf-8", "replace")
        if kind == b"-":
            return RedisError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self._read_exact(size + 2)[:-2]
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                return data
        if kind == b"*":
            count = int(rest)
            if count < 0:
                return None
            items = [self._read_reply() for _ in range(count)]
            for item in items:
                if isinstance(item, RedisError):
                    return item
            return items
        self._abort()
        raise RedisConnectionError(f"protocol violation: unknown reply type {kind!r}")

    def command(self, *args: Any) -> Any:
        """Send one command; return its decoded reply. Error replies raise RedisError."""
        if not args:
            raise ValueError("empty command")
        with self._lock:
            if self.closed:
                raise RedisConnectionError("connection is closed")
            try:
                self._sock.sendall(_encode(args))
            except OSError as exc:
                self._abort()
                raise RedisConnectionError(f"connection lost: {exc}") from exc
            reply = self._read_reply()
        if isinstance(reply, RedisError):
            raise reply
        return reply

    def close(self) -> None:
        with self._lock:
            self._abort()
