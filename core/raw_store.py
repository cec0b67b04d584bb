"""The raw object store: one S3 bucket, every object written with server-side encryption.

Keys follow `provider=oura/date=YYYY-MM-DD/user={userId}/event={eventId}.json`. Writes are
idempotent (same key, same bytes), so a retried archive is harmless.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import date
from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.files.storage import storages
from storages.backends.s3 import S3Storage


class RawStoreUnavailable(RuntimeError):
    """S3 could not be reached or refused the request."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    sha256: str
    size: int


def object_key(*, provider: str, day: date, user_id: str, event_id: str) -> str:
    return f"provider={provider}/date={day.isoformat()}/user={user_id}/event={event_id}.json"


def _storage() -> S3Storage:
    storage = storages["raw"]
    assert isinstance(storage, S3Storage)
    return storage


# Objects are small (an envelope, one page of documents) and S3 answers a PUT in well under
# a second. Against an S3 that accepts connections and never answers, one attempt with a 3 s
# read timeout gives up after ~8 s (botocore waits out the timeout on the 100-continue and
# again on the response): so a relay or normalizer holding a PUT still exits within 10 s of
# SIGTERM (core/tests/test_shutdown.py). Retries are the callers' (the relay's next pass, the
# consumer's nak), which a stop can interrupt.
_CLIENT_CONFIG = Config(
    connect_timeout=2, read_timeout=3, retries={"max_attempts": 1, "mode": "standard"}
)
_client: Any = None


def client() -> Any:
    """A boto3 client with short timeouts; S3 being down must not hang a worker."""
    global _client
    if _client is None:
        import boto3

        _client = boto3.client(
            "s3",
            endpoint_url=settings.S3_ENDPOINT_URL or None,
            region_name=settings.S3_REGION,
            aws_access_key_id=settings.S3_ACCESS_KEY_ID or None,
            aws_secret_access_key=settings.S3_SECRET_ACCESS_KEY or None,
            config=_CLIENT_CONFIG,
        )
    return _client


def reset_client() -> None:
    global _client
    _client = None


def _sse_params() -> dict[str, str]:
    params = {"ServerSideEncryption": settings.S3_SSE}
    if settings.S3_SSE_KMS_KEY_ID:
        params["SSEKMSKeyId"] = settings.S3_SSE_KMS_KEY_ID
    return params


def put(key: str, data: bytes) -> StoredObject:
    digest = hashlib.sha256(data).hexdigest()
    try:
        client().put_object(
            Bucket=settings.S3_BUCKET,
            Key=key,
            Body=data,
            ContentType="application/json",
            # S3 verifies this on receipt, so a corrupted upload is refused, not stored.
            ChecksumSHA256=base64.b64encode(hashlib.sha256(data).digest()).decode(),
            Metadata={"sha256": digest},
            **_sse_params(),
        )
    except (BotoCoreError, ClientError) as exc:
        raise RawStoreUnavailable(f"put failed: {type(exc).__name__}") from None
    return StoredObject(key=key, sha256=digest, size=len(data))


def get(key: str) -> bytes:
    try:
        response = client().get_object(Bucket=settings.S3_BUCKET, Key=key)
        return bytes(response["Body"].read())
    except (BotoCoreError, ClientError) as exc:
        raise RawStoreUnavailable(f"get failed: {type(exc).__name__}") from None


def head(key: str) -> dict[str, Any] | None:
    try:
        return dict(client().head_object(Bucket=settings.S3_BUCKET, Key=key))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
            return None
        raise RawStoreUnavailable(f"head failed: {type(exc).__name__}") from None
    except BotoCoreError as exc:
        raise RawStoreUnavailable(f"head failed: {type(exc).__name__}") from None


def delete_keys(keys: list[str]) -> int:
    """Delete these objects (missing ones count as deleted); returns how many were asked."""
    try:
        for start in range(0, len(keys), 1000):  # S3's DeleteObjects takes 1000 at most
            chunk = [{"Key": key} for key in keys[start : start + 1000]]
            client().delete_objects(Bucket=settings.S3_BUCKET, Delete={"Objects": chunk})
    except (BotoCoreError, ClientError) as exc:
        raise RawStoreUnavailable(f"delete failed: {type(exc).__name__}") from None
    return len(keys)


def _list(prefix: str, *, folders: bool) -> list[str]:
    found: list[str] = []
    options = {"Bucket": settings.S3_BUCKET, "Prefix": prefix} | (
        {"Delimiter": "/"} if folders else {}
    )
    try:
        for page in client().get_paginator("list_objects_v2").paginate(**options):
            if folders:
                found.extend(item["Prefix"] for item in page.get("CommonPrefixes", []))
            else:
                found.extend(item["Key"] for item in page.get("Contents", []))
    except (BotoCoreError, ClientError) as exc:
        raise RawStoreUnavailable(f"list failed: {type(exc).__name__}") from None
    return found


def list_keys(prefix: str) -> list[str]:
    """Every key under `prefix` (erasure sweeps and their verification)."""
    return _list(prefix, folders=False)


def list_folders(prefix: str) -> list[str]:
    """The next level of "folders" under `prefix` (e.g. each `date=.../` of a provider)."""
    return _list(prefix, folders=True)


def signed_url(key: str) -> str:
    """A short-lived GET URL (RAW_SIGNED_URL_TTL_S), for backoffice staff only."""
    return str(_storage().url(key))


def ping() -> None:
    try:
        client().head_bucket(Bucket=settings.S3_BUCKET)
    except (BotoCoreError, ClientError) as exc:
        raise RawStoreUnavailable(f"bucket check failed: {type(exc).__name__}") from None
