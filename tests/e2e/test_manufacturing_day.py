"""A day of the manufacturing platform (seed 001) on taskhub, end to end.

Real processes: the API and the seed's four worker pools (``taskhub worker --app ...
--queues <tier> --concurrency N``) plus one for taskhub's own maintenance queue, against the
example's stand-ins served by the test (a mail server, a payment provider). The business
traffic goes through the API: payments (the critical pool is SIGKILLed while the provider
holds its answers, after charging), a bulk campaign under the mail server's rate limit,
single and urgent emails. Then a whole day of the seed's schedules runs tick by tick: every
periodic task of the app is deferred for each of its ticks of one day, in time order, with
the tick's timestamp, as the workers' own deferrer would (its cron ticks are switched off).

Checked: every email delivered or recorded as refused or bounced, every payment charged
exactly once at the provider and invoiced, the reconciliations clean, the monitoring
endpoints' figures, and the seed's alerts through taskhub's alerting.
"""

from __future__ import annotations

import datetime
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from backend.declare.registry import PeriodicArgs, TaskDefinition
from backend.declare.schedules import ticks
from backend.defer import batch_defer_sync
from backend.examples.erp.standin import ErpStandin
from backend.examples.manufacturing import app as manufacturing_app
from backend.examples.manufacturing.email.standin import MailStandin, serving_smtp
from backend.examples.manufacturing.payments.standin import PaymentStandin
from backend.examples.manufacturing.queues import POOLS, QUEUES
from backend.examples.serving import serving
from backend.process import migrate
from tests.e2e.conftest import TaskhubProcess, clean_env, free_port

pytestmark = pytest.mark.e2e

APP = "backend.examples.manufacturing"
TOKEN = "day-operator-token-0123456789"
PROVIDER_TOKEN = "pay-day-token-0123456789"
ERP_TOKEN = "erp-day-token-0123456789"
ERP_ASSETS, ERP_LOCATIONS = 120, 12
REFUSED = "refused@example.com"
BOUNCED = "bounced@example.com"
PAYMENTS = 8

PERIODIC: list[TaskDefinition[Any]] = [
    task
    for blueprint in manufacturing_app.blueprints
    for task in blueprint.tasks.values()
    if task.cron
]


def environment(
    db_url: str, smtp: tuple[str, int], provider: str, maildir: Path, erp: str
) -> dict[str, str]:
    """The processes' settings: the stand-ins, the seed's critical queues, quick rescue of a
    killed worker's jobs, taskhub's own schedules every second, the app's own off (the test
    replays their ticks)."""
    schedules = [f"{task.name}=off" for task in PERIODIC]
    schedules += [
        "taskhub.rescue_stalled_jobs=* * * * * *",
        "taskhub.evaluate_alerts=* * * * * *",
        "taskhub.rollup_stats=* * * * * *",
    ]
    return clean_env(
        DATABASE_URL=db_url,
        TASKHUB_APPS=APP,  # every process, as the seed's compose file has it
        TASKHUB_TOKENS=f"day=operate:{TOKEN}",
        TASKHUB_CRITICAL_QUEUES=",".join(POOLS["critical"][0]),
        TASKHUB_SCHEDULES=";".join(schedules),
        TASKHUB_HEARTBEAT_INTERVAL="0.5",
        TASKHUB_RESCUE_AFTER="2",
        TASKHUB_FETCH_POLLING_INTERVAL="0.2",
        TASKHUB_SHUTDOWN_GRACE_PERIOD="5",
        TASKHUB_MANUFACTURING_SMTP_HOST=smtp[0],
        TASKHUB_MANUFACTURING_SMTP_PORT=str(smtp[1]),
        TASKHUB_MANUFACTURING_BOUNCE_MAILDIR=str(maildir),
        TASKHUB_MANUFACTURING_PAYMENT_BASE_URL=provider,
        TASKHUB_MANUFACTURING_PAYMENT_TOKEN=PROVIDER_TOKEN,
        TASKHUB_MANUFACTURING_PAYMENT_TIMEOUT="60",  # held answers must not time out first
        TASKHUB_MANUFACTURING_ERP_BASE_URL=erp,
        TASKHUB_MANUFACTURING_ERP_TOKEN=ERP_TOKEN,
    )


def pool_args(tier: str) -> list[str]:
    queues, concurrency = POOLS[tier]
    return [
        "worker",
        "--queues",
        ",".join(queues),
        "--concurrency",
        str(concurrency),
        "--processes",
        "1",
    ]


def day_of_ticks(day: datetime.date) -> list[tuple[int, list[TaskDefinition[Any]]]]:
    """Each tick of the UTC ``day`` (Unix seconds) and the periodic tasks due then, in time
    order."""
    due: dict[int, list[TaskDefinition[Any]]] = defaultdict(list)
    start = datetime.datetime.combine(day, datetime.time(), datetime.UTC).timestamp() - 1
    for task in PERIODIC:
        assert task.cron is not None
        for tick in ticks(task.cron, datetime.UTC, start, start + 86_400):
            due[tick].append(task)
    return sorted(due.items())


def query(db_url: str, sql: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()


def wait_for(check: Any, what: str, timeout: float = 60, state: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s: {state and state()}"
        time.sleep(0.05)


def run_ticks(
    db_url: str, ticks_due: list[tuple[int, list[TaskDefinition[Any]]]]
) -> dict[str, int]:
    """Defer each tick's periodic jobs in one transaction, wait for all of them to finish,
    then the next tick: a job of the same task never overlaps its last (their queueing
    locks), as on the real clock. Returns the jobs run per task."""
    ran: dict[str, int] = defaultdict(int)
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        for tick, tasks in ticks_due:
            job_ids = []
            for task in tasks:
                job_ids += batch_defer_sync(conn, task, [PeriodicArgs(timestamp=tick)])
                ran[task.name] += 1
            conn.commit()
            deadline = time.monotonic() + 60
            while True:
                row = conn.execute(
                    "SELECT count(*) FILTER (WHERE status IN ('todo', 'doing')) AS active,"
                    " array_agg(task_name || ': ' || coalesce((SELECT message"
                    "   FROM taskhub.job_errors error WHERE error.job_id = job.id"
                    "  ORDER BY error.id DESC LIMIT 1), status::text))"
                    " FILTER (WHERE status NOT IN ('todo', 'doing', 'succeeded')) AS unsuccessful"
                    " FROM procrastinate_jobs job WHERE id = ANY(%s)",
                    (job_ids,),
                ).fetchone()
                conn.commit()
                assert row is not None
                assert not row["unsuccessful"], (tick, row, [task.name for task in tasks])
                if row["active"] == 0:
                    break
                assert time.monotonic() < deadline, (tick, [task.name for task in tasks])
                time.sleep(0.01)
    return dict(ran)


@pytest.fixture
def mail(tmp_path: Path) -> Iterator[tuple[MailStandin, tuple[str, int], Path]]:
    maildir = tmp_path / "bounces"
    standin = MailStandin(bounce_maildir=maildir)
    standin.refuse(REFUSED)
    standin.bounce(BOUNCED)
    with serving_smtp(standin) as address:
        yield standin, address, maildir


@pytest.fixture
def erp() -> Iterator[tuple[ErpStandin, str]]:
    standin = ErpStandin(token=ERP_TOKEN)
    standin.seed(assets=ERP_ASSETS, locations=ERP_LOCATIONS)
    with serving(standin.app()) as url:
        yield standin, url


@pytest.fixture
def provider() -> Iterator[tuple[PaymentStandin, str]]:
    standin = PaymentStandin(token=PROVIDER_TOKEN)
    with serving(standin.app()) as url:
        try:
            yield standin, url
        finally:
            standin.release()


def test_a_day_of_the_manufacturing_platform(
    spawn: type[TaskhubProcess],
    tmp_path: Path,
    db_url: str,
    mail: tuple[MailStandin, tuple[str, int], Path],
    provider: tuple[PaymentStandin, str],
    erp: tuple[ErpStandin, str],
) -> None:
    mailer, smtp, maildir = mail
    payments_at, provider_url = provider
    migrate.upgrade(db_url, apps=[manufacturing_app])
    env = environment(db_url, smtp, provider_url, maildir, erp[1])
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    api = spawn(["api", "--port", str(port)], tmp_path, env)
    api.wait_for_line("Stop with Ctrl-C.")
    pools = {tier: spawn(pool_args(tier), tmp_path, env) for tier in POOLS}
    maintenance = spawn(
        ["worker", "--queues", "maintenance", "--concurrency", "4", "--processes", "1"],
        tmp_path,
        env,
    )
    client = httpx.Client(base_url=base, headers=headers, timeout=30)

    # -- Payments: the critical pool dies after the provider charged, before any commit. ----
    payments_at.hold()
    queued_payments = []
    for n in range(PAYMENTS):
        answer = client.post(
            "/manufacturing/payments",
            json={
                "order_id": 1000 + n,
                "user_id": 7,
                "amount_cents": 1000 * (n + 1),
                "payment_method_id": "pm_card_visa",
            },
        )
        assert answer.status_code == 202, answer.text
        queued_payments.append(answer.json())
    in_flight = POOLS["critical"][1]
    wait_for(lambda: len(payments_at.list_charges()) == in_flight, "charges held")
    pools["critical"].kill()
    payments_at.release()
    pools["critical"] = spawn(pool_args("critical"), tmp_path, env)

    # -- Orders: matched to line capacity, each status change an email to the customer. -----
    for line in (
        {"name": "Line 1", "product": "gear", "daily_capacity": 10},
        {"name": "Line 2", "product": "bolt", "daily_capacity": 5},
    ):
        answer = client.post("/manufacturing/production-lines", json=line)
        assert answer.status_code == 201, answer.text
    due = (datetime.datetime.now(datetime.UTC).date() + datetime.timedelta(days=3)).isoformat()
    orders = []
    for n, (product, quantity) in enumerate([("gear", 4), ("gear", 4), ("gear", 4), ("bolt", 20)]):
        answer = client.post(
            "/manufacturing/orders",
            json={
                "customer_name": f"Customer {n}",
                "customer_email": f"customer{n}@example.com",
                "product": product,
                "quantity": quantity,
                "due_date": due,
            },
        )
        assert answer.status_code == 202, answer.text
        orders.append(answer.json()["order_id"])

    # -- Email: a campaign under the rate limit, an urgent alert, a welcome. ------------------
    recipients = [f"buyer{n:02d}@example.com" for n in range(24)] + [REFUSED, BOUNCED]
    campaign = client.post(
        "/manufacturing/campaigns",
        json={
            "template": "newsletter",
            "common_context": {"month": "December"},
            "recipients": [{"to_email": address} for address in recipients],
        },
    )
    assert campaign.status_code == 202, campaign.text
    campaign_id = campaign.json()["campaign_id"]
    for body in (
        {
            "to_email": "ops@example.com",
            "template": "system_alert",
            "context": {"alert_type": "critical_error"},
            "urgent": True,
        },
        {"to_email": "new@example.com", "template": "welcome", "context": {"user_name": "New"}},
    ):
        answer = client.post("/manufacturing/emails", json=body)
        assert answer.status_code == 202, answer.text

    def payments_settled() -> bool:
        rows = query(
            db_url,
            "SELECT count(*) FILTER (WHERE invoice.id IS NOT NULL) AS invoiced"
            "  FROM manufacturing.payments payment"
            "  LEFT JOIN manufacturing.invoices invoice ON invoice.payment_id = payment.id",
        )
        return bool(rows[0]["invoiced"] == PAYMENTS)

    wait_for(
        payments_settled,
        "every payment invoiced",
        timeout=90,
        state=lambda: (
            query(db_url, "SELECT id, status, attempts, job_id FROM manufacturing.payments"),
            query(
                db_url,
                "SELECT id, task_name, status, attempts, worker_id FROM procrastinate_jobs"
                " WHERE queue_name LIKE 'payment.%%'",
            ),
            query(db_url, "SELECT * FROM procrastinate_workers"),
            pools["critical"].output[-3000:],
        ),
    )

    def campaign_settled() -> bool:
        rows = query(
            db_url,
            "SELECT count(*) FILTER (WHERE status = 'queued') AS queued, count(*) AS n"
            "  FROM manufacturing.emails WHERE campaign_id = %s",
            campaign_id,
        )
        return bool(rows[0]["n"] == len(recipients) and rows[0]["queued"] == 0)

    wait_for(campaign_settled, "every campaign email sent or recorded", timeout=90)

    def orders_matched() -> bool:
        found = client.get("/manufacturing/orders").json()
        return all(order["status"] in ("matched", "unmatched") for order in found)

    wait_for(orders_matched, "every order matched or not", timeout=60)
    shipped = client.post(f"/manufacturing/orders/{orders[0]}/status", json={"status": "shipped"})
    assert shipped.status_code == 200, shipped.text

    # -- A day of the seed's schedules. ----------------------------------------------------
    # The day after the traffic: its 00:30 report is today's.
    today = datetime.datetime.now(datetime.UTC).date()
    ran = run_ticks(db_url, day_of_ticks(today + datetime.timedelta(days=1)))
    assert ran["manufacturing.retry_failed_emails"] == 288  # every 5 minutes
    assert ran["manufacturing.retry_failed_payments"] == 48  # every 30 minutes
    assert ran["manufacturing.reconcile_payments"] == 24  # hourly
    assert ran["manufacturing.process_email_bounces"] == 4  # every 6 hours

    # -- Checks. ---------------------------------------------------------------------------
    # Every payment charged exactly once at the provider, paid and invoiced.
    charges = payments_at.list_charges()
    assert len(charges) == PAYMENTS
    keys = {charge.idempotency_key for charge in charges}
    assert keys == {f"payment-{item['payment_id']}" for item in queued_payments}
    assert all(payments_at.charges_for(key) == 1 for key in keys)
    paid = query(
        db_url,
        "SELECT payment.id, payment.status, payment.charge_id, payment.amount_cents"
        "  FROM manufacturing.payments payment ORDER BY id",
    )
    by_charge = {charge.id: charge for charge in charges}
    assert {row["status"] for row in paid} == {"paid"}
    assert all(by_charge[row["charge_id"]].amount_cents == row["amount_cents"] for row in paid)
    rescued = query(
        db_url,
        "SELECT count(*) AS n FROM taskhub.job_errors error"
        "  JOIN procrastinate_jobs job ON job.id = error.job_id"
        " WHERE job.task_name = 'manufacturing.process_payment' AND error.type = 'WorkerLost'",
    )
    assert rescued[0]["n"] == in_flight, "the killed pool's jobs were rescued"

    # Reconciliation: every hourly run of the day clean, no payment_mismatch alert.
    reconciliations = query(
        db_url,
        "SELECT provider_charges, mismatches FROM manufacturing.payment_reconciliations",
    )
    assert len(reconciliations) == 24
    assert all(row["mismatches"] == [] for row in reconciliations)
    assert {row["provider_charges"] for row in reconciliations} == {PAYMENTS}

    # Orders: two gear orders fill today's 10 minus 2, the one matched last goes to tomorrow
    # (the critical pool matches them concurrently, in any order); 20
    # bolts never fit a line of 5 a day (the 15-minute sweep tried all day); the shipped one
    # stays shipped. Each change was an email, and so was one reminder per order due within
    # three days (the 6-hourly reminders send one a day at most).
    by_id = {order["id"]: order for order in client.get("/manufacturing/orders").json()}
    assert [by_id[order_id]["status"] for order_id in orders] == [
        "shipped",
        "matched",
        "matched",
        "unmatched",
    ]
    days = sorted(by_id[order_id]["production_date"] for order_id in orders[:3])
    assert days[0] == days[1] < days[2]
    order_mail = query(
        db_url,
        "SELECT to_email, count(*) AS n FROM manufacturing.emails"
        " WHERE template = 'order_status' GROUP BY to_email ORDER BY to_email",
    )
    assert {row["to_email"]: row["n"] for row in order_mail} == {
        "customer0@example.com": 2,  # matched, shipped
        "customer1@example.com": 2,  # matched, reminded
        "customer2@example.com": 2,
        "customer3@example.com": 1,  # unmatched, once however often the sweep retried
    }

    # Sync: the ERP's sites and equipment, once each however often the hourly sync ran.
    synced = query(
        db_url,
        "SELECT (SELECT count(*) FROM manufacturing.sites) AS sites,"
        " (SELECT count(*) FROM manufacturing.equipment) AS equipment",
    )
    assert synced == [{"sites": ERP_LOCATIONS, "equipment": ERP_ASSETS}]

    # Every email delivered, or recorded as refused or bounced; the bounce marked.
    emails = query(
        db_url,
        "SELECT to_email, status FROM manufacturing.emails ORDER BY id",
    )
    statuses = {row["to_email"]: row["status"] for row in emails}
    assert statuses.pop(REFUSED) == "refused"
    assert statuses.pop(BOUNCED) == "bounced"
    assert set(statuses.values()) == {"sent"}
    assert {message.rcpt_to for message in mailer.messages} >= set(statuses)

    # The campaign stayed under the mail server's 10/s, across all workers.
    starts = [
        row["started_at"]
        for row in query(
            db_url,
            "SELECT attempt.started_at FROM manufacturing.email_attempts attempt"
            "  JOIN manufacturing.emails email ON email.id = attempt.email_id"
            " WHERE email.campaign_id = %s AND attempt.status <> 'bounced'"
            " ORDER BY attempt.started_at",
            campaign_id,
        )
    ]
    slack = datetime.timedelta(milliseconds=250)
    for earlier, later in zip(starts, starts[10:], strict=False):
        assert later - earlier >= datetime.timedelta(seconds=1) - slack

    # The monitoring API, in the seed's shape.
    queues = client.get("/monitoring/queues").json()
    assert [queue["name"] for queue in queues][: len(QUEUES)] == sorted(
        QUEUES, key=lambda name: (-QUEUES[name], name)
    )
    assert all(queue["waiting"] == 0 for queue in queues)
    health = client.get("/monitoring/health").json()
    assert health["workers_alive"] >= len(POOLS) + 1
    failed = client.get("/monitoring/tasks/failed").json()
    assert failed["items"] == []

    # Analytics: the day's KPIs and the report the team downloads.
    [kpis] = [row for row in client.get("/manufacturing/kpis").json() if row["day"] == str(today)]
    assert kpis["payments_paid"] == PAYMENTS
    assert kpis["revenue_cents"] == {"USD": sum(1000 * (n + 1) for n in range(PAYMENTS))}
    assert kpis["orders_created"] == 4
    assert kpis["orders_shipped"] == 1
    assert kpis["emails_bounced"] == 1
    report = client.get(f"/manufacturing/reports/{today}.csv")
    assert report.status_code == 200
    assert "attachment" in report.headers["content-disposition"]
    assert f"payments_paid,{PAYMENTS}" in report.text.splitlines()

    # Health checks every 2 minutes, all green: no outage alert all day.
    checks = query(
        db_url,
        "SELECT service, count(*) AS n, bool_and(ok) AS ok FROM manufacturing.health_checks"
        " WHERE service IN ('database', 'smtp', 'payment_provider') GROUP BY service",
    )
    assert {row["service"]: (row["n"], row["ok"]) for row in checks} == dict.fromkeys(
        ("database", "smtp", "payment_provider"), (ran["manufacturing.health_check"], True)
    )
    assert ran["manufacturing.health_check"] == 720

    # The seed's alerts: the killed pool was a worker failure; no critical task failed, no
    # payment mismatched, no queue backed up.
    alerts = client.get("/alerts", params={"limit": 500}).json()
    kinds = [event["kind"] for event in alerts["recent"]]
    assert kinds.count("dead_worker") == 1, alerts
    assert not {"critical_failure", "payment_mismatch", "backlog"} & set(kinds), alerts

    # The payment provider goes down: the next health check raises one outage alert through
    # taskhub's alerting, the one after its recovery one more.
    payments_at.fail(status=503)
    now = int(time.time())
    [health_check] = [task for task in PERIODIC if task.name == "manufacturing.health_check"]
    run_ticks(db_url, [(now, [health_check]), (now + 1, [health_check])])
    payments_at.heal()
    run_ticks(db_url, [(now + 2, [health_check])])
    recent = client.get("/alerts").json()["recent"]
    outage = [event for event in recent if event["kind"].startswith("external_service")]
    assert [(event["kind"], event["details"]["service"]) for event in outage] == [
        ("external_service_recovered", "payment_provider"),
        ("external_service_down", "payment_provider"),
    ]

    client.close()
    for process in [*pools.values(), maintenance, api]:
        assert process.stop() == 0, process.output
