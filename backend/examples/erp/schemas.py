"""The ERP endpoints' response models and their documented examples.

The sync's own records (:class:`~backend.examples.erp.service.SyncRun`,
:class:`~backend.examples.erp.service.SyncResult`) live beside the sync in ``service.py``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from backend.examples.erp.service import SyncResult


class SyncStarted(BaseModel):
    """A sync was enqueued: follow it with GET /erp/task-status/{task_id}."""

    success: bool = Field(description="Always true: failures answer an error status instead.")
    message: str = Field(examples=["Asset sync started in background"])
    task_id: str = Field(description="The job's id, for GET /erp/task-status/{task_id}.")
    status: Literal["PENDING"] = Field(description="A new job waits for a worker.")


class SyncProgress(BaseModel):
    """The latest progress report: a message, `done/total`, and the sync's counters
    (`assets_processed`, `assets_created`, `assets_updated`, or `locations_...`)."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, int] = Field(init=False)

    message: str | None = Field(examples=["Processing 1500/3000 assets"])
    progress: str | None = Field(
        description="`done/total` records; null until the ERP said how many there are.",
        examples=["1500/3000"],
    )


class TaskStatus(BaseModel):
    """Where an ERP sync stands, with Celery's state names."""

    task_id: str
    task: str = Field(examples=["erp.sync_assets"])
    status: Literal["PENDING", "PROGRESS", "RETRY", "SUCCESS", "FAILURE", "REVOKED"] = Field(
        description="PENDING (waiting), PROGRESS (running), RETRY (an attempt failed, another "
        "is due), SUCCESS, FAILURE (the last attempt failed), REVOKED (cancelled)."
    )
    progress: SyncProgress | None = Field(description="Null until the sync reports.")
    result: SyncResult | None = Field(description="The counts, once it succeeded.")
    error: str | None = Field(
        description="The last failed attempt's error, type and message; null once it succeeded."
    )


PROGRESS = {
    "message": "Processing 1500/3000 assets",
    "progress": "1500/3000",
    "assets_processed": 1500,
    "assets_created": 1200,
    "assets_updated": 300,
}
RESULT = {
    "kind": "assets",
    "run_id": 7,
    "full_sync": False,
    "since": "2030-01-01T02:00:00.120000Z",
    "total": 3000,
    "processed": 3000,
    "created": 2400,
    "updated": 550,
    "unchanged": 50,
    "pages": 6,
    "resumed_from": None,
}
ERP_500 = (
    "ErpUnavailable: the ERP answered 500 to GET /api/v1/assets page 4: "
    '{"detail":"Internal Server Error"}'
)
STATUS_EXAMPLES = {
    "pending": ("Waiting for a worker", {"task_id": "42", "task": "erp.sync_assets",
                "status": "PENDING", "progress": None, "result": None, "error": None}),
    "progress": ("Running", {"task_id": "42", "task": "erp.sync_assets", "status": "PROGRESS",
                 "progress": PROGRESS, "result": None, "error": None}),
    "retry": ("The ERP failed; a retry is due", {"task_id": "42", "task": "erp.sync_assets",
              "status": "RETRY", "progress": PROGRESS, "result": None, "error": ERP_500}),
    "success": ("Done", {"task_id": "42", "task": "erp.sync_assets", "status": "SUCCESS",
                "progress": {**PROGRESS, "message": "Done: 3000 assets processed",
                             "progress": "3000/3000", "assets_processed": 3000,
                             "assets_created": 2400, "assets_updated": 550},
                "result": RESULT, "error": None}),
}  # fmt: skip
RUN = {
    "id": 7,
    "kind": "assets",
    "job_id": 42,
    "attempt": 1,
    "status": "succeeded",
    "full_sync": False,
    "since": "2030-01-01T02:00:00.120000Z",
    "watermark": "2030-01-01T03:00:00.410000Z",
    "resumed_from": None,
    "next_page": 7,
    "pages_done": 6,
    "total": 3000,
    "processed": 3000,
    "created": 2400,
    "updated": 550,
    "error": None,
    "started_at": "2030-01-01T03:00:00.410000Z",
    "finished_at": "2030-01-01T03:00:04.860000Z",
    "duration_seconds": 4.45,
}
FAILED_RUN = {
    **RUN,
    "id": 6,
    "job_id": 41,
    "status": "failed",
    "next_page": 4,
    "pages_done": 3,
    "processed": 1500,
    "created": 1200,
    "updated": 300,
    "error": ERP_500.removeprefix("ErpUnavailable: "),
    "finished_at": "2030-01-01T02:59:00.000000Z",
}
