"""backend.testing.run_task / arun_task: a task run in the test's process, as a worker runs it."""

from __future__ import annotations

import datetime
import threading
import uuid
from decimal import Decimal

import pytest
from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from backend.declare.registry import ResultNotJSON, TaskBlueprint
from backend.defer import make_job
from backend.errors import InvalidJobArguments
from backend.runtime.context import NoDatabase, TaskContext
from backend.testing import arun_task, run_task

blueprint = TaskBlueprint()


class ImportArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rows: int = Field(ge=0)
    day: datetime.date = datetime.date(2025, 1, 31)


class ImportResult(BaseModel):
    imported: int
    day: datetime.date
    amount: Decimal
    batch: uuid.UUID


class SupplierSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SUPPLIER_")

    endpoint: str = "https://default.invalid"


class ImportFailed(Exception):
    pass


CALLS: list[str] = []
BATCH = uuid.UUID("12345678-1234-5678-1234-567812345678")


@blueprint.task(name="helpers.import_rows")
def import_rows(args: ImportArgs, ctx: TaskContext) -> ImportResult:
    CALLS.append(threading.current_thread().name)
    for done in range(1, args.rows + 1):
        ctx.progress(done=done, total=args.rows, message=f"{done}/{args.rows}", rows=done)
    if args.rows == 13:
        raise ImportFailed("row 13 is unlucky")
    return ImportResult(imported=args.rows, day=args.day, amount=Decimal("1.50"), batch=BATCH)


@blueprint.task(name="helpers.describe")
async def describe(ctx: TaskContext) -> dict[str, object]:
    ctx.progress(message="async too")
    return {
        "job_id": ctx.job_id,
        "attempt": ctx.attempt,
        "endpoint": ctx.settings_of(SupplierSettings).endpoint,
    }


@blueprint.task(name="helpers.reads_database")
async def reads_database(ctx: TaskContext) -> int:
    async with ctx.connection() as conn:
        cursor = await conn.execute("SELECT 1 AS one")
        row = await cursor.fetchone()
        assert row is not None
        return int(row["one"])


@blueprint.task(name="helpers.returns_a_set")
def returns_a_set() -> object:
    return {object()}


def test_bad_arguments_raise_what_a_defer_raises_before_the_task_runs() -> None:
    CALLS.clear()
    with pytest.raises(InvalidJobArguments) as from_defer:
        make_job(import_rows, {"rows": -1})
    with pytest.raises(InvalidJobArguments) as from_run:
        run_task(import_rows, {"rows": -1}, raises=False)
    assert (
        str(from_run.value)
        == str(from_defer.value)
        == ("invalid job: args.rows: Input should be greater than or equal to 0")
    )
    assert from_run.value.errors == from_defer.value.errors
    with pytest.raises(InvalidJobArguments, match=r"args\.colour: Extra inputs"):
        run_task(import_rows, {"rows": 1, "colour": "red"})
    assert CALLS == []


def test_a_sync_task_runs_in_the_caller_s_thread_and_its_progress_is_recorded() -> None:
    CALLS.clear()
    run = run_task(import_rows, ImportArgs(rows=3))
    assert [threading.current_thread().name] == CALLS
    assert run.status == "succeeded"
    assert run.args == {"rows": 3, "day": "2025-01-31"}
    assert [(p.done, p.total, p.message, p.counters) for p in run.progress] == [
        (1, 3, "1/3", {"rows": 1}),
        (2, 3, "2/3", {"rows": 2}),
        (3, 3, "3/3", {"rows": 3}),
    ]


def test_the_result_is_the_json_the_worker_stores() -> None:
    run = run_task(import_rows, {"rows": 2, "day": "2025-02-01"})
    assert run.result == {
        "imported": 2,
        "day": "2025-02-01",
        "amount": "1.50",
        "batch": "12345678-1234-5678-1234-567812345678",
    }
    with pytest.raises(ResultNotJSON, match="not JSON"):
        run_task(returns_a_set)


def test_the_task_s_exception_is_raised_or_kept() -> None:
    with pytest.raises(ImportFailed, match="unlucky"):
        run_task(import_rows, {"rows": 13})
    run = run_task(import_rows, {"rows": 13}, raises=False)
    assert run.status == "failed"
    assert isinstance(run.error, ImportFailed)
    assert run.result is None
    assert len(run.progress) == 13  # reported before it failed


def test_an_async_task_gets_its_job_id_attempt_and_the_app_s_settings() -> None:
    run = run_task(
        describe,
        job_id=42,
        attempt=3,
        app_settings=[SupplierSettings(endpoint="https://erp.test")],
    )
    assert run.result == {"job_id": 42, "attempt": 3, "endpoint": "https://erp.test"}
    assert [p.message for p in run.progress] == ["async too"]


def test_settings_not_given_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPLIER_ENDPOINT", "https://from-env.test")
    assert run_task(describe).result["endpoint"] == "https://from-env.test"


async def test_arun_task_runs_async_and_sync_tasks_in_a_running_loop() -> None:
    CALLS.clear()
    run = await arun_task(describe, job_id=7)
    assert run.result["job_id"] == 7
    synced = await arun_task(import_rows, {"rows": 1})
    assert synced.result["imported"] == 1
    assert [threading.current_thread().name] != CALLS  # a thread, as the worker runs it
    # run_task from inside a running loop (an async test) works as well.
    assert run_task(describe, job_id=8).result["job_id"] == 8


def test_a_connection_without_a_database_url_is_a_clear_error() -> None:
    with pytest.raises(NoDatabase, match=r"pass connection_url="):
        run_task(reads_database)
    run = run_task(reads_database, raises=False)
    assert isinstance(run.error, NoDatabase)
