"""The order family's pure rules: which status changes are allowed, and what the customer is
told about each. No database here, so they are unit-tested on their own."""

from __future__ import annotations

import datetime
from typing import Final, Literal

from backend.errors import TaskhubError

OrderStatus = Literal["pending", "matched", "unmatched", "in_production", "shipped", "cancelled"]
#: What an operator may set; matched and unmatched are the matcher's verdicts only.
OperatorStatus = Literal["in_production", "shipped", "cancelled"]

#: target -> the statuses it may be reached from (by an operator).
TRANSITIONS: Final[dict[OperatorStatus, frozenset[OrderStatus]]] = {
    "in_production": frozenset({"matched"}),
    "shipped": frozenset({"matched", "in_production"}),
    "cancelled": frozenset({"pending", "matched", "unmatched", "in_production"}),
}
#: Statuses that hold a booking of line capacity.
BOOKED: Final[frozenset[OrderStatus]] = frozenset({"matched", "in_production"})

#: How each status reads in the customer's email ("Your order ORD-000042 is now ...").
LABELS: Final[dict[OrderStatus, str]] = {
    "pending": "received",
    "matched": "scheduled for production",
    "unmatched": "waiting for production capacity",
    "in_production": "in production",
    "shipped": "shipped",
    "cancelled": "cancelled",
}


class TransitionRefused(TaskhubError):
    """The order cannot go from its status to the one asked for."""

    status_code = 409


def check_transition(order_id: int, current: OrderStatus, target: OperatorStatus) -> None:
    """Refuse a change the order's status does not allow, saying which statuses would."""
    allowed_from = TRANSITIONS[target]
    if current not in allowed_from:
        raise TransitionRefused(
            f"order {order_id} is {current}: it can become {target} only when it is "
            f"{' or '.join(sorted(allowed_from))}"
        )


def order_number(order_id: int) -> str:
    """The number customers see."""
    return f"ORD-{order_id:06d}"


def status_note(
    status: OrderStatus,
    *,
    quantity: int,
    product: str,
    due_date: datetime.date,
    line_name: str | None,
    production_date: datetime.date | None,
    note: str | None = None,
) -> str:
    """The email's extra line: where and when it is made, or why it waits; an operator's note
    last."""
    what = f"{quantity} x {product}, due {due_date.isoformat()}"
    if status in BOOKED and line_name is not None and production_date is not None:
        text = f"{what}: made on line {line_name} on {production_date.isoformat()}."
    elif status == "unmatched":
        text = f"{what}: no line has room before the due date yet; we keep trying."
    else:
        text = f"{what}."
    return f"{text} {note}" if note else text


def reminder_note(
    status: OrderStatus,
    *,
    quantity: int,
    product: str,
    due_date: datetime.date,
    line_name: str | None,
    production_date: datetime.date | None,
) -> str:
    """A reminder's line: the same facts, opened as a reminder of the due date."""
    return "Reminder: your order is due soon. " + status_note(
        status,
        quantity=quantity,
        product=product,
        due_date=due_date,
        line_name=line_name,
        production_date=production_date,
    )
