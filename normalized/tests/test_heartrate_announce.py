"""A heart rate page is announced like any other page: by days, since samples have no ids."""

from __future__ import annotations

import json

import pytest

from core.consumers import MessageMeta
from core.messages import normalized_metrics_subject
from normalized.consumers import handle_raw_message
from normalized.models import HeartRateSample
from normalized.tests.normalizer_helpers import (
    connect_user,
    fixture_documents,
    page_envelope,
    stream_messages,
    subject_of,
)
from oura_simulator import OuraSimulator

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_streams")]


def test_a_heart_rate_page_announces_the_days_it_wrote(oura: OuraSimulator) -> None:
    conn = connect_user(oura)
    samples = fixture_documents("heartrate")
    envelope = page_envelope(conn, "heartrate", samples)
    meta = MessageMeta("normalizer_pages", subject_of(envelope), "HEALTH_RAW", 1, 1)

    handle_raw_message(json.dumps(envelope).encode(), meta)

    written_days = {
        sample.timestamp.date() for sample in HeartRateSample.objects.filter(user_id=conn.user_id)
    }
    assert written_days
    (announced,) = [
        json.loads(data) for data in stream_messages(normalized_metrics_subject(conn.user_id))
    ]
    assert announced["dataType"] == "heartrate"
    assert announced["ids"] == []
    assert {day for day in announced["days"]} == {day.isoformat() for day in written_days}
    # Ids and days only: no sample value travels on the bus.
    assert "bpm" not in json.dumps(announced)
