"""Minimal PostgreSQL frontend/backend protocol (v3) client.

Only what the reference backend needs: connect, authenticate (trust, cleartext, md5,
SCRAM-SHA-256) and run parameterised statements through the extended query protocol.
Parameters always travel as separate text values, so SQL is never assembled by quoting.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import socket
import stringprep
import struct
import threading
import unicodedata
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = [
    "PgError",
    "PgConnectionError",
    "PgAuthError",
    "PgUrl",
    "parse_pg_url",
    "mask_url",
    "ScramClient",
    "saslprep",
    "Connection",
    "connect",
]

PROTOCOL_V3 = 196608
SSL_REQUEST_CODE = 80877103


class PgError(Exception):
    """An ErrorResponse from the server. The connection stays usable afterwards."""

    def __init__(self, code: str, message: str, fields: dict[str, str] | None = None) -> None:
        super().__init__(f"{code}: {message}" if code else message)
        self.code = code
        self.message = message
        self.fields = fields or {}


class PgConnectionError(Exception):
    """The connection is unusable (I/O failure, protocol violation, failed auth handshake)."""


class PgAuthError(PgConnectionError):
    """Authentication could not be completed on the client side; retrying will not help."""


@dataclass(frozen=True)
class PgUrl:
    user: str
    password: str | None
    host: str
    port: int
    database: str
    options: dict[str, str]


def parse_pg_url(url: str) -> PgUrl:
    """Parse ``postgresql://user:pass@host:port/db``; user info and db are percent-decoded."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError("database URL must start with postgresql://")
    try:
        port = parts.port or 5432
    except ValueError as exc:
        raise ValueError("database URL has an invalid port") from exc
    host = parts.hostname or ""
    if not host:
        raise ValueError("database URL has no host")
    user = unquote(parts.username) if parts.username else ""
    password = unquote(parts.password) if parts.password is not None else None
    database = unquote(parts.path.lstrip("/")) or user
    if not user:
        raise ValueError("database URL has no user name")
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return PgUrl(user, password, host, port, database, options)


def mask_url(url: str) -> str:
    """Replace the password in any ``scheme://user:pass@host`` URL so it can be logged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    netloc = parts.netloc
    userinfo, _, hostport = netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:***@{hostport}").geturl()


# --- SASLprep (RFC 4013), as PostgreSQL applies it to SCRAM passwords ---------------


def saslprep(text: str) -> str:
    """Normalise a password per RFC 4013; raises ValueError when it is not valid."""
    mapped = []
    for ch in text:
        if stringprep.in_table_c12(ch):
            mapped.append(" ")
        elif not stringprep.in_table_b1(ch):
            mapped.append(ch)
    norm = unicodedata.normalize("NFKC", "".join(mapped))
    if not norm:
        return norm
    prohibited = (
        stringprep.in_table_c12,
        stringprep.in_table_c21_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
        stringprep.in_table_a1,
    )
    for ch in norm:
        if any(check(ch) for check in prohibited):
            raise ValueError("password contains a character SASLprep prohibits")
    has_ral = any(stringprep.in_table_d1(ch) for ch in norm)
    if has_ral:
        if any(stringprep.in_table_d2(ch) for ch in norm):
            raise ValueError("password mixes bidirectional character classes")
        if not (stringprep.in_table_d1(norm[0]) and stringprep.in_table_d1(norm[-1])):
            raise ValueError("password violates the bidirectional rule")
    return norm


def _password_bytes(password: str) -> bytes:
    # PostgreSQL falls back to the raw bytes when SASLprep rejects a password; so must we.
    try:
        return saslprep(password).encode("utf-8")
    except ValueError:
        return password.encode("utf-8")


class ScramClient:
    """Client side of SCRAM-SHA-256 (RFC 5802 / RFC 7677), without channel binding."""

    mechanism = "SCRAM-SHA-256"

    def __init__(self, password: str, username: str = "", nonce: str | None = None) -> None:
        # PostgreSQL ignores the SCRAM user name (the startup message names the role).
        self._password = _password_bytes(password)
        self._username = username.replace("=", "=3D").replace(",", "=2C")
        self._nonce = nonce or base64.b64encode(os.urandom(18)).decode("ascii")
        self._client_first_bare = f"n={self._username},r={self._nonce}"
        self._auth_message: bytes | None = None
        self._server_signature: bytes | None = None

    def client_first(self) -> bytes:
        return ("n,," + self._client_first_bare).encode("ascii")

    def client_final(self, server_first: bytes) -> bytes:
        text = server_first.decode("utf-8")
        attrs = _scram_attrs(text)
        if "e" in attrs:
            raise PgAuthError(f"SCRAM error from server: {attrs['e']}")
        try:
            nonce = attrs["r"]
            salt = base64.b64decode(attrs["s"], validate=True)
            iterations = int(attrs["i"])
        except (KeyError, ValueError) as exc:
            raise PgAuthError("malformed SCRAM server-first message") from exc
        if not nonce.startswith(self._nonce) or len(nonce) <= len(self._nonce):
            raise PgAuthError("SCRAM server nonce does not extend the client nonce")
        if iterations < 1:
            raise PgAuthError("SCRAM iteration count is invalid")
        salted = hashlib.pbkdf2_hmac("sha256", self._password, salt, iterations)
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={nonce}"
        auth_message = ",".join((self._client_first_bare, text, without_proof)).encode("utf-8")
        client_signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, client_signature, strict=True))
        server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        self._server_signature = hmac.new(server_key, auth_message, hashlib.sha256).digest()
        self._auth_message = auth_message
        return (without_proof + ",p=" + base64.b64encode(proof).decode("ascii")).encode("ascii")

    def verify_server_final(self, server_final: bytes) -> None:
        if self._server_signature is None:
            raise PgAuthError("SCRAM server-final received before client-final")
        attrs = _scram_attrs(server_final.decode("utf-8"))
        if "e" in attrs:
            raise PgAuthError(f"SCRAM error from server: {attrs['e']}")
        try:
            received = base64.b64decode(attrs["v"], validate=True)
        except (KeyError, ValueError) as exc:
            raise PgAuthError("malformed SCRAM server-final message") from exc
        if not hmac.compare_digest(received, self._server_signature):
            raise PgAuthError("SCRAM server signature mismatch: server is not authentic")


def _scram_attrs(text: str) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if sep and len(key) == 1:
            attrs.setdefault(key, value)
    return attrs


def _md5_password(user: str, password: str, salt: bytes) -> bytes:
    inner = hashlib.md5((password + user).encode("utf-8")).hexdigest()
    outer = hashlib.md5(inner.encode("ascii") + salt).hexdigest()
    return ("md5" + outer).encode("ascii")


def _cstr(value: str) -> bytes:
    data = value.encode("utf-8")
    if b"\x00" in data:
        raise ValueError("NUL byte in protocol string")
    return data + b"\x00"


def _parse_error_fields(payload: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    pos = 0
    while pos < len(payload) and payload[pos] != 0:
        code = chr(payload[pos])
        end = payload.index(b"\x00", pos + 1)
        fields[code] = payload[pos + 1 : end].decode("utf-8", "replace")
        pos = end + 1
    return fields


Row = tuple[str | None, ...]


class Connection:
    """One server session. Calls are serialised with a lock, so threads may share it."""

    def __init__(self, url: str | PgUrl, *, timeout: float = 10.0,
                 application_name: str = "pixsim-reference-backend") -> None:
        self.url = parse_pg_url(url) if isinstance(url, str) else url
        self.timeout = timeout
        self.parameters: dict[str, str] = {}
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
            self._startup(application_name)
        except BaseException:
            self._abort()
            raise

    # -- low-level I/O ---------------------------------------------------------------

    def _abort(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self._sock.close()

    def _send(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError as exc:
            self._abort()
            raise PgConnectionError(f"connection lost: {exc}") from exc

    def _recv_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            try:
                chunk = self._sock.recv(max(65536, n - len(self._buf)))
            except OSError as exc:
                self._abort()
                raise PgConnectionError(f"connection lost: {exc}") from exc
            if not chunk:
                self._abort()
                raise PgConnectionError("connection closed by server")
            self._buf += chunk
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def _read_message(self) -> tuple[bytes, bytes]:
        header = self._recv_exact(5)
        kind = header[:1]
        (length,) = struct.unpack("!I", header[1:])
        if length < 4:
            self._abort()
            raise PgConnectionError("protocol violation: bad message length")
        return kind, self._recv_exact(length - 4)

    @staticmethod
    def _msg(kind: bytes, payload: bytes) -> bytes:
        return kind + struct.pack("!I", len(payload) + 4) + payload

    # -- startup and authentication --------------------------------------------------

    def _startup(self, application_name: str) -> None:
        params = {
            "user": self.url.user,
            "database": self.url.database,
            "client_encoding": "UTF8",
            "application_name": application_name,
        }
        body = struct.pack("!I", PROTOCOL_V3)
        for key, value in params.items():
            body += _cstr(key) + _cstr(value)
        body += b"\x00"
        self._send(struct.pack("!I", len(body) + 4) + body)

        scram: ScramClient | None = None
        while True:
            kind, payload = self._read_message()
            if kind == b"R":
                (code,) = struct.unpack("!I", payload[:4])
                if code == 0:
                    continue
                password = self.url.password
                if code in (3, 5, 10) and password is None:
                    raise PgAuthError("server requires a password but the URL has none")
                if code == 3:
                    self._send(self._msg(b"p", _cstr(password or "")))
                elif code == 5:
                    reply = _md5_password(self.url.user, password or "", payload[4:8])
                    self._send(self._msg(b"p", reply + b"\x00"))
                elif code == 10:
                    mechanisms = [m.decode() for m in payload[4:].split(b"\x00") if m]
                    if ScramClient.mechanism not in mechanisms:
                        raise PgAuthError(
                            f"no supported SASL mechanism (server offers {mechanisms})")
                    scram = ScramClient(password or "")
                    first = scram.client_first()
                    body = _cstr(ScramClient.mechanism) + struct.pack("!i", len(first)) + first
                    self._send(self._msg(b"p", body))
                elif code == 11:
                    if scram is None:
                        raise PgAuthError("unexpected SASLContinue")
                    self._send(self._msg(b"p", scram.client_final(payload[4:])))
                elif code == 12:
                    if scram is None:
                        raise PgAuthError("unexpected SASLFinal")
                    scram.verify_server_final(payload[4:])
                else:
                    raise PgAuthError(f"unsupported authentication method (code {code})")
            elif kind == b"S":
                pname, pvalue = payload.split(b"\x00")[:2]
                self.parameters[pname.decode()] = pvalue.decode("utf-8", "replace")
            elif kind == b"K":
                pass
            elif kind == b"E":
                fields = _parse_error_fields(payload)
                raise PgError(fields.get("C", ""), fields.get("M", "unknown error"), fields)
            elif kind == b"N":
                pass
            elif kind == b"Z":
                return
            else:
                raise PgConnectionError(f"unexpected message {kind!r} during startup")

    # -- queries -----------------------------------------------------------------------

    def execute(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[Row]:
        """Run one statement with ``$1..$n`` text parameters; return rows as tuples of str."""
        with self._lock:
            if self.closed:
                raise PgConnectionError("connection is closed")
            return self._execute(sql, params)

    def _execute(self, sql: str, params: tuple[Any, ...] | list[Any]) -> list[Row]:
        if len(params) > 32767:
            raise ValueError("too many parameters")
        bind = b"\x00\x00" + struct.pack("!H", 0) + struct.pack("!H", len(params))
        for value in params:
            if value is None:
                bind += struct.pack("!i", -1)
            else:
                if isinstance(value, bool):
                    text = "true" if value else "false"
                elif isinstance(value, bytes):
                    text = value.decode("utf-8")
                else:
                    text = str(value)
                data = text.encode("utf-8")
                bind += struct.pack("!i", len(data)) + data
        bind += struct.pack("!H", 0)
        self._send(
            self._msg(b"P", b"\x00" + _cstr(sql) + struct.pack("!H", 0))
            + self._msg(b"B", bind)
            + self._msg(b"E", b"\x00" + struct.pack("!I", 0))
            + self._msg(b"S", b"")
        )
        rows: list[Row] = []
        error: PgError | None = None
        while True:
            kind, payload = self._read_message()
            if kind == b"D":
                (ncols,) = struct.unpack("!H", payload[:2])
                pos = 2
                row: list[str | None] = []
                for _ in range(ncols):
                    (size,) = struct.unpack("!i", payload[pos : pos + 4])
                    pos += 4
                    if size < 0:
                        row.append(None)
                    else:
                        row.append(payload[pos : pos + size].decode("utf-8"))
                        pos += size
                rows.append(tuple(row))
            elif kind == b"E":
                error = self._error_response(payload)
            elif kind == b"Z":
                if error is not None:
                    raise error
                return rows
            elif kind == b"S":
                name, value = payload.split(b"\x00")[:2]
                self.parameters[name.decode()] = value.decode("utf-8", "replace")
            elif kind in (b"1", b"2", b"C", b"I", b"T", b"n", b"N", b"s", b"A", b"3"):
                continue
            else:
                self._abort()
                raise PgConnectionError(f"unexpected message {kind!r}")

    def _error_response(self, payload: bytes) -> PgError:
        fields = _parse_error_fields(payload)
        error = PgError(fields.get("C", ""), fields.get("M", "unknown error"), fields)
        if fields.get("S") == "FATAL" or fields.get("V") == "FATAL":
            # The server closes the session after a FATAL error.
            self._abort()
            raise error
        return error

    def script(self, sql: str) -> None:
        """Run a script of several statements (simple query protocol), e.g. a migration file.

        Outside an explicit transaction PostgreSQL runs the whole script as one implicit
        transaction; inside one, the first error aborts it. The first error is raised.
        """
        with self._lock:
            if self.closed:
                raise PgConnectionError("connection is closed")
            self._send(self._msg(b"Q", _cstr(sql)))
            error: PgError | None = None
            while True:
                kind, payload = self._read_message()
                if kind == b"E":
                    error = error or self._error_response(payload)
                elif kind == b"Z":
                    if error is not None:
                        raise error
                    return
                elif kind == b"S":
                    name, value = payload.split(b"\x00")[:2]
                    self.parameters[name.decode()] = value.decode("utf-8", "replace")
                elif kind in (b"C", b"T", b"D", b"I", b"N", b"A"):
                    continue
                elif kind in (b"G", b"H"):
                    self._abort()  # COPY is not supported; the protocol state is lost
                    raise PgConnectionError("COPY is not supported in scripts")
                else:
                    self._abort()
                    raise PgConnectionError(f"unexpected message {kind!r}")

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            with contextlib.suppress(OSError):
                self._sock.sendall(self._msg(b"X", b""))
            self._abort()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(url: str | PgUrl, *, timeout: float = 10.0) -> Connection:
    return Connection(url, timeout=timeout)
