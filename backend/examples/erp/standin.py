"""A stand-in ERP: the paged HTTP API the ERP sync talks to, with data and faults on demand.

It serves generated assets and locations (deterministic for a seed), page by page, filtered
by ``updated_since``, behind a bearer token. Pages can be made slow or made to fail, for a
number of requests or for good, to show retries, timeouts and rescues::

    standin = ErpStandin(token="erp-demo-token-0123")
    standin.seed(assets=10_000, locations=200)
    standin.fail("assets", page=3, status=500, times=1)  # the first request of page 3 fails
    app = standin.app()  # serve it: backend.examples.serving.serving(app), or uvicorn

    app = demo_app(assets=10_000, locations=200, token="...")  # the same, in one call

``python -m backend.examples.erp.standin --assets 10000 --port 8100`` serves one from the shell.
While it runs, ``/admin/*`` reseeds it, changes records and sets faults (same token).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import random
import threading
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from pydantic import BaseModel, Field

Resource = Literal["assets", "locations"]

#: Generated records were last changed before this; touched ones get the current time.
EPOCH = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
CATEGORIES = ("IT equipment", "Vehicles", "Furniture", "Machinery", "Medical", "Tools")
STATUSES = ("active", "in_repair", "in_storage", "disposed")
CITIES = ("Riyadh", "Jeddah", "Dammam", "Lyon", "Porto", "Austin", "Osaka", "Nairobi")


@dataclass
class Fault:
    """What the requests of one page get instead of (or before) their records."""

    status: int | None = 500  # None: no error, just the delay
    delay: float = 0.0  # seconds before answering (longer than the client's timeout: a timeout)
    times: int | None = None  # requests it affects; None: every one


@dataclass
class ErpStandin:
    """The stand-in's state, shared by its app and whoever drives it (a test, the demo).

    ``requests`` logs every page asked for, as (resource, page), so a test can tell what a
    sync fetched and how often.
    """

    token: str | None = None
    max_page_size: int = 1000
    page_delay: float = 0.0
    records: dict[Resource, list[dict[str, Any]]] = field(
        default_factory=lambda: {"assets": [], "locations": []}
    )
    faults: dict[tuple[Resource, int], Fault] = field(default_factory=dict)
    requests: list[tuple[Resource, int]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- data --------------------------------------------------------------------------------

    def seed(self, assets: int = 1000, locations: int = 50, seed: int = 0) -> None:
        """Replace the data with ``assets`` assets and ``locations`` locations (deterministic)."""
        rng = random.Random(seed)
        new_locations = [_location(n, rng) for n in range(1, locations + 1)]
        new_assets = [_asset(n, rng, locations) for n in range(1, assets + 1)]
        with self._lock:
            self.records = {"assets": new_assets, "locations": new_locations}

    def add(self, resource: Resource, count: int) -> list[str]:
        """Create ``count`` records, changed now; returns their ids."""
        rng = random.Random()
        now = _now()
        with self._lock:
            records = self.records[resource]
            start = len(records) + 1
            new = [
                _asset(n, rng, len(self.records["locations"]))
                if resource == "assets"
                else _location(n, rng)
                for n in range(start, start + count)
            ]
            for record in new:
                record["updated_at"] = now
            self.records[resource] = [*records, *new]
        return [record["id"] for record in new]

    def touch(self, resource: Resource, count: int) -> list[str]:
        """Change ``count`` records spread over the whole list (a new name, changed now)."""
        now = _now()
        with self._lock:
            records = self.records[resource]
            step = max(1, len(records) // count) if count else 1
            changed = records[::step][:count]
            for record in changed:
                record["name"] = f"{record['name'].split(' (rev')[0]} (rev {now})"
                record["updated_at"] = now
        return [record["id"] for record in changed]

    def fail(
        self,
        resource: Resource,
        page: int,
        status: int | None = 500,
        *,
        times: int | None = None,
        delay: float = 0.0,
    ) -> None:
        """Make requests of one page fail with ``status`` (or only wait ``delay`` seconds)."""
        with self._lock:
            self.faults[(resource, page)] = Fault(status=status, delay=delay, times=times)

    def heal(self) -> None:
        """Remove every fault."""
        with self._lock:
            self.faults.clear()

    def pages_requested(self, resource: Resource) -> list[int]:
        """The pages of ``resource`` asked for so far, in order."""
        with self._lock:
            return [page for kind, page in self.requests if kind == resource]

    def snapshot(self, resource: Resource) -> list[dict[str, Any]]:
        """A copy of the records (to check the synced tables against)."""
        with self._lock:
            return [dict(record) for record in self.records[resource]]

    # -- serving -----------------------------------------------------------------------------

    def _take_fault(self, resource: Resource, page: int) -> Fault | None:
        with self._lock:
            self.requests.append((resource, page))
            fault = self.faults.get((resource, page))
            if fault is None:
                return None
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    del self.faults[(resource, page)]
            return Fault(status=fault.status, delay=fault.delay, times=1)

    def _page(
        self,
        resource: Resource,
        page: int,
        page_size: int,
        updated_since: datetime.datetime | None,
    ) -> dict[str, Any]:
        size = min(page_size, self.max_page_size)
        with self._lock:
            records = self.records[resource]
            if updated_since is not None:
                since = updated_since.astimezone(datetime.UTC).isoformat(timespec="microseconds")
                # ISO 8601 in UTC with microseconds: text order is time order.
                records = [record for record in records if record["updated_at"] >= since]
            items = [dict(record) for record in records[(page - 1) * size : page * size]]
            total = len(records)
        return {
            "items": items,
            "page": page,
            "page_size": size,
            "total": total,
            "total_pages": -(-total // size),
        }

    def app(self) -> FastAPI:
        """The stand-in's FastAPI app, serving this state."""
        return create_app(self)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")


def _timestamp(n: int) -> str:
    return (EPOCH + datetime.timedelta(minutes=n)).isoformat(timespec="microseconds")


def _location(n: int, rng: random.Random) -> dict[str, Any]:
    city = rng.choice(CITIES)
    return {
        "id": f"L{n:05d}",
        "code": f"LOC-{n:05d}",
        "name": f"{city} site {n}",
        "parent_id": f"L{(n - 1) // 10:05d}" if n > 10 else None,
        "address": f"{rng.randint(1, 999)} Main Street, {city}",
        "updated_at": _timestamp(n),
    }


def _asset(n: int, rng: random.Random, locations: int) -> dict[str, Any]:
    category = rng.choice(CATEGORIES)
    purchased = datetime.date(2015, 1, 1) + datetime.timedelta(days=rng.randint(0, 3000))
    return {
        "id": f"A{n:07d}",
        "code": f"AST-{n:07d}",
        "name": f"{category} #{n}",
        "category": category,
        "status": rng.choice(STATUSES),
        "location_id": f"L{rng.randint(1, locations):05d}" if locations else None,
        "serial_number": f"SN{rng.getrandbits(40):010X}",
        "purchase_date": purchased.isoformat(),
        "purchase_cost": str(Decimal(rng.randint(1_000, 5_000_000)) / 100),
        "updated_at": _timestamp(n),
    }


class SeedRequest(BaseModel):
    assets: int = Field(default=1000, ge=0, le=1_000_000)
    locations: int = Field(default=50, ge=0, le=100_000)
    seed: int = 0


class ChangeRequest(BaseModel):
    resource: Resource = "assets"
    count: int = Field(default=10, ge=0, le=1_000_000)


class FaultRequest(BaseModel):
    resource: Resource = "assets"
    page: int = Field(ge=1)
    status: int | None = Field(default=500, ge=100, le=599)
    delay: float = Field(default=0.0, ge=0, le=3600)
    times: int | None = Field(default=None, ge=1)


def _authorized(request: Request) -> None:
    token = request.app.state.erp.token
    if token is not None and request.headers.get("authorization") != f"Bearer {token}":
        raise HTTPException(401, "a valid token is required: Authorization: Bearer <token>")


Auth = Annotated[None, Depends(_authorized)]
PageNumber = Annotated[int, Query(ge=1, le=1_000_000)]
PageSize = Annotated[int, Query(ge=1, le=100_000)]


def create_app(standin: ErpStandin | None = None) -> FastAPI:
    """The stand-in ERP's app. Without a state, an empty one (no token); ``app.state.erp``
    is the state either way."""
    state = standin if standin is not None else ErpStandin()
    app = FastAPI(title="stand-in ERP", summary="Paged assets and locations for the ERP sync.")
    app.state.erp = state

    async def serve(
        resource: Resource, page: int, page_size: int, updated_since: datetime.datetime | None
    ) -> dict[str, Any]:
        if updated_since is not None and updated_since.utcoffset() is None:
            raise HTTPException(422, "updated_since needs a timezone (e.g. ...Z)")
        fault = state._take_fault(resource, page)
        delay = state.page_delay + (fault.delay if fault else 0.0)
        if delay:
            await asyncio.sleep(delay)
        if fault is not None and fault.status is not None:
            raise HTTPException(fault.status, f"injected fault on {resource} page {page}")
        return state._page(resource, page, page_size, updated_since)

    @app.get("/api/v1/assets")
    async def assets(
        _: Auth,
        page: PageNumber = 1,
        page_size: PageSize = 100,
        updated_since: datetime.datetime | None = None,
    ) -> dict[str, Any]:
        """Assets ordered by id, one page; only those changed at or after ``updated_since``."""
        return await serve("assets", page, page_size, updated_since)

    @app.get("/api/v1/locations")
    async def locations(
        _: Auth,
        page: PageNumber = 1,
        page_size: PageSize = 100,
        updated_since: datetime.datetime | None = None,
    ) -> dict[str, Any]:
        """Locations ordered by id, one page; only those changed at or after ``updated_since``."""
        return await serve("locations", page, page_size, updated_since)

    @app.post("/admin/seed")
    async def seed(_: Auth, body: SeedRequest) -> dict[str, int]:
        """Replace the data with generated records."""
        state.seed(assets=body.assets, locations=body.locations, seed=body.seed)
        return {"assets": body.assets, "locations": body.locations}

    @app.post("/admin/add")
    async def add(_: Auth, body: ChangeRequest) -> dict[str, list[str]]:
        """Create records (changed now: the next incremental sync picks them up)."""
        return {"ids": state.add(body.resource, body.count)}

    @app.post("/admin/touch")
    async def touch(_: Auth, body: ChangeRequest) -> dict[str, list[str]]:
        """Change records (changed now: the next incremental sync picks them up)."""
        return {"ids": state.touch(body.resource, body.count)}

    @app.post("/admin/faults")
    async def add_fault(_: Auth, body: FaultRequest) -> dict[str, str]:
        """Make one page fail (or be slow) for ``times`` requests, or until healed."""
        state.fail(body.resource, body.page, body.status, times=body.times, delay=body.delay)
        return {"fault": f"{body.resource} page {body.page}"}

    @app.delete("/admin/faults")
    async def heal(_: Auth) -> dict[str, str]:
        """Remove every fault."""
        state.heal()
        return {"faults": "none"}

    return app


def demo_app(
    assets: int = 1000,
    locations: int = 50,
    *,
    token: str | None = None,
    page_delay: float = 0.0,
    seed: int = 0,
) -> FastAPI:
    """A seeded stand-in ERP in one call (for ``taskhub up --demo``); ``app.state.erp`` is its
    :class:`ErpStandin`, to change data or set faults while it runs."""
    standin = ErpStandin(token=token, page_delay=page_delay)
    standin.seed(assets=assets, locations=locations, seed=seed)
    return standin.app()


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m backend.examples.erp.standin", description=__doc__
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--assets", type=int, default=1000)
    parser.add_argument("--locations", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--token", default=None, help="bearer token to require (none: open)")
    parser.add_argument("--page-delay", type=float, default=0.0, help="seconds per page")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Serve a seeded stand-in ERP until Ctrl-C."""
    import uvicorn

    options = _arguments(argv)
    app = demo_app(
        options.assets,
        options.locations,
        token=options.token,
        page_delay=options.page_delay,
        seed=options.seed,
    )
    uvicorn.run(app, host=options.host, port=options.port, log_level="warning")


if __name__ == "__main__":
    main()
