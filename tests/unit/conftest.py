"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fdb_double import use_fdb_double

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


@pytest.fixture(params=["sqlite", "fdb-double"])
async def history_on_each_engine(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[History]:
    """A history on a fresh SQLite file, then on the FoundationDB engine over the
    in-memory FDB test double."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'weft.db'}"
    else:
        double = use_fdb_double(monkeypatch)
        request.addfinalizer(double.stop)
        url = f"fdb://{tmp_path / 'double.cluster'}"
    async with open_engine(url) as kv:
        h = History(kv)
        await h.init()
        yield h
