"""``python -m pixsim_reference_backend worker``: does the jobs the API queued in Redis.

A separate process from the same code and environment, as upstream's ARQ workers are.
It checks the schema and the host identity like the backend (it never creates either),
then pops job ids from the host's Redis, claims each job's row, does it and records the
result. SIGTERM or SIGINT stops it after the job in hand.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import time
from typing import Any

from . import __version__
from .jobs import QUEUE_KEY, WORKER_HEARTBEAT_SECONDS, WORKER_KEY_PREFIX, do_job
from .pg import Connection, PgConnectionError, PgError
from .redis_client import Redis, RedisConnectionError, RedisError
from .settings import Settings
from .startup import (
    EXIT_OK,
    EXIT_RUNTIME,
    StartupFailed,
    StopRequested,
    describe_error,
    fail,
    log,
    open_checked_database,
    settings_or_fail,
    short_error,
)

POP_TIMEOUT_SECONDS = 1  # how long one BRPOP waits, so a stop request is seen this fast
HEARTBEAT_EVERY_SECONDS = 5.0
APPLICATION_NAME = "pixsim-reference-worker"


class Worker:
    def __init__(self, settings: Settings, conn: Connection, name: str) -> None:
        self.settings = settings
        self.conn = conn
        self.name = name
        self.redis: Redis | None = None
        self.redis_down_since: float | None = None
        self.jobs_done = 0
        self.last_heartbeat = 0.0
        self.stop = False

    def _redis(self) -> Redis | None:
        if self.redis is not None and not self.redis.closed:
            return self.redis
        try:
            self.redis = Redis(self.settings.redis_url, timeout=POP_TIMEOUT_SECONDS + 4)
        except (OSError, RedisConnectionError, RedisError) as exc:
            if self.redis_down_since is None:
                self.redis_down_since = time.monotonic()
                log(f"worker {self.name}: redis unavailable ({describe_error(exc)}); retrying")
            return None
        if self.redis_down_since is not None:
            log(f"worker {self.name}: redis connected again")
        self.redis_down_since = None
        self.last_heartbeat = 0.0
        try:
            self.heartbeat(self.redis)
            self.requeue_orphans(self.redis)
        except (OSError, RedisConnectionError, RedisError):
            self.redis.close()
            self.redis = None
        return self.redis

    def heartbeat(self, redis: Redis, busy_for: float = 0.0) -> None:
        """Say this worker is alive, for longer than the job in hand may take."""
        now = time.monotonic()
        if not busy_for and now - self.last_heartbeat < HEARTBEAT_EVERY_SECONDS:
            return
        seen = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        redis.command("SET", WORKER_KEY_PREFIX + self.name,
                      json.dumps({"name": self.name, "pid": os.getpid(),
                                  "jobs_done": self.jobs_done, "seen": seen}),
                      "EX", WORKER_HEARTBEAT_SECONDS + math.ceil(busy_for))
        self.last_heartbeat = now

    def requeue_orphans(self, redis: Redis) -> None:
        """Queue again the jobs left running by a worker that died: one whose heartbeat is
        gone, or one with this worker's name (a name is one process at a time)."""
        for raw_id, owner in self.conn.execute(
                "SELECT id, worker FROM jobs WHERE status = 'running' ORDER BY id"):
            if owner != self.name and redis.command("EXISTS", WORKER_KEY_PREFIX + str(owner)):
                continue
            if self.conn.execute(
                    "UPDATE jobs SET status = 'queued', worker = NULL, started_at = NULL "
                    "WHERE id = $1 AND status = 'running' AND worker IS NOT DISTINCT FROM $2 "
                    "RETURNING id", (raw_id, owner)):
                redis.command("RPUSH", QUEUE_KEY, str(raw_id))  # popped next
                log(f"worker {self.name}: job {raw_id} was left running by {owner}; queued again")

    def step(self) -> None:
        """Wait up to POP_TIMEOUT_SECONDS for one job and do it."""
        redis = self._redis()
        if redis is None:
            time.sleep(POP_TIMEOUT_SECONDS)
            return
        try:
            self.heartbeat(redis)
            reply = redis.command("BRPOP", QUEUE_KEY, POP_TIMEOUT_SECONDS)
        except (OSError, RedisConnectionError, RedisError) as exc:
            redis.close()
            self.redis = None
            self.redis_down_since = time.monotonic()
            log(f"worker {self.name}: lost redis ({describe_error(exc)}); retrying")
            return
        if reply is None:
            return
        raw_id = reply[1]
        if not isinstance(raw_id, str) or not raw_id.isdigit():
            log(f"worker {self.name}: ignored a queue entry that is not a job id")
            return
        self.do(int(raw_id))

    def do(self, job_id: int) -> None:
        rows = self.conn.execute(
            "UPDATE jobs SET status = 'running', started_at = now(), worker = $2 "
            "WHERE id = $1 AND status = 'queued' RETURNING kind, payload::text",
            (job_id, self.name))
        if not rows:
            log(f"worker {self.name}: job {job_id} is not queued any more; skipped")
            return
        kind, payload = rows[0][0] or "", json.loads(rows[0][1] or "{}")
        if self.redis is not None:
            with contextlib.suppress(OSError, RedisConnectionError, RedisError):
                self.heartbeat(self.redis, busy_for=float(payload.get("delay") or 0) + 5)
        started = time.monotonic()
        try:
            result: dict[str, Any] = do_job(job_id, kind, payload, self.settings.pixsim_home,
                                            self.settings.server_id)
        except Exception as exc:  # a failing job is recorded, the worker goes on
            self.conn.execute(
                "UPDATE jobs SET status = 'failed', error = $2, finished_at = now() "
                "WHERE id = $1", (job_id, f"{type(exc).__name__}: {exc}"))
            outcome = f"failed ({type(exc).__name__})"
        else:
            self.conn.execute(
                "UPDATE jobs SET status = 'done', result = $2::jsonb, finished_at = now() "
                "WHERE id = $1", (job_id, json.dumps(result)))
            outcome = "done"
        self.jobs_done += 1
        elapsed = (time.monotonic() - started) * 1000
        log(f"worker {self.name}: job {job_id} ({kind}) {outcome} in {elapsed:.1f}ms")

    def close(self) -> None:
        redis = self.redis
        if redis is not None and not redis.closed:
            with contextlib.suppress(OSError, RedisConnectionError, RedisError):
                redis.command("DEL", WORKER_KEY_PREFIX + self.name)
            redis.close()
        self.conn.close()


def run() -> int:
    state: dict[str, Worker | None] = {"worker": None}

    def on_signal(signum: int, frame: Any) -> None:
        worker = state["worker"]
        if worker is None:
            raise StopRequested()  # still starting: abandon whatever blocks
        worker.stop = True  # working: stop after the job in hand

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker: Worker | None = None
    try:
        settings = settings_or_fail()
        name = settings.worker_name or f"{socket.gethostname()}-{os.getpid()}"
        log(f"pixsim reference worker {__version__} {name} starting: {settings.describe()}")
        conn = open_checked_database(settings, APPLICATION_NAME, record_identity=False)
        worker = Worker(settings, conn, name)
        state["worker"] = worker
        log(f"worker {name}: waiting for jobs on {QUEUE_KEY}")
        while not worker.stop:
            worker.step()
        log(f"worker {name}: stop requested; {worker.jobs_done} jobs done")
        return EXIT_OK
    except StartupFailed as exc:
        return exc.exit_code
    except StopRequested:
        log("stop requested; shutting down")
        return EXIT_OK
    except (PgError, PgConnectionError, OSError) as exc:
        fail(f"worker stopped: database error: {describe_error(exc)}: {short_error(exc)}")
        return EXIT_RUNTIME
    finally:
        state["worker"] = None
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if worker is not None:
            worker.close()
