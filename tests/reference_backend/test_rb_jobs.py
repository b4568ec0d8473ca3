"""Jobs go through Redis to a separate worker process, which writes under PIXSIM_HOME."""

from __future__ import annotations

import hashlib
import signal
import time
from pathlib import Path
from typing import Any

from rb_support import Backend, BackendFactory, free_port


def wait_job(b: Backend, job_id: int, status: str, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = b.get(f"/api/v1/jobs/{job_id}").body
        if job["status"] == status or time.monotonic() > deadline:
            assert job["status"] == status, job
            return dict(job)
        time.sleep(0.05)


def test_worker_does_a_job_submitted_through_the_api(backends: BackendFactory) -> None:
    env = backends.env(WORKER_NAME="worker-a")
    home = Path(env["PIXSIM_HOME"])
    b = backends.run(env)
    submitted = b.request("POST", "/api/v1/jobs", body={"kind": "render", "text": "héllo map"})
    assert submitted.status == 202
    job = submitted.body
    assert (job["kind"], job["status"], job["result"]) == ("render", "queued", None)

    # Without a worker nothing does it: the point of running workers in a host.
    time.sleep(1.5)
    assert b.get(f"/api/v1/jobs/{job['id']}").body["status"] == "queued"
    assert not (home / "media" / f"{job['id']}.txt").exists()

    worker = backends.worker(env)
    done = wait_job(b, job["id"], "done")
    path = home / "media" / f"{job['id']}.txt"
    content = path.read_bytes()
    assert content == f"job {job['id']} on host host-test\nhéllo map\n".encode()
    assert done["result"] == {"path": f"media/{job['id']}.txt", "size": len(content),
                              "sha256": hashlib.sha256(content).hexdigest()}
    assert done["worker"] == "worker-a" and done["error"] is None
    assert done["finished_at"] is not None

    served = b.request("GET", f"/api/v1/media/{job['id']}.txt")
    assert (served.status, served.body) == (200, content)
    assert served.headers["Content-Type"] == "text/plain; charset=utf-8"
    files = b.get("/api/v1/media").body["files"]
    assert {"name": f"{job['id']}.txt", "size": len(content),
            "path": f"media/{job['id']}.txt"} in files

    workers = b.get("/api/v1/workers").body["workers"]
    assert [(w["name"], w["pid"]) for w in workers] == [("worker-a", worker.proc.pid)]  # type: ignore[union-attr]

    failing = b.request("POST", "/api/v1/jobs", body={"kind": "fail", "text": "no ink"}).body
    failed = wait_job(b, failing["id"], "failed")
    assert failed["error"] == "RuntimeError: no ink" and failed["result"] is None

    assert worker.stop() == 0
    assert "worker worker-a: stop requested; 2 jobs done" in worker.stdout
    assert b.get("/api/v1/workers").body["workers"] == []


def test_worker_finishes_the_job_in_hand_on_sigterm(backends: BackendFactory) -> None:
    env = backends.env()
    b = backends.run(env)
    worker = backends.worker(env)
    job = b.request("POST", "/api/v1/jobs",
                    body={"kind": "render", "text": "slow", "delay": 1.5}).body
    wait_job(b, job["id"], "running")
    assert worker.proc is not None
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait_exit(10) == 0
    assert wait_job(b, job["id"], "done", timeout=1)["result"]["size"] > 0


def test_jobs_survive_a_backend_restart(backends: BackendFactory) -> None:
    # The queue is in Redis and the job in PostgreSQL: a job queued by one backend process
    # is done by a worker started after that backend is gone.
    env = backends.env()
    first = backends.run(env)
    job = first.request("POST", "/api/v1/jobs", body={"kind": "render", "text": "later"}).body
    assert first.stop() == 0
    backends.worker(env)
    second = backends.run(env)
    assert wait_job(second, job["id"], "done")["result"]["path"] == f"media/{job['id']}.txt"


def test_job_requests_are_checked(backends: BackendFactory) -> None:
    b = backends.run(backends.env())
    for body in ({"kind": "paint"}, {"kind": "render", "text": 3},
                 {"kind": "render", "delay": 99}, {"kind": "render", "delay": True}):
        rejected = b.request("POST", "/api/v1/jobs", body=body)
        assert rejected.status == 422, body
    not_an_object = b.request("POST", "/api/v1/jobs", body='["render"]',
                              headers={"Content-Type": "application/json"})
    assert (not_an_object.status, not_an_object.body) == (422, {
        "detail": "body must be a JSON object"})
    assert b.get("/api/v1/jobs/123456").status == 404
    assert b.get("/api/v1/jobs/abc").status == 404
    assert b.get("/api/v1/jobs").body == {"jobs": []}


def test_without_redis_a_job_is_refused_and_not_kept(backends: BackendFactory) -> None:
    env = backends.env(REDIS_URL=f"redis://:nope@127.0.0.1:{free_port()}/0")
    b = backends.run(env)
    refused = b.request("POST", "/api/v1/jobs", body={"kind": "render", "text": "x"})
    assert refused.status == 503
    assert refused.body["detail"].startswith("job queue unavailable")
    assert b.get("/api/v1/jobs").body == {"jobs": []}
    # A worker without Redis keeps waiting for it instead of exiting.
    worker = backends.worker(env)
    time.sleep(1.5)
    assert worker.proc is not None and worker.proc.poll() is None
    assert "redis unavailable" in worker.stdout
    assert worker.stop() == 0


def test_worker_refuses_another_hosts_database(backends: BackendFactory) -> None:
    db = backends.postgres.migrated_database()
    backends.run(backends.env(database=db, SERVER_ID="host-alpha")).stop()
    worker = backends.worker(backends.env(database=db, SERVER_ID="host-beta"))
    assert worker.wait_exit() == 3
    assert "this database belongs to host host-alpha, but SERVER_ID is host-beta" in worker.stderr


def test_uploads_are_files_under_pixsim_home(backends: BackendFactory) -> None:
    env = backends.env()
    home = Path(env["PIXSIM_HOME"])
    b = backends.run(env)
    data = bytes(range(256)) * 4
    put = b.request("PUT", "/api/v1/uploads/portrait.png", body=data)
    assert (put.status, put.body) == (201, {"name": "portrait.png", "path": "uploads/portrait.png",
                                            "size": 1024})
    assert (home / "uploads" / "portrait.png").read_bytes() == data
    assert b.get("/api/v1/uploads").body["files"] == [
        {"name": "portrait.png", "size": 1024, "path": "uploads/portrait.png"}]
    for name in (".hidden", "a%2F..%2Fb", "..", "x" * 200):
        assert b.request("PUT", f"/api/v1/uploads/{name}", body=b"x").status in (404, 422), name
    assert b.get("/api/v1/uploads/portrait.png").body == data
    assert b.get("/api/v1/uploads/nothing-here").status == 404
    assert sorted(p.name for p in (home / "uploads").iterdir()) == ["portrait.png"]


def test_a_job_left_running_by_a_dead_worker_is_done_again(backends: BackendFactory) -> None:
    pg = backends.postgres
    db = pg.migrated_database()
    env = backends.env(database=db, WORKER_NAME="worker-1")
    b = backends.run(env)
    first = backends.worker(env)
    job = b.request("POST", "/api/v1/jobs", body={"kind": "render", "text": "again",
                                                  "delay": 3}).body
    wait_job(b, job["id"], "running")
    assert first.proc is not None
    first.proc.kill()  # no chance to record anything
    first.wait_exit()
    # A job claimed by a worker whose heartbeat is long gone (another name).
    pg.admin("INSERT INTO jobs (kind, payload, status, worker, started_at) VALUES "
             "('render', '{\"text\": \"ghost\", \"delay\": 0}', 'running', 'ghost-7', now())",
             database=db)
    ghost_id = int(pg.admin("SELECT max(id) FROM jobs", database=db)[0][0] or 0)

    # The restarted worker (same name, as a supervisor restarts it) takes both up again.
    second = backends.worker(env)
    assert wait_job(b, ghost_id, "done")["worker"] == "worker-1"
    assert wait_job(b, job["id"], "done", timeout=30)["result"]["path"] == f"media/{job['id']}.txt"
    assert f"job {job['id']} was left running by worker-1; queued again" in second.stdout
    assert f"job {ghost_id} was left running by ghost-7; queued again" in second.stdout
