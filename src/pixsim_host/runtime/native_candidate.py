"""A second backend process beside the host's own: the new version of a zero-downtime upgrade.

The candidate runs the host's backend exactly as ``up`` would (same code, environment and
working directory) but on a loopback port of its own, with its own pid file, log and
masking relay (``backend-candidate``), so it is never taken for the host's backend: ``status``,
``up``, ``logs backend`` and the supervisor go on seeing the recorded one until it is
replaced. See ``pixsim_host.rolling`` for the steps.
"""

from __future__ import annotations

from pixsim_host.config import HostConfig
from pixsim_host.runtime import BACKEND, procs
from pixsim_host.runtime.native import LOCALHOST, NativeRuntime
from pixsim_host.runtime.procs import PidRecord

CANDIDATE = "backend-candidate"


def with_backend_port(config: HostConfig, port: int) -> HostConfig:
    """``config`` with the backend on ``port`` (everything else as it is)."""
    return config.model_copy(update={"backend": config.backend.model_copy(update={"port": port})})


def candidate_port(runtime: NativeRuntime) -> int:
    """A free loopback port that neither this host nor another registered one claims."""
    from pixsim_host.ports import pick_port

    config = runtime.config
    own = {config.backend.port, *config.tls_ports, runtime.pg_port, runtime.redis_port,
           *(service.port for service in runtime.http_services.values())}
    return pick_port(LOCALHOST, runtime._claimed_ports() | own, start=config.backend.port + 1)


def start_candidate(runtime: NativeRuntime, port: int) -> PidRecord:
    """Start the new backend on ``port``; its output goes to logs/backend-candidate.log."""
    stop_candidate(runtime)  # one a killed upgrade left behind
    beside = NativeRuntime(runtime.host, with_backend_port(runtime.config, port), runtime.secrets)
    return beside._spawn(CANDIDATE, beside._launch(BACKEND))


def candidate_record(runtime: NativeRuntime) -> PidRecord | None:
    record = procs.read_record(runtime.pid_file(CANDIDATE))
    return record if procs.alive(record) else None


def stop_candidate(runtime: NativeRuntime) -> None:
    """SIGTERM, then (after the stop grace) SIGKILL: the backend finishes requests in progress."""
    runtime._stop(CANDIDATE, procs.read_record(runtime.pid_file(CANDIDATE)))


def backend_record(runtime: NativeRuntime) -> PidRecord | None:
    record = procs.read_record(runtime.pid_file(BACKEND))
    return record if procs.alive(record) else None


def stop_backend(runtime: NativeRuntime) -> None:
    """Stop the host's recorded backend gracefully (its pid file goes with it)."""
    runtime._stop(BACKEND, procs.read_record(runtime.pid_file(BACKEND)))


def start_backend(runtime: NativeRuntime) -> PidRecord:
    """Start the host's backend on backend.port, recorded as ``up`` records it."""
    return runtime._spawn(BACKEND, runtime._launch(BACKEND))


def proxy_current(runtime: NativeRuntime) -> bool:
    """Whether the running proxy is the one the host's Caddyfile describes now (so it has
    the admin socket a switch needs)."""
    from pixsim_host import tls

    record = procs.read_record(runtime.pid_file(tls.PROXY))
    return (procs.alive(record) and record is not None
            and record.config_hash == runtime._launch(tls.PROXY).config_hash
            and tls.admin_socket(runtime.host).exists())
