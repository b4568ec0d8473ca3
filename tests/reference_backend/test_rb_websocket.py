"""The reference backend's /api/v1/ws/generations (RFC 6455), on a real socket, no database.

The route only needs the host's id, so it is served by the real request handler bound to a
stand-in App that carries nothing but settings.server_id.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import rb_support  # noqa: F401  (puts src/ on sys.path)

from pixsim_reference_backend import websocket as ws
from pixsim_reference_backend.server import Handler, Server

HOST_ID = "0f0e0d0c-0b0a-4908-8706-050403020100"


@pytest.fixture
def server() -> Iterator[int]:
    app = SimpleNamespace(settings=SimpleNamespace(server_id=HOST_ID, cors_origins=[]))
    handler = type("WsHandler", (Handler,), {"app": app})
    httpd = Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


def _client(port: int) -> ws.Client:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return ws.Client(sock, f"127.0.0.1:{port}")


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return data


def test_accept_key_is_rfc6455s_example() -> None:
    # RFC 6455 section 1.3.
    assert ws.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_greeting_names_the_host_and_ping_gets_pong(server: int) -> None:
    client = _client(server)
    assert client.headers["upgrade"].lower() == "websocket"
    greeting = json.loads(client.receive_text())
    # PixSim7's ConnectedMessage shape, plus the host it came from.
    assert greeting == {"type": "connected", "message": "Connected to generation updates",
                        "user_id": 1, "host_id": HOST_ID}
    for _ in range(3):
        client.send_text("ping")
        assert client.receive_text() == "pong"
    assert client.close() == ws.NORMAL


def test_control_frames_and_fragments(server: int) -> None:
    client = _client(server)
    client.receive_text()
    client.send(ws.PING, b"are you there")
    assert client.receive() == (ws.PONG, b"are you there")
    # "ping" in two fragments, with a ping frame between them (allowed by RFC 6455 5.4).
    client.send(ws.TEXT, b"pi", final=False)
    client.send(ws.PING, b"x")
    client.send(ws.CONTINUATION, b"ng")
    assert client.receive() == (ws.PONG, b"x")
    assert client.receive_text() == "pong"
    # Messages other than the keep-alive are read and ignored, as PixSim7's feed does.
    client.send_text(json.dumps({"type": "subscribe"}))
    client.send_text("ping")
    assert client.receive_text() == "pong"
    assert client.close(4000) == 4000


def test_an_unmasked_client_frame_is_a_protocol_error(server: int) -> None:
    client = _client(server)
    client.receive_text()
    client.stream.write(ws.encode_frame(ws.TEXT, b"ping"))  # no mask: forbidden for clients
    client.stream.flush()
    opcode, payload = client.receive()
    assert opcode == ws.CLOSE and struct.unpack("!H", payload[:2])[0] == ws.PROTOCOL_ERROR


def test_a_message_over_the_limit_closes_with_1009(server: int) -> None:
    client = _client(server)
    client.receive_text()
    header = bytes([0x81, 0x80 | 127]) + struct.pack("!Q", ws.MAX_MESSAGE + 1) + b"\0\0\0\0"
    client.stream.write(header)
    client.stream.flush()
    opcode, payload = client.receive()
    assert opcode == ws.CLOSE and struct.unpack("!H", payload[:2])[0] == ws.TOO_BIG


def test_invalid_utf8_closes_with_1007(server: int) -> None:
    client = _client(server)
    client.receive_text()
    client.send(ws.TEXT, b"\xff\xfe")
    opcode, payload = client.receive()
    assert opcode == ws.CLOSE and struct.unpack("!H", payload[:2])[0] == ws.BAD_DATA


def test_plain_get_is_told_to_upgrade(server: int) -> None:
    answer = _raw(server, b"GET /api/v1/ws/generations HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 426")
    assert b"Sec-WebSocket-Version: 13" in answer


def test_bad_key_and_version_are_refused(server: int) -> None:
    upgrade = (b"GET /api/v1/ws/generations HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\n")
    bad_key = _raw(server, upgrade + b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n\r\n")
    assert bad_key.startswith(b"HTTP/1.1 400")
    old = _raw(server, upgrade + b"Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: "
               b"dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    assert old.startswith(b"HTTP/1.1 426")
