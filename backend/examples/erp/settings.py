"""The ERP sync's settings, read from ``TASKHUB_ERP_*`` when the app loads.

Tasks get them with ``ctx.settings_of(ErpSettings)``, routers with
``request.app.state.apps.settings_of(ErpSettings)``; nothing else in taskhub reads them.
"""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ErpSettings(BaseSettings):
    """Where the ERP's HTTP API is, how to authenticate, how much to ask for at once."""

    model_config = SettingsConfigDict(env_prefix="TASKHUB_ERP_", extra="ignore", frozen=True)

    base_url: str | None = Field(
        default=None, description="Base URL of the ERP HTTP API the ERP sync pages through."
    )
    token: SecretStr | None = Field(
        default=None, description="Bearer token for the ERP API (never logged)."
    )
    page_size: int = Field(default=500, ge=1, le=10_000, description="Records per ERP page.")
    timeout: float = Field(default=30, gt=0, le=600, description="Seconds per ERP request.")

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")
