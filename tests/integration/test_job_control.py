"""Listing, cancelling and retrying jobs over REST; tokens; idempotency keys; what goes with a
job when it is deleted (pruning itself: test_pruning.py)."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import httpx
import pytest

from backend import defer
from backend.api import create_app
from backend.control import jobs
from backend.db import DictConnection
from backend.settings import Settings
from backend.tasks.builtin import ping
from tests.conftest import ADMIN_TOKEN, READ_TOKEN, bearer, count_jobs, eventually
from tests.integration.conftest import running_api, running_worker


async def defer_many(conn: DictConnection, count: int, **options: Any) -> list[int]:
    async with conn.transaction():
        return await defer.batch_defer(
            conn, ping, [{"message": n} for n in range(count)], **options
        )


async def set_status(conn: DictConnection, job_id: int, status: str) -> None:
    """Move a job through procrastinate's own functions, as a worker would."""
    async with conn.transaction():
        await conn.execute(
            "UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", (job_id,)
        )
        await conn.execute(
            "SELECT procrastinate_finish_job_v1(%s, %s::procrastinate_job_status, false)",
            (job_id, status),
        )


async def test_list_pages_are_stable_under_inserts(
    client: httpx.AsyncClient, conn: DictConnection
) -> None:
    ids = await defer_many(conn, 25)
    first = (await client.get("/jobs", params={"limit": 10})).json()
    assert [job["id"] for job in first["items"]] == sorted(ids, reverse=True)[:10]
    await defer_many(conn, 5)  # newer jobs arrive between two page reads
    second = (
        await client.get("/jobs", params={"limit": 10, "cursor": first["next_cursor"]})
    ).json()
    third = (
        await client.get("/jobs", params={"limit": 10, "cursor": second["next_cursor"]})
    ).json()
    assert [job["id"] for job in second["items"]] == sorted(ids, reverse=True)[10:20]
    assert [job["id"] for job in third["items"]] == sorted(ids, reverse=True)[20:]
    assert third["next_cursor"] is None


async def test_list_filters(client: httpx.AsyncClient, conn: DictConnection) -> None:
    pending = await defer_many(conn, 3, queue="emails")
    failed = await defer_many(conn, 2)
    for job_id in failed:
        await set_status(conn, job_id, "failed")

    async def ids(**params: Any) -> list[int]:
        response = await client.get("/jobs", params=params)
        assert response.status_code == 200, response.text
        return [job["id"] for job in response.json()["items"]]

    assert sorted(await ids(status="failed")) == failed
    assert sorted(await ids(state="FAILURE")) == failed
    assert sorted(await ids(state=["FAILURE", "PENDING"])) == sorted(failed + pending)
    assert sorted(await ids(queue="emails")) == pending
    assert await ids(task="nothing.like.this") == []
    now = datetime.datetime.now(datetime.UTC)
    assert len(await ids(created_after=(now - datetime.timedelta(minutes=5)).isoformat())) == 5
    assert await ids(created_before=(now - datetime.timedelta(minutes=5)).isoformat()) == []
    assert sorted(await ids(finished_after=(now - datetime.timedelta(minutes=5)).isoformat())) == (
        failed
    )
    bad = await client.get("/jobs", params={"state": "EXPLODED"})
    assert bad.status_code == 422
    assert (await client.get("/jobs", params={"cursor": "garbage"})).status_code == 422


async def test_cancel_a_waiting_job(client: httpx.AsyncClient, conn: DictConnection) -> None:
    [job_id] = await defer_many(conn, 1)
    response = await client.post(f"/jobs/{job_id}/cancel")
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["state"]) == ("cancelled", "REVOKED")
    # procrastinate flags the waiting jobs it cancels as abort-requested; only running jobs abort.
    assert response.json()["abort_requested"] is False
    again = await client.post(f"/jobs/{job_id}/cancel")
    assert again.status_code == 409
    assert "cancelled" in again.json()["detail"]
    assert (await client.post("/jobs/999999/cancel")).status_code == 404


@pytest.mark.parametrize("final_status", ["failed", "cancelled"])
async def test_retry_runs_a_finished_job_again_keeping_its_history(
    client: httpx.AsyncClient,
    conn: DictConnection,
    settings: Settings,
    db_url: str,
    final_status: str,
) -> None:
    [job_id] = await defer_many(conn, 1)
    if final_status == "failed":
        await set_status(conn, job_id, "failed")
    else:
        assert (await client.post(f"/jobs/{job_id}/cancel")).status_code == 200
    assert (await client.post(f"/jobs/{999_999}/retry")).status_code == 404

    response = await client.post(f"/jobs/{job_id}/retry")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "todo"
    assert (await client.post(f"/jobs/{job_id}/retry")).status_code == 409

    async with running_worker(settings, db_url):

        async def succeeded() -> bool:
            return (await jobs.get_job(conn, job_id)).status == "succeeded"

        await eventually(succeeded)
    job = await jobs.get_job(conn, job_id)
    events = [event.type for event in job.events]
    assert events[0] == "deferred"
    assert "retried" in events
    assert events[-2:] == ["started", "succeeded"]
    cursor = await conn.execute(
        "SELECT actor, action, details FROM taskhub.audit_log WHERE job_id = %s ORDER BY id",
        (job_id,),
    )
    audit = await cursor.fetchall()
    assert audit[-1] == {
        "actor": "ops",
        "action": "retry",
        "details": {"previous_status": final_status},
    }


async def test_retry_wakes_workers_at_once(
    client: httpx.AsyncClient, conn: DictConnection, settings: Settings, db_url: str
) -> None:
    [job_id] = await defer_many(conn, 1)
    await set_status(conn, job_id, "failed")
    slow_polling = settings.model_copy(update={"fetch_polling_interval": 600})
    async with running_worker(slow_polling, db_url):
        assert (await client.post(f"/jobs/{job_id}/retry")).status_code == 200

        async def succeeded() -> bool:
            return (await jobs.get_job(conn, job_id)).status == "succeeded"

        await eventually(succeeded, within=5)


async def test_tokens_and_scopes(settings: Settings, db_url: str) -> None:
    async with running_api(create_app(settings, db_url), token=None) as anonymous:
        assert (await anonymous.get("/health")).status_code == 200
        for method, path in (("GET", "/jobs"), ("GET", "/tasks"), ("GET", "/jobs/1")):
            response = await anonymous.request(method, path)
            assert response.status_code == 401, path
        wrong = await anonymous.get("/jobs", headers=bearer("not-a-token-at-all-really"))
        assert wrong.status_code == 401
        reader = bearer(READ_TOKEN)
        assert (await anonymous.get("/jobs", headers=reader)).status_code == 200
        post = await anonymous.post("/jobs", json={"task": "taskhub.ping"}, headers=reader)
        assert post.status_code == 403
        assert "operate" in post.json()["detail"]
        admin = bearer(ADMIN_TOKEN)
        assert (
            await anonymous.post("/jobs", json={"task": "taskhub.ping"}, headers=admin)
        ).status_code == 201


async def test_generated_admin_token_when_none_is_configured(
    settings: Settings, db_url: str
) -> None:
    bare = settings.model_copy(update={"tokens": ""})
    app = create_app(bare, db_url)
    token = (bare.data_dir / "admin-token").read_text().strip()
    assert len(token) >= 32
    assert (bare.data_dir / "admin-token").stat().st_mode & 0o777 == 0o600
    async with running_api(app, token=token) as client:
        assert (await client.get("/jobs")).status_code == 200
    assert create_app(bare, db_url).state.tokens[0].secret == token, "kept across starts"


async def test_idempotency_key_gives_one_job(
    client: httpx.AsyncClient, conn: DictConnection
) -> None:
    body = {"task": "taskhub.ping", "args": {"message": "charge card 42"}}
    headers = {"Idempotency-Key": "charge-42"}
    results = await asyncio.gather(
        *(client.post("/jobs", json=body, headers=headers) for _ in range(8))
    )
    assert sorted(response.status_code for response in results) == [200] * 7 + [201]
    assert len({response.json()["id"] for response in results}) == 1
    assert await count_jobs(conn) == 1
    replay = await client.post("/jobs", json=body, headers=headers)
    assert replay.headers["Idempotent-Replayed"] == "true"

    other = await client.post(
        "/jobs",
        json={"task": "taskhub.ping", "args": {"message": "charge card 43"}},
        headers=headers,
    )
    assert other.status_code == 409
    assert await count_jobs(conn) == 1


async def test_job_data_goes_away_with_the_job(conn: DictConnection) -> None:
    [job_id] = await defer_many(conn, 1)
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO taskhub.job_results (job_id, result) VALUES (%s, '1')", (job_id,)
        )
        await conn.execute("DELETE FROM procrastinate_jobs WHERE id = %s", (job_id,))
    cursor = await conn.execute("SELECT count(*) AS n FROM taskhub.job_results")
    assert await cursor.fetchone() == {"n": 0}
