"""The asyncio half must really run on asyncio (a pytest-trio pitfall)."""

from __future__ import annotations

import pytest
import sniffio


@pytest.mark.anyio
async def test_backend_is_the_one_claimed(anyio_backend: str) -> None:
    assert sniffio.current_async_library() == anyio_backend


@pytest.mark.trio
async def test_trio_marked_tests_run_on_trio() -> None:
    assert sniffio.current_async_library() == "trio"
