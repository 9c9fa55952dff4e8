"""A job commits with the caller's transaction, or not at all, and wakes workers only then."""

from __future__ import annotations

import asyncio
import contextlib

import psycopg
import pytest
from psycopg.rows import dict_row

from backend import defer
from backend.control import jobs
from backend.db import DictConnection
from backend.errors import AlreadyQueued, InvalidJobArguments
from backend.settings import Settings, load_settings
from backend.tasks.builtin import PingArgs, ping
from tests.conftest import count_jobs, eventually
from tests.integration.conftest import running_worker

CHANNEL = "procrastinate_any_queue_v1"


async def business_table(conn: DictConnection) -> None:
    await conn.execute("CREATE TABLE invoices (id serial PRIMARY KEY, total numeric NOT NULL)")
    await conn.commit()


async def notifications_within(
    listener: psycopg.AsyncConnection[object], seconds: float
) -> list[str]:
    received: list[str] = []

    async def collect() -> None:
        async for notify in listener.notifies():
            received.append(notify.payload)

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(collect(), timeout=seconds)
    return received


async def listener_for(db_url: str) -> psycopg.AsyncConnection[object]:
    listener: psycopg.AsyncConnection[object] = await psycopg.AsyncConnection.connect(
        db_url, autocommit=True
    )
    await listener.execute(f'LISTEN "{CHANNEL}"')
    return listener


async def test_rollback_leaves_no_job_and_wakes_no_worker(
    conn: DictConnection, db_url: str
) -> None:
    await business_table(conn)
    listener = await listener_for(db_url)
    try:
        with pytest.raises(RuntimeError, match="payment declined"):
            async with conn.transaction():
                await conn.execute("INSERT INTO invoices (total) VALUES (10)")
                job_id = await defer.defer(conn, ping, PingArgs(message="invoice created"))
                assert job_id > 0
                raise RuntimeError("payment declined")
        assert await notifications_within(listener, 0.5) == []
    finally:
        await listener.close()
    assert await count_jobs(conn) == 0
    cursor = await conn.execute("SELECT count(*) AS n FROM invoices")
    assert await cursor.fetchone() == {"n": 0}


async def test_commit_gives_one_job_and_one_wakeup(conn: DictConnection, db_url: str) -> None:
    await business_table(conn)
    listener = await listener_for(db_url)
    try:
        async with conn.transaction():
            await conn.execute("INSERT INTO invoices (total) VALUES (10)")
            job_id = await defer.defer(conn, ping, {"message": "invoice created"})
            # Not visible, and not announced, before the commit.
            assert await notifications_within(listener, 0.2) == []
        payloads = await notifications_within(listener, 1.0)
    finally:
        await listener.close()
    assert len(payloads) == 1
    assert str(job_id) in payloads[0]
    assert await count_jobs(conn) == 1
    job = await jobs.get_job(conn, job_id)
    assert job.task == "taskhub.ping"
    assert job.args == {"message": "invoice created", "sleep": 0.0}
    assert job.state == jobs.JobState.PENDING


async def test_worker_picks_up_committed_job_through_notify(
    conn: DictConnection, db_url: str, settings: Settings
) -> None:
    # With a ten-minute polling interval, only LISTEN/NOTIFY can explain a quick pickup.
    slow_polling = load_settings(
        database_url=db_url, data_dir=settings.data_dir, fetch_polling_interval=600
    )
    async with running_worker(slow_polling, db_url):
        # The worker's first fetch happened at start: the queue was empty then.
        async with conn.transaction():
            job_id = await defer.defer(conn, ping, {"message": "wake up"})

        async def succeeded() -> bool:
            return (await jobs.get_job(conn, job_id)).status == "succeeded"

        await eventually(succeeded, within=10)
    job = await jobs.get_job(conn, job_id)
    assert job.state == jobs.JobState.SUCCESS
    assert job.attempts == 1
    assert [event.type for event in job.events] == ["deferred", "started", "succeeded"]


async def test_invalid_arguments_enqueue_nothing(conn: DictConnection) -> None:
    with pytest.raises(InvalidJobArguments, match=r"args\.sleep"):
        await defer.defer(conn, ping, {"sleep": "soon"})
    with pytest.raises(InvalidJobArguments, match=r"args\.colour"):
        await defer.defer(conn, ping, {"colour": "blue"})
    await conn.commit()
    assert await count_jobs(conn) == 0


async def test_queueing_lock_refuses_a_second_waiting_job(conn: DictConnection) -> None:
    await defer.defer(conn, ping, {}, queueing_lock="nightly-report")
    await conn.commit()
    with pytest.raises(AlreadyQueued, match="nightly-report"):
        await defer.defer(conn, ping, {}, queueing_lock="nightly-report")
    await conn.rollback()
    assert await count_jobs(conn) == 1


async def test_batch_defer_is_one_statement_in_the_transaction(conn: DictConnection) -> None:
    async with conn.transaction():
        ids = await defer.batch_defer(conn, ping, [{"message": n} for n in range(50)], queue="bulk")
    assert len(set(ids)) == 50
    cursor = await conn.execute(
        "SELECT id, args->>'message' AS message, queue_name, status,"
        " (SELECT array_agg(type::text) FROM procrastinate_events e WHERE e.job_id = j.id)"
        " AS events"
        " FROM procrastinate_jobs j ORDER BY id"
    )
    rows = await cursor.fetchall()
    assert [(row["id"], row["message"]) for row in rows] == [
        (job_id, str(n)) for n, job_id in enumerate(ids)
    ], "each id is the job of the arguments at its position"
    assert {(row["queue_name"], row["status"], tuple(row["events"])) for row in rows} == {
        ("bulk", "todo", ("deferred",))
    }


async def test_a_taken_queueing_lock_in_a_batch_enqueues_none_of_it(
    conn: DictConnection,
) -> None:
    await defer.defer(conn, ping, {}, queueing_lock="invoice-7")
    await conn.commit()
    with pytest.raises(AlreadyQueued, match="invoice-7"):
        await defer.batch_defer(
            conn, ping, [{"message": 1}, {"message": 2}], queueing_lock="invoice-7"
        )
    await conn.rollback()
    assert await count_jobs(conn) == 1


def test_sync_defer_with_a_sync_connection(db_url: str) -> None:
    with psycopg.connect(db_url, row_factory=dict_row) as sync_conn:
        with sync_conn.transaction():
            job_id = defer.defer_sync(sync_conn, ping, {"message": "from flask"}, priority=5)
        with pytest.raises(RuntimeError), sync_conn.transaction():
            defer.defer_sync(sync_conn, ping, {"message": "rolled back"})
            raise RuntimeError
        rows = sync_conn.execute("SELECT id, priority, args FROM procrastinate_jobs").fetchall()
    assert rows == [{"id": job_id, "priority": 5, "args": {"message": "from flask", "sleep": 0.0}}]


def test_sync_defer_refuses_a_taken_queueing_lock(db_url: str) -> None:
    with psycopg.connect(db_url) as sync_conn:
        defer.defer_sync(sync_conn, ping, {}, queueing_lock="payroll-2026-11")
        sync_conn.commit()
        with pytest.raises(AlreadyQueued, match="payroll-2026-11"):
            defer.defer_sync(sync_conn, ping, {}, queueing_lock="payroll-2026-11")
        sync_conn.rollback()
        assert sync_conn.execute("SELECT count(*) FROM procrastinate_jobs").fetchone() == (1,)
