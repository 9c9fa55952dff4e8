"""Orders and production lines for the application (and the router): an order's row and its
match job in the caller's transaction, so both commit or neither does; reading orders; and
an operator's status change with the customer's email, in the caller's transaction too."""

from __future__ import annotations

import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from backend import defer
from backend.db import DictConnection
from backend.errors import TaskhubError
from backend.examples.manufacturing.email.service import Address
from backend.examples.manufacturing.orders import matching, rules
from backend.examples.manufacturing.orders.matching import QUERIES
from backend.examples.manufacturing.orders.tasks import OrderArgs, match_order

#: How far ahead an order may be due: the matcher scans every day up to the due date.
MAX_LEAD_DAYS = 366
Text = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")]


def utc_today() -> datetime.date:
    """The matcher's today (its SQL uses the same UTC date)."""
    return datetime.datetime.now(datetime.UTC).date()


class OrderRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "customer_name": "Ada Lovelace",
                    "customer_email": "ada@example.com",
                    "product": "gearbox",
                    "quantity": 40,
                    "due_date": "2027-01-15",
                }
            ]
        },
    )

    customer_name: Text
    customer_email: Address
    product: Text
    quantity: int = Field(ge=1, le=2**31 - 1)
    due_date: datetime.date = Field(
        description=f"UTC date, from today to {MAX_LEAD_DAYS} days ahead."
    )

    @field_validator("due_date")
    @classmethod
    def _due_date_ahead(cls, value: datetime.date) -> datetime.date:
        today = utc_today()
        if value < today:
            raise ValueError(f"is in the past (today is {today.isoformat()}, UTC)")
        if value > today + datetime.timedelta(days=MAX_LEAD_DAYS):
            raise ValueError(f"is more than {MAX_LEAD_DAYS} days ahead")
        return value


class StatusChange(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"status": "shipped", "note": "Tracking: 1Z999"}]},
    )

    status: rules.OperatorStatus = Field(
        description="in_production (from matched), shipped (from matched or in_production), "
        "cancelled (until shipped; gives the booked capacity back)."
    )
    note: Text | None = Field(default=None, description="Added to the customer's email.")


class LineRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"name": "line-1", "product": "gearbox", "daily_capacity": 100}]
        },
    )

    name: Text
    product: Text
    daily_capacity: int = Field(ge=1, le=2**31 - 1)
    active: bool = True


class QueuedOrder(BaseModel):
    order_id: int = Field(examples=[123])
    job_id: int = Field(examples=[1123])
    task: str = Field(examples=[match_order.name])


class Order(BaseModel):
    """An order as manufacturing.orders keeps it."""

    id: int
    customer_name: str
    customer_email: str
    product: str
    quantity: int
    due_date: datetime.date
    status: rules.OrderStatus
    line_id: int | None = Field(description="The line it is booked on, once matched.")
    production_date: datetime.date | None = Field(description="The day it is booked for.")
    job_id: int | None
    match_attempts: int
    matched_at: datetime.datetime | None
    reminded_at: datetime.datetime | None
    created_at: datetime.datetime
    updated_at: datetime.datetime


class OrderEvent(BaseModel):
    id: int
    order_id: int
    from_status: rules.OrderStatus | None
    to_status: rules.OrderStatus
    line_id: int | None
    production_date: datetime.date | None
    note: str | None
    job_id: int | None
    email_id: int | None = Field(description="The order_status email that told the customer.")
    at: datetime.datetime


class Line(BaseModel):
    id: int
    name: str
    product: str
    daily_capacity: int
    active: bool
    created_at: datetime.datetime
    updated_at: datetime.datetime


class OrderNotFound(TaskhubError):
    """No order has that id."""

    status_code = 404


class LineExists(TaskhubError):
    """A production line already has that name."""

    status_code = 409


async def create_order(conn: DictConnection, request: OrderRequest) -> QueuedOrder:
    """Store the order (pending) and defer manufacturing.match_order on ``conn``, in its
    transaction (not committed here)."""
    cursor = await conn.execute(QUERIES["orders_create"], request.model_dump())
    row = await cursor.fetchone()
    assert row is not None
    order_id = int(row["id"])
    job_id = await defer.defer(conn, match_order, OrderArgs(order_id=order_id))
    await conn.execute(QUERIES["orders_set_jobs"], {"order_ids": [order_id], "job_ids": [job_id]})
    await conn.execute(
        QUERIES["orders_record_event"],
        {
            "order_id": order_id,
            "from_status": None,
            "to_status": "pending",
            "line_id": None,
            "production_date": None,
            "note": None,
            "job_id": job_id,
            "email_id": None,
        },
    )
    return QueuedOrder(order_id=order_id, job_id=job_id, task=match_order.name)


async def get_order(conn: DictConnection, order_id: int) -> Order | None:
    cursor = await conn.execute(QUERIES["orders_get"], {"order_id": order_id})
    row = await cursor.fetchone()
    return Order.model_validate(row) if row is not None else None


async def list_orders(
    conn: DictConnection, *, status: rules.OrderStatus | None = None, limit: int = 100
) -> list[Order]:
    """Newest first."""
    cursor = await conn.execute(QUERIES["orders_list"], {"status": status, "limit": limit})
    return [Order.model_validate(row) for row in await cursor.fetchall()]


async def order_events(conn: DictConnection, order_id: int) -> list[OrderEvent]:
    cursor = await conn.execute(QUERIES["orders_events"], {"order_id": order_id})
    return [OrderEvent.model_validate(row) for row in await cursor.fetchall()]


async def change_status(conn: DictConnection, order_id: int, change: StatusChange) -> Order:
    """An operator's change on ``conn`` (the caller commits): refused unless the order's
    status allows it; a cancelled order gives its capacity back; the customer's email and the
    event row go with it."""
    order = await matching.lock_order(conn, order_id)
    if order is None:
        raise OrderNotFound(f"no order has id {order_id}")
    before: rules.OrderStatus = order["status"]
    rules.check_transition(order_id, before, change.status)
    if change.status == "cancelled":
        await conn.execute(QUERIES["orders_release_capacity"], {"order_id": order_id})
    cursor = await conn.execute(
        QUERIES["orders_set_status"], {"order_id": order_id, "status": change.status}
    )
    after: dict[str, Any] | None = await cursor.fetchone()
    assert after is not None
    await matching.record_change(conn, before, after, note=change.note)
    return Order.model_validate(after)


async def add_line(conn: DictConnection, request: LineRequest) -> Line:
    """A production line, on ``conn`` (the caller commits). Orders waiting for its product
    are matched by the next sweep."""
    cursor = await conn.execute(QUERIES["lines_create"], request.model_dump())
    row = await cursor.fetchone()
    if row is None:
        raise LineExists(f"a production line is already named {request.name!r}: pick another name")
    return Line.model_validate(row)


async def list_lines(conn: DictConnection) -> list[Line]:
    cursor = await conn.execute(QUERIES["lines_list"], {})
    return [Line.model_validate(row) for row in await cursor.fetchall()]
