"""Probing a backend over HTTP: is it live, healthy, ready, and is it *this* host?

Identity is checked first: if another host answers at the URL, waiting for its health
would only delay the real error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pixsim_host.errors import HostError
from pixsim_host.progress import Progress

MAX_BODY = 1_000_000  # a contract answer is a few hundred bytes; more is not a PixSim7 backend


@dataclass
class BackendReport:
    url: str
    info: dict[str, Any]
    health: dict[str, Any]
    ready: dict[str, Any]
    version: dict[str, Any] = field(default_factory=dict)
    plugins: dict[str, Any] | None = None


class ProbeError(Exception):
    """One probe did not pass yet; the message says why (shown if the wait times out)."""


def make_client(timeout: float = 3.0) -> Any:
    from pixsim_host.webclient import WebClient

    # These probes go to the host's own published port over plain http (config.local_url):
    # no TLS is spoken, and loading the CA store would cost ~80 ms a client.
    return WebClient(timeout=timeout, max_bytes=MAX_BODY, verify=False)


def get_json(client: Any, url: str, path: str, *, ok: tuple[int, ...] = (200,)) -> dict[str, Any]:
    from pixsim_host import webclient as web

    # Each probe gets the client's timeout as its overall bound, headers and body included.
    client.reset_deadline(client.timeout)
    try:
        return dict(client.get_json(url + path, ok=ok))
    except web.Timeout:
        raise ProbeError(f"{path} timed out") from None
    except web.TooBig:
        raise ProbeError(f"{path} answered more than {MAX_BODY} bytes, far more than the contract") from None
    except web.BadStatus as exc:
        raise ProbeError(f"{path} answered HTTP {exc.status}") from None
    except web.NotJSON as exc:
        what = "a JSON object" if exc.reason.endswith("not an object") else "JSON"
        raise ProbeError(f"{path} did not answer {what}") from None
    except web.WebError as exc:
        raise ProbeError(f"{path}: {exc.kind} ({exc.reason})") from None


def check_identity(info: dict[str, Any], url: str, host_id: str) -> None:
    server_id = info.get("server_id")
    if server_id != host_id:
        name = info.get("server_name") or "?"
        raise HostError(
            f"the backend at {url} answers as host {server_id!r} ({name}), not as this host "
            f"{host_id}: another host is answering on this port, or backend.image ignores "
            "SERVER_ID; stop the other host or fix the backend's configuration"
        )


def probe_once(client: Any, url: str, host_id: str) -> BackendReport:
    """All contract checks once; raises ProbeError (not yet) or HostError (never)."""
    info = get_json(client, url, "/api/v1/server/info")
    check_identity(info, url, host_id)
    health = get_json(client, url, "/health")
    if health.get("database") != "connected":
        raise ProbeError(f"/health reports database {health.get('database')!r}")
    if health.get("redis") != "connected":
        raise ProbeError(f"/health reports redis {health.get('redis')!r}")
    ready = get_json(client, url, "/ready", ok=(200, 503))
    if ready.get("status") not in ("ready", "degraded"):
        raise ProbeError(f"/ready reports {ready.get('status')!r}")
    return BackendReport(url=url, info=info, health=health, ready=ready)


def wait_for_backend(url: str, host_id: str, deadline: float,
                     still_running: Callable[[], None], progress: Progress) -> BackendReport:
    """Poll until every check passes; ``still_running`` raises if the container died."""
    last = "no answer yet"
    progress("backend", "waiting for HTTP")
    with make_client() as client:
        while True:
            still_running()
            try:
                report = probe_once(client, url, host_id)
            except ProbeError as exc:
                if str(exc) != last:
                    last = str(exc)
                    progress("backend", f"waiting: {last}")
            else:
                try:
                    report.version = get_json(client, url, "/api/v1/version")
                except ProbeError as exc:
                    raise HostError(f"the backend at {url} does not serve the host contract: "
                                    f"{exc}; check backend.image") from None
                progress("backend", "healthy, identity verified")
                return report
            if time.monotonic() > deadline:
                raise ProbeError(last)
            time.sleep(0.05)  # a refused loopback connection costs microseconds: ask often


def verify_now(url: str, host_id: str) -> BackendReport:
    """Every check of :func:`wait_for_backend` once, now; ProbeError if one does not pass."""
    with make_client() as client:
        report = probe_once(client, url, host_id)
        report.version = get_json(client, url, "/api/v1/version")
    return report


def probe_status(url: str, host_id: str) -> tuple[BackendReport | None, str]:
    """One quick check for ``status``: the report, or why there is none."""
    with make_client(timeout=2.0) as client:
        try:
            return probe_once(client, url, host_id), "healthy"
        except ProbeError as exc:
            return None, str(exc)


def backend_hung(url: str, wait: float = 3.0) -> bool:
    """Whether the backend accepts connections but answers nothing, not even ``/``.

    PixSim7's event bridge spins when Redis goes away: the process keeps running (and its
    listening socket keeps accepting) while no request is answered, and it never recovers.
    A refused connection is not a hang: the backend is starting, or gone.
    """
    from pixsim_host import webclient as web

    with make_client(timeout=wait) as client:
        try:
            client.get(url + "/")
        except web.Timeout as exc:
            return exc.phase == "read"
        except web.WebError:
            return False
    return False
