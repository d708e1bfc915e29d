"""``weft sync`` says the open conflict records of its device that it has not said yet,
found in the project's conflict list: a record made while the device was away (a
verdict it never received, an online edit's record that came after ``--once`` exited),
or one where its edits were the other side (``theirs``: another device's offline branch
met them, or an online edit met its deletion), is said by its next run, once; a record
of another device, or one said live, is not."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from client.said import LISTED
from client.testing import (
    SyncProcess,
    _env,
    get_json,
    get_text,
    start_sync,
    sync_once,
    wait_until,
)
from server.auth import issue_token
from server.testing import (
    Listening,
    ServerProcess,
    StartServer,
    YPeer,
    client_session,
    free_port,
    until,
)

pytestmark = pytest.mark.functional

TENANT = "acme"
BASE = "".join(f"line {n}\n" for n in range(1, 6))


@pytest.fixture(scope="module")
def server(weft_module_server_factory: StartServer) -> ServerProcess:
    return weft_module_server_factory()


def once(server: Listening, folder: Path, project: str) -> str:
    result = sync_once(folder, server.ws_url, TENANT, project)
    assert result.returncode == 0, result.stdout
    return result.stdout


def synced(server: ServerProcess, tmp_path: Path, project: str) -> Path:
    """A folder holding plan.txt, synced once to ``project`` (its device id is known)."""
    folder = new_folder(tmp_path)
    once(server, folder, project)
    return folder


def new_folder(tmp_path: Path) -> Path:
    """A folder holding plan.txt (BASE), not synced yet."""
    folder = tmp_path / "a"
    folder.mkdir()
    (folder / "plan.txt").write_text(BASE)
    return folder


def device_id(folder: Path) -> str:
    return _state(folder, "SELECT value FROM meta WHERE name = 'device'")[0][0]  # type: ignore[no-any-return]


def said_ids(folder: Path) -> set[str]:
    return {row[0] for row in _state(folder, "SELECT id FROM said")}


def _state(folder: Path, sql: str) -> list[Any]:
    db = sqlite3.connect(f"file:{folder / '.weft' / 'state.db'}?mode=ro", uri=True)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def post(url: str, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["conflict"]  # type: ignore[no-any-return]


def report(
    server: ServerProcess,
    project: str,
    path: str,
    text: str,
    device: str,
    token: str | None = None,
) -> str:
    """Record a conflict for ``device`` as a client reports one (``POST .../conflicts``),
    while that device's ``weft sync`` is not running: its id."""
    url = f"{server.url}/api/v1/{TENANT}/{project}/conflicts"
    return str(post(url, {"path": path, "text": text, "device": device}, token)["id"])


def said(out: str, cid: str) -> int:
    """How many lines of ``out`` say conflict ``cid``."""
    return sum(1 for line in out.splitlines() if f"weft conflicts show {cid}" in line)


def test_a_record_made_while_the_device_was_away_is_said_by_its_next_run_once(
    server: ServerProcess, tmp_path: Path
) -> None:
    folder = synced(server, tmp_path, "away")
    cid = report(server, "away", "plan.txt", "my other plan\n", device_id(folder))

    out = once(server, folder, "away")
    assert said(out, cid) == 1, out
    [line] = [line for line in out.splitlines() if cid in line]
    assert "conflict: plan.txt: 1 region changed on both sides (base at the start); " in line
    assert line.endswith(f"see `weft conflicts show {cid}` ({LISTED})"), line
    assert cid in said_ids(folder)

    out = once(server, folder, "away")  # said once, across runs
    assert "conflict" not in out, out

    # resolved, it is no longer open: its id is forgotten (the table stays bounded)
    post(f"{server.url}/api/v1/{TENANT}/away/conflicts/{cid}/resolve", {})
    out = once(server, folder, "away")
    assert "conflict" not in out, out
    assert said_ids(folder) == set()


def test_a_record_of_another_device_is_not_said(server: ServerProcess, tmp_path: Path) -> None:
    """Records whose own side (``ours``) names another device are not this one's: not
    even one whose other side holds this device's update (it wrote the document last,
    as here), whose summary speaks for the reporting device."""
    folder = synced(server, tmp_path, "others")
    theirs = report(server, "others", "plan.txt", "another device's plan\n", "dev-elsewhere")
    record = get_json(f"{server.url}/api/v1/{TENANT}/others/conflicts/{theirs}")["conflict"]
    assert record["theirs"]["clients"] == [device_id(folder)]  # (the device is its other side)
    mine = report(server, "others", "plan.txt", "my own plan\n", device_id(folder))

    out = once(server, folder, "others")
    assert said(out, mine) == 1, out
    assert theirs not in out, out


def _replace_line(path: Path, n: int, text: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    lines[n - 1] = text + "\n"
    path.write_text("".join(lines))


def test_a_record_said_live_is_not_said_again_from_the_list(
    server: ServerProcess, tmp_path: Path
) -> None:
    """b's offline branch meets a's edit of the same line: b's run receives the verdict
    and says it live; its next run, which finds the record in the list (with one made
    for b meanwhile), says only the new one."""
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
    (a / "notes.txt").write_text(BASE)
    for folder in (a, b):
        once(server, folder, "live")
    _replace_line(a / "notes.txt", 2, "line 2 edited by A")
    _replace_line(b / "notes.txt", 2, "line 2 edited by B")
    once(server, a, "live")
    out = once(server, b, "live")
    [record] = get_json(f"{server.url}/api/v1/{TENANT}/live/conflicts")["conflicts"]
    live = record["id"]
    assert said(out, live) == 1 and LISTED not in out, out  # said live
    later = report(server, "live", "notes.txt", "b's other text\n", device_id(b))

    out = once(server, b, "live")
    assert said(out, later) == 1, out
    assert said(out, live) == 0, out
    assert said_ids(b) == {live, later}


def two_devices(server: Listening, tmp_path: Path, project: str) -> tuple[Path, Path]:
    """Folders ``desk`` and ``laptop`` (their device ids), each synced once with
    notes.txt (BASE)."""
    desk, laptop = tmp_path / "desk", tmp_path / "laptop"
    for folder in (desk, laptop):
        folder.mkdir()
    (desk / "notes.txt").write_text(BASE)
    for folder in (desk, laptop):
        result = sync_once(
            folder, server.ws_url, TENANT, project, args=["--device-id", folder.name]
        )
        assert result.returncode == 0, result.stdout
    return desk, laptop


def the_record(server: Listening, project: str) -> dict[str, Any]:
    [record] = get_json(f"{server.url}/api/v1/{TENANT}/{project}/conflicts")["conflicts"]
    return record  # type: ignore[no-any-return]


def said_line(out: str, cid: str) -> str:
    """The one line of ``out`` that says conflict ``cid``."""
    lines = [line for line in out.splitlines() if f"weft conflicts show {cid}" in line]
    assert len(lines) == 1, out
    return lines[0]


def test_a_device_whose_edits_met_another_devices_offline_branch_is_told_once(
    server: ServerProcess, tmp_path: Path
) -> None:
    """desk edits line 2 and sends it; laptop, offline, edits line 2 too and sends its
    branch: laptop is told live, as before. desk, the record's other side (``theirs``),
    was told nothing at all; now its next run says it from the list, once, saying
    whose offline changes its edits met and that the text is in the record."""
    desk, laptop = two_devices(server, tmp_path, "met")
    _replace_line(desk / "notes.txt", 2, "line 2 edited on the desk")
    _replace_line(laptop / "notes.txt", 2, "line 2 edited on the laptop")
    once(server, desk, "met")
    out = once(server, laptop, "met")
    record = the_record(server, "met")
    cid = record["id"]
    assert record["ours"]["clients"] == ["laptop"] and record["theirs"]["clients"] == ["desk"]
    assert "conflict: notes.txt: 1 region changed on both sides (base line 2); " in out, out
    assert said(out, cid) == 1 and LISTED not in out, out  # said live, to laptop

    out = once(server, desk, "met")
    _, line = said_line(out, cid).split(" ", 1)  # (after the time stamp)
    assert line == (
        "conflict: notes.txt: edits made here met laptop's offline changes: 1 region "
        "changed on both sides (base line 2); both sides' text is in this record; see "
        f"`weft conflicts show {cid}` ({LISTED})"
    ), out
    assert said_ids(desk) == {cid}

    for folder in (desk, laptop):  # said once, across runs, on either side
        out = once(server, folder, "met")
        assert "conflict" not in out, out


def test_a_device_whose_deletion_met_another_devices_offline_edit_is_told(
    server: ServerProcess, tmp_path: Path
) -> None:
    """desk deletes notes.txt; laptop, offline, had edited it: laptop's branch makes an
    edit/delete record (``deleted``: theirs), said to laptop live; desk, the deleter,
    is told on its next run."""
    desk, laptop = two_devices(server, tmp_path, "gone-offline")
    (desk / "notes.txt").unlink()
    _replace_line(laptop / "notes.txt", 4, "line 4 edited on the laptop")
    once(server, desk, "gone-offline")
    out = once(server, laptop, "gone-offline")
    record = the_record(server, "gone-offline")
    assert record["deleted"] == "theirs" and record["theirs"]["clients"] == ["desk"]
    assert said(out, record["id"]) == 1 and "edited here while deleted elsewhere" in out, out

    out = once(server, desk, "gone-offline")
    line = said_line(out, record["id"])
    assert "conflict: notes.txt: deleted here while edited on laptop: the document stays " in line
    assert "deleted; the edited text is in this record; see `weft conflicts show " in line, line
    assert "conflict" not in once(server, desk, "gone-offline")


async def test_a_device_whose_deletion_met_an_online_edit_is_told(
    server: ServerProcess, tmp_path: Path
) -> None:
    """An edit sent online by a device (``tablet``, a y-websocket peer) that had not
    seen desk's deletion: the record (said on tablet's connection) is said to desk, the
    deleter, on its next run."""
    desk = tmp_path / "desk"
    desk.mkdir()
    (desk / "notes.txt").write_text(BASE)
    await asyncio.to_thread(once, server, desk, "gone-online")
    async with client_session() as http:
        url = f"{server.ws_url}/{TENANT}/gone-online/notes.txt?weft=3&device=tablet"
        tablet = await YPeer.connect(http, url)
        assert str(tablet) == BASE
        (desk / "notes.txt").unlink()
        await asyncio.to_thread(once, server, desk, "gone-online")
        await tablet.append("a line the tablet adds\n")  # (not having read the deletion)
        listed = f"{server.url}/api/v1/{TENANT}/gone-online/conflicts"
        await until(lambda: get_json(listed)["conflicts"], 10)
    record = the_record(server, "gone-online")
    assert record["ours"]["clients"] == ["tablet"] and record["theirs"]["clients"] == [
        device_id(desk)
    ]
    out = await asyncio.to_thread(once, server, desk, "gone-online")
    line = said_line(out, record["id"])
    assert "conflict: notes.txt: deleted here while edited on tablet: the document stays " in line


def list_reads(servers: list[ServerProcess], project: str) -> int:
    """How many reads of ``project``'s conflict list the servers' access logs hold."""
    line = f"GET /api/v1/{TENANT}/{project}/conflicts 200"
    logs = {server.log_path for server in servers}
    return sum(path.read_text(errors="replace").count(line) for path in logs)


GAP = 15.0  # the test's WEFT_SYNC_LIST_GAP (LIST_GAP, a minute by default)


def test_a_running_sync_reads_the_list_again_after_reconnects_at_most_once_a_gap(
    weft_server_factory: StartServer, tmp_path: Path
) -> None:
    """The list is read after the first sync, and again after a reconnect (not in
    between), but never twice within the gap (LIST_GAP, here ``GAP`` through
    WEFT_SYNC_LIST_GAP): two reconnects in quick succession (a flapping link read it on
    each) make one more read, at the end of the gap. A record made while online moves
    the document list's conflict count: read for at once, not held to the gap."""
    server = weft_server_factory()
    servers = [server]
    folder = synced(server, tmp_path, "back")
    me = device_id(folder)
    before = report(server, "back", "plan.txt", "plan before the start\n", me)
    args = ["--max-backoff", "0.5", "--poll", "0.2"]
    base = list_reads(servers, "back")  # (the --once run's)
    gap = {"WEFT_SYNC_LIST_GAP": str(GAP)}
    device = start_sync(folder, server.ws_url, TENANT, "back", args=args, env=gap)
    try:
        device.wait_for(f"weft conflicts show {before}` ({LISTED})")  # the first read
        wait_until(lambda: list_reads(servers, "back") == base + 1, 10, "the first read logged")
        later = report(server, "back", "plan.txt", "plan while online\n", me)
        device.wait_for(f"weft conflicts show {later}` ({LISTED})", timeout=5)
        second = time.monotonic()  # (just after the read that said it)
        wait_until(lambda: list_reads(servers, "back") == base + 2, 10, "the second read logged")
        for n in (1, 2):  # two reconnects, right after that read
            servers[-1].terminate()
            device.wait_for("offline", count=n)
            servers.append(weft_server_factory(store=server.store, port=server.port))
            device.wait_for("online:", count=n + 1)
        time.sleep(2)  # (a read the reconnects made would be in by now)
        assert time.monotonic() - second < GAP - 1  # (still within the gap)
        assert list_reads(servers, "back") == base + 2
        wait_until(lambda: list_reads(servers, "back") == base + 3, GAP + 20, "the gap's read")
        assert time.monotonic() - second >= GAP - 1
        time.sleep(2)
        assert list_reads(servers, "back") == base + 3  # one read for both reconnects
    finally:
        device.terminate()
    out = device.output()
    assert said(out, before) == said(out, later) == 1, out
    assert said_ids(folder) == {before, later}


def following(
    server: ServerProcess, folder: Path, project: str, ws_url: str | None = None
) -> SyncProcess:
    """A running ``weft sync`` of ``folder`` (on ``ws_url``, else ``server``; polling
    every 0.2 s; the list's gap after a reconnect ten minutes), once it has read the
    conflict list after its first sync."""
    reads = list_reads([server], project)
    gap = {"WEFT_SYNC_LIST_GAP": "600"}
    url = ws_url or server.ws_url
    device = start_sync(folder, url, TENANT, project, args=["--poll", "0.2"], env=gap)
    device.wait_for("in sync:")
    wait_until(lambda: list_reads([server], project) > reads, 10, "the first list read")
    return device


def test_a_running_sync_is_told_of_a_record_of_its_other_side_while_connected(
    server: ServerProcess, tmp_path: Path
) -> None:
    """desk runs, connected all along; laptop, offline, edits the line desk edited and
    sends its branch: the record's other side (desk) is told within seconds, from the
    list it reads once the document list's conflict count moves. It was told only on
    its next reconnect or run (the list was read at start and after reconnects)."""
    desk, laptop = two_devices(server, tmp_path, "told")
    device = following(server, desk, "told")
    try:
        _replace_line(desk / "notes.txt", 2, "line 2 edited on the desk")
        text = f"{server.url}/api/v1/{TENANT}/told/docs/notes.txt"
        wait_until(lambda: "on the desk" in (get_text(text) or ""), 10, "desk's edit saved")
        _replace_line(laptop / "notes.txt", 2, "line 2 edited on the laptop")
        once(server, laptop, "told")
        cid = the_record(server, "told")["id"]
        device.wait_for(f"weft conflicts show {cid}` ({LISTED})", timeout=5)
        assert "edits made here met laptop's offline changes" in said_line(device.output(), cid)
        assert device.output().count("online:") == 1  # (no reconnect)
    finally:
        device.terminate()
    assert said_ids(desk) == {cid}


def test_a_running_sync_is_told_of_its_records_made_while_connected_in_one_read(
    server: ServerProcess, tmp_path: Path
) -> None:
    """Records of this device's own side that no connection of it was told of (here,
    reports naming it, made by others while it runs; such is a verdict that found its
    link closed) are said within seconds; a burst of them makes one read of the list
    (two at most: one at once, one after MARK_GAP)."""
    folder = synced(server, tmp_path, "burst")
    me = device_id(folder)
    device = following(server, folder, "burst")
    try:
        reads = list_reads([server], "burst")
        cids = [report(server, "burst", "plan.txt", f"plan {n}\n", me) for n in range(3)]
        for cid in cids:
            device.wait_for(f"weft conflicts show {cid}` ({LISTED})", timeout=5)
        time.sleep(2.5)  # (MARK_GAP: a second read would be in by now)
        assert list_reads([server], "burst") - reads in (1, 2)
    finally:
        device.terminate()
    out = device.output()
    assert [said(out, cid) for cid in cids] == [1, 1, 1], out


def test_a_server_without_a_conflict_count_is_read_after_reconnects_only(
    server: ServerProcess, proxy: Proxy, tmp_path: Path
) -> None:
    """Through a proxy that drops the document list's headers (as from a server before
    X-Weft-Conflicts), a running sync reads the list as before: at start, and after a
    reconnect, not when a record is made."""
    folder = synced(server, tmp_path, "uncounted")
    device = following(server, folder, "uncounted", proxy.ws_url)
    try:
        reads = list_reads([server], "uncounted")
        cid = report(server, "uncounted", "plan.txt", "a plan\n", device_id(folder))
        time.sleep(2.5)
        assert cid not in device.output()
        assert list_reads([server], "uncounted") == reads
    finally:
        device.terminate()


SECRET = "said-test-secret-0123456789abcdef"


def test_a_read_only_device_says_its_records_too(
    weft_server_factory: StartServer, tmp_path: Path
) -> None:
    """Reading the conflict list takes the read scope: a read-only token reads it."""
    server = weft_server_factory(env={"WEFT_SECRET": SECRET})

    def token(scope: str) -> str:
        return issue_token(
            secret=SECRET, tenant=TENANT, projects=None, user="ada", scope=scope, ttl_seconds=600
        )

    writer, reader = token("write"), token("read")
    w, r = tmp_path / "w", tmp_path / "r"
    for folder in (w, r):
        folder.mkdir()
    (w / "plan.txt").write_text(BASE)
    for folder, tok in ((w, writer), (r, reader)):
        assert sync_once(folder, server.ws_url, TENANT, "ro", token=tok).returncode == 0
    cid = report(server, "ro", "plan.txt", "the reader's plan\n", device_id(r), writer)
    result = sync_once(r, server.ws_url, TENANT, "ro", token=reader)
    assert result.returncode == 0, result.stdout
    assert said(result.stdout, cid) == 1 and "warning" not in result.stdout, result.stdout


def test_an_empty_folder_of_a_new_tenant_reads_an_empty_list_without_a_warning(
    server: ServerProcess, tmp_path: Path
) -> None:
    """A tenant nobody has written to has no conflict list (a 404): that is no record,
    not a failed read."""
    result = sync_once(tmp_path, server.ws_url, "nobody-yet", "p")
    assert result.returncode == 0, result.stdout
    assert "conflict list" not in result.stdout, result.stdout


@dataclass
class Proxy:
    """``list_proxy.py`` in front of a server: ``mode`` set to ``slow`` or ``404`` makes
    the conflict list (only it) stall or answer 404."""

    ws_url: str
    mode_file: Path
    proc: subprocess.Popen[bytes]

    def mode(self, mode: str) -> None:
        self.mode_file.write_text(mode)


@pytest.fixture
def proxy(server: ServerProcess, tmp_path: Path) -> Iterator[Proxy]:
    port, mode_file = free_port(), tmp_path / "proxy-mode"
    mode_file.write_text("")
    script = Path(__file__).with_name("list_proxy.py")
    with (tmp_path / "proxy.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, str(script), server.url, str(port), str(mode_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return True
        except OSError:
            return False

    try:
        wait_until(answers, 20, "the proxy answers")
        yield Proxy(f"ws://127.0.0.1:{port}", mode_file, proc)
    finally:
        proc.kill()  # (SIGTERM waits for a stalled request)
        proc.wait()


def test_a_404_for_the_list_says_nothing_and_forgets_nothing(
    server: ServerProcess, proxy: Proxy, tmp_path: Path
) -> None:
    """A 404 (a proxy's, or a server on another store's) is no list: the ids said stay
    said (forgotten, the next good read said them all again)."""
    folder = synced(server, tmp_path, "gone")
    cid = report(server, "gone", "plan.txt", "my other plan\n", device_id(folder))
    out = once(server, folder, "gone")
    assert said(out, cid) == 1 and said_ids(folder) == {cid}, out

    proxy.mode("404")
    result = sync_once(folder, proxy.ws_url, TENANT, "gone")
    assert result.returncode == 0, result.stdout
    assert "conflict" not in result.stdout, result.stdout
    assert said_ids(folder) == {cid}
    proxy.mode("")
    out = once(server, folder, "gone")
    assert "conflict" not in out, out  # not said again
    assert said_ids(folder) == {cid}


def test_more_open_records_than_a_page_holds_are_each_said_once(
    server: ServerProcess, proxy: Proxy, tmp_path: Path
) -> None:
    """The list came in one answer; paged (100 records by default), a read of its first
    page alone would miss the rest, and forget their ids. ``weft sync`` follows
    ``next_after`` (1000 records a page after the first): every open record of this
    device is said once, in two requests here, and no id is forgotten."""
    folder = synced(server, tmp_path, "many")
    me = device_id(folder)
    with ThreadPoolExecutor(8) as pool:
        mine = list(
            pool.map(lambda n: report(server, "many", "plan.txt", f"{n}\n", me), range(130))
        )
        theirs = list(
            pool.map(lambda n: report(server, "many", "plan.txt", f"x{n}\n", "dev-x"), range(20))
        )
    done, still = mine[:10], mine[10:]
    for cid in done:
        post(f"{server.url}/api/v1/{TENANT}/many/conflicts/{cid}/resolve", {})

    result = sync_once(folder, proxy.ws_url, TENANT, "many")
    assert result.returncode == 0, result.stdout
    assert [said(result.stdout, cid) for cid in still] == [1] * len(still), result.stdout
    assert not any(cid in result.stdout for cid in done + theirs), result.stdout
    assert said_ids(folder) == set(still)
    log = (tmp_path / "proxy.log").read_text().splitlines()
    lists = [line for line in log if line.startswith("LIST ")]
    assert len(lists) == 2, lists
    assert "after=" in lists[1] and "limit=1000" in lists[1], lists

    out = once(server, folder, "many")  # said once across runs; none forgotten
    assert "conflict" not in out, out
    assert said_ids(folder) == set(still)


def test_once_bounds_the_list_read_by_its_timeout(
    server: ServerProcess, proxy: Proxy, tmp_path: Path
) -> None:
    """``--once --timeout 5`` against a server whose list stalls exits within about 5 s
    (the read is bounded by what is left of it, at most ONCE_TIMEOUT), with a warning;
    it waited for the REST timeout (30 s) before."""
    folder = synced(server, tmp_path, "stall")
    proxy.mode("slow")
    started = time.monotonic()
    result = sync_once(folder, proxy.ws_url, TENANT, "stall", args=["--timeout", "5"])
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stdout
    assert seconds < 10, (seconds, result.stdout)
    assert "reading the conflict list failed: no answer in" in result.stdout, result.stdout


def weft_conflicts(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "client.cli", "conflicts", *args],
        env={k: v for k, v in _env(None).items() if not k.startswith("WEFT_")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


OLD_SERVER = "b54056a"  # takes no ?device= (a 400 naming it) nor pages on the conflict list
NO_SIDE_SERVER = "dca926b"  # takes ?device= and pages, not ?side= (a 400 naming it)


@dataclass
class OldServer(Listening):
    """A server process run from an older commit's files."""

    port: int


@contextlib.contextmanager
def old_server(tmp_path: Path, commit: str) -> Iterator[OldServer]:
    """A server of ``commit`` (its files from ``git archive``) on a fresh store; the
    test is skipped when this checkout has no such commit."""
    repo = Path(__file__).resolve().parents[2]
    old = tmp_path / f"old-{commit}"
    old.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", commit], capture_output=True, check=False
    )
    if archive.returncode != 0:
        pytest.skip(f"no commit {commit} here (git archive: {archive.stderr!r})")
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
    server = OldServer(free_port())
    env = {k: v for k, v in _env(None).items() if not k.startswith("WEFT_")}
    env["WEFT_LOG_LEVEL"] = "INFO"
    command = [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(server.port)]
    command += ["--store", f"sqlite:///{tmp_path / f'old-{commit}.db'}"]
    with (tmp_path / f"old-{commit}.log").open("ab") as log:
        proc = subprocess.Popen(command, cwd=old, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:

        def answers() -> bool:
            try:
                with urllib.request.urlopen(f"{server.url}/healthz", timeout=1):
                    return True
            except OSError:
                return False

        wait_until(answers, 20, "the old server answers")
        yield server
    finally:
        proc.terminate()
        proc.wait(15)


def test_a_server_that_takes_no_device_parameter_is_read_whole(tmp_path: Path) -> None:
    """A server from before ``?device=`` (it refuses a parameter it does not know, with a
    400 naming it) is read once more without it, and filtered here: no warning on each
    run, and this device's record is said."""
    with old_server(tmp_path, OLD_SERVER) as server:
        url = server.url
        folder = new_folder(tmp_path)
        ws_url = f"ws://127.0.0.1:{server.port}"
        first = sync_once(folder, ws_url, TENANT, "old")
        assert first.returncode == 0 and "warning" not in first.stdout, first.stdout
        conflicts = f"{url}/api/v1/{TENANT}/old/conflicts"
        mine = str(
            post(conflicts, {"path": "plan.txt", "text": "mine\n", "device": device_id(folder)})[
                "id"
            ]
        )
        theirs = str(
            post(conflicts, {"path": "plan.txt", "text": "x\n", "device": "dev-else"})["id"]
        )
        result = sync_once(folder, ws_url, TENANT, "old")
        assert result.returncode == 0, result.stdout
        assert "warning" not in result.stdout, result.stdout
        assert said(result.stdout, mine) == 1 and theirs not in result.stdout, result.stdout
        # nor pages (no next_after): its one answer is the whole list; --limit is refused
        where = ["--server", url, "--tenant", TENANT, "--project", "old"]
        listed = weft_conflicts("list", "--json", *where)
        assert listed.returncode == 0, listed.stderr
        assert sorted(r["id"] for r in json.loads(listed.stdout)) == sorted([mine, theirs])
        limited = weft_conflicts("list", "--limit", "1", *where)
        assert limited.returncode == 2 and "takes no 'limit' parameter" in limited.stderr


def test_a_server_that_takes_no_side_parameter_is_read_whole(tmp_path: Path) -> None:
    """A server from before ``?side=`` (it takes ``?device=``, and refuses ``?side=``
    with a 400 naming it) is read whole, and filtered here: the device whose edits met
    another device's offline branch is told all the same, with no warning."""
    with old_server(tmp_path, NO_SIDE_SERVER) as server:
        desk, laptop = two_devices(server, tmp_path, "old")
        _replace_line(desk / "notes.txt", 3, "line 3 edited on the desk")
        _replace_line(laptop / "notes.txt", 3, "line 3 edited on the laptop")
        once(server, desk, "old")
        once(server, laptop, "old")
        cid = the_record(server, "old")["id"]
        out = once(server, desk, "old")
        assert "edits made here met laptop's offline changes" in said_line(out, cid), out
        assert "warning" not in out, out
