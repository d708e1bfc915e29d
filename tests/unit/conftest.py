"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from crdt.history import History
from crdt.kv import Engine, open_engine


@pytest.fixture
async def kv(tmp_path: Path) -> AsyncIterator[Engine]:
    """An engine on a fresh SQLite file."""
    async with open_engine(f"sqlite:///{tmp_path / 'weft.db'}") as engine:
        yield engine


@pytest.fixture
async def engines(tmp_path: Path) -> AsyncIterator[tuple[Engine, Engine]]:
    """Two engines on one SQLite file (two instances' views of one store)."""
    url = f"sqlite:///{tmp_path / 'weft.db'}"
    async with open_engine(url) as one, open_engine(url) as two:
        await History(one).init()
        yield one, two
