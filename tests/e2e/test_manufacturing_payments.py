"""A payment charged exactly once although its worker is killed (SIGKILL) between the charge
and the commit: real `taskhub worker --app backend.examples.manufacturing` processes, the
stand-in provider served by the test.

The provider records the charge, then holds its answer until the test releases it: the worker
has charged and not committed when it dies. The job is rescued onto a second worker, which
asks again with the same idempotency key and gets the first charge back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from backend.examples.manufacturing import app as manufacturing_app
from backend.examples.manufacturing.payments import service
from backend.examples.manufacturing.payments.standin import PaymentStandin
from backend.examples.serving import serving
from backend.process import migrate
from tests.e2e.conftest import TaskhubProcess, clean_env, job_row, wait_status

pytestmark = pytest.mark.e2e

APP = "backend.examples.manufacturing"
PROVIDER_TOKEN = "pay-e2e-token-0123456789"
#: Fast heartbeats and a rescue every second, so a killed worker's job is back in seconds; the
#: family's own schedules off (the test ticks nothing by hand, but keeps the run quiet).
FAST_RESCUE = {
    "TASKHUB_HEARTBEAT_INTERVAL": "0.5",
    "TASKHUB_RESCUE_AFTER": "1",
    "TASKHUB_SCHEDULES": "taskhub.rescue_stalled_jobs=* * * * * *;"
    "manufacturing.retry_failed_payments=off;manufacturing.reconcile_payments=off",
    "TASKHUB_FETCH_POLLING_INTERVAL": "0.1",
}


@pytest.fixture
def standin() -> PaymentStandin:
    return PaymentStandin(token=PROVIDER_TOKEN)


@pytest.fixture
def provider_url(standin: PaymentStandin) -> Iterator[str]:
    with serving(standin.app()) as url:
        try:
            yield url
        finally:
            standin.release()


def create_payment(db_url: str) -> service.QueuedPayment:
    async def create() -> service.QueuedPayment:
        async with await psycopg.AsyncConnection.connect(db_url, row_factory=dict_row) as conn:
            queued = await service.create_payment(
                conn,
                service.PaymentRequest(
                    order_id=456,
                    user_id=789,
                    amount_cents=10_000,
                    currency="USD",
                    payment_method_id="pm_123",
                ),
            )
            await conn.commit()
            return queued

    return asyncio.run(create())


def payment_row(db_url: str, payment_id: int) -> dict[str, Any]:
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        row = conn.execute(
            "SELECT payment.status, payment.charge_id, payment.attempts, invoice.number"
            "  FROM manufacturing.payments payment"
            "  LEFT JOIN manufacturing.invoices invoice ON invoice.payment_id = payment.id"
            " WHERE payment.id = %s",
            (payment_id,),
        ).fetchone()
    assert row is not None
    return row


def wait_for(check: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)


def test_a_worker_killed_between_the_charge_and_the_commit_charges_once(
    spawn: type[TaskhubProcess],
    tmp_path: Path,
    db_url: str,
    standin: PaymentStandin,
    provider_url: str,
) -> None:
    migrate.upgrade(db_url, apps=[manufacturing_app])
    env = clean_env(
        DATABASE_URL=db_url,
        TASKHUB_MANUFACTURING_PAYMENT_BASE_URL=provider_url,
        TASKHUB_MANUFACTURING_PAYMENT_TOKEN=PROVIDER_TOKEN,
        TASKHUB_MANUFACTURING_PAYMENT_TIMEOUT="60",  # the held answer must not time out first
        **FAST_RESCUE,
    )
    standin.hold()
    queued = create_payment(db_url)
    key = f"payment-{queued.payment_id}"

    # The seed's critical pool, as one process (its pid is the worker itself).
    doomed = spawn(
        ["worker", "--app", APP, "--queues", "payment.critical", "--processes", "1"],
        tmp_path,
        env,
    )
    wait_for(lambda: standin.charges_for(key) == 1, "charge at the provider")
    assert job_row(db_url, queued.job_id)["status"] == "doing"
    doomed.kill()  # SIGKILL: charged at the provider, nothing committed here
    standin.release()
    lost = payment_row(db_url, queued.payment_id)
    assert lost["status"] == "pending"
    assert lost["charge_id"] is None, "the kill came before the commit"

    successor = spawn(["worker", "--app", APP, "--processes", "1"], tmp_path, env)
    done = wait_status(db_url, queued.job_id, "succeeded", timeout=60)
    wait_for(lambda: payment_row(db_url, queued.payment_id)["number"] is not None, "invoice", 30)
    assert successor.stop() == 0

    [charge] = standin.list_charges()
    assert standin.charges_for(key) == 1
    assert standin.requests[key] == 2, "asked twice, charged once"
    assert charge.idempotency_key == key
    assert charge.amount_cents == 10_000
    assert done["attempts"] == 2
    assert done["errors"] == ["WorkerLost@1"]
    assert done["result"]["charge_id"] == charge.id
    assert done["result"]["replayed"] is True
    payment = payment_row(db_url, queued.payment_id)
    assert payment["status"] == "paid"
    assert payment["charge_id"] == charge.id
    assert payment["attempts"] == 2
