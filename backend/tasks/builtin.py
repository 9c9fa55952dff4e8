"""Built-in tasks: ``taskhub.ping`` for health checks, demos and benchmarks."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from backend.declare.registry import TaskBlueprint

blueprint = TaskBlueprint()


class PingArgs(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"message": "hello", "sleep": 0}]},
    )

    message: Any = Field(default="pong", description="Any JSON value; returned as is.")
    sleep: float = Field(default=0, ge=0, le=3600, description="Seconds to wait first.")


@blueprint.task(name="taskhub.ping")
async def ping(args: PingArgs) -> Any:
    """Return the message it was given, after an optional sleep."""
    if args.sleep:
        await asyncio.sleep(args.sleep)
    return args.message
