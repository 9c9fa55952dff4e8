"""Alert settings are validated at start; webhook bodies are signed over their raw bytes."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json

import pytest

from backend.control.alerts import AlertEvent
from backend.errors import SettingsError
from backend.settings import load_settings
from backend.tasks.alerts import sign, webhook_body


def test_alert_settings_have_defaults_and_split_lists() -> None:
    settings = load_settings(critical_queues="payment.critical, other")
    assert settings.critical_queues == ["payment.critical", "other"]
    assert (settings.alert_backlog, settings.alert_failure_rate) == (1000, 0.2)
    assert settings.alert_webhooks == []


def test_webhooks_need_a_secret_and_real_urls() -> None:
    with pytest.raises(SettingsError, match="TASKHUB_ALERT_WEBHOOK_SECRET=<hidden>: must be set"):
        load_settings(alert_webhooks="https://hooks.example/a")
    with pytest.raises(SettingsError, match=r"TASKHUB_ALERT_WEBHOOKS.*not an http"):
        load_settings(alert_webhooks="ftp://hooks.example/a", alert_webhook_secret="s")
    with pytest.raises(SettingsError, match="TASKHUB_ALERT_FAILURE_RATE"):
        load_settings(alert_failure_rate=1.5)


def test_webhook_body_is_signed_with_its_timestamp() -> None:
    event = AlertEvent(
        id=7,
        raised_at=datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC),
        kind="backlog",
        severity="warning",
        message="queue emails has 1412 waiting jobs",
        details={"state": "resolved", "subject": "emails", "waiting": 1412},
    )
    body = webhook_body(event, timestamp=1_893_456_000)
    payload = json.loads(body)
    assert (payload["state"], payload["subject"], payload["timestamp"]) == (
        "resolved",
        "emails",
        1_893_456_000,
    )
    assert payload["details"] == {"waiting": 1412}
    expected = hmac.new(b"secret", body, hashlib.sha256).hexdigest()
    assert sign(body, "secret") == f"sha256={expected}"
