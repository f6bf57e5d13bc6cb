"""The specs in tests/contract/openapi are 8x8's own, unchanged: the same as in ../shared when present."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.contract.openapi_contract import GATEWAY_SPEC, V2_SPEC

SHARED = Path(__file__).resolve().parents[3] / "shared" / "8x8" / "openapi"


@pytest.mark.parametrize("vendored", [V2_SPEC, GATEWAY_SPEC], ids=lambda p: p.name)
def test_the_vendored_spec_is_8x8s(vendored: Path) -> None:
    original = SHARED / vendored.name
    if original.exists():  # beside a checkout of the project; a plain clone has only the copy
        assert vendored.read_bytes() == original.read_bytes()
    assert vendored.stat().st_size > 50_000
