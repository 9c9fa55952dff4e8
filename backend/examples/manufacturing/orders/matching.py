"""Matching an order to production capacity, and every status change with its email.

The rule (deterministic): an order for product P, quantity Q, due on D goes to the active
line making P with the earliest day from today (UTC) up to D on which the line's free
capacity (its daily capacity minus the quantities already booked on that line that day)
holds Q; between lines free on the same day, the lowest line id wins. The booking (a row in
manufacturing.line_bookings), the order's status 'matched' and the customer's email commit in
one transaction. No such line-day: the order is 'unmatched' and the 15-minute sweep
(manufacturing.process_pending_orders) tries again; an order past its due date stays
unmatched. One order is never split over days or lines.

No overbooking: a matcher first locks the order's row, then the product's active lines in
id order, then (in a new statement, so it sees every booking committed meanwhile) books. Two
matchers of one product take turns; two of different products run side by side.

Every status change (matched, unmatched, in_production, shipped, cancelled) queues an
``order_status`` email through the email family in the same transaction, and writes a row in
manufacturing.order_events; a status that does not change (an unmatched order still without
room) is neither told nor recorded.
"""

from __future__ import annotations

import datetime
from typing import Any, Literal

from pydantic import BaseModel

from backend.db import DictConnection
from backend.examples.manufacturing.email import service as email_service
from backend.examples.manufacturing.orders import rules
from backend.queries import load_queries

#: The named statements of sql/orders.sql.
QUERIES = load_queries("backend.examples.manufacturing.orders.sql")


class MatchOutcome(BaseModel):
    """What manufacturing.match_order did."""

    order_id: int
    status: rules.OrderStatus | Literal["missing"]
    changed: bool = False
    line_id: int | None = None
    production_date: datetime.date | None = None
    email_id: int | None = None


async def _one(conn: DictConnection, query: str, params: dict[str, Any]) -> dict[str, Any] | None:
    cursor = await conn.execute(QUERIES[query], params)
    return await cursor.fetchone()


async def lock_order(conn: DictConnection, order_id: int) -> dict[str, Any] | None:
    """The order with its line's name, locked until ``conn``'s transaction ends."""
    return await _one(conn, "orders_lock", {"order_id": order_id})


async def notify(
    conn: DictConnection, order: dict[str, Any], text: str, status: rules.OrderStatus
) -> int:
    """Queue the order_status email to the customer on ``conn``; its id."""
    queued = await email_service.queue_email(
        conn,
        email_service.EmailRequest(
            to_email=order["customer_email"],
            to_name=order["customer_name"],
            template="order_status",
            context={
                "user_name": order["customer_name"],
                "order_number": rules.order_number(order["id"]),
                "status": rules.LABELS[status],
                "note": text,
            },
        ),
    )
    return queued.email_id


async def record_change(
    conn: DictConnection,
    before: rules.OrderStatus | None,
    after: dict[str, Any],
    *,
    note: str | None = None,
    job_id: int | None = None,
    notify_customer: bool = True,
) -> int | None:
    """The event row of a status change and (unless not ``notify_customer``) the customer's
    email, on ``conn``; the email's id."""
    status: rules.OrderStatus = after["status"]
    email_id = None
    if notify_customer:
        text = rules.status_note(
            status,
            quantity=after["quantity"],
            product=after["product"],
            due_date=after["due_date"],
            line_name=after["line_name"],
            production_date=after["production_date"],
            note=note,
        )
        email_id = await notify(conn, after, text, status)
    await _one(
        conn,
        "orders_record_event",
        {
            "order_id": after["id"],
            "from_status": before,
            "to_status": status,
            "line_id": after["line_id"],
            "production_date": after["production_date"],
            "note": note,
            "job_id": job_id,
            "email_id": email_id,
        },
    )
    return email_id


async def match(conn: DictConnection, order_id: int, job_id: int | None = None) -> MatchOutcome:
    """Apply the rule to one pending or unmatched order on ``conn`` (the caller commits);
    other statuses are left as they are."""
    order = await lock_order(conn, order_id)
    if order is None:
        return MatchOutcome(order_id=order_id, status="missing")
    before: rules.OrderStatus = order["status"]
    if before not in ("pending", "unmatched"):
        return MatchOutcome(
            order_id=order_id,
            status=before,
            line_id=order["line_id"],
            production_date=order["production_date"],
        )
    await conn.execute(QUERIES["orders_lock_lines"], {"product": order["product"]})
    booking = await _one(
        conn,
        "orders_book_capacity",
        {
            "order_id": order_id,
            "product": order["product"],
            "quantity": order["quantity"],
            "due_date": order["due_date"],
        },
    )
    after = await _one(
        conn,
        "orders_set_match",
        {
            "order_id": order_id,
            "status": "matched" if booking else "unmatched",
            "line_id": booking["line_id"] if booking else None,
            "production_date": booking["day"] if booking else None,
        },
    )
    assert after is not None
    changed = after["status"] != before
    email_id = await record_change(conn, before, after, job_id=job_id) if changed else None
    return MatchOutcome(
        order_id=order_id,
        status=after["status"],
        changed=changed,
        line_id=after["line_id"],
        production_date=after["production_date"],
        email_id=email_id,
    )
