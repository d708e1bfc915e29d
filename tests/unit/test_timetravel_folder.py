"""The CLI's local parts: the folder a restore writes into, and the tar stream of an
export read back (long and non-ASCII names, truncation)."""

from __future__ import annotations

import asyncio
import io
import tarfile
from pathlib import Path

import aiohttp
import pytest
from aiohttp.base_protocol import BaseProtocol

from client.timetravel_cli import Failed, Folder, _untar
from server.timetravel_api import tar_member


def test_a_restore_folder_writes_nested_files_and_replaces_existing_ones(tmp_path: Path) -> None:
    folder = Folder(tmp_path / "out" / "deep")
    folder.write("a.txt", b"A")
    folder.write("dir/sub/b.md", "ünï 😀".encode())
    assert (tmp_path / "out/deep/dir/sub/b.md").read_text() == "ünï 😀"
    (tmp_path / "out/deep/a.txt").write_text("local")
    Folder(tmp_path / "out" / "deep").write("a.txt", b"again")
    assert (tmp_path / "out/deep/a.txt").read_bytes() == b"again"
    assert sorted(p.name for p in (tmp_path / "out/deep").iterdir()) == ["a.txt", "dir"]


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a//b", "a/./b", ""])
def test_a_restore_folder_refuses_paths_that_leave_it(tmp_path: Path, name: str) -> None:
    with pytest.raises(Failed, match="refusing"):
        Folder(tmp_path).write(name, b"x")
    assert list(tmp_path.iterdir()) == []


def test_a_restore_folder_follows_no_symlink_and_overwrites_no_folder(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(Failed, match="symlink"):
        Folder(root).write("link/x.txt", b"x")
    (root / "file").write_text("f")
    with pytest.raises(Failed, match="is a file"):
        Folder(root).write("file/x.txt", b"x")
    (root / "dir").mkdir()
    with pytest.raises(Failed, match="in the way"):
        Folder(root).write("dir", b"x")
    (root / "alias.txt").symlink_to(outside / "target.txt")
    with pytest.raises(Failed, match="in the way"):
        Folder(root).write("alias.txt", b"x")
    assert list(outside.iterdir()) == []
    linked = tmp_path / "linked-root"
    linked.symlink_to(root)  # the folder asked for may itself be a symlink
    Folder(linked).write("ok.txt", b"ok")
    assert (root / "ok.txt").read_bytes() == b"ok"


def _stream(data: bytes) -> aiohttp.StreamReader:
    loop = asyncio.get_running_loop()
    reader = aiohttp.StreamReader(BaseProtocol(loop), 2**16, loop=loop)
    reader.feed_data(data)
    reader.feed_eof()
    return reader


async def _read(data: bytes) -> list[tuple[str, bytes]]:
    return [member async for member in _untar(_stream(data))]


async def test_tar_members_read_back_with_long_and_non_ascii_names() -> None:
    files = [
        ("a.txt", b"A"),
        ("d/" + "x" * 150 + ".md", b"long name"),
        ("ünï/😀.txt", "é".encode()),
        ("empty.txt", b""),
        ("b.bin", bytes(513)),
    ]
    stream = b"".join(tar_member(n, d, 1_700_000_000) for n, d in files) + bytes(1024)
    assert await _read(stream) == files
    with tarfile.open(fileobj=io.BytesIO(stream)) as tar:  # what tar itself reads
        assert [(m.name, m.size, m.mtime) for m in tar.getmembers()] == [
            (n, len(d), 1_700_000_000) for n, d in files
        ]


async def test_a_cut_tar_stream_is_a_failure_not_a_short_restore() -> None:
    stream = tar_member("a.txt", b"A" * 600, 0)
    with pytest.raises(Failed, match="ended in the middle"):
        await _read(stream[:-100])
    with pytest.raises(Failed, match="ended in the middle"):
        await _read(stream[:300])
    assert await _read(b"") == []
    info = tarfile.TarInfo("link")
    info.type = tarfile.SYMTYPE
    info.linkname = "/etc/passwd"
    with pytest.raises(Failed, match="non-file member"):
        await _read(info.tobuf(tarfile.PAX_FORMAT) + bytes(1024))


async def test_a_malformed_pax_header_is_a_failure() -> None:
    body = b"zz path=x\n"
    info = tarfile.TarInfo("././@PaxHeader")
    info.type = tarfile.XHDTYPE
    info.size = len(body)
    header = info.tobuf(tarfile.USTAR_FORMAT) + body + bytes(-len(body) % 512)
    with pytest.raises(Failed, match="malformed tar header"):
        await _read(header + tar_member("a.txt", b"A", 0) + bytes(1024))
