"""Request and response bodies of the REST API."""

from __future__ import annotations

from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

# procrastinate NOTIFYs on "procrastinate_queue_v1#<queue>", and channel names stop at 63 bytes.
QUEUE_PATTERN = r"^[A-Za-z0-9_.:\-]{1,40}$"
LOCK_PATTERN = r"^[^\x00]{1,255}$"
PRIORITY = Field(default=None, ge=-(2**31), le=2**31 - 1, description="Higher runs first.")


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


class DeferRequest(BaseModel):
    """A job to enqueue. Options left out take the task's defaults."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"task": "taskhub.ping", "args": {"message": "hello"}}],
        },
    )

    task: str = Field(min_length=1, max_length=200, description="Registered task name.")
    args: dict[str, Any] = Field(default_factory=dict, description="Validated by the task's model.")
    queue: str | None = Field(default=None, pattern=QUEUE_PATTERN)
    priority: int | None = PRIORITY
    schedule_in: float | None = Field(
        default=None, ge=0, le=10 * 365 * 86400, description="Run after this many seconds."
    )
    schedule_at: AwareDatetime | None = Field(default=None, description="Run at this time.")
    queueing_lock: str | None = Field(
        default=None, pattern=LOCK_PATTERN, description="At most one waiting job per value."
    )
    lock: str | None = Field(
        default=None, pattern=LOCK_PATTERN, description="Jobs sharing a lock run one at a time."
    )

    @field_validator("args")
    @classmethod
    def _no_nul(cls, value: dict[str, Any]) -> dict[str, Any]:
        if _has_nul(value):
            raise ValueError("strings in args cannot contain NUL (\\u0000) characters")
        return value

    @model_validator(mode="after")
    def _one_schedule(self) -> DeferRequest:
        if self.schedule_in is not None and self.schedule_at is not None:
            raise ValueError("give schedule_in or schedule_at, not both")
        return self


class TaskInfo(BaseModel):
    name: str
    description: str
    queue: str
    priority: int
    lock: str | None
    queueing_lock: str | None
    retry: dict[str, Any] | None = Field(
        description="Retry policy; null when the task never retries."
    )
    args_schema: dict[str, Any] = Field(description="JSON schema of the task's arguments.")


class Health(BaseModel):
    status: str = Field(examples=["ok"])
    database: str = Field(examples=["ok"])


class ErrorBody(BaseModel):
    detail: str | list[dict[str, Any]]
