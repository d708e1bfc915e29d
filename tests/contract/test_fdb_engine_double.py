"""The FoundationDB engine's own paths, run over FDBDouble (a test double, not FoundationDB).

What these show: ``crdt/kv/fdb.py`` drives the ``fdb`` API the way our reading of the
bindings says it must (retry loop, error mapping, versionstamps, watches). What they
cannot show: that FoundationDB behaves like the double. See ``fdb_double.py``.
"""

from __future__ import annotations

import ast
import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import fdb
import fdb.fdboptions
import pytest
from fdb_double import (
    Cluster,
    Database,
    FDBDouble,
    Transaction,
    ValueFuture,
    VoidFuture,
    use_fdb_double,
)
from pycrdt import Doc, Text

from crdt import keys
from crdt.appending import doc_cost, update_cost
from crdt.errors import StoreError, TransactionTooLarge
from crdt.history import MAX_UPDATE_BYTES, Append, History
from crdt.kv import Engine, open_engine
from crdt.kv import Transaction as KVTransaction
from crdt.kv.base import read_counter
from crdt.records import CHUNK

WAIT = 10.0


@pytest.fixture
def double(monkeypatch: pytest.MonkeyPatch) -> Iterator[FDBDouble]:
    d = use_fdb_double(monkeypatch)
    yield d
    d.stop()


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"fdb://{tmp_path / 'double.cluster'}"


@pytest.fixture
async def kv(double: FDBDouble, url: str) -> AsyncIterator[Engine]:
    async with open_engine(url) as engine:
        yield engine


def cluster_of(double: FDBDouble, url: str) -> Cluster:
    return double.cluster(url[len("fdb://") :])


def k(*items: keys.Element) -> bytes:
    return keys.pack(items)


def text_update(text: str) -> bytes:
    doc: Doc[Any] = Doc()
    doc["content"] = content = Text()
    content += text
    return doc.get_update()


# --- the double offers nothing the real bindings lack --------------------------------


def _real_methods() -> dict[str, set[str]]:
    """Method names per class in the installed bindings' fdb/impl.py (read, not run:
    importing it needs libfdb_c)."""
    tree = ast.parse(Path(fdb.__file__).with_name("impl.py").read_text())
    methods: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            methods[node.name] = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
    return methods


def _public(cls: type) -> set[str]:
    return {name for name in vars(cls) if not name.startswith("_")}


def test_the_double_offers_only_names_the_real_bindings_define() -> None:
    real = _real_methods()
    mutations = set(fdb.fdboptions.MutationType)  # Transaction gets one method per type
    transaction = real["Transaction"] | real["TransactionRead"] | mutations
    assert _public(Transaction) - {"options", "snapshot"} <= transaction
    assert "self.snapshot = " in Path(fdb.__file__).with_name("impl.py").read_text()
    assert _public(Database) - {"options", "cluster"} <= real["Database"]
    future = real["Future"]
    assert _public(VoidFuture) <= future | real["FutureVoid"]
    assert _public(ValueFuture) <= future | real["LazyFuture"] | real["Value"] | {"value"}
    options = {"set_" + name for name in fdb.fdboptions.TransactionOption}
    assert {"set_timeout"} <= options
    assert "set_transaction_timeout" in {"set_" + n for n in fdb.fdboptions.DatabaseOption}
    assert "retryable" in fdb.fdboptions.ErrorPredicate
    assert fdb.fdboptions.StreamingMode["want_all"][0] == FDBDouble.StreamingMode.want_all


# --- retries -------------------------------------------------------------------------


async def test_a_conflict_makes_the_engine_retry_and_the_retry_succeeds(
    double: FDBDouble, url: str, kv: Engine
) -> None:
    """A read-modify-write whose key another transaction writes between its read and
    its commit fails with 1020 at commit; the engine runs it again, and the second run
    sees the other write."""
    await kv.transact(lambda tr: tr.set(k("n"), (1).to_bytes(8, "little")))
    read_once, other_done = threading.Event(), threading.Event()
    seen: list[int] = []

    def increment(tr: KVTransaction) -> None:
        value = read_counter(tr.get(k("n")))
        seen.append(value)
        read_once.set()
        assert other_done.wait(WAIT)
        tr.set(k("n"), (value + 1).to_bytes(8, "little"))

    running = asyncio.ensure_future(kv.transact(increment))
    assert await asyncio.to_thread(read_once.wait, WAIT)
    await kv.transact(lambda tr: tr.set(k("n"), (10).to_bytes(8, "little")))
    other_done.set()
    await asyncio.wait_for(running, WAIT)
    assert seen == [1, 10]  # two attempts: the second read the other commit
    assert read_counter(await kv.read(lambda tr: tr.get(k("n")))) == 11
    stats = cluster_of(double, url).stats
    assert stats["conflicts"] == 1 and stats["on_error:1020"] == 1


async def test_concurrent_read_modify_writes_add_up(
    double: FDBDouble, url: str, kv: Engine
) -> None:
    """The in-process half of the contract's read-modify-write test (its other half needs
    other processes): every conflict costs exactly one more run, and nothing is lost."""
    runs = 0
    lock = threading.Lock()

    def increment(tr: KVTransaction) -> None:
        nonlocal runs
        with lock:
            runs += 1
        value = read_counter(tr.get(k("rmw")))
        time.sleep(0.001)  # widen the window between read and commit
        tr.set(k("rmw"), (value + 1).to_bytes(8, "little"))

    await asyncio.gather(*(kv.transact(increment) for _ in range(60)))
    assert read_counter(await kv.read(lambda tr: tr.get(k("rmw")))) == 60
    conflicts = cluster_of(double, url).stats["conflicts"]
    assert conflicts > 0
    assert runs == 60 + conflicts


async def test_a_too_old_read_is_run_again(double: FDBDouble, url: str, kv: Engine) -> None:
    await kv.transact(lambda tr: tr.set(k("r"), b"v"))
    cluster_of(double, url).inject(1007, at="read")
    attempts = 0

    def read(tr: object) -> bytes | None:
        nonlocal attempts
        attempts += 1
        return tr.get(k("r"))  # type: ignore[attr-defined, no-any-return]

    assert await kv.read(read) == b"v"
    assert attempts == 2
    assert cluster_of(double, url).stats["on_error:1007"] == 1


async def test_a_read_longer_than_fdb_s_transaction_limit_is_refused_not_retried(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    """A read that takes longer than FDB's 5 s (the double's window: 0.2 s) fails with
    1007 on every run: after TOO_OLD_LIMIT runs in a row the engine says so, instead of
    rerunning it until the timeout and reporting "timed out after 60 s of retries"."""
    from crdt.kv.fdb import TOO_OLD_LIMIT

    double = use_fdb_double(monkeypatch, mvcc_window=0.2)
    attempts = 0

    def slow_read(tr: Any) -> list[bytes | None]:
        nonlocal attempts
        attempts += 1
        out = []
        for i in range(30):
            out.append(tr.get(k("slow", i)))
            time.sleep(0.01)
        return out

    async with open_engine(f"{url}?timeout=4") as kv:
        started = time.monotonic()
        with pytest.raises(StoreError, match="5-second transaction limit") as caught:
            await kv.read(slow_read)
        assert time.monotonic() - started < 3
        assert "slow_read" in str(caught.value) and "timed out" not in str(caught.value)
        assert attempts == TOO_OLD_LIMIT
        assert cluster_of(double, url).stats["on_error:1007"] == TOO_OLD_LIMIT - 1
    double.stop()


async def test_a_project_cut_at_a_time_reads_its_documents_over_several_transactions(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    """A project at a time reads each document's time index, one range read (a round
    trip on FDB) after another. In one transaction, a project of a few thousand
    documents outlived FDB's 5 seconds (1007 on every run); here 150 documents at 2 ms
    a round trip against a 0.2 s window. The reads are spread over transactions."""
    from crdt import versions

    double = use_fdb_double(monkeypatch, mvcc_window=0.2, range_latency=0.002)
    monkeypatch.setattr(versions, "CUT_PAGE", 25)
    async with open_engine(url) as kv:
        history = History(kv)
        await history.init()
        docs = [await history.doc("acme", "site", f"{n}.md", create=True) for n in range(150)]
        appended = await history.append([Append(d, text_update(d.path)) for d in docs])
        time.sleep(0.002)  # a later wall-clock millisecond than the appends'
        at = versions.Version(ms=time.time_ns() // 1_000_000, label="now")
        cut = await versions.cut_at(history, "acme", "site", at)
        assert cut.versionstamp == max(a.versionstamp for a in appended)
        stamp = versions.Version(stamp=appended[0].versionstamp, label="first")
        assert (await versions.cut_at(history, "acme", "site", stamp)).versionstamp == stamp.stamp
    double.stop()


async def test_a_projects_change_marker_is_the_append_s_commit_on_fdb(kv: Engine) -> None:
    """The document list's ETag: a versionstamped value (FDB completes its first 10
    bytes), read back as the append's commit versionstamp and 8 random bytes."""
    history = History(kv)
    await history.init()
    doc = await history.doc("acme", "site", "a.md", create=True)
    [appended] = await history.append([Append(doc, text_update("a"))])
    marker, infos = await history.docs_unless("acme", "site", ())
    assert marker is not None and len(marker) == 18
    assert marker[:10] == appended.versionstamp.tr_version
    assert [info.path for info in infos or []] == ["a.md"]
    assert await history.docs_unless("acme", "site", {marker}) == (marker, None)


async def test_what_changed_since_a_marker_is_read_from_the_change_index_on_fdb(
    kv: Engine,
) -> None:
    """The change index's entries are versionstamped keys (FDB completes them at
    commit): a delta since a marker lists the documents appended to after it, and a
    marker whose random bytes no entry of its commit holds gets the whole list."""
    history = History(kv)
    await history.init()
    a = await history.doc("acme", "site", "a.md", create=True)
    b = await history.doc("acme", "site", "b.md", create=True)
    await history.append([Append(a, text_update("a")), Append(b, text_update("b"))])
    since = (await history.docs_since("acme", "site", None)).marker
    assert since is not None
    await history.append([Append(b, text_update("b2"))])
    listed = await history.docs_since("acme", "site", since)
    assert not listed.complete and [i.path for i in listed.infos or []] == ["b.md"]
    other = await history.docs_since("acme", "site", since[:10] + bytes(8))
    assert other.complete and [i.path for i in other.infos or []] == ["a.md", "b.md"]


async def test_history_docs_reads_each_document_s_metadata_in_one_batch(
    monkeypatch: pytest.MonkeyPatch, kv: Engine
) -> None:
    """History.docs() issues every document's four reads at once (get_many), not four
    round trips per document one after another: on FDB the whole listing must fit in
    one 5-second transaction."""
    from crdt.kv.fdb import _Reader

    history = History(kv)
    await history.init()
    stamps, sizes = {}, {}
    for path in ("a.md", "b.md", "c/d.md"):
        doc = await history.doc("acme", "site", path, create=True)
        update = text_update(path)  # its size varies with the random client id
        [appended] = await history.append([Append(doc, update)])
        stamps[path], sizes[path] = appended.versionstamp, len(update)
    await history.doc("acme", "site", "empty.md", create=True)  # no update yet
    serial = 0
    get = _Reader.get

    def counting_get(self: _Reader, key: bytes) -> bytes | None:
        nonlocal serial
        serial += 1
        return get(self, key)

    monkeypatch.setattr(_Reader, "get", counting_get)
    infos = {info.path: info for info in await history.docs("acme", "site")}
    assert serial == 0
    for path, stamp in stamps.items():
        assert infos[path].head == stamp and infos[path].count == 1
        assert infos[path].size == sizes[path]
    assert set(infos) <= {*stamps, "empty.md"}


# --- commit_unknown_result -----------------------------------------------------------


async def test_commit_unknown_result_is_retried_and_history_appends_once(
    double: FDBDouble, url: str, kv: Engine
) -> None:
    """1021: the commit may have happened. FDB's retry loop runs the function again; weft
    relies on the function being idempotent. History's append is (its idempotency key
    is the update's blake3): the second run finds the update logged and writes nothing,
    so the update is in the log once and the caller gets its versionstamp. Not marked
    ``duplicate``: the commit that stored it wrote this append's random bytes in its
    change-index entry, so it was this append's earlier run, not another's (it came
    back as a repeat before 2026-12-05: the writer did not count it towards a snapshot,
    and a branch took it for both sides')."""
    history = History(kv)
    await history.init()
    doc = await history.doc("acme", "site", "a.txt", create=True)
    cluster = cluster_of(double, url)

    hello = text_update("hello")
    cluster.inject(1021, applied=True)  # committed, then reported as unknown
    [first] = await history.append([Append(doc, hello, user="u")])
    assert not first.duplicate
    [record] = await history.updates(doc)
    assert record.versionstamp == first.versionstamp
    assert record.update == hello

    cluster.inject(1021, applied=False)  # not committed, reported as unknown
    [second] = await history.append([Append(doc, text_update("world"), user="u")])
    assert not second.duplicate
    assert [r.versionstamp for r in await history.updates(doc)] == [
        first.versionstamp,
        second.versionstamp,
    ]
    assert cluster.stats["on_error:1021"] == 2

    # A real repeat stays one, retried or not: with an update this append stores.
    cluster.inject(1021, applied=True)
    again = await history.append(
        [Append(doc, hello, user="u"), Append(doc, text_update("!"), user="u")]
    )
    assert [a.duplicate for a in again] == [True, False]
    assert again[0].versionstamp == first.versionstamp
    assert cluster.stats["on_error:1021"] == 3


async def test_commit_unknown_result_repeats_a_non_idempotent_function(
    double: FDBDouble, url: str, kv: Engine
) -> None:
    """Why transaction functions must be idempotent (crdt/kv/base.py): a blind atomic add
    whose commit happened but was reported unknown is applied twice."""
    cluster_of(double, url).inject(1021, applied=True)
    await kv.transact(lambda tr: tr.add(k("blind"), 1))
    assert read_counter(await kv.read(lambda tr: tr.get(k("blind")))) == 2


# --- limits and timeouts -------------------------------------------------------------


async def test_fdb_s_own_size_accounting_is_mapped_to_transaction_too_large(
    double: FDBDouble, url: str, kv: Engine
) -> None:
    """weft counts keys and values (5 MB here); FDB also counts each write's conflict
    range (twice the key again): 15 MB, over 10 MB. Its 2101 is TransactionTooLarge and
    is not retried."""

    def big(tr: KVTransaction) -> None:
        for i in range(1000):
            tr.set(k("big", i).ljust(5000, b"."), b"")

    with pytest.raises(TransactionTooLarge, match="exceeds byte limit"):
        await kv.transact(big)
    assert await kv.read(lambda tr: tr.get_range(*keys.prefix_range(k("big")))) == []
    assert cluster_of(double, url).stats["on_error:2101"] == 0


async def test_an_update_just_under_history_s_limit_fits_fdb_s(kv: Engine) -> None:
    """History chunks records under 100 kB per value, and its largest update (9 MB) stays
    under FDB's 10 MB with FDB's own accounting (conflict ranges included)."""
    history = History(kv)
    await history.init()
    doc = await history.doc("acme", "site", "big.txt", create=True)
    update = text_update("x" * (MAX_UPDATE_BYTES - 200))
    assert MAX_UPDATE_BYTES - 1000 < len(update) <= MAX_UPDATE_BYTES
    [appended] = await history.append([Append(doc, update)])
    begin, end = keys.prefix_range(doc.key("u"))
    parts = await kv.read(lambda tr: tr.get_range(begin, end))
    assert len(parts) == -(-sum(len(v) for _, v in parts) // CHUNK) >= 100
    assert all(len(value) <= CHUNK for _, value in parts)
    [record] = await history.updates(doc)
    assert record.versionstamp == appended.versionstamp and record.update == update


def commit_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size FDB counts (the double's reckoning) of every commit that writes, from now on."""
    sizes: list[int] = []
    commit = Transaction._commit_writes

    def counted(tr: Transaction) -> None:
        sizes.append(tr._size + sum(len(b) + len(e) for b, e in tr._read_ranges))
        commit(tr)

    monkeypatch.setattr(Transaction, "_commit_writes", counted)
    return sizes


async def test_a_group_commit_touching_thousands_of_documents_fits_fdb_s_limit(
    monkeypatch: pytest.MonkeyPatch, kv: Engine
) -> None:
    """The writer's largest group commit, one small update in each of 4,000 documents
    (of a project with a 64-character name), is 0.5 MB of updates, but FDB also counts
    every key written and every conflict range: 13 MB in one transaction, which FDB
    refused (2101) for the whole batch. History splits it by what FDB counts."""
    history = History(kv)
    await history.init()
    project = "p" * 64
    docs = [await history.doc("acme", project, f"{n}.md", create=True) for n in range(4000)]
    updates = [text_update("hello") for _ in docs]
    sizes = commit_sizes(monkeypatch)
    appended = await history.append([Append(d, u, "u") for d, u in zip(docs, updates, strict=True)])
    stamps = [a.versionstamp for a in appended]
    assert stamps == sorted(set(stamps))  # in the order given: the parts one after the other
    assert not any(a.duplicate for a in appended)
    assert len(sizes) >= 2 and max(sizes) <= 10_000_000
    for n in (0, 1999, 3999):
        [record] = await history.updates(docs[n])
        assert (record.versionstamp, record.update) == (appended[n].versionstamp, updates[n])


@pytest.mark.parametrize("legacy", [False, True])
async def test_history_s_estimate_of_an_append_bounds_what_fdb_counts(
    monkeypatch: pytest.MonkeyPatch, kv: Engine, legacy: bool
) -> None:
    """``update_cost`` and ``doc_cost`` (what History splits appends by) are upper bounds
    of the double's reckoning of FDB's: new and known documents, long names and paths,
    many updates of one device, a chunked update, a deletion-only update, a repeat,
    idempotency entries looked up under their pre-1.3 keys too."""
    history = History(kv)
    await history.init()
    history.legacy_idempotency = legacy
    path = "/".join(["d" * 250] * 4)
    docs = [await history.doc("acme", "p" * 64, f"{path}{n}", create=True) for n in range(3)]
    docs.append(await history.doc("acme", "s", "a.md", create=True))
    await history.append([Append(docs[0], text_update("known document"))])
    device: Doc[Any] = Doc()
    device["content"] = content = Text()
    runs = []
    for n in range(20):
        content += f"edit {n} "
        runs.append(device.get_update())
    del content[0:4]
    deletion = device.get_update(device.get_state())  # structs: none; deletions: some
    big = text_update("x" * 250_000)
    user, client, session = "ü" * 300, "c" * 64, "instance/s" * 10
    batches = [
        [Append(docs[0], u, user, client, session) for u in runs],
        [Append(d, text_update("one"), user) for d in docs],
        [Append(docs[1], big), Append(docs[2], deletion), Append(docs[3], big)],
    ]
    sizes = commit_sizes(monkeypatch)
    for items in batches:
        await history.append(items)
        estimate = sum(map(update_cost, items)) + sum(
            doc_cost(d) for d in {item.doc.space: item.doc for item in items}.values()
        )
        assert sizes[-1] <= estimate < 4 * sizes[-1] + 10_000


async def test_the_timeout_bounds_the_retry_loop(double: FDBDouble, url: str) -> None:
    """Every commit conflicts (injected); the engine retries until the engine's
    timeout (``?timeout=``) ends the loop with 1031, reported as StoreError."""
    async with open_engine(f"{url}?timeout=0.3") as kv:
        cluster_of(double, url).inject(1020, count=1_000_000)
        started = time.monotonic()
        with pytest.raises(StoreError, match=r"timed out after 0\.3 s") as caught:
            await kv.transact(lambda tr: tr.set(k("t"), b""))
        assert 0.25 < time.monotonic() - started < 5
        assert not isinstance(caught.value, TransactionTooLarge)
        # (It may say "may or may not have committed": when the timeout lands in a
        # commit() call, FDB cannot tell, so neither can the engine. Flaky otherwise.)
        assert cluster_of(double, url).stats["on_error:1020"] > 5


async def test_engines_on_one_cluster_file_keep_their_own_timeouts(
    double: FDBDouble, url: str
) -> None:
    """fdb.open returns one database object per cluster file (the double too): a
    timeout set on it would be the last engine's for both. Each engine's timeout bounds
    its own transactions."""
    async with open_engine(f"{url}?timeout=0.3") as short, open_engine(f"{url}?timeout=30"):
        cluster_of(double, url).inject(1020, count=1_000_000)
        started = time.monotonic()
        with pytest.raises(StoreError, match=r"timed out after 0\.3 s"):
            await asyncio.wait_for(short.transact(lambda tr: tr.set(k("t"), b"")), 5)
        assert time.monotonic() - started < 3


async def test_a_timeout_after_an_unknown_commit_result_says_it_may_have_committed(
    double: FDBDouble, url: str
) -> None:
    """After a 1021 (commit_unknown_result) the loop cannot know whether that commit
    happened: a timeout that ends it must not read as a plain failure."""
    async with open_engine(f"{url}?timeout=0.3") as kv:
        cluster_of(double, url).inject(1021, count=1_000_000)
        with pytest.raises(StoreError, match="may or may not have committed"):
            await kv.transact(lambda tr: tr.set(k("t"), b""))
        assert cluster_of(double, url).stats["on_error:1021"] > 0


async def test_a_timeout_raised_by_the_commit_says_it_may_have_committed(
    double: FDBDouble, url: str
) -> None:
    """The timeout cancels the transaction; FDB: a commit cancelled in flight may or may
    not take effect. (The double fails the commit before applying it; it cannot show a
    commit that lands after the cancel, which only a real cluster can.)"""

    def slow_write(tr: KVTransaction) -> None:
        time.sleep(0.15)  # past the timeout before commit: the commit reports 1031
        tr.set(k("t"), b"")

    def slow_read(tr: Any) -> bytes | None:
        time.sleep(0.15)
        return tr.get(k("t"))  # type: ignore[no-any-return]

    async with open_engine(f"{url}?timeout=0.1") as kv:
        with pytest.raises(StoreError, match="may or may not have committed"):
            await kv.transact(slow_write)
        with pytest.raises(StoreError, match="timed out") as caught:  # a read: no commit
            await kv.read(slow_read)
        assert "may or may not" not in str(caught.value)


async def test_a_sub_millisecond_timeout_is_not_no_timeout(double: FDBDouble, url: str) -> None:
    """FDB reads a timeout of 0 ms as "no timeout": a sub-millisecond ``?timeout=`` must
    not round down to it (regression: ``int(0.0004 * 1000) == 0`` retried forever)."""
    async with open_engine(f"{url}?timeout=0.0004") as kv:
        cluster_of(double, url).inject(1020, count=300)  # then it would commit
        with pytest.raises(StoreError, match="timed out"):
            await kv.transact(lambda tr: tr.set(k("t"), b""))


async def test_an_unreachable_cluster_fails_open_clearly(double: FDBDouble, url: str) -> None:
    cluster_of(double, url).inject(1031, at="read")  # the first read version times out
    with pytest.raises(StoreError, match=r"cannot open FoundationDB via .*timed out"):
        async with open_engine(url):
            pass


async def test_an_older_api_version_already_selected_is_refused(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    double = use_fdb_double(monkeypatch, api_version=630)
    with pytest.raises(StoreError, match="API version 630 is already selected"):
        async with open_engine(url):
            pass
    double.stop()


# --- watches -------------------------------------------------------------------------


async def test_a_watch_fires_on_another_connection_s_commit(
    double: FDBDouble, url: str, kv: Engine
) -> None:
    """Two engines on one cluster (the double shares data per cluster file): a watch on
    one fires from the double's network thread when the other commits a new value, not
    when it writes the value the watcher already has."""
    await kv.transact(lambda tr: tr.set(k("w"), b"1"))
    async with open_engine(url) as other:
        watching = asyncio.ensure_future(kv.watch(k("w"), b"1"))
        await asyncio.sleep(0.1)
        await other.transact(lambda tr: tr.set(k("w"), b"1"))  # same value: no change
        await asyncio.sleep(0.1)
        assert not watching.done()
        await other.transact(lambda tr: tr.set(k("w"), b"2"))
        assert await asyncio.wait_for(watching, WAIT) == b"2"


async def test_a_watch_survives_a_quiet_period_longer_than_the_timeout(
    double: FDBDouble, url: str
) -> None:
    """A watch is set once its transaction commits; the transaction's timeout (which
    bounds the retry loop) does not cut it short."""
    async with open_engine(f"{url}?timeout=0.2") as kv:
        watching = asyncio.ensure_future(kv.watch(k("q"), None))
        await asyncio.sleep(0.5)
        assert not watching.done()
        await kv.transact(lambda tr: tr.set(k("q"), b"v"))
        assert await asyncio.wait_for(watching, WAIT) == b"v"


# --- versionstamps and read-your-writes ------------------------------------------------


async def test_commits_in_one_batch_share_a_version_and_differ_in_batch_order(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    """FDB's versionstamp is the commit version (8 bytes) and the order in the proxy's
    batch (2 bytes); commits in one batch share the version. The engine hands back all
    10 bytes, so such commits still get distinct, increasing stamps."""
    double = use_fdb_double(monkeypatch, batch_window=60.0)  # one long batch
    async with open_engine(url) as kv:
        stamps = []
        for i in range(20):

            def write(tr: KVTransaction, i: int = i) -> None:
                tr.set(k("b", i), b"")

            committed = await kv.transact(write)
            assert committed.versionstamp is not None
            stamps.append(committed.versionstamp)
    double.stop()
    assert len({s[:8] for s in stamps}) == 1
    assert [int.from_bytes(s[8:], "big") for s in stamps] == list(range(20))


async def test_the_engine_raises_fdb_s_watch_cap_for_one_watch_per_loaded_room(
    kv: Engine,
) -> None:
    """FDB allows 10,000 outstanding watches per connection by default (1032 beyond),
    fewer than the rooms one server keeps loaded: the engine asks for FDB's maximum."""
    from crdt.kv.fdb import MAX_WATCHES, FDBEngine

    assert isinstance(kv, FDBEngine)
    assert MAX_WATCHES == 1_000_000
    assert kv._db.max_watches == MAX_WATCHES


async def test_a_watch_being_set_up_when_the_engine_closes_raises(
    double: FDBDouble, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() cancels the watches it knows of; one whose native watch was made on a
    worker thread but not handed back yet was missed, and waited on after the close
    until the key changed. It must raise StoreError, as waiting watches do."""
    from crdt.kv.fdb import FDBEngine

    read_and_watch = FDBEngine._read_and_watch
    handing_back = threading.Event()

    def slow(self: FDBEngine, key: bytes, last: bytes | None) -> Any:
        made = read_and_watch(self, key, last)  # the native watch exists now
        handing_back.set()
        time.sleep(0.3)  # ... not handed back to the event loop yet
        return made

    monkeypatch.setattr(FDBEngine, "_read_and_watch", slow)
    kv = open_engine(url)
    assert isinstance(kv, FDBEngine)
    await kv.open()
    await kv.transact(lambda tr: tr.set(b"k", b"v"))
    watch = asyncio.ensure_future(kv.watch(b"k", b"v"))
    assert await asyncio.to_thread(handing_back.wait, WAIT)
    await kv.close()
    with pytest.raises(StoreError):
        await asyncio.wait_for(watch, WAIT)


async def test_close_cancels_a_stuck_transaction_and_drops_queued_calls(
    double: FDBDouble, url: str
) -> None:
    """close() must not wait out the timeout of transactions stuck on an unreachable
    cluster: it cancels the transactions in use (1025 from their next wait) and drops
    calls still queued for a worker (shutdown with cancel_futures); both raise
    StoreError, and close() returns at once."""
    from crdt.kv.fdb import FDBEngine

    engine = FDBEngine(url[len("fdb://") :], timeout=30, workers=1)
    await engine.open()
    started = threading.Event()

    def stuck(tr: Any) -> None:  # a read that never gets its answer, retried by FDB
        started.set()
        while True:
            tr.get(k("s"))
            time.sleep(0.01)

    running = asyncio.ensure_future(engine.read(stuck))
    queued = asyncio.ensure_future(engine.read(lambda tr: tr.get(k("s"))))
    assert await asyncio.to_thread(started.wait, WAIT)
    began = time.monotonic()
    await asyncio.wait_for(engine.close(), 5)
    assert time.monotonic() - began < 2
    with pytest.raises(StoreError, match=r"engine closed while read .*stuck"):
        await asyncio.wait_for(running, WAIT)
    with pytest.raises(StoreError, match="engine closed before the call ran"):
        await asyncio.wait_for(queued, WAIT)


async def test_an_inverted_or_empty_clear_range_is_skipped_not_sent(kv: Engine) -> None:
    """FDB fails a transaction with inverted_range (2005) for clear_range(begin > end)
    and skips an empty one; the engine skips both, so the transaction commits."""

    def write(tr: KVTransaction) -> None:
        tr.clear_range(k("b"), k("a"))
        tr.clear_range(k("a"), k("a"))
        tr.set(k("a"), b"v")

    assert (await kv.transact(write)).versionstamp is not None
    assert await kv.read(lambda tr: tr.get(k("a"))) == b"v"


async def test_reads_stuck_on_every_read_worker_do_not_hold_a_commit_back(
    double: FDBDouble, url: str
) -> None:
    """Reads (and watch setups) and writes run on two pools: reads stuck on an
    unreachable cluster, each up to the timeout, on every read worker (or a burst of
    room loads setting up their watches) no longer queue the commits behind them."""
    from crdt.kv.fdb import FDBEngine

    engine = FDBEngine(url[len("fdb://") :], timeout=30, workers=1)
    await engine.open()
    release = threading.Event()
    started = threading.Event()

    def stuck(tr: Any) -> None:
        started.set()
        release.wait(WAIT)

    try:
        reading = asyncio.ensure_future(engine.read(stuck))
        assert await asyncio.to_thread(started.wait, WAIT)
        committed = await asyncio.wait_for(engine.transact(lambda tr: tr.set(k("w"), b"1")), 2)
        assert committed.versionstamp is not None
        assert not reading.done()
    finally:
        release.set()
        await engine.close()
    await reading
