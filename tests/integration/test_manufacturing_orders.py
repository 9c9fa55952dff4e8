"""The manufacturing example's order family on a real database and a real worker.

Each test's database is migrated with the app. The worker serves the two order queues; the
customers' emails are checked as rows of the email family (their send jobs wait on
email.normal, which no worker here serves). Days are UTC dates, as the matcher counts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from backend import defer
from backend.api import create_app
from backend.db import DictConnection
from backend.declare.apps import load_apps
from backend.declare.registry import PeriodicArgs, TaskDefinition
from backend.examples.manufacturing import app as manufacturing_app
from backend.examples.manufacturing.orders import matching, service, tasks
from backend.process import migrate
from backend.settings import Settings, load_settings
from tests.conftest import BLUEPRINTS, READ_TOKEN, TOKENS, bearer, count_jobs, eventually
from tests.integration.conftest import running_api, running_worker

ORDER_QUEUES = ["order.critical", "order.normal"]
WORKER_BLUEPRINTS = (*BLUEPRINTS, tasks.blueprint)
TODAY = service.utc_today()


def day(offset: int) -> datetime.date:
    return TODAY + datetime.timedelta(days=offset)


@pytest.fixture(autouse=True)
def manufacturing_schema(db_url: str) -> None:
    """The test's database with the app's migrations too (the template has taskhub's only)."""
    migrate.upgrade(db_url, apps=[manufacturing_app])


@pytest.fixture
def worker_settings(settings: Settings) -> Settings:
    """Fast polling; the family's schedules off (the tests tick them by hand)."""
    return load_settings(
        database_url=settings.database_url,
        data_dir=settings.data_dir,
        tokens=TOKENS,
        fetch_polling_interval=0.1,
        schedules="manufacturing.process_pending_orders=off;manufacturing.send_order_reminders=off",
    )


@contextlib.asynccontextmanager
async def order_worker(settings: Settings, db_url: str) -> AsyncIterator[None]:
    async with running_worker(
        settings, db_url, queues=ORDER_QUEUES, concurrency=8, blueprints=WORKER_BLUEPRINTS
    ):
        yield


async def add_line(
    conn: DictConnection, name: str, product: str = "gearbox", capacity: int = 100
) -> int:
    line = await service.add_line(
        conn, service.LineRequest(name=name, product=product, daily_capacity=capacity)
    )
    await conn.commit()
    return line.id


async def create_order(conn: DictConnection, **changes: Any) -> service.QueuedOrder:
    request = service.OrderRequest.model_validate(
        {
            "customer_name": "Ada Lovelace",
            "customer_email": "ada@example.com",
            "product": "gearbox",
            "quantity": 40,
            "due_date": day(5),
            **changes,
        }
    )
    queued = await service.create_order(conn, request)
    await conn.commit()
    return queued


async def order_of(conn: DictConnection, order_id: int) -> service.Order:
    await conn.commit()  # see the worker's commits
    order = await service.get_order(conn, order_id)
    assert order is not None
    return order


async def match_now(conn: DictConnection, order_id: int) -> matching.MatchOutcome:
    """Run the matcher in this test's connection, as the task does, and commit."""
    outcome = await matching.match(conn, order_id)
    await conn.commit()
    return outcome


async def job_ended(conn: DictConnection, job_id: int, within: float = 20) -> dict[str, Any]:
    async def ended() -> bool:
        await conn.commit()
        cursor = await conn.execute(
            "SELECT status::text AS status FROM procrastinate_jobs WHERE id = %s", (job_id,)
        )
        row = await cursor.fetchone()
        return row is not None and row["status"] in {"succeeded", "failed"}

    await eventually(ended, within=within)
    cursor = await conn.execute(
        "SELECT job.status::text AS status, stored.result FROM procrastinate_jobs job"
        " LEFT JOIN taskhub.job_results stored ON stored.job_id = job.id WHERE job.id = %s",
        (job_id,),
    )
    row = await cursor.fetchone()
    assert row is not None
    return row


async def run_now(conn: DictConnection, task: TaskDefinition[Any]) -> Any:
    """Defer a periodic task by hand (a tick) and wait for its result."""
    job_id = await defer.defer(conn, task, PeriodicArgs())
    await conn.commit()
    job = await job_ended(conn, job_id)
    assert job["status"] == "succeeded", job
    return job["result"]


async def emails(conn: DictConnection, to_email: str = "ada@example.com") -> list[dict[str, Any]]:
    await conn.commit()
    cursor = await conn.execute(
        "SELECT email.id, email.template, email.to_name, email.context, job.task_name"
        " FROM manufacturing.emails email"
        " JOIN procrastinate_jobs job ON job.args->>'email_id' = email.id::text"
        " WHERE email.to_email = %s ORDER BY email.id",
        (to_email,),
    )
    return await cursor.fetchall()


async def booked(conn: DictConnection) -> dict[tuple[int, datetime.date], int]:
    """Units booked per (line, day)."""
    await conn.commit()
    cursor = await conn.execute(
        "SELECT line_id, day, sum(quantity)::int AS units FROM manufacturing.line_bookings"
        " GROUP BY line_id, day"
    )
    return {(row["line_id"], row["day"]): row["units"] for row in await cursor.fetchall()}


# -- the matching rule -------------------------------------------------------------------------


async def test_an_order_that_fits_is_booked_today_and_the_customer_is_told(
    conn: DictConnection, worker_settings: Settings, db_url: str
) -> None:
    await add_line(conn, "widgets", product="widget")
    line = await add_line(conn, "gears-1", capacity=100)
    queued = await create_order(conn, quantity=40)
    async with order_worker(worker_settings, db_url):
        job = await job_ended(conn, queued.job_id)

    assert job["status"] == "succeeded", job
    order = await order_of(conn, queued.order_id)
    assert (order.status, order.line_id, order.production_date) == ("matched", line, TODAY)
    assert order.matched_at is not None
    assert order.match_attempts == 1
    assert await booked(conn) == {(line, TODAY): 40}
    [email] = await emails(conn)
    assert job["result"]["email_id"] == email["id"]
    assert email["template"] == "order_status"
    assert email["task_name"] == "manufacturing.send_email"
    assert email["to_name"] == "Ada Lovelace"
    assert email["context"]["order_number"] == f"ORD-{queued.order_id:06d}"
    assert email["context"]["status"] == "scheduled for production"
    assert f"on line gears-1 on {TODAY.isoformat()}" in email["context"]["note"]
    events = await service.order_events(conn, queued.order_id)
    assert [(e.from_status, e.to_status, e.email_id) for e in events] == [
        (None, "pending", None),
        ("pending", "matched", email["id"]),
    ]
    assert events[1].job_id == queued.job_id


async def test_a_full_day_moves_the_order_to_the_next_day_up_to_its_due_date(
    conn: DictConnection,
) -> None:
    line = await add_line(conn, "gears-1", capacity=100)
    first = await create_order(conn, quantity=80)
    second = await create_order(conn, quantity=30, due_date=day(3))
    third = await create_order(conn, quantity=30, due_date=TODAY)
    fourth = await create_order(conn, quantity=20, due_date=TODAY)

    assert (await match_now(conn, first.order_id)).production_date == TODAY
    moved = await match_now(conn, second.order_id)
    late = await match_now(conn, third.order_id)
    fits = await match_now(conn, fourth.order_id)

    assert (moved.status, moved.line_id, moved.production_date) == ("matched", line, day(1))
    assert (late.status, late.line_id, late.production_date) == ("unmatched", None, None)
    assert (fits.status, fits.production_date) == ("matched", TODAY)  # exactly the 20 left
    assert await booked(conn) == {(line, TODAY): 100, (line, day(1)): 30}


async def test_the_earliest_day_wins_then_the_lowest_line_id(conn: DictConnection) -> None:
    small = await add_line(conn, "gears-small", capacity=10)
    big = await add_line(conn, "gears-big", capacity=100)
    also_big = await add_line(conn, "gears-big-2", capacity=100)
    inactive = await add_line(conn, "gears-old", capacity=1000)
    await conn.execute(
        "UPDATE manufacturing.production_lines SET active = false WHERE id = %s", (inactive,)
    )
    await conn.commit()

    tie = await match_now(conn, (await create_order(conn, quantity=60)).order_id)
    fits_small = await match_now(conn, (await create_order(conn, quantity=10)).order_id)
    next_tie = await match_now(conn, (await create_order(conn, quantity=60)).order_id)
    too_big = await match_now(conn, (await create_order(conn, quantity=500)).order_id)

    assert (tie.line_id, tie.production_date) == (big, TODAY)  # big and also_big tie: lowest id
    assert (fits_small.line_id, fits_small.production_date) == (small, TODAY)
    # big has 40 left today: also_big today beats big tomorrow.
    assert (next_tie.line_id, next_tie.production_date) == (also_big, TODAY)
    assert too_big.status == "unmatched"  # only the inactive line could take it


async def test_a_product_no_line_makes_is_unmatched_and_told_once(conn: DictConnection) -> None:
    await add_line(conn, "gears-1")
    queued = await create_order(conn, product="sprocket")

    first = await match_now(conn, queued.order_id)
    again = await match_now(conn, queued.order_id)

    assert (first.status, first.changed) == ("unmatched", True)
    assert (again.status, again.changed, again.email_id) == ("unmatched", False, None)
    [email] = await emails(conn)
    assert email["id"] == first.email_id
    assert email["context"]["status"] == "waiting for production capacity"
    assert "no line has room" in email["context"]["note"]
    order = await order_of(conn, queued.order_id)
    assert order.match_attempts == 2
    assert [e.to_status for e in await service.order_events(conn, queued.order_id)] == [
        "pending",
        "unmatched",
    ]


async def test_an_order_already_matched_or_gone_is_left_as_it_is(conn: DictConnection) -> None:
    await add_line(conn, "gears-1")
    queued = await create_order(conn)
    matched = await match_now(conn, queued.order_id)

    rerun = await match_now(conn, queued.order_id)
    missing = await match_now(conn, 999_999)

    assert (rerun.status, rerun.changed, rerun.production_date) == (
        "matched",
        False,
        matched.production_date,
    )
    assert missing.status == "missing"
    assert len(await emails(conn)) == 1
    assert len(await booked(conn)) == 1


# -- no overbooking ----------------------------------------------------------------------------


async def test_a_matcher_waiting_for_the_lines_sees_the_booking_committed_meanwhile(
    conn: DictConnection, db_url: str
) -> None:
    line = await add_line(conn, "gears-1", capacity=50)
    first = await create_order(conn, quantity=50, due_date=TODAY)
    second = await create_order(conn, quantity=50, due_date=TODAY)
    async with (
        await psycopg.AsyncConnection.connect(db_url, row_factory=dict_row) as one,
        await psycopg.AsyncConnection.connect(db_url, row_factory=dict_row) as two,
    ):
        holding = await matching.match(one, first.order_id)  # booked, not committed
        racing = asyncio.create_task(matching.match(two, second.order_id))
        await asyncio.sleep(0.5)
        assert not racing.done()  # waits on the line's lock
        await one.commit()
        raced = await racing
        await two.commit()

    assert holding.status == "matched"
    assert raced.status == "unmatched"
    assert await booked(conn) == {(line, TODAY): 50}


async def test_concurrent_workers_never_overbook_a_line_day(
    conn: DictConnection, worker_settings: Settings, db_url: str
) -> None:
    line_a = await add_line(conn, "gears-a", capacity=100)
    line_b = await add_line(conn, "gears-b", capacity=50)
    orders = [await create_order(conn, quantity=10, due_date=day(1)) for _ in range(40)]
    async with order_worker(worker_settings, db_url):
        for queued in orders:
            await job_ended(conn, queued.job_id)

    assert await booked(conn) == {
        (line_a, TODAY): 100,
        (line_b, TODAY): 50,
        (line_a, day(1)): 100,
        (line_b, day(1)): 50,
    }
    statuses = [(await order_of(conn, queued.order_id)).status for queued in orders]
    assert statuses.count("matched") == 30
    assert statuses.count("unmatched") == 10


# -- the sweeps --------------------------------------------------------------------------------


async def test_the_sweep_matches_unmatched_orders_once_capacity_is_added(
    conn: DictConnection, worker_settings: Settings, db_url: str
) -> None:
    waiting = await create_order(conn, quantity=40)
    past_due = await create_order(conn, customer_email="late@example.com")
    held = await create_order(conn, customer_email="held@example.com")
    lost = await create_order(conn, customer_email="lost@example.com")
    await conn.execute(
        "UPDATE procrastinate_jobs SET scheduled_at = now() + interval '1 day' WHERE id = %s",
        (held.job_id,),
    )
    await conn.execute(
        "UPDATE procrastinate_jobs SET status = 'cancelled' WHERE id = %s", (lost.job_id,)
    )
    await conn.commit()
    async with order_worker(worker_settings, db_url):
        for queued in (waiting, past_due):
            assert (await job_ended(conn, queued.job_id))["result"]["status"] == "unmatched"
        await conn.execute(
            "UPDATE manufacturing.orders SET due_date = %s WHERE id = %s",
            (day(-1), past_due.order_id),
        )
        await conn.commit()

        first = await run_now(conn, tasks.process_pending_orders)
        for order_id in first["queued"]:
            job = await job_ended(conn, (await order_of(conn, order_id)).job_id or 0)
            assert job["result"]["status"] == "unmatched"
        line = await add_line(conn, "gears-1")
        second = await run_now(conn, tasks.process_pending_orders)
        for order_id in second["queued"]:
            await job_ended(conn, (await order_of(conn, order_id)).job_id or 0)

    # past due: never again; held: its job still waits; lost: its job was cancelled
    assert first["queued"] == [waiting.order_id, lost.order_id]
    assert second["queued"] == [waiting.order_id, lost.order_id]
    for queued, production_date in ((waiting, TODAY), (lost, TODAY)):
        order = await order_of(conn, queued.order_id)
        assert (order.status, order.line_id, order.production_date) == (
            "matched",
            line,
            production_date,
        )
    assert (await order_of(conn, waiting.order_id)).match_attempts == 3
    assert (await order_of(conn, past_due.order_id)).status == "unmatched"
    assert (await order_of(conn, held.order_id)).status == "pending"
    statuses = [email["context"]["status"] for email in await emails(conn)]
    assert statuses == ["waiting for production capacity", "scheduled for production"]


async def test_reminders_go_to_orders_due_soon_once_per_interval(
    conn: DictConnection, worker_settings: Settings, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKHUB_MANUFACTURING_ORDER_REMINDER_DAYS", "3")
    monkeypatch.setenv("TASKHUB_MANUFACTURING_ORDER_REMINDER_EVERY_HOURS", "24")
    await add_line(conn, "gears-1", capacity=1000)
    soon = await create_order(conn, due_date=day(2), customer_email="soon@example.com")
    making = await create_order(conn, due_date=day(3), customer_email="making@example.com")
    later = await create_order(conn, due_date=day(4), customer_email="later@example.com")
    shipped = await create_order(conn, due_date=day(1), customer_email="shipped@example.com")
    waiting = await create_order(
        conn, due_date=day(1), product="sprocket", customer_email="waiting@example.com"
    )
    for queued in (soon, making, later, shipped, waiting):
        await match_now(conn, queued.order_id)
    await service.change_status(conn, making.order_id, service.StatusChange(status="in_production"))
    await service.change_status(conn, shipped.order_id, service.StatusChange(status="shipped"))
    await conn.commit()

    async with order_worker(worker_settings, db_url):
        first = await run_now(conn, tasks.send_order_reminders)
        again = await run_now(conn, tasks.send_order_reminders)
        await conn.execute(
            "UPDATE manufacturing.orders SET reminded_at = now() - interval '25 hours'"
            " WHERE id = %s",
            (soon.order_id,),
        )
        await conn.commit()
        later_on = await run_now(conn, tasks.send_order_reminders)

    assert first["reminded"] == [soon.order_id, making.order_id]  # by due date
    assert again["reminded"] == []
    assert later_on["reminded"] == [soon.order_id]
    reminders = (await emails(conn, "soon@example.com"))[1:]
    assert [email["id"] for email in reminders] == [first["email_ids"][0], later_on["email_ids"][0]]
    assert reminders[0]["context"]["note"].startswith("Reminder: your order is due soon.")
    assert reminders[0]["context"]["status"] == "scheduled for production"
    [_, _, making_reminder] = await emails(conn, "making@example.com")
    assert making_reminder["context"]["status"] == "in production"
    assert (await order_of(conn, soon.order_id)).reminded_at is not None
    assert (await order_of(conn, later.order_id)).reminded_at is None


# -- the service and the router ----------------------------------------------------------------


async def test_a_rolled_back_create_leaves_no_order_and_no_job(conn: DictConnection) -> None:
    queued = await service.create_order(
        conn,
        service.OrderRequest(
            customer_name="A",
            customer_email="a@example.com",
            product="gearbox",
            quantity=1,
            due_date=TODAY,
        ),
    )
    await conn.rollback()

    assert await service.get_order(conn, queued.order_id) is None
    assert await count_jobs(conn) == 0


async def test_cancelling_gives_the_capacity_back_and_tells_the_customer(
    conn: DictConnection,
) -> None:
    line = await add_line(conn, "gears-1", capacity=50)
    first = await create_order(conn, quantity=50, due_date=TODAY)
    await match_now(conn, first.order_id)

    cancelled = await service.change_status(
        conn, first.order_id, service.StatusChange(status="cancelled", note="Changed my mind.")
    )
    await conn.commit()
    second = await create_order(conn, quantity=50, due_date=TODAY, customer_email="b@example.com")
    rebooked = await match_now(conn, second.order_id)

    assert cancelled.status == "cancelled"
    assert (rebooked.status, rebooked.line_id, rebooked.production_date) == (
        "matched",
        line,
        TODAY,
    )
    assert await booked(conn) == {(line, TODAY): 50}
    [_, told] = await emails(conn)
    assert told["context"]["status"] == "cancelled"
    assert told["context"]["note"].endswith("Changed my mind.")


async def test_the_router_creates_reads_lists_and_changes_orders(
    conn: DictConnection, settings: Settings, db_url: str
) -> None:
    api = create_app(settings, db_url, apps=load_apps(settings, [manufacturing_app]))
    body = {
        "customer_name": "Ada Lovelace",
        "customer_email": "ada@example.com",
        "product": "gearbox",
        "quantity": 40,
        "due_date": day(5).isoformat(),
    }
    async with running_api(api) as client:
        line = await client.post(
            "/manufacturing/production-lines",
            json={"name": "gears-1", "product": "gearbox", "daily_capacity": 100},
        )
        same_name = await client.post(
            "/manufacturing/production-lines",
            json={"name": "gears-1", "product": "gearbox", "daily_capacity": 5},
        )
        reader = await client.post("/manufacturing/orders", json=body, headers=bearer(READ_TOKEN))
        created = await client.post("/manufacturing/orders", json=body)
        assert created.status_code == 202, created.text
        queued = created.json()
        too_early = await client.post(
            f"/manufacturing/orders/{queued['order_id']}/status", json={"status": "shipped"}
        )
        await match_now(conn, queued["order_id"])
        shipped = await client.post(
            f"/manufacturing/orders/{queued['order_id']}/status",
            json={"status": "shipped", "note": "Tracking 1Z999."},
        )
        after_shipping = await client.post(
            f"/manufacturing/orders/{queued['order_id']}/status", json={"status": "cancelled"}
        )
        by_hand = await client.post(
            f"/manufacturing/orders/{queued['order_id']}/status", json={"status": "matched"}
        )
        unknown = await client.post(
            "/manufacturing/orders/999999/status", json={"status": "cancelled"}
        )
        read = await client.get(created.headers["Location"])
        listed = await client.get("/manufacturing/orders", params={"status": "shipped"})
        none_pending = await client.get("/manufacturing/orders", params={"status": "pending"})
        bad_filter = await client.get("/manufacturing/orders", params={"status": "lost"})
        missing = await client.get("/manufacturing/orders/999999")
        lines = await client.get("/manufacturing/production-lines", headers=bearer(READ_TOKEN))

    assert reader.status_code == 403
    assert line.status_code == 201, line.text
    assert same_name.status_code == 409
    assert "already named 'gears-1'" in same_name.json()["detail"]
    assert queued["task"] == "manufacturing.match_order"
    assert too_early.status_code == 409
    assert "is pending: it can become shipped only when it is" in too_early.json()["detail"]
    assert shipped.status_code == 200, shipped.text
    assert shipped.json()["status"] == "shipped"
    assert after_shipping.status_code == 409
    assert by_hand.status_code == 422
    assert unknown.status_code == 404
    assert read.status_code == 200
    assert [e["to_status"] for e in read.json()["events"]] == ["pending", "matched", "shipped"]
    assert read.json()["events"][2]["note"] == "Tracking 1Z999."
    assert [order["id"] for order in listed.json()] == [queued["order_id"]]
    assert none_pending.json() == []
    assert bad_filter.status_code == 422
    assert missing.status_code == 404
    assert [item["name"] for item in lines.json()] == ["gears-1"]
    told = [email["context"]["status"] for email in await emails(conn)]
    assert told == ["scheduled for production", "shipped"]  # nothing for the refused changes
    cursor = await conn.execute(
        "SELECT queue_name, priority, args FROM procrastinate_jobs"
        " WHERE task_name = 'manufacturing.match_order'"
    )
    assert await cursor.fetchall() == [
        {
            "queue_name": "order.critical",
            "priority": 10,
            "args": {"order_id": queued["order_id"]},
        }
    ]  # one job: the reader's order queued nothing


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"quantity": 0}, "quantity"),
        ({"due_date": day(-1).isoformat()}, "is in the past"),
        ({"due_date": day(400).isoformat()}, "366 days ahead"),
        ({"customer_email": "not an address"}, "customer_email"),
        ({"product": ""}, "product"),
        ({"priority": 3}, "priority"),
    ],
)
async def test_bad_orders_are_refused_and_nothing_is_queued(
    conn: DictConnection, settings: Settings, db_url: str, change: dict[str, Any], problem: str
) -> None:
    api = create_app(settings, db_url, apps=load_apps(settings, [manufacturing_app]))
    body = {
        "customer_name": "Ada",
        "customer_email": "ada@example.com",
        "product": "gearbox",
        "quantity": 1,
        "due_date": TODAY.isoformat(),
        **change,
    }
    async with running_api(api) as client:
        refused = await client.post("/manufacturing/orders", json=body)

    assert refused.status_code == 422
    assert problem in refused.text
    assert await count_jobs(conn) == 0
    cursor = await conn.execute("SELECT count(*) AS n FROM manufacturing.orders")
    assert await cursor.fetchone() == {"n": 0}
