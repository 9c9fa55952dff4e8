"""What a task reports and returns, and what it raises, stored with the job by real workers."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import threading
import time
import uuid
from typing import Any

import httpx
import psycopg
import pytest
from pydantic import BaseModel

from backend import defer as deferring
from backend.control import jobs
from backend.control.waiting import wait_for_job
from backend.db import DictConnection
from backend.declare.policy import Retry
from backend.declare.registry import TaskBlueprint
from backend.queries import QUERIES
from backend.runtime.context import TaskContext
from backend.runtime.finisher import FINISH_CONNECTION_SETTINGS
from backend.runtime.isolation import SoftTimeLimitExceeded
from backend.settings import Settings
from tests.conftest import BLUEPRINTS, eventually
from tests.integration.conftest import running_worker

blueprint = TaskBlueprint()
ALL = (*BLUEPRINTS, blueprint)


class Steps(BaseModel):
    steps: int = 3
    pause: float = 0.0


class Counted(BaseModel):
    processed: int


@blueprint.task(name="tests.progress_async")
async def progress_async(args: Steps, ctx: TaskContext) -> Counted:
    for step in range(1, args.steps + 1):
        ctx.progress(done=step, total=args.steps, message=f"step {step}", created=step)
        await asyncio.sleep(args.pause)
    return Counted(processed=args.steps)


@blueprint.task(name="tests.progress_sync")
def progress_sync(args: Steps, ctx: TaskContext) -> dict[str, int]:
    for step in range(1, args.steps + 1):
        ctx.progress(done=step, total=args.steps, updated=step)
        if args.pause:
            time.sleep(args.pause)
    return {"processed": args.steps}


ATTEMPTS: dict[int, int] = {}


@blueprint.task(name="tests.flaky", retry=2)
def flaky(ctx: TaskContext) -> str:
    ATTEMPTS[ctx.job_id] = ctx.attempt
    if ctx.attempt == 1:
        raise ConnectionError("ERP answered 503")
    return f"ok on attempt {ctx.attempt}"


@blueprint.task(name="tests.broken", retry=1)
async def broken() -> None:
    raise ValueError("the ledger does not balance")


@blueprint.task(name="tests.not_json")
def not_json() -> object:
    return threading.Lock()


STARTED: set[str] = set()


class Marker(BaseModel):
    token: str = ""


@blueprint.task(name="tests.long_async")
async def long_async(args: Marker, ctx: TaskContext) -> None:
    STARTED.add(args.token)
    ctx.progress(message="waiting forever")
    await asyncio.sleep(3600)


@blueprint.task(name="tests.long_sync")
def long_sync(args: Marker, ctx: TaskContext) -> None:
    STARTED.add(args.token)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ctx.raise_if_aborted()
        time.sleep(0.02)


async def defer(conn: DictConnection, name: str, args: dict[str, Any] | None = None) -> int:
    await conn.commit()  # end the transaction earlier reads opened: this one must commit
    async with conn.transaction():
        return await deferring.defer(conn, blueprint.tasks[name], args or {})


async def finished(conn: DictConnection, job_id: int, within: float = 15) -> jobs.JobView:
    async def done() -> bool:
        return (await jobs.get_job(conn, job_id)).status in jobs.FINISHED

    await eventually(done, within=within)
    return await jobs.get_job(conn, job_id)


async def test_async_task_progress_and_result(
    conn: DictConnection, settings: Settings, db_url: str
) -> None:
    job_id = await defer(conn, "tests.progress_async", {"steps": 4, "pause": 0.3})
    async with running_worker(settings, db_url, blueprints=ALL):

        async def reporting() -> bool:
            return (await jobs.get_job(conn, job_id)).state == jobs.JobState.PROGRESS

        await eventually(reporting)
        running = await jobs.get_job(conn, job_id)
        assert running.progress is not None
        assert running.progress.total == 4
        assert running.progress.message is not None
        job = await finished(conn, job_id)
    assert job.state == jobs.JobState.SUCCESS
    assert job.result == {"processed": 4}
    assert job.progress is not None
    assert (job.progress.done, job.progress.total, job.progress.message) == (4, 4, "step 4")
    assert job.progress.counters == {"created": 4}
    assert job.errors == []


async def test_sync_task_progress_is_throttled(
    conn: DictConnection, settings: Settings, db_url: str
) -> None:
    # Count every row written to taskhub.job_progress with a trigger on this test database.
    await conn.execute(
        """
        CREATE TABLE progress_writes (job_id bigint);
        CREATE FUNCTION count_progress_write() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO progress_writes VALUES (NEW.job_id); RETURN NEW; END $$;
        CREATE TRIGGER count_progress_write AFTER INSERT OR UPDATE ON taskhub.job_progress
            FOR EACH ROW EXECUTE FUNCTION count_progress_write();
        """
    )
    await conn.commit()
    job_id = await defer(conn, "tests.progress_sync", {"steps": 20_000})
    async with running_worker(settings, db_url, blueprints=ALL):
        job = await finished(conn, job_id)
    assert job.state == jobs.JobState.SUCCESS
    assert job.result == {"processed": 20_000}
    assert job.progress is not None
    assert (job.progress.done, job.progress.counters) == (20_000, {"updated": 20_000})
    cursor = await conn.execute("SELECT count(*) AS n FROM progress_writes")
    row = await cursor.fetchone()
    assert row is not None
    assert 1 <= row["n"] <= 10, "20,000 reports must cost a handful of writes"


async def test_each_failed_attempt_keeps_its_error(
    conn: DictConnection, settings: Settings, db_url: str
) -> None:
    flaky_id = await defer(conn, "tests.flaky")
    broken_id = await defer(conn, "tests.broken")
    async with running_worker(settings, db_url, blueprints=ALL):
        flaky_job = await finished(conn, flaky_id)
        broken_job = await finished(conn, broken_id)

    assert flaky_job.state == jobs.JobState.SUCCESS
    assert flaky_job.result == "ok on attempt 2"
    assert ATTEMPTS[flaky_id] == 2
    [error] = flaky_job.errors
    assert (error.attempt, error.type, error.message) == (1, "ConnectionError", "ERP answered 503")
    assert error.traceback is not None
    assert 'raise ConnectionError("ERP answered 503")' in error.traceback
    assert "deferred_for_retry" in [event.type for event in flaky_job.events]

    assert broken_job.state == jobs.JobState.FAILURE
    assert [(e.attempt, e.type) for e in broken_job.errors] == [
        (1, "ValueError"),
        (2, "ValueError"),
    ]
    assert broken_job.last_error is not None
    assert broken_job.last_error.message == "the ledger does not balance"
    assert broken_job.result is None


async def test_a_result_that_is_not_json_fails_the_job_clearly(
    conn: DictConnection, settings: Settings, db_url: str
) -> None:
    job_id = await defer(conn, "tests.not_json")
    async with running_worker(settings, db_url, blueprints=ALL):
        job = await finished(conn, job_id)
    assert job.state == jobs.JobState.FAILURE
    assert job.last_error is not None
    assert job.last_error.type == "ResultNotJSON"
    assert "not JSON" in job.last_error.message


@pytest.mark.parametrize("task", ["tests.long_async", "tests.long_sync"])
async def test_cancel_aborts_a_running_job(
    conn: DictConnection,
    settings: Settings,
    db_url: str,
    client: httpx.AsyncClient,
    task: str,
) -> None:
    token = uuid.uuid4().hex
    job_id = await defer(conn, task, {"token": token})
    async with running_worker(settings, db_url, blueprints=ALL):

        async def started() -> bool:
            return token in STARTED

        await eventually(started)
        response = await client.post(f"/jobs/{job_id}/cancel")
        assert response.status_code == 200, response.text
        assert response.json()["abort_requested"] is True
        job = await finished(conn, job_id)
    assert job.status == "aborted"
    assert job.state == jobs.JobState.REVOKED
    assert job.last_error is not None
    assert job.last_error.type == "JobAborted"
    cursor = await conn.execute(
        "SELECT actor, action FROM taskhub.audit_log WHERE job_id = %s", (job_id,)
    )
    assert await cursor.fetchall() == [{"actor": "ops", "action": "abort"}]


async def test_wait_for_job_is_woken_by_the_finish(
    conn: DictConnection, settings: Settings, db_url: str, client: httpx.AsyncClient
) -> None:
    slow = await defer(conn, "tests.progress_async", {"steps": 1, "pause": 1.0})
    helper_slow = await defer(conn, "tests.progress_async", {"steps": 1, "pause": 1.0})
    async with running_worker(settings, db_url, blueprints=ALL):
        began = time.monotonic()
        response = await client.get(f"/jobs/{slow}", params={"wait": 30})
        waited = time.monotonic() - began
        assert response.json()["state"] == "SUCCESS"
        # The job takes about a second; the fallback re-read would come only after five.
        assert waited < 4, waited

        began = time.monotonic()
        job = await wait_for_job(db_url, helper_slow, timeout=30)
        assert job.state == jobs.JobState.SUCCESS
        assert time.monotonic() - began < 4


async def test_wait_returns_the_unfinished_job_after_the_timeout(
    conn: DictConnection, client: httpx.AsyncClient
) -> None:
    job_id = await defer(conn, "tests.long_async")  # no worker: it stays todo
    began = time.monotonic()
    response = await client.get(f"/jobs/{job_id}", params={"wait": 0.5})
    assert 0.5 <= time.monotonic() - began < 3
    assert response.json()["state"] == "PENDING"


async def test_finishing_notifies_only_when_someone_waits(
    conn: DictConnection, settings: Settings, db_url: str
) -> None:
    listener = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    await listener.execute("LISTEN taskhub_job_finished")
    try:
        unwatched = await defer(conn, "tests.progress_async", {"steps": 1})
        async with running_worker(settings, db_url, blueprints=ALL):
            await finished(conn, unwatched)
            watched = await defer(conn, "tests.progress_async", {"steps": 1, "pause": 0.5})
            job = await wait_for_job(db_url, watched, timeout=30)
        assert job.state == jobs.JobState.SUCCESS
        received = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                async for notify in listener.notifies():
                    received.append(int(notify.payload))
        assert received == [watched], "no NOTIFY for a job nobody waits for"
    finally:
        await listener.close()
    cursor = await conn.execute("SELECT count(*) AS n FROM taskhub.job_waiters")
    assert await cursor.fetchone() == {"n": 0}, "waiters unregister"


@blueprint.task(name="tests.backoff", retry=Retry(retries=2, backoff=0.4, factor=2))
def backoff() -> None:
    raise ConnectionError("still down")


@blueprint.task(name="tests.only_on", retry=Retry(retries=5, on=(ConnectionError,)))
def only_on() -> None:
    raise KeyError("not worth retrying")


async def test_retry_policy_backs_off_then_gives_up(
    conn: DictConnection, settings: Settings, db_url: str
) -> None:
    backoff_id = await defer(conn, "tests.backoff")
    only_on_id = await defer(conn, "tests.only_on")
    quick_polling = settings.model_copy(update={"fetch_polling_interval": 0.1})
    async with running_worker(quick_polling, db_url, blueprints=ALL):
        backed_off = await finished(conn, backoff_id)
        not_retried = await finished(conn, only_on_id)
    assert backed_off.state == jobs.JobState.FAILURE
    assert len(backed_off.errors) == 3
    # The backoff counts from the failure, which comes after the attempt's start: each retry
    # is due (its 'scheduled' event) 0.4 s, then 0.8 s after the attempt's 'started' event at
    # least, and the next attempt starts once it is due. (An error's ``at`` is its finish
    # batch's time, later than the failure by however long the batch waited.)
    started = [event.at for event in backed_off.events if event.type == "started"]
    due = [event.at for event in backed_off.events if event.type == "scheduled"]
    assert len(started) == 3
    assert len(due) == 2
    assert (due[0] - started[0]).total_seconds() >= 0.4
    assert (due[1] - started[1]).total_seconds() >= 0.8
    assert started[1] >= due[0] - dt.timedelta(milliseconds=5)
    assert started[2] >= due[1] - dt.timedelta(milliseconds=5)
    assert [event.type for event in backed_off.events].count("deferred_for_retry") == 2
    assert [error.attempt for error in not_retried.errors] == [1], "KeyError is not retried"


HOOK_CALLS: list[tuple[str, int, str | None]] = []


def record_failure(job: jobs.JobView) -> None:
    last = job.last_error.type if job.last_error else None
    HOOK_CALLS.append((job.args["token"], len(job.errors), last))


@blueprint.task(name="tests.doomed", retry=Retry(retries=1), on_failure=record_failure)
def doomed(args: Marker) -> None:
    raise RuntimeError(f"cannot {args.token}")


async def test_on_failure_hook_runs_once_after_the_last_attempt(
    conn: DictConnection, settings: Settings, db_url: str
) -> None:
    token = uuid.uuid4().hex
    job_id = await defer(conn, "tests.doomed", {"token": token})
    quick_polling = settings.model_copy(update={"fetch_polling_interval": 0.1})
    async with running_worker(quick_polling, db_url, blueprints=ALL):
        job = await finished(conn, job_id)
        cursor = await conn.execute(
            "SELECT actor, details FROM taskhub.audit_log"
            " WHERE job_id = %s AND action = 'final_failure'",
            (job_id,),
        )
        [audit] = await cursor.fetchall()
        hook_job = await finished(conn, audit["details"]["hook_job_id"])
    assert job.state == jobs.JobState.FAILURE
    assert hook_job.state == jobs.JobState.SUCCESS
    assert hook_job.task == "taskhub.on_failure"
    assert hook_job.queue == job.queue
    assert audit["details"]["error"] == "RuntimeError"
    assert [call for call in HOOK_CALLS if call[0] == token] == [(token, 2, "RuntimeError")]
    cursor = await conn.execute(
        "SELECT count(*) AS n FROM procrastinate_jobs WHERE task_name = 'taskhub.on_failure'"
    )
    assert await cursor.fetchone() == {"n": 1}, "one hook job, not one per attempt"


STARTS: dict[str, list[float]] = {}


@blueprint.task(name="tests.limited", rate_limit="5/s")
async def limited(args: Marker) -> None:
    STARTS.setdefault(args.token, []).append(time.time())


async def test_rate_limit_holds_across_three_workers(
    conn: DictConnection, settings: Settings, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="procrastinate.worker")
    token = uuid.uuid4().hex
    await conn.commit()
    async with conn.transaction():
        ids = await deferring.batch_defer(
            conn, blueprint.tasks["tests.limited"], [{"token": token}] * 15
        )
    quick_polling = settings.model_copy(update={"fetch_polling_interval": 0.05})
    async with (
        running_worker(quick_polling, db_url, blueprints=ALL),
        running_worker(quick_polling, db_url, blueprints=ALL),
        running_worker(quick_polling, db_url, blueprints=ALL),
    ):
        for job_id in ids:
            job = await finished(conn, job_id, within=30)
            assert job.state == jobs.JobState.SUCCESS
            assert job.attempts == 1, "waiting for the limit uses up no attempt"
            assert job.errors == []
    starts = sorted(STARTS[token])
    assert len(starts) == 15
    # Any six consecutive starts span at least a second: never more than 5 in one second.
    for first, sixth in zip(starts, starts[5:], strict=False):
        assert sixth - first >= 0.95, [round(s - starts[0], 3) for s in starts]
    assert starts[-1] - starts[0] < 6, "and the limit is used, not wasted"
    postponed = [r for r in caplog.records if "postponed by its rate limit" in r.getMessage()]
    assert postponed, "a postponement is logged at DEBUG"
    assert {(r.levelno, r.exc_info) for r in postponed} == {(logging.DEBUG, None)}
    noisy = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.INFO and ("rate limit" in r.getMessage() or r.exc_info)
    ]
    assert noisy == [], "waiting for a rate limit is not an error"


@blueprint.task(name="tests.busy_loop", time_limit=1, retry=1)
def busy_loop() -> None:
    while True:  # never checks anything: only a process can be stopped like this
        pass


@blueprint.task(name="tests.slow_async", time_limit=0.5)
async def slow_async() -> None:
    await asyncio.sleep(60)


@blueprint.task(name="tests.polite", soft_time_limit=0.3, time_limit=10)
def polite(ctx: TaskContext) -> str:
    try:
        for step in range(1, 1_000_000):
            ctx.progress(done=step)
            ctx.raise_if_aborted()
            time.sleep(0.01)
    except SoftTimeLimitExceeded:
        return "cleaned up"
    return "never"


@blueprint.task(name="tests.isolated_progress", time_limit=10)
def isolated_progress(args: Steps, ctx: TaskContext) -> dict[str, int]:
    for step in range(1, args.steps + 1):
        ctx.progress(done=step, total=args.steps, message=f"child step {step}")
        time.sleep(args.pause)
    return {"pid": os.getpid()}


async def test_hard_time_limit_stops_a_sync_busy_loop_and_retries(
    conn: DictConnection, settings: Settings, db_url: str
) -> None:
    job_id = await defer(conn, "tests.busy_loop")
    async_id = await defer(conn, "tests.slow_async")
    quick_polling = settings.model_copy(update={"fetch_polling_interval": 0.1})
    began = time.monotonic()
    async with running_worker(quick_polling, db_url, blueprints=ALL):
        job = await finished(conn, job_id, within=20)
        async_job = await finished(conn, async_id, within=20)
    assert time.monotonic() - began < 15
    assert job.state == jobs.JobState.FAILURE
    assert [(error.attempt, error.type) for error in job.errors] == [
        (1, "TimeLimitExceeded"),
        (2, "TimeLimitExceeded"),
    ]
    assert async_job.state == jobs.JobState.FAILURE
    assert async_job.last_error is not None
    assert async_job.last_error.type == "TimeLimitExceeded"


async def test_soft_time_limit_lets_the_task_clean_up(
    conn: DictConnection, settings: Settings, db_url: str
) -> None:
    polite_id = await defer(conn, "tests.polite")
    progress_id = await defer(conn, "tests.isolated_progress", {"steps": 3, "pause": 0.6})
    async with running_worker(settings, db_url, blueprints=ALL):

        async def reporting() -> bool:
            job = await jobs.get_job(conn, progress_id)
            return job.progress is not None and job.status == "doing"

        await eventually(reporting)
        polite_job = await finished(conn, polite_id)
        progress_job = await finished(conn, progress_id)
    assert (polite_job.state, polite_job.result) == (jobs.JobState.SUCCESS, "cleaned up")
    assert progress_job.result["pid"] != os.getpid(), "it ran in a child process"
    assert progress_job.progress is not None
    assert progress_job.progress.message == "child step 3", "progress crosses the process"


async def test_cancel_kills_an_isolated_sync_task(
    conn: DictConnection, settings: Settings, db_url: str, client: httpx.AsyncClient
) -> None:
    job_id = await defer(conn, "tests.busy_loop")
    async with running_worker(settings, db_url, blueprints=ALL):

        async def running() -> bool:
            return (await jobs.get_job(conn, job_id)).status == "doing"

        await eventually(running)
        assert (await client.post(f"/jobs/{job_id}/cancel")).status_code == 200
        job = await finished(conn, job_id, within=5)
    assert job.status == "aborted"


async def test_the_finish_trigger_stays_quiet_only_where_the_worker_notifies_itself(
    conn: DictConnection, db_url: str
) -> None:
    """A job ended anywhere but in a worker's finish batch (here: cancelled) still wakes its
    waiters from the row trigger; on a session marked as the worker's finish connection the
    trigger leaves it to notify_finished_waiters, sent after the commit."""
    listener = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    await listener.execute("LISTEN taskhub_job_finished")
    options = " ".join(f"-c {k}={v}" for k, v in FINISH_CONNECTION_SETTINGS.items())
    finisher = await psycopg.AsyncConnection.connect(db_url, autocommit=True, options=options)
    try:
        by_trigger = await defer(conn, "tests.progress_async", {"steps": 1})
        left_to_worker = await defer(conn, "tests.progress_async", {"steps": 1})
        for job_id in (by_trigger, left_to_worker):
            await conn.execute(
                "INSERT INTO taskhub.job_waiters (job_id, waiter) VALUES (%s, gen_random_uuid())",
                (job_id,),
            )
        await conn.commit()
        await conn.execute("SELECT procrastinate_cancel_job_v1(%s, false, false)", (by_trigger,))
        await conn.commit()
        await finisher.execute(
            "SELECT procrastinate_cancel_job_v1(%s, false, false)", (left_to_worker,)
        )

        async def received() -> list[int]:
            found = []
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    async for notify in listener.notifies():
                        found.append(int(notify.payload))
            return found

        assert await received() == [by_trigger]
        await finisher.execute(
            QUERIES["notify_finished_waiters"], {"job_ids": [left_to_worker, by_trigger + 10**6]}
        )
        assert await received() == [left_to_worker]
    finally:
        await listener.close()
        await finisher.close()
