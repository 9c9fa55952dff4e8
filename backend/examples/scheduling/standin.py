"""A stand-in for the external scheduling API schedules sync to (Crossmark in the seed).

A real HTTP service (serve it with :func:`backend.examples.serving.serving`) that keeps events
and employees in memory, checks a bearer token, honours ``Idempotency-Key`` on event creation,
and fails on demand: ``standin.inject(Fault.error(500), Fault.timeout(), route="POST /events")``
makes the next matching requests answer 500, or do their work and then hold the answer back
until the client gives up (the "timed out after committing" case an idempotency key exists for).

Its wire format is written here, apart from the example's client (``service.py``), so
the tests exercise the client against the API as the remote defines it.
"""

from __future__ import annotations

import datetime
import threading
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import anyio
from fastapi import Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CODE_PATTERN = r"^[A-Za-z0-9_.-]{1,40}$"
bearer = HTTPBearer(auto_error=False)


class RemoteError(Exception):
    """An error answer of the stand-in: ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class EmployeeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    email: str | None = Field(default=None, max_length=254)
    active: bool = True


class Employee(EmployeeBody):
    code: str
    version: int
    updated_at: datetime.datetime


class EventBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    employee_code: str = Field(pattern=CODE_PATTERN)
    title: str = Field(min_length=1, max_length=200)
    starts_at: AwareDatetime
    ends_at: AwareDatetime

    @model_validator(mode="after")
    def _ends_after_start(self) -> EventBody:
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self


class NewEvent(EventBody):
    reference: str | None = Field(
        default=None, max_length=200, description="The client's own id for the event."
    )


class Event(NewEvent):
    id: str
    version: int
    updated_at: datetime.datetime


class EventPage(BaseModel):
    items: list[Event]
    next_cursor: str | None


@dataclass(frozen=True)
class Fault:
    """A failure for the next request matching ``route`` (``"POST /events"``; None: any).

    ``error``: answer ``status`` without doing anything. ``timeout``: do the work (the event
    is created), then hold the answer back until the client disconnects (or ``stall`` seconds).
    """

    kind: Literal["error", "timeout"]
    status: int = 500
    route: str | None = None

    @classmethod
    def error(cls, status: int = 500, route: str | None = None) -> Fault:
        return cls("error", status, route)

    @classmethod
    def timeout(cls, route: str | None = None) -> Fault:
        return cls("timeout", 200, route)

    def matches(self, method: str, path: str) -> bool:
        if self.route is None:
            return True
        want_method, _, want_path = self.route.partition(" ")
        return method == want_method and path.startswith(want_path)


@dataclass(frozen=True)
class RecordedRequest:
    """A request the stand-in received: what it was asked, what it answered."""

    method: str
    path: str
    idempotency_key: str | None
    status: int | None  # what the app answered; None if it answered nothing
    fault: str | None  # "error" or "timeout" when an injected fault hit this request

    @property
    def route(self) -> str:
        return f"{self.method} {self.path}"


@dataclass
class _Saved:
    """What an Idempotency-Key created: the request it came with and the first answer."""

    request: dict[str, Any]
    status: int
    body: dict[str, Any]


@dataclass
class SchedulingStandin:
    """The remote's state and its ASGI app (``standin.app``)."""

    token: str
    stall: float = 10.0
    page_size: int = 100
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _events: dict[str, Event] = field(default_factory=dict)
    _employees: dict[str, Employee] = field(default_factory=dict)
    _keys: dict[str, _Saved] = field(default_factory=dict)
    _faults: list[Fault] = field(default_factory=list)
    _requests: list[RecordedRequest] = field(default_factory=list)
    _next_id: int = 1

    def __post_init__(self) -> None:
        self.app = _FaultInjection(self, _build_app(self))

    # -- For tests and demos ----------------------------------------------------------------

    def inject(self, *faults: Fault, route: str | None = None) -> None:
        """Queue failures for the next matching requests, in order; ``route`` sets their route."""
        with self._lock:
            self._faults.extend(
                Fault(fault.kind, fault.status, route) if route is not None else fault
                for fault in faults
            )

    def events(self) -> list[Event]:
        with self._lock:
            return [event.model_copy() for event in self._events.values()]

    def employees(self) -> dict[str, Employee]:
        with self._lock:
            return {code: employee.model_copy() for code, employee in self._employees.items()}

    def requests(self, route: str | None = None) -> list[RecordedRequest]:
        """Requests received so far; with ``route`` (``"POST /events"``), only those."""
        with self._lock:
            recorded = list(self._requests)
        if route is None:
            return recorded
        method, _, path = route.partition(" ")
        return [r for r in recorded if r.method == method and r.path.startswith(path)]

    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    # -- The API's behaviour -----------------------------------------------------------------

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.matches(method, path):
                    return self._faults.pop(index)
        return None

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def put_employee(
        self, code: str, body: EmployeeBody, create_only: bool
    ) -> tuple[int, Employee]:
        now = datetime.datetime.now(datetime.UTC)
        with self._lock:
            current = self._employees.get(code)
            if current is not None and create_only:
                raise RemoteError(412, f"employee {code} exists (If-None-Match: *)")
            if current is None:
                employee = Employee(code=code, version=1, updated_at=now, **body.model_dump())
                self._employees[code] = employee
                return 201, employee
            if body.model_dump() != current.model_dump(include=set(EmployeeBody.model_fields)):
                current = current.model_copy(
                    update={**body.model_dump(), "version": current.version + 1, "updated_at": now}
                )
                self._employees[code] = current
            return 200, current

    def get_employee(self, code: str) -> Employee:
        with self._lock:
            if code not in self._employees:
                raise RemoteError(404, f"no employee {code}")
            return self._employees[code]

    def create_event(self, body: NewEvent, key: str | None) -> tuple[int, dict[str, Any], bool]:
        """(status, body, replayed) of a create, honouring the Idempotency-Key."""
        request = body.model_dump(mode="json")
        now = datetime.datetime.now(datetime.UTC)
        with self._lock:
            if key is not None and key in self._keys:
                saved = self._keys[key]
                if saved.request != request:
                    raise RemoteError(
                        409, f"Idempotency-Key {key} was used with a different request"
                    )
                return saved.status, saved.body, True
            self._check_employee(body.employee_code)
            event = Event(id=f"evt_{self._next_id:06d}", version=1, updated_at=now, **request)
            self._next_id += 1
            self._events[event.id] = event
            answer = event.model_dump(mode="json")
            if key is not None:
                self._keys[key] = _Saved(request=request, status=201, body=answer)
            return 201, answer, False

    def update_event(self, event_id: str, body: EventBody) -> Event:
        with self._lock:
            current = self._events.get(event_id)
            if current is None:
                raise RemoteError(404, f"no event {event_id}")
            self._check_employee(body.employee_code)
            changes = body.model_dump()
            if any(getattr(current, name) != value for name, value in changes.items()):
                current = current.model_copy(
                    update={
                        **changes,
                        "version": current.version + 1,
                        "updated_at": datetime.datetime.now(datetime.UTC),
                    }
                )
                self._events[event_id] = current
            return current

    def get_event(self, event_id: str) -> Event:
        with self._lock:
            if event_id not in self._events:
                raise RemoteError(404, f"no event {event_id}")
            return self._events[event_id]

    def delete_event(self, event_id: str) -> None:
        with self._lock:
            if self._events.pop(event_id, None) is None:
                raise RemoteError(404, f"no event {event_id}")

    def list_events(self, cursor: str | None, limit: int) -> EventPage:
        with self._lock:
            ordered = sorted(self._events.values(), key=lambda event: event.id)
        after = [event for event in ordered if cursor is None or event.id > cursor][: limit + 1]
        more = len(after) > limit
        items = after[:limit]
        return EventPage(items=items, next_cursor=items[-1].id if more and items else None)

    def _check_employee(self, code: str) -> None:
        if code not in self._employees:
            raise RemoteError(422, f"unknown employee {code}: create it first (PUT /employees)")


def _build_app(standin: SchedulingStandin) -> FastAPI:
    app = FastAPI(title="scheduling API stand-in")

    @app.exception_handler(RemoteError)
    async def remote_error(request: Request, exc: RemoteError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    async def authorized(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if credentials is None or credentials.credentials != standin.token:
            raise RemoteError(401, "a valid bearer token is required")

    auth = [Depends(authorized)]

    @app.put("/employees/{code}", dependencies=auth, response_model=Employee)
    async def put_employee(
        code: Annotated[str, Path(pattern=CODE_PATTERN)],
        body: EmployeeBody,
        response: Response,
        if_none_match: Annotated[str | None, Header()] = None,
    ) -> Employee:
        status, employee = standin.put_employee(code, body, create_only=if_none_match == "*")
        response.status_code = status
        return employee

    @app.get("/employees/{code}", dependencies=auth, response_model=Employee)
    async def get_employee(code: str) -> Employee:
        return standin.get_employee(code)

    @app.post("/events", dependencies=auth, status_code=201)
    async def create_event(
        body: NewEvent, idempotency_key: Annotated[str | None, Header()] = None
    ) -> JSONResponse:
        status, answer, replayed = standin.create_event(body, idempotency_key)
        headers = {"Idempotent-Replayed": "true"} if replayed else None
        return JSONResponse(answer, status_code=status, headers=headers)

    @app.get("/events", dependencies=auth, response_model=EventPage)
    async def list_events(
        cursor: str | None = None, limit: Annotated[int, Query(ge=1, le=500)] = 100
    ) -> EventPage:
        return standin.list_events(cursor, min(limit, standin.page_size))

    @app.get("/events/{event_id}", dependencies=auth, response_model=Event)
    async def get_event(event_id: str) -> Event:
        return standin.get_event(event_id)

    @app.put("/events/{event_id}", dependencies=auth, response_model=Event)
    async def update_event(event_id: str, body: EventBody) -> Event:
        return standin.update_event(event_id, body)

    @app.delete("/events/{event_id}", dependencies=auth, status_code=204)
    async def delete_event(event_id: str) -> Response:
        standin.delete_event(event_id)
        return Response(status_code=204)

    return app


class _FaultInjection:
    """ASGI wrapper: records every request and applies the injected faults."""

    def __init__(self, standin: SchedulingStandin, app: ASGIApp) -> None:
        self.standin = standin
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        headers = dict(scope.get("headers") or [])
        key_header = headers.get(b"idempotency-key")
        key = key_header.decode("latin-1") if key_header is not None else None
        fault = self.standin.take_fault(method, path)
        answered: list[int] = []

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                answered.append(int(message["status"]))
            await send(message)

        try:
            if fault is None:
                await self.app(scope, receive, watch)
            elif fault.kind == "error":
                response = JSONResponse(
                    {"error": f"injected failure ({fault.status})"}, status_code=fault.status
                )
                await response(scope, receive, watch)
            else:
                await self._commit_then_stall(scope, receive, watch)
        finally:
            self.standin.record(
                RecordedRequest(
                    method=method,
                    path=path,
                    idempotency_key=key,
                    status=answered[0] if answered else None,
                    fault=fault.kind if fault else None,
                )
            )

    async def _commit_then_stall(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request (its effects stay), then answer nothing until the client gives up;
        a client still waiting after ``stall`` seconds gets a 504, as from a proxy."""

        async def discard(message: Message) -> None:
            return None

        await self.app(scope, receive, discard)
        with anyio.move_on_after(self.standin.stall):
            while (await receive())["type"] != "http.disconnect":
                pass
            return
        timeout = JSONResponse({"error": "gateway timeout"}, status_code=504)
        await timeout(scope, receive, send)
