"""Hostile input against the live API and dashboard on a real database.

schemathesis walks the API statefully (enqueue, then read, cancel and retry what it made;
pause, resume and purge the queues it lists) with valid tokens. hypothesis throws quotes,
``;--``, NUL, 10,000-character strings, huge numbers and unicode at every parameter the
OpenAPI document declares and at the dashboard's filters, cursors and forms: no 5xx, the
schema (``pg_dump --schema-only``) unchanged, and a refused defer leaves no job. Oversized
bodies get 413 everywhere; bad tokens and failed logins are throttled and logged without
the secret.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import anyio.from_thread
import httpx
import hypothesis
import psycopg
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.routing import APIRoute
from hypothesis import strategies as st
from hypothesis.stateful import rule
from psycopg import sql
from schemathesis.python import asgi

from backend.api import create_app
from backend.api.schemas import MAX_BODY_BYTES
from backend.control.waiting import MAX_WAIT
from backend.dashboard import pages as dashboard_pages
from backend.process.embedded import BIN_DIR as EMBEDDED_BIN_DIR
from backend.settings import Settings
from tests.conftest import ADMIN_TOKEN, OPERATE_TOKEN, bearer
from tests.integration.conftest import running_api
from tests.integration.test_openapi import CHECKS, DOCUMENT, seed_jobs

# How many inputs each fuzz tries (the figures in docs/reliability.md).
STATEFUL_SCENARIOS = 60
STEPS_PER_SCENARIO = 12
PARAMETER_EXAMPLES = 2000
DEFER_EXAMPLES = 1000
DASHBOARD_EXAMPLES = 1500
SHORTEST_WAIT = 0.05

# No shrinking: the database keeps what earlier examples did, so a replay would differ.
FUZZ = hypothesis.settings(
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)

NASTY = [
    "'",
    '"',
    "';--",
    "'; DROP TABLE procrastinate_jobs; --",
    '" OR 1=1 --',
    "1; SELECT pg_sleep(5)--",
    "$$; DROP SCHEMA taskhub CASCADE; $$",
    "\x00",
    "a\x00b",
    "%00",
    "%",
    "_",
    "\\",
    "*",
    "../../etc/passwd",
    "{{7*7}}",
    "${jndi:ldap://x}",
    "<script>alert(1)</script>",
    "ü✓\U0001d518 \u202e 中文",
    "\u200b",
    "\r\n",
    " ",
    "",
    "0",
    "-1",
    "NaN",
    "Infinity",
    "1e400",
    str(2**63),
    str(-(2**63) - 1),
    "9" * 400,
    "aWQ6LTE",  # a cursor: base64 "id:-1"
    "aWQ6OTk5OTk5OTk5OTk5OTk5OTk5OTk5",  # id:99999999999999999999
    "aWQ6",  # id:
    "id:1",
]
#: Characters a URL or a form can carry (no lone surrogates: they are not UTF-8).
TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=30)
HUGE = st.sampled_from(["'", "x", "ü", ";--", "\x00", "9", "%", "\U0001d518"]).map(
    lambda c: c * 10_000
)
NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**256),
    st.integers(max_value=-(2**63) + 2, min_value=-(2**256)),
    st.floats(),
).map(str)
HOSTILE = st.one_of(
    st.sampled_from(NASTY),
    TEXT,
    HUGE,
    NUMBERS,
    st.tuples(st.sampled_from(NASTY), TEXT, st.sampled_from(NASTY)).map("".join),
)


# -- the state of the database ---------------------------------------------------------------


def schema_dump(db_url: str) -> str:
    """The schema as pg_dump prints it: any DDL a request managed to run shows here."""
    dumped = subprocess.run(
        # The embedded package's pg_dump (the newest major): it reads the local server and the
        # embedded one the tests start without TEST_DATABASE_URL; the system's may be older.
        [
            str(EMBEDDED_BIN_DIR / "pg_dump"),
            "--schema-only",
            "--no-owner",
            "--no-privileges",
            db_url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    # pg_dump 15.14+ brackets its output with a random \restrict key.
    return re.sub(r"^\\(un)?restrict .*$", "", dumped.stdout, flags=re.MULTILINE)


def job_count(db: psycopg.Connection[Any]) -> int:
    row = db.execute("SELECT count(*) FROM procrastinate_jobs").fetchone()
    assert row is not None
    return int(row[0])


class SyncClient:
    """An httpx client of the in-process app, called from synchronous code (hypothesis
    tests are synchronous): each request runs on the portal's event loop."""

    def __init__(self, portal: anyio.from_thread.BlockingPortal, client: httpx.AsyncClient):
        self.portal, self.client = portal, client

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.portal.call(functools.partial(self.client.request, method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)


@contextlib.asynccontextmanager
async def anonymous_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://taskhub"
    ) as client:
        yield client


Live = tuple[SyncClient, SyncClient, psycopg.Connection[Any], FastAPI]


@pytest.fixture
def live(settings: Settings, db_url: str) -> Iterator[Live]:
    """The API (its dashboard mounted) on a seeded database with its lifespan running, an
    admin client and one without a token, and an autocommit connection to count jobs; the
    schema is compared once the test is done."""
    seed_jobs(db_url)
    before = schema_dump(db_url)
    app = create_app(settings, db_url)
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(running_api(app, ADMIN_TOKEN)) as admin,
        portal.wrap_async_context_manager(anonymous_client(app)) as anonymous,
        psycopg.connect(db_url, autocommit=True) as db,
    ):
        yield SyncClient(portal, admin), SyncClient(portal, anonymous), db, app
    assert schema_dump(db_url) == before, "a request changed the schema"


def assert_no_server_error(response: httpx.Response) -> None:
    assert response.status_code < 500, (
        response.request.method,
        str(response.request.url)[:300],
        response.text[:500],
    )


# -- (a) schemathesis, stateful ----------------------------------------------------------------

# A copy: schemathesis writes the links it infers into the document it is given.
stateful_schema = schemathesis.openapi.from_dict(copy.deepcopy(DOCUMENT))
#: Operations no link reaches: a rule reads them between the linked steps.
READS = [
    stateful_schema[path]["GET"] for path, methods in DOCUMENT["paths"].items() if "get" in methods
]


def reset_jobs(db_url: str) -> None:
    """Every scenario starts from the same rows and ids: hypothesis replays a scenario's
    prefix and needs the same answers (a queueing lock taken by an earlier scenario would
    change them). Only ``stats_watermark`` (one row the migrations write) stays."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables"
            " WHERE (schemaname = 'taskhub' OR tablename LIKE 'procrastinate%')"
            " AND tablename <> 'stats_watermark' ORDER BY 1"
        ).fetchall()
        conn.execute(
            sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
                sql.SQL(", ").join(sql.SQL(table) for (table,) in tables)
            )
        )
    seed_jobs(db_url)


def short_wait(case: schemathesis.Case[Any]) -> None:
    wait = case.query.get("wait") if case.query else None
    if isinstance(wait, int | float) and not isinstance(wait, bool) and 0 < wait <= MAX_WAIT:
        case.query["wait"] = min(wait, SHORTEST_WAIT)


def test_stateful_walk_of_the_api(settings: Settings, db_url: str) -> None:
    """Links (inferred from the document: a job's id, a queue's name) chain enqueue, read,
    cancel and retry, and pause, resume and purge; a rule reads every GET operation between
    them, so the lists see what earlier steps did. Every response conforms, none is a 5xx."""
    seed_jobs(db_url)
    before = schema_dump(db_url)
    app = create_app(settings, db_url)
    operations_seen: set[str] = set()

    class Walk(stateful_schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            reset_jobs(db_url)

        def before_call(self, case: schemathesis.Case[Any]) -> None:
            short_wait(case)
            operations_seen.add(case.operation.label)

        def get_call_kwargs(self, case: schemathesis.Case[Any]) -> dict[str, Any]:
            return {"app": app, "headers": bearer(ADMIN_TOKEN)}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS)

        @rule(data=st.data())
        def read_anything(self, data: st.DataObject) -> None:
            operation = data.draw(st.sampled_from(READS))
            case = data.draw(operation.as_strategy())
            self.before_call(case)
            response = case.call(**self.get_call_kwargs(case))
            self.validate_response(response, case)

    try:
        Walk.run(
            settings=hypothesis.settings(
                FUZZ,
                max_examples=STATEFUL_SCENARIOS,
                stateful_step_count=STEPS_PER_SCENARIO,
            )
        )
    finally:
        asgi.shutdown_lifespans()
    every = {f"{method.upper()} {path}" for path, methods in DOCUMENT["paths"].items()
             for method in methods}  # fmt: skip
    assert every - operations_seen == set(), "operations the walk never reached"
    assert schema_dump(db_url) == before


# -- (b) every declared parameter, fuzzed --------------------------------------------------------

PARAMETERS = [
    (path, method, [p for p in op.get("parameters", []) if p["in"] in ("path", "query", "header")])
    for path, methods in DOCUMENT["paths"].items()
    for method, op in methods.items()
    if op.get("parameters") and method in ("get", "post")
]


#: httpx refuses a URL component over 64 KiB (as servers do): stay under it.
MAX_URL = 60_000


@st.composite
def hostile_request(draw: st.DrawFn) -> tuple[str, str, dict[str, Any], dict[str, str]]:
    path, method, parameters = draw(st.sampled_from(PARAMETERS))
    query: dict[str, Any] = {}
    headers: dict[str, str] = {}
    for parameter in parameters:
        name = parameter["name"]
        if parameter["in"] == "path":
            path = path.replace("{" + name + "}", quote(draw(HOSTILE), safe="")[:MAX_URL] or "%20")
        elif draw(st.booleans()):
            value = draw(HOSTILE)
            if name == "wait":  # a valid wait holds the request open
                value = value if not _short_enough(value) else str(SHORTEST_WAIT)
            if parameter["in"] == "query":
                values = draw(st.lists(st.just(value), min_size=1, max_size=2))
                if len(urlencode({**query, name: values}, doseq=True)) < MAX_URL:
                    query[name] = values
            elif value.isascii() and value.isprintable():
                headers[name] = value
    return method, path, query, headers


def _short_enough(value: str) -> bool:
    try:
        return 0 < float(value) <= MAX_WAIT
    except ValueError:
        return False


def test_every_parameter_survives_hostile_values(
    live: Live,
) -> None:
    """Names, filters, cursors, page sizes, ids and headers of every operation: a 4xx or a
    2xx, never a 5xx; nothing enqueued (no operation here defers)."""
    client, _, db, _ = live
    jobs_before = job_count(db)
    tried: dict[str, int] = {}

    @hypothesis.settings(FUZZ, max_examples=PARAMETER_EXAMPLES)
    @hypothesis.given(request=hostile_request())
    def check(request: tuple[str, str, dict[str, Any], dict[str, str]]) -> None:
        method, path, query, headers = request
        response = client.request(method, path, params=query, headers=headers)
        assert_no_server_error(response)
        assert response.headers["content-type"].startswith("application/json"), path
        label = f"{method.upper()} {urlsplit(path).path.split('/')[1]}"
        tried[label] = tried.get(label, 0) + 1

    check()
    assert job_count(db) == jobs_before
    print("parameter fuzz: requests per operation family", tried)


DEFER_BODY = st.fixed_dictionaries(
    {"task": st.one_of(st.just("taskhub.ping"), HOSTILE)},
    optional={
        "args": st.fixed_dictionaries({}, optional={"message": st.one_of(HOSTILE, NUMBERS)}),
        "queue": HOSTILE,
        "lock": HOSTILE,
        "queueing_lock": HOSTILE,
        "priority": st.one_of(st.integers(), st.integers(min_value=2**31 - 2, max_value=2**90)),
        "schedule_in": st.one_of(st.floats(min_value=-1e300, max_value=1e300), st.integers()),
        "schedule_at": HOSTILE,
    },
)


def test_refused_defers_enqueue_nothing(live: Live) -> None:
    """POST /jobs with hostile bodies: each refusal leaves the job count as it was, each
    201 adds exactly one job."""
    client, _, db, _ = live
    outcomes: dict[int, int] = {}

    @hypothesis.settings(FUZZ, max_examples=DEFER_EXAMPLES)
    @hypothesis.given(body=DEFER_BODY)
    def check(body: dict[str, Any]) -> None:
        before = job_count(db)
        response = client.post("/jobs", json=body)
        assert_no_server_error(response)
        outcomes[response.status_code] = outcomes.get(response.status_code, 0) + 1
        added = 1 if response.status_code == 201 else 0
        assert job_count(db) == before + added, (response.status_code, response.text[:300])

    check()
    assert outcomes.get(201), outcomes
    assert sum(count for status, count in outcomes.items() if status >= 400), outcomes
    print("defer fuzz: outcomes", outcomes)


# -- the dashboard's pages and forms -----------------------------------------------------------


def log_in(client: SyncClient, token: str = OPERATE_TOKEN) -> str:
    """A dashboard session on ``client``; returns its CSRF token."""
    answer = client.post("/dashboard/login", data={"token": token}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    found = re.search(r'name="csrf" value="([^"]+)"', client.get("/dashboard/workers").text)
    assert found
    return found.group(1)


DASHBOARD_PAGES: dict[str, list[str]] = {
    "/dashboard/jobs": ["status", "task", "queue", "since", "until", "cursor", "id"],
    "/dashboard/failed": ["task", "queue", "cursor"],
    "/dashboard/audit": ["cursor"],
    "/dashboard/": ["range"],
    "/dashboard/login": ["next"],
}


@st.composite
def dashboard_request(draw: st.DrawFn) -> tuple[str, str, dict[str, Any]]:
    """A list page with hostile filters, a hostile path, or a form action with hostile
    fields (actions defer only through /tasks/{name}/defer and /schedules/{name}/run)."""
    kind = draw(st.sampled_from(["page", "job", "defer", "queue", "failed", "run"]))
    name = quote(draw(HOSTILE), safe="")[: MAX_URL // 2] or "%20"
    if kind == "page":
        page, fields = draw(st.sampled_from(sorted(DASHBOARD_PAGES.items())))
        query: dict[str, str] = {}
        for field in draw(st.lists(st.sampled_from(fields), unique=True)):
            value = draw(HOSTILE)
            if len(urlencode({**query, field: value})) < MAX_URL:
                query[field] = value
        return "GET", page, query
    if kind == "job":
        return "GET", f"/dashboard/jobs/{name}", {}
    if kind == "defer":
        task = draw(st.sampled_from(["taskhub.ping", name]))
        args = draw(st.one_of(HOSTILE, st.just('{"message": "\\u0000"}'), st.just("{}")))
        return "POST", f"/dashboard/tasks/{task}/defer", {"args": args}
    if kind == "queue":
        action = draw(st.sampled_from(["pause", "resume", "purge"]))
        return "POST", f"/dashboard/queues/{name}/{action}", {}
    if kind == "failed":
        form = {"task": draw(HOSTILE), "queue": draw(HOSTILE)}
        if draw(st.booleans()):
            form["job_id"] = draw(HOSTILE)
        return "POST", f"/dashboard/failed/{draw(st.sampled_from(['retry', 'cancel']))}", form
    return "POST", f"/dashboard/schedules/{name}/run", {}


def test_dashboard_survives_hostile_filters_and_forms(
    live: Live,
) -> None:
    """Every list page's filters and cursor, job pages, queue, failed-job and defer forms:
    no 5xx; a refused form enqueues nothing."""
    client, _, db, _ = live
    csrf = log_in(client)
    outcomes: dict[str, int] = {}

    @hypothesis.settings(FUZZ, max_examples=DASHBOARD_EXAMPLES)
    @hypothesis.given(request=dashboard_request())
    def check(request: tuple[str, str, dict[str, Any]]) -> None:
        method, path, fields = request
        before = job_count(db)
        if method == "GET":
            response = client.get(path, params=fields, follow_redirects=False)
        else:
            response = client.post(path, data={**fields, "csrf": csrf}, follow_redirects=False)
        assert_no_server_error(response)
        key = f"{method} {path.split('/')[2] or 'overview'} {response.status_code}"
        outcomes[key] = outcomes.get(key, 0) + 1
        deferred = (
            method == "POST"
            and response.status_code == 303
            and "/jobs/" in (response.headers.get("location", ""))
        )
        assert job_count(db) == before + (1 if deferred else 0), (path, response.status_code)

    check()
    print("dashboard fuzz: outcomes", dict(sorted(outcomes.items())))


# -- (c) oversized bodies ------------------------------------------------------------------------


def body_routes() -> list[str]:
    """Every POST, PUT or PATCH operation of the API (its document) and of the dashboard."""
    api = [
        path
        for path, methods in DOCUMENT["paths"].items()
        if set(methods) & {"post", "put", "patch"}
    ]
    dashboard = [
        "/dashboard" + route.path
        for route in dashboard_pages.router.routes
        if isinstance(route, APIRoute) and (route.methods or set()) & {"POST", "PUT", "PATCH"}
    ]
    return api + dashboard


def concrete(path: str) -> str:
    values = {"job_id": "1", "name": "default", "task_name": "taskhub.ping",
              "action": "retry"}  # fmt: skip
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "x"), path)


def test_oversized_bodies_get_413_everywhere(
    live: Live,
) -> None:
    """A body over the limit, announced (Content-Length) or streamed (chunked), is a 413
    on every route that takes one, logged in or not, and changes nothing."""
    client, anonymous, db, _ = live
    csrf = log_in(client)
    routes = body_routes()
    assert "/jobs" in routes
    assert "/dashboard/tasks/{task_name}/defer" in routes
    jobs_before = job_count(db)
    big = b"{" + b'"a":"' + b"x" * MAX_BODY_BYTES + b'"}'
    for path in routes:
        url = concrete(path)
        announced = client.post(url, content=big, headers={"content-type": "application/json"})
        assert announced.status_code == 413, (path, announced.status_code, announced.text[:200])
        form = f"csrf={csrf}&args=".encode() + b"x" * MAX_BODY_BYTES

        async def chunks(form: bytes = form) -> AsyncIterator[bytes]:
            for start in range(0, len(form), 65536):
                yield form[start : start + 65536]

        streamed = client.post(
            url, content=chunks(), headers={"content-type": "application/x-www-form-urlencoded"}
        )
        assert streamed.status_code == 413, (path, streamed.status_code, streamed.text[:200])
    # No token, no session: refused before anything runs.
    assert anonymous.post("/jobs", content=big).status_code == 413
    assert anonymous.post("/dashboard/backups/run", content=big).status_code == 413
    assert job_count(db) == jobs_before
    print(f"413 on {len(routes)} routes: {routes}")


# -- (e) throttled bad tokens and logins, logged without the secret ----------------------------

GUESS = "guessed-token-0123456789-abcdef"


async def test_bad_api_tokens_are_throttled_per_address(
    settings: Settings, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Ten bad tokens from one address, then 429 with Retry-After even for a good token;
    another address is not held, a missing token does not count, and the log names the
    address, never the token."""
    caplog.set_level(logging.INFO)
    app = create_app(settings, db_url)
    async with running_api(app, token=None) as client:
        for _ in range(20):  # no token at all: not a guess
            assert (await client.get("/jobs")).status_code == 401
        assert (await client.get("/jobs", headers=bearer(ADMIN_TOKEN))).status_code == 200
        for n in range(10):
            answer = await client.get("/jobs", headers=bearer(f"{GUESS}{n}"))
            assert answer.status_code == 401, n
        held = await client.get("/jobs", headers=bearer(ADMIN_TOKEN))
        assert held.status_code == 429, held.text
        assert 0 < int(held.headers["Retry-After"]) <= 300
        assert "too many invalid API tokens" in held.json()["detail"]
        refused = await client.post(
            "/jobs", json={"task": "taskhub.ping"}, headers=bearer(ADMIN_TOKEN)
        )
        assert refused.status_code == 429
        elsewhere = httpx.ASGITransport(app=app, client=("198.51.100.9", 4000))
        async with httpx.AsyncClient(transport=elsewhere, base_url="http://taskhub") as other:
            assert (await other.get("/jobs", headers=bearer(ADMIN_TOKEN))).status_code == 200
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        cursor = await conn.execute("SELECT count(*) FROM procrastinate_jobs")
        assert await cursor.fetchone() == (0,), "the held defer enqueued nothing"
    refusals = [r for r in caplog.records if "invalid API token" in r.getMessage()]
    assert len(refusals) == 10
    assert all(r.levelno == logging.WARNING and "127.0.0.1" in r.getMessage() for r in refusals)
    assert GUESS not in caplog.text
    assert ADMIN_TOKEN not in caplog.text


async def test_failed_logins_are_throttled_and_logged_without_secrets(
    settings: Settings, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    typed = {"username": "alice-secret-name", "password": "p4ssw0rd-typed-wrong"}
    async with running_api(create_app(settings, db_url), token=None) as client:
        for n in range(10):
            data = {"token": f"{GUESS}{n}"} if n % 2 else typed
            answer = await client.post("/dashboard/login", data=data)
            assert answer.status_code == 401, n
        held = await client.post("/dashboard/login", data={"token": OPERATE_TOKEN})
        assert held.status_code == 429
        assert int(held.headers["Retry-After"]) > 0
        assert "set-cookie" not in held.headers
    refusals = [r for r in caplog.records if "refused a dashboard login" in r.getMessage()]
    assert len(refusals) == 10
    assert any("held a dashboard login" in r.getMessage() for r in caplog.records)
    for secret in (GUESS, OPERATE_TOKEN, typed["username"], typed["password"]):
        assert secret not in caplog.text
