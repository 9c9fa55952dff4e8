"""The order family's tasks, on the seed's order queues with their priorities.

=========================================  ==============  ===================================
``manufacturing.match_order``              order.critical  match one order to a line-day
``manufacturing.process_pending_orders``   order.normal    every 15 minutes: match again the
                                                           orders still waiting for a line
``manufacturing.send_order_reminders``     order.normal    every 6 hours: remind customers of
                                                           orders due soon
=========================================  ==============  ===================================

The matching rule and the no-overbooking guarantee are in ``matching.py``. The seed's
``match_orders.delay(order_id=123)`` is ``service.create_order`` (or
``defer(conn, match_order, OrderArgs(order_id=123))``).
"""

from __future__ import annotations

import datetime
import logging

from pydantic import BaseModel, ConfigDict, Field

from backend import defer
from backend.declare.registry import PeriodicArgs, TaskBlueprint
from backend.examples.manufacturing.orders import matching, rules
from backend.examples.manufacturing.orders.matching import QUERIES
from backend.examples.manufacturing.queues import priority
from backend.examples.manufacturing.settings import ManufacturingSettings
from backend.runtime.context import TaskContext

logger = logging.getLogger(__name__)

blueprint = TaskBlueprint()

#: Orders one transaction of a sweep takes (the sweep goes on until none is left).
SWEEP_BATCH = 500
#: Orders one transaction of the reminders takes (two statements each: the email and its job).
REMINDER_BATCH = 200


class OrderArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"order_id": 123}]})

    order_id: int = Field(ge=1, le=2**63 - 1, description="The row in manufacturing.orders.")


class SweepRun(BaseModel):
    """The orders manufacturing.process_pending_orders queued a match job for."""

    queued: list[int]


class ReminderRun(BaseModel):
    """The orders manufacturing.send_order_reminders reminded, and their emails."""

    reminded: list[int]
    email_ids: list[int]


@blueprint.task(
    name="manufacturing.match_order",
    queue="order.critical",
    priority=priority("order.critical"),
)
async def match_order(args: OrderArgs, ctx: TaskContext) -> matching.MatchOutcome:
    """Book the order on a line-day by the matching rule, or mark it unmatched; the customer's
    email commits with the change. An order already matched, shipped or cancelled is left as
    it is, so a second job on the same order does nothing."""
    async with ctx.connection() as conn:
        outcome = await matching.match(conn, args.order_id, job_id=ctx.job_id)
    if outcome.status == "missing":
        logger.warning("order %s no longer exists: nothing to match", args.order_id)
    return outcome


@blueprint.task(
    name="manufacturing.process_pending_orders",
    queue="order.normal",
    priority=priority("order.normal"),
    cron="*/15 * * * *",
    queueing_lock="manufacturing.process_pending_orders",
)
async def process_pending_orders(args: PeriodicArgs, ctx: TaskContext) -> SweepRun:
    """Queue a match job for every pending or unmatched order not past its due date whose job
    is neither waiting nor running: lost jobs, and orders that found no room last time (room
    may have been freed or added since). Every 15 minutes, as the seed did; one transaction
    per batch."""
    queued: list[int] = []
    after = 0
    while True:
        async with ctx.connection() as conn:
            cursor = await conn.execute(
                QUERIES["orders_take_waiting"], {"after": after, "limit": SWEEP_BATCH}
            )
            order_ids = [int(row["id"]) for row in await cursor.fetchall()]
            if order_ids:
                job_ids = await defer.batch_defer(
                    conn, match_order, [OrderArgs(order_id=id_) for id_ in order_ids]
                )
                await conn.execute(
                    QUERIES["orders_set_jobs"], {"order_ids": order_ids, "job_ids": job_ids}
                )
        queued += order_ids
        if len(order_ids) < SWEEP_BATCH:
            return SweepRun(queued=queued)
        after = order_ids[-1]


@blueprint.task(
    name="manufacturing.send_order_reminders",
    queue="order.normal",
    priority=priority("order.normal"),
    cron="0 */6 * * *",
    queueing_lock="manufacturing.send_order_reminders",
)
async def send_order_reminders(args: PeriodicArgs, ctx: TaskContext) -> ReminderRun:
    """Email the customer of each matched or in-production order due within
    TASKHUB_MANUFACTURING_ORDER_REMINDER_DAYS and not reminded within
    TASKHUB_MANUFACTURING_ORDER_REMINDER_EVERY_HOURS; the order is stamped reminded with its
    email queued, in one transaction per batch. Every 6 hours, as the seed did."""
    settings = ctx.settings_of(ManufacturingSettings)
    every = datetime.timedelta(hours=settings.order_reminder_every_hours)
    reminded: list[int] = []
    email_ids: list[int] = []
    while True:
        async with ctx.connection() as conn:
            cursor = await conn.execute(
                QUERIES["orders_take_reminders"],
                {
                    "within_days": settings.order_reminder_days,
                    "every": every,
                    "limit": REMINDER_BATCH,
                },
            )
            orders = await cursor.fetchall()
            for order in orders:
                text = rules.reminder_note(
                    order["status"],
                    quantity=order["quantity"],
                    product=order["product"],
                    due_date=order["due_date"],
                    line_name=order["line_name"],
                    production_date=order["production_date"],
                )
                email_ids.append(await matching.notify(conn, order, text, order["status"]))
                reminded.append(int(order["id"]))
        if len(orders) < REMINDER_BATCH:
            return ReminderRun(reminded=reminded, email_ids=email_ids)
