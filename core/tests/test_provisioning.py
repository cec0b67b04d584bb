from __future__ import annotations

import pytest
from django.conf import settings

from core import raw_store
from core.provisioning import provision_all

pytestmark = pytest.mark.django_db(transaction=True)


def test_provisioning_twice_changes_nothing_the_second_time() -> None:
    provision_all()
    second = provision_all()
    assert second.changes == []
    assert "stream HEALTH_RAW" in second.unchanged
    assert "bucket lifecycle" in second.unchanged


def test_bucket_has_default_encryption_and_180_day_expiry() -> None:
    provision_all()
    s3 = raw_store.client()
    encryption = s3.get_bucket_encryption(Bucket=settings.S3_BUCKET)
    rule = encryption["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    lifecycle = s3.get_bucket_lifecycle_configuration(Bucket=settings.S3_BUCKET)
    assert lifecycle["Rules"][0]["Expiration"]["Days"] == 180


def test_stored_objects_are_encrypted_and_checksummed() -> None:
    provision_all()
    stored = raw_store.put("provider=oura/date=2026-01-01/user=u1/event=e1.json", b'{"a":1}')
    head = raw_store.head(stored.key)
    assert head is not None
    assert head["ServerSideEncryption"] == "AES256"
    assert raw_store.get(stored.key) == b'{"a":1}'
    assert stored.sha256 == head["Metadata"]["sha256"]
