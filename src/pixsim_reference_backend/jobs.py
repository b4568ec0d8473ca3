"""Background jobs, shared by the API (which records and queues them) and the worker.

Like upstream's ARQ workers, the queue lives in the host's own Redis: the API inserts a
row in ``jobs`` (PostgreSQL, so jobs travel with a database backup) and pushes its id on
the list ``pixsim:jobs:queue``; a worker pops an id, claims the row, does the job and
records the result. Without a worker running, a job stays ``queued``.

Media a job makes is written under ``$PIXSIM_HOME/media``: user data a backup must carry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

QUEUE_KEY = "pixsim:jobs:queue"
WORKER_KEY_PREFIX = "pixsim:workers:"
WORKER_HEARTBEAT_SECONDS = 15
KINDS = ("render", "fail")
MAX_TEXT = 64 * 1024
MAX_DELAY_SECONDS = 30.0
SAFE_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

JOB_COLUMNS = ("id, kind, status, payload::text, result::text, error, worker, "
               "created_at::text, started_at::text, finished_at::text")

Execute = Callable[..., list[tuple[str | None, ...]]]


class JobRejected(ValueError):
    """A job request that is not valid (the API answers 422)."""


def validate_request(body: Any) -> tuple[str, dict[str, Any]]:
    """(kind, payload) for a job request body, or JobRejected saying what is wrong."""
    if not isinstance(body, dict):
        raise JobRejected("body must be a JSON object")
    kind = body.get("kind")
    if kind not in KINDS:
        raise JobRejected(f"'kind' must be one of {', '.join(KINDS)}")
    text = body.get("text", "")
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        raise JobRejected(f"'text' must be a string of at most {MAX_TEXT} characters")
    delay = body.get("delay", 0)
    if isinstance(delay, bool) or not isinstance(delay, int | float) \
            or not 0 <= delay <= MAX_DELAY_SECONDS:
        raise JobRejected(f"'delay' must be a number of seconds from 0 to {MAX_DELAY_SECONDS:g}")
    return kind, {"text": text, "delay": delay}


def job_json(row: tuple[str | None, ...]) -> dict[str, Any]:
    job_id, kind, status, payload, result, error, worker, created, started, finished = row
    return {
        "id": int(job_id or 0),
        "kind": kind,
        "status": status,
        "payload": json.loads(payload or "{}"),
        "result": json.loads(result) if result else None,
        "error": error,
        "worker": worker,
        "created_at": created,
        "started_at": started,
        "finished_at": finished,
    }


def media_dir(pixsim_home: Path) -> Path:
    return pixsim_home / "media"


def uploads_dir(pixsim_home: Path) -> Path:
    return pixsim_home / "uploads"


def safe_child(root: Path, name: str) -> Path | None:
    """``root/name`` when ``name`` is a plain file name (no path, no dot-file), else None."""
    if not SAFE_FILE_NAME.match(name) or ".." in name:
        return None
    return root / name


def write_atomically(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def file_facts(path: Path, pixsim_home: Path) -> dict[str, Any]:
    data = path.read_bytes()
    return {"path": str(path.relative_to(pixsim_home)), "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}


def do_job(job_id: int, kind: str, payload: dict[str, Any], pixsim_home: Path,
           server_id: str) -> dict[str, Any]:
    """Do one job and return its result; raise to fail it (the message is recorded)."""
    delay = float(payload.get("delay") or 0)
    if delay:
        time.sleep(min(delay, MAX_DELAY_SECONDS))
    if kind == "fail":
        raise RuntimeError(str(payload.get("text") or "failed on purpose"))
    if kind != "render":
        raise RuntimeError(f"unknown job kind {kind!r}")
    text = str(payload.get("text") or "")
    out = media_dir(pixsim_home) / f"{job_id}.txt"
    write_atomically(out, f"job {job_id} on host {server_id}\n{text}\n".encode())
    return file_facts(out, pixsim_home)
