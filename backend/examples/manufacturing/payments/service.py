"""Payments for the application (and the router): the row and its job in the caller's
transaction, so both commit or neither does; and reading a payment with its invoice."""

from __future__ import annotations

import datetime

from pydantic import BaseModel, ConfigDict, Field

from backend import defer
from backend.db import DictConnection
from backend.examples.manufacturing.payments.tasks import (
    QUERIES,
    PaymentArgs,
    PaymentStatus,
    process_payment,
)


class PaymentRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "order_id": 456,
                    "user_id": 789,
                    "amount_cents": 10000,
                    "currency": "USD",
                    "payment_method_id": "pm_123",
                }
            ]
        },
    )

    order_id: int = Field(ge=1, le=2**63 - 1)
    user_id: int = Field(ge=1, le=2**63 - 1)
    amount_cents: int = Field(ge=1, le=10**12, description="The amount in cents (100.00: 10000).")
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    payment_method_id: str = Field(
        min_length=1, max_length=200, pattern=r"^[^\x00]*$", examples=["pm_123"]
    )


class QueuedPayment(BaseModel):
    payment_id: int = Field(examples=[42])
    job_id: int = Field(examples=[1042])
    task: str = Field(examples=[process_payment.name])


class Payment(BaseModel):
    """A payment as manufacturing.payments keeps it."""

    id: int
    order_id: int
    user_id: int
    amount_cents: int
    currency: str
    payment_method_id: str
    idempotency_key: str = Field(description="What the provider is asked with, every attempt.")
    status: PaymentStatus
    charge_id: str | None = Field(description="The provider's charge, once paid.")
    job_id: int | None
    attempts: int
    retry_rounds: int
    last_error: str | None
    created_at: datetime.datetime
    updated_at: datetime.datetime
    paid_at: datetime.datetime | None


class Invoice(BaseModel):
    id: int
    payment_id: int
    order_id: int
    number: str
    amount_cents: int
    currency: str
    issued_at: datetime.datetime


async def create_payment(conn: DictConnection, request: PaymentRequest) -> QueuedPayment:
    """Store the payment and defer manufacturing.process_payment on ``conn``, in its
    transaction (not committed here)."""
    cursor = await conn.execute(QUERIES["payments_create"], request.model_dump())
    row = await cursor.fetchone()
    assert row is not None
    payment_id = int(row["id"])
    job_id = await defer.defer(conn, process_payment, PaymentArgs(payment_id=payment_id))
    await conn.execute(
        QUERIES["payments_set_jobs"], {"payment_ids": [payment_id], "job_ids": [job_id]}
    )
    return QueuedPayment(payment_id=payment_id, job_id=job_id, task=process_payment.name)


async def get_payment(conn: DictConnection, payment_id: int) -> Payment | None:
    cursor = await conn.execute(QUERIES["payments_get"], {"payment_id": payment_id})
    row = await cursor.fetchone()
    return Payment.model_validate(row) if row is not None else None


async def get_invoice(conn: DictConnection, payment_id: int) -> Invoice | None:
    cursor = await conn.execute(QUERIES["payments_get_invoice"], {"payment_id": payment_id})
    row = await cursor.fetchone()
    return Invoice.model_validate(row) if row is not None else None
