"""The ERP sync example: the REST endpoints, a real worker, a real stand-in ERP under uvicorn.

The example is an app (``backend.examples.erp``): each test's database is migrated with it,
the API loads it as ``--app`` would, and the worker serves its blueprint beside taskhub's.
The worker reads ``ErpSettings`` from ``TASKHUB_ERP_*``, set per test.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from backend import defer
from backend.api import create_app
from backend.db import DictConnection
from backend.declare.apps import load_apps
from backend.declare.policy import Retry
from backend.declare.registry import TaskBlueprint, TaskDefinition
from backend.examples.erp import app as erp_app
from backend.examples.erp import service as erp
from backend.examples.erp import tasks as erp_tasks
from backend.examples.erp.settings import ErpSettings
from backend.examples.erp.standin import ErpStandin, demo_app
from backend.examples.erp.tasks import RETRY, sync_assets
from backend.examples.serving import serving
from backend.process import migrate
from backend.settings import Settings, load_settings
from backend.tasks.builtin import ping
from tests.conftest import BLUEPRINTS, READ_TOKEN, TOKENS, bearer, count_jobs, eventually
from tests.integration.conftest import running_api, running_worker

ERP_TOKEN = "erp-standin-token-0123456789"
TERMINAL = {"SUCCESS", "FAILURE", "REVOKED"}
APP = "backend.examples.erp"
#: taskhub's tasks and the example's, as a worker started with `--app backend.examples.erp`.
ERP_BLUEPRINTS = (*BLUEPRINTS, erp_tasks.blueprint)


@pytest.fixture(autouse=True)
def erp_schema(db_url: str) -> None:
    """The test's database with the app's migrations too (the template has taskhub's only)."""
    migrate.upgrade(db_url, apps=[erp_app])


@pytest.fixture
def standin() -> ErpStandin:
    return ErpStandin(token=ERP_TOKEN)


@pytest.fixture
def erp_url(standin: ErpStandin) -> Iterator[str]:
    with serving(standin.app()) as url:
        yield url


def point_at_erp(
    monkeypatch: pytest.MonkeyPatch, erp_url: str | None, **changes: str | None
) -> None:
    """``TASKHUB_ERP_*`` for the stand-in ERP (``ErpSettings``), ``changes`` by field name."""
    values = {"base_url": erp_url, "token": ERP_TOKEN, "page_size": "500", "timeout": "5"}
    for name, value in (values | changes).items():
        if value is None:
            monkeypatch.delenv(f"TASKHUB_ERP_{name.upper()}", raising=False)
        else:
            monkeypatch.setenv(f"TASKHUB_ERP_{name.upper()}", value)


@pytest.fixture
def sync_settings(settings: Settings, erp_url: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The test's settings with fast polling for retries; the ERP's in the environment."""
    point_at_erp(monkeypatch, erp_url)
    return fast_settings(settings)


def fast_settings(settings: Settings) -> Settings:
    return load_settings(
        database_url=settings.database_url,
        data_dir=settings.data_dir,
        tokens=TOKENS,
        fetch_polling_interval=0.1,
    )


def erp_api(
    settings: Settings, db_url: str
) -> contextlib.AbstractAsyncContextManager[httpx.AsyncClient]:
    """The API with the example's app loaded, as `taskhub api --app backend.examples.erp`."""
    return running_api(create_app(settings, db_url, apps=load_apps(settings, [APP])))


@pytest.fixture
async def api(sync_settings: Settings, db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with erp_api(sync_settings, db_url) as client:
        yield client


def with_retry(*definitions: TaskDefinition[Any], **changes: Any) -> TaskBlueprint:
    """A blueprint with the ERP tasks under another policy (a quick retry instead of minutes);
    what it leaves unset still comes from the app's defaults."""
    blueprint = TaskBlueprint()
    for definition in definitions:
        declared = dataclasses.replace(definition.declared, **changes)
        blueprint.tasks[definition.name] = dataclasses.replace(definition, declared=declared)
    return blueprint


def erp_worker(
    settings: Settings, db_url: str, *blueprints: TaskBlueprint
) -> contextlib.AbstractAsyncContextManager[None]:
    return running_worker(
        settings, db_url, queues=["erp_sync"], blueprints=blueprints or ERP_BLUEPRINTS
    )


async def start(api: httpx.AsyncClient, kind: str = "assets", **params: Any) -> str:
    response = await api.post(f"/erp/sync-{kind}", params=params)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["success"] is True
    assert body["status"] == "PENDING"
    assert body["message"].endswith("sync started in background")
    assert response.headers["Location"] == f"/erp/task-status/{body['task_id']}"
    return str(body["task_id"])


async def status_of(api: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    response = await api.get(f"/erp/task-status/{task_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["task_id"] == task_id
    return body


async def follow(
    api: httpx.AsyncClient, task_id: str, until: set[str] = TERMINAL, within: float = 60
) -> list[dict[str, Any]]:
    """Poll the status until it is in ``until``; returns every answer seen, the last one last."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + within
    while True:
        seen.append(await status_of(api, task_id))
        if seen[-1]["status"] in until:
            return seen
        assert time.monotonic() < deadline, f"still {seen[-1]} after {within}s"
        await asyncio.sleep(0.02)


async def rows(conn: DictConnection, query: str, *params: Any) -> list[dict[str, Any]]:
    await conn.commit()  # see other connections' commits
    cursor = await conn.execute(query, params)
    return await cursor.fetchall()


async def runs(conn: DictConnection, kind: erp.Kind = "assets") -> list[erp.SyncRun]:
    await conn.commit()
    return list(reversed(await erp.list_runs(conn, kind=kind, limit=100)))


async def synced(conn: DictConnection, table: str) -> tuple[int, int]:
    """Rows and distinct ERP ids in erp.assets or erp.locations."""
    query = {
        "assets": "SELECT count(*) AS n, count(DISTINCT erp_id) AS ids FROM erp.assets",
        "locations": "SELECT count(*) AS n, count(DISTINCT erp_id) AS ids FROM erp.locations",
    }[table]
    (row,) = await rows(conn, query)
    return int(row["n"]), int(row["ids"])


# -- the happy paths -------------------------------------------------------------------------


async def test_a_10000_asset_sync_reports_progress_and_succeeds(
    api: httpx.AsyncClient,
    conn: DictConnection,
    standin: ErpStandin,
    sync_settings: Settings,
    db_url: str,
) -> None:
    standin.seed(assets=10_000, locations=100)
    standin.page_delay = 0.05  # 20 pages: long enough to be seen running
    task_id = await start(api)
    assert (await status_of(api, task_id))["status"] == "PENDING"

    async with erp_worker(sync_settings, db_url):
        seen = await follow(api, task_id)

    done = seen[-1]
    assert done["status"] == "SUCCESS", done
    assert done["error"] is None
    running = [answer for answer in seen if answer["status"] == "PROGRESS" and answer["progress"]]
    midway = [a for a in running if 0 < a["progress"]["assets_processed"] < 10_000]
    assert midway, "progress was reported while the sync ran"
    for answer in midway:
        progress = answer["progress"]
        processed = progress["assets_processed"]
        assert progress["progress"] == f"{processed}/10000"
        assert progress["message"] == f"Processing {processed}/10000 assets"
        assert progress["assets_created"] == processed
        assert progress["assets_updated"] == 0
    assert done["progress"] == {
        "message": "Done: 10000 assets processed",
        "progress": "10000/10000",
        "assets_processed": 10_000,
        "assets_created": 10_000,
        "assets_updated": 0,
    }
    result = done["result"]
    assert (result["total"], result["processed"], result["created"]) == (10_000, 10_000, 10_000)
    assert (result["updated"], result["unchanged"], result["pages"]) == (0, 0, 20)
    assert result["full_sync"] is True
    assert result["since"] is None

    assert await synced(conn, "assets") == (10_000, 10_000)
    expected = next(a for a in standin.snapshot("assets") if a["id"] == "A0004242")
    (stored,) = await rows(conn, "SELECT * FROM erp.assets WHERE erp_id = %s", "A0004242")
    assert stored["code"] == expected["code"]
    assert stored["name"] == expected["name"]
    assert stored["location_erp_id"] == expected["location_id"]
    assert stored["purchase_cost"] == Decimal(expected["purchase_cost"])
    assert stored["purchase_date"].isoformat() == expected["purchase_date"]
    assert stored["erp_updated_at"] == datetime.datetime.fromisoformat(expected["updated_at"])

    (run,) = await runs(conn)
    assert (run.status, run.job_id, run.attempt, run.pages_done) == (
        "succeeded",
        int(task_id),
        1,
        20,
    )
    assert run.duration_seconds is not None
    assert run.duration_seconds < 30, "set-wise upserts: seconds, not minutes"
    assert standin.pages_requested("assets") == list(range(1, 21))


async def test_incremental_sync_fetches_only_the_changes_and_full_sync_everything(
    api: httpx.AsyncClient,
    conn: DictConnection,
    standin: ErpStandin,
    sync_settings: Settings,
    db_url: str,
) -> None:
    standin.seed(assets=2_000, locations=10)
    async with erp_worker(sync_settings, db_url):
        first = (await follow(api, await start(api)))[-1]
        assert first["result"]["created"] == 2_000
        touched = standin.touch("assets", 100)
        added = standin.add("assets", 20)
        incremental = (await follow(api, await start(api)))[-1]
        full = (await follow(api, await start(api, force_full_sync="true")))[-1]
        again = (await follow(api, await start(api)))[-1]

    assert incremental["status"] == "SUCCESS"
    result = incremental["result"]
    assert result["full_sync"] is False
    assert (result["total"], result["processed"]) == (120, 120)
    assert (result["created"], result["updated"], result["unchanged"]) == (20, 100, 0)
    first_run, incremental_run, full_run, last_run = await runs(conn)
    assert incremental_run.since == first_run.watermark
    assert datetime.datetime.fromisoformat(result["since"]) == first_run.watermark

    assert full["result"]["full_sync"] is True
    assert full["result"]["since"] is None
    assert (full["result"]["processed"], full["result"]["unchanged"]) == (2_020, 2_020)
    assert (full["result"]["created"], full["result"]["updated"]) == (0, 0)
    # After the full sync, an incremental one starts from the full sync's watermark.
    assert last_run.since == full_run.watermark
    assert (again["result"]["processed"], again["result"]["created"]) == (0, 0)

    assert await synced(conn, "assets") == (2_020, 2_020)
    changed = {a["id"]: a for a in standin.snapshot("assets") if a["id"] in touched}
    stored = await rows(
        conn, "SELECT erp_id, name FROM erp.assets WHERE erp_id = ANY(%s)", list(changed)
    )
    assert {row["erp_id"]: row["name"] for row in stored} == {
        erp_id: asset["name"] for erp_id, asset in changed.items()
    }
    assert all("(rev " in row["name"] for row in stored)
    assert len(await rows(conn, "SELECT 1 FROM erp.assets WHERE erp_id = ANY(%s)", added)) == 20


async def test_a_location_sync(
    api: httpx.AsyncClient,
    conn: DictConnection,
    standin: ErpStandin,
    sync_settings: Settings,
    db_url: str,
) -> None:
    standin.seed(assets=0, locations=1_200)
    task_id = await start(api, "locations")
    async with erp_worker(sync_settings, db_url):
        done = (await follow(api, task_id))[-1]
    assert done["task"] == "erp.sync_locations"
    assert done["status"] == "SUCCESS", done
    assert done["progress"]["locations_processed"] == 1_200
    assert done["progress"]["locations_created"] == 1_200
    assert done["progress"]["progress"] == "1200/1200"
    assert (done["result"]["kind"], done["result"]["pages"]) == ("locations", 3)
    assert await synced(conn, "locations") == (1_200, 1_200)
    (child,) = await rows(conn, "SELECT * FROM erp.locations WHERE erp_id = 'L00042'")
    assert child["parent_erp_id"] == "L00004"
    assert await runs(conn, "assets") == []
    assert [run.status for run in await runs(conn, "locations")] == ["succeeded"]


async def test_one_erp_sync_runs_at_a_time(
    api: httpx.AsyncClient,
    conn: DictConnection,
    standin: ErpStandin,
    sync_settings: Settings,
    db_url: str,
) -> None:
    standin.seed(assets=1_500, locations=1_500)
    standin.page_delay = 0.1
    assets_id = await start(api, "assets")
    locations_id = await start(api, "locations")
    async with erp_worker(sync_settings, db_url):  # concurrency 4: the lock serialises them
        await follow(api, assets_id)
        await follow(api, locations_id)
    first, second = sorted(
        [*await runs(conn, "assets"), *await runs(conn, "locations")], key=lambda r: r.started_at
    )
    assert (first.status, second.status) == ("succeeded", "succeeded")
    assert first.finished_at is not None
    assert first.finished_at <= second.started_at, "the second started after the first ended"


# -- failures --------------------------------------------------------------------------------


async def test_an_erp_500_is_retried_later_with_the_error_visible(
    api: httpx.AsyncClient,
    conn: DictConnection,
    standin: ErpStandin,
    sync_settings: Settings,
    db_url: str,
) -> None:
    standin.seed(assets=2_000, locations=0)
    standin.fail("assets", page=2, status=500)
    task_id = await start(api)
    async with erp_worker(sync_settings, db_url):  # the real policy: a retry in about 60 s
        retrying = (await follow(api, task_id, until={"RETRY", *TERMINAL}))[-1]

    assert retrying["status"] == "RETRY"
    assert retrying["error"].startswith(
        "ErpUnavailable: the ERP answered 500 to GET /api/v1/assets page 2:"
    )
    job = (await api.get(f"/jobs/{task_id}")).json()
    assert [error["type"] for error in job["errors"]] == ["ErpUnavailable"]
    due_in = datetime.datetime.fromisoformat(job["scheduled_at"]) - datetime.datetime.now(
        datetime.UTC
    )
    low, high = RETRY.delay(1) * 0.85, RETRY.delay(1) * 1.1
    assert datetime.timedelta(seconds=low) < due_in < datetime.timedelta(seconds=high)
    (run,) = await runs(conn)
    assert run.status == "failed"
    assert run.error is not None
    assert "answered 500" in run.error
    assert (run.next_page, run.processed) == (2, 500), "page 1 stays committed"
    assert await synced(conn, "assets") == (500, 500)

    history = await api.get("/erp/sync-runs", params={"status": "failed", "kind": "assets"})
    assert history.status_code == 200, history.text
    assert [entry["id"] for entry in history.json()] == [run.id]


async def test_a_retry_resumes_after_the_last_committed_page(
    api: httpx.AsyncClient,
    conn: DictConnection,
    standin: ErpStandin,
    sync_settings: Settings,
    db_url: str,
) -> None:
    standin.seed(assets=2_000, locations=0)
    standin.fail("assets", page=3, status=503, times=1)
    task_id = await start(api)
    quick = with_retry(sync_assets, retry=Retry(retries=2, on=(erp.ErpUnavailable,)))
    async with erp_worker(sync_settings, db_url, quick):
        done = (await follow(api, task_id))[-1]

    assert done["status"] == "SUCCESS", done
    assert (done["result"]["processed"], done["result"]["created"]) == (2_000, 2_000)
    assert standin.pages_requested("assets") == [1, 2, 3, 3, 4], "pages 1-2 were not fetched again"
    failed, resumed = await runs(conn)
    assert (failed.status, failed.attempt, failed.next_page) == ("failed", 1, 3)
    assert failed.error is not None
    assert "answered 503" in failed.error
    assert (resumed.status, resumed.attempt, resumed.resumed_from) == ("succeeded", 2, failed.id)
    assert resumed.watermark == failed.watermark
    assert done["result"]["resumed_from"] == failed.id
    assert await synced(conn, "assets") == (2_000, 2_000)


async def test_an_erp_that_keeps_failing_fails_the_job(
    api: httpx.AsyncClient,
    conn: DictConnection,
    standin: ErpStandin,
    sync_settings: Settings,
    db_url: str,
) -> None:
    standin.seed(assets=600, locations=0)
    standin.fail("assets", page=1, status=500)
    task_id = await start(api)
    quick = with_retry(sync_assets, retry=Retry(retries=1, on=(erp.ErpUnavailable,)))
    async with erp_worker(sync_settings, db_url, quick):
        seen = await follow(api, task_id)

    assert seen[-1]["status"] == "FAILURE"
    assert seen[-1]["result"] is None
    assert "answered 500 to GET /api/v1/assets page 1" in seen[-1]["error"]
    job = (await api.get(f"/jobs/{task_id}")).json()
    assert job["state"] == "FAILURE"
    assert [(error["attempt"], error["type"]) for error in job["errors"]] == [
        (1, "ErpUnavailable"),
        (2, "ErpUnavailable"),
    ]
    assert [(run.status, run.attempt) for run in await runs(conn)] == [("failed", 1), ("failed", 2)]
    assert await synced(conn, "assets") == (0, 0)


async def test_an_erp_timeout_is_retried_with_the_error_visible(
    conn: DictConnection,
    standin: ErpStandin,
    sync_settings: Settings,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TASKHUB_ERP_TIMEOUT", "0.3")
    slow = sync_settings
    standin.seed(assets=100, locations=0)
    standin.fail("assets", page=1, status=None, delay=2)  # answers, but too late
    async with erp_api(slow, db_url) as api:
        task_id = await start(api)
        async with erp_worker(slow, db_url):
            retrying = (await follow(api, task_id, until={"RETRY", *TERMINAL}))[-1]
    assert retrying["status"] == "RETRY"
    assert retrying["error"] == (
        "ErpUnavailable: the ERP did not answer GET /api/v1/assets page 1 within 0.3 s"
        " (TASKHUB_ERP_TIMEOUT)"
    )
    (run,) = await runs(conn)
    assert run.status == "failed"
    assert run.error == retrying["error"].removeprefix("ErpUnavailable: ")


async def test_a_wrong_erp_token_fails_at_once(
    conn: DictConnection,
    standin: ErpStandin,
    sync_settings: Settings,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TASKHUB_ERP_TOKEN", "not-the-erp-token")
    wrong = sync_settings
    standin.seed(assets=100, locations=0)
    async with erp_api(wrong, db_url) as api:
        task_id = await start(api)
        async with erp_worker(wrong, db_url):
            done = (await follow(api, task_id))[-1]
    assert done["status"] == "FAILURE", "a retry would not fix the credentials"
    assert done["error"] == (
        "ErpRejected: the ERP refused the credentials (401 to GET /api/v1/assets page 1):"
        " check TASKHUB_ERP_TOKEN"
    )
    (run,) = await runs(conn)
    assert (run.status, run.error) == ("failed", done["error"].removeprefix("ErpRejected: "))


async def test_records_the_erp_should_not_send_fail_the_job(
    api: httpx.AsyncClient,
    conn: DictConnection,
    standin: ErpStandin,
    sync_settings: Settings,
    db_url: str,
) -> None:
    standin.seed(assets=700, locations=0)
    standin.records["assets"][600]["updated_at"] = "yesterday"
    task_id = await start(api)
    async with erp_worker(sync_settings, db_url):
        done = (await follow(api, task_id))[-1]
    assert done["status"] == "FAILURE"
    assert done["error"].startswith(
        "ErpBadData: the ERP's answer to GET /api/v1/assets page 2 is not a page of assets:"
        " items.100.updated_at: "
    )
    assert await synced(conn, "assets") == (500, 500), "page 1 committed, page 2 not"


async def test_past_the_soft_time_limit_the_sync_stops_and_a_retry_resumes(
    api: httpx.AsyncClient,
    conn: DictConnection,
    standin: ErpStandin,
    sync_settings: Settings,
    db_url: str,
) -> None:
    standin.seed(assets=5_000, locations=0)
    standin.page_delay = 0.2
    task_id = await start(api)
    hurried = with_retry(sync_assets, soft_time_limit=0.5, time_limit=30)
    async with erp_worker(sync_settings, db_url, hurried):
        stopped = (await follow(api, task_id))[-1]
    assert stopped["status"] == "FAILURE"
    assert stopped["error"] == ("SoftTimeLimitExceeded: the task ran past its soft time limit")
    (run,) = await runs(conn)
    assert run.status == "failed"
    assert 0 < run.processed < 5_000

    standin.page_delay = 0
    retried = await api.post(f"/jobs/{task_id}/retry")
    assert retried.status_code == 200, retried.text
    async with erp_worker(sync_settings, db_url):
        done = (await follow(api, task_id))[-1]
    assert done["status"] == "SUCCESS", done
    assert (done["result"]["processed"], done["result"]["created"]) == (5_000, 5_000)
    assert done["result"]["resumed_from"] == run.id
    assert standin.pages_requested("assets").count(1) == 1
    assert await synced(conn, "assets") == (5_000, 5_000)


async def test_a_superseded_run_stops_and_writes_nothing_more(
    conn: DictConnection, standin: ErpStandin, erp_url: str, db_url: str
) -> None:
    """A presumed-dead attempt that wakes up finds its run failed by a later one: it stops."""
    standin.seed(assets=3_000, locations=0)
    standin.page_delay = 0.2

    @contextlib.asynccontextmanager
    async def transaction() -> AsyncIterator[DictConnection]:
        async with (
            await psycopg.AsyncConnection.connect(db_url, row_factory=dict_row) as own,
            own.transaction(),
        ):
            yield own

    job = erp.SyncJob(
        kind="assets",
        force_full_sync=True,
        settings=ErpSettings(base_url=erp_url, token=ERP_TOKEN, page_size=500),
        job_id=None,
        attempt=None,
        transaction=transaction,
        progress=lambda *args, **kwargs: None,
        check=lambda: None,
    )
    zombie = asyncio.create_task(erp.run_sync(job))

    async def one_page_committed() -> bool:
        return bool(await rows(conn, "SELECT 1 FROM erp.sync_runs WHERE pages_done >= 1"))

    await eventually(one_page_committed)
    # What the next attempt's start does.
    await conn.execute(erp.QUERIES["erp_fail_interrupted_runs"], {"kind": "assets", "job_id": None})
    await conn.commit()
    with pytest.raises(erp.RunSuperseded):
        await zombie
    (run,) = await runs(conn)
    assert run.status == "failed"
    assert run.error == "interrupted: the worker running it stopped before it finished"
    stored, _ = await synced(conn, "assets")
    assert stored == run.processed < 3_000


# -- the endpoints' refusals -----------------------------------------------------------------


async def test_bad_input_is_a_4xx_and_enqueues_nothing(
    api: httpx.AsyncClient, conn: DictConnection
) -> None:
    response = await api.post("/erp/sync-assets", params={"force_full_sync": "maybe"})
    assert response.status_code == 422, response.text
    assert ["query", "force_full_sync"] in [error["loc"] for error in response.json()["detail"]]
    assert await count_jobs(conn) == 0


async def test_a_second_waiting_sync_of_a_kind_is_refused(
    api: httpx.AsyncClient, conn: DictConnection
) -> None:
    first = await start(api)
    second = await api.post("/erp/sync-assets", params={"force_full_sync": "true"})
    assert second.status_code == 409, second.text
    assert second.json()["detail"].startswith(
        f"an asset sync is already waiting: task_id {first} (GET /erp/task-status/{first})"
    )
    await start(api, "locations")  # another kind: its own queueing lock
    assert await count_jobs(conn) == 2


async def test_unknown_task_ids_are_404(api: httpx.AsyncClient, conn: DictConnection) -> None:
    async with conn.transaction():
        ping_id = await defer.defer(conn, ping, {})
    for task_id in ("999", str(ping_id), "abc123-def456", "0", "99999999999999999999"):
        response = await api.get(f"/erp/task-status/{task_id}")
        assert response.status_code == 404, (task_id, response.text)
        assert response.json() == {"detail": f"no ERP sync task has task_id {task_id!r}"}
    too_long = await api.get(f"/erp/task-status/{'9' * 65}")
    assert too_long.status_code == 422


async def test_auth_like_the_other_endpoints(
    sync_settings: Settings, db_url: str, conn: DictConnection
) -> None:
    app = create_app(sync_settings, db_url, apps=load_apps(sync_settings, [APP]))
    async with running_api(app, token=None) as anonymous:
        assert (await anonymous.post("/erp/sync-assets")).status_code == 401
        assert (await anonymous.get("/erp/task-status/1")).status_code == 401
        assert (await anonymous.get("/erp/sync-runs")).status_code == 401
    async with running_api(app, token=READ_TOKEN) as reader:
        refused = await reader.post("/erp/sync-assets")
        assert refused.status_code == 403, refused.text
        assert (await reader.post("/erp/sync-locations")).status_code == 403
        assert await count_jobs(conn) == 0
    async with running_api(app) as operator:
        task_id = await start(operator)
    async with running_api(app, token=READ_TOKEN) as reader:
        response = await reader.get(f"/erp/task-status/{task_id}", headers=bearer(READ_TOKEN))
        assert response.status_code == 200
        assert response.json() == {
            "task_id": task_id,
            "task": "erp.sync_assets",
            "status": "PENDING",
            "progress": None,
            "result": None,
            "error": None,
        }
        assert (await reader.get("/erp/sync-runs")).json() == []


async def test_without_an_erp_configured_the_job_fails_saying_what_to_set(
    settings: Settings, db_url: str, conn: DictConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    point_at_erp(monkeypatch, None, token=None)
    unconfigured = fast_settings(settings)
    async with erp_api(unconfigured, db_url) as api:
        task_id = await start(api)
        async with erp_worker(unconfigured, db_url):
            done = (await follow(api, task_id))[-1]
    assert done["status"] == "FAILURE", "not retried: only an operator can fix it"
    assert done["error"] == (
        "ErpNotConfigured: the ERP sync is not configured: set TASKHUB_ERP_BASE_URL"
        " (and TASKHUB_ERP_TOKEN) on the workers"
    )
    (run,) = await runs(conn)
    assert (run.status, run.error) == ("failed", done["error"].removeprefix("ErpNotConfigured: "))


# -- the app's migrations --------------------------------------------------------------------


def test_the_app_adopts_the_tables_taskhubs_old_revision_0007_made(empty_db_url: str) -> None:
    """Before the example became an app, taskhub's revision 0007 created erp.*; the app's
    first revision finds them (IF NOT EXISTS) and keeps their rows."""
    migrate.upgrade(empty_db_url)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        assert conn.execute("SELECT to_regnamespace('erp')").fetchone() == (None,)
        assert erp_app.migrations is not None
        sql = (erp_app.migrations / "sql" / "0001_erp.sql").read_text(encoding="utf-8")
        conn.execute(sql.replace(" IF NOT EXISTS", ""))  # what revision 0007 ran
        conn.execute(
            "INSERT INTO erp.locations (erp_id, code, name, erp_updated_at)"
            " VALUES ('L1', 'LOC-1', 'synced before', now())"
        )
    migrate.upgrade(empty_db_url, apps=[erp_app])
    migrate.upgrade(empty_db_url, apps=[erp_app])
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version_erp").fetchall() == [("0001",)]
        assert conn.execute("SELECT name FROM erp.locations").fetchall() == [("synced before",)]
    migrate.downgrade(empty_db_url, "base", apps=[erp_app])
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("SELECT to_regnamespace('erp')").fetchone() == (None,)


# -- the stand-in ERP itself -----------------------------------------------------------------


def test_the_standin_erp_pages_filters_checks_the_token_and_injects_faults() -> None:
    app = demo_app(assets=2_500, locations=30, token=ERP_TOKEN)
    with serving(app) as url, httpx.Client(base_url=url, headers=bearer(ERP_TOKEN)) as client:
        assert httpx.get(f"{url}/api/v1/assets").status_code == 401
        page = client.get("/api/v1/assets", params={"page": 3, "page_size": 5000}).json()
        assert (page["page"], page["page_size"], page["total"], page["total_pages"]) == (
            3,
            1000,
            2_500,
            3,
        )
        assert [item["id"] for item in page["items"][:2]] == ["A0002001", "A0002002"]
        assert len(page["items"]) == 500

        since = datetime.datetime.now(datetime.UTC).isoformat()
        touched = client.post("/admin/touch", json={"count": 7}).json()["ids"]
        added = client.post("/admin/add", json={"resource": "locations", "count": 2}).json()
        changed = client.get("/api/v1/assets", params={"updated_since": since}).json()
        assert [item["id"] for item in changed["items"]] == touched
        assert changed["total"] == 7
        locations = client.get("/api/v1/locations", params={"updated_since": since}).json()
        assert [item["id"] for item in locations["items"]] == added["ids"] == ["L00031", "L00032"]
        naive = client.get("/api/v1/assets", params={"updated_since": "2030-01-01T00:00:00"})
        assert naive.status_code == 422

        fault = {"resource": "assets", "page": 2, "status": 502, "times": 2}
        assert client.post("/admin/faults", json=fault).status_code == 200
        codes = [client.get("/api/v1/assets", params={"page": 2}).status_code for _ in range(3)]
        assert codes == [502, 502, 200]
        client.post("/admin/faults", json={**fault, "times": None})
        client.delete("/admin/faults")
        assert client.get("/api/v1/assets", params={"page": 2}).status_code == 200

        assert client.post("/admin/seed", json={"assets": 3, "locations": 0}).status_code == 200
        assert client.get("/api/v1/assets").json()["total"] == 3
    assert app.state.erp.pages_requested("assets") == [3, 1, 2, 2, 2, 2, 1]
