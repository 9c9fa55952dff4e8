"""The manufacturing example's email family without a database: templates and their escaping,
the declared tasks, the stand-in mail server refusing and bouncing, the SMTP client's reading
of its answers, and the bounce reports' parsing."""

from __future__ import annotations

import asyncio
import email.policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import cast

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from backend.declare.policy import RateLimit
from backend.examples.manufacturing.email import bounces, delivery, tasks
from backend.examples.manufacturing.email.demo import REFUSED_ADDRESS, serve_demo
from backend.examples.manufacturing.email.rendering import (
    TEMPLATE_NAMES,
    TemplateProblem,
    render,
)
from backend.examples.manufacturing.email.standin import (
    MailStandin,
    delivery_status_notification,
    serving_smtp,
)
from backend.examples.manufacturing.queues import QUEUES
from backend.examples.manufacturing.settings import ManufacturingSettings

# -- templates -------------------------------------------------------------------------------


def test_the_seed_s_templates_are_shipped() -> None:
    assert {"welcome", "order_status", "system_alert", "newsletter"} <= TEMPLATE_NAMES


def test_a_welcome_email_renders_its_context_in_every_part() -> None:
    rendered = render("welcome", {"user_name": "Ada", "login_url": "https://app.example/in"})
    assert rendered.subject == "Welcome to the Manufacturing Platform, Ada"
    assert "Hello Ada," in rendered.text
    assert "Sign in: https://app.example/in" in rendered.text
    assert '<a href="https://app.example/in">' in rendered.html


def test_the_html_body_escapes_the_context_and_the_text_body_keeps_it() -> None:
    hostile = '<script>alert("x")</script> & Co'
    rendered = render(
        "order_status", {"user_name": hostile, "order_number": "PO-1", "status": "shipped"}
    )
    assert "<script>" not in rendered.html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Co" in rendered.html
    assert f"Hello {hostile}," in rendered.text


def test_links_keep_only_http_addresses() -> None:
    rendered = render(
        "newsletter",
        {
            "month": "December",
            "articles": [
                {"title": "bad", "url": "javascript:alert(1)"},
                {"title": "good", "url": "https://news.example/a?b=1&c=2"},
            ],
        },
    )
    assert "javascript:" not in rendered.html
    assert '<a href="#">bad</a>' in rendered.html
    assert '<a href="https://news.example/a?b=1&amp;c=2">good</a>' in rendered.html
    assert "Hello there," in rendered.text  # user_name is optional in the newsletter


def test_a_subject_is_one_line_whatever_the_context_holds() -> None:
    rendered = render("welcome", {"user_name": "Eve\r\nBcc: everyone@example.com"})
    assert "\n" not in rendered.subject
    assert "\r" not in rendered.subject
    assert rendered.subject.endswith("Eve Bcc: everyone@example.com")


def test_a_missing_variable_or_an_unknown_template_is_refused_with_what_to_fix() -> None:
    with pytest.raises(TemplateProblem, match="'user_name' is undefined"):
        render("welcome", {})
    with pytest.raises(TemplateProblem, match=r"no email template '\.\./etc/passwd': use one of"):
        render("../etc/passwd", {})


# -- the tasks' declarations -------------------------------------------------------------------


def test_each_task_runs_on_its_seed_queue_with_that_queue_s_priority() -> None:
    expected = {
        "manufacturing.send_email": "email.normal",
        "manufacturing.send_urgent_email": "email.urgent",
        "manufacturing.send_bulk_email": "email.bulk",
        "manufacturing.send_campaign_email": "email.bulk",
        "manufacturing.process_email_bounces": "email.bulk",
        "manufacturing.retry_failed_emails": "email.normal",
    }
    declared = {task.name: task for task in tasks.blueprint}
    assert set(declared) == set(expected)
    for name, queue in expected.items():
        assert declared[name].queue == queue
        assert declared[name].priority == QUEUES[queue]


def test_campaign_sends_have_the_mail_server_s_rate_limit_and_the_schedules_are_the_seed_s() -> (
    None
):
    assert tasks.send_campaign_email.rate_limit == RateLimit(10, 1.0)
    assert tasks.send_email.rate_limit is None
    assert tasks.process_email_bounces.cron == "0 */6 * * *"
    assert tasks.retry_failed_emails.cron == "*/5 * * * *"


# -- the stand-in mail server ------------------------------------------------------------------

NO_SERVER = cast(SMTP, None)  # the handler does not look at the protocol object


def session() -> Session:
    return Session(asyncio.get_running_loop())


async def rcpt(standin: MailStandin, envelope: Envelope, address: str) -> str:
    return await standin.handle_RCPT(NO_SERVER, session(), envelope, address, [])


async def test_the_stand_in_refuses_an_address_at_rcpt_and_records_it() -> None:
    standin = MailStandin()
    standin.refuse("Nobody@Example.com")
    envelope = Envelope()
    answer = await rcpt(standin, envelope, "nobody@example.com")
    assert answer.startswith("550 5.1.1 <nobody@example.com>")
    assert envelope.rcpt_tos == []
    assert [refusal.address for refusal in standin.refusals] == ["nobody@example.com"]
    ok = await rcpt(standin, envelope, "someone@example.com")
    assert ok == "250 OK"
    assert envelope.rcpt_tos == ["someone@example.com"]


async def test_the_stand_in_accepts_a_bounced_address_then_files_a_report(tmp_path: Path) -> None:
    standin = MailStandin(bounce_maildir=tmp_path / "bounces")
    standin.bounce("gone@example.com")
    envelope = Envelope()
    envelope.mail_from = "noreply@manufacturing.example"
    envelope.rcpt_tos = ["gone@example.com", "here@example.com"]
    envelope.content = envelope.original_content = (
        b"Message-ID: <email-41@manufacturing.example>\r\nSubject: Hi\r\n\r\nbody\r\n"
    )
    answer = await standin.handle_DATA(NO_SERVER, session(), envelope)
    assert answer.startswith("250 2.0.0 Ok: queued as ")
    assert [item.rcpt_to for item in standin.messages] == ["gone@example.com", "here@example.com"]
    [bounce] = standin.bounces
    assert bounce.address == "gone@example.com"
    assert bounce.message_id == "<email-41@manufacturing.example>"
    batch = bounces.read_feed(tmp_path / "bounces")
    assert batch.keys == [bounce.feed_key]
    [report] = batch.reports
    assert report.address == "gone@example.com"
    assert report.email_id == 41
    assert report.status_code == "5.1.1"
    assert report.smtp_code == 550
    standin.heal()
    assert await rcpt(standin, Envelope(), "gone@example.com") == "250 OK"


def test_a_report_that_is_not_a_failure_is_not_a_bounce() -> None:
    original = EmailMessage()
    original["Message-ID"] = "<email-5@x.example>"
    raw = delivery_status_notification("a@x.example", "b@y.example", original)
    delayed = raw.replace(b"Action: failed", b"Action: delayed")
    assert bounces.parse_report("k", delayed) == []
    assert bounces.parse_report("k", b"Subject: out of office\r\n\r\nback monday\r\n") == []
    [report] = bounces.parse_report("k", raw)
    assert (report.address, report.email_id) == ("b@y.example", 5)


def test_an_empty_or_missing_bounce_mailbox_is_an_empty_feed(tmp_path: Path) -> None:
    assert bounces.read_feed(tmp_path / "none-yet").keys == []
    assert bounces.read_feed(tmp_path).reports == []


# -- the SMTP client against the stand-in -------------------------------------------------------


def _settings(port: int, **changes: object) -> ManufacturingSettings:
    return ManufacturingSettings.model_validate(
        {"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_timeout": 5, **changes}
    )


def _message(settings: ManufacturingSettings, to: str) -> EmailMessage:
    rendered = render("welcome", {"user_name": "Ada"})
    return delivery.build_message(7, to, "Ada L.", rendered, settings)


def test_the_client_keeps_the_server_s_answer_for_sent_and_refused_mail() -> None:
    standin = MailStandin()
    standin.refuse("no@example.com")
    with serving_smtp(standin) as (_, port):
        settings = _settings(port)
        sent = delivery.send(_message(settings, "ada@example.com"), "ada@example.com", settings)
        refused = delivery.send(_message(settings, "no@example.com"), "no@example.com", settings)
    assert sent.status == "sent"
    assert sent.code == 250
    assert sent.answer.startswith("250 2.0.0 Ok: queued as ")
    assert refused == delivery.Outcome(
        "refused", 550, "550 5.1.1 <no@example.com>: Recipient address rejected: User unknown"
    )
    [received] = standin.messages
    parsed = BytesParser(policy=email.policy.default).parsebytes(received.message.as_bytes())
    assert parsed["Message-ID"] == "<email-7@manufacturing.example>"
    assert parsed["To"] == '"Ada L." <ada@example.com>'
    assert parsed["Subject"] == "Welcome to the Manufacturing Platform, Ada"
    assert {part.get_content_type() for part in parsed.walk()} >= {"text/plain", "text/html"}


def test_no_server_is_a_failure_worth_retrying() -> None:
    with serving_smtp(MailStandin()) as (_, port):
        pass  # the port is free again
    settings = _settings(port, smtp_timeout=2)
    outcome = delivery.send(_message(settings, "ada@example.com"), "ada@example.com", settings)
    assert outcome.status == "failed"
    assert outcome.retriable
    assert outcome.code is None
    assert "ConnectionRefusedError" in outcome.answer


def test_the_demo_serves_a_mail_server_and_says_where(tmp_path: Path) -> None:
    with serve_demo(tmp_path) as (environment, lines):
        settings = ManufacturingSettings.model_validate(
            {
                "smtp_host": environment["TASKHUB_MANUFACTURING_SMTP_HOST"],
                "smtp_port": environment["TASKHUB_MANUFACTURING_SMTP_PORT"],
                "bounce_maildir": environment["TASKHUB_MANUFACTURING_BOUNCE_MAILDIR"],
            }
        )
        outcome = delivery.send(_message(settings, REFUSED_ADDRESS), REFUSED_ADDRESS, settings)
    assert outcome.status == "refused"
    assert f":{settings.smtp_port}" in lines[0]
