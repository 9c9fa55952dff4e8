"""The API with the database unreachable without a reset (issue 20, fault 3 for the API):
packets dropped, nothing closed (tests/e2e/faults/proxy.py blackholes between the API and its
server), connections in its pool and new ones alike.

What must hold: every request (the dashboard's pages too) answers within a few seconds, 503
with ``Retry-After`` for what needs the database, never hangs; the API answers 200 again by
itself once the path is back.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import OPERATE_TOKEN, bearer
from tests.e2e.conftest import TaskhubProcess, clean_env, free_port
from tests.e2e.faults.proxy import blackhole_proxy
from tests.e2e.faults.server import ThrowawayServer

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

CUT_FOR = 12.0
REQUEST_BOUND = 20.0  # backend.db.ANSWER_WITHIN (15 s) and some
RECOVERY_BOUND = 60.0
REQUESTS = (
    ("POST", "/jobs", {"task": "taskhub.ping", "args": {"message": "cut"}}),
    ("GET", "/jobs/1", None),
    ("GET", "/health", None),
    ("GET", "/dashboard/jobs", None),
)


def test_the_api_answers_503_through_a_cut_network_and_recovers(
    spawn: type[TaskhubProcess], tmp_path: Path, pg_server: ThrowawayServer
) -> None:
    with blackhole_proxy(pg_server) as proxy:
        env = clean_env(
            DATABASE_URL=proxy.url_for(pg_server), TASKHUB_TOKENS=f"ops=operate:{OPERATE_TOKEN}"
        )
        port = free_port()
        api = spawn(["api", "--port", str(port)], tmp_path, env)
        api.wait_for_line("Stop with Ctrl-C.")
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers=bearer(OPERATE_TOKEN), timeout=60
        )
        login = client.post("/dashboard/login", data={"token": OPERATE_TOKEN})
        assert login.status_code == 303, login.text
        for method, path, body in REQUESTS:  # warm: connections in the pool
            assert client.request(method, path, json=body).status_code in (200, 201)

        proxy.blackhole()
        cut = time.monotonic()
        answers: list[tuple[str, int, float, bool]] = []
        lock = threading.Lock()

        def ask(method: str, path: str, body: object) -> None:
            while time.monotonic() - cut < CUT_FOR:
                began = time.monotonic()
                try:
                    response = client.request(method, path, json=body)
                    status, retry = response.status_code, "retry-after" in response.headers
                except httpx.TimeoutException:
                    status, retry = 0, False
                with lock:
                    answers.append((f"{method} {path}", status, time.monotonic() - began, retry))
                time.sleep(0.2)

        threads = [threading.Thread(target=ask, args=r, daemon=True) for r in REQUESTS]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=CUT_FOR + 70)
        slowest = max(took for _, _, took, _ in answers)
        print(
            f"{len(answers)} requests during a {CUT_FOR:g}s cut: statuses"
            f" {sorted({status for _, status, _, _ in answers})}, slowest {slowest:.2f}s"
        )
        assert not any(thread.is_alive() for thread in threads), f"hung:\n{api.output[-5000:]}"
        assert slowest < REQUEST_BOUND, f"{answers}\n{api.output[-5000:]}"
        assert {status for _, status, _, _ in answers} == {503}, answers
        assert all(retry for _, _, _, retry in answers), answers

        proxy.heal()
        healed = time.monotonic()
        while True:
            statuses = [client.request(m, p, json=b).status_code for m, p, b in REQUESTS]
            if statuses == [201, 200, 200, 200]:
                break
            assert time.monotonic() - healed < RECOVERY_BOUND, f"{statuses}\n{api.output[-5000:]}"
            time.sleep(0.2)
        back = time.monotonic() - healed
        print(f"the API answered 200/201 again {back:.2f}s after the path came back")
        client.close()
        assert api.stop(timeout=15) == 0, api.output[-5000:]
