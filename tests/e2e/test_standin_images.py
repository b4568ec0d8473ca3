"""The offline stand-in images must honour the public images' contracts.

Every other engine test trusts pgvector/pgvector:pg16, redis:7-alpine and python:3.11-slim to
behave like the real images; if a stand-in drifted, those tests would prove nothing. The
checks run the way pixsim-host uses the images: clients in other containers reaching the
service by DNS alias on a user-defined bridge network.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    # tests/ is not a package; pytest puts this folder on sys.path, where conftest lives.
    from conftest import Sandbox

pytestmark = pytest.mark.engine

POSTGRES = "pgvector/pgvector:pg16"
REDIS = "redis:7-alpine"
PYTHON = "python:3.11-slim"

PG_USER = "pixsim"
PG_PASSWORD = "s3cret-pw"
PG_DB = "pixsim_db"

# Wait in the client container until the server answers over TCP (during first-time init the
# entrypoint's temporary server listens on the unix socket only, so this really waits for the
# final server), then run one query and print unaligned rows.
PSQL = (
    "for i in $(seq 1 120); do pg_isready -q && break; sleep 0.5; done; "
    'exec psql -X -v ON_ERROR_STOP=1 -A -t -F "|" -c "$SQL"'
)


def psql(
    sandbox: Sandbox,
    network: str,
    sql: str,
    *,
    password: str = PG_PASSWORD,
    host: str = "db",
) -> tuple[int, str]:
    return sandbox.run(
        POSTGRES,
        ["bash", "-c", PSQL],
        network=network,
        environment={
            "PGHOST": host,
            "PGUSER": PG_USER,
            "PGDATABASE": PG_DB,
            "PGPASSWORD": password,
            "PGCONNECT_TIMEOUT": "5",
            "SQL": sql,
        },
    )


def ok(result: tuple[int, str]) -> str:
    code, output = result
    assert code == 0, output
    return output.strip()


def postgres_env(password: str = PG_PASSWORD) -> dict[str, str]:
    return {"POSTGRES_USER": PG_USER, "POSTGRES_PASSWORD": password, "POSTGRES_DB": PG_DB}


def pid1_command(container: object) -> str:
    code, out = container.exec_run(["cat", "/proc/1/cmdline"])  # type: ignore[attr-defined]
    assert code == 0, out
    return str(out.decode().replace("\0", " ").strip())


def test_postgres_scram_login_over_network_and_fast_stop(
    docker_sandbox: Sandbox, require_images: Callable[..., None]
) -> None:
    require_images(POSTGRES)
    net = docker_sandbox.network()
    server = docker_sandbox.container(
        POSTGRES,
        # Command override: arguments reach postgres, as with the public image.
        ["postgres", "-c", "max_connections=42"],
        network=net.name,
        aliases=["db"],
        environment=postgres_env(),
    )

    rows = ok(
        psql(
            docker_sandbox,
            net.name,
            "SELECT current_user, current_database(), current_setting('max_connections'), "
            "current_setting('password_encryption'), "
            "(SELECT left(rolpassword, 14) FROM pg_authid WHERE rolname = current_user);",
        )
    )
    assert rows == f"{PG_USER}|{PG_DB}|42|scram-sha-256|SCRAM-SHA-256$"

    # Remote hosts must use a password (scram), not trust.
    hba = ok(
        psql(
            docker_sandbox,
            net.name,
            "SELECT auth_method FROM pg_hba_file_rules "
            "WHERE type = 'host' AND 'all' = ANY(database) AND address = 'all';",
        )
    )
    assert hba == "scram-sha-256"

    code, output = psql(docker_sandbox, net.name, "SELECT 1;", password="wrong-password")
    assert code != 0
    assert "password authentication failed" in output

    assert pid1_command(server).startswith("postgres")
    code, out = server.exec_run(["bash", "-c", "command -v pg_isready psql pg_dump pg_restore && pg_isready"])
    assert code == 0, out
    assert out.decode().count("/usr/local/pgsql/bin/") == 4

    # postgres as PID 1 with STOPSIGNAL SIGINT: a fast shutdown, not the 10 s kill timeout.
    started = time.monotonic()
    server.stop(timeout=10)
    elapsed = time.monotonic() - started
    server.reload()
    assert elapsed < 3, f"docker stop took {elapsed:.1f} s"
    assert server.attrs["State"]["ExitCode"] == 0, server.logs().decode()


def test_postgres_has_the_extensions_of_the_public_image(
    docker_sandbox: Sandbox, require_images: Callable[..., None]
) -> None:
    """pgvector/pgvector:pg16 has vector, pg_trgm and btree_gist; PixSim7's schema and the
    reference backend's migration create them, and `up` checks database.extensions."""
    require_images(POSTGRES)
    net = docker_sandbox.network()
    docker_sandbox.container(POSTGRES, network=net.name, aliases=["db"], environment=postgres_env())
    ok(
        psql(
            docker_sandbox,
            net.name,
            "CREATE EXTENSION vector; CREATE EXTENSION pg_trgm; CREATE EXTENSION btree_gist; "
            "CREATE TABLE items (id int, name text, embedding vector(3), during tstzrange, "
            "  EXCLUDE USING gist (id WITH =, during WITH &&)); "
            "CREATE INDEX ON items USING gin (name gin_trgm_ops); "
            "INSERT INTO items VALUES (1, 'lighthouse', '[1,2,3]', '[2024-01-01,2024-02-01)'), "
            "  (2, 'harbour', '[3,2,1]', '[2024-01-01,2024-02-01)');",
        )
    )
    rows = ok(
        psql(
            docker_sandbox,
            net.name,
            "SELECT (SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension "
            "          WHERE extname IN ('vector', 'pg_trgm', 'btree_gist')), "
            "       (SELECT name FROM items ORDER BY embedding <-> '[1,2,2]' LIMIT 1), "
            "       similarity('lighthouse', 'lighthouses') > 0.5;",
        )
    )
    assert rows == "btree_gist,pg_trgm,vector|lighthouse|t"
    # The exclusion constraint (btree_gist's equality on int inside a gist index) holds.
    code, output = psql(
        docker_sandbox,
        net.name,
        "INSERT INTO items VALUES (1, 'again', '[0,0,0]', '[2024-01-15,2024-01-16)');",
    )
    assert code != 0
    assert "conflicting key value violates exclusion constraint" in output


def test_postgres_data_persists_and_init_runs_once(
    docker_sandbox: Sandbox, require_images: Callable[..., None]
) -> None:
    require_images(POSTGRES)
    net = docker_sandbox.network()
    vol = docker_sandbox.volume()
    data = {vol.name: {"bind": "/var/lib/postgresql/data", "mode": "rw"}}
    init_files = {
        "/docker-entrypoint-initdb.d/01-schema.sql": (
            b"CREATE TABLE init_runs (kind text);\nINSERT INTO init_runs VALUES ('sql');\n",
            0o644,
        ),
        # Not executable: sourced by the entrypoint, with its POSTGRES_* variables at hand.
        "/docker-entrypoint-initdb.d/02-more.sh": (
            b'psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" '
            b"-c \"INSERT INTO init_runs VALUES ('sh')\"\n",
            0o644,
        ),
    }

    first = docker_sandbox.container(
        POSTGRES,
        network=net.name,
        aliases=["db"],
        environment=postgres_env(),
        volumes=data,
        files=init_files,
    )
    assert (
        ok(
            psql(
                docker_sandbox,
                net.name,
                "SELECT string_agg(kind, ',' ORDER BY kind) FROM init_runs;",
            )
        )
        == "sh,sql"
    )
    ok(psql(docker_sandbox, net.name, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('x');"))
    first.stop(timeout=10)
    first.remove()

    # A new container on the same volume keeps the data and the original password: the
    # environment only matters on first initialisation, and init scripts do not run again.
    docker_sandbox.container(
        POSTGRES,
        network=net.name,
        aliases=["db"],
        environment=postgres_env(password="another-password"),
        volumes=data,
        files=init_files,
    )
    assert ok(psql(docker_sandbox, net.name, "SELECT v FROM kept;")) == "x"
    assert ok(psql(docker_sandbox, net.name, "SELECT count(*) FROM init_runs;")) == "2"
    code, output = psql(docker_sandbox, net.name, "SELECT 1;", password="another-password")
    assert code != 0
    assert "password authentication failed" in output


def test_postgres_refuses_to_initialise_without_password(
    docker_sandbox: Sandbox, require_images: Callable[..., None]
) -> None:
    require_images(POSTGRES)
    server = docker_sandbox.container(POSTGRES, environment={"POSTGRES_USER": PG_USER})
    status = server.wait(timeout=60)
    assert status["StatusCode"] != 0
    assert "superuser password is not specified" in server.logs().decode()


REDIS_WAIT = "for i in $(seq 1 100); do redis-cli -h cache ping >/dev/null 2>&1 && break; sleep 0.1; done; "


def test_redis_requirepass_and_command_override(
    docker_sandbox: Sandbox, require_images: Callable[..., None]
) -> None:
    require_images(REDIS)
    net = docker_sandbox.network()
    server = docker_sandbox.container(
        REDIS,
        ["redis-server", "--requirepass", "s3cret", "--appendonly", "yes"],
        network=net.name,
        aliases=["cache"],
    )

    authed = ok(
        docker_sandbox.run(
            REDIS,
            [
                "sh",
                "-c",
                REDIS_WAIT + "redis-cli -h cache -a s3cret --no-auth-warning PING && "
                "redis-cli -h cache -a s3cret --no-auth-warning CONFIG GET appendonly",
            ],
            network=net.name,
        )
    )
    assert authed.split() == ["PONG", "appendonly", "yes"]

    code, output = docker_sandbox.run(
        REDIS, ["sh", "-c", REDIS_WAIT + "redis-cli -h cache PING"], network=net.name
    )
    assert "NOAUTH" in output
    assert "PONG" not in output

    assert pid1_command(server).startswith("redis-server")
    started = time.monotonic()
    server.stop(timeout=10)
    elapsed = time.monotonic() - started
    assert elapsed < 3, f"docker stop took {elapsed:.1f} s"


def test_redis_default_command_is_reachable_from_other_containers(
    docker_sandbox: Sandbox, require_images: Callable[..., None]
) -> None:
    require_images(REDIS)
    net = docker_sandbox.network()
    docker_sandbox.container(REDIS, network=net.name, aliases=["cache"])
    # Protected mode would answer a non-local client without a password with DENIED.
    out = ok(
        docker_sandbox.run(
            REDIS,
            [
                "sh",
                "-c",
                REDIS_WAIT + "redis-cli -h cache PING && redis-cli -h cache CONFIG GET dir",
            ],
            network=net.name,
        )
    )
    assert out.split() == ["PONG", "dir", "/data"]


def test_python_image_has_python_pip_and_useradd(
    docker_sandbox: Sandbox, require_images: Callable[..., None]
) -> None:
    require_images(PYTHON)
    out = ok(
        docker_sandbox.run(
            PYTHON,
            [
                "sh",
                "-c",
                "python -c 'import sys; print(sys.version_info[:2] == (3, 11), sys.prefix)' && "
                "python3 --version && pip --version && command -v useradd",
            ],
        )
    )
    lines = out.splitlines()
    assert lines[0] == "True /usr/local/venv"
    assert lines[1].startswith("Python 3.11")
    assert lines[2].startswith("pip ") and "/usr/local/venv/" in lines[2]
    assert lines[3].endswith("/useradd")
