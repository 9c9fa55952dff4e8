"""The stand-in payment provider for ``taskhub up --demo``: served beside taskhub, a little
slow so a charge in flight can be watched, declining ``pm_card_declined``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from backend.examples.manufacturing.payments.standin import DECLINED_METHOD, PaymentStandin
from backend.examples.serving import serving

DEMO_DELAY = 0.5  # seconds per charge request


@contextlib.contextmanager
def serve_demo(token: str) -> Iterator[tuple[dict[str, str], list[str]]]:
    """Serve the stand-in provider on a free local port, requiring ``token``, until the block
    ends; yields the environment that points ``ManufacturingSettings`` at it and the lines to
    print."""
    standin = PaymentStandin(token=token)
    standin.fail(status=None, delay=DEMO_DELAY)  # slow, never failing: every request
    with serving(standin.app()) as url:
        try:
            yield (
                {
                    "TASKHUB_MANUFACTURING_PAYMENT_BASE_URL": url,
                    "TASKHUB_MANUFACTURING_PAYMENT_TOKEN": token,
                },
                [
                    f"  demo payment provider: {url}  (declines {DECLINED_METHOD}; faults: "
                    f"POST {url}/admin/faults)"
                ],
            )
        finally:
            standin.release()
