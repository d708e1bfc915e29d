"""Key layout and path rules: ``crdt.keys`` is the one module that builds keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fdb.tuple
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from crdt import keys
from crdt.errors import BadPath
from crdt.history import History
from crdt.kv import Engine, open_engine
from crdt.versionstamp import INCOMPLETE_TR, Versionstamp

# --- document paths ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("README.md", "README.md"),
        ("src/app.js", "src/app.js"),
        ("docs/a..b/notes with spaces.txt", "docs/a..b/notes with spaces.txt"),
        (".github/workflows/ci.yml", ".github/workflows/ci.yml"),
        ("cafe\u0301.md", "caf\u00e9.md"),  # NFC: one spelling, one key
        ("x" * 255, "x" * 255),
        ("/".join(["d" * 200] * 5)[:1024], "/".join(["d" * 200] * 5)[:1024]),
    ],
)
def test_good_paths_are_normalised(given: str, stored: str) -> None:
    assert keys.normalise_path(given) == stored


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "empty"),
        ("/etc/passwd", "relative"),
        ("//server/share", "relative"),
        ("..", "'..' segment"),
        ("../secrets", "'..' segment"),
        ("a/../../b", "'..' segment"),
        ("a/./b", "'.' or '..' segment"),
        (".", "'.' or '..' segment"),
        ("a//b", "empty, '.' or '..' segment"),
        ("a/", "empty, '.' or '..' segment"),
        ("a\\b", "'/' separators"),
        ("..\\windows", "'/' separators"),
        ("a\x00b", "control character"),
        ("notes\n.md", "control character"),
        ("del\x7f", "control character"),
        ("a/" + "b" * 1023, "longer than 1024 bytes"),
        ("\u00e9" * 513, "longer than 1024 bytes"),  # 1026 bytes in UTF-8
        ("s" * 256, "segment longer than 255 bytes"),
        ("bad\ud800surrogate", "not valid Unicode"),
    ],
)
def test_bad_paths_raise_bad_path(path: str, reason: str) -> None:
    with pytest.raises(BadPath, match=reason.replace(".", r"\.")):
        keys.normalise_path(path)


def test_bad_path_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        keys.normalise_path("../x")


@pytest.mark.parametrize("name", ["acme", "ACME-2", "site.v2", "a_b", "x" * 64])
def test_good_names(name: str) -> None:
    assert keys.check_name("tenant", name) == name


@pytest.mark.parametrize("name", ["", "x" * 65, "a/b", "..", ".", "caf\u00e9", "a b", "a\x00"])
def test_bad_names(name: str) -> None:
    with pytest.raises(BadPath, match="project"):
        keys.check_name("project", name)


# --- nothing is written for a bad path -----------------------------------------------


async def _dump(kv: Engine) -> list[tuple[bytes, bytes]]:
    return await kv.read(lambda tr: tr.get_range(b"", b"\xff"))


@pytest.mark.parametrize(
    ("tenant", "project", "path"),
    [
        ("acme", "site", "../escape.md"),
        ("acme", "site", "/abs.md"),
        ("acme", "site", "nul\x00.md"),
        ("acme", "site", "a//b.md"),
        ("acme", "site", "x" * 1025),
        ("acme", "../site", "ok.md"),
        ("../acme", "site", "ok.md"),
        ("new-tenant", "site", "../escape.md"),  # not even the tenant gets created
    ],
)
async def test_a_bad_path_writes_nothing(
    tmp_path: Path, tenant: str, project: str, path: str
) -> None:
    async with open_engine(f"sqlite:///{tmp_path / 'weft.db'}") as kv:
        history = History(kv)
        await history.init()
        await history.create_tenant("acme")
        before = await _dump(kv)
        with pytest.raises(BadPath):
            await history.doc(tenant, project, path, create=True)
        assert await _dump(kv) == before
        assert await history.tenants() == ["acme"]


# --- packing -------------------------------------------------------------------------


def test_pack_round_trips_and_matches_the_tuple_layer() -> None:
    vs = Versionstamp(bytes(range(12)))
    items = ("u", vs, 3, b"\x00\xff", "é", None, -5)
    key = keys.pack(items, b"P")
    assert key.startswith(b"P")
    assert keys.unpack(key, b"P") == items
    native = fdb.tuple.unpack(key[1:])
    assert native[1].tr_version == vs.tr_version and native[1].user_version == vs.user
    assert keys.pack(("a", 1)) == fdb.tuple.pack(("a", 1))
    with pytest.raises(ValueError):
        keys.unpack(key, b"Q")


def test_versionstamp_keys_sort_in_versionstamp_order() -> None:
    stamps = sorted(Versionstamp(bytes([a, b]) * 6) for a in (0, 1, 255) for b in (0, 7, 200))
    packed = [keys.pack(("u", vs, 0)) for vs in stamps]
    assert packed == sorted(packed)


def test_pack_incomplete_marks_the_placeholder() -> None:
    key, offset = keys.pack_incomplete(("u",), 7, (2,), b"T")
    assert key[offset : offset + 10] == INCOMPLETE_TR
    tr_version = b"\x00\x00\x00\x00\x00\x00\x01\x02\x00\x03"
    filled = key[:offset] + tr_version + key[offset + 10 :]
    assert filled == keys.pack(("u", Versionstamp.of(tr_version, 7), 2), b"T")


def test_ranges_and_successors() -> None:
    prefix = keys.pack(("d", "site"))
    begin, end = keys.prefix_range(prefix)
    inside = keys.pack(("d", "site", 1))
    outside = keys.pack(("d", "sitf"))
    assert begin <= inside < end and not begin <= outside < end
    assert keys.strinc(b"ab\xff\xff") == b"ac"
    assert keys.key_after(b"k") == b"k\x00"
    with pytest.raises(ValueError):
        keys.strinc(b"\xff")


def test_tenants_have_separate_prefixes() -> None:
    one, two = keys.tenant_prefix(1), keys.tenant_prefix(2)
    assert not one.startswith(two) and not two.startswith(one)
    assert not keys.doc_space(one, "p", 5).startswith(two)
    assert keys.tenant_prefix(1) == keys.pack(("t", 1))


@pytest.mark.parametrize("part", [0, 1, 7, 255, 256, 70_000])
def test_unpack_stamped_matches_unpack(part: int) -> None:
    vs = Versionstamp(bytes(range(20, 32)))
    prefix = keys.pack(("d", "p", 3, "u"))
    key = keys.pack((vs, part), prefix)
    assert keys.unpack_stamped(key, prefix) == keys.unpack(key, prefix) == (vs, part)


@pytest.mark.parametrize(
    "items",
    [
        ("h", b"\x00\xff\x00digest\x00"),
        ("h", b""),
        ("a", 1, b"\x00"),
        (b"only bytes",),
        ("n",),
        (),
        (True,),
        (1.5,),
        (-0.0,),
        ("a", None),
        ("a", ("nested", b"\x00")),
    ],
)
def test_pack_fast_paths_match_the_tuple_layer(items: tuple[Any, ...]) -> None:
    for _ in range(2):  # second time from the cache
        assert keys.pack(items, b"T") == b"T" + fdb.tuple.pack(items)


@given(
    st.integers(0, 0xFFFF),
    st.integers(0, 100_000),
    st.binary(max_size=40),
    st.text(max_size=8),
)
def test_the_fast_key_builders_pack_what_pack_packs(
    user: int, part: int, digest: bytes, name: str
) -> None:
    prefix = keys.pack(("t", 3, "d", name, 7))
    assert keys.IncompleteKeys(("u",), prefix).key(user, part) == keys.pack_incomplete(
        ("u",), user, (part,), prefix
    )
    assert keys.pack_bytes_after(keys.pack(("h",), prefix), digest) == keys.pack(
        ("h", digest), prefix
    )


@given(st.integers(0, 1 << 80), st.integers(0, 1 << 64))
@example(client=0, clock=(1 << 64) - 1)  # the tuple layer's big-int boundary
def test_pack_uint_is_the_tuple_layers_int(client: int, clock: int) -> None:
    head = keys.pack(("i",), b"D")
    assert head + keys.pack_uint(client) + keys.pack_uint(clock) == keys.pack(
        ("i", client, clock), b"D"
    )
