"""The manufacturing monitoring family's tasks on a real database and a real worker: the
health check against the stand-in mail server and payment provider served on free ports (and
stopped, for an outage), and the performance metrics from taskhub's rollup."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from backend import defer
from backend.api import create_app
from backend.control import stats
from backend.db import DictConnection
from backend.declare.apps import load_apps
from backend.declare.registry import PeriodicArgs, TaskDefinition
from backend.examples.manufacturing import app as manufacturing_app
from backend.examples.manufacturing.email.standin import MailStandin, serving_smtp
from backend.examples.manufacturing.monitoring import tasks
from backend.examples.manufacturing.payments import service
from backend.examples.manufacturing.payments import tasks as payment_tasks
from backend.examples.manufacturing.payments.standin import PaymentStandin
from backend.examples.serving import serving
from backend.process import migrate
from backend.settings import Settings, load_settings
from tests.conftest import BLUEPRINTS, READ_TOKEN, TOKENS, eventually
from tests.integration.conftest import running_api, running_worker

PROVIDER_TOKEN = "pay-test-token-0123"
QUEUES = ["monitoring.critical", "monitoring.normal", "email.normal", "payment.critical"]
WORKER_BLUEPRINTS = (*BLUEPRINTS, tasks.blueprint, payment_tasks.blueprint)
#: The host's own figures must not decide a test (a full CI disk, a busy runner).
RESOURCES_NEVER_OVER = {
    "TASKHUB_MANUFACTURING_DISK_MAX_PERCENT": "100",
    "TASKHUB_MANUFACTURING_MEMORY_MAX_PERCENT": "100",
    "TASKHUB_MANUFACTURING_LOAD_MAX_PER_CPU": "1000",
}
HEALTH_KINDS = (
    "external_service_down",
    "external_service_recovered",
    "system_resources",
    "system_resources_recovered",
)


@pytest.fixture(autouse=True)
def manufacturing_schema(db_url: str) -> None:
    migrate.upgrade(db_url, apps=[manufacturing_app])


@pytest.fixture
def mail(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[MailStandin, int]]:
    handler = MailStandin()
    with serving_smtp(handler) as (host, port):
        monkeypatch.setenv("TASKHUB_MANUFACTURING_SMTP_HOST", host)
        monkeypatch.setenv("TASKHUB_MANUFACTURING_SMTP_PORT", str(port))
        monkeypatch.setenv("TASKHUB_MANUFACTURING_HEALTH_TIMEOUT", "2")
        for name, value in RESOURCES_NEVER_OVER.items():
            monkeypatch.setenv(name, value)
        yield handler, port


@pytest.fixture
def standin() -> PaymentStandin:
    return PaymentStandin(token=PROVIDER_TOKEN)


@pytest.fixture
def provider(standin: PaymentStandin, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with serving(standin.app()) as url:
        monkeypatch.setenv("TASKHUB_MANUFACTURING_PAYMENT_BASE_URL", url)
        monkeypatch.setenv("TASKHUB_MANUFACTURING_PAYMENT_TOKEN", PROVIDER_TOKEN)
        yield url


@pytest.fixture
def worker_settings(settings: Settings) -> Settings:
    """Fast polling; the family's schedules off (the tests tick them by hand)."""
    return load_settings(
        database_url=settings.database_url,
        data_dir=settings.data_dir,
        tokens=TOKENS,
        fetch_polling_interval=0.1,
        schedules="manufacturing.health_check=off;manufacturing.collect_performance_metrics=off",
    )


@pytest.fixture
async def worker(worker_settings: Settings, db_url: str) -> AsyncIterator[None]:
    async with running_worker(worker_settings, db_url, queues=QUEUES, blueprints=WORKER_BLUEPRINTS):
        yield


async def job_ended(conn: DictConnection, job_id: int) -> dict[str, Any]:
    async def ended() -> bool:
        await conn.commit()
        cursor = await conn.execute(
            "SELECT status::text FROM procrastinate_jobs WHERE id = %s", (job_id,)
        )
        row = await cursor.fetchone()
        return row is not None and row["status"] in {"succeeded", "failed"}

    await eventually(ended, within=30)
    cursor = await conn.execute(
        "SELECT job.status::text AS status, stored.result FROM procrastinate_jobs job"
        " LEFT JOIN taskhub.job_results stored ON stored.job_id = job.id WHERE job.id = %s",
        (job_id,),
    )
    row = await cursor.fetchone()
    assert row is not None
    return row


async def run_now(conn: DictConnection, task: TaskDefinition[Any]) -> dict[str, Any]:
    """Tick a periodic task by hand and return its result."""
    job_id = await defer.defer(conn, task, PeriodicArgs())
    await conn.commit()
    job = await job_ended(conn, job_id)
    assert job["status"] == "succeeded", job
    result: dict[str, Any] = job["result"]
    return result


def by_service(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["service"]: check for check in report["checks"]}


async def health_alerts(conn: DictConnection) -> list[dict[str, Any]]:
    await conn.commit()
    cursor = await conn.execute(
        "SELECT kind, severity, message, details, job_id FROM taskhub.alert_events"
        " WHERE kind = ANY(%s) ORDER BY id",
        (list(HEALTH_KINDS),),
    )
    return await cursor.fetchall()


# -- the health check ---------------------------------------------------------------------------


async def test_every_check_is_a_row_and_services_shows_the_latest(
    conn: DictConnection,
    mail: tuple[MailStandin, int],
    provider: str,
    worker: None,
    settings: Settings,
    db_url: str,
) -> None:
    first = await run_now(conn, tasks.health_check)
    second = await run_now(conn, tasks.health_check)
    checks = by_service(second)
    assert {"database", "smtp", "payment_provider", "disk", "load", "memory"} <= checks.keys()
    assert all(check["ok"] for check in checks.values()), checks
    assert checks["smtp"]["latency_ms"] > 0
    assert checks["payment_provider"]["latency_ms"] > 0
    assert first["alerts"] == second["alerts"] == []
    assert await health_alerts(conn) == []
    cursor = await conn.execute(
        "SELECT service, count(*) AS n FROM manufacturing.health_checks GROUP BY service"
    )
    assert {row["n"] for row in await cursor.fetchall()} == {2}

    apps = load_apps(settings, [manufacturing_app])
    async with running_api(create_app(settings, db_url, apps=apps), READ_TOKEN) as api:
        answer = await api.get("/monitoring/services")
        anonymous = await api.get("/monitoring/services", headers={"Authorization": ""})
    assert answer.status_code == 200, answer.text
    assert anonymous.status_code == 401
    services = {row["service"]: row for row in answer.json()}
    assert services.keys() == checks.keys()
    cursor = await conn.execute(
        "SELECT service, max(checked_at) AS at FROM manufacturing.health_checks GROUP BY service"
    )
    latest = {row["service"]: row["at"] for row in await cursor.fetchall()}
    for name, row in services.items():
        assert datetime.datetime.fromisoformat(row["checked_at"]) == latest[name], name
    assert services["smtp"]["details"]["port"] == mail[1]


async def test_a_failing_provider_raises_one_alert_per_outage_and_one_on_recovery(
    conn: DictConnection,
    mail: tuple[MailStandin, int],
    standin: PaymentStandin,
    provider: str,
    worker: None,
) -> None:
    await run_now(conn, tasks.health_check)  # up
    standin.fail(status=503)
    down = await run_now(conn, tasks.health_check)
    check = by_service(down)["payment_provider"]
    assert check["ok"] is False
    assert "503" in check["error"]
    assert down["alerts"] == ["external_service_down:payment_provider"]
    [alert] = await health_alerts(conn)
    assert alert["kind"] == "external_service_down"
    assert alert["severity"] == "error"
    assert alert["details"]["service"] == "payment_provider"
    assert "503" in alert["details"]["error"]

    still_down = await run_now(conn, tasks.health_check)
    assert by_service(still_down)["payment_provider"]["ok"] is False
    assert still_down["alerts"] == []
    assert len(await health_alerts(conn)) == 1

    standin.heal()
    back = await run_now(conn, tasks.health_check)
    assert by_service(back)["payment_provider"]["ok"] is True
    assert back["alerts"] == ["external_service_recovered:payment_provider"]
    alerts = await health_alerts(conn)
    assert [a["kind"] for a in alerts] == ["external_service_down", "external_service_recovered"]
    assert alerts[1]["severity"] == "info"
    cursor = await conn.execute(
        "SELECT min(checked_at) AS at FROM manufacturing.health_checks"
        " WHERE service = 'payment_provider' AND NOT ok"
    )
    row = await cursor.fetchone()
    assert row is not None
    assert datetime.datetime.fromisoformat(alerts[1]["details"]["down_since"]) == row["at"]

    assert (await run_now(conn, tasks.health_check))["alerts"] == []
    assert len(await health_alerts(conn)) == 2


async def test_a_stopped_mail_server_is_down_until_it_listens_again(
    conn: DictConnection, worker: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = MailStandin()
    with serving_smtp(handler) as (host, port):
        monkeypatch.setenv("TASKHUB_MANUFACTURING_SMTP_HOST", host)
        monkeypatch.setenv("TASKHUB_MANUFACTURING_SMTP_PORT", str(port))
        monkeypatch.setenv("TASKHUB_MANUFACTURING_HEALTH_TIMEOUT", "2")
        for name, value in RESOURCES_NEVER_OVER.items():
            monkeypatch.setenv(name, value)
        assert by_service(await run_now(conn, tasks.health_check))["smtp"]["ok"] is True
    stopped = await run_now(conn, tasks.health_check)
    check = by_service(stopped)["smtp"]
    assert check["ok"] is False
    assert f"cannot talk to the mail server at {host}:{port}" in check["error"]
    assert "payment_provider" not in by_service(stopped)  # not configured: not checked
    assert stopped["alerts"] == ["external_service_down:smtp"]
    with serving_smtp(handler, host, port):
        back = await run_now(conn, tasks.health_check)
    assert by_service(back)["smtp"]["ok"] is True
    assert back["alerts"] == ["external_service_recovered:smtp"]


async def test_a_stopped_provider_is_down(
    conn: DictConnection,
    mail: tuple[MailStandin, int],
    standin: PaymentStandin,
    worker: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with serving(standin.app()) as url:
        monkeypatch.setenv("TASKHUB_MANUFACTURING_PAYMENT_BASE_URL", url)
        monkeypatch.setenv("TASKHUB_MANUFACTURING_PAYMENT_TOKEN", "a-wrong-token")
        refused = await run_now(conn, tasks.health_check)
    check = by_service(refused)["payment_provider"]
    assert check["ok"] is False
    assert "refused the credentials" in check["error"]  # the request is authenticated
    stopped = await run_now(conn, tasks.health_check)
    check = by_service(stopped)["payment_provider"]
    assert check["ok"] is False
    assert "cannot reach the payment provider" in check["error"]
    assert stopped["alerts"] == []  # the same outage
    assert [a["kind"] for a in await health_alerts(conn)] == ["external_service_down"]


async def test_a_full_disk_raises_system_resources_once(
    conn: DictConnection,
    mail: tuple[MailStandin, int],
    worker: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TASKHUB_MANUFACTURING_DISK_MAX_PERCENT", "0.0001")
    full = await run_now(conn, tasks.health_check)
    assert by_service(full)["disk"]["ok"] is False
    assert "disk use (%)" in by_service(full)["disk"]["error"]
    assert full["alerts"] == ["system_resources:disk"]
    assert (await run_now(conn, tasks.health_check))["alerts"] == []
    monkeypatch.setenv("TASKHUB_MANUFACTURING_DISK_MAX_PERCENT", "100")
    fine = await run_now(conn, tasks.health_check)
    assert fine["alerts"] == ["system_resources_recovered:disk"]
    alerts = await health_alerts(conn)
    assert [(a["kind"], a["severity"]) for a in alerts] == [
        ("system_resources", "warning"),
        ("system_resources_recovered", "info"),
    ]
    assert alerts[0]["details"]["limit"] == 0.0001


# -- performance metrics ------------------------------------------------------------------------


async def rolled_up(conn: DictConnection) -> None:
    """Run taskhub's rollup until it has caught up (as taskhub.rollup_stats does)."""

    async def caught_up() -> bool:
        async with conn.transaction():
            window = await stats.rollup_window(conn)
        return window is None or window.caught_up

    await eventually(caught_up, within=20)


async def test_performance_metrics_per_queue_and_task_from_the_rollup(
    conn: DictConnection, worker: None, apps_ping: TaskDefinition[Any]
) -> None:
    async with conn.transaction():
        pings = await defer.batch_defer(
            conn, apps_ping, [{}, {}, {"sleep": 0.05}], queue="email.normal"
        )
        waiting = await defer.batch_defer(conn, apps_ping, [{}] * 3, queue="email.bulk")
        payment = await service.create_payment(
            conn,
            service.PaymentRequest(
                order_id=1, user_id=1, amount_cents=100, currency="USD", payment_method_id="pm"
            ),
        )
    for job_id in pings:
        assert (await job_ended(conn, job_id))["status"] == "succeeded"
    # no provider configured: the payment fails for good at once
    assert (await job_ended(conn, payment.job_id))["status"] == "failed"
    await rolled_up(conn)

    run = await run_now(conn, tasks.collect_performance_metrics)
    rows = {(row["queue"], row["task"]): row for row in run["rows"]}
    ping = rows[("email.normal", "taskhub.ping")]
    assert (ping["succeeded"], ping["failed"]) == (3, 0)
    assert ping["throughput_per_minute"] == 0.6
    assert ping["p95_seconds"] is not None
    assert ping["p95_seconds"] > 0
    charge = rows[("payment.critical", "manufacturing.process_payment")]
    assert (charge["succeeded"], charge["failed"]) == (0, 1)
    bulk = rows[("email.bulk", None)]
    assert (bulk["waiting"], bulk["running"]) == (len(waiting), 0)
    assert ("email.bulk", "taskhub.ping") not in rows  # nothing ran there
    assert rows[("email.normal", None)]["succeeded"] == 3
    assert run["written"] == len(run["rows"])

    cursor = await conn.execute(
        "SELECT queue_name, task_name, succeeded, failed, waiting, window_end - window_start AS w"
        " FROM manufacturing.performance_metrics ORDER BY id"
    )
    stored = await cursor.fetchall()
    assert len(stored) == len(run["rows"])
    assert {row["w"].total_seconds() for row in stored} == {300}
    again = await run_now(conn, tasks.collect_performance_metrics)
    if again["window_end"] == run["window_end"]:  # the same rolled-up minute: nothing new
        assert again["written"] == 0


@pytest.fixture
def apps_ping(settings: Settings) -> TaskDefinition[Any]:
    return load_apps(settings, []).task("taskhub.ping")
