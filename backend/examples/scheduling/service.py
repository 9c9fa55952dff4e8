"""The external schedule sync example: employees and schedules kept in sync with a scheduling API.

Two halves. The writes (create, reschedule, change employee, delete) change the local row and
defer its sync job on the caller's connection, so both commit or neither; they never commit.
The sync steps, called by the jobs of ``tasks.py``, talk to the remote API
and record what it has, each step in its own short transaction (no transaction stays open
across an HTTP call).

Creating a remote event is the one request that is not idempotent by nature: it is sent with
the schedule's own ``Idempotency-Key``, and its exact body is committed before the first send,
so a retry after a timeout (the remote may have created the event) sends the same request
again and gets the same event back. See docs/examples-scheduling.md.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import httpx
import psycopg
from procrastinate.jobs import Job
from procrastinate.retry import BaseRetryStrategy
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from backend import defer
from backend.db import DictConnection
from backend.errors import TaskhubError
from backend.examples.scheduling.blueprint import (
    DELETE_REMOTE_SCHEDULE,
    SYNC_EMPLOYEE,
    SYNC_SCHEDULE,
    declared,
    employee_lock,
    schedule_lock,
)
from backend.examples.scheduling.schemas import (
    EmployeeChange,
    EmployeeCreate,
    EmployeeView,
    ScheduleChange,
    ScheduleCreate,
    ScheduleView,
    SyncStatus,
)
from backend.examples.scheduling.settings import SchedulingSettings
from backend.queries import load_queries
from backend.runtime.isolation import SoftTimeLimitExceeded

logger = logging.getLogger(__name__)

#: The example's named SQL (sql/scheduling.sql).
QUERIES = load_queries("backend.examples.scheduling.sql")
#: Events per page the hourly refresh asks for.
REFRESH_PAGE_SIZE = 100

T = TypeVar("T")
ModelT = TypeVar("ModelT", bound=BaseModel)


# -- Errors -----------------------------------------------------------------------------------


class ScheduleNotFound(TaskhubError):
    """No schedule has that id (or it was deleted)."""

    status_code = 404


class EmployeeNotFound(TaskhubError):
    """No employee has that id."""

    status_code = 404


class EmployeeCodeTaken(TaskhubError):
    """Another employee has that code."""

    status_code = 409


class InvalidSchedule(TaskhubError):
    """The schedule the change would leave is invalid (it would end before it starts)."""

    status_code = 422


class SchedulingUnavailable(Exception):
    """The scheduling API did not answer, or failed (timeout, 5xx, 429): worth retrying."""


class SchedulingRejected(Exception):
    """The scheduling API refused the request (4xx): sending it again will not help."""


class SchedulingNotConfigured(Exception):
    """TASKHUB_SCHEDULING_BASE_URL is not set."""


# -- Writes: the row and its job, in the caller's transaction --------------------------------


async def _one(conn: DictConnection, query: str, params: dict[str, Any]) -> dict[str, Any] | None:
    cursor = await conn.execute(QUERIES[query], params)
    return await cursor.fetchone()


async def _defer(conn: DictConnection, task_name: str, args: dict[str, Any], lock: str) -> int:
    """Defer on ``conn``: the job commits with the row, or neither does."""
    return await defer.defer(conn, declared(task_name), args, lock=lock)


async def get_employee(conn: DictConnection, employee_id: int) -> EmployeeView:
    row = await _one(conn, "scheduling_get_employee", {"employee_id": employee_id})
    if row is None:
        raise EmployeeNotFound(f"no employee {employee_id}")
    return EmployeeView.model_validate(row)


async def _sync_employee_later(conn: DictConnection, employee_id: int) -> None:
    job_id = await _defer(
        conn, SYNC_EMPLOYEE, {"employee_id": employee_id}, employee_lock(employee_id)
    )
    await conn.execute(
        QUERIES["scheduling_set_employee_job"], {"employee_id": employee_id, "job_id": job_id}
    )


async def create_employee(conn: DictConnection, data: EmployeeCreate) -> EmployeeView:
    """Insert the employee and defer its push."""
    row = await _one(conn, "scheduling_insert_employee", data.model_dump())
    if row is None:
        raise EmployeeCodeTaken(f"employee code {data.code!r} is taken; codes are unique")
    await _sync_employee_later(conn, row["id"])
    return await get_employee(conn, row["id"])


async def change_employee(
    conn: DictConnection, employee_id: int, change: EmployeeChange
) -> EmployeeView:
    """Apply the change and defer its push; a change that changes nothing defers nothing."""
    current = await _one(conn, "scheduling_lock_employee", {"employee_id": employee_id})
    if current is None:
        raise EmployeeNotFound(f"no employee {employee_id}")
    given = change.model_dump(exclude_none=True)
    merged = {name: given.get(name, current[name]) for name in ("name", "email", "active")}
    if any(merged[name] != current[name] for name in merged):
        await conn.execute(
            QUERIES["scheduling_update_employee"], {**merged, "employee_id": employee_id}
        )
        await _sync_employee_later(conn, employee_id)
    return await get_employee(conn, employee_id)


async def get_schedule(conn: DictConnection, schedule_id: int) -> ScheduleView:
    row = await _one(conn, "scheduling_get_schedule", {"schedule_id": schedule_id})
    if row is None:
        raise ScheduleNotFound(f"no schedule {schedule_id}")
    return ScheduleView.model_validate(row)


async def list_schedules(
    conn: DictConnection, *, sync_status: SyncStatus | None = None, limit: int = 50
) -> list[ScheduleView]:
    cursor = await conn.execute(
        QUERIES["scheduling_list_schedules"], {"sync_status": sync_status, "limit": limit}
    )
    return [ScheduleView.model_validate(row) for row in await cursor.fetchall()]


async def _check_employee(conn: DictConnection, employee_id: int) -> None:
    if await _one(conn, "scheduling_employee_code", {"employee_id": employee_id}) is None:
        raise EmployeeNotFound(f"no employee {employee_id}; create it first")


async def _push_schedule_later(conn: DictConnection, schedule_id: int, task_name: str) -> None:
    job_id = await _defer(conn, task_name, {"schedule_id": schedule_id}, schedule_lock(schedule_id))
    await conn.execute(
        QUERIES["scheduling_set_schedule_job"], {"schedule_id": schedule_id, "job_id": job_id}
    )


async def create_schedule(conn: DictConnection, data: ScheduleCreate) -> ScheduleView:
    """Insert the schedule and defer its push."""
    await _check_employee(conn, data.employee_id)
    row = await _one(conn, "scheduling_insert_schedule", data.model_dump())
    assert row is not None
    await _push_schedule_later(conn, row["id"], SYNC_SCHEDULE)
    return await get_schedule(conn, row["id"])


async def _live_schedule(conn: DictConnection, schedule_id: int) -> dict[str, Any]:
    """The schedule, locked until the caller's transaction ends; 404 if missing or deleted."""
    current = await _one(conn, "scheduling_lock_schedule", {"schedule_id": schedule_id})
    if current is None:
        raise ScheduleNotFound(f"no schedule {schedule_id}")
    if current["deleted_at"] is not None:
        raise ScheduleNotFound(f"schedule {schedule_id} was deleted")
    return current


async def change_schedule(
    conn: DictConnection, schedule_id: int, change: ScheduleChange
) -> ScheduleView:
    """Reschedule, change the employee or the title, and defer the push.

    A change that changes nothing defers nothing.
    """
    current = await _live_schedule(conn, schedule_id)
    given = change.model_dump(exclude_none=True)
    fields = ("employee_id", "title", "starts_at", "ends_at")
    merged = {name: given.get(name, current[name]) for name in fields}
    if merged["ends_at"] <= merged["starts_at"]:
        raise InvalidSchedule(
            f"the schedule would end ({merged['ends_at'].isoformat()}) before it starts"
            f" ({merged['starts_at'].isoformat()}): change both times together"
        )
    if merged["employee_id"] != current["employee_id"]:
        await _check_employee(conn, merged["employee_id"])
    if any(merged[name] != current[name] for name in fields):
        await conn.execute(
            QUERIES["scheduling_update_schedule"], {**merged, "schedule_id": schedule_id}
        )
        await _push_schedule_later(conn, schedule_id, SYNC_SCHEDULE)
    return await get_schedule(conn, schedule_id)


async def delete_schedule(conn: DictConnection, schedule_id: int) -> ScheduleView:
    """Mark the schedule deleted and defer the remote delete (after its earlier jobs)."""
    await _live_schedule(conn, schedule_id)
    await conn.execute(QUERIES["scheduling_delete_schedule"], {"schedule_id": schedule_id})
    await _push_schedule_later(conn, schedule_id, DELETE_REMOTE_SCHEDULE)
    return await get_schedule(conn, schedule_id)


# -- The remote API ---------------------------------------------------------------------------


class EventFields(BaseModel):
    """What a remote event says; what a sync pushes."""

    model_config = ConfigDict(extra="ignore")

    employee_code: str
    title: str
    starts_at: datetime.datetime
    ends_at: datetime.datetime


class RemoteEvent(EventFields):
    id: str
    version: int
    reference: str | None = None


class RemoteEventPage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    items: list[RemoteEvent]
    next_cursor: str | None = None


class EmployeeFields(BaseModel):
    name: str
    email: str | None
    active: bool


#: Answers that say "try again later".
TRANSIENT = frozenset({408, 425, 429})


class SchedulingClient:
    """The scheduling API over HTTP; its errors say whether a retry can help."""

    def __init__(self, base_url: str, token: str | None, timeout: float) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout = timeout
        self._http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout)

    @classmethod
    def from_settings(cls, settings: SchedulingSettings) -> SchedulingClient:
        if not settings.base_url:
            raise SchedulingNotConfigured(
                "TASKHUB_SCHEDULING_BASE_URL is not set: set it (and TASKHUB_SCHEDULING_TOKEN)"
                " on the workers, then retry the job"
            )
        token = settings.token
        return cls(settings.base_url, token.get_secret_value() if token else None, settings.timeout)

    async def __aenter__(self) -> SchedulingClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._http.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        ok: tuple[int, ...],
        json: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        where = f"{method} {path}"
        try:
            response = await self._http.request(
                method, path, json=json, headers=headers, params=params
            )
        except httpx.TimeoutException:
            raise SchedulingUnavailable(f"{where}: no answer within {self.timeout:g} s") from None
        except httpx.TransportError as exc:
            raise SchedulingUnavailable(f"{where}: {type(exc).__name__}: {exc}") from None
        status = response.status_code
        if status in ok:
            return response
        detail = f"{where} answered {status}: {response.text[:300]}"
        if status >= 500 or status in TRANSIENT:
            raise SchedulingUnavailable(detail)
        if status in (401, 403):
            detail += " (check TASKHUB_SCHEDULING_TOKEN)"
        raise SchedulingRejected(detail)

    @staticmethod
    def _parse(model: type[ModelT], response: httpx.Response) -> ModelT:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise SchedulingUnavailable(
                f"{response.request.method} {response.request.url.path}: the answer is not a"
                f" {model.__name__}: {exc.errors(include_url=False)[0]['msg']}"
            ) from None

    async def put_employee(self, code: str, fields: EmployeeFields) -> bool:
        """Create or update the employee; True if it was created."""
        response = await self._request(
            "PUT", f"/employees/{code}", ok=(200, 201), json=fields.model_dump(mode="json")
        )
        return response.status_code == 201

    async def ensure_employee(self, code: str, fields: EmployeeFields) -> None:
        """Create the employee if the remote does not know it; never overwrite it (that is
        the employee sync's job, which runs in order with the employee's other changes)."""
        await self._request(
            "PUT",
            f"/employees/{code}",
            ok=(200, 201, 412),
            json=fields.model_dump(mode="json"),
            headers={"If-None-Match": "*"},
        )

    async def create_event(self, idempotency_key: str, request: dict[str, Any]) -> RemoteEvent:
        """Create an event; with the same key and body, the remote answers the first event."""
        response = await self._request(
            "POST",
            "/events",
            ok=(200, 201),
            json=request,
            headers={"Idempotency-Key": idempotency_key},
        )
        return self._parse(RemoteEvent, response)

    async def update_event(self, event_id: str, fields: EventFields) -> RemoteEvent:
        response = await self._request(
            "PUT", f"/events/{_quote(event_id)}", ok=(200,), json=fields.model_dump(mode="json")
        )
        return self._parse(RemoteEvent, response)

    async def delete_event(self, event_id: str) -> bool:
        """Delete an event; False if it was already gone."""
        response = await self._request("DELETE", f"/events/{_quote(event_id)}", ok=(200, 204, 404))
        return response.status_code != 404

    async def list_events(self, cursor: str | None, limit: int) -> RemoteEventPage:
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        response = await self._request("GET", "/events", ok=(200,), params=params)
        return self._parse(RemoteEventPage, response)


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


# -- Sync steps, run by the jobs -------------------------------------------------------------


@dataclass(frozen=True)
class SyncRun:
    """What a sync job hands the steps below: settings, its transactions, who it is."""

    settings: SchedulingSettings
    transaction: Callable[[], AbstractAsyncContextManager[DictConnection]]
    job_id: int
    attempt: int
    #: The job's retry policy as resolved (its task's, else its app's or the operator's).
    retry: BaseRetryStrategy | None
    #: Seconds after which the job stops itself and records why (below the hard limit).
    soft_time_limit: float | None = None

    def is_final(self, error: BaseException) -> bool:
        """Whether the job's retry policy gives up after this error."""
        if self.retry is None:
            return True
        # Strategies judge by the runs before this one (job.attempts), as the worker asks.
        job = Job(queue="", lock=None, queueing_lock=None, task_name="", attempts=self.attempt - 1)
        return self.retry.get_retry_decision(exception=error, job=job) is None


class ScheduleSyncResult(BaseModel):
    """What a schedule job did."""

    schedule_id: int
    outcome: Literal[
        "created", "updated", "unchanged", "deleted", "not_on_remote", "deleted_locally", "gone"
    ] = Field(
        description="created/updated/unchanged: the remote event now matches the row;"
        " deleted: the remote event was deleted; not_on_remote: there was none to delete;"
        " deleted_locally: the schedule was deleted before this sync ran (its delete job"
        " follows); gone: no such row."
    )
    external_id: str | None = None
    version: int | None = Field(default=None, description="The row version the remote has.")


class EmployeeSyncResult(BaseModel):
    employee_id: int
    outcome: Literal["created", "updated", "gone"]
    version: int | None = None


class RefreshReport(BaseModel):
    """What the hourly refresh folded in."""

    configured: bool = Field(description="False: TASKHUB_SCHEDULING_BASE_URL is unset; skipped.")
    pages: int = 0
    seen: int = 0
    inserted: int = 0
    updated: int = 0
    unknown_employee: int = Field(default=0, description="Events of employees not known here.")


async def _recording_failures(
    run: SyncRun, query: str, params: dict[str, Any], work: Callable[[], Awaitable[T]]
) -> T:
    """Run ``work``; when it fails, write the error on the row (failed for good on the last
    attempt) and fail the job with it, for the retry policy to judge."""
    try:
        async with asyncio.timeout(run.soft_time_limit) as deadline:
            return await work()
    except Exception as exc:
        error: Exception = exc
        if isinstance(exc, TimeoutError) and deadline.expired():
            error = SoftTimeLimitExceeded(
                f"stopped itself at its soft time limit of {run.soft_time_limit:g} s"
            )
        params = {
            **params,
            "job_id": run.job_id,
            "error": f"attempt {run.attempt}: {type(error).__name__}: {error}",
            "final": run.is_final(error),
        }
        try:
            async with run.transaction() as conn:
                await conn.execute(QUERIES[query], params)
        except psycopg.Error:
            logger.warning("job %s: could not record its failure on the row", run.job_id)
        if error is exc:
            raise
        raise error from exc


async def _read(run: SyncRun, query: str, params: dict[str, Any]) -> dict[str, Any] | None:
    async with run.transaction() as conn:
        return await _one(conn, query, params)


def _event_fields(row: dict[str, Any]) -> EventFields:
    return EventFields(
        employee_code=row["employee_code"],
        title=row["title"],
        starts_at=row["starts_at"],
        ends_at=row["ends_at"],
    )


def _employee_fields(row: dict[str, Any]) -> EmployeeFields:
    return EmployeeFields(
        name=row["employee_name"], email=row["employee_email"], active=row["employee_active"]
    )


async def _create_or_replay(
    run: SyncRun, client: SchedulingClient, row: dict[str, Any]
) -> RemoteEvent:
    """The remote event of a schedule whose id we do not know yet: created, or (when an
    earlier attempt's create reached the remote) the same event again, then claimed."""
    schedule_id = row["id"]
    request = row["create_request"]
    if request is None:
        request = {
            **_event_fields(row).model_dump(mode="json"),
            "reference": str(row["idempotency_key"]),
        }
        async with run.transaction() as conn:
            await conn.execute(
                QUERIES["scheduling_save_create_request"],
                {"schedule_id": schedule_id, "request": Jsonb(request)},
            )
    event = await client.create_event(str(row["idempotency_key"]), request)
    async with run.transaction() as conn:
        await conn.execute(
            QUERIES["scheduling_schedule_claimed"],
            {"schedule_id": schedule_id, "external_id": event.id, "remote_version": event.version},
        )
    return event


async def sync_schedule(run: SyncRun, schedule_id: int) -> ScheduleSyncResult:
    """Bring the remote event to the schedule's current state (create, update, or nothing)."""
    row = await _read(run, "scheduling_schedule_sync_state", {"schedule_id": schedule_id})
    if row is None:
        return ScheduleSyncResult(schedule_id=schedule_id, outcome="gone")
    if row["deleted_at"] is not None:
        return ScheduleSyncResult(
            schedule_id=schedule_id, outcome="deleted_locally", external_id=row["external_id"]
        )

    async def push() -> ScheduleSyncResult:
        desired = _event_fields(row)
        async with SchedulingClient.from_settings(run.settings) as client:
            # The event names its employee: the remote must know them first.
            await client.ensure_employee(row["employee_code"], _employee_fields(row))
            if row["external_id"] is None:
                event = await _create_or_replay(run, client, row)
                outcome: Literal["created", "updated", "unchanged"] = "created"
                if EventFields.model_validate(event.model_dump()) != desired:
                    # A replay answers the first request's event; the row moved on since.
                    event = await client.update_event(event.id, desired)
            else:
                event = await client.update_event(row["external_id"], desired)
                outcome = "unchanged" if event.version == row["remote_version"] else "updated"
        async with run.transaction() as conn:
            await conn.execute(
                QUERIES["scheduling_schedule_synced"],
                {
                    "schedule_id": schedule_id,
                    "version": row["version"],
                    "remote_version": event.version,
                },
            )
        return ScheduleSyncResult(
            schedule_id=schedule_id, outcome=outcome, external_id=event.id, version=row["version"]
        )

    return await _recording_failures(
        run, "scheduling_schedule_sync_failed", {"schedule_id": schedule_id}, push
    )


async def delete_remote_schedule(run: SyncRun, schedule_id: int) -> ScheduleSyncResult:
    """Delete a deleted schedule's remote event, if it has one (or may have one)."""
    row = await _read(run, "scheduling_schedule_sync_state", {"schedule_id": schedule_id})
    if row is None:
        return ScheduleSyncResult(schedule_id=schedule_id, outcome="gone")
    if row["deleted_at"] is None:
        raise SchedulingRejected(f"schedule {schedule_id} is not deleted: nothing to do remotely")

    async def delete() -> ScheduleSyncResult:
        external_id = row["external_id"]
        deleted = False
        if external_id is not None or row["create_request"] is not None:
            async with SchedulingClient.from_settings(run.settings) as client:
                if external_id is None:
                    # A create was sent and its answer lost: the remote may hold the event.
                    # The same request under the same key names it (or creates it, to delete).
                    external_id = (await _create_or_replay(run, client, row)).id
                deleted = await client.delete_event(external_id)
        async with run.transaction() as conn:
            await conn.execute(
                QUERIES["scheduling_schedule_remote_deleted"], {"schedule_id": schedule_id}
            )
        return ScheduleSyncResult(
            schedule_id=schedule_id,
            outcome="deleted" if deleted else "not_on_remote",
            external_id=external_id,
            version=row["version"],
        )

    return await _recording_failures(
        run, "scheduling_schedule_sync_failed", {"schedule_id": schedule_id}, delete
    )


async def sync_employee(run: SyncRun, employee_id: int) -> EmployeeSyncResult:
    """Push the employee's current state (PUT: idempotent by nature, no key needed)."""
    row = await _read(run, "scheduling_employee_sync_state", {"employee_id": employee_id})
    if row is None:
        return EmployeeSyncResult(employee_id=employee_id, outcome="gone")

    async def push() -> EmployeeSyncResult:
        fields = EmployeeFields(name=row["name"], email=row["email"], active=row["active"])
        async with SchedulingClient.from_settings(run.settings) as client:
            created = await client.put_employee(row["code"], fields)
        async with run.transaction() as conn:
            await conn.execute(
                QUERIES["scheduling_employee_synced"],
                {"employee_id": employee_id, "version": row["version"]},
            )
        return EmployeeSyncResult(
            employee_id=employee_id,
            outcome="created" if created else "updated",
            version=row["version"],
        )

    return await _recording_failures(
        run, "scheduling_employee_sync_failed", {"employee_id": employee_id}, push
    )


async def refresh_events(
    settings: SchedulingSettings,
    transaction: Callable[[], AbstractAsyncContextManager[DictConnection]],
    page_size: int = REFRESH_PAGE_SIZE,
) -> RefreshReport:
    """Page through the remote's events and fold each page into the local rows (one
    transaction per page, so a failure keeps what earlier pages brought)."""
    if not settings.base_url:
        return RefreshReport(configured=False)
    report = RefreshReport(configured=True)
    cursor: str | None = None
    async with SchedulingClient.from_settings(settings) as client:
        while True:
            page = await client.list_events(cursor, page_size)
            events = [event.model_dump(mode="json") for event in page.items]
            async with transaction() as conn:
                counts = await _one(
                    conn, "scheduling_upsert_remote_events", {"events": Jsonb(events)}
                )
            assert counts is not None
            report.pages += 1
            for name in ("seen", "inserted", "updated", "unknown_employee"):
                setattr(report, name, getattr(report, name) + counts[name])
            if page.next_cursor is None or not page.items:
                return report
            cursor = page.next_cursor
