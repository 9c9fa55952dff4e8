"""Alerts end to end: rules against real rows, states under concurrent evaluators, signed
webhooks to a real local receiver (retried after a 500), and GET /alerts."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi import FastAPI, Request, Response
from psycopg.rows import dict_row

from backend.api import create_app
from backend.control import alert_rules
from backend.db import DictConnection
from backend.declare.schedules import configured_schedules
from backend.defer import defer
from backend.examples.serving import serving
from backend.settings import Settings, load_settings
from backend.tasks.alerts import evaluate_and_notify
from backend.tasks.builtin import ping
from tests.conftest import BLUEPRINTS, READ_TOKEN, TOKENS, eventually
from tests.integration.conftest import running_api, running_worker

SECRET = "webhook-secret-for-tests"


class Receiver:
    """A webhook receiver that verifies signatures; answers 500 to its first ``failures``."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.app = FastAPI()
        self.app.post("/hook")(self.hook)

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        valid = hmac.compare_digest(expected, request.headers.get("x-taskhub-signature", ""))
        with self.lock:
            status = 500 if len(self.received) < self.failures else 200
            self.received.append({"payload": json.loads(body), "valid": valid, "status": status})
        return Response(status_code=status if valid else 401)

    def delivered(self, state: str) -> list[dict[str, Any]]:
        with self.lock:
            return [
                r for r in self.received if r["payload"]["state"] == state and r["status"] == 200
            ]


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    hook = Receiver(failures=1)
    with serving(hook.app) as url:
        yield hook, f"{url}/hook"


def alert_settings(db_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    return load_settings(
        database_url=db_url, data_dir=tmp_path / ".taskhub", tokens=TOKENS, **overrides
    )


async def evaluate(db_url: str, settings: Settings) -> tuple[list[str], list[str]]:
    connect = psycopg.AsyncConnection.connect(db_url, row_factory=dict_row)
    async with await connect as conn, conn.transaction():
        report = await evaluate_and_notify(
            conn, settings, configured_schedules(settings, BLUEPRINTS)
        )
    return report.fired, report.resolved


async def events(conn: DictConnection, kind: str) -> list[dict[str, Any]]:
    cursor = await conn.execute(
        "SELECT * FROM taskhub.alert_events WHERE kind = %s ORDER BY id", (kind,)
    )
    return await cursor.fetchall()


async def test_backlog_fires_once_holds_silently_resolves_once_with_signed_retried_webhooks(
    db_url: str, tmp_path: Path, conn: DictConnection, receiver: tuple[Receiver, str]
) -> None:
    hook, url = receiver
    settings = alert_settings(
        db_url, tmp_path, alert_backlog=2, alert_webhooks=[url], alert_webhook_secret=SECRET
    )
    async with conn.transaction():
        for _ in range(3):
            await defer(conn, ping, {"message": "waiting"}, queue="orders")
    # The worker serves the maintenance queue only: the orders jobs wait, webhooks go out.
    async with running_worker(settings, db_url, queues=["maintenance"]):
        await evaluate(db_url, settings)
        await evaluate(db_url, settings)  # holds: nothing new
        assert [e["details"]["state"] for e in await events(conn, "backlog")] == ["firing"]

        async def fired_delivered() -> bool:
            return len(hook.delivered("firing")) == 1

        await eventually(fired_delivered, within=30)
        assert all(r["valid"] for r in hook.received)
        assert hook.received[0]["status"] == 500  # the first attempt failed, the retry got it
        payload = hook.delivered("firing")[0]["payload"]
        assert (payload["rule"], payload["subject"]) == ("backlog", "orders")
        assert payload["details"]["waiting"] == 3
        assert isinstance(payload["timestamp"], int)
        cursor = await conn.execute(
            "SELECT status, attempts FROM procrastinate_jobs"
            " WHERE task_name = 'taskhub.send_webhook'"
        )
        assert await cursor.fetchall() == [{"status": "succeeded", "attempts": 2}]

        async with running_api(create_app(settings, db_url), token=READ_TOKEN) as client:
            body = (await client.get("/alerts")).json()
        assert [(a["rule"], a["subject"]) for a in body["firing"]] == [("backlog", "orders")]
        assert body["recent"][0]["kind"] == "backlog"

        await conn.execute("DELETE FROM procrastinate_jobs WHERE queue_name = 'orders'")
        await conn.commit()
        await evaluate(db_url, settings)
        await evaluate(db_url, settings)

        async def resolved_delivered() -> bool:
            return len(hook.delivered("resolved")) == 1

        await eventually(resolved_delivered, within=30)
    assert [e["details"]["state"] for e in await events(conn, "backlog")] == [
        "firing",
        "resolved",
    ]
    assert len(hook.delivered("firing")) == 1


async def test_concurrent_evaluators_notify_each_transition_once(
    db_url: str, tmp_path: Path, conn: DictConnection
) -> None:
    settings = alert_settings(db_url, tmp_path, alert_backlog=1)
    async with conn.transaction():
        for _ in range(2):
            await defer(conn, ping, {"message": "waiting"}, queue="orders")
    results = await asyncio.gather(*(evaluate(db_url, settings) for _ in range(4)))
    fired = sorted(name for fired, _ in results for name in fired)
    # No worker at all: the queue is also unserved.
    assert fired == ["backlog:orders", "unserved_queue:orders"]
    cursor = await conn.execute("SELECT count(*) AS n FROM taskhub.alert_events")
    assert (await cursor.fetchone()) == {"n": 2}


async def finish(conn: DictConnection, job_id: int, status: str) -> None:
    """Walk a job through doing to ``status``, as a worker would (the triggers log events)."""
    await conn.execute("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", (job_id,))
    await conn.execute(
        "UPDATE procrastinate_jobs SET status = %s::procrastinate_job_status WHERE id = %s",
        (status, job_id),
    )


async def test_each_rule_fires_on_its_condition(
    db_url: str, tmp_path: Path, conn: DictConnection
) -> None:
    settings = alert_settings(
        db_url,
        tmp_path,
        alert_oldest_age=60,
        alert_failure_min_jobs=1,
        critical_queues="payment.critical,other",
        alert_stalled_after=600,
        alert_backup_age=86_400,
    )
    async with conn.transaction():
        late = await defer(conn, ping, {"message": "late"}, queue="orders")
        await conn.execute(
            "UPDATE procrastinate_jobs SET scheduled_at = now() - interval '1 hour' WHERE id = %s",
            (late,),
        )
        failed = await defer(conn, ping, {"message": "boom"}, queue="payment.critical")
        await finish(conn, failed, "failed")
        stalled = await defer(conn, ping, {"message": "stuck"}, queue="slow")
        await conn.execute(
            "UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", (stalled,)
        )
        await conn.execute(
            "UPDATE procrastinate_events SET at = now() - interval '2 hours'"
            " WHERE job_id = %s AND type = 'started'",
            (stalled,),
        )
        await conn.execute(
            "INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now() - interval '1 hour')"
        )
        await conn.execute(
            "INSERT INTO taskhub.backups (status, started_at, finished_at) VALUES"
            " ('succeeded', now() - interval '3 days', now() - interval '3 days'),"
            " ('failed', now() - interval '1 hour', now() - interval '1 hour')"
        )
        await conn.execute(
            "INSERT INTO procrastinate_periodic_defers (task_name, periodic_id, defer_timestamp)"
            " VALUES ('taskhub.rescue_stalled_jobs', 'taskhub.rescue_stalled_jobs',"
            " extract(epoch FROM now() - interval '1 day')::bigint)"
        )
    fired, resolved = await evaluate(db_url, settings)
    assert set(fired) >= {
        "oldest_job_age:orders",
        "critical_failure:payment.critical",
        f"failure_rate:{ping.name}",
        f"stalled_job:{stalled}",
        "backup_failure:backup",
        "backup_overdue:backup",
        "missed_schedule:taskhub.rescue_stalled_jobs",
        "unserved_queue:orders",
    }
    assert any(name.startswith("dead_worker:") for name in fired)
    assert resolved == []
    assert await evaluate(db_url, settings) == ([], [])  # holding: silent
    async with await psycopg.AsyncConnection.connect(db_url, row_factory=dict_row) as other:
        firing = await alert_rules.firing_alerts(other)
    assert len(firing) == len(fired)
