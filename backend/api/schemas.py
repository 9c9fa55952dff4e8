"""Request and response bodies of the REST API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from backend.queue import DeferRequest

__all__ = ["DeferRequest", "ErrorBody", "Health", "TaskInfo"]


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
