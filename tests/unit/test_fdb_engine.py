"""The FoundationDB engine without a cluster: URLs, the missing-library error, operands.

Its behaviour against a real cluster is the contract suite (``tests/contract``), which
runs the FDB engine whenever ``WEFT_FDB_CLUSTER_FILE`` names a cluster file.
"""

from __future__ import annotations

import ctypes.util
import os
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt.errors import StoreError, TransactionTooLarge
from crdt.kv import open_engine
from crdt.kv.base import add_le
from crdt.kv.fdb import FDBEngine, add_param, fdb_error

HAVE_LIBFDB = bool(ctypes.util.find_library("fdb_c") or os.environ.get("WEFT_FDB_CLUSTER_FILE"))


def test_fdb_urls_name_the_cluster_file() -> None:
    default = open_engine("fdb://")
    assert isinstance(default, FDBEngine)
    assert (default.cluster_file, default.url) == (None, "fdb://")
    named = open_engine("fdb:///etc/foundationdb/fdb.cluster?timeout=5")
    assert isinstance(named, FDBEngine)
    assert named.cluster_file == "/etc/foundationdb/fdb.cluster"
    assert named.url == "fdb:///etc/foundationdb/fdb.cluster"
    assert named.timeout == 5.0
    largest = open_engine("fdb://?timeout=2147483")  # INT_MAX ms, rounded down to seconds
    assert isinstance(largest, FDBEngine) and largest.timeout * 1000 <= 2**31 - 1


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("fdb://somehost/fdb.cluster", "has a host"),
        ("fdb://?retries=3", "unknown fdb store option"),
        ("fdb://?timeout=soon", "timeout must be seconds"),
        ("fdb://?timeout=0", "timeout must be positive"),
        ("fdb://?timeout=nan", "timeout must be positive"),
        ("fdb://?timeout=inf", "timeout must be a finite number of seconds, at most 2,147,483"),
        ("fdb:///x.cluster?timeout=2147484", "at most 2,147,483"),
        ("fdb:///x.cluster?timeout=1e300", "at most 2,147,483"),
    ],
)
def test_bad_fdb_urls_are_clear_errors(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        open_engine(url)


@pytest.mark.skipif(HAVE_LIBFDB, reason="libfdb_c is installed here")
async def test_opening_without_libfdb_c_is_a_clear_store_error() -> None:
    engine = open_engine("fdb://")
    with pytest.raises(StoreError, match="libfdb_c") as raised:
        async with engine:
            pass
    assert "sqlite:///" in str(raised.value)
    with pytest.raises(StoreError, match="not open"):
        await engine.transact(lambda tr: tr.set(b"k", b"v"))


@given(st.integers(0, 2**64 - 1), st.integers(-(2**63), 2**63 - 1))
def test_add_operand_matches_the_counter_semantics(old: int, delta: int) -> None:
    """FDB adds the operand as an unsigned little-endian integer, wrapping at 2**64."""
    fdb_result = (old + int.from_bytes(add_param(delta), "little")) % 2**64
    assert fdb_result.to_bytes(8, "little") == add_le(old.to_bytes(8, "little"), delta)


@dataclass
class _FDBError(Exception):
    code: int
    description: str


@pytest.mark.parametrize("code", [2101, 2102, 2103])
def test_fdb_size_errors_become_transaction_too_large(code: int) -> None:
    assert isinstance(fdb_error(_FDBError(code, "too large"), 60), TransactionTooLarge)


def test_other_fdb_errors_name_their_code() -> None:
    timed_out = fdb_error(_FDBError(1031, "Operation aborted"), 7)
    assert "timed out after 7 s" in str(timed_out)
    other = fdb_error(_FDBError(1020, "Transaction not committed"), 60)
    assert type(other) is StoreError and "1020" in str(other)


class _TooNewBindings:
    """An ``fdb`` module whose client library refuses the bindings' header version,
    with the message the bindings give (fdb/__init__.py, api_version)."""

    def is_api_version_selected(self) -> bool:
        return False

    def api_version(self, version: int) -> None:
        raise RuntimeError(
            "This version of the FoundationDB Python binding is not supported by the "
            "installed FoundationDB C library. The binding requires a library that "
            "supports API version 800, but the installed library supports a maximum "
            "version of 730."
        )


def test_bindings_newer_than_libfdb_c_are_named_with_the_fix() -> None:
    """A 7.3 libfdb_c refuses the 8.0 bindings (header version 800 > 730): the error
    names the installed bindings' version and says they must not be newer than the
    client library, and how to install matching ones (not "7.1 or newer" alone)."""
    from importlib.metadata import version

    from crdt.kv.fdb import select_api

    with pytest.raises(StoreError) as raised:
        select_api(_TooNewBindings())
    message = str(raised.value)
    assert f"foundationdb {version('foundationdb')}" in message
    assert "must not be newer than" in message
    assert "pip install 'foundationdb==" in message
    assert "maximum version of 730" in message and "sqlite:///" in message
