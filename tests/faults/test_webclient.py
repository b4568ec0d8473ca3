"""The one HTTP client: one overall deadline across connect, headers and body, a size cap,
and a typed failure for each way an answer can be wrong.

The slow servers are real sockets on 127.0.0.1 (the deadline lives in the network layer
under httpx, which a mock transport would bypass); the answers that are merely wrong come
from an httpx.MockTransport.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from unit_helpers import run_cli

from pixsim_host import webclient as web


@contextmanager
def header_dripper(interval: float) -> Iterator[str]:
    """A server that answers a status line, then one more header line every ``interval`` s,
    forever: each read finishes well within any per-read timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()
    connections: list[socket.socket] = []

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
            number = 0
            while not stop.wait(interval):
                number += 1
                try:
                    conn.sendall(f"X-Slow-{number}: {number}\r\n".encode())
                except OSError:
                    return

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            connections.append(conn)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()
        for conn in connections:
            conn.close()


def test_connect_gives_up_at_its_deadline_on_a_server_dripping_headers() -> None:
    with header_dripper(3.0) as url:
        started = time.monotonic()
        result = run_cli("connect", url)
        elapsed = time.monotonic() - started
    assert result.returncode == 1, str(result)
    assert result.stderr == (f"Error: {url}/api/v1/server/info is answering too slowly (no complete "
                             "answer after 10 s); check the host and the network\n")
    # Each header line came within the 5 s read timeout: only the overall deadline ended it.
    assert 9.5 <= elapsed < 12.5, elapsed


def test_the_deadline_spans_every_request_of_a_client() -> None:
    with header_dripper(0.3) as url, web.WebClient(timeout=5.0, deadline=1.5) as client:
        started = time.monotonic()
        with pytest.raises(web.Timeout) as caught:
            client.get(url + "/one")
        assert caught.value.deadline_passed and caught.value.phase == "read"
        with pytest.raises(web.Timeout):  # the same deadline: the second request fails at once
            client.get(url + "/two")
        assert time.monotonic() - started < 3.0
        client.reset_deadline(0.5)
        with pytest.raises(web.Timeout) as again:
            client.get(url + "/three")
        assert again.value.reason == "no complete answer within the 0.5 s deadline"


def test_health_probes_are_bounded_by_their_timeout() -> None:
    from pixsim_host.health import ProbeError, get_json, make_client

    with header_dripper(0.2) as url, make_client(timeout=1.0) as client:
        started = time.monotonic()
        with pytest.raises(ProbeError, match="^/health timed out$"):
            get_json(client, url, "/health")
        assert time.monotonic() - started < 2.5


def test_a_refused_connection_and_a_tls_failure_are_typed() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with web.WebClient(timeout=2.0, deadline=3.0) as client, \
            pytest.raises(web.Refused, match="connection refused"):
        client.get(f"http://127.0.0.1:{port}/")
    with header_dripper(5.0) as url, web.WebClient(timeout=2.0, deadline=3.0) as client, \
            pytest.raises(web.TLSFailure) as caught:
        client.get(url.replace("http://", "https://"))  # a plain-HTTP server spoken TLS to
    assert not caught.value.untrusted


def mock(handler: httpx.MockTransport) -> web.WebClient:
    return web.WebClient(timeout=1.0, deadline=5.0, max_bytes=1000, transport=handler)


@pytest.mark.parametrize(("response", "error", "reason"), [
    (httpx.Response(503, json={}), web.BadStatus, "answered HTTP 503"),
    (httpx.Response(200, text="<html>hi</html>", headers={"content-type": "text/html"}), web.NotJSON,
     "answered an HTML page"),
    (httpx.Response(200, text="[1]"), web.NotJSON, "answered JSON that is not an object"),
    (httpx.Response(200, text="{" * 2), web.NotJSON, "answered something that is not JSON"),
    (httpx.Response(200, text='{"a":' + "[" * 70 + "]" * 70 + "}"), web.TooDeep,
     "answered JSON nested deeper than 64 levels"),
    (httpx.Response(200, content=b"{}", headers={"content-length": "5000"}), web.TooBig,
     "answered 5000 bytes (limit 1000)"),
    (httpx.Response(200, content=iter([b" " * 600, b" " * 600])), web.TooBig,
     "answered more than 1000 bytes (limit 1000)"),
])
def test_answers_that_are_wrong(response: httpx.Response, error: type[web.WebError], reason: str) -> None:
    with mock(httpx.MockTransport(lambda request: response)) as client, \
            pytest.raises(error) as caught:
        client.get_json("http://host.test/api")
    assert type(caught.value) is error
    assert caught.value.reason == reason
    assert str(caught.value) == f"http://host.test/api: {reason}; check the address and that the host is up"


def test_no_proxy_or_credentials_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[httpx.Request] = []
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    with mock(httpx.MockTransport(answer)) as client:
        assert client.get_json("http://host.test/x") == {"ok": True}
    assert "authorization" not in seen[0].headers and seen[0].headers["accept"] == "application/json"


def test_registry_probes_share_one_deadline_even_against_dripping_hosts(tmp_path: Path) -> None:
    import uuid

    from test_hosts_fakes import write_minimal_host

    from pixsim_host.hosts import HostEntry, probe_hosts

    with header_dripper(0.1) as url:  # every read answers well within the 0.5 s timeout
        port = int(url.rsplit(":", 1)[1])
        entries = []
        for number in range(5):
            directory, host_id = tmp_path / f"drip{number}", str(uuid.uuid4())
            write_minimal_host(directory, host_id, f"drip{number}", port)
            entries.append(HostEntry(name=f"drip{number}", host_id=host_id, directory=str(directory),
                                     model="self", backend_url=url, local_url=url, port=port,
                                     bind="127.0.0.1", project=f"pixsim-drip{number}"))
        started = time.monotonic()
        statuses = probe_hosts(entries, timeout=0.5)
        elapsed = time.monotonic() - started
    assert [(s.status, s.detail) for s in statuses] == [("no answer", "did not answer in time")] * 5
    assert elapsed < 2.5, elapsed  # the old per-read timeout waited for as long as it dripped


def test_connect_refuses_a_deeply_nested_reply_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    deep = '{"server_id": ' + "[" * 5000 + "]" * 5000 + "}"
    monkeypatch.setattr(web, "TRANSPORT", httpx.MockTransport(lambda request: httpx.Response(200, text=deep)))
    result = run_cli("connect", "http://host.test:8000")
    assert result.returncode == 1, str(result)
    assert result.stderr == ("Error: http://host.test:8000/api/v1/server/info answered JSON nested deeper "
                             "than 64 levels; this is not a PixSim7 backend\n"), str(result)
