"""The reporting views: every example query of docs/sql.md's "Reporting views" runs and finds
the jobs, failures and audit entries it is about."""

from __future__ import annotations

import re
from pathlib import Path

from backend.db import DictConnection
from backend.defer import defer
from backend.tasks.builtin import ping

DOC = Path(__file__).resolve().parents[2] / "docs" / "sql.md"


def reporting_examples() -> list[str]:
    section = DOC.read_text(encoding="utf-8").split("## Reporting views", 1)[1]
    return re.findall(r"```sql\n(.*?)```", section, flags=re.DOTALL)


async def test_every_documented_reporting_query_runs_and_finds_its_rows(
    conn: DictConnection,
) -> None:
    async with conn.transaction():
        for status in ("succeeded", "succeeded", "failed"):
            job_id = await defer(conn, ping, {"message": status})
            await conn.execute(
                "UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", (job_id,)
            )
            await conn.execute(
                "UPDATE procrastinate_jobs SET status = %s::procrastinate_job_status,"
                " attempts = 1 WHERE id = %s",
                (status, job_id),
            )
        await conn.execute(
            "INSERT INTO taskhub.audit_log (actor, action, job_id) VALUES ('api:ops', 'retry', %s)",
            (job_id,),
        )
    examples = reporting_examples()
    assert len(examples) == 5
    results = []
    for query in examples:
        cursor = await conn.execute(query.encode())
        results.append(await cursor.fetchall())
    history, failures, durations, actions, throughput = results
    assert len(history) == 3
    assert {row["status"] for row in history} == {"succeeded", "failed"}
    assert all(row["run_seconds"] is not None and row["attempts"] == 1 for row in history)
    assert [(row["task_name"], row["failures"]) for row in failures] == [("taskhub.ping", 1)]
    assert [(row["task_name"], row["jobs"]) for row in durations] == [("taskhub.ping", 3)]
    assert [(row["actor"], row["action"], row["actions"]) for row in actions] == [
        ("api:ops", "retry", 1)
    ]
    assert [(row["finished"], row["failed"]) for row in throughput] == [(3, 1)]
