"""Service declarations (PixSim7's ``services/<id>/pixsim.service.json``) become workers and
commands by one rule; ``backend.migrate`` and ``backend.workers`` are validated at load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pixsim_host.config import HostConfig, new_host_config, parse_config
from pixsim_host.errors import ConfigError, HostError
from pixsim_host.services import (
    dotenv_keys,
    migrate_commands,
    read_declarations,
    resolve_workers,
)


def declare(root: Path, sid: str, **fields: object) -> Path:
    path = root / "services" / sid / "pixsim.service.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"id": sid, **fields}), encoding="utf-8")
    return path


def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "pixsim7"
    declare(root, "main-api", type="backend", module="pixsim7.backend.main.main:app")
    declare(root, "worker", type="worker", module="arq",
            args=["pixsim7.backend.main.workers.arq_worker.WorkerSettings"])
    declare(root, "simulation-worker", type="worker", module="arq",
            args=["pixsim7.backend.main.workers.arq_worker.SimulationWorkerSettings"])
    declare(root, "launcher-ui", type="frontend", module="launcher.ui")
    declare(root, "_platform", type="platform")  # no module: not something a host runs
    return root


def host_with(tmp_path: Path, **backend: object) -> HostConfig:
    config = new_host_config(name="svc")
    data = config.model_dump(mode="json")
    data["backend"].update(backend)
    return parse_config(data, source="test")


def test_declarations_become_commands_by_one_rule(tmp_path: Path) -> None:
    found = read_declarations(checkout(tmp_path) / "services")
    assert sorted(found) == ["launcher-ui", "main-api", "simulation-worker", "worker"]
    assert found["main-api"].argv("/venv/bin/python") == [
        "/venv/bin/python", "-m", "uvicorn", "pixsim7.backend.main.main:app"]
    assert found["worker"].argv() == [
        "python", "-m", "arq", "pixsim7.backend.main.workers.arq_worker.WorkerSettings"]


def test_workers_are_picked_by_id_from_the_checkout(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    config = host_with(tmp_path, source=str(root), workers=["worker", "simulation-worker"])
    workers = resolve_workers(config, python="py")
    assert [(w.name, w.argv[:3]) for w in workers] == [
        ("worker", ("py", "-m", "arq")), ("simulation-worker", ("py", "-m", "arq"))]


def test_an_unknown_or_unfit_worker_id_is_a_clear_error(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    with pytest.raises(HostError, match="does not declare; it declares: main-api, simulation-worker"):
        resolve_workers(host_with(tmp_path, source=str(root), workers=["derivatives-worker"]))
    with pytest.raises(HostError, match="does not run as a worker"):
        resolve_workers(host_with(tmp_path, source=str(root), workers=["launcher-ui"]))


def test_explicit_worker_commands_need_no_declaration(tmp_path: Path) -> None:
    config = host_with(tmp_path, image="example/backend:1",
                       workers=[{"name": "jobs", "command": "python -m jobs --queue 'a b'"}])
    (worker,) = resolve_workers(config, python="/opt/py")
    assert worker.argv == ("/opt/py", "-m", "jobs", "--queue", "a b")


@pytest.mark.parametrize(("workers", "problem"), [
    (["db"], "one of pixsim-host's own services"),
    (["Worker"], "lowercase letters"),
    (["worker", "worker"], "names a worker twice"),
    ([{"name": "x", "command": "python 'unclosed"}], "cannot be split"),
])
def test_bad_worker_entries_are_config_errors(tmp_path: Path, workers: list[object], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        host_with(tmp_path, workers=workers)


def test_a_broken_declaration_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    root = tmp_path / "co"
    path = declare(root, "worker", module="arq")
    path.write_text("[" * 100_000, encoding="utf-8")
    with pytest.raises(HostError, match="cannot read the service declaration"):
        read_declarations(root / "services")
    path.write_bytes(b"\xff\xfe{")
    with pytest.raises(HostError, match="cannot read the service declaration"):
        read_declarations(root / "services")


def test_migrate_commands_use_the_backends_interpreter(tmp_path: Path) -> None:
    config = host_with(tmp_path, migrate=["python scripts/migrate_all.py --scope all",
                                          "alembic upgrade head"])
    assert migrate_commands(config, python="/venv/bin/python") == [
        ["/venv/bin/python", "scripts/migrate_all.py", "--scope", "all"], ["alembic", "upgrade", "head"]]


def test_dotenv_keys_are_read_without_values(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("# a comment\nexport DEBUG=true\nPROVIDER_KEY='x=y'\nnot a line\n", encoding="utf-8")
    assert dotenv_keys(env) == ["DEBUG", "PROVIDER_KEY"]
    assert dotenv_keys(tmp_path / "missing") == []


def test_a_dockerfile_needs_a_checkout_and_an_image_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs backend.source"):
        host_with(tmp_path, dockerfile="Dockerfile", image="me/backend:1")
    with pytest.raises(ConfigError, match="backend.image of its own"):
        host_with(tmp_path, dockerfile="Dockerfile", source=str(tmp_path))


def test_a_migration_error_is_the_exception_line_not_the_echoed_sql_after_it() -> None:
    from pixsim_host.schema import MigrationFailed

    output = "\n".join([
        "INFO  [alembic.runtime.migration] Running upgrade  -> 20260420_9900, baseline",
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in <module>',
        'psycopg2.errors.SyntaxError: syntax error at or near "\\"',
        "",
        'sqlalchemy.exc.ProgrammingError: (psycopg2.errors.SyntaxError) syntax error at or near "\\"',
        "[SQL: " + "CREATE TABLE t (a int);" * 500,
        *["\\unrestrict abc", "]", "(Background on this error at: https://sqlalche.me/e/20/f405)"],
    ])
    failure = MigrationFailed(["python", "scripts/migrate_all.py"], 1, output)
    assert failure.message.startswith("migration `python scripts/migrate_all.py` failed (exit 1): "
                                      "sqlalchemy.exc.ProgrammingError: (psycopg2.errors.SyntaxError)")
    assert failure.details is not None
    assert failure.details.splitlines()[0] == "Traceback (most recent call last):"
    assert all(len(line) <= 310 for line in failure.details.splitlines())
    plain = MigrationFailed(["m"], 4, "step 1 ok\nschema step 2 broke\n")
    assert "failed (exit 4): schema step 2 broke;" in plain.message
