"""The vendored contract data must stay the shared research snapshot, byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

VENDORED = Path(__file__).resolve().parent / "contract_data"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "oura"


@pytest.mark.skipif(
    not SHARED.exists(), reason="../shared/oura is not beside this checkout; nothing to compare"
)
def test_the_vendored_copy_equals_the_shared_snapshot() -> None:
    files = [p for d in ("fixtures", "examples") for p in (SHARED / d).rglob("*") if p.is_file()]
    for relative in ["openapi-1.37.json", *(str(p.relative_to(SHARED)) for p in files)]:
        assert (VENDORED / relative).read_bytes() == (SHARED / relative).read_bytes(), relative
