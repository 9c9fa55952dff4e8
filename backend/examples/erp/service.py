"""The ERP sync example: page through the ERP's HTTP API, upsert each page set-wise, keep a
checkpoint, record every run.

The task (``tasks.py``) is the boundary: :func:`run_sync` gets its ``transaction``
factory and opens one short transaction per step: the 'running' row, then each page (its upsert
and the checkpoint commit together, in one statement), then the outcome. So a killed worker
loses at most the page in flight, and the retry (or the rescue) resumes after the last
committed page; the upserts are keyed by the ERP's id, so nothing is ever duplicated.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal, Protocol

import httpx
from psycopg.types.json import Jsonb
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from backend.db import DictConnection
from backend.errors import TaskhubError
from backend.examples.erp.settings import ErpSettings
from backend.queries import load_queries

logger = logging.getLogger(__name__)

#: The named statements of sql/erp.sql.
QUERIES = load_queries("backend.examples.erp.sql")

Kind = Literal["assets", "locations"]
TransactionFactory = Callable[[], AbstractAsyncContextManager[DictConnection]]

#: Where the ERP serves each kind of record, under TASKHUB_ERP_BASE_URL.
PATHS: dict[Kind, str] = {"assets": "/api/v1/assets", "locations": "/api/v1/locations"}
#: What a response body may say about a failure, in an error message.
BODY_EXCERPT = 200


class ErpError(TaskhubError):
    """The ERP sync could not go on; the message says why and what to fix."""


class ErpNotConfigured(ErpError):
    """TASKHUB_ERP_BASE_URL is not set on the worker."""


class ErpUnavailable(ErpError):
    """The ERP is down, slow or overloaded (5xx, 429, a timeout, no connection): worth a retry."""


class ErpRejected(ErpError):
    """The ERP refused the request (401/403: the token; other 4xx): a retry would not help."""


class ErpBadData(ErpError):
    """The ERP answered something that is not a page of records: a retry would not help."""


class RunSuperseded(ErpError):
    """This run was marked failed by a later attempt (its worker was presumed dead)."""


# -- what the ERP sends ------------------------------------------------------------------------

#: PostgreSQL text cannot hold NUL.
Text = Annotated[str, Field(max_length=1000, pattern=r"^[^\x00]*$")]
ErpId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00]*$")]
Money = Annotated[
    Decimal,
    Field(ge=Decimal("-999999999999.99"), le=Decimal("999999999999.99"), allow_inf_nan=False),
]


class ErpAsset(BaseModel):
    """One asset as the ERP sends it (unknown fields are ignored)."""

    model_config = ConfigDict(extra="ignore")

    id: ErpId
    code: Text
    name: Text
    category: Text | None = None
    status: Text
    location_id: ErpId | None = None
    serial_number: Text | None = None
    purchase_date: datetime.date | None = None
    purchase_cost: Money | None = None
    updated_at: AwareDatetime


class ErpLocation(BaseModel):
    """One location as the ERP sends it (unknown fields are ignored)."""

    model_config = ConfigDict(extra="ignore")

    id: ErpId
    code: Text
    name: Text
    parent_id: ErpId | None = None
    address: Text | None = None
    updated_at: AwareDatetime


RECORD_MODELS: dict[Kind, type[ErpAsset] | type[ErpLocation]] = {
    "assets": ErpAsset,
    "locations": ErpLocation,
}
UPSERT_QUERIES: dict[Kind, str] = {
    "assets": "erp_upsert_assets_page",
    "locations": "erp_upsert_locations_page",
}


class ErpPage(BaseModel):
    """The envelope of one page: its records and where it stands in the whole."""

    items: list[dict[str, Any]]
    page: int = Field(ge=1)
    page_size: int = Field(ge=1)
    total: int = Field(ge=0)
    total_pages: int = Field(ge=0)


@dataclass(frozen=True)
class Page:
    number: int
    total: int
    total_pages: int
    records: list[dict[str, Any]]  # validated, as JSON data


# -- the HTTP client -------------------------------------------------------------------------


def configured_base_url(settings: ErpSettings) -> str:
    """TASKHUB_ERP_BASE_URL, or :class:`ErpNotConfigured` saying to set it."""
    if not settings.base_url:
        raise ErpNotConfigured(
            "the ERP sync is not configured: set TASKHUB_ERP_BASE_URL (and TASKHUB_ERP_TOKEN) "
            "on the workers"
        )
    return settings.base_url


@contextlib.asynccontextmanager
async def erp_client(settings: ErpSettings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the ERP: base URL, bearer token and timeout from the settings."""
    base_url = configured_base_url(settings)
    headers = {"Accept": "application/json"}
    if settings.token is not None:
        headers["Authorization"] = f"Bearer {settings.token.get_secret_value()}"
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, timeout=settings.timeout
    ) as client:
        yield client


def _excerpt(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    return text[:BODY_EXCERPT] + ("..." if len(text) > BODY_EXCERPT else "")


async def fetch_page(
    client: httpx.AsyncClient,
    kind: Kind,
    number: int,
    page_size: int,
    since: datetime.datetime | None,
) -> Page:
    """One page of records, validated. Raises :class:`ErpUnavailable` for what a retry may
    fix, :class:`ErpRejected` or :class:`ErpBadData` for what it would not."""
    params: dict[str, str | int] = {"page": number, "page_size": page_size}
    if since is not None:
        params["updated_since"] = since.isoformat()
    where = f"GET {PATHS[kind]} page {number}"
    try:
        response = await client.get(PATHS[kind], params=params)
    except httpx.TimeoutException:
        timeout = client.timeout.read
        raise ErpUnavailable(
            f"the ERP did not answer {where} within {timeout:g} s (TASKHUB_ERP_TIMEOUT)"
        ) from None
    except httpx.TransportError as exc:
        raise ErpUnavailable(
            f"cannot reach the ERP at {client.base_url} ({where}): {exc}"
        ) from None
    status = response.status_code
    if status in (401, 403):
        raise ErpRejected(
            f"the ERP refused the credentials ({status} to {where}): check TASKHUB_ERP_TOKEN"
        )
    if status == 429 or status >= 500:
        raise ErpUnavailable(f"the ERP answered {status} to {where}: {_excerpt(response)}")
    if status != 200:
        raise ErpRejected(f"the ERP answered {status} to {where}: {_excerpt(response)}")
    model = RECORD_MODELS[kind]
    records: list[dict[str, Any]] = []
    at: tuple[str | int, ...] = ()
    try:
        envelope = ErpPage.model_validate_json(response.content)
        for index, item in enumerate(envelope.items):
            at = ("items", index)
            records.append(model.model_validate(item).model_dump(mode="json"))
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in (*at, *first["loc"])) or "body"
        raise ErpBadData(
            f"the ERP's answer to {where} is not a page of {kind}: {field}: {first['msg']}"
        ) from None
    return Page(
        number=number,
        total=envelope.total,
        total_pages=envelope.total_pages,
        records=records,
    )


# -- the run history -------------------------------------------------------------------------


class SyncRun(BaseModel):
    """One attempt of a sync job, as erp.sync_runs keeps it."""

    id: int = Field(examples=[7])
    kind: Kind
    job_id: int | None = Field(description="The job (task_id) this run is an attempt of.")
    attempt: int | None = Field(description="1 for the job's first run, 2 for its retry, ...")
    status: Literal["running", "succeeded", "failed"]
    full_sync: bool = Field(description="Every record, or only those changed since `since`.")
    since: datetime.datetime | None = Field(
        description="Records changed at or after this time were asked for; null: all."
    )
    watermark: datetime.datetime = Field(
        description="When this sync's first attempt started: the next incremental's `since`."
    )
    resumed_from: int | None = Field(description="The run whose checkpoint this one resumed.")
    next_page: int = Field(description="The first page not yet committed (the checkpoint).")
    pages_done: int
    total: int | None = Field(description="Records the ERP reported for the sync.")
    processed: int
    created: int
    updated: int
    error: str | None
    started_at: datetime.datetime
    finished_at: datetime.datetime | None
    duration_seconds: float | None


class SyncResult(BaseModel):
    """What a finished sync returns (the job's result)."""

    kind: Kind
    run_id: int
    full_sync: bool
    since: datetime.datetime | None
    total: int
    processed: int
    created: int
    updated: int
    unchanged: int
    pages: int
    resumed_from: int | None

    @classmethod
    def of(cls, run: SyncRun) -> SyncResult:
        return cls(
            kind=run.kind,
            run_id=run.id,
            full_sync=run.full_sync,
            since=run.since,
            total=run.total or 0,
            processed=run.processed,
            created=run.created,
            updated=run.updated,
            unchanged=run.processed - run.created - run.updated,
            pages=run.pages_done,
            resumed_from=run.resumed_from,
        )


async def _run_row(conn: DictConnection, query: str, params: dict[str, Any]) -> SyncRun | None:
    cursor = await conn.execute(QUERIES[query], params)
    row = await cursor.fetchone()
    return SyncRun.model_validate(row) if row is not None else None


async def list_runs(
    conn: DictConnection, *, kind: Kind | None = None, status: str | None = None, limit: int = 20
) -> list[SyncRun]:
    """The run history, newest first."""
    cursor = await conn.execute(
        QUERIES["erp_list_runs"], {"kind": kind, "status": status, "limit": limit}
    )
    return [SyncRun.model_validate(row) for row in await cursor.fetchall()]


async def waiting_job(conn: DictConnection, queueing_lock: str) -> int | None:
    """The waiting job holding ``queueing_lock``, if any."""
    cursor = await conn.execute(QUERIES["erp_waiting_job"], {"queueing_lock": queueing_lock})
    row = await cursor.fetchone()
    return int(row["id"]) if row is not None else None


# -- a sync ----------------------------------------------------------------------------------


class ProgressCallback(Protocol):
    def __call__(
        self,
        done: int | None = None,
        total: int | None = None,
        message: str | None = None,
        **counters: int,
    ) -> None: ...


@dataclass(frozen=True, kw_only=True)
class SyncJob:
    """What a sync needs from the task running it."""

    kind: Kind
    force_full_sync: bool
    settings: ErpSettings
    job_id: int | None
    attempt: int | None
    transaction: TransactionFactory
    progress: ProgressCallback
    #: Raises to stop between pages (an abort, the soft time limit).
    check: Callable[[], None]


async def _start(job: SyncJob) -> SyncRun:
    """One short transaction: close interrupted runs, pick the mode, write the 'running' row.

    A retried (or rescued) job resumes its latest failed attempt: same mode, same ``since``,
    same watermark, from its checkpoint. Otherwise an incremental sync asks for what changed
    since the watermark of the latest successful sync, or for everything if there is none.
    """
    async with job.transaction() as conn:
        interrupted = await conn.execute(
            QUERIES["erp_fail_interrupted_runs"], {"kind": job.kind, "job_id": job.job_id}
        )
        for row in await interrupted.fetchall():
            logger.warning("ERP %s sync run %s was interrupted", job.kind, row["id"])
        previous = None
        if job.job_id is not None:
            previous = await _run_row(conn, "erp_resume_point", {"job_id": job.job_id})
        since = None
        if previous is None and not job.force_full_sync:
            cursor = await conn.execute(QUERIES["erp_last_success"], {"kind": job.kind})
            last = await cursor.fetchone()
            since = last["watermark"] if last is not None else None
        run = await _run_row(
            conn,
            "erp_start_run",
            {
                "kind": job.kind,
                "job_id": job.job_id,
                "attempt": job.attempt,
                "full_sync": since is None,
                "since": since,
                "resume_from": previous.id if previous is not None else None,
            },
        )
    assert run is not None, "INSERT ... RETURNING returns the row"
    return run


def _report(job: SyncJob, run: SyncRun, message: str) -> None:
    job.progress(
        done=run.processed,
        total=run.total,
        message=message,
        **{
            f"{job.kind}_processed": run.processed,
            f"{job.kind}_created": run.created,
            f"{job.kind}_updated": run.updated,
        },
    )


def _describe_failure(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return (
            "interrupted: the job was cancelled, ran past its hard time limit, "
            "or its worker stopped"
        )
    if isinstance(exc, TaskhubError):
        return exc.message
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _pages(job: SyncJob, run: SyncRun) -> SyncRun:
    """Fetch and upsert pages from the run's checkpoint to the last; returns the run as left."""
    async with erp_client(job.settings) as client:
        number = run.next_page
        while True:
            job.check()
            page = await fetch_page(client, job.kind, number, job.settings.page_size, run.since)
            async with job.transaction() as conn:
                moved = await _run_row(
                    conn,
                    UPSERT_QUERIES[job.kind],
                    {
                        "run_id": run.id,
                        "items": Jsonb(page.records),
                        "next_page": number + 1,
                        "total": page.total,
                    },
                )
            if moved is None:
                raise RunSuperseded(
                    f"run {run.id} was marked failed by a later attempt of its job; "
                    "this attempt stops"
                )
            run = moved
            _report(job, run, f"Processing {run.processed}/{page.total} {job.kind}")
            if number >= page.total_pages or not page.records:
                return run
            number += 1


async def run_sync(job: SyncJob) -> SyncResult:
    """Sync one kind of record. A failure is recorded in the run's row and raised."""
    run = await _start(job)
    resumed = f", resuming at page {run.next_page}" if run.resumed_from else ""
    mode = "full sync" if run.since is None else f"changes since {run.since:%Y-%m-%d %H:%M:%S %Z}"
    _report(job, run, f"Connecting to the ERP ({mode}{resumed})")
    try:
        run = await _pages(job, run)
        async with job.transaction() as conn:
            finished = await _run_row(conn, "erp_finish_run", {"run_id": run.id})
        if finished is None:
            raise RunSuperseded(f"run {run.id} was marked failed by a later attempt of its job")
    except BaseException as exc:
        if not isinstance(exc, RunSuperseded):
            await _record_failure(job, run.id, _describe_failure(exc))
        raise
    _report(job, finished, f"Done: {finished.processed} {job.kind} processed")
    return SyncResult.of(finished)


async def _record_failure(job: SyncJob, run_id: int, error: str) -> None:
    """Best effort: the run's row says failed, and why. The job's own error is stored anyway."""
    try:
        async with job.transaction() as conn:
            await conn.execute(QUERIES["erp_fail_run"], {"run_id": run_id, "error": error})
    except Exception:
        logger.exception("could not record the failure of ERP sync run %s", run_id)
