"""The manufacturing example's analytics family on a real database and a real worker: figures
checked against rows the tests insert, the rollup and pruning, the customer segments, the
daily KPIs with their CSV report, and the report's download over HTTP.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import AsyncIterator
from typing import Any

import pytest

from backend import defer
from backend.api import create_app
from backend.db import DictConnection
from backend.declare.apps import load_apps
from backend.declare.registry import PeriodicArgs, TaskDefinition
from backend.examples.manufacturing import app as manufacturing_app
from backend.examples.manufacturing.analytics import tasks
from backend.process import migrate
from backend.settings import Settings, load_settings
from tests.conftest import BLUEPRINTS, READ_TOKEN, TOKENS, eventually
from tests.integration.conftest import running_api, running_worker

UTC = datetime.UTC
ANALYTICS_QUEUES = ["analytics.realtime", "analytics.batch"]
WORKER_BLUEPRINTS = (*BLUEPRINTS, tasks.blueprint)
DAY = datetime.date(2026, 3, 14)


@pytest.fixture(autouse=True)
def manufacturing_schema(db_url: str) -> None:
    migrate.upgrade(db_url, apps=[manufacturing_app])


@pytest.fixture
def worker_settings(settings: Settings) -> Settings:
    """Fast polling; the family's schedules off (the tests defer by hand)."""
    return load_settings(
        database_url=settings.database_url,
        data_dir=settings.data_dir,
        tokens=TOKENS,
        fetch_polling_interval=0.1,
        schedules=";".join(
            f"{task.name}=off"
            for task in (
                tasks.update_realtime_metrics,
                tasks.update_dashboard_metrics,
                tasks.analyze_user_behavior,
                tasks.generate_daily_report,
            )
        ),
    )


@contextlib.asynccontextmanager
async def analytics_worker(settings: Settings, db_url: str) -> AsyncIterator[None]:
    async with running_worker(
        settings, db_url, queues=ANALYTICS_QUEUES, concurrency=2, blueprints=WORKER_BLUEPRINTS
    ):
        yield


async def fetch(conn: DictConnection, query: str, *params: Any) -> list[dict[str, Any]]:
    await conn.commit()
    cursor = await conn.execute(query, params)
    rows = await cursor.fetchall()
    await conn.commit()
    return rows


async def run(conn: DictConnection, task: TaskDefinition[Any], args: Any) -> dict[str, Any]:
    """Defer ``task``, wait for a worker to finish it; its result."""
    job_id = await defer.defer(conn, task, args)
    await conn.commit()

    async def ended() -> bool:
        [job] = await fetch(
            conn, "SELECT status::text AS status FROM procrastinate_jobs WHERE id = %s", job_id
        )
        return job["status"] in {"succeeded", "failed"}

    await eventually(ended, within=20)
    [job] = await fetch(
        conn,
        "SELECT job.status::text AS status, stored.result FROM procrastinate_jobs job"
        " LEFT JOIN taskhub.job_results stored ON stored.job_id = job.id WHERE job.id = %s",
        job_id,
    )
    assert job["status"] == "succeeded", job
    result: dict[str, Any] = job["result"]
    return result


async def order(
    conn: DictConnection,
    status: str,
    *,
    email: str = "ada@example.com",
    created: str = "now()",
    updated: str = "now()",
) -> int:
    line = None
    if status in ("matched", "in_production"):
        cursor = await conn.execute(
            "INSERT INTO manufacturing.production_lines (name, product, daily_capacity)"
            " VALUES ('line ' || gen_random_uuid(), 'widget', 10) RETURNING id"
        )
        row = await cursor.fetchone()
        assert row is not None
        line = row["id"]
    cursor = await conn.execute(
        "INSERT INTO manufacturing.orders (customer_name, customer_email, product, quantity,"
        " due_date, status, line_id, production_date, created_at, updated_at)"
        " VALUES ('A customer', %s, 'widget', 1, current_date, %s, %s,"
        " CASE WHEN %s::bigint IS NULL THEN NULL ELSE current_date END,"
        f" {created}, {updated}) RETURNING id",
        (email, status, line, line),
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row["id"])


async def payment(
    conn: DictConnection,
    status: str,
    *,
    order_id: int = 1,
    updated: str = "now()",
    amount: int = 500,
    currency: str = "USD",
) -> None:
    paid = status == "paid"
    await conn.execute(
        "INSERT INTO manufacturing.payments (order_id, user_id, amount_cents, currency,"
        " payment_method_id, status, charge_id, paid_at, updated_at)"
        " VALUES (%s, 1, %s, %s, 'pm_1', %s, CASE WHEN %s THEN 'ch_' || gen_random_uuid() END,"
        f" CASE WHEN %s THEN {updated} END, {updated})",
        (order_id, amount, currency, status, paid, paid),
    )


async def email(
    conn: DictConnection, status: str, *, to: str = "x@example.com", updated: str = "now()"
) -> int:
    cursor = await conn.execute(
        "INSERT INTO manufacturing.emails (kind, to_email, template, status, updated_at)"
        f" VALUES ('normal', %s, 'welcome', %s, {updated}) RETURNING id",
        (to, status),
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row["id"])


async def attempt(conn: DictConnection, status: str, finished: str) -> None:
    email_id = await email(conn, "sent")
    await conn.execute(
        "INSERT INTO manufacturing.email_attempts (email_id, attempt, status, started_at,"
        f" finished_at) VALUES (%s, 1, %s, {finished}, {finished})",
        (email_id, status),
    )


# -- realtime snapshots ------------------------------------------------------------------------


async def test_a_snapshot_counts_open_orders_and_the_last_hours_activity(
    conn: DictConnection, worker_settings: Settings, db_url: str
) -> None:
    hours_ago = "now() - interval '2 hours'"
    for status in ("pending", "pending", "unmatched", "matched", "in_production"):
        await order(conn, status, updated=hours_ago)
    await order(conn, "shipped")
    await order(conn, "shipped", updated=hours_ago)  # not in the last hour
    await order(conn, "cancelled")
    for status in ("pending", "paid", "paid", "declined", "failed"):
        await payment(conn, status)
    await payment(conn, "failed", updated=hours_ago)
    for status in ("queued", "sent", "sent", "bounced", "refused"):
        await email(conn, status)
    await email(conn, "sent", updated=hours_ago)
    await conn.commit()

    async with analytics_worker(worker_settings, db_url):
        result = await run(conn, tasks.update_realtime_metrics, PeriodicArgs())

    figures = {key: value for key, value in result.items() if key not in ("id", "taken_at")}
    assert figures == {
        "orders_pending": 2,
        "orders_matched": 1,
        "orders_unmatched": 1,
        "orders_in_production": 1,
        "orders_shipped_last_hour": 1,
        "orders_cancelled_last_hour": 1,
        "payments_pending_last_hour": 1,
        "payments_paid_last_hour": 2,
        "payments_failed_last_hour": 2,
        "emails_queued_last_hour": 1,
        "emails_sent_last_hour": 2,
        "emails_failed_last_hour": 2,
    }
    [stored] = await fetch(conn, "SELECT * FROM manufacturing.metric_snapshots")
    assert stored["id"] == result["id"]
    assert stored["orders_pending"] == 2


@pytest.mark.parametrize(
    ("query", "indexes"),
    [
        (
            "analytics_take_snapshot",
            {"orders_status_updated_idx", "payments_updated_idx", "emails_updated_idx"},
        ),
        (
            "analytics_day_kpis",
            {
                "orders_created_idx",
                "orders_status_updated_idx",
                "payments_paid_at_idx",
                "payments_updated_idx",
                "email_attempts_finished_idx",
            },
        ),
        (
            "analytics_customer_activity",
            {
                "orders_created_idx",
                "orders_status_updated_idx",
                "payments_updated_idx",
                "emails_to_email_idx",
            },
        ),
    ],
)
async def test_the_figures_are_read_through_indexes_not_whole_tables(
    conn: DictConnection, query: str, indexes: set[str]
) -> None:
    """With sequential scans priced out, a query that still needs one has no index to use."""
    await conn.execute("SET enable_seqscan = off")
    cursor = await conn.execute(
        f"EXPLAIN {tasks.QUERIES[query]}",
        {"day": DAY, "ended": datetime.datetime.now(UTC)},
    )
    plan = "\n".join(row["QUERY PLAN"] for row in await cursor.fetchall())
    for table in ("orders", "payments", "emails", "email_attempts"):
        assert f"Seq Scan on {table} " not in plan, plan
    for index in indexes:
        assert f" {index}" in plan, plan


# -- the dashboard rollup ----------------------------------------------------------------------


async def snapshot(
    conn: DictConnection, at: datetime.datetime, open_orders: int, sent: int
) -> None:
    await conn.execute(
        "INSERT INTO manufacturing.metric_snapshots (taken_at, orders_pending, orders_matched,"
        " orders_unmatched, orders_in_production, orders_shipped_last_hour,"
        " orders_cancelled_last_hour, payments_pending_last_hour, payments_paid_last_hour,"
        " payments_failed_last_hour, emails_queued_last_hour, emails_sent_last_hour,"
        " emails_failed_last_hour) VALUES (%s, %s, 0, 0, 0, 0, 0, 0, 0, 0, 0, %s, 0)",
        (at, open_orders, sent),
    )


async def test_the_dashboard_rolls_snapshots_into_5_minute_buckets_and_prunes_old_ones(
    conn: DictConnection, worker_settings: Settings, db_url: str
) -> None:
    now = datetime.datetime.now(UTC)
    a = (now - datetime.timedelta(hours=1)).replace(second=0, microsecond=0)
    a -= datetime.timedelta(minutes=a.minute % 5)
    b = a + datetime.timedelta(minutes=5)
    old = a - datetime.timedelta(days=2)
    await snapshot(conn, old, open_orders=9, sent=9)
    await snapshot(conn, a, open_orders=4, sent=1)
    await snapshot(conn, a + datetime.timedelta(minutes=2), open_orders=7, sent=3)
    await snapshot(conn, a + datetime.timedelta(minutes=4), open_orders=1, sent=5)
    await snapshot(conn, b + datetime.timedelta(minutes=1), open_orders=2, sent=8)
    # A bucket past the retention (30 days by default) goes; one just inside it stays.
    for days in (31, 29):
        await conn.execute(
            "INSERT INTO manufacturing.dashboard_metrics VALUES (%s, 1, 0, 0, 0, 0, 0, 0, 0)",
            (a - datetime.timedelta(days=days),),
        )
    await conn.commit()

    async with analytics_worker(worker_settings, db_url):
        first = await run(conn, tasks.update_dashboard_metrics, PeriodicArgs())
        rows_first = await fetch(
            conn, "SELECT * FROM manufacturing.dashboard_metrics ORDER BY bucket_start"
        )
        rerun = await run(conn, tasks.update_dashboard_metrics, PeriodicArgs())
        rows_rerun = await fetch(
            conn, "SELECT * FROM manufacturing.dashboard_metrics ORDER BY bucket_start"
        )
        await snapshot(conn, b + datetime.timedelta(minutes=3), open_orders=6, sent=2)
        await conn.commit()
        grown = await run(conn, tasks.update_dashboard_metrics, PeriodicArgs())
        [bucket_b] = await fetch(
            conn, "SELECT * FROM manufacturing.dashboard_metrics WHERE bucket_start = %s", b
        )

    assert [datetime.datetime.fromisoformat(bucket) for bucket in first["buckets"]] == [
        old,
        a,
        b,
    ]
    assert first["pruned_snapshots"] == 1
    assert first["pruned_buckets"] == 1
    [kept_29_days, rolled_old, rolled_a, rolled_b] = rows_first
    assert kept_29_days["bucket_start"] == a - datetime.timedelta(days=29)
    assert (rolled_old["snapshots"], rolled_old["emails_sent_last_hour"]) == (1, 9)
    assert rolled_a["snapshots"] == 3
    assert float(rolled_a["open_orders_avg"]) == 4.0
    assert rolled_a["open_orders_max"] == 7
    assert rolled_a["emails_sent_last_hour"] == 5  # the bucket's latest snapshot's figure
    assert (rolled_b["snapshots"], rolled_b["emails_sent_last_hour"]) == (1, 8)
    # A rerun recomputes only the latest bucket, and writes the same figures.
    assert [datetime.datetime.fromisoformat(bucket) for bucket in rerun["buckets"]] == [b]
    assert rerun["pruned_snapshots"] == 0
    strip = ("updated_at",)
    assert [{k: v for k, v in row.items() if k not in strip} for row in rows_rerun] == [
        {k: v for k, v in row.items() if k not in strip} for row in rows_first
    ]
    assert [datetime.datetime.fromisoformat(bucket) for bucket in grown["buckets"]] == [b]
    assert (bucket_b["snapshots"], bucket_b["open_orders_max"]) == (2, 6)
    assert bucket_b["emails_sent_last_hour"] == 2
    remaining = await fetch(conn, "SELECT count(*) AS n FROM manufacturing.metric_snapshots")
    assert remaining[0]["n"] == 5


# -- customer behaviour ------------------------------------------------------------------------


async def test_customer_activity_counts_each_window_and_segments_customers(
    conn: DictConnection, worker_settings: Settings, db_url: str
) -> None:
    days_ago = "now() - interval '3 days'"
    ada_1 = await order(conn, "pending", email="Ada@Example.com")
    await order(conn, "pending", email="ada@example.com", created="now() - interval '1 hour'")
    await payment(conn, "paid", order_id=ada_1)
    bob = await order(conn, "matched", email="bob@example.com", created=days_ago)
    await payment(conn, "declined", order_id=bob)
    await payment(conn, "failed", order_id=bob)
    await order(conn, "pending", email="cy@example.com", created=days_ago)
    await email(conn, "bounced", to="CY@example.com")
    await email(conn, "bounced", to="stranger@example.com")  # no order: not a customer row
    await order(conn, "shipped", email="dee@example.com", created="now() - interval '10 days'")
    await order(
        conn,
        "cancelled",
        email="eve@example.com",
        created="now() - interval '10 days'",
        updated=days_ago,
    )
    await conn.execute(
        "INSERT INTO manufacturing.customer_activity VALUES"
        " ('gone@example.com', 1, 1, 0, 0, 0, 0, now(), 'active', now() - interval '6 hours')"
    )
    await conn.commit()

    async with analytics_worker(worker_settings, db_url):
        result = await run(conn, tasks.analyze_user_behavior, PeriodicArgs())
        again = await run(conn, tasks.analyze_user_behavior, PeriodicArgs())

    rows = {
        row["customer_email"]: row
        for row in await fetch(conn, "SELECT * FROM manufacturing.customer_activity")
    }
    assert set(rows) == {"ada@example.com", "bob@example.com", "cy@example.com", "eve@example.com"}
    figures = ("orders_6h", "orders_7d", "orders_cancelled_7d", "payments_paid_7d")
    assert [rows["ada@example.com"][name] for name in figures] == [2, 2, 0, 1]
    assert rows["ada@example.com"]["segment"] == "active"
    assert (rows["bob@example.com"]["orders_6h"], rows["bob@example.com"]["orders_7d"]) == (0, 1)
    assert rows["bob@example.com"]["payments_failed_7d"] == 2
    assert rows["bob@example.com"]["segment"] == "at_risk"
    assert rows["cy@example.com"]["emails_bounced_7d"] == 1
    assert rows["cy@example.com"]["segment"] == "at_risk"
    assert (rows["eve@example.com"]["orders_7d"], rows["eve@example.com"]["segment"]) == (
        0,
        "quiet",
    )
    assert rows["eve@example.com"]["orders_cancelled_7d"] == 1
    assert {key: result[key] for key in ("customers", "at_risk", "active", "quiet", "removed")} == {
        "customers": 4,
        "at_risk": 2,
        "active": 1,
        "quiet": 1,
        "removed": 1,
    }
    assert (again["customers"], again["removed"]) == (4, 0)


# -- the daily report --------------------------------------------------------------------------


def on_day(day: datetime.date, hour: int) -> str:
    return f"timestamptz '{day.isoformat()} {hour:02d}:00:00+00'"


async def insert_day(conn: DictConnection) -> None:
    """DAY's activity, and some on the days around it that must not count."""
    before, after = DAY - datetime.timedelta(days=1), DAY + datetime.timedelta(days=1)
    for hour in (0, 23):
        await order(conn, "pending", created=on_day(DAY, hour), updated=on_day(DAY, hour))
    await order(conn, "pending", created=on_day(before, 23), updated=on_day(before, 23))
    await order(conn, "shipped", created=on_day(before, 8), updated=on_day(DAY, 9))
    await order(conn, "cancelled", created=on_day(before, 8), updated=on_day(DAY, 10))
    await order(conn, "shipped", created=on_day(before, 8), updated=on_day(after, 0))
    await payment(conn, "paid", updated=on_day(DAY, 1), amount=1_000)
    await payment(conn, "paid", updated=on_day(DAY, 2), amount=2_500)
    await payment(conn, "paid", updated=on_day(DAY, 3), amount=700, currency="EUR")
    await payment(conn, "paid", updated=on_day(before, 3), amount=9_999)
    await payment(conn, "declined", updated=on_day(DAY, 4))
    await payment(conn, "failed", updated=on_day(after, 4))
    for status in ("sent", "sent", "sent", "failed", "refused", "bounced"):
        await attempt(conn, status, on_day(DAY, 12))
    await attempt(conn, "sent", on_day(after, 0))
    await conn.commit()


EXPECTED_CSV = (
    "kpi,value\n"
    "day,2026-03-14\n"
    "orders_created,2\n"
    "orders_shipped,1\n"
    "orders_cancelled,1\n"
    "payments_paid,3\n"
    "payments_failed,1\n"
    "emails_sent,3\n"
    "emails_failed,2\n"
    "emails_bounced,1\n"
    "revenue_cents_EUR,700\n"
    "revenue_cents_USD,3500\n"
)


async def test_the_daily_report_computes_the_days_kpis_once_and_serves_its_csv(
    conn: DictConnection, worker_settings: Settings, settings: Settings, db_url: str
) -> None:
    await insert_day(conn)
    args = tasks.ReportArgs(day=DAY)
    async with analytics_worker(worker_settings, db_url):
        first = await run(conn, tasks.generate_daily_report, args)
        second = await run(conn, tasks.generate_daily_report, args)

    assert first["kpis"] == {
        "orders_created": 2,
        "orders_shipped": 1,
        "orders_cancelled": 1,
        "payments_paid": 3,
        "payments_failed": 1,
        "emails_sent": 3,
        "emails_failed": 2,
        "emails_bounced": 1,
    }
    assert first["revenue_cents"] == {"EUR": 700, "USD": 3500}
    assert first["report_bytes"] == len(EXPECTED_CSV)
    # The rerun replaces the day's row with the same figures.
    assert {**second, "generated_at": None} == {**first, "generated_at": None}
    assert second["generated_at"] > first["generated_at"]
    rows = await fetch(conn, "SELECT day, report_csv, orders_created FROM manufacturing.daily_kpis")
    assert rows == [{"day": DAY, "report_csv": EXPECTED_CSV, "orders_created": 2}]

    api = create_app(settings, db_url, apps=load_apps(settings, [manufacturing_app]))
    async with running_api(api, token=READ_TOKEN) as client:
        listed = await client.get("/manufacturing/reports")
        download = await client.get(listed.json()[0]["url"])
        kpis = await client.get("/manufacturing/kpis")
        unknown = await client.get("/manufacturing/reports/2000-01-01.csv")
        not_a_day = await client.get("/manufacturing/reports/yesterday.csv")
        anonymous = await client.get(
            "/manufacturing/reports/2026-03-14.csv", headers={"Authorization": ""}
        )
        anonymous_list = await client.get("/manufacturing/kpis", headers={"Authorization": ""})

    assert listed.status_code == 200
    [entry] = listed.json()
    assert entry["day"] == "2026-03-14"
    assert entry["url"] == "/manufacturing/reports/2026-03-14.csv"
    assert entry["size_bytes"] == len(EXPECTED_CSV)
    assert download.status_code == 200
    assert download.text == EXPECTED_CSV
    assert download.headers["content-type"].startswith("text/csv")
    assert download.headers["content-disposition"] == (
        'attachment; filename="manufacturing-kpis-2026-03-14.csv"'
    )
    assert kpis.status_code == 200
    [day_kpis] = kpis.json()
    assert (day_kpis["day"], day_kpis["payments_paid"]) == ("2026-03-14", 3)
    assert day_kpis["revenue_cents"] == {"EUR": 700, "USD": 3500}
    assert "report_csv" not in day_kpis
    assert unknown.status_code == 404
    assert "no report for 2000-01-01" in unknown.json()["detail"]
    assert not_a_day.status_code == 422
    assert anonymous.status_code == 401
    assert anonymous_list.status_code == 401


def test_the_report_covers_the_utc_day_before_its_tick() -> None:
    tick = int(datetime.datetime(2026, 3, 15, 0, 30, tzinfo=UTC).timestamp())
    assert tasks.report_day(tasks.ReportArgs(timestamp=tick)) == DAY
    assert tasks.report_day(tasks.ReportArgs(timestamp=tick, day=datetime.date(2026, 1, 1))) == (
        datetime.date(2026, 1, 1)
    )
    yesterday = datetime.datetime.now(UTC).date() - datetime.timedelta(days=1)
    assert tasks.report_day(tasks.ReportArgs()) == yesterday
