"""End-to-end regression tests for edge cases a review found (README "albums.txt", "What a
sync does", "Existing albums", "Command line", "Exit codes", "Reliability").

Each test runs imgurbox.py as a subprocess against the fake Imgur (fixtures ``home`` and
``fake`` from conftest.py) and checks what README.md promises: the exit code, the requests
the fake received, the files on disk and what the fake's albums hold.
"""

from __future__ import annotations

import os
import re
import textwrap
import time
import unicodedata
from pathlib import Path

import pytest

from conftest import Home
from imagefiles import jpeg
from mirror_check import (LINK, album_creations, album_removes, delete_requests,
                          link_fetches, photos_in, routes, state_files, token_requests,
                          uploads, writes)


# --------------------------------------------------------------------------- helpers


def album_bytes(fake, album_id) -> list:
    return sorted(fake.image_bytes(i) for i in fake.album_image_ids(album_id))


def linked_albums(home) -> dict:
    """line text before ' -> ' -> album ID, for every linked line of albums.txt."""
    out = {}
    for line in home.albums_bytes().decode("utf-8-sig").splitlines():
        m = LINK.search(line)
        if m:
            out[line[:m.start()].strip()] = m.group(1)
    return out


def sync_folders(home, fake, folders: dict) -> dict:
    """Folders (name -> {file: bytes}) synced once by bare PATH lines (exit 0).
    Returns name -> (folder path, album ID); requests are reset afterwards."""
    dirs = {name: home.folder(name, files) for name, files in folders.items()}
    home.write_credentials()
    home.write_albums("".join(f"{p}\n" for p in dirs.values()))
    r = home.run("sync")
    assert r.code == 0, r
    linked = linked_albums(home)
    out = {name: (p, linked[str(p)]) for name, p in dirs.items()}
    for name, (p, album_id) in out.items():
        assert album_bytes(fake, album_id) == sorted(folders[name].values())
    fake.reset_requests()
    return out


def file_identity(path: Path):
    """What changes when a file is rewritten (atomically or in place)."""
    st = path.stat()
    return path.read_bytes(), st.st_mtime_ns, st.st_ino


def names_line_numbers(stderr: str, numbers, noise=()) -> bool:
    """True when every line number in ``numbers`` appears as a number in stderr
    (paths in ``noise`` are removed first, so digits in temp paths do not count)."""
    for text in noise:
        stderr = stderr.replace(str(text), "")
    found = {int(n) for n in re.findall(r"(?<![\w.])(\d+)(?![\w.])", stderr)}
    return set(numbers) <= found


def assert_no_request_on_next_run(home, fake, env=None):
    fake.reset_requests()
    r = home.run("sync", env=env)
    assert r.code == 0, r
    assert fake.requests == [], fake.requests
    return r


SITECUSTOMIZE = textwrap.dedent("""\
    import os, sys
    _log = os.environ.get("EDGE_OPEN_LOG")
    _watch = os.environ.get("EDGE_WATCH")
    if _log and _watch:
        _fd = os.open(_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        def _hook(event, args, _fd=_fd, _watch=_watch):
            if event == "open" and args and isinstance(args[0], str) \\
                    and os.path.abspath(args[0]).startswith(_watch):
                os.write(_fd, (args[0] + "\\n").encode("utf-8", "surrogateescape"))
        sys.addaudithook(_hook)
""")


def watched_env(tmp_path: Path, log_name: str, watch: Path) -> tuple[dict, Path]:
    """Environment for a run whose opening of any file under ``watch`` is logged (a
    sitecustomize with an audit hook), and the log's path."""
    hook_dir = tmp_path / "hook"
    hook_dir.mkdir(exist_ok=True)
    (hook_dir / "sitecustomize.py").write_text(SITECUSTOMIZE)
    log = tmp_path / log_name
    return {"PYTHONPATH": str(hook_dir), "EDGE_OPEN_LOG": str(log),
            "EDGE_WATCH": str(watch) + os.sep}, log


def opened_files(log: Path) -> list:
    return log.read_text().splitlines() if log.exists() else []


# --------------------------------------------------------------------------- 1. ALBUM titles

def _spec_resolve(path_text: str, base: Path, user_home: Path) -> str:
    """An albums.txt PATH resolved as README "albums.txt" says: `~` expands (to
    ``user_home``, the HOME of the run; `~user` through the password database), relative
    means beside albums.txt."""
    if path_text == "~" or path_text.startswith("~/"):
        path = str(user_home) + path_text[1:]
    elif path_text.startswith("~"):
        path = os.path.expanduser(path_text)
    else:
        path = path_text
    if not os.path.isabs(path):
        path = os.path.join(base, path)
    return os.path.realpath(path)


def _is_comment(text: str) -> bool:
    return text.startswith("#") or text == "//" or text.startswith("// ")


@pytest.mark.parametrize("title", ["~", "~root", "~nosuchuser", "# Trip", "#Trip", "// notes",
                                   "-> x", "a -> b"])
def test_album_title_that_reads_as_home_or_comment_is_rewritten_as_its_folder(
        home, fake, tmp_path, title):
    """README "albums.txt" (an `ALBUM` line becomes `FOLDER -> URL`, FOLDER relative to the
    home; `~` expands; `#` / `// ` lines are comments) and "Existing albums": an album
    whose title is `~`, `~user`, `# ...` or `// ...` is downloaded into a folder in the
    home, and the rewritten line reads back as that folder: never the user's home, another
    user's home, or a comment. The next run makes no request, and nothing outside the home
    is read or uploaded."""
    user_home = tmp_path / "userhome"
    user_home.mkdir()
    (user_home / "private.jpg").write_bytes(jpeg(77))
    env, opened_log = watched_env(tmp_path, "userhome.log", user_home)
    env["HOME"] = str(user_home)
    album_id = fake.create_album("alice", title=title)
    images = {f"{n}.jpg": jpeg(n) for n in range(2)}
    for n, (name, data) in enumerate(images.items()):
        fake.create_image("alice", data, name=name, album=album_id,
                          datetime=int(fake.now()) - 1000 + n)
    home.write_credentials()
    home.write_albums(f"{album_id}\n")

    r = home.run("sync", env=env)
    assert r.code == 0, r
    assert uploads(fake) == [] and album_creations(fake) == []
    folder = Path(home.state()["albums"][album_id]["folder"])
    assert folder.parent == home.path, f"downloaded outside the home: {folder}"
    assert photos_in(folder) == images
    assert (user_home / "private.jpg").exists() and sorted(os.listdir(user_home)) == ["private.jpg"]

    lines = [ln for ln in home.albums_bytes().decode("utf-8").splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    line = lines[0].strip()
    if len(line) >= 2 and line[0] == line[-1] == '"':
        line = line[1:-1]
    assert not _is_comment(line), f"the album line became a comment: {line!r}"
    assert " -> " in line and line.endswith(f"https://imgur.com/a/{album_id}"), line
    path_text = line.rsplit(" -> ", 1)[0].strip()
    if len(path_text) >= 2 and path_text[0] == path_text[-1] == '"':
        path_text = path_text[1:-1]
    assert _spec_resolve(path_text, home.path, user_home) == os.path.realpath(folder), (
        f"{line!r} does not read back as {folder}")

    fake.reset_requests()
    r = home.run("sync", env=env)
    assert r.code == 0, r
    assert fake.requests == [], f"second run sent requests: {fake.requests}"
    state = home.state()
    assert state["albums"][album_id]["listed"], "the album line is no longer read as listed"
    assert Path(state["albums"][album_id]["folder"]) == folder
    assert album_bytes(fake, album_id) == sorted(images.values())
    assert not any(fake.images[i].name == "private.jpg" for i in fake.images)
    assert opened_files(opened_log) == [], "files in the user's home were opened"


# --------------------------------------------------------------------------- 2. one album twice

@pytest.mark.parametrize("form", ["{id}", "https://imgur.com/a/{id}",
                                  "{other} -> https://imgur.com/a/{id}"])
@pytest.mark.parametrize("album_first", [False, True])
def test_bare_path_with_history_and_its_album_on_another_line_exit_2(
        home, fake, tmp_path, form, album_first):
    """README "albums.txt": two lines that name the same album are an error (exit 2) naming
    both line numbers, decided before the first request; nothing changes. A bare `PATH` that
    the state links to album X and a line `X` name one album."""
    folder = home.folder("F", {"a.jpg": jpeg(1)})
    home.write_credentials()
    home.write_albums(f"{folder}\n")
    assert home.run("sync").code == 0
    (album_id,) = linked_albums(home).values()
    other = home.folder("G", {"g.jpg": jpeg(3)})
    lines = [str(folder), form.format(id=album_id, other=other)]
    if album_first:
        lines.reverse()
    text = f"# mine\n\n{lines[0]}\n// the same album again\n{lines[1]}\n"
    home.write_albums(text)
    (folder / "b.jpg").write_bytes(jpeg(2))
    state_before = file_identity(home.path / "state.json")
    fake.reset_requests()

    r = home.run("sync")
    assert r.code == 2, r
    assert fake.requests == [], fake.requests
    assert names_line_numbers(r.stderr, {3, 5}, noise=[tmp_path]), r.stderr
    assert home.albums_bytes() == text.encode()
    assert file_identity(home.path / "state.json") == state_before
    assert len(fake.album_image_ids(album_id)) == 1


# --------------------------------------------------------------------------- 3. one folder twice

def _two_spellings(photos: Path, how: str) -> tuple[str, str]:
    if how == "symlink":
        real = photos / "A"
        real.mkdir()
        (photos / "L").symlink_to(real, target_is_directory=True)
        return str(real), str(photos / "L")
    if how == "dotdot":
        real = photos / "A"
        real.mkdir()
        (photos / "B").mkdir()
        return str(real), f"{photos}/B/../A"
    if how == "relative-dotdot":
        real = photos / "A"
        real.mkdir()
        (photos / "B").mkdir()
        # relative to albums.txt (in the home, a sibling of photos/)
        return str(real), f"../{photos.name}/B/../A/"
    if how == "symlink-dotdot":
        # photos/link -> photos/deep/sub, so photos/link/../A is photos/deep/A for the
        # OS (and for realpath), although it reads as photos/A.
        real = photos / "deep" / "A"
        real.mkdir(parents=True)
        (photos / "deep" / "sub").mkdir()
        (photos / "link").symlink_to(photos / "deep" / "sub", target_is_directory=True)
        return str(real), f"{photos}/link/../A"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["symlink", "dotdot", "relative-dotdot", "symlink-dotdot"])
def test_two_spellings_of_one_folder_exit_2(home, fake, tmp_path, how):
    """README "albums.txt": two lines that resolve to the same folder (same file, or same
    normcase(realpath)) are an error naming both line numbers; exit 2 before any request,
    nothing changed."""
    first, second = _two_spellings(home.photos, how)
    assert os.path.samefile(first, os.path.join(home.path, second))
    Path(first, "x.jpg").write_bytes(jpeg(1))
    home.write_credentials()
    text = f"# photos\n{first}\n\n{second}\n"
    home.write_albums(text)

    r = home.run("sync")
    assert r.code == 2, r
    assert fake.requests == [], fake.requests
    assert names_line_numbers(r.stderr, {2, 4}, noise=[tmp_path]), r.stderr
    assert home.albums_bytes() == text.encode()
    assert home.state() is None
    assert fake.albums == {}


# --------------------------------------------------------------------------- 4. long names

LONG_CJK = "\u65e5" * 150 + ".jpg"          # 454 bytes in UTF-8


@pytest.mark.parametrize("title", ["Long", "\u6708" * 150])
def test_remote_name_longer_than_255_bytes_downloads_under_a_bounded_name(home, fake, title):
    """README "Existing albums" (downloads): names from Imgur are sanitized with a bounded
    length; a file name on Linux is at most 255 bytes. The image downloads (exit 0) under a
    name within 255 bytes, with its bytes, and the next run makes no request. The same holds
    for the folder an album with such a title is downloaded into."""
    assert len(LONG_CJK.encode("utf-8")) > 255
    album_id = fake.create_album("alice", title=title)
    long_id = fake.create_image("alice", jpeg(1), name=LONG_CJK, album=album_id,
                                datetime=int(fake.now()) - 1000)
    fake.create_image("alice", jpeg(2), name="ok.jpg", album=album_id,
                      datetime=int(fake.now()) - 999)
    home.write_credentials()
    home.write_albums(f"{album_id}\n")

    r = home.run("sync")
    assert r.code == 0, r
    assert "Traceback" not in r.stderr, r.stderr
    folder = Path(home.state()["albums"][album_id]["folder"])
    assert folder.parent == home.path and len(folder.name.encode("utf-8")) <= 255
    got = photos_in(folder)
    assert sorted(got.values()) == sorted([jpeg(1), jpeg(2)])
    assert got.get("ok.jpg") == jpeg(2)
    (long_name,) = [n for n in got if n != "ok.jpg"]
    assert len(long_name.encode("utf-8")) <= 255, long_name
    assert long_name.lower().endswith(".jpg")
    assert state_files(home.state(), album_id).get(long_name) == long_id
    assert uploads(fake) == []
    assert_no_request_on_next_run(home, fake)


def test_remote_name_that_cannot_be_written_fails_only_that_item(tmp_path, fake):
    """README "Existing albums" (downloads) and "Exit codes": a download that cannot be
    placed fails that item only (exit 1); the other images of the album still download and
    nothing crashes.

    The home sits so deep that the full path of any long file name in it exceeds Linux's
    PATH_MAX (4096 bytes) while short names still fit: the long name cannot be written,
    however it is sanitized."""
    base = tmp_path / "d"
    target = 4095 - 1 - len("Long") - 1 - 48   # the download folder leaves 48 bytes for names
    parts, length = [], len(str(base))
    while length < target:
        step = min(200, target - length - 1)
        if step < 1:
            break
        parts.append("p" * step)
        length += 1 + step
    deep = base.joinpath(*parts)
    home = Home(deep, tmp_path / "photos", fake)
    assert len(str(home.path / "Long")) + 1 + 48 <= 4095
    assert len(str(home.path / "Long")) + 1 + 100 > 4095

    album_id = fake.create_album("alice", title="Long")
    fake.create_image("alice", jpeg(1), name=LONG_CJK, album=album_id,
                      datetime=int(fake.now()) - 1000)
    ok_id = fake.create_image("alice", jpeg(2), name="ok.jpg", album=album_id,
                              datetime=int(fake.now()) - 999)
    fake.create_image("alice", jpeg(3), name="zz.jpg", album=album_id,
                      datetime=int(fake.now()) - 998)
    home.write_credentials()
    home.write_albums(f"{album_id}\n")

    r = home.run("sync")
    assert r.code == 1, r
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    assert "\u65e5" in r.stderr or "fail" in (r.stdout + r.stderr).lower(), r
    got = photos_in(home.path / "Long")
    assert got == {"ok.jpg": jpeg(2), "zz.jpg": jpeg(3)}, sorted(got)
    assert state_files(home.state(), album_id).get("ok.jpg") == ok_id
    assert uploads(fake) == [] and delete_requests(fake) == []


# --------------------------------------------------------------------------- 5. unmounted drive

@pytest.mark.parametrize("b_change", ["none", "copy renamed in B", "copy edited in B"])
def test_emptied_folder_whose_content_is_already_synced_elsewhere_is_unavailable(
        home, fake, b_change):
    """README "Safety rules": a folder that holds no eligible file while the state records
    some (what an unmounted drive looks like) is unavailable: exit 1, nothing deleted. A
    copy of one of its photos that was already synced in another folder was not moved there
    (not even when it was renamed or its metadata edited there meanwhile), so it does not
    make the emptied folder a move source."""
    dirs = sync_folders(home, fake, {
        "A": {"x.jpg": jpeg(1), "y.jpg": jpeg(2), "z.jpg": jpeg(3)},
        "B": {"copy.jpg": jpeg(1)},
    })
    folder_a, album_a = dirs["A"]
    folder_b, album_b = dirs["B"]
    before_a = list(fake.album_image_ids(album_a))
    before_b = list(fake.album_image_ids(album_b))
    for p in folder_a.iterdir():
        p.unlink()
    if b_change == "copy renamed in B":          # a rename within B: still no move from A
        (folder_b / "copy.jpg").rename(folder_b / "renamed.jpg")
    elif b_change == "copy edited in B":         # metadata-only edit: same content hash
        (folder_b / "copy.jpg").write_bytes(jpeg(1, xmp="5 stars"))

    r = home.run("sync")
    assert r.code == 1, r
    assert delete_requests(fake) == [], delete_requests(fake)
    assert album_removes(fake) == [] and uploads(fake) == []
    assert fake.album_image_ids(album_a) == before_a
    assert fake.album_image_ids(album_b) == before_b
    assert str(folder_a) in r.stdout + r.stderr, "the unavailable folder is named"


# --------------------------------------------------------------------------- 6. one GET failing

@pytest.mark.parametrize("kind", ["album line", "link line"])
def test_album_line_whose_get_fails_does_not_stop_other_folders(home, fake, kind):
    """README "Reliability" (a request that failed every try fails its item; only 3 such
    requests in a row stop the run) and "Exit codes": an `ALBUM` (or first `PATH -> ALBUM`)
    line whose album GET keeps answering 502 fails that line only; the other folder's new
    file is still uploaded; exit 1, the failing album reported; nothing sent into that
    album."""
    other = fake.create_album("alice", title="Other")
    fake.create_image("alice", jpeg(9), name="o.jpg", album=other,
                      datetime=int(fake.now()) - 1000)
    folder = home.folder("F", {"a.jpg": jpeg(1)})
    home.write_credentials()
    if kind == "album line":
        home.write_albums(f"{folder}\n{other}\n")
    else:
        linked = home.folder("G", {"g.jpg": jpeg(2)})
        home.write_albums(f"{folder}\n{linked} -> https://imgur.com/a/{other}\n")
    fake.add_fault("status", method="GET", path=rf"^/3/album/{other}", count=None, code=502)

    r = home.run("sync")
    assert r.code == 1, r
    assert [u.value("name") for u in uploads(fake)] == ["a.jpg"], uploads(fake)
    album_f = linked_albums(home)[str(folder)]
    assert album_bytes(fake, album_f) == [jpeg(1)]
    assert len(album_creations(fake)) == 1
    assert other in r.stdout + r.stderr, "the failing album is reported"
    assert album_bytes(fake, other) == [jpeg(9)]
    assert link_fetches(fake) == []
    assert not (home.path / "Other").exists() or photos_in(home.path / "Other") == {}
    if kind == "link line":
        assert photos_in(linked) == {"g.jpg": jpeg(2)}


def test_verify_whose_album_get_fails_does_not_stop_other_folders(home, fake):
    """README "Command line" (`--verify`), "Reliability", "Exit codes": one album's GET
    failing every try fails that folder only; the other folder's new file is uploaded; exit
    1 and the failing folder reported."""
    dirs = sync_folders(home, fake, {"A": {"a.jpg": jpeg(1)}, "B": {"b.jpg": jpeg(2)}})
    folder_a, album_a = dirs["A"]
    folder_b, album_b = dirs["B"]
    (folder_b / "new.jpg").write_bytes(jpeg(3))
    fake.add_fault("status", method="GET", path=rf"^/3/album/{album_a}", count=None, code=502)

    r = home.run("sync", "--verify")
    assert r.code == 1, r
    assert [u.value("name") for u in uploads(fake)] == ["new.jpg"], uploads(fake)
    assert [u.value("album") for u in uploads(fake)] == [album_b]
    assert album_bytes(fake, album_b) == sorted([jpeg(2), jpeg(3)])
    assert delete_requests(fake) == []
    out = r.stdout + r.stderr
    assert str(folder_a) in out or album_a in out, "the failing folder is reported"


# --------------------------------------------------------------------------- 7. no re-reading

def test_downloaded_files_are_not_reread_by_later_no_op_runs(home, fake, tmp_path):
    """README "Changes and what they do on Imgur": a file is re-hashed only when its size,
    mtime_ns or inode differ from the state or its mtime lies within 2 s of the previous
    scan; a run whose plan is empty makes no request and rewrites state.json only if stat
    data changed. So after an ALBUM line was downloaded, the next no-op runs make no
    request, do not rewrite state.json and do not open the downloaded files (watched with an
    audit hook); a downloaded file's mtime is not later than the run that downloaded it."""
    album_id = fake.create_album("alice", title="Dl")
    for n in range(3):
        fake.create_image("alice", jpeg(n), name=f"{n}.jpg", album=album_id,
                          datetime=int(fake.now()) - 1000 + n)
    home.write_credentials()
    home.write_albums(f"{album_id}\n")
    folder = home.path / "Dl"

    def run(log_name, *args):
        env, log = watched_env(tmp_path, log_name, folder)
        r = home.run("sync", *args, env=env)
        opened = opened_files(log)
        return r, [p for p in opened if not os.path.basename(p).startswith(".")], opened

    started_ns = time.time_ns()
    r, _, opened = run("download.log")
    assert r.code == 0, r
    assert photos_in(folder) == {f"{n}.jpg": jpeg(n) for n in range(3)}
    assert opened, "the audit hook saw no file written by the download run"
    for p in folder.iterdir():
        assert p.stat().st_mtime_ns <= started_ns, (
            f"{p.name}: mtime later than the run that downloaded it")

    for n in (1, 2):
        state_before = file_identity(home.path / "state.json")
        fake.reset_requests()
        r, read, _ = run(f"noop{n}.log")
        assert r.code == 0, r
        assert fake.requests == [], f"no-op run {n} sent requests: {fake.requests}"
        assert read == [], f"no-op run {n} read the downloaded files again: {read}"
        assert file_identity(home.path / "state.json") == state_before, (
            f"no-op run {n} rewrote state.json")

    # The hook does see reads: --rehash reads every file.
    r, read, _ = run("rehash.log", "--rehash")
    assert r.code == 0, r
    assert {os.path.basename(p) for p in read} == {f"{n}.jpg" for n in range(3)}, read


# --------------------------------------------------------------------------- 8. no credentials

def test_missing_credentials_exit_5_leaves_state_json_alone(home, fake):
    """README "Exit codes": exit 5 for missing credentials is decided before anything
    changes: a run whose plan needs requests but has no credentials.json exits 5, sends
    nothing and leaves state.json (and albums.txt) byte-identical, even when stat data
    changed."""
    dirs = sync_folders(home, fake, {"F": {"a.jpg": jpeg(1)}})
    folder, album_id = dirs["F"]
    (home.path / "credentials.json").unlink()
    os.utime(folder / "a.jpg", ns=(10**18, 10**18))     # a stat-only change
    (folder / "b.jpg").write_bytes(jpeg(2))
    state_before = file_identity(home.path / "state.json")
    albums_before = home.albums_bytes()

    r = home.run("sync")
    assert r.code == 5, r
    assert fake.requests == []
    assert file_identity(home.path / "state.json") == state_before
    assert home.albums_bytes() == albums_before
    assert not (home.path / "state.journal").exists() or \
        (home.path / "state.journal").read_bytes().strip() == b""
    assert not (home.path / "credentials.json").exists()


# --------------------------------------------------------------------------- 9. cp1252 console

def test_non_latin_folder_with_a_cp1252_console(home, fake):
    """README "Command line" (actions such as `+ upload` go to stdout; `status` exits 0
    unless albums.txt or state.json cannot be read): with PYTHONIOENCODING=cp1252 (a Windows
    console or redirect) and a folder named 日本, nothing crashes: `status` exits 0, `sync`
    prints its `+ upload` line in some escaped form and exits 0."""
    env = {"PYTHONIOENCODING": "cp1252"}
    folder = home.folder("\u65e5\u672c", {"a.jpg": jpeg(1)})
    home.write_credentials()
    home.write_albums(f"{folder}\n")

    r = home.run("status", env=env)
    assert r.code == 0, r
    assert "Traceback" not in r.stderr, r.stderr

    r = home.run("sync", env=env)
    assert r.code == 0, r
    assert "Traceback" not in r.stderr, r.stderr
    assert any(ln.lstrip().startswith("+") and "upload" in ln and "a.jpg" in ln
               for ln in r.stdout.splitlines()), r.stdout
    (album_id,) = linked_albums(home).values()
    assert album_bytes(fake, album_id) == [jpeg(1)]
    assert fake.albums[album_id].title == "\u65e5\u672c"

    r = home.run("status", env=env)
    assert r.code == 0, r
    assert "Traceback" not in r.stderr, r.stderr

    # An error naming the folder (stderr): the folder is gone, so it is unavailable.
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()
    r = home.run("sync", env=env)
    assert r.code == 1, r
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    assert r.stderr.strip(), "the unavailable folder is reported on stderr"
    assert delete_requests(fake) == []


# --------------------------------------------------------------------------- 10. --verify, album gone

def test_verify_on_a_deleted_album_makes_the_folder_unavailable_and_leaves_no_pending(home, fake):
    """README "Safety rules": an album that answers 404 makes its folder unavailable (exit
    1), with a message to remove the `-> URL` part; nothing is uploaded (not even a new
    file) or deleted for it. README "Reliability": no pending record is left behind, so the
    next run without --verify sends no GET for a pending check."""
    dirs = sync_folders(home, fake, {"V": {"a.jpg": jpeg(1), "b.jpg": jpeg(2)}})
    folder, album_id = dirs["V"]
    fake.delete_album(album_id)
    (folder / "c.jpg").write_bytes(jpeg(3))          # a new file for the gone album

    r = home.run("sync", "--verify")
    assert r.code == 1, r
    out = r.stdout + r.stderr
    assert "->" in out and "remove" in out.lower(), out
    assert uploads(fake) == [], [u.value("name") for u in uploads(fake)]
    assert delete_requests(fake) == [] and album_creations(fake) == []
    assert writes(fake) == [], writes(fake)
    assert photos_in(folder) == {"a.jpg": jpeg(1), "b.jpg": jpeg(2), "c.jpg": jpeg(3)}
    assert home.state().get("pending", []) == [], home.state().get("pending")

    fake.reset_requests()
    home.run("sync")
    assert "GET /3/album/{id}/images" not in routes(fake), routes(fake)
    assert delete_requests(fake) == []


# --------------------------------------------------------------------------- 11. dry run, 429

def test_dry_run_stopped_by_the_rate_limit_exits_4(home, fake):
    """README "Command line", "Exit codes": `--dry-run` exits 0 once the plan is printed, or
    with the usual codes; a GET it needs answered 429 stops it with exit 4, not 0. It writes
    nothing."""
    album_id = fake.create_album("alice", title="X")
    fake.create_image("alice", jpeg(1), name="a.jpg", album=album_id,
                      datetime=int(fake.now()) - 1000)
    home.write_credentials()
    home.write_albums(f"{album_id}\n")
    fake.add_fault("rate_limit", method="GET", path=rf"^/3/album/{album_id}", count=None)

    r = home.run("sync", "--dry-run")
    assert r.code == 4, r
    assert writes(fake) == []
    assert home.state() is None
    assert [p for p in home.path.iterdir() if p.is_dir()] == []
    assert home.albums_bytes() == f"{album_id}\n".encode()


def test_dry_run_verify_stopped_by_the_rate_limit_exits_4(home, fake):
    """README "Command line", "Exit codes": `sync --dry-run --verify` whose album GET is
    answered 429 exits 4 and leaves state.json alone."""
    dirs = sync_folders(home, fake, {"V": {"a.jpg": jpeg(1)}})
    folder, album_id = dirs["V"]
    state_before = file_identity(home.path / "state.json")
    fake.add_fault("rate_limit", method="GET", path=rf"^/3/album/{album_id}", count=None)

    r = home.run("sync", "--dry-run", "--verify")
    assert r.code == 4, r
    assert writes(fake) == []
    assert file_identity(home.path / "state.json") == state_before


# --------------------------------------------------------------------------- 12. one refresh

@pytest.mark.parametrize("jobs", [[], ["--jobs", "1"]])
def test_403_not_about_the_token_refreshes_at_most_once_per_run(home, fake, jobs):
    """README "Reliability": an expired token (401, or a 403 that is not "over capacity") is
    refreshed once; a request still refused after a good refresh fails that item (exit 1).
    However many items hit a 403 that a new token does not cure (uploads into an album that
    was deleted on Imgur), the run sends at most one /oauth2/token request."""
    dirs = sync_folders(home, fake, {"F": {"a.jpg": jpeg(1)}})
    folder, album_id = dirs["F"]
    fake.delete_album(album_id)
    for n in range(2, 12):                           # more items than --jobs
        (folder / f"{n}.jpg").write_bytes(jpeg(n))

    r = home.run("sync", *jobs)
    assert r.code == 1, r
    assert len(token_requests(fake)) <= 1, (
        f"{len(token_requests(fake))} token requests for {len(uploads(fake))} uploads")
    assert delete_requests(fake) == []


@pytest.mark.parametrize("jobs", [[], ["--jobs", "1"]])
def test_403_on_every_upload_refreshes_at_most_once_per_run(home, fake, jobs):
    """README "Reliability": a 403 "invalid token" answer on every upload (fault
    token_expired, count=None) triggers one refresh; each upload still refused fails its
    item (exit 1), and no further /oauth2/token request is sent however many items hit
    it."""
    dirs = sync_folders(home, fake, {"F": {"a.jpg": jpeg(1)}})
    folder, album_id = dirs["F"]
    for n in range(2, 12):                           # more items than --jobs
        (folder / f"{n}.jpg").write_bytes(jpeg(n))
    fake.add_fault("token_expired", method="POST", path=r"^/3/(image|upload)/?$", count=None)

    r = home.run("sync", *jobs)
    assert r.code == 1, r
    assert len(uploads(fake)) >= 1
    assert len(token_requests(fake)) == 1, (
        f"{len(token_requests(fake))} token requests for {len(uploads(fake))} uploads")
    assert album_bytes(fake, album_id) == [jpeg(1)]


# --------------------------------------------------------------------------- 13. NFD vs NFC

@pytest.mark.parametrize("local_form, remote_form", [("NFD", "NFC"), ("NFC", "NFD")])
def test_decomposed_local_name_adopts_the_composed_remote_name(home, fake, local_form,
                                                               remote_form):
    """README "Existing albums": on a first `PATH -> ALBUM` link, images whose name matches
    a local file are adopted without transfer. A name written decomposed (NFD, as macOS file
    systems give it) matches the same name composed (NFC) on Imgur: no download, no upload,
    and the next run makes no request."""
    local = unicodedata.normalize(local_form, "caf\u00e9.jpg")
    remote = unicodedata.normalize(remote_form, "caf\u00e9.jpg")
    assert "cafe\u0301.jpg" in (local, remote) and local != remote
    folder = home.folder("Cafe", {local: jpeg(1)})
    album_id = fake.create_album("alice", title="Cafe")
    image_id = fake.create_image("alice", jpeg(1), name=remote, album=album_id,
                                 datetime=int(fake.now()) - 1000)
    home.write_credentials()
    home.write_albums(f"{folder} -> https://imgur.com/a/{album_id}\n")

    r = home.run("sync")
    assert r.code == 0, r
    assert uploads(fake) == [], [u.value("name") for u in uploads(fake)]
    assert link_fetches(fake) == [], "the image was downloaded"
    assert delete_requests(fake) == []
    assert sorted(os.listdir(folder)) == [local], sorted(os.listdir(folder))
    assert list(state_files(home.state(), album_id).values()) == [image_id]
    assert fake.album_image_ids(album_id) == [image_id]
    assert_no_request_on_next_run(home, fake)


def test_uploads_refused_with_a_definite_403_leave_no_pending_check(home, fake):
    """README "Reliability": a request answered with a definite refusal (401/403) was not
    performed; only an upload whose outcome is unknown goes through the pending check
    ("Reliability") before it is sent again. So after uploads refused 403 (fault
    token_expired on every upload, one refresh), no pending record is left: the next run,
    with Imgur answering again, uploads the files without any GET /3/album/{id}/images
    pending check."""
    dirs = sync_folders(home, fake, {"F": {"a.jpg": jpeg(1)}})
    folder, album_id = dirs["F"]
    for n in range(2, 6):
        (folder / f"{n}.jpg").write_bytes(jpeg(n))
    fake.add_fault("token_expired", method="POST", path=r"^/3/(image|upload)/?$", count=None)
    r = home.run("sync")
    assert r.code == 1, r
    assert album_bytes(fake, album_id) == [jpeg(1)]

    fake.clear_faults()
    fake.reset_requests()
    r = home.run("sync")
    assert r.code == 0, r
    assert routes(fake)["GET /3/album/{id}/images"] == 0, routes(fake)
    assert sorted(u.value("name") for u in uploads(fake)) == [f"{n}.jpg" for n in range(2, 6)]
    assert album_bytes(fake, album_id) == sorted(jpeg(n) for n in range(1, 6))
    assert home.state().get("pending", []) == []
