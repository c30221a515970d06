"""Crash windows between journal lines (README "Reliability": never twice, never lost).

test_killpoints.py kills imgurbox at API requests; this file kills it right after each
line imgurbox appends to state.journal, which also reaches the windows between two pieces
of bookkeeping that send no request (a rename, a move, a download placed in its folder).

How: a small launcher (written into tmp_path) imports imgurbox.py as a module, wraps
``StateStore._record`` and sends the process SIGKILL (or SIGTERM) right after the N-th
journal line was written and flushed. For every scenario, one fault-free run counts the
journal lines L; then, for every N in 1..L, on a fresh home and a fresh fake: kill after
line N, run again without faults (exit 0, the fake mirrors every folder exactly once),
and a third run sends no request at all.

Further down: unit tests of a torn journal tail, and the pending check of an upload whose
outcome was unknown failing with a 4xx (the pending record must stay).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from conftest import IMGURBOX, Home, import_imgurbox
from fake_imgur import FakeImgur
from imagefiles import png
from mirror_check import assert_mirror, kind, load_state, uploads

ib = import_imgurbox()

# The launcher: imgurbox.main() with StateStore._record wrapped. Environment:
#   KP_DIR         the folder of the imgurbox.py under test
#   KP_N           kill after the N-th journal line (1-based; 0: never)
#   KP_SIGNAL      SIGKILL (default) or SIGTERM
#   KP_COUNT_FILE  append "<n> <op>" per journal line written (the fault-free count)
#   KP_FUNC        instead of a journal line: kill right after the KP_N-th return of
#                  imgurbox.<KP_FUNC> (a window between two journal lines)
LAUNCHER = r'''
import os, signal, sys, threading
sys.path.insert(0, os.environ["KP_DIR"])
import imgurbox

N = int(os.environ.get("KP_N") or 0)
SIG = getattr(signal, os.environ.get("KP_SIGNAL") or "SIGKILL")
COUNT_FILE = os.environ.get("KP_COUNT_FILE")
FUNC = os.environ.get("KP_FUNC")
lock = threading.Lock()
count = [0]


def hit():
    os.kill(os.getpid(), SIG)


orig_record = imgurbox.StateStore._record


def _record(self, entry, durable=False):
    orig_record(self, entry, durable)          # applied, written and flushed
    if not self.writable:
        return
    with lock:
        count[0] += 1
        me = count[0]
        if COUNT_FILE:
            with open(COUNT_FILE, "a") as f:
                f.write("%d %s\n" % (me, entry.get("op")))
    if not FUNC and me == N:
        hit()


imgurbox.StateStore._record = _record

if FUNC:
    orig_func = getattr(imgurbox, FUNC)
    calls = [0]

    def wrapped(*args, **kwargs):
        result = orig_func(*args, **kwargs)
        with lock:
            calls[0] += 1
            me = calls[0]
        if me == N:
            hit()
        return result

    setattr(imgurbox, FUNC, wrapped)

sys.exit(imgurbox.main())
'''

EXPECTED_CODE = {"SIGKILL": -signal.SIGKILL, "SIGTERM": 143}


def write_launcher(tmp_path: Path) -> Path:
    path = tmp_path / "kp_launch.py"
    path.write_text(LAUNCHER, encoding="utf-8")
    return path


def run_launched(launcher: Path, home: Home, args, *, n=0, sig="SIGKILL",
                 count_file=None, func=None, timeout=60):
    """Run ``imgurbox --home H sync *args`` through the launcher; (code, stdout, stderr)."""
    env = {"KP_DIR": str(IMGURBOX.parent), "KP_N": str(n), "KP_SIGNAL": sig,
           "KP_COUNT_FILE": str(count_file) if count_file else None, "KP_FUNC": func}
    r = home.run("sync", *args, env=env, timeout=timeout, script=launcher)
    return r.code, r.stdout, r.stderr


# --------------------------------------------------------------------------- scenarios
# Each setup gets a Home on its own fake and returns (folders, sync args); after it, the
# fake's request log holds only what the runs under test send.

def setup_change(home: Home):
    """A and B synced once; then a rename, a move A -> B, an edit (replace), a delete
    and two new files. --jobs 1: the same journal lines in the same order every time."""
    a = home.folder("A", {f"a{i}.png": png(f"a{i}") for i in range(1, 7)})
    b = home.folder("B", {f"b{i}.png": png(f"b{i}") for i in range(1, 4)})
    home.write_credentials()
    home.write_albums(f"{a}\n{b}\n")
    r = home.run("sync")
    assert r.code == 0, f"initial sync: exit {r.code}\n{r.stdout}\n{r.stderr}"
    (a / "a1.png").write_bytes(png("a1 edited"))          # replace
    (a / "a2.png").unlink()                                # delete
    os.replace(a / "a3.png", a / "a3r.png")                # rename
    os.replace(a / "a4.png", b / "a4.png")                 # move A -> B
    (a / "a7.png").write_bytes(png("a7"))                  # new
    (b / "b9.png").write_bytes(png("b9"))                  # new
    home.fake.reset_requests()
    return [a, b], ["--jobs", "1"]


def setup_first(home: Home):
    """A first sync of a new folder of four files, four uploads at a time."""
    folder = home.folder("New", {f"n{i}.png": png(f"n{i}") for i in range(1, 5)})
    home.write_credentials()
    home.write_albums(f"{folder}\n")
    return [folder], ["--jobs", "4"]


DOWNLOAD_IMAGES = 3


def setup_download(home: Home):
    """An ALBUM line (an existing album of three images): downloaded into home/Trip."""
    album = home.fake.create_album("alice", "Trip")
    for i in range(DOWNLOAD_IMAGES):
        home.fake.create_image("alice", png(f"trip{i}"), name=f"t{i}.png", album=album)
    home.write_credentials()
    home.write_albums(f"{album}\n")
    return [home.path / "Trip"], []


SCENARIOS = {"change": setup_change, "first": setup_first, "download": setup_download}


def check_download(home: Home, fake: FakeImgur, folder: Path) -> None:
    """Exactly the album's images as local files, with their bytes; no ' (1)' copy,
    no leftover temporary file; nothing uploaded."""
    (album_id,) = [a for a in fake.albums]
    expected = sorted(fake.images[i].name for i in fake.album_image_ids(album_id))
    assert len(expected) == DOWNLOAD_IMAGES
    assert sorted(os.listdir(folder)) == expected, (
        f"{folder.name} holds {sorted(os.listdir(folder))}, the album {expected}")
    for image_id in fake.album_image_ids(album_id):
        name = fake.images[image_id].name
        assert (folder / name).read_bytes() == fake.image_bytes(image_id), name
    assert not [n for n in os.listdir(folder) if "(1)" in n], os.listdir(folder)
    assert len(fake.images) == DOWNLOAD_IMAGES, "an image was uploaded"
    assert uploads(fake) == [], "an image was uploaded"


def recover_and_check(home: Home, fake: FakeImgur, scenario: str, folders, args) -> None:
    """The run after a kill: exit 0 and an exact mirror; then a run that sends nothing."""
    r = home.run("sync", *args)
    assert r.code == 0, f"recovery run: exit {r.code}\n{r.stdout}\n{r.stderr}"
    assert_mirror(home, fake, folders, by="records")
    if scenario != "change":  # README: a rename sends nothing; Imgur keeps the old name
        assert_mirror(home, fake, folders)
    if scenario == "download":
        check_download(home, fake, folders[0])
    fake.reset_requests()
    again = home.run("sync")
    assert again.code == 0, f"third run: exit {again.code}\n{again.stdout}\n{again.stderr}"
    assert fake.api_requests() == [], (
        f"a third run still sent {[kind(q) for q in fake.api_requests()]}")
    load_state(home)


class Scenario:
    """A scenario set up once (on the ``home`` fixture), then restored before each kill
    point: the home and photo folders copied back (mtimes kept), and a fresh fake given a
    copy of the set-up albums and images (and fresh credentials). A fresh fake per kill
    point, so that requests a killed run left in flight cannot act after the restore;
    the same paths every time, as state.json and albums.txt record them."""

    def __init__(self, tmp_path: Path, home: Home, name: str):
        self.tmp_path, self.home, self.name = tmp_path, home, name
        self.launcher = write_launcher(tmp_path)
        self.folders, self.args = SCENARIOS[name](home)
        self.snap = tmp_path / "snapshot"
        shutil.copytree(home.path, self.snap / "home", symlinks=True)
        shutil.copytree(home.photos, self.snap / "photos", symlinks=True)
        self.albums = copy.deepcopy(home.fake.albums)
        self.images = copy.deepcopy(home.fake.images)

    def count_journal_lines(self) -> list:
        """The fault-free run through the launcher: its journal ops, in order."""
        count_file = self.tmp_path / "count.txt"
        code, out, err = run_launched(self.launcher, self.home, self.args,
                                      count_file=count_file)
        assert code == 0, f"fault-free run: exit {code}\n{out}\n{err}"
        recover_and_check(self.home, self.home.fake, self.name, self.folders, self.args)
        ops = [line.split()[1] for line in count_file.read_text().splitlines()]
        assert ops, "the fault-free run wrote no journal line"
        return ops

    def kill(self, n: int, sig: str, func: str | None = None) -> None:
        """Restore, kill at point n, then recover and check."""
        for target, source in ((self.home.path, "home"), (self.home.photos, "photos")):
            shutil.rmtree(target)
            shutil.copytree(self.snap / source, target, symlinks=True)
        fake = FakeImgur()
        fake.start()
        try:
            fake.albums.update(copy.deepcopy(self.albums))
            fake.images.update(copy.deepcopy(self.images))
            home = Home(self.home.path, self.home.photos, fake)
            home.write_credentials()
            code, out, err = run_launched(self.launcher, home, self.args, n=n, sig=sig,
                                          func=func)
            assert code == EXPECTED_CODE[sig], (
                f"killed run: exit {code}, expected {EXPECTED_CODE[sig]}\n{out}\n{err}")
            assert "Traceback" not in err and "internal error" not in err, err
            recover_and_check(home, fake, self.name, self.folders, self.args)
        finally:
            fake.stop()
        assert not fake.errors, "\n".join(fake.errors)


def every_kill_point(tmp_path, home, name, sig):
    scenario = Scenario(tmp_path, home, name)
    ops = scenario.count_journal_lines()
    problems = []
    for n in range(1, len(ops) + 1):
        try:
            scenario.kill(n, sig)
        except AssertionError as e:
            problems.append(f"{sig} after journal line {n} ({ops[n - 1]}): {e}")
    assert not problems, (f"{len(problems)} of {len(ops)} kill points failed "
                          f"(journal: {' '.join(ops)}):\n\n" + "\n\n".join(problems))
    return ops


# --------------------------------------------------------------------------- kill suite

@pytest.mark.parametrize("scenario", ["change", "first", "download"])
def test_sigkill_after_every_journal_line(tmp_path, home, scenario):
    ops = every_kill_point(tmp_path, home, scenario, "SIGKILL")
    if scenario == "change":
        # one journal line per rename and per move (never an unfile, then a file)
        assert ops.count("refile") == 2, ops
    if scenario == "download":
        assert ops.count("pending") >= DOWNLOAD_IMAGES, ops


def test_sigterm_after_every_journal_line(tmp_path, home):
    every_kill_point(tmp_path, home, "change", "SIGTERM")


def test_sigkill_after_a_download_is_placed(tmp_path, home):
    """The window no journal line bounds: the photo renamed into the folder, its 'file'
    line not written yet. The next run finds it by content (no second download, no
    upload, no ' (1)' copy)."""
    scenario = Scenario(tmp_path, home, "download")
    problems = []
    for n in range(1, DOWNLOAD_IMAGES + 1):
        try:
            scenario.kill(n, "SIGKILL", func="place_download")
        except AssertionError as e:
            problems.append(f"killed after download {n} was placed: {e}")
    assert not problems, "\n\n".join(problems)


# --------------------------------------------------------------------------- torn journal

def _journaled_store(home: Path) -> "ib.StateStore":
    """A store (no state.json yet) with an album and two files, journaled only."""
    store = ib.StateStore.load(str(home))
    store.set_album("alb1", folder="/photos/A", listed=True, title="A")
    store.set_file("alb1", "a1.png", ib.FileRecord("img1", "h1", 1, 1, 1))
    store.set_file("alb1", "a2.png", ib.FileRecord("img2", "h2", 2, 2, 2))
    store._close_journal()
    return store


def _journal_lines_parse(path: Path) -> None:
    data = path.read_bytes()
    assert data.endswith(b"\n"), data[-80:]
    for line in data.split(b"\n")[:-1]:
        if line.strip():                      # (a blank line is skipped on replay)
            json.loads(line)                  # every line whole, none glued to another


@pytest.mark.parametrize("torn, kept", [
    ("op-fi", {"a1.png": "img1", "a2.png": "img2"}),      # a line that had just begun
    ("half-line", {"a1.png": "img1"}),                    # a2's line cut in the middle
])
def test_torn_journal_tail_is_cut_before_an_append(tmp_path, torn, kept):
    journal = tmp_path / ib.JOURNAL_FILE
    _journaled_store(tmp_path)
    data = journal.read_bytes()
    if torn == "op-fi":
        journal.write_bytes(data + b'{"op":"fi')
    else:
        last = data[:-1].rsplit(b"\n", 1)[-1]
        journal.write_bytes(data[:-1 - len(last)] + last[:len(last) // 2])

    store = ib.StateStore.load(str(tmp_path))
    assert {n: r.image_id for n, r in store.albums["alb1"].files.items()} == kept
    store.set_file("alb1", "a3.png", ib.FileRecord("img3", "h3", 3, 3, 3))
    store._close_journal()
    _journal_lines_parse(journal)

    again = ib.StateStore.load(str(tmp_path))
    assert {n: r.image_id for n, r in again.albums["alb1"].files.items()} == dict(
        kept, **{"a3.png": "img3"})


def test_journal_without_final_newline_survives_an_append(tmp_path):
    journal = tmp_path / ib.JOURNAL_FILE
    _journaled_store(tmp_path)
    data = journal.read_bytes()
    assert data.endswith(b"\n")
    journal.write_bytes(data[:-1])            # complete JSON, no newline

    store = ib.StateStore.load(str(tmp_path))
    assert set(store.albums["alb1"].files) == {"a1.png", "a2.png"}
    store.set_file("alb1", "a3.png", ib.FileRecord("img3", "h3", 3, 3, 3))
    store._close_journal()
    _journal_lines_parse(journal)

    again = ib.StateStore.load(str(tmp_path))
    assert {n: r.image_id for n, r in again.albums["alb1"].files.items()} == {
        "a1.png": "img1", "a2.png": "img2", "a3.png": "img3"}


def test_damaged_journal_line_before_the_last_is_an_error(tmp_path):
    """Only the last line may be torn: damage earlier is reported (exit 2), not cut."""
    journal = tmp_path / ib.JOURNAL_FILE
    _journaled_store(tmp_path)
    lines = journal.read_bytes().split(b"\n")
    lines[0] = lines[0][:5]
    journal.write_bytes(b"\n".join(lines))
    before = journal.read_bytes()
    with pytest.raises(ib.UsageError):
        ib.StateStore.load(str(tmp_path))
    assert journal.read_bytes() == before


# --------------------------------------------------------------------------- pending check 4xx

@pytest.mark.parametrize("code", [404, 400])
def test_failed_pending_check_keeps_the_pending_upload(home, fake, code):
    """An upload whose answer was lost (drop_after), then the check's
    GET /3/album/{id}/images refused with a 4xx: the outcome is still unknown, so the
    pending record stays (never an upload again blind); the next run adopts the image."""
    a = home.folder("A", {"a1.png": png("a1")})
    home.write_credentials()
    home.write_albums(f"{a}\n")
    r = home.run("sync")
    assert r.code == 0, r
    (album_id,) = fake.albums
    (a / "a2.png").write_bytes(png("a2"))
    fake.reset_requests()
    fake.add_fault("drop_after", "POST", r"^/3/(image|upload)$", count=1)
    check = fake.add_fault("status", "GET", r"^/3/album/%s/images$" % album_id,
                           count=None, code=code, message="Bad Request")

    r = home.run("sync")
    assert r.code == 1, f"exit {r.code}\n{r.stdout}\n{r.stderr}"
    assert "Traceback" not in r.stderr, r.stderr
    assert check.fired >= 1, [kind(q) for q in fake.api_requests()]
    assert len(uploads(fake)) == 1, [kind(q) for q in fake.api_requests()]
    pending = load_state(home)["pending"]
    assert [(p["op"], p.get("name")) for p in pending] == [("upload", "a2.png")], pending
    assert sum(im.name == "a2.png" for im in fake.images.values()) == 1

    fake.clear_faults()
    fake.reset_requests()
    r = home.run("sync")
    assert r.code == 0, f"exit {r.code}\n{r.stdout}\n{r.stderr}"
    assert uploads(fake) == [], "uploaded again instead of adopting the image"
    assert [im.name for im in fake.images.values()].count("a2.png") == 1
    assert_mirror(home, fake, [a])
    assert load_state(home)["pending"] == []
    fake.reset_requests()
    r = home.run("sync")
    assert r.code == 0 and fake.api_requests() == [], [kind(q) for q in fake.api_requests()]
