"""Hostile input, round 2 (issue 13): what a server, an album or the home itself can send
imgurbox that must not wedge it, crash it or escape its files.

- Rate-limit resets that are not a plausible time (README "Rate limits"): ignored, never
  saved; a saved view with one is dropped, and the next answer decides.
- Album titles that name imgurbox's own files (README "Files in the home").
- File names that are not UTF-8 (README "Which files are synced").
- state.json and state.journal of the wrong shape; file modes; symbolic links; long log
  lines (README "Files in the home", "Exit codes").

Every test runs imgurbox.py as a subprocess against the fake (fixtures of conftest.py),
except a table test of the reset rule itself.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import stat

import pytest

from conftest import import_imgurbox
from imagefiles import jpeg, png
from mirror_check import (LINK, assert_mirror, done_uploads, load_state, state_files,
                          uploads)

RESUMES = re.compile(r"resumes after (\d{4}-\d\d-\d\dT\d\d:\d\d[^\s.]*)")
DAY = 24 * 3600
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes and names")


# --------------------------------------------------------------------------- helpers

def files(prefix: str, count: int) -> dict:
    return {f"{prefix}{i:02d}.png": png(f"{prefix}{i}") for i in range(count)}


def new_folder(home, name, content):
    """A folder listed (alone) in albums.txt, never synced; credentials written."""
    path = home.folder(name, content)
    home.write_credentials()
    home.write_albums(f"{path}\n")
    return path


def first_sync(home, fake, name="A", content=None):
    """One folder synced (exit 0), requests reset; returns its path."""
    path = new_folder(home, name, files("a", 2) if content is None else content)
    r = home.run("sync")
    assert r.code == 0, r
    assert_mirror(home, fake, [path])
    fake.reset_requests()
    return path


def no_traceback(r):
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr


def write_state(home, state: dict) -> None:
    (home.path / "state.json").write_text(json.dumps(state), encoding="utf-8")


# --------------------------------------------------------------------------- 2. rate-limit resets

BAD_RESETS = ["9e18", "1700000000000", str(10 ** 9 - 1), "inf", "-inf", "nan", "soon"]


def test_reset_rule_table():
    """README "Rate limits": a value below 10^9 is seconds from now, else epoch seconds;
    more than a day ahead is not a time (ignored, None); a past one means now."""
    imgurbox = import_imgurbox()
    now = 1_800_000_000.0
    view = imgurbox.RateView(imgurbox.Clock(now - imgurbox.time.time()))
    cases = [(30, now + 30), (DAY, now + DAY), (0, now), (-50, now),
             (DAY * 2, None), (10 ** 9 - 1, None),
             (now + 3600, now + 3600), (now + DAY, now + DAY), (now - 3600, now),
             (10 ** 9, now), (now + 2 * DAY, None), (1.7e12, None), (9e18, None),
             (float("inf"), None), (float("nan"), None)]
    for value, expected in cases:
        got = view._reset_time(value)
        if expected is None:
            assert got is None, (value, got)
        else:
            assert got is not None and abs(got - expected) < 5, (value, got, expected)


@pytest.mark.parametrize("value", BAD_RESETS)
@pytest.mark.parametrize("style", ["epoch", "relative"])
def test_implausible_user_reset_is_ignored_and_never_saved(home, fake, value, style):
    """Issue 13, item 2: an X-RateLimit-UserReset that is no time (epoch milliseconds,
    9e18, years of seconds, text) stops nothing for good. The run that sees the credits
    run low stops with exit 4 (no traceback, no date out of range), saves no such reset,
    and the next run, an hour later, uploads the rest."""
    fake.reset_style = style
    fake.rate_header_values = {"X-RateLimit-UserReset": value}
    fake.user_limit = 1 + 10 + 5                        # album + one upload, then 5 < 10
    folder = new_folder(home, "A", files("a", 3))
    r = home.run("sync", "--jobs", "1")
    assert r.code == 4, r
    no_traceback(r)
    assert len(done_uploads(fake)) == 1
    match = RESUMES.search(r.stderr)
    if match:                                           # the POST window's time, if any
        reset = dt.datetime.fromisoformat(match.group(1)).timestamp()
        assert fake.now() - 120 < reset <= fake.now() + DAY + 120, match.group(0)
    saved = load_state(home).get("rate", {})
    assert saved.get("user_reset") is None or saved["user_reset"] <= fake.now() + DAY + 60, saved

    fake.advance(3600)
    fake.user_limit = 12500
    fake.reset_requests()
    r = home.run("sync")
    assert r.code == 0, r
    no_traceback(r)
    assert len(done_uploads(fake)) == 2
    assert_mirror(home, fake, [folder])


@pytest.mark.parametrize("value", ["9e18", "1700000000000", "99999999"])
def test_implausible_post_reset_is_ignored_and_never_saved(home, fake, value):
    """The same for X-Post-Rate-Limit-Reset: the hourly POST limit reached, with a reset
    that is no time, holds back this run only."""
    fake.rate_header_values = {"X-Post-Rate-Limit-Reset": value}
    fake.post_limit = 2                                 # the album and one upload
    folder = new_folder(home, "A", files("a", 3))
    r = home.run("sync", "--jobs", "1")
    assert r.code == 4, r
    no_traceback(r)
    assert len(done_uploads(fake)) == 1
    saved = load_state(home).get("rate", {})
    assert saved.get("post_reset") is None or saved["post_reset"] <= fake.now() + DAY + 60, saved

    fake.advance(3600)
    fake.reset_requests()
    r = home.run("sync")
    assert r.code == 0, r
    assert len(done_uploads(fake)) == 2
    assert_mirror(home, fake, [folder])


@pytest.mark.parametrize("rate", [
    {"user_limit": 12500, "user_remaining": 0, "user_reset": 9e18},
    {"user_limit": 12500, "user_remaining": 0, "user_reset": 1.7e12},
    {"post_remaining": 0, "post_reset": 2e13},
    {"client_limit": 12500, "client_remaining": 0, "client_reset": 4e9},
    {"user_limit": "many", "user_remaining": "0", "user_reset": "tomorrow"},
    {"user_remaining": 0, "user_reset": None, "post_remaining": [], "post_reset": {}},
], ids=["9e18", "epoch-ms", "post", "client", "text", "nulls"])
def test_saved_view_with_an_implausible_reset_is_dropped(home, fake, rate):
    """A state.json saved by an older version with such a reset (or with values of the
    wrong type) holds nothing back: the view is dropped on load, the first request's
    headers decide, and the state then keeps only plausible times."""
    folder = first_sync(home, fake)
    state = load_state(home)
    state["rate"] = rate
    write_state(home, state)
    (folder / "new.png").write_bytes(png("new"))
    r = home.run("sync")
    assert r.code == 0, r
    no_traceback(r)
    assert len(done_uploads(fake)) == 1
    assert_mirror(home, fake, [folder])
    saved = load_state(home)["rate"]
    for name in ("user_reset", "client_reset", "post_reset"):
        assert isinstance(saved.get(name, 0), (int, float)), saved
        assert saved.get(name, 0) <= fake.now() + DAY + 60, saved


def test_plausible_saved_view_still_holds_uploads_back(home, fake):
    """The other side: a saved view whose window really has not reset (credits used up,
    reset in half an hour) still starts no upload, as before (README "Rate limits")."""
    folder = first_sync(home, fake)
    state = load_state(home)
    state["rate"] = {"user_limit": 12500, "user_remaining": 0,
                     "user_reset": fake.now() + 1800}
    write_state(home, state)
    (folder / "new.png").write_bytes(png("new"))
    r = home.run("sync")
    assert r.code == 4, r
    assert uploads(fake) == []
    match = RESUMES.search(r.stderr)
    assert match, r.stderr


# --------------------------------------------------------------------------- minor: shapes

def _state_shapes(state: dict) -> dict:
    """Valid JSON of the wrong shape, made from a real state.json."""
    album_id = next(iter(state["albums"]))
    album = state["albums"][album_id]

    def changed(path, value):
        copy = json.loads(json.dumps(state))
        target = copy
        for key in path[:-1]:
            target = target[key]
        if value is KeyError:
            del target[path[-1]]
        else:
            target[path[-1]] = value
        return copy
    row = album["files"][0]
    return {
        "list": [state], "number": 5, "text": "state", "null": None,
        "no-generation": changed(["generation"], KeyError),
        "generation-text": changed(["generation"], "3"),
        "no-albums": changed(["albums"], KeyError),
        "albums-list": changed(["albums"], [album]),
        "album-text": changed(["albums", album_id], "x"),
        "folder-number": changed(["albums", album_id, "folder"], 5),
        "no-folder": changed(["albums", album_id, "folder"], KeyError),
        "listed-text": changed(["albums", album_id, "listed"], "yes"),
        "to-delete-numbers": changed(["albums", album_id, "to_delete"], [1, 2]),
        "files-object": changed(["albums", album_id, "files"], {"a": row}),
        "row-short": changed(["albums", album_id, "files"], [row[:3]]),
        "row-size-text": changed(["albums", album_id, "files"], [row[:3] + ["big"] + row[4:]]),
        "row-name-null": changed(["albums", album_id, "files"], [[None] + row[1:]]),
        "pending-number": changed(["pending"], [5]),
        "pending-no-keys": changed(["pending"], [{"op": "upload"}]),
        "pending-unknown": changed(["pending"], [{"op": "teleport", "id": "1", "since": 1}]),
        "refused-list": changed(["refused"], ["abc"]),
        "refused-text": changed(["refused"], {"abc": "refused"}),
        "rate-text": changed(["rate"], "fast"),
        "restore-owed-text": changed(["restore_owed"], "abc"),
        "run-float": changed(["run"], 1.5),
    }


SHAPES = ["list", "number", "text", "null", "no-generation", "generation-text", "no-albums",
          "albums-list", "album-text", "folder-number", "no-folder", "listed-text",
          "to-delete-numbers", "files-object", "row-short", "row-size-text", "row-name-null",
          "pending-number", "pending-no-keys", "pending-unknown", "refused-list",
          "refused-text", "rate-text", "restore-owed-text", "run-float"]


@pytest.mark.parametrize("shape", SHAPES)
def test_state_json_of_the_wrong_shape_exits_2_with_restore_advice(home, fake, shape):
    """Minor item: valid JSON of another shape is a damaged state.json: exit 2 naming it,
    with the advice to copy state.json.bak over it, no traceback, nothing changed, no
    request, for sync and for status alike."""
    folder = first_sync(home, fake)
    (folder / "new.png").write_bytes(png("new"))
    bad = json.dumps(_state_shapes(load_state(home))[shape]).encode()
    (home.path / "state.json").write_bytes(bad)
    for command in ("sync", "status"):
        r = home.run(command)
        assert r.code == 2, (command, r)
        no_traceback(r)
        assert "state.json is damaged" in r.stderr and "state.json.bak" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert (home.path / "state.json").read_bytes() == bad
    assert fake.api_requests() == []


def _journal_lines(gen: int, album_id: str, row: list) -> dict:
    record = row[1:]
    return {
        "list": [1, 2], "number": 5, "text": "x", "null": None,
        "no-op": {"gen": gen, "album": album_id},
        "op-number": {"gen": gen, "op": 3},
        "unknown-op": {"gen": gen, "op": "teleport"},
        "file-no-record": {"gen": gen, "op": "file", "album": album_id, "name": "n.png"},
        "file-record-short": {"gen": gen, "op": "file", "album": album_id, "name": "n.png",
                              "record": record[:2]},
        "file-record-types": {"gen": gen, "op": "file", "album": album_id, "name": "n.png",
                              "record": [1, 2, 3, 4, 5]},
        "file-unknown-album": {"gen": gen, "op": "file", "album": "nosuch", "name": "n.png",
                               "record": record},
        "file-name-list": {"gen": gen, "op": "file", "album": album_id, "name": ["n"],
                           "record": record},
        "new-album-no-folder": {"gen": gen, "op": "album", "album": "new1", "fields": {}},
        "album-fields-list": {"gen": gen, "op": "album", "album": album_id, "fields": []},
        "album-listed-text": {"gen": gen, "op": "album", "album": album_id,
                              "fields": {"listed": "no"}},
        "pending-no-keys": {"gen": gen, "op": "pending", "record": {"op": "upload"}},
        "resolved-number": {"gen": gen, "op": "resolved", "id": 5},
        "refile-unknown-target": {"gen": gen, "op": "refile", "album": album_id,
                                  "name": row[0], "to_album": "nosuch", "to_name": "x",
                                  "record": record},
        "restore-albums-text": {"gen": gen, "op": "restore_begun", "number": 3,
                                "albums": "abc"},
    }


JOURNAL_SHAPES = ["list", "number", "text", "null", "no-op", "op-number", "unknown-op",
                  "file-no-record", "file-record-short", "file-record-types",
                  "file-unknown-album", "file-name-list", "new-album-no-folder",
                  "album-fields-list", "album-listed-text", "pending-no-keys",
                  "resolved-number", "refile-unknown-target", "restore-albums-text"]


@pytest.mark.parametrize("shape", JOURNAL_SHAPES)
def test_journal_line_of_the_wrong_shape_exits_2_with_restore_advice(home, fake, shape):
    """The same for a state.journal line: exit 2 naming the journal and its line, with
    the restore advice; no traceback, no request, neither file changed."""
    folder = first_sync(home, fake)
    state = load_state(home)
    album_id = next(iter(state["albums"]))
    row = state["albums"][album_id]["files"][0]
    line = json.dumps(_journal_lines(state["generation"], album_id, row)[shape])
    good = json.dumps({"gen": state["generation"], "op": "to_delete", "album": album_id,
                       "image_id": "zzzzzzz", "run": 1})
    journal = (good + "\n" + line + "\n" + good + "\n").encode()
    (home.path / "state.journal").write_bytes(journal)
    (folder / "new.png").write_bytes(png("new"))
    before = (home.path / "state.json").read_bytes()
    for command in ("sync", "status"):
        r = home.run(command)
        assert r.code == 2, (command, r)
        no_traceback(r)
        assert "state.journal is damaged at line 2" in r.stderr, r.stderr
        assert "state.json.bak" in r.stderr, r.stderr
    assert (home.path / "state.journal").read_bytes() == journal
    assert (home.path / "state.json").read_bytes() == before
    assert fake.api_requests() == []


def test_journal_lines_of_another_generation_are_skipped_whatever_their_content(home, fake):
    """Lines folded into an older state.json are ignored (README "Reliability"); only
    their being JSON objects is checked, so a good state with a stale journal still runs."""
    folder = first_sync(home, fake)
    state = load_state(home)
    stale = json.dumps({"gen": state["generation"] - 1, "op": "file", "album": "gone",
                        "name": "x.png", "record": ["a", "b", 1, 2, 3]})
    (home.path / "state.journal").write_text(stale + "\n", encoding="utf-8")
    (folder / "new.png").write_bytes(png("new"))
    r = home.run("sync")
    assert r.code == 0, r
    assert_mirror(home, fake, [folder])


# --------------------------------------------------------------------------- 6. names not UTF-8

BAD = os.fsdecode(b"Caf\xe9.png")           # as os.listdir gives it: Caf\udce9.png
SENT = "Caf\ufffd.png"                      # as Imgur is sent it


def bad_name_folder(home, name="A", extra=None):
    """A folder holding a file whose name is not UTF-8, and a plain one."""
    folder = home.folder(name, {"ok.png": png("ok")})
    try:
        (folder / BAD).write_bytes(png("bad"))
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system takes only UTF-8 names")
    for file_name, data in (extra or {}).items():
        (folder / file_name).write_bytes(data)
    return folder


def names_sent(fake) -> list:
    return sorted(r.value("name") for r in done_uploads(fake))


@posix_only
def test_name_that_is_not_utf8_syncs_and_round_trips_through_the_state(home, fake):
    """Issue 13, item 6: one such name stopped every folder. Now every file uploads; Imgur
    gets readable text (the bad byte as U+FFFD); state.json stays valid UTF-8 JSON and
    gives the name back byte for byte, so the next run sends nothing; status and log.txt
    show the byte escaped, never a traceback."""
    folder_a = bad_name_folder(home, "A", {"Caf\xe9.txt": b"notes"})
    os.rename(folder_a / "Caf\xe9.txt", folder_a / os.fsdecode(b"Caf\xe9.txt"))
    folder_b = home.folder("B", {"b.png": png("b")})
    home.write_credentials()
    home.write_albums(f"{folder_a}\n{folder_b}\n")
    r = home.run("sync")
    assert r.code == 0, r
    no_traceback(r)
    assert names_sent(fake) == sorted(["b.png", SENT, "ok.png"])
    raw = (home.path / "state.json").read_bytes()
    state = json.loads(raw.decode("utf-8"))                 # strict: valid UTF-8
    album_a = [a for a, album in state["albums"].items() if album["folder"] == str(folder_a)][0]
    assert os.fsencode(BAD) in [os.fsencode(n) for n in state_files(state, album_a)]
    assert_mirror(home, fake, [folder_a, folder_b], by="records")
    log = (home.path / "log.txt").read_bytes().decode("utf-8")
    assert "Caf\\xe9.png" in log, log

    fake.reset_requests()
    r = home.run("sync")
    assert r.code == 0 and fake.api_requests() == [], (r, fake.api_requests())

    r = home.run("status")
    assert r.code == 0, r
    no_traceback(r)
    assert "Caf\\xe9.txt" in r.stdout, r.stdout          # the skipped file, escaped
    assert "\udce9" not in r.stdout and "\\udce9" not in r.stdout


@posix_only
def test_name_that_is_not_utf8_round_trips_through_the_journal(home, fake):
    """Killed (SIGKILL) while uploading the next file: the journal holds the first one's
    lines (its pending record, maybe its record), with the name in it. The next run
    replays them: that file is not uploaded again, the rest is."""
    folder = bad_name_folder(home, extra={"zz.png": png("zz")})
    home.write_credentials()
    home.write_albums(f"{folder}\n")
    proc_box = []

    def kill_at_the_last_upload(phase, request):
        if phase == "before" and request.value("name") == "zz.png":
            proc_box[0].kill()
            return "drop"
        return None
    fake.on_request = kill_at_the_last_upload
    proc = home.start("sync", "--jobs", "1")
    proc_box.append(proc)
    proc.communicate(timeout=120)
    fake.on_request = None
    assert proc.returncode == -9
    fake.wait_idle()
    journal = (home.path / "state.journal").read_bytes()
    journal.decode("utf-8")                                 # strict: valid UTF-8
    assert b"\\udce9" in journal, journal
    r = home.run("sync")
    assert r.code == 0, r
    no_traceback(r)
    assert names_sent(fake).count(SENT) == 1, names_sent(fake)
    assert_mirror(home, fake, [folder], by="records")


@posix_only
def test_pending_check_matches_the_name_imgur_was_sent(home, fake):
    """An upload whose answer was lost (the connection closed after Imgur stored it) is
    looked for before it is sent again: the check matches the name Imgur was sent
    (recorded in the pending record), so it is adopted, never uploaded twice."""
    folder = bad_name_folder(home)
    home.write_credentials()
    home.write_albums(f"{folder}\n")
    fake.add_fault("drop_after", method="POST", path=r"^/3/image$", upload_name="\ufffd")
    r = home.run("sync")
    assert r.code == 0, r
    no_traceback(r)
    assert [r.value("name") for r in uploads(fake)].count(SENT) == 1, names_sent(fake)
    assert_mirror(home, fake, [folder], by="records")


@posix_only
def test_restored_state_adopts_an_upload_by_the_name_imgur_was_sent(home, fake):
    """README "Reliability": state.json.bak copied back after a run uploaded such a file:
    the restored-state pass finds that upload by the name Imgur was sent and adopts it."""
    folder = first_sync(home, fake, content={"ok.png": png("ok")})
    saved = (home.path / "state.json").read_bytes()
    try:
        (folder / BAD).write_bytes(png("bad"))
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system takes only UTF-8 names")
    r = home.run("sync")
    assert r.code == 0, r
    assert names_sent(fake) == [SENT]
    (home.path / "state.json").write_bytes(saved)
    fake.reset_requests()
    r = home.run("sync")
    assert r.code == 0, r
    no_traceback(r)
    assert uploads(fake) == [], names_sent(fake)
    assert_mirror(home, fake, [folder], by="records")


@posix_only
def test_linked_album_adopts_its_image_by_the_name_imgur_was_sent(home, fake):
    """`PATH -> ALBUM` with no history: an image named as Imgur was sent the local file's
    name is adopted, neither downloaded nor uploaded again."""
    folder = bad_name_folder(home)
    album_id = fake.create_album("alice", title="A")
    fake.create_image("alice", png("bad"), name=SENT, album=album_id)
    fake.create_image("alice", png("ok"), name="ok.png", album=album_id)
    home.write_credentials()
    home.write_albums(f"{folder} -> https://imgur.com/a/{album_id}\n")
    r = home.run("sync")
    assert r.code == 0, r
    no_traceback(r)
    assert uploads(fake) == []
    assert sorted(os.listdir(folder)) == sorted(["ok.png", BAD])
    state = load_state(home)
    assert sorted(state_files(state, album_id)) == sorted(["ok.png", BAD])


@posix_only
def test_name_imgur_refuses_fails_that_file_only(home, fake):
    """If Imgur refuses the name it was sent, that file fails, saying so; the others in
    the folder and in other folders still upload (exit 1)."""
    folder_a = bad_name_folder(home)
    folder_b = home.folder("B", {"b.png": png("b")})
    home.write_credentials()
    home.write_albums(f"{folder_a}\n{folder_b}\n")
    fake.add_fault("status", method="POST", path=r"^/3/image$", count=None,
                   upload_name="\ufffd", code=400, message="Invalid file name")
    r = home.run("sync")
    assert r.code == 1, r
    no_traceback(r)
    assert sorted(names_sent(fake)) == ["b.png", "ok.png"]
    errors = [line for line in r.stdout.splitlines() + r.stderr.splitlines()
              if line.startswith(("!", "error"))]
    assert len(errors) == 1, r
    assert "Caf\\" in errors[0] and "Invalid file name" in errors[0] and SENT in errors[0], errors


# --------------------------------------------------------------------------- 4. reserved names

RESERVED_TITLES = ["state.json", "STATE.JSON", "state.json.bak", "state.journal",
                   "State.Journal", "log.txt", "log.txt.1", "LOG.TXT.3", "imgurbox.lock",
                   "imgurbox.py", "ImgurBox.PY", "settings.json", "run-counter",
                   "credentials.json", "albums.txt", "state.json.tmp-4242",
                   "credentials.json.tmp-77", "\u017ftate.journal", "log.txt.", "log.txt . "]


@pytest.mark.parametrize("title", RESERVED_TITLES)
def test_album_titled_like_an_own_file_gets_its_title_and_id_form(home, fake, title):
    """Issue 13, item 4 (README "Files in the home"): an album titled like one of
    imgurbox's own files, in any case, rotated or temporary, is downloaded into
    `Title (ID)`; the home's own files stay files, the log keeps growing, and the next
    run sends nothing."""
    album_id = fake.create_album("alice", title=title)
    fake.create_image("alice", jpeg(1), name="a.jpg", album=album_id)
    home.write_credentials()
    home.write_albums(f"{album_id}\n")
    r = home.run("sync")
    assert r.code == 0, r
    no_traceback(r)
    folder = home.path / f"{title.rstrip('. ')} ({album_id})"
    assert (folder / "a.jpg").read_bytes() == jpeg(1)
    dirs = sorted(p.name for p in home.path.iterdir() if p.is_dir())
    assert dirs == [folder.name], dirs
    for own in ("state.json", "log.txt", "albums.txt", "credentials.json"):
        assert (home.path / own).is_file(), own
    log_size = (home.path / "log.txt").stat().st_size
    assert LINK.search(home.albums_bytes().decode()), home.albums_bytes()

    fake.reset_requests()
    r = home.run("sync")
    assert r.code == 0 and fake.api_requests() == [], (r, fake.api_requests())
    assert (home.path / "log.txt").stat().st_size > log_size, "logging stopped"
    assert sorted(p.name for p in home.path.iterdir() if p.is_dir()) == dirs


# --------------------------------------------------------------------------- minor: modes

def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def run_with_umask(home, umask: int, *args, kill_at_upload: str | None = None):
    """A run under the given umask; with ``kill_at_upload``, SIGKILLed when the upload of
    that name reaches the fake. Returns the exit code."""
    box = []

    def hook(phase, request):
        if phase == "before" and request.value("name") == kill_at_upload:
            box[0].kill()
            return "drop"
        return None
    home.fake.on_request = hook if kill_at_upload else None
    proc = home.start(*args, preexec_fn=lambda: os.umask(umask))
    box.append(proc)
    proc.communicate(timeout=120)
    home.fake.on_request = None
    home.fake.wait_idle()
    return proc.returncode


@posix_only
def test_every_file_imgurbox_creates_in_the_home_is_0600(home, fake):
    """Minor item (README "Files in the home"): under umask 000 every file imgurbox
    creates in the home is 0600: state.json, its backup, the journal, log.txt, the run
    counter, the lock. albums.txt keeps the mode its owner gave it, also when rewritten."""
    folder = home.folder("A", files("a", 2))
    home.write_credentials()
    home.write_albums(f"{folder}\n")
    os.chmod(home.path / "albums.txt", 0o664)
    assert run_with_umask(home, 0, "sync") == 0
    assert LINK.search(home.albums_bytes().decode()), "albums.txt was not rewritten"
    assert mode(home.path / "albums.txt") == 0o664
    (folder / "b.png").write_bytes(png("b"))
    assert run_with_umask(home, 0, "sync") == 0
    (folder / "c.png").write_bytes(png("c"))
    (folder / "d.png").write_bytes(png("d"))
    assert run_with_umask(home, 0, "sync", "--jobs", "1", kill_at_upload="d.png") == -9
    for name in ("state.json", "state.json.bak", "state.journal", "log.txt", "run-counter",
                 "imgurbox.lock", "credentials.json"):
        assert mode(home.path / name) == 0o600, (name, oct(mode(home.path / name)))
    assert mode(home.path / "albums.txt") == 0o664


@posix_only
def test_existing_own_files_are_set_back_to_0600(home, fake):
    """Files an older version left 0644 are set back to 0600 when imgurbox next writes
    them, rotated logs included; albums.txt is left as it is."""
    folder = first_sync(home, fake)
    (home.path / "log.txt").write_bytes(b"x" * (1024 * 1024) + b"\n")  # rotated next
    for index in (1, 2):
        (home.path / f"log.txt.{index}").write_bytes(b"old\n")
    (home.path / "state.json.bak").write_bytes((home.path / "state.json").read_bytes())
    own = ["state.json", "state.json.bak", "log.txt", "log.txt.1", "log.txt.2",
           "run-counter", "imgurbox.lock"]
    for name in own + ["albums.txt"]:
        os.chmod(home.path / name, 0o644)
    (folder / "new.png").write_bytes(png("new"))
    r = home.run("sync")
    assert r.code == 0, r
    assert (home.path / "log.txt.3").exists(), "the log was not rotated"
    for name in own + ["log.txt.3"]:
        assert mode(home.path / name) == 0o600, (name, oct(mode(home.path / name)))
    assert mode(home.path / "albums.txt") == 0o644


# --------------------------------------------------------------------------- minor: links

LINKED = ["state.json", "state.json.bak", "state.journal", "log.txt", "log.txt.1",
          "run-counter", "credentials.json", "imgurbox.lock"]


@posix_only
@pytest.mark.parametrize("dangling", [False, True], ids=["to-a-file", "dangling"])
@pytest.mark.parametrize("name", LINKED)
def test_linked_own_file_is_refused_before_anything_changes(home, fake, tmp_path, name,
                                                            dangling):
    """Minor item (README "Files in the home"): one of imgurbox's own files that is a
    symbolic link stops sync, auth and status with exit 2 and one line naming it; the
    file it points to is neither written nor created, and no request is sent."""
    folder = first_sync(home, fake)
    (folder / "new.png").write_bytes(png("new"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / name
    own = home.path / name
    if not dangling:
        target.write_bytes(own.read_bytes() if own.exists() else b"keep\n")
        os.chmod(target, 0o644)
    before = target.read_bytes() if not dangling else None
    if own.exists():
        own.unlink()
    own.symlink_to(target)
    for args in (("sync",), ("status",), ("auth",)):
        r = home.run(*args, env={"IMGUR_REFRESH_TOKEN": "x"})
        assert r.code == 2, (args, r)
        no_traceback(r)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and str(own) in lines[0] and "symbolic link" in lines[0], r.stderr
    assert fake.api_requests() == []
    assert own.is_symlink()
    if dangling:
        assert not target.exists(), "created through the link"
    else:
        assert target.read_bytes() == before and mode(target) == 0o644


@posix_only
def test_linked_albums_txt_is_rewritten_at_its_target(home, fake, tmp_path):
    """albums.txt is the user's file, often kept in a dotfiles repository: a linked one is
    rewritten at its target (the link stays a link), keeping the target's mode."""
    folder = home.folder("A", files("a", 2))
    home.write_credentials()
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    target = dotfiles / "albums.txt"
    target.write_text(f"# mine\n{folder}\n", encoding="utf-8")
    os.chmod(target, 0o640)
    (home.path / "albums.txt").symlink_to(target)
    r = home.run("sync")
    assert r.code == 0, r
    assert (home.path / "albums.txt").is_symlink()
    text = target.read_text(encoding="utf-8")
    assert text.startswith("# mine\n") and LINK.search(text), text
    assert mode(target) == 0o640
    assert sorted(os.listdir(dotfiles)) == ["albums.txt"], "a temporary file was left"
    fake.reset_requests()
    r = home.run("sync")
    assert r.code == 0 and fake.api_requests() == [], r


@posix_only
def test_atomic_write_never_follows_a_link_planted_at_its_temporary_name(tmp_path):
    """write_atomically's temporary file is created new: a link planted at its name
    (state.json.tmp-PID) is removed, never written through."""
    imgurbox = import_imgurbox()
    outside = tmp_path / "outside"
    outside.write_bytes(b"precious")
    path = tmp_path / "state.json"
    (tmp_path / f"state.json.tmp-{os.getpid()}").symlink_to(outside)
    imgurbox.write_atomically(str(path), b"{}")
    assert path.read_bytes() == b"{}" and not path.is_symlink()
    assert outside.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside", "state.json"]


# --------------------------------------------------------------------------- minor: log lines

def test_a_huge_albums_txt_line_does_not_go_whole_into_the_log(home, fake):
    """README "Files in the home" promises a log of about 4 MiB: a line of albums.txt of
    20 MB, quoted in the error, is cut in log.txt."""
    home.write_credentials()
    home.write_albums("x" * (20 * 1000 * 1000) + "\n")
    r = home.run("sync")
    assert r.code == 2, r
    log = (home.path / "log.txt").read_bytes()
    assert len(log) < 64 * 1024, len(log)
    assert b"more characters" in log and b"albums.txt" in log
