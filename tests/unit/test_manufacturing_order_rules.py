"""The order family's pure rules: status transitions, what the customer reads, and the
order request's due-date bounds."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from pydantic import ValidationError

from backend.examples.manufacturing.orders import rules, service

DUE = datetime.date(2027, 1, 15)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        ("matched", "in_production"),
        ("matched", "shipped"),
        ("in_production", "shipped"),
        ("pending", "cancelled"),
        ("unmatched", "cancelled"),
        ("matched", "cancelled"),
        ("in_production", "cancelled"),
    ],
)
def test_allowed_changes_pass(current: rules.OrderStatus, target: rules.OperatorStatus) -> None:
    rules.check_transition(7, current, target)


@pytest.mark.parametrize(
    ("current", "target", "message"),
    [
        (
            "pending",
            "shipped",
            "order 7 is pending: it can become shipped only when it is in_production or matched",
        ),
        ("unmatched", "in_production", "it can become in_production only when it is matched"),
        ("shipped", "cancelled", "order 7 is shipped"),
        ("cancelled", "shipped", "order 7 is cancelled"),
        ("shipped", "shipped", "order 7 is shipped"),
        ("in_production", "in_production", "only when it is matched"),
    ],
)
def test_refused_changes_say_which_statuses_would_do(
    current: rules.OrderStatus, target: rules.OperatorStatus, message: str
) -> None:
    with pytest.raises(rules.TransitionRefused, match=message) as refused:
        rules.check_transition(7, current, target)
    assert refused.value.status_code == 409


def test_every_status_has_a_label_and_every_target_a_rule() -> None:
    assert set(rules.LABELS) == {
        "pending",
        "matched",
        "unmatched",
        "in_production",
        "shipped",
        "cancelled",
    }
    assert set(rules.TRANSITIONS) == {"in_production", "shipped", "cancelled"}


def test_order_numbers_are_padded() -> None:
    assert rules.order_number(42) == "ORD-000042"
    assert rules.order_number(12_345_678) == "ORD-12345678"


def test_notes_say_where_and_when_or_why_it_waits() -> None:
    facts: dict[str, Any] = {"quantity": 40, "product": "gearbox", "due_date": DUE}
    booked = rules.status_note(
        "matched", line_name="gears-1", production_date=datetime.date(2027, 1, 10), **facts
    )
    waiting = rules.status_note("unmatched", line_name=None, production_date=None, **facts)
    shipped = rules.status_note(
        "shipped", line_name="gears-1", production_date=DUE, note="Tracking 1Z.", **facts
    )
    reminder = rules.reminder_note(
        "in_production", line_name="gears-1", production_date=DUE, **facts
    )

    assert booked == "40 x gearbox, due 2027-01-15: made on line gears-1 on 2027-01-10."
    assert waiting.startswith("40 x gearbox, due 2027-01-15: no line has room")
    assert shipped == "40 x gearbox, due 2027-01-15. Tracking 1Z."
    assert reminder.startswith("Reminder: your order is due soon. 40 x gearbox")
    assert "on line gears-1" in reminder


def order(**changes: Any) -> service.OrderRequest:
    return service.OrderRequest.model_validate(
        {
            "customer_name": "Ada",
            "customer_email": "ada@example.com",
            "product": "gearbox",
            "quantity": 1,
            "due_date": service.utc_today(),
            **changes,
        }
    )


def test_the_due_date_runs_from_today_to_366_days_ahead() -> None:
    today = service.utc_today()
    assert order().due_date == today
    assert order(due_date=today + datetime.timedelta(days=366)).due_date > today
    with pytest.raises(ValidationError, match="is in the past"):
        order(due_date=today - datetime.timedelta(days=1))
    with pytest.raises(ValidationError, match="more than 366 days ahead"):
        order(due_date=today + datetime.timedelta(days=367))


@pytest.mark.parametrize(
    "change",
    [
        {"quantity": 0},
        {"customer_email": "ada at example.com"},
        {"customer_name": "Ada\nBcc: x@example.com"},
        {"product": ""},
        {"unknown": 1},
    ],
)
def test_bad_requests_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        order(**change)
