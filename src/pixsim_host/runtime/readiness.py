"""Is PostgreSQL or Redis ready? Asked in its own protocol, at its own address.

An engine runs a container's healthcheck on its own clock (every second at best, on
Docker 25+, during the start period; only after a whole interval before that), so waiting
for the engine's verdict adds up to a second to every start. These probes ask the service
itself, the way its healthcheck does, as often as the caller likes, at a cost of one local
connection each:

* PostgreSQL: a StartupMessage over TCP; the server accepts connections once it answers
  with an authentication request ('R'), which is what ``pg_isready -h`` reports (a server
  that is starting, or the temporary one an image's first start runs on its unix socket,
  answers an error or nothing);
* Redis: ``AUTH`` (with the host's password) then ``PING``, answered ``+OK`` and ``+PONG``,
  stricter than ``redis-cli ping``.

Standard library only; every failure is just "not ready yet".
"""

from __future__ import annotations

import socket
import struct

PROBE_TIMEOUT = 0.5  # a local service answers in milliseconds; a stuck one is "not yet"
POSTGRES_PROTOCOL_3 = 196608


def postgres_ready(address: str, port: int, user: str, database: str) -> bool:
    """Whether PostgreSQL at ``address`` accepts connections (asks ``user`` to authenticate)."""
    fields = f"user\0{user}\0database\0{database}\0\0".encode()
    message = struct.pack("!I", POSTGRES_PROTOCOL_3) + fields
    try:
        with socket.create_connection((address, port), timeout=PROBE_TIMEOUT) as conn:
            conn.sendall(struct.pack("!I", len(message) + 4) + message)
            return conn.recv(1) == b"R"
    except OSError:
        return False


def _resp(*words: str) -> bytes:
    """One command in Redis' protocol (RESP arrays of bulk strings)."""
    encoded = [word.encode() for word in words]
    return f"*{len(encoded)}\r\n".encode() + b"".join(
        b"$%d\r\n%s\r\n" % (len(word), word) for word in encoded)


def redis_ready(address: str, port: int, password: str | None) -> bool:
    """Whether Redis at ``address`` takes the password and answers PING."""
    expected = (b"+OK\r\n" if password else b"") + b"+PONG\r\n"
    request = (_resp("AUTH", password) if password else b"") + _resp("PING")
    answer = b""
    try:
        with socket.create_connection((address, port), timeout=PROBE_TIMEOUT) as conn:
            conn.sendall(request)
            while len(answer) < len(expected):
                chunk = conn.recv(256)
                if not chunk:
                    break
                answer += chunk
    except OSError:
        return False
    return answer.startswith(expected)
