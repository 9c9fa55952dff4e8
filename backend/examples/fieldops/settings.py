"""Field operations' settings, read from ``TASKHUB_FIELDOPS_*`` when the app loads.

The Flask app reads them too (``create_app``), so the web process and the workers agree on
where reports live and where backups are copied.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class FieldopsSettings(BaseSettings):
    """Retention, the auto-lock hour, the reports folder and the off-site backup target."""

    model_config = SettingsConfigDict(env_prefix="TASKHUB_FIELDOPS_", extra="ignore", frozen=True)

    database_url: str | None = Field(
        default=None,
        description="The Flask app's database (postgresql://...); DATABASE_URL when unset.",
    )
    notification_retention_days: int = Field(
        default=30, ge=1, le=3650, description="Read notifications older than this are removed."
    )
    auto_lock_hour: int = Field(
        default=1,
        ge=0,
        le=23,
        description="Hour (in TASKHUB_TIMEZONE) the previous day's schedules are locked.",
    )
    reports_dir: Path | None = Field(
        default=None,
        description="Where PDF reports are written; <TASKHUB_DATA_DIR>/fieldops/reports.",
    )
    offsite_target: str | None = Field(
        default=None,
        description="Where each backup is copied: a directory (file:///srv/offsite or a path) "
        "or an S3-compatible bucket (s3://bucket/prefix). Unset: no off-site copy.",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="The S3-compatible endpoint (unset: AWS's own)."
    )
    s3_region: str = Field(default="us-east-1", description="The bucket's region.")
    s3_access_key_id: str | None = Field(default=None, description="S3 access key id.")
    s3_secret_access_key: SecretStr | None = Field(
        default=None, description="S3 secret access key (never logged)."
    )

    @field_validator("offsite_target")
    @classmethod
    def _check_target(cls, value: str | None) -> str | None:
        if not value:
            return None
        scheme = urlsplit(value).scheme
        if scheme not in ("", "file", "s3"):
            raise ValueError("must be a directory (a path or file:///...) or s3://bucket/prefix")
        if scheme == "s3" and not urlsplit(value).netloc:
            raise ValueError("s3:// needs a bucket name: s3://bucket/prefix")
        return value

    def reports_path(self, data_dir: Path) -> Path:
        return (self.reports_dir or data_dir / "fieldops" / "reports").resolve()
