"""What RedactFilter and redact() take out of log records, and the plain-text fast path."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.observability import (
    _CREDENTIAL_PATTERNS,
    _PEOPLE_PATH,
    _PLAIN,
    _USER_IN_PATHS,
    RedactFilter,
    redact,
)
from core.pseudonyms import person_hash


@pytest.mark.parametrize(
    ("text", "secrets"),
    [
        ("GET /v1/oauth/oura/callback?code=abc123&state=xyz789", ["abc123", "xyz789"]),
        ("refresh_token=rt-1&client_secret=cs-2", ["rt-1", "cs-2"]),
        ('{"access_token": "at-3", "id_token":"it-4"}', ["at-3", "it-4"]),
        ("Authorization: Bearer eyJ.abc.def", ["eyJ.abc.def"]),
        ("GET /v1/health/person-42/oura/daily", ["person-42"]),
        ("PUT provider=oura/date=2026-01-01/user=person-42/event=e.json", ["person-42"]),
        ("user%3Dperson-42%2Fevent", ["person-42"]),
    ],
)
def test_credentials_and_people_in_text_are_scrubbed(text: str, secrets: list[str]) -> None:
    cleaned = redact(text)
    for secret in secrets:
        assert secret not in cleaned, secret


def test_a_user_id_in_a_path_becomes_its_keyed_hash() -> None:
    assert redact("/v1/health/person-42/oura/daily") == (
        f"/v1/health/{person_hash('person-42')}/oura/daily"
    )


# Plain text: random, and built from the words the patterns look for (so that a pattern
# matching, say, a bare `access_token` or a run of digits is found, not left to chance).
# Whatever holds _PEOPLE_PATH is not plain: the fast path sends it to the patterns.
_WORDS = ["access_token", "refresh_token", "code", "state", "client_secret", "bearer",
          "Bearer", "user", "3D", "2F", "v1", "health", "oura", "0", "7", "a", "Z", "-", "_",
          ".", "/", "/v1/", "/v1/healt", "h/", "/v1/health", "/v1/oura/"]  # fmt: skip
PLAIN_TEXT = st.one_of(
    st.from_regex(_PLAIN, fullmatch=True),
    st.lists(st.sampled_from(_WORDS), max_size=12).map("".join),
).filter(lambda text: _PEOPLE_PATH not in text)


@given(PLAIN_TEXT)
def test_no_pattern_can_match_plain_text_so_the_fast_path_changes_nothing(text: str) -> None:
    """redact() returns text of only `[A-Za-z0-9_./-]` without `/v1/health/` untouched,
    without running the patterns: true only while every pattern needs some other character
    or that path. A pattern added later that could match such text fails here."""
    for pattern in (*_CREDENTIAL_PATTERNS, *_USER_IN_PATHS):
        assert pattern.search(text) is None, pattern.pattern
    assert redact(text) == text


@pytest.mark.parametrize(
    ("path", "person"),
    [("/v1/health/person-42/oura/daily", "person-42"), ("x/v1/health/person-42", "person-42"),
     ("/v1/health/p.4_2-", "p.4_2-")],
)  # fmt: skip
def test_a_path_naming_a_person_is_not_taken_for_plain_text(path: str, person: str) -> None:
    assert _PLAIN.fullmatch(path)
    assert person not in redact(path)


@pytest.mark.parametrize("text", ["http_request", "webhook_accepted", "relay_batch", "a.b-c_9", ""])
def test_event_names_pass_unchanged(text: str) -> None:
    assert redact(text) == text


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, message, None, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_sensitive_extra_fields_are_replaced_whatever_their_case() -> None:
    record = _record("oauth_exchange", token="t-1", Authorization="Bearer b-2", status=200)
    assert RedactFilter().filter(record)
    fields = vars(record)
    assert fields["token"] == "[redacted]"
    assert fields["Authorization"] == "[redacted]"
    assert fields["status"] == 200


def test_a_record_without_sensitive_fields_keeps_them_all() -> None:
    record = _record("http_request", method="POST", path="/v1/webhooks/oura", status=202)
    before = dict(vars(record))
    assert RedactFilter().filter(record)
    assert vars(record) == before


def test_the_message_is_scrubbed_and_its_arguments_dropped() -> None:
    record = logging.LogRecord(
        "t", logging.INFO, __file__, 1, "fetch %s", ("https://x/cb?code=c-9",), None
    )
    assert RedactFilter().filter(record)
    assert "c-9" not in record.getMessage()
    assert record.args is None
