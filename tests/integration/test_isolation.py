"""A sync task's child cannot use or end the worker's database connections."""

from __future__ import annotations

import psycopg

from backend.runtime.isolation import run_in_child


def test_the_child_cannot_touch_the_worker_connection(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        backend_pid = conn.info.backend_pid

        def use_then_close_it() -> str:
            try:
                conn.execute("SELECT 1")
                outcome = "used"
            except psycopg.Error as exc:
                outcome = type(exc).__name__
            conn.close()  # libpq's goodbye, on the worker's socket if the child still had it
            return outcome

        outcome = run_in_child(
            use_then_close_it,
            time_limit=30,
            prepare=lambda reporter: None,
            on_progress=lambda progress: None,
            should_abort=lambda: False,
        )
        assert outcome != "used"
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row == (backend_pid,), "the worker's session is intact"
