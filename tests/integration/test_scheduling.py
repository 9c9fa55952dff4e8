"""The external schedule sync against a real database, a real worker and the stand-in API
served for real (uvicorn on a local port), failures injected in it. The example runs as the
app it is: its schema migrated by ``migrate.upgrade(..., apps=[app])``, its routers in the API,
its tasks in the worker, its settings from ``TASKHUB_SCHEDULING_*``.

Time is under control: a retry's backoff is cut short by moving the job's scheduled_at to now
(after checking it was scheduled where the policy says); the hourly refresh is deferred by a
deferrer asked about chosen instants.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row
from pydantic import SecretStr

from backend.api import create_app
from backend.db import DictConnection
from backend.declare.apps import LoadedApps, load_apps
from backend.examples.scheduling import app as scheduling_app
from backend.examples.scheduling import schemas, service
from backend.examples.scheduling import tasks as scheduling_tasks
from backend.examples.scheduling.blueprint import QUEUE, REFRESH_EVENTS
from backend.examples.scheduling.settings import SchedulingSettings
from backend.examples.scheduling.standin import Fault, SchedulingStandin
from backend.examples.serving import serving
from backend.process import migrate
from backend.runtime.app import build_task_app
from backend.runtime.isolation import SoftTimeLimitExceeded
from backend.runtime.periodic import ZonedDeferrer
from backend.settings import Settings
from tests.conftest import BLUEPRINTS, eventually
from tests.integration.conftest import running_api, running_worker

REMOTE_TOKEN = "remote-scheduling-token-0123456789"
MONDAY_8 = "2030-01-07T08:00:00Z"
MONDAY_12 = "2030-01-07T12:00:00Z"
NEW_SCHEDULE = {"title": "Store 112 reset", "starts_at": MONDAY_8, "ends_at": MONDAY_12}


@dataclass
class Remote:
    standin: SchedulingStandin
    url: str

    def client(self) -> httpx.AsyncClient:
        """Someone else using the remote API directly (an edit made on the remote side)."""
        return httpx.AsyncClient(
            base_url=self.url, headers={"Authorization": f"Bearer {REMOTE_TOKEN}"}
        )


@pytest.fixture
def remote() -> Iterator[Remote]:
    standin = SchedulingStandin(token=REMOTE_TOKEN)
    with serving(standin.app) as url:
        yield Remote(standin, url)


@pytest.fixture(autouse=True)
def scheduling_db(db_url: str) -> str:
    """The test database with the app's schema too, as `taskhub migrate --app` makes it."""
    migrate.upgrade(db_url, apps=[scheduling_app])
    return db_url


@pytest.fixture
def sync_settings(settings: Settings, remote: Remote, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """taskhub's settings for the test, and the app's (``SchedulingSettings``, read from the
    environment by the worker's tasks) pointing at the stand-in."""
    monkeypatch.setenv("TASKHUB_SCHEDULING_BASE_URL", remote.url)
    monkeypatch.setenv("TASKHUB_SCHEDULING_TOKEN", REMOTE_TOKEN)
    monkeypatch.setenv("TASKHUB_SCHEDULING_TIMEOUT", "0.5")
    return settings.model_copy(
        update={
            "fetch_polling_interval": 0.1,
            # The tests defer the hourly refresh themselves, at chosen ticks.
            "schedules": f"{REFRESH_EVENTS}=off",
        }
    )


@pytest.fixture
def apps(sync_settings: Settings) -> LoadedApps:
    """taskhub's tasks and the scheduling app, checked and their defaults bound, as every
    process loads them with TASKHUB_APPS=backend.examples.scheduling."""
    loaded = load_apps(sync_settings, [scheduling_app])
    assert loaded.settings_of(SchedulingSettings).timeout == 0.5
    return loaded


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[DictConnection]:
    """Autocommit: every statement commits, so the worker sees the test's updates at once."""
    async with await psycopg.AsyncConnection.connect(
        db_url, row_factory=dict_row, autocommit=True
    ) as connection:
        yield connection


@pytest.fixture
async def api(
    sync_settings: Settings, db_url: str, apps: LoadedApps
) -> AsyncIterator[httpx.AsyncClient]:
    async with running_api(create_app(sync_settings, db_url, apps=apps)) as client:
        yield client


@contextlib.asynccontextmanager
async def worker(settings: Settings, db_url: str) -> AsyncIterator[None]:
    async with running_worker(
        settings, db_url, queues=[QUEUE], blueprints=(*BLUEPRINTS, scheduling_tasks.blueprint)
    ):
        yield


async def one(db: DictConnection, query: str, *params: Any) -> dict[str, Any]:
    cursor = await db.execute(query, params)
    row = await cursor.fetchone()
    assert row is not None, query
    return row


async def counts(db: DictConnection) -> tuple[int, int]:
    """(schedules, jobs)."""
    row = await one(
        db,
        "SELECT (SELECT count(*) FROM scheduling.schedules) AS schedules,"
        " (SELECT count(*) FROM procrastinate_jobs) AS jobs",
    )
    return row["schedules"], row["jobs"]


async def finish(
    db: DictConnection, job_id: int, within: float = 30
) -> tuple[dict[str, Any], list[float]]:
    """Wait for the job to end. Each retry's backoff is cut short (its scheduled_at moved to
    now); the backoffs it was given are returned, in seconds."""
    delays: list[float] = []
    deadline = time.monotonic() + within
    while True:
        row = await one(
            db,
            "SELECT status::text AS status, attempts,"
            " extract(epoch FROM scheduled_at - now())::float AS wait"
            " FROM procrastinate_jobs WHERE id = %s",
            job_id,
        )
        if row["status"] in ("succeeded", "failed"):
            return row, delays
        if row["status"] == "todo" and row["wait"] is not None and row["wait"] > 1:
            delays.append(row["wait"])
            await db.execute(
                "UPDATE procrastinate_jobs SET scheduled_at = now()"
                " WHERE id = %s AND status = 'todo'",
                (job_id,),
            )
        assert time.monotonic() < deadline, f"job {job_id} is still {row['status']}"
        await asyncio.sleep(0.05)


def assert_backoff(delays: list[float], expected: list[float]) -> None:
    """The policy's exponential backoff, ±10% jitter (observed a moment after it was set)."""
    assert len(delays) == len(expected), delays
    for delay, base in zip(delays, expected, strict=True):
        assert base * 0.9 - 2 <= delay <= base * 1.1, (delays, expected)


async def job_errors(db: DictConnection, job_id: int) -> list[str]:
    cursor = await db.execute(
        "SELECT attempt || ' ' || type || ': ' || message AS error FROM taskhub.job_errors"
        " WHERE job_id = %s ORDER BY attempt",
        (job_id,),
    )
    return [row["error"] for row in await cursor.fetchall()]


async def job_result(db: DictConnection, job_id: int) -> Any:
    row = await one(db, "SELECT result FROM taskhub.job_results WHERE job_id = %s", job_id)
    return row["result"]


async def new_employee(api: httpx.AsyncClient, code: str = "E1001") -> dict[str, Any]:
    response = await api.post(
        "/scheduling/employees", json={"code": code, "name": f"Employee {code}"}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def new_schedule(api: httpx.AsyncClient, employee_id: int, **changes: Any) -> dict[str, Any]:
    response = await api.post(
        "/scheduling/schedules", json={**NEW_SCHEDULE, "employee_id": employee_id, **changes}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    assert body["sync_status"] == "pending"
    assert body["last_job_status"] == "todo"
    return body


async def schedule_row(api: httpx.AsyncClient, schedule_id: int) -> dict[str, Any]:
    response = await api.get(f"/scheduling/schedules/{schedule_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def synced(
    api: httpx.AsyncClient, db: DictConnection, employee_code: str = "E1001"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """An employee and one schedule, both pushed (a worker must be running)."""
    employee = await new_employee(api, employee_code)
    schedule = await new_schedule(api, employee["id"])
    for job_id in (employee["last_job_id"], schedule["last_job_id"]):
        row, _ = await finish(db, job_id)
        assert row["status"] == "succeeded"
    return employee, await schedule_row(api, schedule["id"])


# -- Done when: retries never make a second event ------------------------------------------


async def test_a_500_then_a_timeout_after_the_remote_committed_make_one_event(
    api: httpx.AsyncClient,
    db: DictConnection,
    remote: Remote,
    sync_settings: Settings,
    db_url: str,
) -> None:
    remote.standin.inject(Fault.error(500), Fault.timeout(), route="POST /events")
    employee = await new_employee(api)
    schedule = await new_schedule(api, employee["id"])
    job_id = schedule["last_job_id"]
    async with worker(sync_settings, db_url):
        job, delays = await finish(db, job_id)

    assert (job["status"], job["attempts"]) == ("succeeded", 3)
    assert_backoff(delays, [60, 120])
    # Three creates under one key: refused, created but unanswered, replayed.
    creates = remote.standin.requests("POST /events")
    assert [(r.fault, r.status) for r in creates] == [
        ("error", 500),
        ("timeout", None),
        (None, 201),
    ]
    assert len({r.idempotency_key for r in creates}) == 1
    assert remote.standin.pending_faults() == 0
    [event] = remote.standin.events()
    assert (event.title, event.employee_code, event.reference) == (
        "Store 112 reset",
        "E1001",
        creates[0].idempotency_key,
    )
    assert event.starts_at == datetime.datetime(2030, 1, 7, 8, tzinfo=datetime.UTC)
    row = await schedule_row(api, schedule["id"])
    assert row["external_id"] == event.id
    assert (row["sync_status"], row["synced_version"], row["sync_error"]) == ("synced", 1, None)
    assert (row["last_job_id"], row["last_job_status"]) == (job_id, "succeeded")
    errors = await job_errors(db, job_id)
    assert errors[0].startswith("1 SchedulingUnavailable: POST /events answered 500")
    assert errors[1] == "2 SchedulingUnavailable: POST /events: no answer within 0.5 s"
    assert len(errors) == 2
    assert (await job_result(db, job_id))["outcome"] == "created"


async def test_the_remote_knows_the_key_and_the_token(remote: Remote) -> None:
    """The stand-in's own contract, which the test above relies on."""
    body = {"employee_code": "E7", "title": "Visit", "starts_at": MONDAY_8, "ends_at": MONDAY_12}
    key = {"Idempotency-Key": "k-1"}
    async with remote.client() as client:
        assert (await client.put("/employees/E7", json={"name": "E"})).status_code == 201
        first = await client.post("/events", json=body, headers=key)
        again = await client.post("/events", json=body, headers=key)
        other = await client.post("/events", json={**body, "title": "Other"}, headers=key)
        async with httpx.AsyncClient(base_url=remote.url) as stranger:
            anonymous = await stranger.get("/events")
    assert first.status_code == 201
    assert (again.status_code, again.headers["Idempotent-Replayed"]) == (201, "true")
    assert again.json() == first.json()
    assert other.status_code == 409
    assert anonymous.status_code == 401
    assert len(remote.standin.events()) == 1


# -- Done when: a rolled-back edit leaves no job -------------------------------------------


@pytest.mark.parametrize(
    "edit",
    ["reschedule", "change_employee", "delete", "rename_employee", "create"],
)
async def test_a_rolled_back_edit_leaves_no_job(
    api: httpx.AsyncClient, db: DictConnection, edit: str
) -> None:
    employee = await new_employee(api)
    other = await new_employee(api, "E2002")
    schedule = await new_schedule(api, employee["id"])
    before = await counts(db)
    assert before == (1, 3)

    view: schemas.ScheduleView | schemas.EmployeeView
    with pytest.raises(RuntimeError, match="rolled back"):
        async with db.transaction():
            if edit == "reschedule":
                change = schemas.ScheduleChange.model_validate(
                    {"starts_at": "2030-01-08T08:00:00Z", "ends_at": "2030-01-08T12:00:00Z"}
                )
                view = await service.change_schedule(db, schedule["id"], change)
            elif edit == "change_employee":
                change = schemas.ScheduleChange(employee_id=other["id"])
                view = await service.change_schedule(db, schedule["id"], change)
            elif edit == "delete":
                view = await service.delete_schedule(db, schedule["id"])
            elif edit == "rename_employee":
                rename = schemas.EmployeeChange(name="Someone Else")
                view = await service.change_employee(db, employee["id"], rename)
            else:
                data = schemas.ScheduleCreate.model_validate(
                    {**NEW_SCHEDULE, "employee_id": employee["id"]}
                )
                view = await service.create_schedule(db, data)
            # Inside the transaction the row changed and its job exists...
            assert view.version == (1 if edit == "create" else 2)
            assert view.last_job_id is not None
            assert (await counts(db))[1] == before[1] + 1
            raise RuntimeError("rolled back")

    # ...and after the rollback neither does.
    assert await counts(db) == before
    row = await schedule_row(api, schedule["id"])
    assert (row["version"], row["starts_at"], row["deleted_at"]) == (1, MONDAY_8, None)
    assert row["last_job_id"] == schedule["last_job_id"]
    response = await api.get(f"/scheduling/employees/{employee['id']}")
    assert (response.json()["version"], response.json()["name"]) == (1, "Employee E1001")


# -- Failure paths: invalid input, unknown rows -------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"ends_at": MONDAY_8, "starts_at": MONDAY_12}, "body"),
        ({"starts_at": "2030-01-07T08:00:00"}, "starts_at"),  # no timezone
        ({"starts_at": "0001-01-01T00:00:00+05:00"}, "starts_at"),
        ({"title": "a\x00b"}, "title"),
        ({"title": "   "}, "title"),
        ({"title": None}, "title"),
        ({"employee_id": 0}, "employee_id"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_invalid_input_is_422_with_no_row_and_no_job(
    api: httpx.AsyncClient, db: DictConnection, body: dict[str, Any], field: str
) -> None:
    employee = await new_employee(api)
    response = await api.post(
        "/scheduling/schedules", json={**NEW_SCHEDULE, "employee_id": employee["id"], **body}
    )
    assert response.status_code == 422, response.text
    locations = [error["loc"] for error in response.json()["detail"]]
    assert any(loc[:2] == ["body", field] or loc == [field] for loc in locations), locations
    assert await counts(db) == (0, 1)  # the employee's job only


async def test_a_lone_surrogate_is_422(api: httpx.AsyncClient, db: DictConnection) -> None:
    employee = await new_employee(api)
    raw = (
        b'{"employee_id": %d, "title": "\\ud800", "starts_at": "2030-01-07T08:00:00Z",'
        b' "ends_at": "2030-01-07T12:00:00Z"}' % employee["id"]
    )
    response = await api.post(
        "/scheduling/schedules", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert ["body", "title"] in [error["loc"] for error in response.json()["detail"]]
    assert await counts(db) == (0, 1)


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"starts_at": "2030-01-07T13:00:00Z"}, 422),  # after the current end
        ({"ends_at": "2030-01-07T07:00:00Z"}, 422),  # before the current start
        ({}, 422),
        ({"title": None}, 422),
        ({"employee_id": 999}, 404),
    ],
)
async def test_a_bad_change_changes_nothing_and_defers_nothing(
    api: httpx.AsyncClient, db: DictConnection, change: dict[str, Any], status: int
) -> None:
    employee = await new_employee(api)
    schedule = await new_schedule(api, employee["id"])
    before = await counts(db)
    response = await api.patch(f"/scheduling/schedules/{schedule['id']}", json=change)
    assert response.status_code == status, response.text
    assert await counts(db) == before
    assert await schedule_row(api, schedule["id"]) == schedule


async def test_unknown_rows_are_404_and_defer_nothing(
    api: httpx.AsyncClient, db: DictConnection
) -> None:
    unknown_employee = await api.post(
        "/scheduling/schedules", json={**NEW_SCHEDULE, "employee_id": 5}
    )
    assert unknown_employee.status_code == 404
    assert unknown_employee.json() == {"detail": "no employee 5; create it first"}
    for method, path, body in [
        ("PATCH", "/scheduling/schedules/5", {"title": "x"}),
        ("DELETE", "/scheduling/schedules/5", None),
        ("GET", "/scheduling/schedules/5", None),
        ("PATCH", "/scheduling/employees/5", {"name": "x"}),
        ("GET", "/scheduling/employees/5", None),
    ]:
        response = await api.request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["detail"] in ("no schedule 5", "no employee 5")
    assert await counts(db) == (0, 0)

    # A deleted schedule can be read, not changed or deleted again.
    employee = await new_employee(api)
    schedule = await new_schedule(api, employee["id"])
    deleted = await api.delete(f"/scheduling/schedules/{schedule['id']}")
    assert deleted.status_code == 200, deleted.text
    before = await counts(db)
    for method, body in [("PATCH", {"title": "x"}), ("DELETE", None)]:
        response = await api.request(method, f"/scheduling/schedules/{schedule['id']}", json=body)
        assert response.status_code == 404, response.text
        assert response.json()["detail"] == f"schedule {schedule['id']} was deleted"
    assert await counts(db) == before


async def test_a_taken_employee_code_is_409(api: httpx.AsyncClient, db: DictConnection) -> None:
    await new_employee(api, "E1")
    response = await api.post("/scheduling/employees", json={"code": "E1", "name": "Twin"})
    assert response.status_code == 409, response.text
    row = await one(db, "SELECT count(*) AS n FROM scheduling.employees")
    assert row["n"] == 1
    assert (await counts(db))[1] == 1


# -- Failure paths: the dead letter ---------------------------------------------------------


async def test_after_three_failed_retries_the_job_and_the_row_say_failed(
    api: httpx.AsyncClient,
    db: DictConnection,
    remote: Remote,
    sync_settings: Settings,
    db_url: str,
) -> None:
    remote.standin.inject(*[Fault.error(503)] * 4, route="POST /events")
    employee = await new_employee(api)
    schedule = await new_schedule(api, employee["id"])
    job_id = schedule["last_job_id"]
    async with worker(sync_settings, db_url):
        job, delays = await finish(db, job_id)

    assert (job["status"], job["attempts"]) == ("failed", 4)
    assert_backoff(delays, [60, 120, 240])
    errors = await job_errors(db, job_id)
    assert [error[:25] for error in errors] == [
        f"{n} SchedulingUnavailable: " for n in (1, 2, 3, 4)
    ]
    assert all("POST /events answered 503" in error for error in errors)
    row = await schedule_row(api, schedule["id"])
    assert (row["sync_status"], row["last_job_status"], row["external_id"]) == (
        "failed",
        "failed",
        None,
    )
    assert row["sync_error"].startswith("attempt 4: SchedulingUnavailable: POST /events answered")
    # The dead letters, and the rows whose sync gave up.
    dead = await api.get("/jobs", params={"state": "FAILURE"})
    assert [item["id"] for item in dead.json()["items"]] == [job_id]
    failed = await api.get("/scheduling/schedules", params={"sync_status": "failed"})
    assert [item["id"] for item in failed.json()] == [schedule["id"]]
    assert remote.standin.events() == []


async def test_a_refusal_fails_at_once(
    api: httpx.AsyncClient,
    db: DictConnection,
    remote: Remote,
    sync_settings: Settings,
    db_url: str,
) -> None:
    remote.standin.inject(Fault.error(422), route="POST /events")
    employee = await new_employee(api)
    schedule = await new_schedule(api, employee["id"])
    async with worker(sync_settings, db_url):
        job, delays = await finish(db, schedule["last_job_id"])
    assert (job["status"], job["attempts"], delays) == ("failed", 1, [])
    row = await schedule_row(api, schedule["id"])
    assert row["sync_status"] == "failed"
    assert row["sync_error"].startswith("attempt 1: SchedulingRejected: POST /events answered 422")


async def test_without_a_base_url_syncs_fail_at_once_and_the_refresh_skips(
    api: httpx.AsyncClient,
    db: DictConnection,
    sync_settings: Settings,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TASKHUB_SCHEDULING_BASE_URL")
    employee = await new_employee(api)
    async with worker(sync_settings, db_url):
        job, _ = await finish(db, employee["last_job_id"])
        refresh = await _defer_refresh(sync_settings, db_url, at=_utc(2030, 1, 1, 10, 0, 1))
        refreshed, _ = await finish(db, refresh[0])
    assert (job["status"], job["attempts"]) == ("failed", 1)
    [error] = await job_errors(db, employee["last_job_id"])
    assert "TASKHUB_SCHEDULING_BASE_URL is not set" in error
    response = await api.get(f"/scheduling/employees/{employee['id']}")
    assert response.json()["sync_status"] == "failed"
    assert refreshed["status"] == "succeeded"
    assert (await job_result(db, refresh[0]))["configured"] is False


async def test_at_its_soft_time_limit_a_sync_stops_itself_and_says_why(
    api: httpx.AsyncClient, db: DictConnection, remote: Remote, sync_settings: Settings
) -> None:
    """The steps called as the job calls them, with a soft limit short enough to reach."""
    remote.standin.inject(Fault.timeout(), route="POST /events")
    patient = SchedulingSettings(base_url=remote.url, token=SecretStr(REMOTE_TOKEN), timeout=30)
    employee = await new_employee(api)
    schedule = await new_schedule(api, employee["id"])

    @contextlib.asynccontextmanager
    async def transaction() -> AsyncIterator[DictConnection]:
        async with db.transaction():
            yield db

    run = service.SyncRun(
        settings=patient,
        transaction=transaction,
        job_id=schedule["last_job_id"],
        attempt=1,
        retry=scheduling_tasks.RETRY,
        soft_time_limit=0.5,
    )
    started = time.monotonic()
    with pytest.raises(SoftTimeLimitExceeded, match=r"soft time limit of 0\.5 s"):
        await service.sync_schedule(run, schedule["id"])
    assert time.monotonic() - started < 5
    row = await schedule_row(api, schedule["id"])
    # Retried by the policy: not failed yet, the reason on the row.
    assert row["sync_status"] == "pending"
    assert row["sync_error"] == (
        "attempt 1: SoftTimeLimitExceeded: stopped itself at its soft time limit of 0.5 s"
    )
    assert run.is_final(SoftTimeLimitExceeded()) is False
    assert service.SyncRun(**{**vars(run), "attempt": 4}).is_final(SoftTimeLimitExceeded())


# -- Deletes ----------------------------------------------------------------------------------


async def test_deleting_a_never_synced_schedule_calls_no_remote(
    api: httpx.AsyncClient,
    db: DictConnection,
    remote: Remote,
    sync_settings: Settings,
    db_url: str,
) -> None:
    employee = await new_employee(api)
    schedule = await new_schedule(api, employee["id"])
    deleted = await api.delete(f"/scheduling/schedules/{schedule['id']}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["deleted_at"] is not None
    delete_job = deleted.json()["last_job_id"]
    assert delete_job != schedule["last_job_id"]
    async with worker(sync_settings, db_url):
        for job_id in (schedule["last_job_id"], delete_job):
            job, _ = await finish(db, job_id)
            assert job["status"] == "succeeded"
    assert (await job_result(db, schedule["last_job_id"]))["outcome"] == "deleted_locally"
    assert (await job_result(db, delete_job))["outcome"] == "not_on_remote"
    assert [r.route for r in remote.standin.requests() if "/events" in r.path] == []
    row = await schedule_row(api, schedule["id"])
    assert (row["sync_status"], row["external_id"], row["version"]) == ("deleted", None, 2)


async def test_deleting_a_synced_schedule_deletes_its_event(
    api: httpx.AsyncClient,
    db: DictConnection,
    remote: Remote,
    sync_settings: Settings,
    db_url: str,
) -> None:
    async with worker(sync_settings, db_url):
        _, schedule = await synced(api, db)
        [event] = remote.standin.events()
        deleted = await api.delete(f"/scheduling/schedules/{schedule['id']}")
        job, _ = await finish(db, deleted.json()["last_job_id"])
    assert job["status"] == "succeeded"
    assert remote.standin.events() == []
    assert [r.route for r in remote.standin.requests("DELETE /events")] == [
        f"DELETE /events/{event.id}"
    ]
    row = await schedule_row(api, schedule["id"])
    assert (row["sync_status"], row["external_id"]) == ("deleted", event.id)


async def test_deleting_after_every_answer_was_lost_deletes_the_event_the_remote_made(
    api: httpx.AsyncClient,
    db: DictConnection,
    remote: Remote,
    sync_settings: Settings,
    db_url: str,
) -> None:
    remote.standin.inject(*[Fault.timeout()] * 4, route="POST /events")
    employee = await new_employee(api)
    schedule = await new_schedule(api, employee["id"])
    async with worker(sync_settings, db_url):
        job, _ = await finish(db, schedule["last_job_id"])
        assert (job["status"], job["attempts"]) == ("failed", 4)
        # The remote made the event on the first attempt, and only then.
        [event] = remote.standin.events()
        row = await schedule_row(api, schedule["id"])
        assert (row["sync_status"], row["external_id"]) == ("failed", None)

        deleted = await api.delete(f"/scheduling/schedules/{schedule['id']}")
        job, _ = await finish(db, deleted.json()["last_job_id"])
    assert job["status"] == "succeeded"
    result = await job_result(db, deleted.json()["last_job_id"])
    assert (result["outcome"], result["external_id"]) == ("deleted", event.id)
    assert remote.standin.events() == []
    creates = remote.standin.requests("POST /events")
    assert [r.fault for r in creates] == ["timeout"] * 4 + [None]  # the last one: a replay
    assert len({r.idempotency_key for r in creates}) == 1
    assert (await schedule_row(api, schedule["id"]))["sync_status"] == "deleted"


# -- Updates ----------------------------------------------------------------------------------


async def test_reschedule_and_change_of_employee_update_the_same_event(
    api: httpx.AsyncClient,
    db: DictConnection,
    remote: Remote,
    sync_settings: Settings,
    db_url: str,
) -> None:
    async with worker(sync_settings, db_url):
        _, schedule = await synced(api, db)
        other = await new_employee(api, "E2002")
        path = f"/scheduling/schedules/{schedule['id']}"
        moved = await api.patch(
            path, json={"starts_at": "2030-01-08T09:00:00+01:00", "ends_at": "2030-01-08T13:00Z"}
        )
        assert moved.status_code == 200, moved.text
        assert (moved.json()["version"], moved.json()["sync_status"]) == (2, "pending")
        assert moved.json()["starts_at"] == MONDAY_8.replace("07", "08")
        handed = await api.patch(path, json={"employee_id": other["id"]})
        assert handed.json()["version"] == 3
        for response in (moved, handed):
            job, _ = await finish(db, response.json()["last_job_id"])
            assert job["status"] == "succeeded"
        # The same values again: nothing to push, no job.
        same = await api.patch(path, json={"employee_id": other["id"], "title": schedule["title"]})
        assert same.json()["last_job_id"] == handed.json()["last_job_id"]

    [event] = remote.standin.events()
    assert event.id == schedule["external_id"]
    assert event.employee_code == "E2002"
    assert event.starts_at == datetime.datetime(2030, 1, 8, 8, tzinfo=datetime.UTC)
    # The first job may already push the second change (each pushes the row as it is then):
    # the second then finds nothing to change. Either way each update is one remote revision.
    outcomes = [
        (await job_result(db, response.json()["last_job_id"]))["outcome"]
        for response in (moved, handed)
    ]
    assert outcomes in (["updated", "updated"], ["updated", "unchanged"]), outcomes
    assert event.version == 1 + outcomes.count("updated")
    assert len(remote.standin.requests("POST /events")) == 1
    row = await schedule_row(api, schedule["id"])
    assert (row["sync_status"], row["synced_version"], row["version"]) == ("synced", 3, 3)
    assert (row["employee_id"], row["employee_code"]) == (other["id"], "E2002")
    # Jobs of one schedule share its lock: they ran one at a time, in order.
    locks = await one(
        db,
        "SELECT array_agg(DISTINCT lock) AS locks FROM procrastinate_jobs"
        " WHERE task_name = 'scheduling.sync_schedule'",
    )
    assert locks["locks"] == [f"scheduling.schedule:{schedule['id']}"]


async def test_an_employee_change_is_pushed(
    api: httpx.AsyncClient,
    db: DictConnection,
    remote: Remote,
    sync_settings: Settings,
    db_url: str,
) -> None:
    async with worker(sync_settings, db_url):
        employee = await new_employee(api)
        await finish(db, employee["last_job_id"])
        changed = await api.patch(
            f"/scheduling/employees/{employee['id']}",
            json={"name": "Dana Reyes-Okafor", "email": "dana@example.com"},
        )
        assert changed.status_code == 200, changed.text
        assert (changed.json()["version"], changed.json()["sync_status"]) == (2, "pending")
        job, _ = await finish(db, changed.json()["last_job_id"])
    assert job["status"] == "succeeded"
    pushed = remote.standin.employees()["E1001"]
    assert (pushed.name, pushed.email, pushed.active) == (
        "Dana Reyes-Okafor",
        "dana@example.com",
        True,
    )
    response = await api.get(f"/scheduling/employees/{employee['id']}")
    assert (response.json()["sync_status"], response.json()["synced_version"]) == ("synced", 2)


# -- The hourly refresh -----------------------------------------------------------------------


def _utc(year: int, month: int, day: int, hour: int, minute: int, second: int) -> float:
    return datetime.datetime(
        year, month, day, hour, minute, second, tzinfo=datetime.UTC
    ).timestamp()


async def _defer_refresh(settings: Settings, db_url: str, *, at: float) -> list[int]:
    """What a worker's deferrer defers at ``at``: the ids of the refresh jobs it made."""
    hourly = settings.model_copy(update={"schedules": ""})
    app = build_task_app(db_url, hourly, [scheduling_tasks.blueprint])
    async with app.open_async():
        deferrer = ZonedDeferrer(app.periodic_registry, timezone=datetime.UTC, catch_up=600)
        before = set(await _refresh_jobs(db_url))
        await deferrer.defer_jobs(deferrer.get_previous_tasks(at=at))
    return [job_id for job_id in await _refresh_jobs(db_url) if job_id not in before]


async def _refresh_jobs(db_url: str) -> list[int]:
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        cursor = await conn.execute(
            "SELECT id FROM procrastinate_jobs WHERE task_name = %s ORDER BY id",
            (REFRESH_EVENTS,),
        )
        return [row[0] for row in await cursor.fetchall()]


async def test_the_hourly_refresh_folds_in_remote_changes(
    api: httpx.AsyncClient,
    db: DictConnection,
    remote: Remote,
    sync_settings: Settings,
    db_url: str,
) -> None:
    async with worker(sync_settings, db_url):
        employee, moved_remotely = await synced(api, db)
        kept = await new_schedule(api, employee["id"], title="Kept locally")
        await finish(db, kept["last_job_id"])
        kept = await schedule_row(api, kept["id"])

        # On the remote side: a reschedule, a retitle, a new event, one of an unknown employee.
        async with remote.client() as client:
            later = {"starts_at": "2030-01-09T08:00:00Z", "ends_at": "2030-01-09T12:00:00Z"}
            for schedule, change in ((moved_remotely, later), (kept, {"title": "Remote title"})):
                body = {**NEW_SCHEDULE, "employee_code": "E1001", "title": schedule["title"]}
                response = await client.put(
                    f"/events/{schedule['external_id']}", json={**body, **change}
                )
                assert response.status_code == 200, response.text
            created = {**NEW_SCHEDULE, "employee_code": "E1001", "title": "Made remotely"}
            assert (await client.post("/events", json=created)).status_code == 201
            assert (await client.put("/employees/X9", json={"name": "X"})).status_code == 201
            stranger = {**created, "employee_code": "X9", "title": "Not ours"}
            assert (await client.post("/events", json=stranger)).status_code == 201

        # Meanwhile a local change to the second one, whose push fails once and waits.
        remote.standin.inject(Fault.error(503, route=f"PUT /events/{kept['external_id']}"))
        retitled = await api.patch(
            f"/scheduling/schedules/{kept['id']}", json={"title": "Local title"}
        )
        pending_job = retitled.json()["last_job_id"]

        async def waiting_for_retry() -> bool:
            row = await one(
                db, "SELECT attempts FROM procrastinate_jobs WHERE id = %s", pending_job
            )
            return bool(row["attempts"] == 1)

        await eventually(waiting_for_retry)

        # The 10:00 tick defers one refresh; nothing more until 11:00, which defers another.
        first = await _defer_refresh(sync_settings, db_url, at=_utc(2030, 1, 1, 10, 0, 1))
        assert await _defer_refresh(sync_settings, db_url, at=_utc(2030, 1, 1, 10, 59, 59)) == []
        second = await _defer_refresh(sync_settings, db_url, at=_utc(2030, 1, 1, 11, 0, 1))
        assert len(first) == len(second) == 1
        for job_id in (*first, *second):
            job, _ = await finish(db, job_id)
            assert job["status"] == "succeeded"
        reports = [await job_result(db, job_id) for job_id in (*first, *second)]

        assert reports[0] == {
            "configured": True,
            "pages": 1,
            "seen": 4,
            "inserted": 1,
            "updated": 1,
            "unknown_employee": 1,
        }
        assert (reports[1]["inserted"], reports[1]["updated"]) == (0, 0)  # idempotent
        row = await schedule_row(api, moved_remotely["id"])
        assert (row["starts_at"], row["sync_status"]) == ("2030-01-09T08:00:00Z", "synced")
        assert row["version"] == 1  # a remote change is not a local change to push back
        listed = await api.get("/scheduling/schedules")
        [new] = [item for item in listed.json() if item["title"] == "Made remotely"]
        assert (new["sync_status"], new["employee_code"]) == ("synced", "E1001")
        assert new["external_id"] is not None
        assert "Not ours" not in [item["title"] for item in listed.json()]
        # The local change was not overwritten: its push, once due, wins on the remote too.
        assert (await schedule_row(api, kept["id"]))["title"] == "Local title"
        job, _ = await finish(db, pending_job)
    assert job["status"] == "succeeded"
    [event] = [event for event in remote.standin.events() if event.id == kept["external_id"]]
    assert event.title == "Local title"
    assert len(remote.standin.events()) == 4
