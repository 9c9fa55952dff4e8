"""What the schedule sync's API accepts and shows: request bodies and row views.

Validation happens here, before anything reaches the database or the remote API: text
PostgreSQL can store, times in a range every layer represents, employee codes safe in URLs.
"""

from __future__ import annotations

import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

#: Employee codes appear in the remote's URLs: letters, digits and ``_.-`` only.
CODE_PATTERN = r"^[A-Za-z0-9_.-]{1,40}$"
MAX_ID = 2**63 - 1
EARLIEST = datetime.datetime(1900, 1, 1, tzinfo=datetime.UTC)
LATEST = datetime.datetime(9000, 1, 1, tzinfo=datetime.UTC)


def _storable(value: str) -> str:
    """Text PostgreSQL can store and a person can read: no NUL, no lone surrogate, not blank."""
    if "\x00" in value:
        raise ValueError("cannot contain NUL (\\u0000) characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates such as \\ud800)") from None
    if not value.strip():
        raise ValueError("cannot be blank")
    return value


def _in_utc(value: datetime.datetime) -> datetime.datetime:
    """In UTC, within a range every layer (Python, PostgreSQL, the remote) represents."""
    try:
        in_range = EARLIEST <= value <= LATEST
        utc = value.astimezone(datetime.UTC)
    except OverflowError:
        in_range = False
    if not in_range:
        raise ValueError(f"must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d} (UTC)")
    return utc


Text = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_storable)]
Code = Annotated[str, StringConstraints(pattern=CODE_PATTERN)]
Email = Annotated[
    str,
    StringConstraints(max_length=254, pattern=r"^[^@\s]+@[^@\s]+$"),
    AfterValidator(_storable),
]
Moment = Annotated[AwareDatetime, AfterValidator(_in_utc)]
#: A time read from PostgreSQL (in the session's timezone), shown in UTC.
Utc = Annotated[datetime.datetime, AfterValidator(lambda value: value.astimezone(datetime.UTC))]
RowId = Annotated[int, Field(ge=1, le=MAX_ID)]


class EmployeeCreate(BaseModel):
    """A new employee. The code is the employee number the remote knows them by."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"code": "E1001", "name": "Dana Reyes", "email": "dana@example.com"}]
        },
    )

    code: Code = Field(description="Employee number, shared with the scheduling API; fixed.")
    name: Text
    email: Email | None = None
    active: bool = True


class EmployeeChange(BaseModel):
    """Fields to change; those left out (or null) stay as they are."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "Dana Reyes-Okafor"}, {"active": False}]},
    )

    name: Text | None = None
    email: Email | None = None
    active: bool | None = None

    @model_validator(mode="after")
    def _something(self) -> EmployeeChange:
        if not self.model_fields_set or all(
            getattr(self, name) is None for name in self.model_fields_set
        ):
            raise ValueError("give at least one of name, email, active")
        return self


class ScheduleCreate(BaseModel):
    """A new schedule (a shift or visit) of one employee."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "employee_id": 7,
                    "title": "Store 112 reset",
                    "starts_at": "2030-01-07T08:00:00Z",
                    "ends_at": "2030-01-07T12:00:00Z",
                }
            ]
        },
    )

    employee_id: RowId
    title: Text
    starts_at: Moment
    ends_at: Moment = Field(description="After starts_at.")

    @model_validator(mode="after")
    def _ends_after_start(self) -> ScheduleCreate:
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self


class ScheduleChange(BaseModel):
    """A reschedule (times), a change of employee, a new title; left out (or null): unchanged."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"starts_at": "2030-01-08T08:00:00Z", "ends_at": "2030-01-08T12:00:00Z"},
                {"employee_id": 8},
            ]
        },
    )

    employee_id: RowId | None = None
    title: Text | None = None
    starts_at: Moment | None = None
    ends_at: Moment | None = None

    @model_validator(mode="after")
    def _something(self) -> ScheduleChange:
        if all(getattr(self, name) is None for name in type(self).model_fields):
            raise ValueError("give at least one of employee_id, title, starts_at, ends_at")
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self


SyncStatus = Literal["pending", "synced", "failed", "deleted"]


class EmployeeView(BaseModel):
    """An employee and the state of its sync."""

    id: int
    code: str
    name: str
    email: str | None
    active: bool
    version: int = Field(description="Bumped by every local change.")
    synced_version: int | None = Field(description="The version the remote has; null: none yet.")
    sync_status: Literal["pending", "synced", "failed"] = Field(
        description="`pending`: a job will push the latest version; `failed`: its job gave up"
        " (see `sync_error` and the job)."
    )
    sync_error: str | None = Field(description="The last failed attempt's error.")
    synced_at: Utc | None
    last_job_id: int | None = Field(description="The latest sync job (`GET /jobs/{id}`).")
    last_job_status: str | None = Field(description="Its status; null once pruned.")
    created_at: Utc
    updated_at: Utc


class ScheduleView(BaseModel):
    """A schedule and the state of its sync."""

    id: int
    employee_id: int
    employee_code: str
    title: str
    starts_at: Utc
    ends_at: Utc
    version: int = Field(description="Bumped by every local change, the delete included.")
    synced_version: int | None = Field(description="The version the remote has; null: none yet.")
    sync_status: SyncStatus = Field(
        description="`pending`: a job will push the latest version (or the delete); `synced`;"
        " `failed`: its job gave up (see `sync_error` and the job); `deleted`: the remote event"
        " is gone too."
    )
    sync_error: str | None = Field(description="The last failed attempt's error.")
    synced_at: Utc | None
    external_id: str | None = Field(description="The remote event's id, once known.")
    last_job_id: int | None = Field(description="The latest sync job (`GET /jobs/{id}`).")
    last_job_status: str | None = Field(description="Its status; null once pruned.")
    created_at: Utc
    updated_at: Utc
    deleted_at: Utc | None
