"""OpenTelemetry: a request that defers a job and the job's run appear in one trace; nothing
is stored or recorded while no tracer provider is configured."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel

from backend import defer, tracing
from backend.control import jobs
from backend.db import DictConnection
from backend.declare.registry import TaskBlueprint
from backend.settings import Settings
from backend.tasks.builtin import ping
from tests.conftest import BLUEPRINTS, eventually
from tests.integration.conftest import running_worker

blueprint = TaskBlueprint()


class Numbers(BaseModel):
    values: list[int]


@blueprint.task(name="tests.traced_sum")
def traced_sum(args: Numbers) -> int:
    time.sleep(0.01)
    return sum(args.values)


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracing.use_tracer_provider(provider)
    try:
        yield spans
    finally:
        tracing.use_tracer_provider(None)
        provider.shutdown()


async def stored_args(conn: DictConnection, job_id: int) -> dict[str, object]:
    cursor = await conn.execute("SELECT args FROM procrastinate_jobs WHERE id = %s", (job_id,))
    row = await cursor.fetchone()
    assert row is not None
    args: dict[str, object] = row["args"]
    return args


async def finished(conn: DictConnection, job_id: int) -> jobs.JobView:
    async def done() -> bool:
        return (await jobs.get_job(conn, job_id)).status in jobs.FINISHED

    await eventually(done, within=20)
    return await jobs.get_job(conn, job_id)


async def test_defer_and_run_share_the_request_trace(
    conn: DictConnection,
    settings: Settings,
    db_url: str,
    exporter: InMemorySpanExporter,
    client: httpx.AsyncClient,
) -> None:
    tracer = trace.get_tracer("tests", tracer_provider=tracing._provider)
    with tracer.start_as_current_span("POST /orders") as request_span:
        async with conn.transaction():
            async_id = await defer.defer(conn, ping, {"message": "traced"})
            sync_id = await defer.defer(conn, traced_sum, {"values": [1, 2, 3]})
    assert tracing.TRACE_KEY in await stored_args(conn, async_id)
    async with running_worker(settings, db_url, blueprints=(*BLUEPRINTS, blueprint)):
        assert (await finished(conn, async_id)).result == "traced"
        assert (await finished(conn, sync_id)).result == 6

    spans = {span.name: span for span in exporter.get_finished_spans()}
    trace_id = request_span.get_span_context().trace_id
    for task, job_id in (("taskhub.ping", async_id), ("tests.traced_sum", sync_id)):
        deferred, ran = spans[f"defer {task}"], spans[f"run {task}"]
        assert deferred.kind == trace.SpanKind.PRODUCER
        assert ran.kind == trace.SpanKind.CONSUMER
        assert deferred.context.trace_id == ran.context.trace_id == trace_id
        assert deferred.parent is not None
        assert deferred.parent.span_id == request_span.get_span_context().span_id
        assert ran.parent is not None
        assert ran.parent.span_id == deferred.context.span_id
        assert ran.attributes is not None
        assert ran.attributes["messaging.message.id"] == str(job_id)
    shown = (await client.get(f"/jobs/{async_id}")).json()
    assert shown["args"] == {"message": "traced", "sleep": 0}, "the trace context is not shown"


async def test_no_provider_no_trace_context(conn: DictConnection) -> None:
    assert not tracing.enabled(), "the API alone, unconfigured, records nothing"
    async with conn.transaction():
        job_id = await defer.defer(conn, ping, {"message": "plain"})
    assert await stored_args(conn, job_id) == {"message": "plain", "sleep": 0}
