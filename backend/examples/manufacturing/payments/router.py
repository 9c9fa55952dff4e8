"""The payment family over HTTP: create a payment (the row and its job commit with the
response, or not at all), and read it with its invoice."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status
from pydantic import BaseModel

from backend.api.deps import Conn, Operator, Reader
from backend.api.schemas import (
    FORBIDDEN,
    UNAUTHENTICATED,
    UNAVAILABLE,
    error_response,
    ok_response,
)
from backend.errors import TaskhubError
from backend.examples.manufacturing.payments import service

router = APIRouter(tags=["manufacturing"])

Id = Annotated[int, Path(ge=1, le=2**63 - 1, description="The payment's id.")]


class PaymentNotFound(TaskhubError):
    """No payment has that id."""

    status_code = 404


class PaymentDetail(BaseModel):
    payment: service.Payment
    invoice: service.Invoice | None


@router.post(
    "/manufacturing/payments",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=service.QueuedPayment,
    summary="Create a payment and queue its charge",
    responses={
        202: ok_response(
            "Queued. `Location` is the payment.",
            queued=(
                "Queued",
                {"payment_id": 42, "job_id": 1042, "task": "manufacturing.process_payment"},
            ),
        ),
        **UNAUTHENTICATED,
        **FORBIDDEN,
        **UNAVAILABLE,
    },
)
async def create_payment(
    request: service.PaymentRequest, conn: Conn, response: Response, caller: Operator
) -> service.QueuedPayment:
    """Store the payment (amount in cents) and defer `manufacturing.process_payment` on
    payment.critical, in this request's transaction. The provider charges it once, however
    often the job runs; an invoice follows. Needs the operate scope."""
    queued = await service.create_payment(conn, request)
    response.headers["Location"] = f"/manufacturing/payments/{queued.payment_id}"
    return queued


@router.get(
    "/manufacturing/payments/{payment_id}",
    response_model=PaymentDetail,
    summary="Read a payment and its invoice",
    responses={
        **UNAUTHENTICATED,
        404: error_response(
            "No payment has this id.", unknown=("An unknown id", "no payment has id 999")
        ),
        **UNAVAILABLE,
    },
)
async def read_payment(payment_id: Id, conn: Conn, caller: Reader) -> PaymentDetail:
    """The payment (status, the provider's charge id, attempts, the last error) and its
    invoice once written. Needs the read scope."""
    payment = await service.get_payment(conn, payment_id)
    if payment is None:
        raise PaymentNotFound(f"no payment has id {payment_id}")
    return PaymentDetail(payment=payment, invoice=await service.get_invoice(conn, payment_id))
