"""Fixtures for the core tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.core.store import Store, create_store
from app.settings import Settings


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    """A store client on the test's leg (memory or Valkey), closed after the test."""
    shared = create_store(settings.store)
    yield shared
    await shared.close()
