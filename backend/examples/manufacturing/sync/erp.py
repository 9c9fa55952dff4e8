"""The ERP's paged HTTP API, as manufacturing.sync_external_data calls it.

The ERP is the one the ERP example syncs (its stand-in, ``backend/examples/erp/standin.py``,
serves it in tests and demos); its record shapes are that example's models, reused here. Errors
say whether a retry may help (:class:`ErpUnavailable`) or not, naming our settings.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from pydantic import ValidationError

from backend.errors import TaskhubError
from backend.examples.erp.service import ErpAsset, ErpLocation, ErpPage
from backend.examples.manufacturing.settings import ManufacturingSettings

Resource = Literal["locations", "assets"]
#: Locations first: equipment points at its site.
RESOURCES: tuple[Resource, ...] = ("locations", "assets")
PATHS: dict[Resource, str] = {"assets": "/api/v1/assets", "locations": "/api/v1/locations"}
MODELS: dict[Resource, type[ErpAsset] | type[ErpLocation]] = {
    "assets": ErpAsset,
    "locations": ErpLocation,
}
#: What a response body may say about a failure, in an error message.
BODY_EXCERPT = 200


class ErpError(TaskhubError):
    """The ERP could not be read; the message says why and what to fix."""


class ErpNotConfigured(ErpError):
    """TASKHUB_MANUFACTURING_ERP_BASE_URL is not set on the worker."""


class ErpUnavailable(ErpError):
    """The ERP is down, slow or overloaded (5xx, 429, a timeout, no connection): worth a retry,
    which resumes at the checkpoint."""


class ErpRejected(ErpError):
    """The ERP refused the request (the token, other 4xx) or sent something that is not a page
    of records: a retry would not help."""


@dataclass(frozen=True)
class Page:
    number: int
    total_pages: int
    records: list[dict[str, Any]]  # validated, as JSON data


@contextlib.asynccontextmanager
async def erp_client(settings: ManufacturingSettings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the ERP: base URL, bearer token and timeout from the settings."""
    if not settings.erp_base_url:
        raise ErpNotConfigured(
            "the ERP is not configured: set TASKHUB_MANUFACTURING_ERP_BASE_URL (and "
            "TASKHUB_MANUFACTURING_ERP_TOKEN) on the workers"
        )
    headers = {"Accept": "application/json"}
    if settings.erp_token is not None:
        headers["Authorization"] = f"Bearer {settings.erp_token.get_secret_value()}"
    async with httpx.AsyncClient(
        base_url=settings.erp_base_url.rstrip("/"), headers=headers, timeout=settings.erp_timeout
    ) as client:
        yield client


def _excerpt(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    return text[:BODY_EXCERPT] + ("..." if len(text) > BODY_EXCERPT else "")


async def fetch_page(
    client: httpx.AsyncClient,
    resource: Resource,
    number: int,
    page_size: int,
    since: datetime.datetime | None,
) -> Page:
    """One page of records changed at or after ``since`` (all when None), validated."""
    params: dict[str, str | int] = {"page": number, "page_size": page_size}
    if since is not None:
        params["updated_since"] = since.isoformat()
    where = f"GET {PATHS[resource]} page {number}"
    try:
        response = await client.get(PATHS[resource], params=params)
    except httpx.TimeoutException:
        raise ErpUnavailable(
            f"the ERP did not answer {where} within {client.timeout.read:g} s "
            "(TASKHUB_MANUFACTURING_ERP_TIMEOUT)"
        ) from None
    except httpx.TransportError as exc:
        raise ErpUnavailable(
            f"cannot reach the ERP at {client.base_url} ({where}): {exc}"
        ) from None
    status = response.status_code
    if status in (401, 403):
        raise ErpRejected(
            f"the ERP refused the credentials ({status} to {where}): check "
            "TASKHUB_MANUFACTURING_ERP_TOKEN"
        )
    if status == 429 or status >= 500:
        raise ErpUnavailable(f"the ERP answered {status} to {where}: {_excerpt(response)}")
    if status != 200:
        raise ErpRejected(f"the ERP answered {status} to {where}: {_excerpt(response)}")
    try:
        envelope = ErpPage.model_validate_json(response.content)
        records = [
            MODELS[resource].model_validate(item).model_dump(mode="json") for item in envelope.items
        ]
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise ErpRejected(
            f"the ERP's answer to {where} is not a page of {resource}: "
            f"{'.'.join(map(str, first['loc'])) or 'body'}: {first['msg']}"
        ) from None
    return Page(number=number, total_pages=envelope.total_pages, records=records)
