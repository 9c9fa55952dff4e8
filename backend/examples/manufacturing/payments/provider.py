"""The payment provider's HTTP API, as the tasks call it: charge with an idempotency key, list
the charges. Errors say whether a retry may help (:class:`ProviderUnavailable`) or not."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from backend.errors import TaskhubError
from backend.examples.manufacturing.settings import ManufacturingSettings

CHARGES = "/v1/charges"
HEALTH = "/v1/health"
#: What a response body may say about a failure, in an error message.
BODY_EXCERPT = 200


class PaymentError(TaskhubError):
    """A payment could not be charged; the message says why and what to fix."""


class ProviderNotConfigured(PaymentError):
    """TASKHUB_MANUFACTURING_PAYMENT_BASE_URL is not set on the worker."""


class ProviderUnavailable(PaymentError):
    """The provider is down, slow or overloaded (5xx, 429, a timeout, no connection): worth a
    retry, which asks again with the same idempotency key."""


class PaymentDeclined(PaymentError):
    """The provider declined the payment (402): final, nothing was charged."""


class ProviderRejected(PaymentError):
    """The provider refused the request (the token, a reused key, bad data): a retry would
    not help."""


class ProviderCharge(BaseModel):
    """One charge as the provider reports it (unknown fields are ignored)."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=255)
    idempotency_key: str = Field(min_length=1, max_length=255)
    amount_cents: int
    currency: str
    status: str


class ChargeList(BaseModel):
    items: list[ProviderCharge]


@contextlib.asynccontextmanager
async def provider_client(settings: ManufacturingSettings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the provider: base URL, bearer token and timeout from the settings."""
    if not settings.payment_base_url:
        raise ProviderNotConfigured(
            "the payment provider is not configured: set TASKHUB_MANUFACTURING_PAYMENT_BASE_URL "
            "(and TASKHUB_MANUFACTURING_PAYMENT_TOKEN) on the workers"
        )
    headers = {"Accept": "application/json"}
    if settings.payment_token is not None:
        headers["Authorization"] = f"Bearer {settings.payment_token.get_secret_value()}"
    async with httpx.AsyncClient(
        base_url=settings.payment_base_url.rstrip("/"),
        headers=headers,
        timeout=settings.payment_timeout,
    ) as client:
        yield client


def _excerpt(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    return text[:BODY_EXCERPT] + ("..." if len(text) > BODY_EXCERPT else "")


async def _send(client: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
    where = f"{request.method} {request.url.path}"
    try:
        response = await client.send(request)
    except httpx.TimeoutException:
        raise ProviderUnavailable(
            f"the payment provider did not answer {where} within {client.timeout.read:g} s "
            "(TASKHUB_MANUFACTURING_PAYMENT_TIMEOUT; the health check's: _HEALTH_TIMEOUT)"
        ) from None
    except httpx.TransportError as exc:
        raise ProviderUnavailable(
            f"cannot reach the payment provider at {client.base_url} ({where}): {exc}"
        ) from None
    status = response.status_code
    if status in (401, 403):
        raise ProviderRejected(
            f"the payment provider refused the credentials ({status} to {where}): check "
            "TASKHUB_MANUFACTURING_PAYMENT_TOKEN"
        )
    if status == 402:
        raise PaymentDeclined(f"the payment provider declined the payment: {_excerpt(response)}")
    if status == 429 or status >= 500:
        raise ProviderUnavailable(
            f"the payment provider answered {status} to {where}: {_excerpt(response)}"
        )
    if status >= 300:
        raise ProviderRejected(
            f"the payment provider answered {status} to {where}: {_excerpt(response)}"
        )
    return response


async def create_charge(
    client: httpx.AsyncClient,
    *,
    idempotency_key: str,
    amount_cents: int,
    currency: str,
    payment_method: str,
    metadata: dict[str, str],
) -> tuple[ProviderCharge, bool]:
    """The charge for ``idempotency_key``, and whether the provider replayed an earlier one
    (the key was used before: nothing new was charged)."""
    request = client.build_request(
        "POST",
        CHARGES,
        headers={"Idempotency-Key": idempotency_key},
        json={
            "amount_cents": amount_cents,
            "currency": currency,
            "payment_method": payment_method,
            "metadata": metadata,
        },
    )
    response = await _send(client, request)
    try:
        charge = ProviderCharge.model_validate_json(response.content)
    except ValidationError as exc:
        raise ProviderRejected(
            f"the payment provider's answer to POST {CHARGES} is not a charge: "
            f"{exc.errors(include_url=False)[0]['msg']}"
        ) from None
    if charge.idempotency_key != idempotency_key:
        raise ProviderRejected(
            f"the payment provider answered charge {charge.id} for key "
            f"{charge.idempotency_key!r}, not {idempotency_key!r}"
        )
    return charge, response.headers.get("Idempotent-Replayed") == "true"


async def list_charges(client: httpx.AsyncClient) -> list[ProviderCharge]:
    """Every charge the provider holds (for reconciliation)."""
    response = await _send(client, client.build_request("GET", CHARGES))
    try:
        return ChargeList.model_validate_json(response.content).items
    except ValidationError as exc:
        raise ProviderRejected(
            f"the payment provider's answer to GET {CHARGES} is not a list of charges: "
            f"{exc.errors(include_url=False)[0]['msg']}"
        ) from None


async def ping(client: httpx.AsyncClient) -> None:
    """One cheap authenticated request (manufacturing.health_check's): returns when the
    provider answers it with a 2xx, raises as any call does otherwise."""
    await _send(client, client.build_request("GET", HEALTH))
