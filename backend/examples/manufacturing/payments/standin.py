"""A stand-in payment provider: charges with an idempotency key, faults on demand, a list of
its charges for reconciliation.

``POST /v1/charges`` with an ``Idempotency-Key`` header charges once per key: the same key
again returns the FIRST charge (``Idempotent-Replayed: true``), never a second one; the same
key with another amount or currency is a 409. A ``payment_method`` of ``pm_card_declined`` is
declined (402). ``GET /v1/charges`` lists every charge, ``GET /v1/health`` answers ok
(or the fault set now). All of it behind a bearer token::

    standin = PaymentStandin(token="pay-demo-token-0123")
    standin.fail(status=503, times=2)  # the next two charge requests fail, before charging
    standin.fail(status=None, delay=30)  # every charge request hangs 30 s (a timeout)
    standin.hold()  # charges are recorded, then their answers wait for standin.release()
    app = standin.app()  # serve it: backend.examples.serving.serving(app), or uvicorn

State is in memory, shared by every request of the process. ``/admin/*`` sets faults, holds
and releases answers, and adds or changes charges behind the application's back (to show
reconciliation mismatches). ``python -m backend.examples.manufacturing.payments.standin``
serves one from the shell.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import itertools
import threading
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field

DECLINED_METHOD = "pm_card_declined"
#: How often a held answer checks whether it was released.
HOLD_POLL = 0.02


@dataclass
class Fault:
    """What the next charge requests get before (or instead of) being charged."""

    status: int | None = 500  # None: no error, only the delay
    delay: float = 0.0  # seconds before answering (beyond the client's timeout: a timeout)
    times: int | None = None  # requests it affects; None: every one until healed


@dataclass
class Charge:
    id: str
    idempotency_key: str
    amount_cents: int
    currency: str
    payment_method: str
    metadata: dict[str, str]
    created_at: str
    status: str = "succeeded"

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "idempotency_key": self.idempotency_key,
            "amount_cents": self.amount_cents,
            "currency": self.currency,
            "payment_method": self.payment_method,
            "metadata": dict(self.metadata),
            "status": self.status,
            "created_at": self.created_at,
        }


@dataclass
class PaymentStandin:
    """The provider's state, shared by its app and whoever drives it (a test, the demo).

    ``requests`` counts every charge request by idempotency key (replays included), so a test
    can tell how often a payment was asked for and that it was charged once all the same.
    """

    token: str | None = None
    charges: dict[str, Charge] = field(default_factory=dict)  # by idempotency key
    requests: dict[str, int] = field(default_factory=dict)
    fault: Fault | None = None
    holding: bool = False
    _released: threading.Event = field(default_factory=threading.Event, repr=False)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1), repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- faults ------------------------------------------------------------------------------

    def fail(
        self, status: int | None = 500, *, times: int | None = None, delay: float = 0.0
    ) -> None:
        """Make the next ``times`` charge requests (every one: None) wait ``delay`` seconds and
        fail with ``status`` (None: answer normally after the delay), without charging."""
        with self._lock:
            self.fault = Fault(status=status, delay=delay, times=times)

    def heal(self) -> None:
        """No more faults (a hold stays until released)."""
        with self._lock:
            self.fault = None

    def hold(self) -> None:
        """From now on charges are recorded, then their answers wait until :meth:`release`:
        the window in which a worker has charged but not yet committed."""
        with self._lock:
            self.holding = True
            self._released.clear()

    def release(self) -> None:
        """Let held answers go, and hold no more."""
        with self._lock:
            self.holding = False
            self._released.set()

    # -- charges -----------------------------------------------------------------------------

    def charge(
        self,
        key: str,
        amount_cents: int,
        currency: str,
        payment_method: str = "pm_card_visa",
        metadata: dict[str, str] | None = None,
    ) -> tuple[Charge, bool]:
        """The charge for ``key``: the first one if the key was seen (and True), else a new
        one. ValueError if the key's first charge was for another amount or currency."""
        with self._lock:
            self.requests[key] = self.requests.get(key, 0) + 1
            first = self.charges.get(key)
            if first is not None:
                if (first.amount_cents, first.currency) != (amount_cents, currency):
                    raise ValueError(
                        f"idempotency key {key!r} was first used for {first.amount_cents} "
                        f"{first.currency}, not {amount_cents} {currency}"
                    )
                return first, True
            charge = Charge(
                id=f"ch_{next(self._ids):08d}",
                idempotency_key=key,
                amount_cents=amount_cents,
                currency=currency,
                payment_method=payment_method,
                metadata=dict(metadata or {}),
                created_at=datetime.datetime.now(datetime.UTC).isoformat(),
            )
            self.charges[key] = charge
            return charge, False

    def set_amount(self, charge_id: str, amount_cents: int) -> None:
        """Change a charge's amount behind the application's back (a partial refund, say)."""
        with self._lock:
            for charge in self.charges.values():
                if charge.id == charge_id:
                    charge.amount_cents = amount_cents
                    return
        raise KeyError(charge_id)

    def list_charges(self) -> list[Charge]:
        """Every charge, oldest first (copies)."""
        with self._lock:
            return [Charge(**{**vars(charge)}) for charge in self.charges.values()]

    def charges_for(self, key: str) -> int:
        """How many distinct charges exist for ``key``: 0 or 1, by construction."""
        with self._lock:
            return sum(1 for charge in self.charges.values() if charge.idempotency_key == key)

    def _take_fault(self) -> Fault | None:
        with self._lock:
            fault = self.fault
            if fault is None:
                return None
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self.fault = None
            return Fault(status=fault.status, delay=fault.delay, times=1)

    def _peek_fault(self) -> Fault | None:
        """The fault set now, without using up one of its ``times`` (the health check's)."""
        with self._lock:
            return self.fault

    async def _wait_if_held(self) -> None:
        while True:
            with self._lock:
                if not self.holding:
                    return
            await asyncio.sleep(HOLD_POLL)

    def app(self) -> FastAPI:
        """The stand-in's FastAPI app, serving this state."""
        return create_app(self)


class ChargeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount_cents: int = Field(ge=1, le=10**12)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    payment_method: str = Field(min_length=1, max_length=200)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=50)


class FaultRequest(BaseModel):
    status: int | None = Field(default=500, ge=100, le=599)
    delay: float = Field(default=0.0, ge=0, le=3600)
    times: int | None = Field(default=None, ge=1)


class AmountRequest(BaseModel):
    amount_cents: int = Field(ge=0, le=10**12)


def _authorized(request: Request) -> None:
    token = request.app.state.payments.token
    if token is not None and request.headers.get("authorization") != f"Bearer {token}":
        raise HTTPException(401, "a valid token is required: Authorization: Bearer <token>")


Auth = Annotated[None, Depends(_authorized)]
IdempotencyKey = Annotated[str, Header(alias="Idempotency-Key", min_length=1, max_length=255)]


def create_app(standin: PaymentStandin | None = None) -> FastAPI:
    """The stand-in provider's app. Without a state, an empty one (no token);
    ``app.state.payments`` is the state either way."""
    state = standin if standin is not None else PaymentStandin()
    app = FastAPI(
        title="stand-in payment provider", summary="Idempotent charges, on demand faults."
    )
    app.state.payments = state

    @app.post("/v1/charges", status_code=201)
    async def create_charge(
        _: Auth, body: ChargeRequest, key: IdempotencyKey, response: Response
    ) -> dict[str, Any]:
        """Charge once per idempotency key; the same key returns the first charge."""
        fault = state._take_fault()
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.status is not None:
                raise HTTPException(fault.status, "injected fault: nothing was charged")
        if body.payment_method == DECLINED_METHOD:
            raise HTTPException(402, "card declined: nothing was charged")
        try:
            charge, replayed = state.charge(
                key, body.amount_cents, body.currency, body.payment_method, body.metadata
            )
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from None
        await state._wait_if_held()
        if replayed:
            response.status_code = 200
            response.headers["Idempotent-Replayed"] = "true"
        return charge.as_json()

    @app.get("/v1/health")
    async def health(_: Auth) -> dict[str, str]:
        """A cheap authenticated answer; a fault set for charges applies here too (without
        being used up), so a failing provider looks down to its health check as well."""
        fault = state._peek_fault()
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.status is not None:
                raise HTTPException(fault.status, "injected fault")
        return {"status": "ok"}

    @app.get("/v1/charges")
    async def list_charges(_: Auth) -> dict[str, Any]:
        """Every charge, oldest first, for reconciliation."""
        return {"items": [charge.as_json() for charge in state.list_charges()]}

    @app.post("/admin/faults")
    async def add_fault(_: Auth, body: FaultRequest) -> dict[str, str]:
        """Make the next charge requests fail, hang or be slow (``times``: how many)."""
        state.fail(body.status, times=body.times, delay=body.delay)
        return {"fault": "set"}

    @app.delete("/admin/faults")
    async def heal(_: Auth) -> dict[str, str]:
        """Remove the fault."""
        state.heal()
        return {"fault": "none"}

    @app.post("/admin/hold")
    async def hold(_: Auth) -> dict[str, str]:
        """Record charges but hold their answers until POST /admin/release."""
        state.hold()
        return {"hold": "on"}

    @app.post("/admin/release")
    async def release(_: Auth) -> dict[str, str]:
        """Let held answers go."""
        state.release()
        return {"hold": "off"}

    @app.post("/admin/charges/{charge_id}/amount")
    async def set_amount(_: Auth, charge_id: str, body: AmountRequest) -> dict[str, str]:
        """Change a charge's amount (reconciliation then reports it)."""
        try:
            state.set_amount(charge_id, body.amount_cents)
        except KeyError:
            raise HTTPException(404, f"no charge {charge_id!r}") from None
        return {"charge": charge_id}

    return app


def main(argv: list[str] | None = None) -> None:
    """Serve a stand-in payment provider until Ctrl-C."""
    import uvicorn

    parser = argparse.ArgumentParser(
        prog="python -m backend.examples.manufacturing.payments.standin", description=__doc__
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8200)
    parser.add_argument("--token", default=None, help="bearer token to require (none: open)")
    options = parser.parse_args(argv)
    app = PaymentStandin(token=options.token).app()
    uvicorn.run(app, host=options.host, port=options.port, log_level="warning")


if __name__ == "__main__":
    main()
