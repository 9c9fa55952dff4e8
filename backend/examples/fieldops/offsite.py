"""The off-site copy of each backup: a directory (another disk, a mounted share) or an
S3-compatible bucket, chosen by ``TASKHUB_FIELDOPS_OFFSITE_TARGET``.

The copy follows the local retention: a file retention deleted locally is deleted off-site
too, so the target holds what ``TASKHUB_BACKUP_KEEP`` / ``_KEEP_DAYS`` say and no more.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel

from backend.errors import TaskhubError
from backend.examples.fieldops.settings import FieldopsSettings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


class OffsiteCopyError(TaskhubError):
    """The backup was written locally but could not be copied off-site."""


class OffsiteCopy(BaseModel):
    target: str
    location: str
    size_bytes: int
    removed: list[str]


def s3_client(settings: FieldopsSettings) -> S3Client:
    """A client for the configured endpoint (AWS's own when none is set)."""
    secret = settings.s3_secret_access_key
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=secret.get_secret_value() if secret else None,
    )


def copy_offsite(
    settings: FieldopsSettings, backup: Path, retired: Sequence[str]
) -> OffsiteCopy | None:
    """Copy ``backup`` to the target and delete the ``retired`` files' copies; None when no
    target is set. Blocking (boto3, file copies): run it in a thread."""
    target = settings.offsite_target
    if target is None:
        return None
    parts = urlsplit(target)
    if parts.scheme == "s3":
        return _to_bucket(settings, target, backup, retired)
    directory = Path(parts.path if parts.scheme == "file" else target)
    return _to_directory(target, directory, backup, retired)


def _to_directory(
    target: str, directory: Path, backup: Path, retired: Sequence[str]
) -> OffsiteCopy:
    destination = directory / backup.name
    partial = destination.with_name(destination.name + ".partial")
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.copyfile(backup, partial)
        partial.chmod(0o600)
        partial.rename(destination)  # a file with the final name is always complete
        removed = []
        for name in retired:
            old = directory / Path(name).name
            if old.exists():
                old.unlink()
                removed.append(str(old))
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise OffsiteCopyError(
            f"off-site copy to {target} (TASKHUB_FIELDOPS_OFFSITE_TARGET) failed: "
            f"{exc.strerror or exc}"
        ) from None
    return OffsiteCopy(
        target=target,
        location=str(destination),
        size_bytes=destination.stat().st_size,
        removed=removed,
    )


def _to_bucket(
    settings: FieldopsSettings, target: str, backup: Path, retired: Sequence[str]
) -> OffsiteCopy:
    parts = urlsplit(target)
    bucket, prefix = parts.netloc, PurePosixPath(parts.path.lstrip("/"))
    key = str(prefix / backup.name)
    client = s3_client(settings)
    try:
        client.upload_file(str(backup), bucket, key)
        # The upload is checked, as pg_restore --list checks the local file.
        size = client.head_object(Bucket=bucket, Key=key)["ContentLength"]
        if size != backup.stat().st_size:
            raise OffsiteCopyError(
                f"off-site copy s3://{bucket}/{key} has {size} bytes, the backup "
                f"{backup.stat().st_size}"
            )
        removed = []
        for name in retired:
            old = str(prefix / Path(name).name)
            client.delete_object(Bucket=bucket, Key=old)
            removed.append(f"s3://{bucket}/{old}")
    except (BotoCoreError, ClientError, boto3.exceptions.S3UploadFailedError) as exc:
        raise OffsiteCopyError(
            f"off-site copy to {target} (TASKHUB_FIELDOPS_OFFSITE_TARGET, endpoint "
            f"{settings.s3_endpoint_url or 'AWS'}) failed: {exc}"
        ) from None
    return OffsiteCopy(
        target=target, location=f"s3://{bucket}/{key}", size_bytes=size, removed=removed
    )
