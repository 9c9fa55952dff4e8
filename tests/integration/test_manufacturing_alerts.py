"""The seed's alerts ("critical task failures, queue backups (>1000 tasks), worker failures,
external service outages") fire through taskhub's alerting with the settings the example
documents (``monitoring.ALERT_SETTINGS``), on a real database, worker and stand-in provider."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from backend import defer
from backend.control import alert_rules
from backend.db import DictConnection
from backend.declare.apps import load_apps
from backend.declare.registry import PeriodicArgs
from backend.examples.manufacturing import app as manufacturing_app
from backend.examples.manufacturing.email.standin import MailStandin, serving_smtp
from backend.examples.manufacturing.monitoring import ALERT_SETTINGS
from backend.examples.manufacturing.monitoring import tasks as monitoring_tasks
from backend.examples.manufacturing.payments import service
from backend.examples.manufacturing.payments import tasks as payment_tasks
from backend.examples.manufacturing.payments.standin import PaymentStandin
from backend.examples.serving import serving
from backend.process import migrate
from backend.settings import Settings, load_settings
from tests.conftest import BLUEPRINTS, TOKENS, eventually
from tests.integration.conftest import running_worker

PROVIDER_TOKEN = "pay-test-token-0123"
RESOURCES_NEVER_OVER = {
    "TASKHUB_MANUFACTURING_DISK_MAX_PERCENT": "100",
    "TASKHUB_MANUFACTURING_MEMORY_MAX_PERCENT": "100",
    "TASKHUB_MANUFACTURING_LOAD_MAX_PER_CPU": "1000",
}
WORKER_BLUEPRINTS = (*BLUEPRINTS, payment_tasks.blueprint, monitoring_tasks.blueprint)


@pytest.fixture(autouse=True)
def manufacturing_schema(db_url: str) -> None:
    migrate.upgrade(db_url, apps=[manufacturing_app])


@pytest.fixture
def alert_settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """taskhub's settings read from the environment the example documents."""
    for name, value in ALERT_SETTINGS.items():
        monkeypatch.setenv(name, value)
    return load_settings(
        database_url=settings.database_url,
        data_dir=settings.data_dir,
        tokens=TOKENS,
        fetch_polling_interval=0.1,
        schedules="manufacturing.health_check=off;manufacturing.collect_performance_metrics=off",
    )


@pytest.fixture
def mail(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The stand-in mail server; the host's resources never over (not this file's subject)."""
    with serving_smtp(MailStandin()) as (host, port):
        monkeypatch.setenv("TASKHUB_MANUFACTURING_SMTP_HOST", host)
        monkeypatch.setenv("TASKHUB_MANUFACTURING_SMTP_PORT", str(port))
        for name, value in RESOURCES_NEVER_OVER.items():
            monkeypatch.setenv(name, value)
        yield


@pytest.fixture
def standin() -> PaymentStandin:
    return PaymentStandin(token=PROVIDER_TOKEN)


@pytest.fixture
def provider(standin: PaymentStandin, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with serving(standin.app()) as url:
        monkeypatch.setenv("TASKHUB_MANUFACTURING_PAYMENT_BASE_URL", url)
        monkeypatch.setenv("TASKHUB_MANUFACTURING_PAYMENT_TOKEN", PROVIDER_TOKEN)
        yield url


async def evaluate(conn: DictConnection, settings: Settings) -> dict[tuple[str, str], str]:
    """One evaluation, committed: (rule, subject) -> firing or resolved."""
    async with conn.transaction():
        found = await alert_rules.evaluate(conn, settings, [])
    return {(t.alert.rule, t.alert.subject): t.state for t in found}


async def job_status(conn: DictConnection, job_id: int) -> str:
    await conn.commit()
    cursor = await conn.execute(
        "SELECT status::text FROM procrastinate_jobs WHERE id = %s", [job_id]
    )
    row = await cursor.fetchone()
    assert row is not None
    return str(row["status"])


async def ended(conn: DictConnection, job_id: int) -> str:
    async def done() -> bool:
        return await job_status(conn, job_id) in {"succeeded", "failed"}

    await eventually(done, within=30)
    return await job_status(conn, job_id)


def test_the_documented_settings_are_the_seeds(alert_settings: Settings) -> None:
    assert alert_settings.critical_queues == [
        "payment.critical",
        "order.critical",
        "monitoring.critical",
    ]
    assert alert_settings.alert_backlog == 1000


async def test_a_final_failure_on_payment_critical_is_a_critical_failure(
    conn: DictConnection,
    alert_settings: Settings,
    provider: str,
    monkeypatch: pytest.MonkeyPatch,
    db_url: str,
) -> None:
    monkeypatch.setenv("TASKHUB_MANUFACTURING_PAYMENT_TOKEN", "a-revoked-token")
    async with conn.transaction():
        queued = await service.create_payment(
            conn,
            service.PaymentRequest(
                order_id=1, user_id=1, amount_cents=500, currency="USD", payment_method_id="pm"
            ),
        )
    assert ("critical_failure", "payment.critical") not in await evaluate(conn, alert_settings)
    async with running_worker(
        alert_settings, db_url, queues=["payment.critical"], blueprints=WORKER_BLUEPRINTS
    ):
        # a refused token is not worth a retry: the job fails for good at once
        assert await ended(conn, queued.job_id) == "failed"
    fired = await evaluate(conn, alert_settings)
    assert fired[("critical_failure", "payment.critical")] == "firing"
    assert fired[("unserved_queue", "payment.critical")] == "resolved"  # before the worker
    [state] = [
        alert for alert in await alert_rules.firing_alerts(conn) if alert.rule == "critical_failure"
    ]
    assert state.severity == "critical"
    assert state.details["job_ids"] == [queued.job_id]
    assert ("critical_failure", "payment.critical") not in await evaluate(conn, alert_settings)


async def test_more_than_1000_waiting_on_email_bulk_is_a_backlog(
    conn: DictConnection, alert_settings: Settings
) -> None:
    ping = load_apps(alert_settings, []).task("taskhub.ping")
    async with conn.transaction():
        await defer.batch_defer(conn, ping, [{}] * 1000, queue="email.bulk")
    # no worker at all: unserved_queue fires too; the backlog threshold is not reached yet
    assert ("backlog", "email.bulk") not in await evaluate(conn, alert_settings)
    async with conn.transaction():
        await defer.defer(conn, ping, {}, queue="email.bulk")
    fired = await evaluate(conn, alert_settings)
    assert fired == {("backlog", "email.bulk"): "firing"}
    cursor = await conn.execute(
        "SELECT severity, details FROM taskhub.alert_events WHERE kind = 'backlog'"
    )
    [event] = await cursor.fetchall()
    assert event["severity"] == "warning"
    assert (event["details"]["waiting"], event["details"]["threshold"]) == (1001, 1000)


async def test_a_worker_whose_heartbeat_stopped_is_a_dead_worker(
    conn: DictConnection, alert_settings: Settings
) -> None:
    async with conn.transaction():
        cursor = await conn.execute(
            "SELECT worker_id AS id FROM procrastinate_register_worker_v1()"
        )
        row = await cursor.fetchone()
        assert row is not None
        worker_id = row["id"]
    assert ("dead_worker", str(worker_id)) not in await evaluate(conn, alert_settings)
    async with conn.transaction():  # its heartbeat stopped RESCUE_AFTER seconds ago and more
        await conn.execute(
            "UPDATE procrastinate_workers SET last_heartbeat = now() - make_interval(secs => %s)"
            " WHERE id = %s",
            [alert_settings.rescue_after + 1, worker_id],
        )
    fired = await evaluate(conn, alert_settings)
    assert fired == {("dead_worker", str(worker_id)): "firing"}


async def test_the_provider_down_is_an_external_service_outage_then_recovered(
    conn: DictConnection,
    alert_settings: Settings,
    standin: PaymentStandin,
    provider: str,
    mail: None,
    db_url: str,
) -> None:
    async def tick() -> list[str]:
        job_id = await defer.defer(conn, monitoring_tasks.health_check, PeriodicArgs())
        await conn.commit()
        assert await ended(conn, job_id) == "succeeded"
        cursor = await conn.execute(
            "SELECT kind FROM taskhub.alert_events WHERE job_id = %s ORDER BY id", [job_id]
        )
        return [row["kind"] for row in await cursor.fetchall()]

    async with running_worker(
        alert_settings, db_url, queues=["monitoring.critical"], blueprints=WORKER_BLUEPRINTS
    ):
        assert await tick() == []
        standin.fail(status=503)
        assert await tick() == ["external_service_down"]
        assert await tick() == []
        standin.heal()
        assert await tick() == ["external_service_recovered"]
    events: list[dict[str, Any]] = await (
        await conn.execute(
            "SELECT kind, severity, details->>'service' AS service FROM taskhub.alert_events"
            " WHERE kind LIKE 'external_service%%' ORDER BY id"
        )
    ).fetchall()
    assert events == [
        {"kind": "external_service_down", "severity": "error", "service": "payment_provider"},
        {"kind": "external_service_recovered", "severity": "info", "service": "payment_provider"},
    ]
