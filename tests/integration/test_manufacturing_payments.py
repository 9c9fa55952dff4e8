"""The manufacturing example's payment family on a real database, a real worker and the
stand-in payment provider served on a free port.

Each test's database is migrated with the app; the worker serves the family's three payment
queues and reads ``ManufacturingSettings`` from ``TASKHUB_MANUFACTURING_*`` (set per test to
the stand-in). Retries wait 60 s and more: the tests read each retry's delay from the job,
then make it due at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from backend import defer
from backend.api import create_app
from backend.db import DictConnection
from backend.declare.apps import load_apps
from backend.declare.registry import PeriodicArgs, TaskDefinition
from backend.examples.manufacturing import app as manufacturing_app
from backend.examples.manufacturing.payments import service, tasks
from backend.examples.manufacturing.payments.standin import PaymentStandin
from backend.examples.serving import serving
from backend.process import migrate
from backend.settings import Settings, load_settings
from tests.conftest import BLUEPRINTS, READ_TOKEN, TOKENS, bearer, eventually
from tests.integration.conftest import running_api, running_worker

PAYMENT_QUEUES = ["payment.critical", "payment.normal", "payment.batch"]
WORKER_BLUEPRINTS = (*BLUEPRINTS, tasks.blueprint)
PROVIDER_TOKEN = "pay-test-token-0123"


@pytest.fixture(autouse=True)
def manufacturing_schema(db_url: str) -> None:
    """The test's database with the app's migrations too (the template has taskhub's only)."""
    migrate.upgrade(db_url, apps=[manufacturing_app])


@pytest.fixture
def standin() -> PaymentStandin:
    return PaymentStandin(token=PROVIDER_TOKEN)


@pytest.fixture
def provider(standin: PaymentStandin, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The stand-in serving, and the workers' settings pointing at it."""
    with serving(standin.app()) as url:
        monkeypatch.setenv("TASKHUB_MANUFACTURING_PAYMENT_BASE_URL", url)
        monkeypatch.setenv("TASKHUB_MANUFACTURING_PAYMENT_TOKEN", PROVIDER_TOKEN)
        monkeypatch.setenv("TASKHUB_MANUFACTURING_PAYMENT_TIMEOUT", "1")
        try:
            yield url
        finally:
            standin.release()  # no answer left held: the server can stop


@pytest.fixture
def worker_settings(settings: Settings) -> Settings:
    """Fast polling; the family's schedules off (the tests tick them by hand)."""
    return load_settings(
        database_url=settings.database_url,
        data_dir=settings.data_dir,
        tokens=TOKENS,
        fetch_polling_interval=0.1,
        schedules="manufacturing.retry_failed_payments=off;manufacturing.reconcile_payments=off",
    )


@contextlib.asynccontextmanager
async def payment_worker(settings: Settings, db_url: str) -> AsyncIterator[None]:
    async with running_worker(
        settings, db_url, queues=PAYMENT_QUEUES, concurrency=4, blueprints=WORKER_BLUEPRINTS
    ):
        yield


async def create_payment(conn: DictConnection, **changes: Any) -> service.QueuedPayment:
    request = service.PaymentRequest.model_validate(
        {
            "order_id": 456,
            "user_id": 789,
            "amount_cents": 10_000,
            "currency": "USD",
            "payment_method_id": "pm_123",
            **changes,
        }
    )
    queued = await service.create_payment(conn, request)
    await conn.commit()
    return queued


async def payment_of(conn: DictConnection, payment_id: int) -> service.Payment:
    await conn.commit()  # see the worker's commits
    payment = await service.get_payment(conn, payment_id)
    assert payment is not None
    return payment


async def job_of(conn: DictConnection, job_id: int) -> dict[str, Any]:
    await conn.commit()
    cursor = await conn.execute(
        "SELECT job.status::text AS status, job.attempts, job.scheduled_at, stored.result,"
        " (SELECT max(at) FROM procrastinate_events event"
        "   WHERE event.job_id = job.id AND event.type = 'deferred_for_retry') AS retried_at"
        " FROM procrastinate_jobs job"
        " LEFT JOIN taskhub.job_results stored ON stored.job_id = job.id WHERE job.id = %s",
        (job_id,),
    )
    row = await cursor.fetchone()
    assert row is not None
    return row


async def job_ended(conn: DictConnection, job_id: int, within: float = 20) -> dict[str, Any]:
    async def ended() -> bool:
        status: str = (await job_of(conn, job_id))["status"]
        return status in {"succeeded", "failed"}

    await eventually(ended, within=within)
    return await job_of(conn, job_id)


async def next_retry(
    conn: DictConnection, job_id: int, attempts: int, *, due_now: bool = True
) -> float:
    """Wait until the job's ``attempts``-th run failed and it waits for a retry; return that
    retry's delay in seconds, and make the retry due now (unless not ``due_now``)."""

    async def waiting() -> bool:
        job = await job_of(conn, job_id)
        return bool(job["status"] == "todo" and job["attempts"] == attempts)

    await eventually(waiting, within=20)
    job = await job_of(conn, job_id)
    delay = float((job["scheduled_at"] - job["retried_at"]).total_seconds())
    if due_now:
        await make_due(conn, job_id)
    return delay


async def make_due(conn: DictConnection, job_id: int) -> None:
    await conn.execute(
        "UPDATE procrastinate_jobs SET scheduled_at = now() WHERE id = %s", (job_id,)
    )
    await conn.commit()


async def run_now(conn: DictConnection, task: TaskDefinition[Any], within: float = 20) -> Any:
    """Defer a periodic task by hand (a tick) and wait for its result."""
    job_id = await defer.defer(conn, task, PeriodicArgs())
    await conn.commit()
    job = await job_ended(conn, job_id, within)
    assert job["status"] == "succeeded", job
    return job["result"]


async def alerts(conn: DictConnection) -> list[dict[str, Any]]:
    await conn.commit()
    cursor = await conn.execute(
        "SELECT kind, severity, message, details FROM taskhub.alert_events"
        " WHERE kind = 'payment_mismatch' ORDER BY id"
    )
    return await cursor.fetchall()


# -- charging ----------------------------------------------------------------------------------


async def test_a_payment_is_charged_once_recorded_and_invoiced(
    conn: DictConnection,
    standin: PaymentStandin,
    provider: str,
    worker_settings: Settings,
    db_url: str,
) -> None:
    queued = await create_payment(conn, amount_cents=12_345, currency="EUR")
    async with payment_worker(worker_settings, db_url):
        job = await job_ended(conn, queued.job_id)
        assert job["status"] == "succeeded", job
        invoice_job = job["result"]["invoice_job_id"]
        assert invoice_job is not None
        assert (await job_ended(conn, invoice_job))["status"] == "succeeded"

    payment = await payment_of(conn, queued.payment_id)
    [charge] = standin.list_charges()
    assert payment.status == "paid"
    assert payment.charge_id == charge.id
    assert payment.attempts == 1
    assert payment.paid_at is not None
    assert charge.idempotency_key == f"payment-{queued.payment_id}"
    assert (charge.amount_cents, charge.currency) == (12_345, "EUR")
    assert charge.metadata == {"payment_id": str(queued.payment_id), "order_id": "456"}
    assert job["result"]["charge_id"] == charge.id
    assert job["result"]["replayed"] is False

    invoice = await service.get_invoice(conn, queued.payment_id)
    assert invoice is not None
    assert (invoice.order_id, invoice.amount_cents, invoice.currency) == (456, 12_345, "EUR")
    assert invoice.number == f"INV-{payment.paid_at.year}-{queued.payment_id:08d}"

    # Running the invoice again writes no second one.
    again = await defer.defer(
        conn, tasks.generate_invoice, tasks.PaymentArgs(payment_id=queued.payment_id)
    )
    await conn.commit()
    async with payment_worker(worker_settings, db_url):
        rerun = await job_ended(conn, again)
    assert rerun["result"]["created"] is False
    assert rerun["result"]["invoice_id"] == invoice.id


async def test_a_provider_error_is_retried_after_60_s_and_charges_once(
    conn: DictConnection,
    standin: PaymentStandin,
    provider: str,
    worker_settings: Settings,
    db_url: str,
) -> None:
    standin.fail(status=503, times=1)
    queued = await create_payment(conn)
    async with payment_worker(worker_settings, db_url):
        delay = await next_retry(conn, queued.job_id, attempts=1)
        failed = await payment_of(conn, queued.payment_id)
        job = await job_ended(conn, queued.job_id)

    assert delay == pytest.approx(60, abs=2)
    assert failed.status == "failed"
    assert failed.last_error is not None
    assert "503" in failed.last_error
    assert job["status"] == "succeeded"
    assert job["attempts"] == 2
    payment = await payment_of(conn, queued.payment_id)
    assert payment.status == "paid"
    assert payment.last_error is None
    assert standin.charges_for(f"payment-{queued.payment_id}") == 1
    assert payment.charge_id == standin.list_charges()[0].id


async def test_a_timed_out_charge_that_went_through_is_not_charged_again(
    conn: DictConnection,
    standin: PaymentStandin,
    provider: str,
    worker_settings: Settings,
    db_url: str,
) -> None:
    """The provider charges after the client gave up (1 s): the retry, asking with the same
    key, gets that charge back."""
    standin.fail(status=None, delay=1.5, times=1)
    queued = await create_payment(conn)
    key = f"payment-{queued.payment_id}"
    async with payment_worker(worker_settings, db_url):
        await next_retry(conn, queued.job_id, attempts=1, due_now=False)
        timed_out = await payment_of(conn, queued.payment_id)

        async def charged_late() -> bool:
            return standin.charges_for(key) == 1

        await eventually(charged_late, within=5)
        await make_due(conn, queued.job_id)
        job = await job_ended(conn, queued.job_id)

    assert timed_out.last_error is not None
    assert "did not answer" in timed_out.last_error
    assert job["status"] == "succeeded"
    assert job["result"]["replayed"] is True
    assert standin.requests[key] == 2
    assert standin.charges_for(key) == 1
    payment = await payment_of(conn, queued.payment_id)
    assert payment.charge_id == standin.list_charges()[0].id


async def test_provider_down_backs_off_60_120_240_480_then_the_sweep_charges_it(
    conn: DictConnection,
    standin: PaymentStandin,
    provider: str,
    worker_settings: Settings,
    db_url: str,
) -> None:
    standin.fail(status=500)  # until healed
    queued = await create_payment(conn)
    async with payment_worker(worker_settings, db_url):
        delays = [await next_retry(conn, queued.job_id, attempts=n) for n in range(1, 5)]
        given_up = await job_ended(conn, queued.job_id)
        failed = await payment_of(conn, queued.payment_id)
        assert standin.list_charges() == []

        # Nothing to sweep while the job is still retrying: covered by the given-up state.
        standin.heal()
        swept = await run_now(conn, tasks.retry_failed_payments)
        assert swept == {"requeued": [queued.payment_id]}
        requeued = await payment_of(conn, queued.payment_id)
        assert requeued.job_id is not None
        assert requeued.job_id != queued.job_id
        job = await job_ended(conn, requeued.job_id)
        again = await run_now(conn, tasks.retry_failed_payments)

    assert delays == [pytest.approx(expected, abs=2) for expected in (60, 120, 240, 480)]
    assert given_up["status"] == "failed"
    assert given_up["attempts"] == 5
    assert failed.status == "failed"
    assert failed.attempts == 5
    assert job["status"] == "succeeded"
    payment = await payment_of(conn, queued.payment_id)
    assert payment.status == "paid"
    assert payment.retry_rounds == 1
    assert payment.attempts == 6
    assert len(standin.list_charges()) == 1
    assert again == {"requeued": []}, "a paid payment is not swept"


async def test_a_declined_card_is_final(
    conn: DictConnection,
    standin: PaymentStandin,
    provider: str,
    worker_settings: Settings,
    db_url: str,
) -> None:
    queued = await create_payment(conn, payment_method_id="pm_card_declined")
    async with payment_worker(worker_settings, db_url):
        job = await job_ended(conn, queued.job_id)
        swept = await run_now(conn, tasks.retry_failed_payments)

    assert job["status"] == "succeeded"
    assert job["attempts"] == 1
    assert job["result"]["status"] == "declined"
    payment = await payment_of(conn, queued.payment_id)
    assert payment.status == "declined"
    assert payment.charge_id is None
    assert standin.list_charges() == []
    assert swept == {"requeued": []}


# -- reconciliation ----------------------------------------------------------------------------


async def test_reconciliation_is_clean_then_reports_every_mismatch_in_an_alert(
    conn: DictConnection,
    standin: PaymentStandin,
    provider: str,
    worker_settings: Settings,
    db_url: str,
) -> None:
    first = await create_payment(conn, amount_cents=1_000)
    second = await create_payment(conn, amount_cents=2_000)
    async with payment_worker(worker_settings, db_url):
        for queued in (first, second):
            assert (await job_ended(conn, queued.job_id))["status"] == "succeeded"
        clean = await run_now(conn, tasks.reconcile_payments)
        assert await alerts(conn) == []

        # At the provider: one amount changed, one charge nobody here made. Here: a payment
        # whose charge the provider never had.
        paid = await payment_of(conn, first.payment_id)
        assert paid.charge_id is not None
        standin.set_amount(paid.charge_id, 900)
        stray, _ = standin.charge("elsewhere-1", 5_000, "USD")
        ghost = await create_payment(conn, amount_cents=3_000)
        await conn.execute(
            "UPDATE manufacturing.payments SET status = 'paid', charge_id = 'ch_ghost',"
            " paid_at = now() WHERE id = %s",
            (ghost.payment_id,),
        )
        await conn.execute("DELETE FROM procrastinate_jobs WHERE id = %s", (ghost.job_id,))
        await conn.commit()
        found = await run_now(conn, tasks.reconcile_payments)

    assert clean["mismatches"] == []
    assert (clean["provider_charges"], clean["local_payments"]) == (2, 2)
    assert clean["alert_id"] is None

    kinds = {item["kind"]: item for item in found["mismatches"]}
    assert set(kinds) == {"amount_differs", "missing_locally", "missing_at_provider"}
    assert kinds["amount_differs"]["payment_id"] == first.payment_id
    assert kinds["amount_differs"]["local_amount_cents"] == 1_000
    assert kinds["amount_differs"]["provider_amount_cents"] == 900
    assert kinds["missing_locally"]["charge_id"] == stray.id
    assert kinds["missing_at_provider"]["charge_id"] == "ch_ghost"
    assert kinds["missing_at_provider"]["payment_id"] == ghost.payment_id

    [alert] = await alerts(conn)
    assert alert["severity"] == "error"
    assert "3 payment(s) differ" in alert["message"]
    assert alert["details"]["reconciliation_id"] == found["reconciliation_id"]
    assert len(alert["details"]["mismatches"]) == 3
    cursor = await conn.execute(
        "SELECT mismatch_count, provider_charges, local_payments"
        " FROM manufacturing.payment_reconciliations ORDER BY id"
    )
    assert await cursor.fetchall() == [
        {"mismatch_count": 0, "provider_charges": 2, "local_payments": 2},
        {"mismatch_count": 3, "provider_charges": 3, "local_payments": 3},
    ]


async def test_a_charge_whose_payment_is_still_being_processed_is_in_flight(
    conn: DictConnection,
    standin: PaymentStandin,
    provider: str,
    worker_settings: Settings,
    db_url: str,
) -> None:
    """Charged at the provider, the job still running (its answer held): not a mismatch."""
    standin.hold()
    queued = await create_payment(conn)
    async with payment_worker(worker_settings, db_url):

        async def charged() -> bool:
            return standin.charges_for(f"payment-{queued.payment_id}") == 1

        await eventually(charged, within=10)
        during = await run_now(conn, tasks.reconcile_payments)
        standin.release()
        assert (await job_ended(conn, queued.job_id))["status"] == "succeeded"
        after = await run_now(conn, tasks.reconcile_payments)

    assert during["mismatches"] == []
    assert during["in_flight"] == 1
    assert after["mismatches"] == []
    assert after["in_flight"] == 0
    assert await alerts(conn) == []


# -- over HTTP ---------------------------------------------------------------------------------


async def test_the_router_creates_a_payment_with_its_job_and_reads_it(
    conn: DictConnection, settings: Settings, db_url: str
) -> None:
    api = create_app(settings, db_url, apps=load_apps(settings, [manufacturing_app]))
    async with running_api(api) as client:
        created = await client.post(
            "/manufacturing/payments",
            json={
                "order_id": 1,
                "user_id": 2,
                "amount_cents": 4_200,
                "currency": "USD",
                "payment_method_id": "pm_1",
            },
        )
        refused = await client.post(
            "/manufacturing/payments",
            json={"order_id": 1, "user_id": 2, "amount_cents": 0, "payment_method_id": "pm_1"},
        )
        reader = await client.post(
            "/manufacturing/payments",
            headers=bearer(READ_TOKEN),
            json={"order_id": 1, "user_id": 2, "amount_cents": 1, "payment_method_id": "pm_1"},
        )
        assert created.status_code == 202, created.text
        body = created.json()
        read = await client.get(created.headers["Location"])
        missing = await client.get("/manufacturing/payments/999999")

    assert body["task"] == "manufacturing.process_payment"
    assert refused.status_code == 422
    assert reader.status_code == 403
    assert read.status_code == 200
    payment = read.json()["payment"]
    assert payment["status"] == "pending"
    assert payment["job_id"] == body["job_id"]
    assert payment["idempotency_key"] == f"payment-{body['payment_id']}"
    assert read.json()["invoice"] is None
    assert missing.status_code == 404
    cursor = await conn.execute(
        "SELECT queue_name, priority, args FROM procrastinate_jobs WHERE id = %s",
        (body["job_id"],),
    )
    assert await cursor.fetchone() == {
        "queue_name": "payment.critical",
        "priority": 10,
        "args": {"payment_id": body["payment_id"]},
    }
