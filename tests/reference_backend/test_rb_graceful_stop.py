"""The reference backend's stop lets requests in progress finish (a zero-downtime upgrade
stops the old backend while the proxy may still have requests in it): the server's own
stop sequence, on a real socket, with a request that is slow on purpose."""

from __future__ import annotations

import socket
import threading
import time

from pixsim_reference_backend.server import Handler, Server

SLOW = 0.6


class SlowHandler(Handler):
    """The real dispatch (request counting, the last answer on a stopping server), with an
    answer that takes SLOW seconds instead of the routes (which need a database)."""

    def _answer(self, method: str) -> None:
        time.sleep(SLOW)
        self._send(method, 200, {"answered": True})

    def _cors_headers(self) -> dict[str, str]:
        return {}  # no app settings here


def start(handler: type[Handler]) -> tuple[Server, threading.Thread]:
    server = Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    return server, thread


def stop(server: Server, grace: float) -> int:
    """What run() does on SIGTERM."""
    server.shutdown()
    server.server_close()
    server.stopping = True
    return server.drain(grace)


def test_a_request_in_progress_is_answered_before_the_stop_ends() -> None:
    server, _ = start(SlowHandler)
    port = server.server_address[1]
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    client.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    deadline = time.monotonic() + 5
    while server.in_flight == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    began = time.monotonic()
    assert stop(server, grace=5.0) == 0
    waited = time.monotonic() - began
    answer = client.makefile("rb").read().decode()  # the server closes after this answer
    client.close()
    assert answer.startswith("HTTP/1.1 200"), answer
    assert "Connection: close" in answer and '{"answered": true}' in answer, answer
    assert waited >= SLOW / 2, waited  # the stop waited for it
    # No new connection is accepted once the stop began.
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        refused = False
    except OSError:
        refused = True
    assert refused


def test_the_wait_is_bounded() -> None:
    server, _ = start(SlowHandler)
    client = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10)
    client.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    deadline = time.monotonic() + 5
    while server.in_flight == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert stop(server, grace=0.05) == 1  # still answering: the stop goes on anyway
    assert client.makefile("rb").read().startswith(b"HTTP/1.1 200")  # (in a test, it lives on)
    client.close()


def test_an_idle_server_stops_at_once() -> None:
    server, thread = start(SlowHandler)
    began = time.monotonic()
    assert stop(server, grace=5.0) == 0
    assert time.monotonic() - began < 2.0
    thread.join(timeout=5)
    assert not thread.is_alive()
