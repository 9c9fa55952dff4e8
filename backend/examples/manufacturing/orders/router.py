"""The order family over HTTP: create an order (the row and its match job commit with the
response, or not at all), read orders with their history, change an order's status (the
customer's email commits with it), and add or list production lines."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status
from pydantic import BaseModel

from backend.api.deps import Conn, Operator, Reader
from backend.api.schemas import (
    FORBIDDEN,
    UNAUTHENTICATED,
    UNAVAILABLE,
    error_response,
    ok_response,
)
from backend.examples.manufacturing.orders import rules, service

router = APIRouter(tags=["manufacturing"])

Id = Annotated[int, Path(ge=1, le=2**63 - 1, description="The order's id.")]
NOT_FOUND = error_response("No order has this id.", unknown=("Unknown", "no order has id 999"))


class OrderDetail(BaseModel):
    order: service.Order
    events: list[service.OrderEvent]


@router.post(
    "/manufacturing/orders",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=service.QueuedOrder,
    summary="Create an order and queue its matching",
    responses={
        202: ok_response(
            "Queued. `Location` is the order.",
            queued=(
                "Queued",
                {"order_id": 123, "job_id": 1123, "task": "manufacturing.match_order"},
            ),
        ),
        **UNAUTHENTICATED,
        **FORBIDDEN,
        **UNAVAILABLE,
    },
)
async def create_order(
    request: service.OrderRequest, conn: Conn, response: Response, caller: Operator
) -> service.QueuedOrder:
    """Store the order (pending) and defer `manufacturing.match_order` on order.critical, in
    this request's transaction. The due date is a UTC date from today up to 366 days ahead.
    Needs the operate scope."""
    queued = await service.create_order(conn, request)
    response.headers["Location"] = f"/manufacturing/orders/{queued.order_id}"
    return queued


@router.get(
    "/manufacturing/orders",
    response_model=list[service.Order],
    summary="List orders, newest first",
    responses={**UNAUTHENTICATED, **UNAVAILABLE},
)
async def list_orders(
    conn: Conn,
    caller: Reader,
    status: Annotated[rules.OrderStatus | None, Query(description="Only this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[service.Order]:
    """Orders newest first, optionally of one status. Needs the read scope."""
    return await service.list_orders(conn, status=status, limit=limit)


@router.get(
    "/manufacturing/orders/{order_id}",
    response_model=OrderDetail,
    summary="Read an order and its status history",
    responses={**UNAUTHENTICATED, 404: NOT_FOUND, **UNAVAILABLE},
)
async def read_order(order_id: Id, conn: Conn, caller: Reader) -> OrderDetail:
    """The order (status, line and day booked) and every status change with the email that
    told the customer. Needs the read scope."""
    order = await service.get_order(conn, order_id)
    if order is None:
        raise service.OrderNotFound(f"no order has id {order_id}")
    return OrderDetail(order=order, events=await service.order_events(conn, order_id))


@router.post(
    "/manufacturing/orders/{order_id}/status",
    response_model=service.Order,
    summary="Change an order's status",
    responses={
        **UNAUTHENTICATED,
        **FORBIDDEN,
        404: NOT_FOUND,
        409: error_response(
            "The order's status does not allow this change; nothing changed.",
            refused=(
                "Already shipped",
                "order 123 is shipped: it can become cancelled only when it is in_production "
                "or matched or pending or unmatched",
            ),
        ),
        **UNAVAILABLE,
    },
)
async def change_status(
    order_id: Id, change: service.StatusChange, conn: Conn, caller: Operator
) -> service.Order:
    """in_production (from matched), shipped (from matched or in_production) or cancelled
    (until shipped; the booked capacity is freed). The customer's `order_status` email is
    queued in the same transaction. Needs the operate scope."""
    return await service.change_status(conn, order_id, change)


@router.post(
    "/manufacturing/production-lines",
    status_code=status.HTTP_201_CREATED,
    response_model=service.Line,
    summary="Add a production line",
    responses={
        **UNAUTHENTICATED,
        **FORBIDDEN,
        409: error_response(
            "A line already has this name.",
            taken=("Taken", "a production line is already named 'line-1': pick another name"),
        ),
        **UNAVAILABLE,
    },
)
async def add_line(request: service.LineRequest, conn: Conn, caller: Operator) -> service.Line:
    """A line making one product up to `daily_capacity` units a day. Unmatched orders for it
    are matched by the next 15-minute sweep. Needs the operate scope."""
    return await service.add_line(conn, request)


@router.get(
    "/manufacturing/production-lines",
    response_model=list[service.Line],
    summary="List production lines",
    responses={**UNAUTHENTICATED, **UNAVAILABLE},
)
async def list_lines(conn: Conn, caller: Reader) -> list[service.Line]:
    """Every line, by id. Needs the read scope."""
    return await service.list_lines(conn)
