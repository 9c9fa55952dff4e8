"""The manufacturing example's sync family on a real database and a real worker: the ERP sync
against the ERP example's stand-in served on a free port, archiving, and the backup it queues.

Retries wait 60 s and more: the tests read a retry's delay from the job, then make it due.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import pytest

from backend import defer
from backend.db import DictConnection
from backend.declare.registry import PeriodicArgs, TaskDefinition
from backend.examples.erp.standin import ErpStandin
from backend.examples.manufacturing import app as manufacturing_app
from backend.examples.manufacturing.sync import tasks
from backend.examples.serving import serving
from backend.process import migrate
from backend.settings import Settings, load_settings
from tests.conftest import BLUEPRINTS, TOKENS, eventually
from tests.integration.conftest import running_worker

SYNC_QUEUES = ["sync.normal", "sync.maintenance", "sync.backup"]
WORKER_BLUEPRINTS = (*BLUEPRINTS, tasks.blueprint)
ERP_TOKEN = "erp-test-token-0123"
ASSETS, LOCATIONS, PAGE_SIZE = 250, 30, 100


@pytest.fixture(autouse=True)
def manufacturing_schema(db_url: str) -> None:
    """The test's database with the app's migrations too (the template has taskhub's only)."""
    migrate.upgrade(db_url, apps=[manufacturing_app])


@pytest.fixture
def standin() -> ErpStandin:
    standin = ErpStandin(token=ERP_TOKEN)
    standin.seed(assets=ASSETS, locations=LOCATIONS, seed=7)
    return standin


@pytest.fixture
def erp(standin: ErpStandin, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The stand-in ERP serving, and the workers' settings pointing at it."""
    with serving(standin.app()) as url:
        monkeypatch.setenv("TASKHUB_MANUFACTURING_ERP_BASE_URL", url)
        monkeypatch.setenv("TASKHUB_MANUFACTURING_ERP_TOKEN", ERP_TOKEN)
        monkeypatch.setenv("TASKHUB_MANUFACTURING_ERP_PAGE_SIZE", str(PAGE_SIZE))
        monkeypatch.setenv("TASKHUB_MANUFACTURING_ERP_TIMEOUT", "2")
        yield url


@pytest.fixture
def worker_settings(settings: Settings) -> Settings:
    """Fast polling; the family's schedules off (the tests defer by hand)."""
    return load_settings(
        database_url=settings.database_url,
        data_dir=settings.data_dir,
        tokens=TOKENS,
        fetch_polling_interval=0.1,
        schedules=";".join(
            f"{name}=off"
            for name in (
                "manufacturing.sync_external_data",
                "manufacturing.archive_old_rows",
                "manufacturing.backup_critical_data",
                "taskhub.backup_database",
            )
        ),
    )


@contextlib.asynccontextmanager
async def sync_worker(settings: Settings, db_url: str) -> AsyncIterator[None]:
    async with running_worker(
        settings, db_url, queues=SYNC_QUEUES, concurrency=2, blueprints=WORKER_BLUEPRINTS
    ):
        yield


async def fetch(conn: DictConnection, query: str, *params: Any) -> list[dict[str, Any]]:
    await conn.commit()  # see the worker's commits
    cursor = await conn.execute(query, params)
    rows = await cursor.fetchall()
    await conn.commit()
    return rows


async def job_of(conn: DictConnection, job_id: int) -> dict[str, Any]:
    [row] = await fetch(
        conn,
        "SELECT job.status::text AS status, job.attempts, job.scheduled_at, stored.result,"
        " (SELECT max(at) FROM procrastinate_events event"
        "   WHERE event.job_id = job.id AND event.type = 'deferred_for_retry') AS retried_at"
        " FROM procrastinate_jobs job"
        " LEFT JOIN taskhub.job_results stored ON stored.job_id = job.id WHERE job.id = %s",
        job_id,
    )
    return row


async def job_ended(conn: DictConnection, job_id: int, within: float = 30) -> dict[str, Any]:
    async def ended() -> bool:
        return (await job_of(conn, job_id))["status"] in {"succeeded", "failed"}

    await eventually(ended, within=within)
    return await job_of(conn, job_id)


async def run(conn: DictConnection, task: TaskDefinition[Any], args: Any) -> dict[str, Any]:
    """Defer ``task`` and wait for it to succeed; its result."""
    job_id = await defer.defer(conn, task, args)
    await conn.commit()
    job = await job_ended(conn, job_id)
    assert job["status"] == "succeeded", job
    result: dict[str, Any] = job["result"]
    return result


def by_resource(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["resource"]: item for item in result["resources"]}


# -- the ERP sync ------------------------------------------------------------------------------


async def test_the_sync_pulls_every_page_then_only_what_changed(
    conn: DictConnection, standin: ErpStandin, erp: str, worker_settings: Settings, db_url: str
) -> None:
    async with sync_worker(worker_settings, db_url):
        first = by_resource(await run(conn, tasks.sync_external_data, tasks.SyncArgs()))
        touched = standin.touch("assets", 5)
        added = standin.add("assets", 3)
        requested_before = len(standin.pages_requested("assets"))
        second = by_resource(await run(conn, tasks.sync_external_data, tasks.SyncArgs()))
        second_pages = standin.pages_requested("assets")[requested_before:]
        third = by_resource(await run(conn, tasks.sync_external_data, tasks.SyncArgs()))

    assert first["assets"] == {
        "resource": "assets",
        "full_sync": True,
        "resumed_at_page": None,
        "pages_fetched": 3,
        "processed": ASSETS,
        "created": ASSETS,
        "updated": 0,
    }
    assert (first["locations"]["processed"], first["locations"]["created"]) == (30, 30)
    # Only the 8 changed assets come back, on one page; 5 updated, 3 new.
    assert second_pages == [1]
    assert second["assets"]["full_sync"] is False
    assert (second["assets"]["processed"], second["assets"]["created"]) == (8, 3)
    assert second["assets"]["updated"] == 5
    assert second["locations"]["processed"] == 0
    # A rerun fetches the same 8 (inside the minute of overlap) and rewrites none of them.
    assert (third["assets"]["processed"], third["assets"]["created"]) == (8, 0)
    assert third["assets"]["updated"] == 0

    rows = await fetch(conn, "SELECT * FROM manufacturing.equipment ORDER BY erp_id")
    assert len(rows) == ASSETS + 3
    erp_assets = {record["id"]: record for record in standin.snapshot("assets")}
    assert {row["erp_id"] for row in rows} == set(erp_assets)
    for row in rows:
        record = erp_assets[row["erp_id"]]
        assert (row["name"], row["status"], row["site_erp_id"]) == (
            record["name"],
            record["status"],
            record["location_id"],
        )
        assert row["purchase_cost"] == Decimal(record["purchase_cost"])
        assert row["erp_updated_at"] == datetime.datetime.fromisoformat(record["updated_at"])
    assert set(touched) | set(added) <= {row["erp_id"] for row in rows}
    [sites] = await fetch(conn, "SELECT count(*) AS n FROM manufacturing.sites")
    assert sites["n"] == LOCATIONS


async def test_an_erp_outage_is_retried_after_60_s_and_resumes_at_its_checkpoint(
    conn: DictConnection, standin: ErpStandin, erp: str, worker_settings: Settings, db_url: str
) -> None:
    standin.fail("assets", page=2, status=503, times=1)
    job_id = await defer.defer(conn, tasks.sync_external_data, tasks.SyncArgs())
    await conn.commit()
    async with sync_worker(worker_settings, db_url):

        async def waiting_for_retry() -> bool:
            job = await job_of(conn, job_id)
            return bool(job["status"] == "todo" and job["attempts"] == 1)

        await eventually(waiting_for_retry, within=30)
        job = await job_of(conn, job_id)
        delay = (job["scheduled_at"] - job["retried_at"]).total_seconds()
        [state] = await fetch(
            conn, "SELECT * FROM manufacturing.sync_state WHERE resource = 'assets'"
        )
        [synced] = await fetch(conn, "SELECT count(*) AS n FROM manufacturing.equipment")
        await conn.execute(
            "UPDATE procrastinate_jobs SET scheduled_at = now() WHERE id = %s", (job_id,)
        )
        await conn.commit()
        done = await job_ended(conn, job_id)

    assert delay == pytest.approx(60, abs=2)
    assert state["next_page"] == 2  # page 1 committed, page 2 failed
    assert "503" in state["last_error"]
    assert synced["n"] == PAGE_SIZE
    assert done["status"] == "succeeded"
    assert done["attempts"] == 2
    # The retry asked for page 2 again, never page 1.
    assert standin.pages_requested("assets") == [1, 2, 2, 3]
    assets = by_resource(done["result"])["assets"]
    assert assets["resumed_at_page"] == 2
    assert (assets["processed"], assets["created"], assets["pages_fetched"]) == (ASSETS, ASSETS, 2)
    [state] = await fetch(conn, "SELECT * FROM manufacturing.sync_state WHERE resource = 'assets'")
    assert state["run_started_at"] is None
    assert state["watermark"] is not None
    assert state["last_error"] is None
    [synced] = await fetch(conn, "SELECT count(*) AS n FROM manufacturing.equipment")
    assert synced["n"] == ASSETS


async def test_a_refused_token_fails_at_once_and_says_which_setting(
    conn: DictConnection,
    erp: str,
    worker_settings: Settings,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TASKHUB_MANUFACTURING_ERP_TOKEN", "wrong-token")
    job_id = await defer.defer(conn, tasks.sync_external_data, tasks.SyncArgs())
    await conn.commit()
    async with sync_worker(worker_settings, db_url):
        job = await job_ended(conn, job_id)

    assert (job["status"], job["attempts"]) == ("failed", 1)
    [state] = await fetch(
        conn, "SELECT * FROM manufacturing.sync_state WHERE resource = 'locations'"
    )
    assert "401" in state["last_error"]
    assert "TASKHUB_MANUFACTURING_ERP_TOKEN" in state["last_error"]
    [synced] = await fetch(conn, "SELECT count(*) AS n FROM manufacturing.sites")
    assert synced["n"] == 0


async def test_an_unconfigured_erp_fails_at_once_naming_the_setting(
    conn: DictConnection, worker_settings: Settings, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TASKHUB_MANUFACTURING_ERP_BASE_URL", raising=False)
    job_id = await defer.defer(conn, tasks.sync_external_data, tasks.SyncArgs())
    await conn.commit()
    async with sync_worker(worker_settings, db_url):
        job = await job_ended(conn, job_id)
    [event] = await fetch(
        conn,
        "SELECT count(*) AS retries FROM procrastinate_events"
        " WHERE job_id = %s AND type = 'deferred_for_retry'",
        job_id,
    )
    assert (job["status"], job["attempts"], event["retries"]) == ("failed", 1, 0)


# -- archiving ---------------------------------------------------------------------------------


async def insert(conn: DictConnection, query: str, *params: Any) -> int:
    cursor = await conn.execute(query, params)
    row = await cursor.fetchone()
    assert row is not None
    return int(row["id"])


async def email(conn: DictConnection, status: str, days: float, retry: bool = False) -> int:
    email_id = await insert(
        conn,
        "INSERT INTO manufacturing.emails (kind, to_email, template, status, next_retry_at,"
        " updated_at) VALUES ('normal', 'a@example.com', 'welcome', %s,"
        " CASE WHEN %s THEN now() ELSE NULL END, now() - make_interval(days => %s)) RETURNING id",
        status,
        retry,
        days,
    )
    await conn.execute(
        "INSERT INTO manufacturing.email_attempts (email_id, attempt, status, started_at)"
        " SELECT %s, n, 'failed', now() FROM generate_series(1, 2) n",
        (email_id,),
    )
    return email_id


async def payment(conn: DictConnection, status: str, days: float) -> int:
    paid = status == "paid"
    return await insert(
        conn,
        "INSERT INTO manufacturing.payments (order_id, user_id, amount_cents, currency,"
        " payment_method_id, status, charge_id, paid_at, updated_at)"
        " VALUES (1, 1, 500, 'USD', 'pm_1', %s, CASE WHEN %s THEN 'ch_' || random() END,"
        " CASE WHEN %s THEN now() END, now() - make_interval(days => %s)) RETURNING id",
        status,
        paid,
        paid,
        days,
    )


async def order(conn: DictConnection, status: str, days: float) -> int:
    order_id = await insert(
        conn,
        "INSERT INTO manufacturing.orders (customer_name, customer_email, product, quantity,"
        " due_date, status, updated_at) VALUES ('Ada', 'ada@example.com', 'widget', 3,"
        " current_date, %s, now() - make_interval(days => %s)) RETURNING id",
        status,
        days,
    )
    await conn.execute(
        "INSERT INTO manufacturing.order_events (order_id, to_status) VALUES (%s, %s)",
        (order_id, status),
    )
    return order_id


async def ids(conn: DictConnection, table: str) -> set[int]:
    rows = await fetch(conn, f"SELECT id FROM manufacturing.{table}")
    return {row["id"] for row in rows}


async def test_archiving_moves_finished_rows_past_the_cutoff_in_batches_once(
    conn: DictConnection, worker_settings: Settings, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKHUB_MANUFACTURING_ARCHIVE_AFTER_DAYS", "30")
    monkeypatch.setenv("TASKHUB_MANUFACTURING_ARCHIVE_BATCH_SIZE", "2")
    old_sent = await email(conn, "sent", 31)
    old_gave_up = await email(conn, "failed", 31)
    old_bounced = await email(conn, "bounced", 40)
    kept_emails = {
        await email(conn, "sent", 29),  # too recent
        await email(conn, "queued", 31),  # not finished
        await email(conn, "failed", 31, retry=True),  # will be retried
    }
    old_declined = await payment(conn, "declined", 31)
    kept_payments = {
        await payment(conn, "paid", 31),  # its invoice and reconciliation need it
        await payment(conn, "declined", 29),
        await payment(conn, "failed", 31),
    }
    old_shipped = await order(conn, "shipped", 31)
    old_cancelled = await order(conn, "cancelled", 60)
    kept_orders = {await order(conn, "pending", 31), await order(conn, "shipped", 29)}
    await conn.commit()

    async with sync_worker(worker_settings, db_url):
        first = await run(conn, tasks.archive_old_rows, PeriodicArgs())
        second = await run(conn, tasks.archive_old_rows, PeriodicArgs())

    assert {table["table"]: table for table in first["tables"]} == {
        "emails": {"table": "emails", "moved": 3, "related": 6, "batches": 2},
        "payments": {"table": "payments", "moved": 1, "related": 0, "batches": 1},
        "orders": {"table": "orders", "moved": 2, "related": 2, "batches": 2},
    }
    assert all(table["moved"] == 0 for table in second["tables"])

    assert await ids(conn, "emails") == kept_emails
    assert await ids(conn, "emails_archive") == {old_sent, old_gave_up, old_bounced}
    archived_attempts = await fetch(
        conn, "SELECT email_id FROM manufacturing.email_attempts_archive"
    )
    assert sorted(row["email_id"] for row in archived_attempts) == sorted(
        [old_sent, old_sent, old_gave_up, old_gave_up, old_bounced, old_bounced]
    )
    live_attempts = await fetch(conn, "SELECT DISTINCT email_id FROM manufacturing.email_attempts")
    assert {row["email_id"] for row in live_attempts} == kept_emails
    assert await ids(conn, "payments") == kept_payments
    [declined] = await fetch(conn, "SELECT * FROM manufacturing.payments_archive")
    assert declined["id"] == old_declined
    assert declined["idempotency_key"] == f"payment-{old_declined}"
    assert declined["archived_at"] is not None
    assert await ids(conn, "orders") == kept_orders
    assert await ids(conn, "orders_archive") == {old_shipped, old_cancelled}
    events = await fetch(conn, "SELECT order_id FROM manufacturing.order_events_archive")
    assert {row["order_id"] for row in events} == {old_shipped, old_cancelled}


# -- backups -----------------------------------------------------------------------------------


async def test_the_backup_task_queues_taskhubs_own_backup_once(
    conn: DictConnection, worker_settings: Settings, db_url: str
) -> None:
    async with sync_worker(worker_settings, db_url):
        first = await run(conn, tasks.backup_critical_data, PeriodicArgs())
        second = await run(conn, tasks.backup_critical_data, PeriodicArgs())

    assert first["task"] == "taskhub.backup_database"
    assert first["already_queued"] is False
    assert second == {**first, "already_queued": True}
    jobs = await fetch(
        conn,
        "SELECT id, queue_name, status::text AS status FROM procrastinate_jobs"
        " WHERE task_name = 'taskhub.backup_database'",
    )
    # Waiting on taskhub's maintenance queue (this worker does not serve it): one job.
    assert jobs == [{"id": first["job_id"], "queue_name": "maintenance", "status": "todo"}]
