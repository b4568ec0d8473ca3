"""The one HTTP client of pixsim-host: bounded in time and size, with typed failures.

Every HTTP call (a host's own probes, ``hosts`` probes, ``doctor``, ``connect``) goes through
``WebClient``. It never follows redirects, never reads proxies or netrc from the environment
(loopback probes must not go through an internet proxy, and no credential may be sent to a
host), caps every answer's size (after decompression) and nests JSON no deeper than
safeload allows.

Time has two bounds: ``timeout`` for each connect, read and write, and ONE overall
``deadline`` across everything a client does until it is reset (connect, TLS, headers and
body of every request): the network layer gets, for every socket operation, the smaller of
the two, so a server that sends one header line every few seconds cannot hold a caller past
the deadline. Plain ``http://`` goes through the standard library's http.client (no import
cost: most requests are a host's own loopback probes); https, and every request of a client
given a ``transport`` (tests pass an ``httpx.MockTransport``), through httpx.
"""

from __future__ import annotations

import http.client
import re
import socket
import ssl
import time
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pixsim_host import safeload
from pixsim_host.errors import HostError

if TYPE_CHECKING:
    import httpcore
    import httpx

MAX_BYTES = 1_000_000  # every answer pixsim-host reads is a few kilobytes at most
DEFAULT_TIMEOUT = 5.0


# ---- typed failures ------------------------------------------------------------------------


class WebError(HostError):
    """An HTTP exchange with ``url`` failed; ``reason`` says how, in a few words."""

    kind = "failed"

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}; check the address and that the host is up")
        self.url = url
        self.reason = reason


class Refused(WebError):
    kind = "refused"


class Unreachable(WebError):
    """No connection for another reason (a name that does not resolve, no route)."""

    kind = "unreachable"


class Timeout(WebError):
    kind = "timeout"

    def __init__(self, url: str, reason: str, *, phase: str, deadline_passed: bool) -> None:
        super().__init__(url, reason)
        self.phase = phase  # "connect", "read" or "write"
        self.deadline_passed = deadline_passed


class TLSFailure(WebError):
    kind = "tls"

    def __init__(self, url: str, reason: str, *, untrusted: bool) -> None:
        super().__init__(url, reason)
        self.untrusted = untrusted  # the certificate, rather than the handshake


class BadStatus(WebError):
    kind = "status"

    def __init__(self, url: str, status: int) -> None:
        super().__init__(url, f"answered HTTP {status}")
        self.status = status


class NotJSON(WebError):
    kind = "not-json"

    def __init__(self, url: str, reason: str, *, html: bool) -> None:
        super().__init__(url, reason)
        self.html = html


class TooBig(WebError):
    kind = "too-big"

    def __init__(self, url: str, limit: int, declared: int | None = None) -> None:
        size = f"{declared} bytes" if declared is not None else f"more than {limit} bytes"
        super().__init__(url, f"answered {size} (limit {limit})")
        self.limit = limit
        self.declared = declared


class TooDeep(NotJSON):
    kind = "too-deep"


# ---- replies -------------------------------------------------------------------------------


@dataclass
class Reply:
    url: str
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def is_redirect(self) -> bool:
        return self.status in (301, 302, 303, 307, 308) and "location" in self.headers

    def json_object(self, max_depth: int = safeload.MAX_DEPTH) -> dict[str, Any]:
        """The body as a JSON object, or NotJSON / TooDeep."""
        html = "html" in self.headers.get("content-type", "").lower() or self.body.lstrip()[:1] == b"<"
        if safeload.json_depth(self.body) > max_depth:
            raise TooDeep(self.url, f"answered JSON nested deeper than {max_depth} levels", html=False)
        try:
            data = safeload.parse_json(self.body, self.url, "not JSON")
        except HostError:
            raise NotJSON(self.url, "answered an HTML page" if html else
                          "answered something that is not JSON", html=html) from None
        if not isinstance(data, dict):
            raise NotJSON(self.url, "answered JSON that is not an object", html=False)
        return data


# ---- the deadline, enforced under httpx ----------------------------------------------------


class Deadline:
    """A point in time every socket operation of a client must finish by (None: no bound)."""

    def __init__(self, seconds: float | None) -> None:
        self.reset(seconds)

    def reset(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.end = None if seconds is None else time.monotonic() + seconds

    @property
    def passed(self) -> bool:
        return self.end is not None and time.monotonic() >= self.end

    def bound(self, timeout: float | None, phase: str) -> float | None:
        if self.end is None:
            return timeout
        import httpcore

        remaining = self.end - time.monotonic()
        if remaining <= 0:
            error = httpcore.ConnectTimeout if phase == "connect" else httpcore.ReadTimeout
            raise error(f"the overall deadline of {self.seconds:.0f} s passed")
        return remaining if timeout is None else min(timeout, remaining)


def _deadline_backend(deadline: Deadline) -> httpcore.NetworkBackend:
    import httpcore

    class DeadlineStream(httpcore.NetworkStream):
        def __init__(self, inner: httpcore.NetworkStream) -> None:
            self._inner = inner

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            return self._inner.read(max_bytes, deadline.bound(timeout, "read"))

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            self._inner.write(buffer, deadline.bound(timeout, "write"))

        def close(self) -> None:
            self._inner.close()

        def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                      timeout: float | None = None) -> httpcore.NetworkStream:
            return DeadlineStream(self._inner.start_tls(ssl_context, server_hostname,
                                                        deadline.bound(timeout, "connect")))

        def get_extra_info(self, info: str) -> Any:
            return self._inner.get_extra_info(info)

    class DeadlineBackend(httpcore.NetworkBackend):
        def __init__(self) -> None:
            self._inner = httpcore.SyncBackend()

        def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                        local_address: str | None = None,
                        socket_options: Any = None) -> httpcore.NetworkStream:
            return DeadlineStream(self._inner.connect_tcp(
                host, port, deadline.bound(timeout, "connect"), local_address, socket_options))

        def connect_unix_socket(self, path: str, timeout: float | None = None,
                                socket_options: Any = None) -> httpcore.NetworkStream:
            return DeadlineStream(self._inner.connect_unix_socket(
                path, deadline.bound(timeout, "connect"), socket_options))

        def sleep(self, seconds: float) -> None:
            self._inner.sleep(seconds)

    return DeadlineBackend()


def _transport(verify: ssl.SSLContext | bool, max_connections: int | None,
               deadline: Deadline) -> httpx.BaseTransport:
    import httpcore
    import httpx

    transport = httpx.HTTPTransport(verify=verify, trust_env=False)
    # httpx builds its connection pool without a way to pass the network layer, so the
    # pool is rebuilt with the same settings and the deadline-enforcing backend.
    transport._pool = httpcore.ConnectionPool(  # noqa: SLF001
        ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
        max_connections=max_connections, max_keepalive_connections=0 if max_connections else None,
        network_backend=_deadline_backend(deadline),
    )
    return transport


# ---- the client ----------------------------------------------------------------------------


def tls_context(ca_cert: Any = None) -> ssl.SSLContext | bool:
    """Verification for https: the system store, or a CA file given by the user."""
    if ca_cert is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(ca_cert))
    except (OSError, ssl.SSLError) as exc:
        raise HostError(f"cannot use {ca_cert} as a CA certificate ({exc}); give a PEM file") from None


class WebClient:
    """GET with bounded time and size; see the module's docstring."""

    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT, deadline: float | None = None,
                 max_bytes: int = MAX_BYTES, verify: ssl.SSLContext | bool = True,
                 max_connections: int | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.timeout = timeout
        self.deadline = Deadline(deadline)
        self.max_bytes = max_bytes
        self._verify = verify
        self._max_connections = max_connections
        self._transport_given = transport
        self._httpx_client: httpx.Client | None = None

    @property
    def _client(self) -> httpx.Client:
        """httpx, made on first use: plain-http requests do without it (see ``plain_get``)."""
        if self._httpx_client is None:
            import httpx

            self._httpx_client = httpx.Client(
                timeout=httpx.Timeout(self.timeout), follow_redirects=False, trust_env=False,
                headers={"Accept": "application/json"},
                transport=self._transport_given or TRANSPORT or _transport(
                    self._verify, self._max_connections, self.deadline),
            )
        return self._httpx_client

    def __enter__(self) -> WebClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._httpx_client is not None:
            self._httpx_client.close()

    def reset_deadline(self, seconds: float | None) -> None:
        """Start a new overall deadline (a new round of probes)."""
        self.deadline.reset(seconds)

    def get(self, url: str, *, max_bytes: int | None = None) -> Reply:
        """The reply to ``GET url`` whatever its status (redirects are not followed)."""
        limit = self.max_bytes if max_bytes is None else max_bytes
        if url.startswith("http://") and self._transport_given is None and TRANSPORT is None:
            return _plain_get(url, limit, self.timeout, self.deadline)
        import httpx

        try:
            with self._client.stream("GET", url) as response:
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise TooBig(url, limit, int(declared))
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > limit:
                        raise TooBig(url, limit)
                    if self.deadline.passed:  # a transport without the deadline layer
                        raise Timeout(url, self._late(), phase="read", deadline_passed=True)
                headers = {k.lower(): v for k, v in response.headers.items()}
                return Reply(url, response.status_code, headers, bytes(body))
        except httpx.TimeoutException as exc:
            phase = "connect" if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout) else \
                "write" if isinstance(exc, httpx.WriteTimeout) else "read"
            passed = self.deadline.passed
            reason = self._late() if passed else (
                "connecting timed out" if phase == "connect" else "did not answer in time")
            raise Timeout(url, reason, phase=phase, deadline_passed=passed) from None
        except httpx.HTTPError as exc:
            raise _classify(url, exc) from None

    def get_json(self, url: str, *, ok: tuple[int, ...] = (200,),
                 max_bytes: int | None = None) -> dict[str, Any]:
        """``GET url`` as a JSON object; any other status is BadStatus."""
        reply = self.get(url, max_bytes=max_bytes)
        if reply.status not in ok:
            raise BadStatus(url, reply.status)
        return reply.json_object()

    def _late(self) -> str:
        return f"no complete answer within the {self.deadline.seconds or 0:g} s deadline"


# Tests (in-process) may set a transport every new client uses, e.g. httpx.MockTransport.
TRANSPORT: httpx.BaseTransport | None = None


# ---- plain http with the standard library --------------------------------------------------
# Most requests are plain http to loopback (a host's own probes, `hosts` probes): they go
# through http.client, which costs nothing to import, instead of httpx (about a tenth of a
# second to import). The same rules hold: no proxy, no redirect, the size cap, every socket
# operation bounded by the smaller of the timeout and the overall deadline, typed failures.


class _LateError(TimeoutError):
    """The overall deadline passed before a socket operation could start."""


class _BoundedSocket(socket.socket):
    """Every receive and send bounded by the smaller of the timeout and the deadline's rest."""

    deadline: Deadline
    limit: float

    def bound(self) -> None:
        limit = self.limit
        if self.deadline.end is not None:
            remaining = self.deadline.end - time.monotonic()
            if remaining <= 0:
                raise _LateError(f"the overall deadline of {self.deadline.seconds:.0f} s passed")
            limit = min(limit, remaining)
        self.settimeout(limit)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        self.bound()
        return super().recv_into(buffer, nbytes, flags)

    def sendall(self, data: Any, flags: int = 0) -> None:
        self.bound()
        super().sendall(data, flags)


class _PlainConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int | None, timeout: float, deadline: Deadline) -> None:
        super().__init__(host, port, timeout=timeout)
        self._deadline = deadline
        self._limit = timeout

    def connect(self) -> None:
        last: OSError | None = None
        for family, socktype, proto, _, address in socket.getaddrinfo(
                self.host, self.port, type=socket.SOCK_STREAM):
            sock = _BoundedSocket(family, socktype, proto)
            sock.deadline, sock.limit = self._deadline, self._limit
            try:
                sock.bound()
                sock.connect(address)
            except OSError as exc:
                sock.close()
                last = exc
                continue
            self.sock = sock
            return
        raise last or OSError(f"no address for {self.host}")


def _plain_get(url: str, limit: int, timeout: float, deadline: Deadline) -> Reply:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn = _PlainConnection(parts.hostname or "", parts.port, timeout, deadline)
    late = f"no complete answer within the {deadline.seconds or 0:g} s deadline"
    phase = "connect"
    try:
        try:
            conn.connect()
        except ConnectionRefusedError:
            raise Refused(url, "connection refused: nothing listens there") from None
        except socket.gaierror:
            raise Unreachable(url, "the host name does not resolve") from None
        phase = "write"
        conn.request("GET", target, headers={"Accept": "application/json"})
        phase = "read"
        response = conn.getresponse()
        declared = response.getheader("content-length", "") or ""
        if declared.isdigit() and int(declared) > limit:
            raise TooBig(url, limit, int(declared))
        body = bytearray()
        while chunk := response.read1(65536):
            body += chunk
            if len(body) > limit:
                raise TooBig(url, limit)
        headers: dict[str, str] = {}
        for name, value in response.getheaders():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return Reply(url, response.status, headers, bytes(body))
    except TimeoutError:
        passed = deadline.passed
        reason = late if passed else (
            "connecting timed out" if phase == "connect" else "did not answer in time")
        raise Timeout(url, reason, phase=phase, deadline_passed=passed) from None
    except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
        # A port published by a proxy (Docker's) accepts, then closes while nothing listens
        # behind it: one wording however the close shows, so a waiting caller says it once.
        raise Unreachable(url, "the connection was closed without an answer") from None
    except (OSError, http.client.HTTPException) as exc:
        text = str(exc) or type(exc).__name__
        raise Unreachable(url, safe_text(text.splitlines()[0], 160)) from None
    finally:
        conn.close()


def _classify(url: str, exc: BaseException) -> WebError:
    tls = _tls_problem(exc)
    if tls is not None:
        return TLSFailure(url, tls[1], untrusted=tls[0])
    text = str(exc) or type(exc).__name__
    if "Connection refused" in text or "ECONNREFUSED" in text or "Errno 111" in text:
        return Refused(url, "connection refused: nothing listens there")
    if "Name or service not known" in text or "nodename nor servname" in text or \
            "Temporary failure in name resolution" in text:
        return Unreachable(url, "the host name does not resolve")
    return Unreachable(url, safe_text(text.splitlines()[0] if text else type(exc).__name__, 160))


def _tls_problem(exc: BaseException) -> tuple[bool, str] | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True, f"its TLS certificate is not trusted ({seen.verify_message or seen.reason})"
        if isinstance(seen, ssl.SSLError):
            return False, f"the TLS handshake failed ({seen.reason or seen})"
        seen = seen.__cause__ or seen.__context__
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return True, "its TLS certificate is not trusted"
    if "SSL" in text or "TLS" in text:
        return False, f"the TLS handshake failed ({safe_text(text, 160)})"
    return None


UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def safe_text(value: str, limit: int = 120) -> str:
    """Text from the network, safe to print: no control or bidi characters, bounded."""
    text = UNPRINTABLE.sub("?", value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
