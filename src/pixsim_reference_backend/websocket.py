"""``/api/v1/ws/generations``: the WebSocket feed PixSim7's client opens (RFC 6455).

PixSim7's main app derives ``ws(s)://<backend>/api/v1/ws/generations`` from the backend URL
and keeps it open for generation status updates. The real endpoint greets every client with
``{"type": "connected", "message": ..., "user_id": ...}`` and answers the text ``ping`` with
``pong`` (its keep-alive); other messages are read and ignored. This one does the same and
names the host in the greeting (``host_id``), so a client can tell which host it reached
(through a proxy too). Standard library only: the handshake, framing, fragmentation,
control frames and the closing handshake are done here.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import struct
from typing import Any, BinaryIO

GENERATIONS_PATH = "/api/v1/ws/generations"
# RFC 6455, section 1.3: appended to the client's key to prove the server read it.
ACCEPT_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
VERSION = "13"
MAX_MESSAGE = 1 << 20  # a client message larger than this closes the connection (1009)
IDLE_TIMEOUT = 300.0  # seconds without a frame before the server closes (the client pings)
PLACEHOLDER_USER = 1  # what PixSim7's endpoint reports until it validates the token

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
NORMAL, GOING_AWAY, PROTOCOL_ERROR, BAD_DATA, TOO_BIG = 1000, 1001, 1002, 1007, 1009


class ProtocolError(Exception):
    """The client broke RFC 6455; ``code`` is the close code to send."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a client's Sec-WebSocket-Key."""
    digest = hashlib.sha1((key + ACCEPT_GUID).encode("ascii")).digest()  # noqa: S324 (RFC 6455)
    return base64.b64encode(digest).decode("ascii")


def handshake_problem(headers: Any) -> tuple[int, str] | None:
    """Why the request is not a valid WebSocket opening handshake (status, detail), or None."""
    upgrade = (headers.get("Upgrade") or "").lower()
    tokens = {token.strip().lower() for token in (headers.get("Connection") or "").split(",")}
    if upgrade != "websocket" or "upgrade" not in tokens:
        return 426, "this endpoint is a WebSocket: connect with Upgrade: websocket"
    if headers.get("Sec-WebSocket-Version") != VERSION:
        return 426, f"unsupported WebSocket version (this server speaks {VERSION})"
    key = headers.get("Sec-WebSocket-Key") or ""
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError(key)
    except ValueError:
        return 400, "Sec-WebSocket-Key must be 16 random bytes in base64"
    return None


def encode_frame(opcode: int, payload: bytes, *, mask: bytes | None = None) -> bytes:
    """One final frame. A server sends unmasked frames; a client passes its 4-byte ``mask``."""
    length = len(payload)
    head = bytes([0x80 | opcode])
    mask_bit = 0x80 if mask is not None else 0
    if length < 126:
        head += bytes([mask_bit | length])
    elif length < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", length)
    if mask is None:
        return head + payload
    return head + mask + bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))


def _read_exact(stream: BinaryIO, count: int) -> bytes:
    data = stream.read(count)
    if data is None or len(data) < count:
        raise EOFError("the connection closed mid-frame")
    return data


def read_frame(stream: BinaryIO, *, masked: bool = True,
               limit: int = MAX_MESSAGE) -> tuple[bool, int, bytes]:
    """(final, opcode, payload) of the next frame. ``masked``: what the peer must do (a
    client masks every frame, a server none)."""
    first, second = _read_exact(stream, 2)
    if first & 0x70:
        raise ProtocolError(PROTOCOL_ERROR, "reserved bits set without an extension")
    final, opcode = bool(first & 0x80), first & 0x0F
    if bool(second & 0x80) != masked:
        raise ProtocolError(PROTOCOL_ERROR, "client frames must be masked" if masked
                            else "server frames must not be masked")
    length = second & 0x7F
    if length == 126:
        length = struct.unpack("!H", _read_exact(stream, 2))[0]
    elif length == 127:
        length = struct.unpack("!Q", _read_exact(stream, 8))[0]
    if opcode >= CLOSE and (length > 125 or not final):
        raise ProtocolError(PROTOCOL_ERROR, "control frames are short and never fragmented")
    if opcode not in (CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG):
        raise ProtocolError(PROTOCOL_ERROR, f"unknown opcode {opcode}")
    if length > limit:
        raise ProtocolError(TOO_BIG, "message too big")
    key = _read_exact(stream, 4) if masked else b""
    payload = _read_exact(stream, length)
    if masked:
        payload = bytes(byte ^ key[index % 4] for index, byte in enumerate(payload))
    return final, opcode, payload


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode("utf-8")[:120]


class Session:
    """One accepted connection: messages in (reassembled), frames out."""

    def __init__(self, reader: BinaryIO, writer: BinaryIO) -> None:
        self.reader = reader
        self.writer = writer
        self.closed = False

    def send(self, opcode: int, payload: bytes) -> None:
        self.writer.write(encode_frame(opcode, payload))
        self.writer.flush()

    def send_text(self, text: str) -> None:
        self.send(TEXT, text.encode("utf-8"))

    def close(self, code: int, reason: str = "") -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):
                self.send(CLOSE, close_payload(code, reason))

    def receive(self) -> tuple[int, bytes] | None:
        """The next data message (opcode, payload), control frames answered on the way;
        None once the client closed."""
        opcode, parts, size = None, [], 0
        while True:
            final, frame_op, payload = read_frame(self.reader)
            if frame_op == PING:
                self.send(PONG, payload)
                continue
            if frame_op == PONG:
                continue
            if frame_op == CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else NORMAL
                self.close(code if 1000 <= code < 5000 and code not in (1004, 1005, 1006) else NORMAL)
                return None
            if frame_op == CONTINUATION:
                if opcode is None:
                    raise ProtocolError(PROTOCOL_ERROR, "a continuation without a message")
            elif opcode is not None:
                raise ProtocolError(PROTOCOL_ERROR, "a new message inside a fragmented one")
            else:
                opcode = frame_op
            size += len(payload)
            if size > MAX_MESSAGE:
                raise ProtocolError(TOO_BIG, "message too big")
            parts.append(payload)
            if final:
                return opcode, b"".join(parts)


def connected_message(host_id: str) -> dict[str, Any]:
    return {"type": "connected", "message": "Connected to generation updates",
            "user_id": PLACEHOLDER_USER, "host_id": host_id}


def serve_generations(handler: Any, host_id: str) -> int:
    """Answer the request on ``handler`` (a BaseHTTPRequestHandler) as the generations feed:
    the handshake, the greeting, ping/pong, until the client leaves. Returns the HTTP status
    sent (101 for a WebSocket)."""
    problem = handshake_problem(handler.headers)
    if problem is not None:
        status, detail = problem
        body = json.dumps({"detail": detail}).encode("utf-8")
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        if status == 426:
            handler.send_header("Upgrade", "websocket")
            handler.send_header("Sec-WebSocket-Version", VERSION)
        handler.end_headers()
        handler.wfile.write(body)
        return status
    handler.send_response(101, "Switching Protocols")
    handler.send_header("Upgrade", "websocket")
    handler.send_header("Connection", "Upgrade")
    handler.send_header("Sec-WebSocket-Accept", accept_key(handler.headers["Sec-WebSocket-Key"]))
    handler.end_headers()
    handler.wfile.flush()
    handler.close_connection = True  # the socket is the WebSocket's from here on
    handler.connection.settimeout(IDLE_TIMEOUT)
    session = Session(handler.rfile, handler.wfile)
    try:
        session.send_text(json.dumps(connected_message(host_id)))
        while True:
            message = session.receive()
            if message is None:
                break
            opcode, payload = message
            if opcode != TEXT:
                continue  # PixSim7's feed reads text only
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError(BAD_DATA, "text message is not UTF-8") from None
            if text == "ping":
                session.send_text("pong")
    except ProtocolError as exc:
        session.close(exc.code, str(exc))
    except TimeoutError:
        session.close(GOING_AWAY, "idle")
    except (EOFError, OSError):
        session.closed = True
    return 101


# ---- a client (for tests and tools: one connection, text messages) ------------------------


class Client:
    """A WebSocket client on a connected (or TLS-wrapped) socket: the handshake, masked
    frames out, the server's frames in."""

    def __init__(self, sock: Any, host: str, path: str = GENERATIONS_PATH) -> None:
        import os

        self.sock = sock
        self.stream: BinaryIO = sock.makefile("rwb")
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   f"Sec-WebSocket-Version: {VERSION}\r\n\r\n")
        self.stream.write(request.encode("ascii"))
        self.stream.flush()
        status_line = self.stream.readline().decode("latin-1").strip()
        headers: dict[str, str] = {}
        while (line := self.stream.readline().decode("latin-1").strip()):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.status_line, self.headers = status_line, headers
        if status_line.split(" ")[1:2] != ["101"]:
            raise ProtocolError(PROTOCOL_ERROR, f"no upgrade: {status_line}")
        if headers.get("sec-websocket-accept") != accept_key(key):
            raise ProtocolError(PROTOCOL_ERROR, "wrong Sec-WebSocket-Accept")

    def send(self, opcode: int, payload: bytes, *, final: bool = True) -> None:
        import os

        frame = bytearray(encode_frame(opcode, payload, mask=os.urandom(4)))
        if not final:
            frame[0] &= 0x7F
        self.stream.write(bytes(frame))
        self.stream.flush()

    def send_text(self, text: str) -> None:
        self.send(TEXT, text.encode("utf-8"))

    def receive(self) -> tuple[int, bytes]:
        """The server's next frame (opcode, payload)."""
        _, opcode, payload = read_frame(self.stream, masked=False)
        return opcode, payload

    def receive_text(self) -> str:
        opcode, payload = self.receive()
        if opcode != TEXT:
            raise ProtocolError(PROTOCOL_ERROR, f"expected a text message, got opcode {opcode}")
        return payload.decode("utf-8")

    def close(self, code: int = NORMAL) -> int | None:
        """The closing handshake; the server's close code (None if it just went away)."""
        try:
            self.send(CLOSE, close_payload(code))
            opcode, payload = self.receive()
            return struct.unpack("!H", payload[:2])[0] if opcode == CLOSE and len(payload) >= 2 else None
        except (EOFError, OSError):
            return None
        finally:
            with contextlib.suppress(OSError):
                self.stream.close()
            with contextlib.suppress(OSError):
                self.sock.close()
