"""The dashboard's settings: who may log in, and how long a session lasts."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from backend.dashboard.passwords import parse_users


class DashboardSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TASKHUB_DASHBOARD_", extra="ignore", frozen=True)

    users: str = Field(
        default="",
        repr=False,
        description="Users who log in with a password: comma-separated name=scope:hash, the "
        "hash printed by `taskhub hash-password` (scopes read, operate, admin). API tokens log "
        "in too.",
    )
    secret: SecretStr | None = Field(
        default=None,
        description="Key that signs session cookies (at least 32 characters). When unset, it "
        "is derived from the API tokens and the users' hashes: processes with the same "
        "settings share it, and changing a token or a password ends every session.",
    )
    session_hours: float = Field(
        default=8, gt=0, le=24 * 30, description="Hours a login lasts before asking again."
    )
    cookie_secure: bool | None = Field(
        default=None,
        description="Send the session cookie over HTTPS only. Unset: when the request came "
        "over HTTPS (behind a proxy, run uvicorn with --proxy-headers).",
    )

    @field_validator("users")
    @classmethod
    def _check_users(cls, value: str) -> str:
        parse_users(value)
        return value

    @field_validator("secret")
    @classmethod
    def _check_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("the dashboard secret must be at least 32 characters long")
        return value
