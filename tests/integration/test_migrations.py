"""alembic owns the schema, and it is exactly what the installed procrastinate expects."""

from __future__ import annotations

import re
import subprocess

import psycopg
from procrastinate.schema import SchemaManager

from backend.examples.scheduling import app as scheduling_app
from backend.process import migrate
from backend.process.embedded import BIN_DIR

# procrastinate's per-row insert triggers that migration 0018 replaces with one statement-level
# trigger doing the same work set-wise (tests/integration/test_setwise_defer.py proves it).
REPLACED_TRIGGERS = (
    "CREATE TRIGGER procrastinate_jobs_notify_queue_job_inserted_v1 ",
    "CREATE TRIGGER procrastinate_trigger_status_events_insert_v1 ",
)


def schema_dump(url: str) -> str:
    """The public schema as pg_dump prints it, minus alembic's table; column order ignored."""
    dump = subprocess.run(
        [
            str(BIN_DIR / "pg_dump"),
            "--schema-only",
            "--no-owner",
            "--no-privileges",
            "--schema=public",
            "--exclude-table=alembic_version",
            "--dbname",
            url,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    lines = [
        line
        for line in dump.splitlines()
        if line
        and not line.startswith(("--", "SET ", "SELECT pg_catalog.set_config", "\\"))
        # Some servers stamp per-database attribute options (pg_attver); not schema.
        and "(pg_attver=" not in line
        # taskhub's own triggers on procrastinate_jobs (their functions live in schema
        # taskhub), its own index on procrastinate_events (for pruning, revision 0005), and
        # the triggers they replace.
        and not line.startswith(("CREATE TRIGGER taskhub_", "CREATE INDEX taskhub_"))
        and not line.startswith(REPLACED_TRIGGERS)
    ]
    text = "\n".join(lines)
    # taskhub's autovacuum settings on the jobs table (revision 0019) are not procrastinate's.
    text = re.sub(r"\n\)\nWITH \(autovacuum_[^;]*\);", "\n);", text)
    # A revision that adds a column puts it last; schema.sql may put it elsewhere.
    return re.sub(
        r"(CREATE TABLE [^(]+\()(.*?)(\n\);)",
        lambda m: m.group(1) + "\n".join(sorted(m.group(2).rstrip(",").split(",\n"))) + m.group(3),
        text,
        flags=re.DOTALL,
    )


def public_objects(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            """
            SELECT 'table ' || tablename FROM pg_tables WHERE schemaname = 'public'
            UNION ALL
            SELECT 'function ' || proname FROM pg_proc
             WHERE pronamespace = 'public'::regnamespace
            UNION ALL
            SELECT 'type ' || typname FROM pg_type
             WHERE typnamespace = 'public'::regnamespace AND typname NOT LIKE '\\_%%'
               AND typrelid = 0
            ORDER BY 1
            """
        ).fetchall()
    return [row[0] for row in rows]


def test_migrated_schema_matches_installed_procrastinate(db_url: str, empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(SchemaManager.get_schema())
    expected = schema_dump(empty_db_url)
    assert "procrastinate_jobs" in expected
    assert schema_dump(db_url) == expected


def test_schema_dump_notices_a_difference(db_url: str, empty_db_url: str) -> None:
    """The comparison above would catch a revision missing from a procrastinate upgrade."""
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(SchemaManager.get_schema())
        conn.execute("CREATE INDEX future_index ON procrastinate_jobs (task_name)")
    assert schema_dump(db_url) != schema_dump(empty_db_url)


def test_upgrade_downgrade_upgrade(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url)
    assert "table procrastinate_jobs" in public_objects(empty_db_url)
    migrate.downgrade(empty_db_url, "base")
    assert public_objects(empty_db_url) == ["table alembic_version"]
    migrate.upgrade(empty_db_url)
    with psycopg.connect(empty_db_url) as conn:
        version = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert version is not None
    assert version[0] == migrate.head_revision()


def test_upgrade_is_idempotent(db_url: str) -> None:
    before = schema_dump(db_url)
    migrate.upgrade(db_url)
    assert schema_dump(db_url) == before


def has_schema(url: str, name: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT to_regnamespace(%s) IS NOT NULL", (name,)).fetchone()
    assert row is not None
    return bool(row[0])


def test_the_scheduling_example_schema_comes_only_with_its_app(empty_db_url: str) -> None:
    """Revision 0008 made it once; now it is the scheduling app's, made where it is enabled."""
    migrate.upgrade(empty_db_url)
    assert not has_schema(empty_db_url, "scheduling")
    migrate.upgrade(empty_db_url, apps=[scheduling_app])
    assert has_schema(empty_db_url, "scheduling")
    migrate.downgrade(empty_db_url, "base", apps=[scheduling_app])
    assert not has_schema(empty_db_url, "scheduling")
    assert public_objects(empty_db_url) == [
        "table alembic_version",
        "table alembic_version_scheduling",
    ]
