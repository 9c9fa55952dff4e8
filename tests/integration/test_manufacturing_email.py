"""The manufacturing example's email family on a real database, a real worker and the
stand-in mail server (aiosmtpd) on a free port.

Each test's database is migrated with the app; the worker serves taskhub's tasks and the email
family's on the three email queues, reading ``ManufacturingSettings`` from
``TASKHUB_MANUFACTURING_*`` (set per test to the stand-in and a bounce Maildir).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend import defer
from backend.api import create_app
from backend.db import DictConnection
from backend.declare.apps import load_apps
from backend.declare.registry import PeriodicArgs, TaskDefinition
from backend.examples.manufacturing import app as manufacturing_app
from backend.examples.manufacturing.email import router as email_router
from backend.examples.manufacturing.email import service, tasks
from backend.examples.manufacturing.email.rendering import TemplateProblem
from backend.examples.manufacturing.email.standin import MailStandin, serving_smtp
from backend.process import migrate
from backend.settings import Settings, load_settings
from tests.conftest import BLUEPRINTS, READ_TOKEN, TOKENS, bearer, eventually
from tests.integration.conftest import running_api, running_worker

EMAIL_QUEUES = ["email.urgent", "email.normal", "email.bulk"]
WORKER_BLUEPRINTS = (*BLUEPRINTS, tasks.blueprint)


@pytest.fixture(autouse=True)
def manufacturing_schema(db_url: str) -> None:
    """The test's database with the app's migrations too (the template has taskhub's only)."""
    migrate.upgrade(db_url, apps=[manufacturing_app])


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    return tmp_path / "bounces"


@pytest.fixture
def standin(maildir: Path) -> MailStandin:
    return MailStandin(bounce_maildir=maildir)


@pytest.fixture
def smtp(
    standin: MailStandin, maildir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, int]]:
    """The stand-in serving, and the workers' settings pointing at it."""
    with serving_smtp(standin) as (host, port):
        monkeypatch.setenv("TASKHUB_MANUFACTURING_SMTP_HOST", host)
        monkeypatch.setenv("TASKHUB_MANUFACTURING_SMTP_PORT", str(port))
        monkeypatch.setenv("TASKHUB_MANUFACTURING_SMTP_TIMEOUT", "5")
        monkeypatch.setenv("TASKHUB_MANUFACTURING_BOUNCE_MAILDIR", str(maildir))
        yield host, port


@pytest.fixture
def worker_settings(settings: Settings) -> Settings:
    """Fast polling: rate-limited jobs become due again within a tenth of a second. The
    family's schedules are off: the tests tick them by hand (a tick of the worker's own would
    hold the queueing lock the hand-deferred one needs)."""
    return load_settings(
        database_url=settings.database_url,
        data_dir=settings.data_dir,
        tokens=TOKENS,
        fetch_polling_interval=0.1,
        schedules="manufacturing.retry_failed_emails=off;manufacturing.process_email_bounces=off",
    )


@contextlib.asynccontextmanager
async def email_worker(settings: Settings, db_url: str) -> AsyncIterator[None]:
    async with running_worker(
        settings, db_url, queues=EMAIL_QUEUES, concurrency=4, blueprints=WORKER_BLUEPRINTS
    ):
        yield


async def queue_email(conn: DictConnection, to: str, **changes: Any) -> int:
    request = service.EmailRequest.model_validate(
        {"to_email": to, "template": "welcome", "context": {"user_name": "Ada"}, **changes}
    )
    queued = await service.queue_email(conn, request)
    await conn.commit()
    return queued.email_id


async def email_of(conn: DictConnection, email_id: int) -> service.Email:
    await conn.commit()  # see the worker's commits
    email = await service.get_email(conn, email_id)
    assert email is not None
    return email


async def attempts_of(conn: DictConnection, email_id: int) -> list[service.Attempt]:
    await conn.commit()
    return await service.list_attempts(conn, email_id=email_id)


async def settled(conn: DictConnection, email_id: int, within: float = 20) -> service.Email:
    """The email once its job recorded an outcome."""

    async def done() -> bool:
        return (await email_of(conn, email_id)).status != "queued"

    await eventually(done, within=within)
    return await email_of(conn, email_id)


async def run_now(conn: DictConnection, task: TaskDefinition[Any], within: float = 20) -> Any:
    """Defer a periodic task by hand (a tick) and wait for its result."""
    job_id = await defer.defer(conn, task, PeriodicArgs())
    await conn.commit()
    query = (
        "SELECT status, result FROM procrastinate_jobs job"
        " LEFT JOIN taskhub.job_results stored ON stored.job_id = job.id WHERE job.id = %s"
    )
    outcome: dict[str, Any] = {}

    async def finished() -> bool:
        await conn.commit()
        cursor = await conn.execute(query, (job_id,))
        row = await cursor.fetchone()
        assert row is not None
        outcome.update(row)
        return row["status"] in {"succeeded", "failed"}

    await eventually(finished, within=within)
    assert outcome["status"] == "succeeded", outcome
    return outcome["result"]


# -- one email ---------------------------------------------------------------------------------


async def test_a_welcome_email_is_delivered_and_its_attempt_recorded(
    conn: DictConnection,
    standin: MailStandin,
    smtp: tuple[str, int],
    worker_settings: Settings,
    db_url: str,
) -> None:
    email_id = await queue_email(conn, "ada@example.com", to_name="Ada Lovelace")
    async with email_worker(worker_settings, db_url):
        email = await settled(conn, email_id)

    assert email.status == "sent"
    assert email.attempts == 1
    assert email.next_retry_at is None
    [attempt] = await attempts_of(conn, email_id)
    assert attempt.status == "sent"
    assert attempt.smtp_code == 250
    assert attempt.smtp_answer is not None
    assert attempt.smtp_answer.startswith("250 2.0.0 Ok: queued as ")
    assert attempt.job_id is not None
    assert attempt.attempt == 1
    assert attempt.started_at <= attempt.finished_at
    [received] = standin.received_by("ada@example.com")
    assert received.message["Subject"] == "Welcome to the Manufacturing Platform, Ada"
    assert received.message["To"] == "Ada Lovelace <ada@example.com>"
    assert received.message["Message-ID"] == f"<email-{email_id}@manufacturing.example>"
    assert received.mail_from == "noreply@manufacturing.example"


async def test_an_urgent_email_goes_through_the_urgent_queue(
    conn: DictConnection, smtp: tuple[str, int], worker_settings: Settings, db_url: str
) -> None:
    request = service.EmailRequest(
        to_email="ops@example.com",
        template="system_alert",
        context={"alert_type": "critical_error", "message": "line 3 stopped"},
        urgent=True,
    )
    queued = await service.queue_email(conn, request)
    await conn.commit()
    cursor = await conn.execute(
        "SELECT queue_name, priority FROM procrastinate_jobs WHERE id = %s", (queued.job_id,)
    )
    assert await cursor.fetchone() == {"queue_name": "email.urgent", "priority": 9}
    async with email_worker(worker_settings, db_url):
        assert (await settled(conn, queued.email_id)).status == "sent"


async def test_a_template_the_context_cannot_fill_is_refused_before_anything_is_stored(
    conn: DictConnection,
) -> None:
    request = service.EmailRequest(to_email="a@example.com", template="welcome", context={})
    with pytest.raises(TemplateProblem, match="'user_name' is undefined"):
        await service.queue_email(conn, request)
    await conn.rollback()
    assert await service.list_emails(conn) == []


# -- refusals and retries ----------------------------------------------------------------------


async def test_a_refused_address_is_recorded_refused_and_never_retried(
    conn: DictConnection,
    standin: MailStandin,
    smtp: tuple[str, int],
    worker_settings: Settings,
    db_url: str,
) -> None:
    standin.refuse("nobody@example.com")
    email_id = await queue_email(conn, "nobody@example.com")
    async with email_worker(worker_settings, db_url):
        email = await settled(conn, email_id)
        assert email.status == "refused"
        assert email.next_retry_at is None
        result = await run_now(conn, tasks.retry_failed_emails)
        assert result == {"requeued": {}}

    [attempt] = await attempts_of(conn, email_id)
    assert attempt.status == "refused"
    assert attempt.smtp_code == 550
    assert attempt.smtp_answer == (
        "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown"
    )
    assert (await email_of(conn, email_id)).attempts == 1
    assert standin.received_by("nobody@example.com") == []


async def test_a_send_that_failed_is_retried_by_the_sweep_until_its_attempts_run_out(
    conn: DictConnection,
    standin: MailStandin,
    smtp: tuple[str, int],
    worker_settings: Settings,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with serving_smtp(MailStandin()) as (_, closed_port):
        pass  # a port nothing listens on any more
    monkeypatch.setenv("TASKHUB_MANUFACTURING_SMTP_PORT", str(closed_port))
    monkeypatch.setenv("TASKHUB_MANUFACTURING_EMAIL_MAX_ATTEMPTS", "3")
    down = await queue_email(conn, "later@example.com")
    async with email_worker(worker_settings, db_url):
        email = await settled(conn, down)
        assert email.status == "failed"
        assert email.next_retry_at is not None  # due for the sweep
        assert await run_now(conn, tasks.retry_failed_emails) == {"requeued": {"normal": 1}}
        email = await settled(conn, down)
        assert email.status == "failed"
        assert email.attempts == 2
        assert await run_now(conn, tasks.retry_failed_emails) == {"requeued": {"normal": 1}}
        email = await settled(conn, down)
        assert email.attempts == 3
        assert email.next_retry_at is None  # out of attempts
        assert await run_now(conn, tasks.retry_failed_emails) == {"requeued": {}}

    attempts = await attempts_of(conn, down)
    assert [item.status for item in attempts] == ["failed"] * 3
    assert [item.attempt for item in attempts] == [1, 2, 3]
    assert all("ConnectionRefusedError" in (item.smtp_answer or "") for item in attempts)

    # The same failure, with the server back before the sweep: the retry delivers it.
    back = await queue_email(conn, "back@example.com")
    async with email_worker(worker_settings, db_url):
        assert (await settled(conn, back)).status == "failed"
    monkeypatch.setenv("TASKHUB_MANUFACTURING_SMTP_PORT", str(smtp[1]))
    async with email_worker(worker_settings, db_url):
        assert await run_now(conn, tasks.retry_failed_emails) == {"requeued": {"normal": 1}}
        email = await settled(conn, back)
    assert email.status == "sent"
    assert [item.status for item in await attempts_of(conn, back)] == ["failed", "sent"]
    assert len(standin.received_by("back@example.com")) == 1


# -- bounces -----------------------------------------------------------------------------------


async def test_bounce_processing_marks_the_address_and_a_later_send_is_skipped(
    conn: DictConnection,
    standin: MailStandin,
    smtp: tuple[str, int],
    maildir: Path,
    worker_settings: Settings,
    db_url: str,
) -> None:
    standin.bounce("gone@example.com")
    first = await queue_email(conn, "Gone@Example.com")
    async with email_worker(worker_settings, db_url):
        assert (await settled(conn, first)).status == "sent"  # accepted, then bounced
        assert len(standin.bounces) == 1
        report = await run_now(conn, tasks.process_email_bounces)
        assert report == {
            "read": 1,
            "new_reports": 1,
            "addresses_marked": 1,
            "emails_bounced": 1,
            "unreadable": 0,
        }
        second = await queue_email(conn, "gone@example.com")
        skipped = await settled(conn, second)

    assert (await email_of(conn, first)).status == "bounced"
    sent, bounced = await attempts_of(conn, first)
    assert sent.status == "sent"
    assert bounced.status == "bounced"
    assert bounced.smtp_code == 550
    assert bounced.smtp_answer == "5.1.1 smtp; 550 5.1.1 <Gone@Example.com>: mailbox unavailable"
    cursor = await conn.execute("SELECT address, bounces FROM manufacturing.bounced_addresses")
    assert await cursor.fetchall() == [{"address": "gone@example.com", "bounces": 1}]

    assert skipped.status == "skipped"
    [attempt] = await attempts_of(conn, second)
    assert attempt.status == "skipped"
    assert attempt.smtp_code is None
    assert attempt.smtp_answer is not None
    assert attempt.smtp_answer.startswith("not sent: gone@example.com bounced on ")
    assert len(standin.received_by("gone@example.com")) == 1  # the second never left
    assert list((maildir / "new").iterdir()) == []  # the report left the mailbox


# -- a campaign --------------------------------------------------------------------------------


async def test_a_campaign_fans_out_one_job_per_recipient_under_the_rate_limit(
    conn: DictConnection,
    standin: MailStandin,
    smtp: tuple[str, int],
    worker_settings: Settings,
    db_url: str,
) -> None:
    recipients = [f"user{n:02d}@example.com" for n in range(30)]
    standin.refuse(recipients[3], recipients[17])
    standin.bounce(recipients[5], recipients[22])
    request = service.CampaignRequest.model_validate(
        {
            "template": "newsletter",
            "common_context": {"month": "December", "articles": [{"title": "Line 4 is up"}]},
            "recipients": [
                {"to_email": address, "context": {"user_name": f"User {n}"}}
                for n, address in enumerate(recipients)
            ],
        }
    )
    queued = await service.queue_campaign(conn, request)
    await conn.commit()
    assert queued.recipients == 30

    async with email_worker(worker_settings, db_url):

        async def all_settled() -> bool:
            await conn.commit()
            emails = await service.list_emails(conn, campaign_id=queued.campaign_id)
            return len(emails) == 30 and all(email.status != "queued" for email in emails)

        await eventually(all_settled, within=60)
        await run_now(conn, tasks.process_email_bounces)

    cursor = await conn.execute(
        "SELECT count(*) AS n, count(DISTINCT args->>'email_id') AS emails, min(queue_name) AS q,"
        " max(queue_name) AS q2, min(priority) AS p FROM procrastinate_jobs"
        " WHERE task_name = 'manufacturing.send_campaign_email'"
    )
    assert await cursor.fetchone() == {
        "n": 30,
        "emails": 30,
        "q": "email.bulk",
        "q2": "email.bulk",
        "p": 3,
    }

    emails = {
        email.to_email: email
        for email in await service.list_emails(conn, campaign_id=queued.campaign_id)
    }
    statuses = {address: email.status for address, email in emails.items()}
    assert {address for address, status in statuses.items() if status == "refused"} == {
        recipients[3],
        recipients[17],
    }
    assert {address for address, status in statuses.items() if status == "bounced"} == {
        recipients[5],
        recipients[22],
    }
    assert set(statuses.values()) == {"sent", "refused", "bounced"}
    assert len(standin.messages) == 28
    assert standin.received_by(recipients[7])[0].message["Subject"] == (
        "Manufacturing Platform news, December"
    )

    # The rate limit: 10 starts in any second across the cluster (a sliding window, so the
    # first ten may go at once). Each attempt's started_at is taken as its task starts, just
    # after its admission; allow for that gap on a busy machine. Unlimited, the 30 sends take
    # a few tenths of a second in all.
    attempts = await service.list_attempts(conn, campaign_id=queued.campaign_id)
    starts = sorted(item.started_at for item in attempts if item.status != "bounced")
    assert len(starts) == 30
    slack = datetime.timedelta(milliseconds=250)
    for earlier, later in zip(starts, starts[10:], strict=False):
        assert later - earlier >= datetime.timedelta(seconds=1) - slack, (earlier, later)
    assert starts[-1] - starts[0] >= datetime.timedelta(seconds=2) - slack


async def test_a_campaign_fans_out_once_whatever_runs_it_again(
    conn: DictConnection, smtp: tuple[str, int], worker_settings: Settings, db_url: str
) -> None:
    request = service.CampaignRequest.model_validate(
        {
            "template": "newsletter",
            "common_context": {"month": "May"},
            "recipients": [{"to_email": "a@example.com"}, {"to_email": "a@example.com"}],
        }
    )
    queued = await service.queue_campaign(conn, request)
    again = await defer.defer(
        conn, tasks.send_bulk_email, tasks.CampaignArgs(campaign_id=queued.campaign_id)
    )
    await conn.commit()
    async with email_worker(worker_settings, db_url):

        async def fanned_out() -> bool:
            await conn.commit()
            cursor = await conn.execute(
                "SELECT count(*) AS n FROM procrastinate_jobs"
                " WHERE id = ANY(%s) AND status = 'succeeded'",
                ([queued.job_id, again],),
            )
            row = await cursor.fetchone()
            return row is not None and row["n"] == 2

        await eventually(fanned_out, within=20)
        [email] = await service.list_emails(conn, campaign_id=queued.campaign_id)
        assert (await settled(conn, email.id)).status == "sent"


# -- the router (wired into the app by hand here, as the app's __init__ will) ---------------


@pytest.fixture
async def api(worker_settings: Settings, db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    with_router = dataclasses.replace(manufacturing_app, routers=(email_router.router,))
    loaded = load_apps(worker_settings, [with_router])
    async with running_api(create_app(worker_settings, db_url, apps=loaded)) as client:
        yield client


async def test_the_router_queues_an_email_and_shows_its_attempts(
    api: httpx.AsyncClient,
    conn: DictConnection,
    smtp: tuple[str, int],
    worker_settings: Settings,
    db_url: str,
) -> None:
    body = {"to_email": "ada@example.com", "template": "welcome", "context": {"user_name": "A"}}
    response = await api.post("/manufacturing/emails", json=body)
    assert response.status_code == 202, response.text
    queued = response.json()
    assert queued["task"] == "manufacturing.send_email"
    assert response.headers["Location"] == f"/manufacturing/emails/{queued['email_id']}"

    refused = await api.post("/manufacturing/emails", json={**body, "context": {}})
    assert refused.status_code == 422
    assert "'user_name' is undefined" in refused.json()["detail"]
    read_only = await api.post("/manufacturing/emails", json=body, headers=bearer(READ_TOKEN))
    assert read_only.status_code == 403
    assert len(await service.list_emails(conn)) == 1  # neither left a row

    async with email_worker(worker_settings, db_url):
        await settled(conn, queued["email_id"])
    detail = (await api.get(response.headers["Location"])).json()
    assert detail["email"]["status"] == "sent"
    assert [attempt["status"] for attempt in detail["attempts"]] == ["sent"]
    assert (await api.get("/manufacturing/emails/999999")).status_code == 404


async def test_the_router_queues_a_campaign_and_shows_every_recipient(
    api: httpx.AsyncClient,
    conn: DictConnection,
    smtp: tuple[str, int],
    worker_settings: Settings,
    db_url: str,
) -> None:
    body = {
        "template": "newsletter",
        "common_context": {"month": "June"},
        "recipients": [{"to_email": f"r{n}@example.com"} for n in range(3)],
    }
    response = await api.post("/manufacturing/campaigns", json=body)
    assert response.status_code == 202, response.text
    assert response.json()["recipients"] == 3
    location = response.headers["Location"]
    assert (await api.get(location)).status_code == 404  # not fanned out yet

    async def delivered() -> bool:
        answer = await api.get(location)
        emails = answer.json()["emails"] if answer.status_code == 200 else []
        return len(emails) == 3 and all(email["status"] == "sent" for email in emails)

    async with email_worker(worker_settings, db_url):
        await eventually(delivered, within=20)
    assert len((await api.get(location)).json()["attempts"]) == 3
