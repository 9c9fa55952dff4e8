"""The external schedule sync example: schedules and employees, each write with its sync job.

Every write changes the local row and defers the job that pushes it to the scheduling API in
the request's transaction: the answer carries the row, pending, and its job id; a 4xx leaves
neither row nor job. Reading shows where each row's sync stands.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, status

from backend.api.deps import Conn, Operator, Reader
from backend.api.schemas import (
    FORBIDDEN,
    MAX_BODY_BYTES,
    UNAUTHENTICATED,
    UNAVAILABLE,
    Responses,
    error_response,
    invalid,
    ok_response,
    parameter_examples,
)
from backend.examples.scheduling import schemas, service

router = APIRouter(prefix="/scheduling", tags=["scheduling"])

ScheduleId = Annotated[
    int,
    Path(
        ge=1,
        le=schemas.MAX_ID,
        description="The local schedule's id.",
        openapi_examples=parameter_examples(schedule=("A schedule id", 42)),
    ),
]
EmployeeId = Annotated[
    int,
    Path(
        ge=1,
        le=schemas.MAX_ID,
        description="The local employee's id.",
        openapi_examples=parameter_examples(employee=("An employee id", 7)),
    ),
]

# -- Examples ----------------------------------------------------------------------------------

EMPLOYEE: dict[str, Any] = {
    "id": 7,
    "code": "E1001",
    "name": "Dana Reyes",
    "email": "dana@example.com",
    "active": True,
    "version": 1,
    "synced_version": 1,
    "sync_status": "synced",
    "sync_error": None,
    "synced_at": "2030-01-01T08:00:01.200000Z",
    "last_job_id": 1811,
    "last_job_status": "succeeded",
    "created_at": "2030-01-01T08:00:00.000000Z",
    "updated_at": "2030-01-01T08:00:00.000000Z",
}
PENDING_EMPLOYEE = {
    **EMPLOYEE,
    "name": "Dana Reyes-Okafor",
    "version": 2,
    "sync_status": "pending",
    "last_job_id": 1830,
    "last_job_status": "todo",
    "updated_at": "2030-01-02T09:00:00.000000Z",
}
SCHEDULE: dict[str, Any] = {
    "id": 42,
    "employee_id": 7,
    "employee_code": "E1001",
    "title": "Store 112 reset",
    "starts_at": "2030-01-07T08:00:00Z",
    "ends_at": "2030-01-07T12:00:00Z",
    "version": 1,
    "synced_version": None,
    "sync_status": "pending",
    "sync_error": None,
    "synced_at": None,
    "external_id": None,
    "last_job_id": 1812,
    "last_job_status": "todo",
    "created_at": "2030-01-01T08:00:00.000000Z",
    "updated_at": "2030-01-01T08:00:00.000000Z",
    "deleted_at": None,
}
SYNCED_SCHEDULE = {
    **SCHEDULE,
    "synced_version": 1,
    "sync_status": "synced",
    "synced_at": "2030-01-01T08:00:01.500000Z",
    "external_id": "evt_000311",
    "last_job_status": "succeeded",
}
FAILED_SCHEDULE = {
    **SCHEDULE,
    "sync_status": "failed",
    "sync_error": "attempt 4: SchedulingUnavailable: POST /events answered 503: upstream down",
    "last_job_status": "failed",
}
RESCHEDULED = {
    **SYNCED_SCHEDULE,
    "starts_at": "2030-01-08T08:00:00Z",
    "ends_at": "2030-01-08T12:00:00Z",
    "version": 2,
    "sync_status": "pending",
    "last_job_id": 1840,
    "last_job_status": "todo",
    "updated_at": "2030-01-02T09:00:00.000000Z",
}
NEW_EMPLOYEE = {
    **EMPLOYEE,
    "synced_version": None,
    "sync_status": "pending",
    "synced_at": None,
    "last_job_status": "todo",
}
DELETED = {
    **SYNCED_SCHEDULE,
    "version": 2,
    "sync_status": "pending",
    "last_job_id": 1850,
    "last_job_status": "todo",
    "updated_at": "2030-01-03T09:00:00.000000Z",
    "deleted_at": "2030-01-03T09:00:00.000000Z",
}

SCHEDULE_NOT_FOUND: Responses = {
    404: error_response(
        "No schedule has this id, or it was deleted. Nothing was changed or deferred.",
        unknown=("Unknown id", "no schedule 999"),
        deleted=("Deleted before", "schedule 42 was deleted"),
    )
}
EMPLOYEE_NOT_FOUND: Responses = {
    404: error_response(
        "No employee has this id. Nothing was changed or deferred.",
        unknown=("Unknown id", "no employee 999"),
    )
}
UNREADABLE: Responses = {
    400: error_response(
        "The body could not be read (it is not UTF-8, or nests too deep for the JSON parser).",
        unreadable=("Bytes that are not UTF-8", "There was an error parsing the body"),
    ),
    413: error_response(
        f"The body is larger than {MAX_BODY_BYTES} bytes.",
        too_large=("A 5 MB body", f"the request body is larger than {MAX_BODY_BYTES} bytes"),
    ),
}
INVALID_SCHEDULE_ID = (
    "Id out of range",
    ["path", "schedule_id"],
    "Input should be greater than or equal to 1",
    "greater_than_equal",
)
INVALID_EMPLOYEE_ID = (
    "Id out of range",
    ["path", "employee_id"],
    "Input should be greater than or equal to 1",
    "greater_than_equal",
)
ENDS_BEFORE_START = (
    "Ends before it starts",
    ["body"],
    "Value error, ends_at must be after starts_at",
    "value_error",
)


# -- Employees -------------------------------------------------------------------------------


@router.post(
    "/employees",
    status_code=status.HTTP_201_CREATED,
    response_model=schemas.EmployeeView,
    summary="Create an employee",
    responses={
        201: ok_response(
            "Created, with the job that pushes it to the scheduling API.",
            created=(
                "A new employee",
                NEW_EMPLOYEE,
            ),
        ),
        **UNREADABLE,
        **UNAUTHENTICATED,
        **FORBIDDEN,
        409: error_response(
            "Another employee has this code; nothing was created.",
            taken=("Code taken", "employee code 'E1001' is taken; codes are unique"),
        ),
        **invalid(
            "A field is invalid; `loc` names it. Nothing was created.",
            (
                "A code with a space",
                ["body", "code"],
                "String should match pattern '^[A-Za-z0-9_.-]{1,40}$'",
                "string_pattern_mismatch",
            ),
        ),
        **UNAVAILABLE,
    },
)
async def create_employee(
    body: Annotated[
        schemas.EmployeeCreate,
        Body(
            openapi_examples=parameter_examples(
                employee=("An employee", {"code": "E1001", "name": "Dana Reyes"}),
                with_email=(
                    "With an email",
                    {"code": "E1002", "name": "Sam Lee", "email": "sam@example.com"},
                ),
            )
        ),
    ],
    conn: Conn,
    caller: Operator,
) -> schemas.EmployeeView:
    """Create an employee and defer `scheduling.sync_employee` in the same transaction.

    The code is the employee number the scheduling API knows them by; it cannot change. Needs
    the operate scope.
    """
    return await service.create_employee(conn, body)


@router.get(
    "/employees/{employee_id}",
    response_model=schemas.EmployeeView,
    summary="Read an employee and its sync",
    responses={
        200: ok_response(
            "The employee, its sync status and latest sync job.",
            synced=("Synced", EMPLOYEE),
            pending=("A change waiting to be pushed", PENDING_EMPLOYEE),
        ),
        **UNAUTHENTICATED,
        **EMPLOYEE_NOT_FOUND,
        **invalid("The id is out of range.", INVALID_EMPLOYEE_ID),
        **UNAVAILABLE,
    },
)
async def read_employee(
    employee_id: EmployeeId, conn: Conn, caller: Reader
) -> schemas.EmployeeView:
    """The local row: whether the scheduling API has its latest version (`sync_status`,
    `synced_version`), the last error, and the latest sync job (`GET /jobs/{last_job_id}`)."""
    return await service.get_employee(conn, employee_id)


@router.patch(
    "/employees/{employee_id}",
    response_model=schemas.EmployeeView,
    summary="Change an employee",
    responses={
        200: ok_response(
            "Changed, with the job that pushes the change (or as it was, if nothing changed).",
            renamed=("Renamed", PENDING_EMPLOYEE),
        ),
        **UNREADABLE,
        **UNAUTHENTICATED,
        **FORBIDDEN,
        **EMPLOYEE_NOT_FOUND,
        **invalid(
            "A field is invalid, or there is nothing to change; `loc` names it.",
            INVALID_EMPLOYEE_ID,
            (
                "Nothing to change",
                ["body"],
                "Value error, give at least one of name, email, active",
                "value_error",
            ),
        ),
        **UNAVAILABLE,
    },
)
async def change_employee(
    employee_id: EmployeeId,
    body: Annotated[
        schemas.EmployeeChange,
        Body(
            openapi_examples=parameter_examples(
                rename=("A new name", {"name": "Dana Reyes-Okafor"}),
                deactivate=("Inactive", {"active": False}),
            )
        ),
    ],
    conn: Conn,
    caller: Operator,
) -> schemas.EmployeeView:
    """Change the name, email or active flag and defer `scheduling.sync_employee` in the same
    transaction. A change that changes nothing defers nothing. Needs the operate scope."""
    return await service.change_employee(conn, employee_id, body)


# -- Schedules -------------------------------------------------------------------------------


@router.post(
    "/schedules",
    status_code=status.HTTP_201_CREATED,
    response_model=schemas.ScheduleView,
    summary="Create a schedule",
    responses={
        201: ok_response(
            "Created, pending, with the job that creates the remote event.",
            created=("A new schedule", SCHEDULE),
        ),
        **UNREADABLE,
        **UNAUTHENTICATED,
        **FORBIDDEN,
        404: error_response(
            "No employee has `employee_id`; nothing was created.",
            unknown_employee=("Unknown employee", "no employee 999; create it first"),
        ),
        **invalid(
            "A field is invalid; `loc` names it. Nothing was created.",
            ENDS_BEFORE_START,
            (
                "A time without a timezone",
                ["body", "starts_at"],
                "Input should have timezone info",
                "timezone_aware",
            ),
        ),
        **UNAVAILABLE,
    },
)
async def create_schedule(
    body: Annotated[
        schemas.ScheduleCreate,
        Body(
            openapi_examples=parameter_examples(
                shift=(
                    "A morning visit",
                    {
                        "employee_id": 7,
                        "title": "Store 112 reset",
                        "starts_at": "2030-01-07T08:00:00Z",
                        "ends_at": "2030-01-07T12:00:00Z",
                    },
                ),
                offset=(
                    "Times with an offset (stored in UTC)",
                    {
                        "employee_id": 7,
                        "title": "Inventory count",
                        "starts_at": "2030-01-07T08:00:00+03:00",
                        "ends_at": "2030-01-07T10:30:00+03:00",
                    },
                ),
            )
        ),
    ],
    conn: Conn,
    caller: Operator,
) -> schemas.ScheduleView:
    """Create a schedule and defer `scheduling.sync_schedule` in the same transaction: the row
    and its job commit together, or neither does.

    The job creates the remote event under the schedule's own Idempotency-Key, so its retries
    never create a second one. Needs the operate scope.
    """
    return await service.create_schedule(conn, body)


@router.get(
    "/schedules",
    response_model=list[schemas.ScheduleView],
    summary="List schedules and their sync",
    responses={
        200: ok_response(
            "Schedules, newest first.",
            mixed=("A failed sync, a synced one", [FAILED_SCHEDULE, SYNCED_SCHEDULE]),
        ),
        **UNAUTHENTICATED,
        **invalid(
            "A filter is invalid; `loc` names it.",
            (
                "A status that does not exist",
                ["query", "sync_status"],
                "Input should be 'pending', 'synced', 'failed' or 'deleted'",
                "literal_error",
            ),
        ),
        **UNAVAILABLE,
    },
)
async def list_schedules(
    conn: Conn,
    caller: Reader,
    sync_status: Annotated[
        schemas.SyncStatus | None,
        Query(
            description="Only schedules in this sync status; `failed` lists those whose sync"
            " job gave up.",
            openapi_examples=parameter_examples(failed=("Failed syncs", "failed")),
        ),
    ] = None,
    limit: Annotated[
        int,
        Query(
            ge=1,
            le=500,
            description="At most this many schedules.",
            openapi_examples=parameter_examples(page=("Fifty", 50)),
        ),
    ] = 50,
) -> list[schemas.ScheduleView]:
    """Schedules newest first, deleted ones included (until their remote delete is done and
    after), each with its sync status, last error and latest sync job."""
    return await service.list_schedules(conn, sync_status=sync_status, limit=limit)


@router.get(
    "/schedules/{schedule_id}",
    response_model=schemas.ScheduleView,
    summary="Read a schedule and its sync",
    responses={
        200: ok_response(
            "The schedule, its sync status and latest sync job.",
            synced=("Synced", SYNCED_SCHEDULE),
            failed=("Its sync gave up", FAILED_SCHEDULE),
            deleted=("Deleted, remote delete pending", DELETED),
        ),
        **UNAUTHENTICATED,
        404: error_response("No schedule has this id.", unknown=("Unknown id", "no schedule 999")),
        **invalid("The id is out of range.", INVALID_SCHEDULE_ID),
        **UNAVAILABLE,
    },
)
async def read_schedule(
    schedule_id: ScheduleId, conn: Conn, caller: Reader
) -> schemas.ScheduleView:
    """The local row: whether the scheduling API has its latest version (`sync_status`,
    `synced_version`), the remote event's id, the last error, and the latest sync job
    (`GET /jobs/{last_job_id}`; a failed one is in `GET /jobs?state=FAILURE`)."""
    return await service.get_schedule(conn, schedule_id)


@router.patch(
    "/schedules/{schedule_id}",
    response_model=schemas.ScheduleView,
    summary="Reschedule, or change the employee",
    responses={
        200: ok_response(
            "Changed, with the job that pushes the change (or as it was, if nothing changed).",
            rescheduled=("Rescheduled", RESCHEDULED),
        ),
        **UNREADABLE,
        **UNAUTHENTICATED,
        **FORBIDDEN,
        404: error_response(
            "No schedule has this id (or it was deleted), or no employee has `employee_id`."
            " Nothing was changed or deferred.",
            unknown=("Unknown schedule", "no schedule 999"),
            deleted=("Deleted before", "schedule 42 was deleted"),
            unknown_employee=("Unknown employee", "no employee 999; create it first"),
        ),
        **invalid(
            "A field is invalid, there is nothing to change, or the schedule would end before"
            " it starts. Nothing was changed or deferred.",
            INVALID_SCHEDULE_ID,
            ENDS_BEFORE_START,
        ),
        **UNAVAILABLE,
    },
)
async def change_schedule(
    schedule_id: ScheduleId,
    body: Annotated[
        schemas.ScheduleChange,
        Body(
            openapi_examples=parameter_examples(
                reschedule=(
                    "A day later",
                    {"starts_at": "2030-01-08T08:00:00Z", "ends_at": "2030-01-08T12:00:00Z"},
                ),
                change_employee=("Another employee", {"employee_id": 8}),
            )
        ),
    ],
    conn: Conn,
    caller: Operator,
) -> schemas.ScheduleView:
    """Reschedule (new times), change the employee or the title, and defer
    `scheduling.sync_schedule` in the same transaction. The schedule's jobs run one at a time,
    in order, each pushing the row as it is then. A change that changes nothing defers
    nothing. Needs the operate scope."""
    return await service.change_schedule(conn, schedule_id, body)


@router.delete(
    "/schedules/{schedule_id}",
    response_model=schemas.ScheduleView,
    summary="Delete a schedule",
    responses={
        200: ok_response(
            "Deleted here, with the job that deletes the remote event.",
            deleted=("Deleted", DELETED),
        ),
        **UNAUTHENTICATED,
        **FORBIDDEN,
        **SCHEDULE_NOT_FOUND,
        **invalid("The id is out of range.", INVALID_SCHEDULE_ID),
        **UNAVAILABLE,
    },
)
async def delete_schedule(
    schedule_id: ScheduleId, conn: Conn, caller: Operator
) -> schemas.ScheduleView:
    """Mark the schedule deleted and defer `scheduling.delete_remote_schedule` in the same
    transaction; it runs after the schedule's earlier jobs. A schedule never synced needs no
    remote call. The row stays, `deleted` once the remote event is gone. Needs the operate
    scope."""
    return await service.delete_schedule(conn, schedule_id)
