"""A migrator that may not create roles (issue 20 item 11, docs/operations.md "Database
roles"): on a server of its own where the taskhub roles do not exist yet, migrations still
succeed, with a WARNING per missing role; once a superuser creates the roles, running
migrations/sql/0017_roles.sql again as the migrator grants each role its privileges."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from backend.process import migrate
from tests.e2e.faults.server import ThrowawayServer

pytestmark = [pytest.mark.e2e]

GROUPS = ("taskhub_owner", "taskhub_api", "taskhub_worker", "taskhub_readonly")
ROLES_SQL = migrate.MIGRATIONS_DIR / "sql" / "0017_roles.sql"


def on(server: ThrowawayServer, database: str, user: str) -> str:
    return f"postgresql://{user}@127.0.0.1:{server.port}/{database}"


def test_a_migrator_without_createrole_migrates_then_grants_once_the_roles_exist(
    pg_server: ThrowawayServer, tmp_path: Path
) -> None:
    with psycopg.connect(pg_server.admin_url, autocommit=True) as admin:
        # This server is the test's own: its roles can go (never on the shared server).
        admin.execute("DROP DATABASE taskhub WITH (FORCE)")
        for group in GROUPS:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(group)))
        admin.execute("CREATE ROLE migrator LOGIN NOCREATEROLE")
        admin.execute("CREATE DATABASE fresh OWNER migrator")
    migrator = on(pg_server, "fresh", "migrator")

    migrate.upgrade(migrator)

    for group in GROUPS:
        assert f"role {group} does not exist and migrator may not create roles" in pg_server.log
    with psycopg.connect(pg_server.admin_url) as admin:
        assert (
            admin.execute(
                "SELECT rolname FROM pg_roles WHERE rolname LIKE 'taskhub\\_%%'"
            ).fetchall()
            == []
        )
    with psycopg.connect(on(pg_server, "fresh", "postgres")) as conn:
        owners = conn.execute(
            "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class"
            " WHERE relname LIKE 'procrastinate\\_%%' OR relname = 'alembic_version'"
        ).fetchall()
        assert owners == [("migrator",)], "the migrator keeps owning what it created"

    with psycopg.connect(pg_server.admin_url, autocommit=True) as admin:
        for group in GROUPS:
            admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(group)))
        admin.execute("GRANT taskhub_owner TO migrator")
        # The new owner needs CREATE on the database and on schema public (its owner's).
        admin.execute("ALTER DATABASE fresh OWNER TO taskhub_owner")
        admin.execute("CREATE ROLE api_user LOGIN IN ROLE taskhub_api")
    with psycopg.connect(migrator, autocommit=True) as conn:
        conn.execute(ROLES_SQL.read_text(encoding="utf-8"))

    with psycopg.connect(on(pg_server, "fresh", "api_user"), autocommit=True) as api:
        job = api.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args)"
            " VALUES ('default', 'taskhub.ping', '{}') RETURNING id"
        ).fetchone()
        assert job is not None
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            api.execute("DELETE FROM procrastinate_jobs")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            api.execute("SELECT * FROM procrastinate_fetch_job_v2(NULL, 1)")
    with psycopg.connect(on(pg_server, "fresh", "postgres")) as conn:
        owners = conn.execute(
            "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class"
            " WHERE relname LIKE 'procrastinate\\_%%' OR relname = 'alembic_version'"
        ).fetchall()
        assert owners == [("taskhub_owner",)], pg_server.log[-3000:]
