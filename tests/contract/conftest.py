"""The ``engine`` fixture: every contract test runs once per KV engine.

- ``sqlite``: a fresh file in ``tmp_path``.
- ``sqlite-no-returning``: the same, with the engine's commit counter bumped without
  ``UPDATE ... RETURNING``, as it is on SQLite before 3.35 (this machine's is newer:
  the fixture turns ``crdt.kv.sqlite._RETURNING`` off; a second process keeps it).
- ``fdb``: the cluster named by ``WEFT_FDB_CLUSTER_FILE`` (skipped, with that reason, when
  the variable is unset). The suite clears the whole database before and after each
  test, so it refuses a database that holds keys without the suite's scratch marker:
  point the variable at a cluster meant for tests.
- ``fdb-double``: the FoundationDB engine over ``fdb_double.FDBDouble``, an in-memory test
  double of the ``fdb`` module (libfdb_c cannot be installed here). It runs the engine's
  own code, not FoundationDB: see ``fdb_double.py`` for what it models. The fixture swaps
  ``crdt.kv.fdb.load_fdb`` for one handing the double to ``select_api`` (monkeypatch; the
  engine's API-version selection still runs). Tests that need a second process cannot share an in-memory double and are
  skipped for it by name (``NEEDS_ANOTHER_PROCESS``); a new such test fails loudly here
  (its worker cannot load libfdb_c) until it is added to that list.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fdb_double import FDBDouble, use_fdb_double

from crdt.kv import Engine, Transaction, open_engine
from crdt.kv import sqlite as sqlite_module

FDB_ENV = "WEFT_FDB_CLUSTER_FILE"
SCRATCH_MARKER = b"\x00weft-contract-suite-scratch"


def _fdb_marks() -> list[pytest.MarkDecorator]:
    path = os.environ.get(FDB_ENV)
    if not path:
        return [pytest.mark.fdb, pytest.mark.skip(reason=f"{FDB_ENV} not set")]
    if not os.path.isfile(path):
        return [pytest.mark.fdb, pytest.mark.skip(reason=f"{FDB_ENV}={path} is not a file")]
    return [pytest.mark.fdb]


def _claim_scratch(tr: Transaction) -> None:
    first = tr.get_range(b"", b"\xff", limit=1)
    if first and first[0][0] != SCRATCH_MARKER:
        raise RuntimeError(
            f"the FoundationDB database behind {FDB_ENV} holds data; the contract suite "
            "clears its database, so it only runs on an empty (scratch) cluster"
        )
    tr.clear_range(b"", b"\xff")
    tr.set(SCRATCH_MARKER, b"")


def _wipe(tr: Transaction) -> None:
    tr.clear_range(b"", b"\xff")
    tr.set(SCRATCH_MARKER, b"")


NEEDS_ANOTHER_PROCESS = {
    "test_conflicting_read_modify_writes_are_retried",
    "test_watch_fires_on_a_commit_from_another_process",
    "test_concurrent_writer_processes_lose_nothing",
    "test_kill_9_mid_stream_keeps_every_commit_and_no_partial_one",
}


@pytest.fixture(
    params=["sqlite", "sqlite-no-returning", pytest.param("fdb", marks=_fdb_marks()), "fdb-double"]
)
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Engine]:
    """An open engine on an empty store; ``engine.url`` opens the same store elsewhere."""
    double: FDBDouble | None = None
    if request.param == "fdb-double":
        if request.node.originalname in NEEDS_ANOTHER_PROCESS:
            pytest.skip("needs a second process; an in-memory FDB double lives in one")
        double = use_fdb_double(request.getfixturevalue("monkeypatch"))
        url = f"fdb://{tmp_path / 'double.cluster'}"
    elif request.param.startswith("sqlite"):
        if request.param == "sqlite-no-returning":
            request.getfixturevalue("monkeypatch").setattr(sqlite_module, "_RETURNING", False)
        url = f"sqlite:///{tmp_path / 'kv.db'}"
    else:
        url = f"fdb://{os.path.abspath(os.environ[FDB_ENV])}"
    async with open_engine(url) as kv:
        if request.param == "fdb":
            await kv.transact(_claim_scratch)
        yield kv
        if request.param == "fdb":
            await kv.transact(_wipe)
    if double is not None:
        double.stop()
