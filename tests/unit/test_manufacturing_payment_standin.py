"""The stand-in payment provider over HTTP: one charge per idempotency key, its faults, its
token, its list; and the demo serving it."""

from __future__ import annotations

import httpx

from backend.examples.manufacturing.payments.demo import serve_demo
from backend.examples.manufacturing.payments.standin import PaymentStandin

TOKEN = "pay-unit-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHARGE = {"amount_cents": 500, "currency": "USD", "payment_method": "pm_1"}


def client(standin: PaymentStandin) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=standin.app()), base_url="http://provider"
    )


async def charge(http: httpx.AsyncClient, key: str, **changes: object) -> httpx.Response:
    return await http.post(
        "/v1/charges", headers={**AUTH, "Idempotency-Key": key}, json={**CHARGE, **changes}
    )


async def test_the_same_key_returns_the_first_charge_never_a_second() -> None:
    standin = PaymentStandin(token=TOKEN)
    async with client(standin) as http:
        first = await charge(http, "payment-1")
        again = await charge(http, "payment-1")
        other = await charge(http, "payment-2")
        conflict = await charge(http, "payment-1", amount_cents=600)
        listed = await http.get("/v1/charges", headers=AUTH)

    assert first.status_code == 201
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert other.json()["id"] != first.json()["id"]
    assert conflict.status_code == 409
    assert [item["idempotency_key"] for item in listed.json()["items"]] == [
        "payment-1",
        "payment-2",
    ]
    assert standin.requests == {"payment-1": 3, "payment-2": 1}


async def test_a_token_is_required_and_faults_charge_nothing() -> None:
    standin = PaymentStandin(token=TOKEN)
    async with client(standin) as http:
        anonymous = await http.post("/v1/charges", headers={"Idempotency-Key": "k"}, json=CHARGE)
        set_fault = await http.post("/admin/faults", headers=AUTH, json={"status": 503, "times": 1})
        failed = await charge(http, "k")
        succeeded = await charge(http, "k")
        declined = await charge(http, "d", payment_method="pm_card_declined")

    assert anonymous.status_code == 401
    assert set_fault.status_code == 200
    assert failed.status_code == 503
    assert succeeded.status_code == 201
    assert declined.status_code == 402
    assert [c.idempotency_key for c in standin.list_charges()] == ["k"]


def test_the_demo_serves_a_provider_that_charges() -> None:
    with serve_demo("demo-token") as (env, lines):
        url = env["TASKHUB_MANUFACTURING_PAYMENT_BASE_URL"]
        response = httpx.post(
            f"{url}/v1/charges",
            headers={"Authorization": "Bearer demo-token", "Idempotency-Key": "demo-1"},
            json=CHARGE,
        )
    assert response.status_code == 201
    assert env["TASKHUB_MANUFACTURING_PAYMENT_TOKEN"] == "demo-token"
    assert url in lines[0]
