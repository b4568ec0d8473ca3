"""The direct readiness probes of PostgreSQL and Redis, against scripted servers on loopback."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pixsim_host.runtime.readiness import postgres_ready, redis_ready


@contextmanager
def server(answer: Callable[[bytes], bytes | None]) -> Iterator[int]:
    """A one-connection-at-a-time server: reads what the client sends, replies ``answer(it)``
    (None: closes without a word); yields its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    received: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                data = conn.recv(65536)
                received.append(data)
                reply = answer(data)
                if reply is not None:
                    conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        listener.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_postgres_is_ready_when_it_asks_to_authenticate() -> None:
    seen: list[bytes] = []

    def answer(data: bytes) -> bytes:
        seen.append(data)
        return b"R" + struct.pack("!II", 23, 10) + b"SCRAM-SHA-256\0\0"

    with server(answer) as port:
        assert postgres_ready("127.0.0.1", port, "pixsim", "pixsim-db")
    length, protocol = struct.unpack("!II", seen[0][:8])
    assert length == len(seen[0]) and protocol == 196608
    assert seen[0][8:] == b"user\0pixsim\0database\0pixsim-db\0\0"


def test_postgres_starting_up_or_silent_or_absent_is_not_ready() -> None:
    starting = b"E" + struct.pack("!I", 40) + b"SFATAL\0C57P03\0Mthe database system is starting up\0\0"
    with server(lambda data: starting) as port:
        assert not postgres_ready("127.0.0.1", port, "pixsim", "pixsim")
    with server(lambda data: None) as port:
        assert not postgres_ready("127.0.0.1", port, "pixsim", "pixsim")
    assert not postgres_ready("127.0.0.1", free_port(), "pixsim", "pixsim")


def test_redis_is_ready_when_it_takes_the_password_and_pongs() -> None:
    seen: list[bytes] = []

    def answer(data: bytes) -> bytes:
        seen.append(data)
        return b"+OK\r\n+PONG\r\n"

    with server(answer) as port:
        assert redis_ready("127.0.0.1", port, "s3cret")
    assert seen[0] == b"*2\r\n$4\r\nAUTH\r\n$6\r\ns3cret\r\n*1\r\n$4\r\nPING\r\n"


def test_redis_refusing_the_password_or_loading_is_not_ready() -> None:
    with server(lambda data: b"-WRONGPASS invalid username-password pair\r\n-NOAUTH\r\n") as port:
        assert not redis_ready("127.0.0.1", port, "wrong")
    with server(lambda data: b"+OK\r\n-LOADING Redis is loading the dataset in memory\r\n") as port:
        assert not redis_ready("127.0.0.1", port, "s3cret")
    with server(lambda data: b"+PONG\r\n") as port:  # no password configured: PING alone
        assert redis_ready("127.0.0.1", port, None)
    assert not redis_ready("127.0.0.1", free_port(), "s3cret")
