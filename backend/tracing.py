"""OpenTelemetry spans for deferring and running jobs, linked into one trace; off by default.

Nothing happens unless ``opentelemetry-api`` is installed and a tracer provider is configured
(the SDK, or an agent such as ``opentelemetry-instrument``): with the API's default provider a
span is invalid, and no trace context is stored. When a trace is active, the defer span's
context (W3C ``traceparent``) travels with the job's arguments under :data:`TRACE_KEY`; the
worker takes it out before the task's model sees them and starts the run span as its child,
so the request that deferred a job and the job's run appear in one trace.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

try:
    from opentelemetry import propagate, trace
except ImportError:  # the API is optional
    trace = None  # type: ignore[assignment]
    propagate = None  # type: ignore[assignment]

TRACE_KEY = "__taskhub_trace__"
_provider: Any = None  # a tracer provider of the caller's choice (tests); else the global one


def use_tracer_provider(provider: Any) -> None:
    """Trace with ``provider`` rather than OpenTelemetry's global one (``None``: the global)."""
    global _provider
    _provider = provider


def _tracer() -> Any:
    """The tracer to use, or None when tracing is off: the API is missing, or no provider has
    been configured (the API's placeholder would make spans that record nothing, at a cost)."""
    if trace is None:
        return None
    provider = _provider if _provider is not None else trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider):
        return None
    return provider.get_tracer("taskhub")


def enabled() -> bool:
    """Whether spans are recorded: a cheap check for the hot paths to make first."""
    return _tracer() is not None


@contextlib.contextmanager
def defer_span(task_name: str, queue: str) -> Iterator[dict[str, str] | None]:
    """A span around one defer; yields the trace context to store with the job, if any."""
    tracer = _tracer()
    if tracer is None:
        yield None
        return
    attributes = {"messaging.system": "taskhub", "messaging.destination.name": queue}
    with tracer.start_as_current_span(
        f"defer {task_name}", kind=trace.SpanKind.PRODUCER, attributes=attributes
    ) as span:
        if not span.get_span_context().is_valid:
            yield None
            return
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        yield carrier


def split_trace(kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str] | None]:
    """A job's stored arguments without the trace context, and the context."""
    if TRACE_KEY not in kwargs:
        return dict(kwargs), None
    arguments = dict(kwargs)
    carrier = arguments.pop(TRACE_KEY)
    return arguments, carrier if isinstance(carrier, dict) else None


@contextlib.contextmanager
def run_span(task_name: str, job_id: int | None, carrier: dict[str, str] | None) -> Iterator[None]:
    """A span around one run of a job, the child of the span that deferred it, if any."""
    tracer = _tracer()
    if tracer is None:
        yield
        return
    parent = propagate.extract(carrier) if carrier else None
    attributes = {"messaging.system": "taskhub", "messaging.message.id": str(job_id)}
    with tracer.start_as_current_span(
        f"run {task_name}", context=parent, kind=trace.SpanKind.CONSUMER, attributes=attributes
    ):
        yield
