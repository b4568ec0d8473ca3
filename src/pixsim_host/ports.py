"""Which TCP ports a host may listen on: free now on this machine, claimed by no other host.

Used by init (the backend's port), the runtimes (a clash found before anything starts, a
suggestion in its message) and doctor. Pure standard library, no state.
"""

from __future__ import annotations

import errno
import ipaddress
import socket

from pixsim_host.config import DEFAULT_BACKEND_PORT
from pixsim_host.errors import HostError


def port_is_free(bind: str, port: int) -> bool:
    """Whether ``bind:port`` can be bound now (what Docker will need at `up`)."""
    family = socket.AF_INET6 if ipaddress.ip_address(bind).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((bind, port))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL and not ipaddress.ip_address(bind).is_unspecified:
                # Not an address of this machine (yet: a VPN that is down). Whether the port is
                # free is then best told on every interface; `doctor` reports the address.
                return port_is_free("::" if family == socket.AF_INET6 else "0.0.0.0", port)
            return False
    return True


def pick_port(bind: str, claimed: set[int], start: int = DEFAULT_BACKEND_PORT) -> int:
    """The first port from ``start`` that no host claims and that is free on ``bind``."""
    for port in range(start, start + 1000):
        if port not in claimed and port_is_free(bind, port):
            return port
    raise HostError(f"no free port in {start}-{start + 999} on {bind}; pass --port")
