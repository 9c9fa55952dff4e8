"""The manufacturing example's settings, read from ``TASKHUB_MANUFACTURING_*``."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ManufacturingSettings(BaseSettings):
    """Where the mail server and the payment provider are."""

    model_config = SettingsConfigDict(
        env_prefix="TASKHUB_MANUFACTURING_", extra="ignore", frozen=True
    )

    smtp_host: str = Field(default="127.0.0.1", description="The mail server's host.")
    smtp_port: int = Field(default=8025, ge=1, le=65535, description="The mail server's port.")
    mail_from: str = Field(default="noreply@manufacturing.example", description="Sender.")
    smtp_timeout: float = Field(
        default=10, gt=0, le=300, description="Seconds per SMTP conversation step."
    )
    email_max_attempts: int = Field(
        default=5,
        ge=1,
        le=100,
        description="Delivery attempts of one email before retry_failed_emails gives up on it.",
    )
    bounce_maildir: str | None = Field(
        default=None,
        description="The Maildir the mail server delivers bounce reports (DSNs) to, read by "
        "manufacturing.process_email_bounces; unset: no bounces are processed.",
    )
    payment_base_url: str | None = Field(
        default=None, description="Base URL of the payment provider's HTTP API."
    )
    payment_token: SecretStr | None = Field(
        default=None, description="Bearer token for the payment provider (never logged)."
    )
    payment_timeout: float = Field(
        default=10, gt=0, le=300, description="Seconds per payment provider request."
    )
    payment_retry_rounds: int = Field(
        default=3,
        ge=0,
        le=100,
        description="Times manufacturing.retry_failed_payments queues a payment again after its "
        "job gave up (each round gets the full backoff again); 0: never.",
    )
    order_reminder_days: int = Field(
        default=3,
        ge=0,
        le=365,
        description="manufacturing.send_order_reminders reminds customers of matched or in "
        "production orders due within this many days (0: due today).",
    )
    order_reminder_every_hours: float = Field(
        default=24,
        gt=0,
        le=24 * 365,
        description="Hours before an order already reminded is reminded again.",
    )
    health_timeout: float = Field(
        default=5,
        gt=0,
        le=60,
        description="Seconds manufacturing.health_check waits for the mail server and the "
        "payment provider before it counts them down.",
    )
    disk_max_percent: float = Field(
        default=90,
        gt=0,
        le=100,
        description="Disk use of the data dir above which a system_resources alert is raised.",
    )
    memory_max_percent: float = Field(
        default=95,
        gt=0,
        le=100,
        description="Memory use above which a system_resources alert is raised (needs psutil).",
    )
    load_max_per_cpu: float = Field(
        default=4,
        gt=0,
        le=1000,
        description="1-minute load average per CPU above which a system_resources alert is raised.",
    )
    monitoring_retention_days: int = Field(
        default=30,
        ge=1,
        le=3650,
        description="Days health checks, performance metrics and dashboard metric buckets are "
        "kept.",
    )
    erp_base_url: str | None = Field(
        default=None,
        description="Base URL of the ERP HTTP API manufacturing.sync_external_data pages through "
        "(the ERP example's stand-in serves one).",
    )
    erp_token: SecretStr | None = Field(
        default=None, description="Bearer token for the ERP API (never logged)."
    )
    erp_timeout: float = Field(default=30, gt=0, le=600, description="Seconds per ERP request.")
    erp_page_size: int = Field(default=500, ge=1, le=10_000, description="Records per ERP page.")
    archive_after_days: int = Field(
        default=90,
        ge=1,
        le=36_500,
        description="Finished rows (emails, declined payments, shipped or cancelled orders) not "
        "changed for this many days are moved to the archive tables by "
        "manufacturing.archive_old_rows.",
    )
    archive_batch_size: int = Field(
        default=1_000,
        ge=1,
        le=100_000,
        description="Rows manufacturing.archive_old_rows moves per transaction.",
    )
