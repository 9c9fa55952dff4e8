"""The payment family's tasks, on the seed's payment queues with their priorities.

=====================================  ================  ======================================
``manufacturing.process_payment``      payment.critical  charge one payment, exactly once
``manufacturing.generate_invoice``     payment.normal    the invoice of a paid payment
``manufacturing.retry_failed_payments`` payment.batch    every 30 minutes: given-up payments
``manufacturing.reconcile_payments``   payment.batch     hourly: local payments vs the provider
=====================================  ================  ======================================

Exactly once: the provider is asked with the payment's own idempotency key
(``payment-<id>``), so a rerun after a worker died between the charge and the commit (the
rescue) or after a timeout gets the first charge back, never a second one; the charge id is
written with status 'paid' in one transaction, with the invoice's job.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field

from backend import defer
from backend.control.alerts import raise_alert
from backend.db import DictConnection
from backend.declare.policy import Retry
from backend.declare.registry import PeriodicArgs, TaskBlueprint
from backend.examples.manufacturing.payments import provider
from backend.examples.manufacturing.queues import priority
from backend.examples.manufacturing.settings import ManufacturingSettings
from backend.queries import load_queries
from backend.runtime.context import TaskContext

logger = logging.getLogger(__name__)

#: The named statements of sql/payments.sql.
QUERIES = load_queries("backend.examples.manufacturing.payments.sql")

blueprint = TaskBlueprint()

#: The seed's backoff: 4 retries, 60, 120, 240 and 480 s later, for what a retry may fix (the
#: provider down, slow or overloaded). A declined card or a bad token fails at once.
RETRY = Retry(retries=4, backoff=60, factor=2, on=(provider.ProviderUnavailable,))
#: How many given-up payments one sweep queues again (the next sweep takes the rest).
RETRY_BATCH = 1_000
#: Mismatches an alert carries in its details (the reconciliation row keeps them all).
ALERT_DETAILS = 50

PaymentStatus = Literal["pending", "paid", "failed", "declined"]


class PaymentArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"payment_id": 42}]})

    payment_id: int = Field(ge=1, description="The row in manufacturing.payments to charge.")


class PaymentOutcome(BaseModel):
    """What manufacturing.process_payment did."""

    payment_id: int
    status: PaymentStatus | Literal["missing"]
    charge_id: str | None = None
    replayed: bool = Field(
        default=False, description="The provider returned the key's earlier charge."
    )
    invoice_job_id: int | None = None


class InvoiceOutcome(BaseModel):
    """What manufacturing.generate_invoice did."""

    payment_id: int
    invoice_id: int | None
    number: str | None
    created: bool


class RetryRun(BaseModel):
    """The payments manufacturing.retry_failed_payments queued again."""

    requeued: list[int]


class Mismatch(BaseModel):
    kind: Literal["missing_locally", "missing_at_provider", "amount_differs", "in_flight"]
    charge_id: str | None
    payment_id: int | None
    idempotency_key: str | None
    local_amount_cents: int | None
    local_currency: str | None
    provider_amount_cents: int | None
    provider_currency: str | None


class Reconciliation(BaseModel):
    """What manufacturing.reconcile_payments found (also a row in
    manufacturing.payment_reconciliations)."""

    reconciliation_id: int
    provider_charges: int
    local_payments: int
    in_flight: int
    mismatches: list[Mismatch]
    alert_id: int | None


def _settings(ctx: TaskContext) -> ManufacturingSettings:
    return ctx.settings_of(ManufacturingSettings)


async def _row(conn: DictConnection, query: str, params: dict[str, Any]) -> dict[str, Any] | None:
    cursor = await conn.execute(QUERIES[query], params)
    return await cursor.fetchone()


async def _record_failure(
    ctx: TaskContext, payment_id: int, status: PaymentStatus, error: str
) -> None:
    async with ctx.connection() as conn:
        await _row(
            conn,
            "payments_mark_failed",
            {"payment_id": payment_id, "status": status, "error": error},
        )


@blueprint.task(
    name="manufacturing.generate_invoice",
    queue="payment.normal",
    priority=priority("payment.normal"),
)
async def generate_invoice(args: PaymentArgs, ctx: TaskContext) -> InvoiceOutcome:
    """Write the invoice of a paid payment into manufacturing.invoices, once (a second run
    finds it there); a payment that is not paid gets none."""
    async with ctx.connection() as conn:
        created = await _row(conn, "payments_create_invoice", {"payment_id": args.payment_id})
        invoice = created or await _row(
            conn, "payments_get_invoice", {"payment_id": args.payment_id}
        )
    if invoice is None:
        logger.warning("payment %s is not paid (or gone): no invoice", args.payment_id)
        return InvoiceOutcome(
            payment_id=args.payment_id, invoice_id=None, number=None, created=False
        )
    return InvoiceOutcome(
        payment_id=args.payment_id,
        invoice_id=invoice["id"],
        number=invoice["number"],
        created=created is not None,
    )


@blueprint.task(
    name="manufacturing.process_payment",
    queue="payment.critical",
    priority=priority("payment.critical"),
    retry=RETRY,
)
async def process_payment(args: PaymentArgs, ctx: TaskContext) -> PaymentOutcome:
    """Charge the payment at the provider (TASKHUB_MANUFACTURING_PAYMENT_*) with its
    idempotency key, then record the charge and defer its invoice in one transaction. The
    provider down or slow: retried 60, 120, 240, 480 s later; a rerun gets the first charge
    back. A declined card is final (status declined)."""
    async with ctx.connection() as conn:
        payment = await _row(
            conn, "payments_start_attempt", {"payment_id": args.payment_id, "job_id": ctx.job_id}
        )
    if payment is None:
        logger.warning("payment %s no longer exists: nothing to charge", args.payment_id)
        return PaymentOutcome(payment_id=args.payment_id, status="missing")
    if payment["status"] in ("paid", "declined"):
        return PaymentOutcome(
            payment_id=args.payment_id, status=payment["status"], charge_id=payment["charge_id"]
        )
    try:
        async with provider.provider_client(_settings(ctx)) as client:
            charge, replayed = await provider.create_charge(
                client,
                idempotency_key=payment["idempotency_key"],
                amount_cents=payment["amount_cents"],
                currency=payment["currency"],
                payment_method=payment["payment_method_id"],
                metadata={
                    "payment_id": str(payment["id"]),
                    "order_id": str(payment["order_id"]),
                },
            )
    except provider.PaymentDeclined as exc:
        await _record_failure(ctx, args.payment_id, "declined", exc.message)
        return PaymentOutcome(payment_id=args.payment_id, status="declined")
    except provider.PaymentError as exc:
        await _record_failure(ctx, args.payment_id, "failed", exc.message)
        raise
    async with ctx.connection() as conn:
        paid = await _row(
            conn, "payments_mark_paid", {"payment_id": args.payment_id, "charge_id": charge.id}
        )
        invoice_job_id = (
            await defer.defer(conn, generate_invoice, PaymentArgs(payment_id=args.payment_id))
            if paid is not None
            else None
        )
    return PaymentOutcome(
        payment_id=args.payment_id,
        status="paid",
        charge_id=charge.id,
        replayed=replayed,
        invoice_job_id=invoice_job_id,
    )


@blueprint.task(
    name="manufacturing.retry_failed_payments",
    queue="payment.batch",
    priority=priority("payment.batch"),
    cron="*/30 * * * *",
    queueing_lock="manufacturing.retry_failed_payments",
)
async def retry_failed_payments(args: PeriodicArgs, ctx: TaskContext) -> RetryRun:
    """Queue again the failed payments whose job has given up, each for another round of the
    full backoff, up to TASKHUB_MANUFACTURING_PAYMENT_RETRY_ROUNDS rounds; declined ones never
    come back. Every 30 minutes, as the seed did."""
    async with ctx.connection() as conn:
        cursor = await conn.execute(
            QUERIES["payments_requeue_failed"],
            {"max_rounds": _settings(ctx).payment_retry_rounds, "limit": RETRY_BATCH},
        )
        payment_ids = [int(row["id"]) for row in await cursor.fetchall()]
        if payment_ids:
            job_ids = await defer.batch_defer(
                conn, process_payment, [PaymentArgs(payment_id=id_) for id_ in payment_ids]
            )
            await conn.execute(
                QUERIES["payments_set_jobs"], {"payment_ids": payment_ids, "job_ids": job_ids}
            )
    return RetryRun(requeued=payment_ids)


@blueprint.task(
    name="manufacturing.reconcile_payments",
    queue="payment.batch",
    priority=priority("payment.batch"),
    cron="0 * * * *",
    queueing_lock="manufacturing.reconcile_payments",
    lock="manufacturing.reconcile_payments",
)
async def reconcile_payments(args: PeriodicArgs, ctx: TaskContext) -> Reconciliation:
    """Compare the local payments that have a charge with the provider's list of charges and
    record the result in manufacturing.payment_reconciliations; any mismatch (a charge missing
    locally or at the provider, an amount that differs) raises a payment_mismatch alert. A
    charge whose payment's job is still waiting or running is in flight, not a mismatch.
    Hourly, as the seed did."""
    async with provider.provider_client(_settings(ctx)) as client:
        charges = await provider.list_charges(client)
    async with ctx.connection() as conn:
        cursor = await conn.execute(
            QUERIES["payments_compare_with_provider"],
            {"charges": Jsonb([charge.model_dump() for charge in charges])},
        )
        found = [Mismatch.model_validate(row) for row in await cursor.fetchall()]
        mismatches = [item for item in found if item.kind != "in_flight"]
        counted = await _row(conn, "payments_count_charged", {})
        assert counted is not None
        record = await _row(
            conn,
            "payments_record_reconciliation",
            {
                "job_id": ctx.job_id,
                "provider_charges": len(charges),
                "local_payments": counted["charged"],
                "in_flight": len(found) - len(mismatches),
                "mismatches": Jsonb([item.model_dump() for item in mismatches]),
            },
        )
        assert record is not None
        alert_id = None
        if mismatches:
            kinds = sorted({item.kind for item in mismatches})
            alert = await raise_alert(
                conn,
                kind="payment_mismatch",
                severity="error",
                message=f"{len(mismatches)} payment(s) differ from the provider's charges "
                f"({', '.join(kinds)}): see reconciliation {record['id']}",
                details={
                    "reconciliation_id": record["id"],
                    "mismatches": [item.model_dump() for item in mismatches[:ALERT_DETAILS]],
                },
                job_id=ctx.job_id,
            )
            alert_id = alert.id
    return Reconciliation(
        reconciliation_id=record["id"],
        provider_charges=len(charges),
        local_payments=counted["charged"],
        in_flight=len(found) - len(mismatches),
        mismatches=mismatches,
        alert_id=alert_id,
    )
