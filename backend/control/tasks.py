"""The registered tasks as operators see them: each one's effective policy and argument schema."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from backend.declare.policy import RateLimit
from backend.declare.registry import TaskDefinition


class TaskInfo(BaseModel):
    """A registered task: its default policy and the JSON schema of its arguments."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "taskhub.ping",
                    "description": "Return the message it was given, after an optional sleep.",
                    "queue": "default",
                    "priority": 0,
                    "lock": None,
                    "queueing_lock": None,
                    "retry": None,
                    "rate_limit": None,
                    "time_limit": None,
                    "soft_time_limit": None,
                    "args_schema": {
                        "additionalProperties": False,
                        "properties": {
                            "message": {"default": "pong", "title": "Message"},
                            "sleep": {"default": 0, "maximum": 3600, "minimum": 0},
                        },
                        "title": "PingArgs",
                        "type": "object",
                    },
                },
                {
                    "name": "crm.sync_customer",
                    "description": "Push one customer to the CRM.",
                    "queue": "sync",
                    "priority": 10,
                    "lock": None,
                    "queueing_lock": None,
                    "retry": {
                        "retries": 4,
                        "backoff": 60.0,
                        "factor": 2.0,
                        "cap": None,
                        "jitter": 0.0,
                        "on": ["ConnectionError"],
                        "delays": [60.0, 120.0, 240.0, 480.0],
                    },
                    "rate_limit": "100/m",
                    "time_limit": 300.0,
                    "soft_time_limit": 240.0,
                    "args_schema": {
                        "properties": {"customer_id": {"title": "Customer Id", "type": "integer"}},
                        "required": ["customer_id"],
                        "title": "SyncArgs",
                        "type": "object",
                    },
                },
            ]
        }
    )

    name: str = Field(description="What POST /jobs and the CLI call it.")
    description: str = Field(description="The task function's docstring.")
    queue: str = Field(description="Default queue.")
    priority: int = Field(description="Default priority; higher runs first.")
    lock: str | None = Field(description="Default lock: jobs sharing it run one at a time.")
    queueing_lock: str | None = Field(
        description="Default queueing lock: at most one waiting job per value."
    )
    retry: dict[str, Any] | None = Field(
        description="Retry policy; null when the task never retries."
    )
    rate_limit: str | None = Field(
        description="Starts allowed across all workers, e.g. 100/m; null when unlimited."
    )
    time_limit: float | None = Field(description="Hard time limit in seconds: the task is stopped.")
    soft_time_limit: float | None = Field(
        description="Soft time limit in seconds: the task is asked to stop."
    )
    args_schema: dict[str, Any] = Field(description="JSON schema of the task's arguments.")

    @classmethod
    def of(cls, task: TaskDefinition[Any], rate_limits: Mapping[str, RateLimit]) -> TaskInfo:
        """The task's effective policy: its own, else its app's (or the operator's) defaults;
        ``rate_limits`` are the operators' overrides."""
        limit = rate_limits.get(task.name, task.rate_limit)
        return cls(
            name=task.name,
            description=task.description,
            queue=task.queue,
            priority=task.priority,
            lock=task.lock,
            queueing_lock=task.queueing_lock,
            retry=task.describe_retry(),
            rate_limit=str(limit) if limit else None,
            time_limit=task.time_limit,
            soft_time_limit=task.soft_time_limit,
            args_schema=task.args_model.model_json_schema(),
        )
