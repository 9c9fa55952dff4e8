"""The schedule sync's settings, read from ``TASKHUB_SCHEDULING_*`` when the app loads.

Tasks get them with ``ctx.settings_of(SchedulingSettings)``; nothing else in taskhub reads
them.
"""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SchedulingSettings(BaseSettings):
    """Where the external scheduling API is and how to reach it."""

    model_config = SettingsConfigDict(env_prefix="TASKHUB_SCHEDULING_", extra="ignore", frozen=True)

    base_url: str | None = Field(
        default=None, description="Base URL of the external scheduling API schedules sync to."
    )
    token: SecretStr | None = Field(
        default=None, description="Bearer token for the external scheduling API (never logged)."
    )
    timeout: float = Field(
        default=30, gt=0, le=600, description="Seconds per scheduling API request."
    )

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")
