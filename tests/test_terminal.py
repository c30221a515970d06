"""The terminal experience (issue 7; README "Command line": output, `status`; "Files in the
home": log.txt), end to end.

Runs imgurbox.py in a real pseudo-terminal (the `pty` module: stdout and stdin on one
pty, stderr on another, so the two streams stay apart) or piped, against the fake Imgur.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import shlex
import shutil
import struct
import subprocess
import sys
import termios
import time
from typing import NamedTuple

import pytest

from imagefiles import jpeg
from conftest import IMGURBOX, REPO, Home
from mirror_check import done_uploads

class Result(NamedTuple):
    """A pty run, shaped like conftest's Result."""
    code: int
    stdout: str
    stderr: str


SGR = re.compile(r"\x1b\[[0-9;]*m")                  # colour / style codes
BAR = re.compile(r"\d+%\||\d+(?:\.\d+)?(?:it|file|B|kB|KB|MB|MiB|KiB)/s|\?(?:it|file|B)/s")
ISO_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)? ")
ACTION = re.compile(r"^(?:\x1b\[[0-9;]*m)?([+\-~>!*<=])(?:\x1b\[[0-9;]*m)? (\S+) (.*)$")
MIB = 1024 * 1024


# --------------------------------------------------------------------------- running

def run_in_pty(home, *args, env=None, timeout=60) -> Result:
    """Run imgurbox with stdin+stdout on one pty (100 columns) and stderr on another."""
    code, out, err = _run_on_ptys(home, args, env, timeout, shared=False)
    return Result(code, out.replace("\r\n", "\n"), err.replace("\r\n", "\n"))


def run_in_terminal(home, *args, env=None, timeout=60) -> tuple:
    """Run imgurbox with stdin, stdout and stderr on one pty (100 columns), as in a
    terminal window; returns (exit code, everything it wrote, as the terminal got it)."""
    code, out, _ = _run_on_ptys(home, args, env, timeout, shared=True)
    return code, out


def _run_on_ptys(home, args, env, timeout, shared: bool) -> tuple:
    env = {"TERM": "xterm", "COLUMNS": "100", "NO_COLOR": None, **(env or {})}
    out_master, out_slave = pty.openpty()
    err_master, err_slave = pty.openpty()
    for fd in (out_slave, err_slave):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    proc = home.start(*args, env=env, stdin=out_slave, stdout=out_slave,
                      stderr=out_slave if shared else err_slave, close_fds=True)
    os.close(out_slave)
    os.close(err_slave)
    chunks = {out_master: [], err_master: []}
    open_fds = set(chunks)
    deadline = time.monotonic() + timeout
    try:
        while open_fds:
            if time.monotonic() > deadline:
                raise AssertionError(f"imgurbox {args} did not end within {timeout} s")
            ready, _, _ = select.select(list(open_fds), [], [], 0.1)
            for fd in ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:                     # EIO: the other side is closed
                    data = b""
                if data:
                    chunks[fd].append(data)
                else:
                    open_fds.discard(fd)
            if not ready and proc.poll() is not None:
                break
        code = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for fd in chunks:
            os.close(fd)
    text = {fd: b"".join(parts).decode("utf-8", "replace") for fd, parts in chunks.items()}
    return code, text[out_master], text[err_master]


CSI = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])|\x1b[^\[]")


def screen(raw: str, columns: int = 100) -> list:
    """The lines a terminal shows (scrollback included) once it has been sent ``raw``.

    A tiny VT100: printable characters overwrite at the cursor and wrap at ``columns``;
    CR, LF (the pty already made each "\\n" a CR LF), backspace, cursor up/down/right/
    left (CSI A B C D), erase in line (CSI K) and erase below (CSI J) are obeyed;
    colours and any other escape change nothing on the screen."""
    rows, row, col = [[]], 0, 0
    position = 0
    while position < len(raw):
        char = raw[position]
        if char == "\x1b":
            m = CSI.match(raw, position)
            position = m.end() if m else position + 1
            if not m or m.group(2) is None:
                continue
            n = int(m.group(1) or "1") if m.group(1).isdigit() else 0
            op = m.group(2)
            if op == "A":
                row = max(0, row - n)
            elif op == "B":
                row += n
            elif op == "C":
                col = min(columns - 1, col + n)
            elif op == "D":
                col = max(0, col - n)
            elif op == "K":
                mode = int(m.group(1) or "0")
                line = rows[row] if row < len(rows) else []
                if mode == 0:
                    del line[col:]
                elif mode == 1:
                    line[:col + 1] = [" "] * min(len(line), col + 1)
                else:
                    line.clear()
            elif op == "J":
                mode = int(m.group(1) or "0")
                if mode == 0 and row < len(rows):
                    del rows[row][col:]
                    del rows[row + 1:]
            continue
        position += 1
        if char == "\r":
            col = 0
        elif char == "\n":
            row += 1
        elif char == "\b":
            col = max(0, col - 1)
        elif char >= " ":
            if col >= columns:
                row, col = row + 1, 0
            while len(rows) <= row:
                rows.append([])
            line = rows[row]
            line.extend(" " * (col - len(line)))
            if col < len(line):
                line[col] = char
            else:
                line.append(char)
            col += 1
        while len(rows) <= row:
            rows.append([])
    lines = ["".join(line).rstrip() for line in rows]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def piped(home, *args, env=None) -> Result:
    """Run with stdout and stderr piped (cron), colour allowed by the environment."""
    return home.run(*args, env={"NO_COLOR": None, "TERM": "xterm", **(env or {})})


def action_lines(stdout: str) -> list:
    """(symbol, verb, rest) of every action line on stdout, colour codes removed."""
    found = []
    for line in stdout.splitlines():
        line = SGR.sub("", line.replace("\r", ""))
        m = ACTION.match(line)
        if m and m.group(1) in "+-~>!":
            found.append((m.group(1), m.group(2), m.group(3)))
    return found


def summary_line(stdout: str) -> str:
    lines = [SGR.sub("", l).strip() for l in stdout.splitlines() if l.strip()]
    assert lines, "no output"
    return lines[-1]


def count_in(summary: str, what: str) -> int:
    m = re.search(rf"(\d+) {what}", summary)
    return int(m.group(1)) if m else 0


def snapshot(*roots) -> dict:
    """Every path under ``roots`` with its size, mtime_ns and mode (what a write changes)."""
    found = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                path = os.path.join(folder, name)
                st = os.lstat(path)
                found[path] = (st.st_size, st.st_mtime_ns, st.st_mode)
    return found


def new_home(home, files=3, seed=0):
    """Credentials, one folder Trip with ``files`` JPEGs and a .heic, albums.txt."""
    home.write_credentials()
    folder = home.folder("Trip", {f"p{i}.jpg": jpeg(seed + i) for i in range(files)})
    (folder / "IMG_0001.HEIC").write_bytes(b"not really heic")
    home.write_albums(f"{folder}\n")
    return folder


# --------------------------------------------------------------------------- progress and colour

def test_progress_bars_and_colour_on_a_terminal(home, fake):
    new_home(home, files=4)
    fake.latency = 0.05
    result = run_in_pty(home, "sync")
    assert result.code == 0, result
    assert BAR.search(result.stderr), repr(result.stderr)
    assert "upload" in result.stderr                   # the upload bar (bytes)
    assert re.search(r"B/s", result.stderr), repr(result.stderr)
    assert SGR.search(result.stdout), repr(result.stdout)
    assert not BAR.search(result.stdout), "a progress bar on stdout"
    # The action lines themselves are there, coloured.
    assert [a[:2] for a in action_lines(result.stdout)] == [("+", "upload")] * 4


def test_hashing_has_a_progress_bar_on_a_terminal(home, fake):
    new_home(home, files=4)
    result = run_in_pty(home, "sync")
    assert result.code == 0, result
    assert re.search(r"hash", result.stderr), repr(result.stderr)


def test_downloads_have_a_byte_progress_bar_on_a_terminal(home, fake):
    home.write_credentials()
    images = [fake.create_image("alice", jpeg(300 + i), name=f"r{i}.jpg") for i in range(3)]
    album = fake.create_album("alice", "Remote", image_ids=images)
    home.write_albums(f"{album}\n")
    fake.latency = 0.05
    result = run_in_pty(home, "sync")
    assert result.code == 0, result
    assert "download" in result.stderr and re.search(r"B/s", result.stderr), repr(result.stderr)
    assert len(re.findall(r"(?m)^(?:\x1b\[[0-9;]*m)?<(?:\x1b\[0m)? download ",
                          result.stdout)) == 3, result.stdout


def test_piped_output_has_no_progress_and_no_colour(home, fake):
    new_home(home, files=4)
    result = piped(home, "sync")
    assert result.code == 0, result
    for stream in (result.stdout, result.stderr):
        assert "\x1b" not in stream, repr(stream)
        assert not BAR.search(stream), repr(stream)
        assert "\r" not in stream, repr(stream)
    assert [a[:2] for a in action_lines(result.stdout)] == [("+", "upload")] * 4
    assert result.stderr == ""


def test_no_color_in_a_terminal_keeps_progress_without_colour(home, fake):
    new_home(home, files=4)
    fake.latency = 0.05
    result = run_in_pty(home, "sync", env={"NO_COLOR": "1"})
    assert result.code == 0, result
    assert not SGR.search(result.stdout), repr(result.stdout)
    assert not SGR.search(result.stderr), repr(result.stderr)
    assert BAR.search(result.stderr), repr(result.stderr)


def test_errors_are_coloured_on_a_terminal_and_go_to_stderr(home, fake):
    new_home(home, files=2)
    fake.add_fault("status", method="POST", path=r"^/3/image$", code=400, count=None,
                   message="File type invalid (1)")
    result = run_in_pty(home, "sync")
    assert result.code == 1, result
    assert "!" in SGR.sub("", result.stdout) or "failed" in SGR.sub("", result.stderr)
    assert SGR.search(result.stdout + result.stderr)


# --------------------------------------------------------------------------- actions in plan order

def scenario(home, fake):
    """Two synced folders A and B; then in A: 5 new files, one changed, one deleted,
    and one moved to B. Returns the expected action lines in plan order."""
    home.write_credentials()
    a = home.folder("A", {"c.jpg": jpeg(1), "d.jpg": jpeg(2), "m.jpg": jpeg(3),
                          "k1.jpg": jpeg(4), "k2.jpg": jpeg(5), "k3.jpg": jpeg(6)})
    b = home.folder("B", {"b1.jpg": jpeg(7)})
    home.write_albums(f"{a}\n{b}\n")
    first = home.run("sync")
    assert first.code == 0, first
    (a / "c.jpg").write_bytes(jpeg(101))                  # replace
    (a / "d.jpg").unlink()                                # delete
    os.rename(a / "m.jpg", b / "m.jpg")                   # move
    for i in range(5):
        (a / f"n{i}.jpg").write_bytes(jpeg(200 + i))      # uploads
    (a / "notes.txt").write_text("not a photo")
    fake.reset_requests()
    uploads_and_replace = sorted([("~", "replace", "A/c.jpg")]
                                 + [("+", "upload", f"A/n{i}.jpg") for i in range(5)],
                                 key=lambda t: t[2])
    return uploads_and_replace + [(">", "move", "A/m.jpg -> B/m.jpg"),
                                  ("-", "delete", "A/d.jpg")]


def scramble(fake) -> list:
    """Make earlier uploads answer later: completion order is the reverse of plan order.
    Returns the list the names of finished uploads are appended to, in finishing order."""
    finished = []

    def slow_first(phase, request):
        if request.method != "POST" or request.path != "/3/image":
            return
        name = request.value("name") or ""
        if not name and request.files.get("image"):
            name = request.files["image"][0] or ""
        if phase == "after":
            finished.append(name)
            return
        m = re.search(r"n(\d)\.jpg|c\.jpg", name)
        if m:
            time.sleep(0.5 - 0.08 * int(m.group(1) or 0) if m.group(1) else 0.6)
    fake.on_request = slow_first
    return finished


@pytest.mark.parametrize("where", ["pty", "piped"])
def test_action_lines_in_plan_order_under_parallel_uploads(home, fake, where):
    expected = scenario(home, fake)
    done = scramble(fake)
    run = run_in_pty if where == "pty" else piped
    result = run(home, "sync", "--jobs", "4")
    fake.on_request = None
    assert result.code == 0, result
    # The uploads did finish out of order ...
    assert len(done) == 6 and done != sorted(done), done
    # ... yet stdout shows the plan's order.
    assert action_lines(result.stdout) == expected, result.stdout
    assert not BAR.search(result.stdout)


def test_summary_counts_what_happened(home, fake):
    scenario(home, fake)
    result = piped(home, "sync", "--jobs", "1")
    assert result.code == 0, result
    summary = summary_line(result.stdout)
    requests = fake.api_requests()
    upload_count = len(done_uploads(fake))
    deletes = [r for r in requests if r.method == "DELETE" and r.path.startswith("/3/image/")]
    adds = [r for r in requests if re.fullmatch(r"/3/album/\w+/add", r.path)]
    assert upload_count == 6 and len(deletes) == 2 and len(adds) == 1
    assert count_in(summary, "uploaded") == 5, summary
    assert count_in(summary, "replaced") == 1, summary
    assert count_in(summary, "moved") == 1, summary
    assert count_in(summary, "deleted") == 1, summary
    assert "failed" not in summary
    assert re.search(r"1 \.txt", summary), summary
    assert re.search(r"\d+(\.\d+)? ?s\b", summary), summary       # time taken
    left = re.search(r"(\d+) credits left", summary)
    assert left, summary
    used = fake._user_window[1]
    assert int(left.group(1)) == fake.user_limit - used, (summary, used)


def test_summary_counts_failures_and_skipped_files(home, fake):
    folder = new_home(home, files=3)
    (folder / "clip.webp").write_bytes(b"RIFF....WEBP")
    fake.add_fault("status", method="POST", path=r"^/3/image$", code=400, count=1,
                   message="File type invalid (1)")
    result = piped(home, "sync", "--jobs", "1")
    assert result.code == 1, result
    summary = summary_line(result.stdout)
    assert count_in(summary, "uploaded") == 2, summary
    assert count_in(summary, "failed") == 1, summary
    assert re.search(r"1 \.heic", summary, re.I) and "1 .webp" in summary, summary
    assert [a[0] for a in action_lines(result.stdout)].count("!") == 1, result.stdout


def test_quiet_prints_nothing_on_success(home, fake):
    new_home(home, files=2)
    result = piped(home, "-q", "sync")
    assert result.code == 0, result
    assert result.stdout == "" and result.stderr == ""
    folder = home.photos / "Trip"
    (folder / "p9.jpg").write_bytes(jpeg(99))
    result = run_in_pty(home, "sync", "-q")
    assert result.code == 0, result
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result


def test_quiet_still_prints_errors(home, fake):
    new_home(home, files=2)
    fake.add_fault("status", method="POST", path=r"^/3/image$", code=400, count=1,
                   message="File type invalid (1)")
    result = piped(home, "-q", "sync", "--jobs", "1")
    assert result.code == 1, result
    assert result.stdout == ""
    assert "p0.jpg" in result.stderr and "File type invalid" in result.stderr, result


def test_quiet_still_prints_a_missing_folder(home, fake):
    folder = new_home(home, files=2)
    assert piped(home, "sync").code == 0
    os.rename(folder, folder.with_name("gone"))
    result = piped(home, "-q", "sync")
    assert result.code == 1, result
    assert result.stdout == ""
    assert "Trip" in result.stderr


def test_verbose_lists_skipped_files(home, fake):
    folder = new_home(home, files=1)
    (folder / ".hidden.jpg").write_bytes(jpeg(50))
    (folder / "notes.txt").write_text("x")
    result = piped(home, "-v", "sync")
    assert result.code == 0, result
    for name in ("IMG_0001.HEIC", ".hidden.jpg", "notes.txt"):
        assert name in result.stdout + result.stderr, (name, result)
    quiet_default = piped(home, "sync")
    assert "notes.txt" not in quiet_default.stdout + quiet_default.stderr


# --------------------------------------------------------------------------- status

def status_of(home, fake, *extra_roots, env=None) -> Result:
    """Run `status` and assert: no request at all, nothing written in the home or photos."""
    fake.reset_requests()
    roots = [home.path, home.photos, *extra_roots]
    before = snapshot(*roots)
    time.sleep(0.01)
    result = piped(home, "status", env=env)
    assert fake.requests == [], fake.requests
    assert snapshot(*roots) == before
    return result


def test_status_before_and_after_a_sync(home, fake):
    folder = new_home(home, files=3)
    before = status_of(home, fake)
    assert before.code == 0, before
    assert str(folder) in before.stdout or "Trip" in before.stdout
    assert re.search(r"3 upload", before.stdout), before.stdout
    assert re.search(r"(?i)heic", before.stdout), before.stdout
    assert re.search(r"synced: 0|never|new album", before.stdout), before.stdout

    assert piped(home, "sync").code == 0
    album = re.search(r"https://imgur\.com/a/(\w+)", home.albums_bytes().decode()).group(1)
    after = status_of(home, fake)
    assert after.code == 0, after
    assert f"https://imgur.com/a/{album}" in after.stdout
    assert re.search(r"synced: 3 files", after.stdout), after.stdout
    assert re.search(r"to do: nothing", after.stdout), after.stdout
    last = re.search(r"last sync: (.*)", after.stdout)
    assert last and last.group(1).strip() not in ("never", "None", ""), after.stdout

    # Local changes show as pending work, still without a request or a write.
    (folder / "p0.jpg").unlink()
    (folder / "new.jpg").write_bytes(jpeg(77))
    changed = status_of(home, fake)
    assert re.search(r"1 upload", changed.stdout) and re.search(r"1 deletion", changed.stdout), \
        changed.stdout


def test_status_needs_no_credentials_and_no_lock(home, fake):
    new_home(home, files=2)
    assert piped(home, "sync").code == 0
    (home.path / "credentials.json").unlink()
    from filelock import FileLock
    lock = FileLock(str(home.path / "imgurbox.lock"), timeout=0)
    lock.acquire()
    try:
        result = status_of(home, fake)
    finally:
        lock.release()
    assert result.code == 0, result
    assert "synced: 2 files" in result.stdout
    # A broken credentials.json is not even read.
    (home.path / "credentials.json").write_text("{broken")
    assert status_of(home, fake).code == 0


def test_status_shows_the_last_error(home, fake):
    folder = new_home(home, files=2)
    assert piped(home, "sync").code == 0
    os.rename(folder, folder.with_name("unplugged"))
    assert piped(home, "sync").code == 1
    result = status_of(home, fake)
    assert result.code == 0, result
    assert re.search(r"last error: .+", result.stdout), result.stdout


@pytest.mark.parametrize("broken", ["albums", "state"])
def test_status_exits_2_on_an_unreadable_file(home, fake, broken):
    new_home(home, files=1)
    assert piped(home, "sync").code == 0
    if broken == "albums":
        home.write_albums(b"\xff\xfe\x00bad utf-8 \xc3\x28\n")
    else:
        (home.path / "state.json").write_text("{not json")
        for extra in ("state.json.bak", "state.journal"):
            if (home.path / extra).exists():
                (home.path / extra).unlink()
    result = status_of(home, fake)
    assert result.code == 2, result
    assert result.stderr.strip()


# --------------------------------------------------------------------------- log.txt

def test_log_lines_start_with_an_iso_timestamp(home, fake):
    new_home(home, files=2)
    assert piped(home, "sync").code == 0
    lines = (home.path / "log.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) >= 3
    for line in lines:
        assert ISO_LINE.match(line), line


def _fill(path, size, marker):
    line = f"2020-01-01T00:00:00+00:00 {marker} " + "x" * 80 + "\n"
    data = (line * (size // len(line) + 1))[:size - 1] + "\n"
    path.write_text(data, encoding="utf-8")
    return data


def test_log_rotates_before_1_mib(home, fake):
    new_home(home, files=2)
    log = home.path / "log.txt"
    old = _fill(log, MIB - 200, "old")
    assert piped(home, "sync").code == 0
    assert (home.path / "log.txt.1").exists()
    assert (home.path / "log.txt.1").read_text(encoding="utf-8").startswith(old[:200])
    assert log.stat().st_size < 64 * 1024
    assert "old" not in log.read_text(encoding="utf-8")
    for path in home.path.glob("log.txt*"):
        assert path.stat().st_size < MIB, path


def test_log_keeps_three_old_files_and_drops_the_oldest(home, fake):
    new_home(home, files=2)
    fills = {}
    for suffix, marker in (("", "current"), (".1", "one"), (".2", "two"), (".3", "three")):
        fills[marker] = _fill(home.path / f"log.txt{suffix}", MIB - 200, marker)
    assert piped(home, "sync").code == 0
    texts = {p.name: p.read_text(encoding="utf-8") for p in home.path.glob("log.txt*")}
    assert sorted(texts) == ["log.txt", "log.txt.1", "log.txt.2", "log.txt.3"]
    assert texts["log.txt.1"].startswith(fills["current"][:200])
    assert texts["log.txt.2"] == fills["one"]
    assert texts["log.txt.3"] == fills["two"]
    assert not any(" three " in text for text in texts.values())
    assert len(texts["log.txt"]) < 64 * 1024


def test_small_log_is_not_rotated(home, fake):
    new_home(home, files=1)
    _fill(home.path / "log.txt", 1000, "old")
    assert piped(home, "sync").code == 0
    assert not (home.path / "log.txt.1").exists()
    assert " old " in (home.path / "log.txt").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- command line

@pytest.mark.parametrize("args", [["--help"], ["sync", "--help"], ["auth", "--help"],
                                  ["status", "--help"]], ids=["main", "sync", "auth", "status"])
def test_help_shows_an_example(home, fake, args):
    result = piped(home, *args)
    assert result.code == 0, result
    assert re.search(r"(?i)example", result.stdout), result.stdout
    assert "imgurbox.py" in result.stdout
    assert fake.requests == []


@pytest.mark.parametrize("args", [["--bogus"], ["sync", "--jobs", "0"], ["--jobs", "many"],
                                  ["status", "--dry-run"], ["frobnicate"],
                                  ["--max-delete", "-1"], ["-q", "-v"]],
                         ids=["unknown", "jobs-0", "jobs-word", "status-dry-run",
                              "unknown-command", "max-delete-negative", "quiet-verbose"])
def test_bad_flag_gives_one_line_and_exit_2(home, fake, args):
    new_home(home, files=1)
    result = piped(home, *args)
    assert result.code == 2, result
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert fake.requests == []


@pytest.mark.parametrize("args", [("--verify", "status"), ("status", "--dry-run"),
                                  ("auth", "--jobs", "2")])
def test_sync_options_with_another_command_are_refused(home, fake, args):
    result = piped(home, *args)
    assert result.code == 2, result
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    option = next(a for a in args if a.startswith("--"))
    assert option in result.stderr, result.stderr


def test_status_counts_each_folders_own_changes_and_lists_skipped_files(home, fake):
    home.write_credentials()
    cats = home.folder("Cats", {"a.jpg": jpeg(1), "b.jpg": jpeg(2), "c.jpg": jpeg(3)})
    home.write_albums(f"{cats}\n")
    assert home.run("sync").code == 0
    dogs = home.folder("Dogs", {"d.jpg": jpeg(4), "IMG_1.HEIC": b"heic"})
    (cats / "a.jpg").unlink()
    (cats / "b.jpg").write_bytes(jpeg(22))
    home.write_albums(f"{cats}\n{dogs}\n")
    result = status_of(home, fake)
    assert result.code == 0, result
    cats_block, dogs_block = result.stdout.split(str(dogs))
    assert "to do: 1 deletion, 1 replacement" in cats_block, result.stdout
    assert "to do: 1 new album, 1 upload" in dogs_block, result.stdout
    assert "skipped: 1 .heic" in dogs_block and "IMG_1.HEIC" in dogs_block, result.stdout


# --------------------------------------------------------------------------- whole lines, progress

METER = re.compile(r"^(hash|upload|download) +\d+%(\|.*\|)? \d[\d,]*/[\d,]+ files, ")


def test_no_line_begins_inside_a_progress_bar(home, fake):
    """stdout and stderr on one terminal, as in a window: the action lines (stdout) and a
    warning (stderr) printed while bars are drawn each show as a whole line, and no bar
    is left on the screen."""
    home.write_credentials()
    folder = home.folder("Trip", {f"p{i}.jpg": jpeg(i) + b"\0" * 50000 for i in range(8)})
    home.write_albums(f"{folder}\n")
    fake.latency = 0.05
    fake.add_fault("status", method="POST", path=r"^/3/image$", code=400, count=1,
                   message="File type invalid (1)")
    changed = []

    def edit_the_last_file(phase, request):
        if phase == "before" and request.path == "/3/image" and not changed:
            changed.append(True)
            (folder / "p7.jpg").write_bytes(jpeg(999))     # "changed since the scan"
    fake.on_request = edit_the_last_file
    code, raw = run_in_terminal(home, "sync", "--jobs", "2")
    fake.on_request = None
    assert code == 1, raw
    assert "%|" in raw, "no progress was drawn"
    lines = screen(raw)
    for line in lines:                  # no bar, nor a piece of one, is left
        assert not BAR.search(line) and not METER.match(line), (line, lines)
        assert " files, " not in line and "ETA" not in line, (line, lines)
        assert "  * Trip/" not in line, (line, lines)
    actions = [line for line in lines if re.search(r"[+!] (upload|failed) Trip/", line)]
    assert len(actions) == 7, lines                        # 6 uploaded, 1 refused
    for line in actions:
        assert re.fullmatch(r"\+ upload Trip/p\d\.jpg|! failed Trip/p\d\.jpg: Imgur refused "
                            r"the file \(File type invalid \(1\)\); it is retried once it "
                            r"changes", line), (line, lines)
    warnings = [line for line in lines if "changed since the scan" in line]
    assert [w for w in warnings] == ["warning: Trip/p7.jpg changed since the scan: it "
                                     "waits for the next run"], lines
    assert lines[-1].startswith("6 uploaded, 1 new album, 1 failed"), lines


def meter_lines(raw: str, title: str) -> list:
    """Every drawing of a phase's meter line, in order (escapes and CRs removed)."""
    found = []
    for piece in re.split(r"[\r\n]", SGR.sub("", raw)):
        piece = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", piece)
        if re.match(rf"{title} +\d+%", piece):
            found.append(piece)
    return found


def test_progress_shows_totals_from_the_start_of_each_phase(home, fake):
    home.write_credentials()
    files = {f"p{i}.jpg": jpeg(i) + b"\0" * 100000 for i in range(5)}
    folder = home.folder("Trip", files)
    home.write_albums(f"{folder}\n")
    # Each answer takes 0.3 s after its upload's last byte, so the files in flight are
    # on screen for several drawings (at most ten a second), however loaded the machine:
    # with 0.05 s every drawing could fall between two files.
    fake.latency = 0.3
    result = run_in_pty(home, "sync", "--jobs", "2")
    assert result.code == 0, result
    total = sum(len(data) for data in files.values())

    hashing = meter_lines(result.stderr, "hash")
    assert hashing, result.stderr
    # Its first drawing already has the totals: files and bytes, percentage and ETA.
    assert re.match(r"hash +0%\|.*\| 0/5 files, 0 B/\d+\.\d KiB, .*/s, ETA ", hashing[0]), hashing
    assert f"{total / 1024:.1f} KiB" in hashing[0], (hashing[0], total)

    uploading = meter_lines(result.stderr, "upload")
    assert uploading and re.match(r"upload +0%\|.*\| 0/5 files, 0 B/", uploading[0]), uploading
    assert any(re.search(r"[1-5]/5 files, .+ KiB/.+ KiB, [\d.]+ (?:B|KiB|MiB)/s, ETA \d+:\d\d", line)
               for line in uploading), uploading
    # The files in flight are named below the meter, like rclone -P.
    assert re.search(r"\n  \* Trip/p\d\.jpg: \d+% of \d+\.\d KiB", result.stderr), result.stderr
    assert not BAR.search(result.stdout)


def test_no_progress_when_piped_even_for_a_big_phase(home, fake):
    home.write_credentials()
    folder = home.folder("Trip", {f"p{i}.jpg": jpeg(i) for i in range(3)})
    home.write_albums(f"{folder}\n")
    result = piped(home, "sync")
    assert result.code == 0, result
    assert "files, " not in result.stderr and "%|" not in result.stderr, result


def test_verbose_names_each_file_read_and_why(home, fake):
    folder = new_home(home, files=3)
    for path in folder.iterdir():       # long before the scan: trusted on their stat data
        os.utime(path, ns=(10 ** 18, 10 ** 18))
    first = piped(home, "-v", "sync")
    assert first.code == 0, first
    for i in range(3):
        assert f"  read {folder / f'p{i}.jpg'} (new)" in first.stdout.splitlines(), first
    time.sleep(0.01)
    (folder / "p1.jpg").write_bytes(jpeg(41) + b"longer")
    os.utime(folder / "p1.jpg", ns=(10 ** 18, 10 ** 18))
    os.utime(folder / "p2.jpg", ns=(10 ** 18, 10 ** 18 + 10 ** 9))
    second = piped(home, "-v", "sync")
    assert second.code == 0, second
    read = [line for line in second.stdout.splitlines() if line.startswith("  read ")]
    assert read == [f"  read {folder / 'p1.jpg'} (size changed)",
                    f"  read {folder / 'p2.jpg'} (modified)"], second.stdout
    rehash = piped(home, "-v", "sync", "--rehash")
    assert sum("(--rehash)" in line for line in rehash.stdout.splitlines()) == 3, rehash
    quiet = piped(home, "sync", "--rehash")
    assert "  read " not in quiet.stdout


# --------------------------------------------------------------------------- dry run = real run

ANY_ACTION = re.compile(r"^([*+\-~><!=@]) (.*)$")


def normalised_actions(stdout: str) -> list:
    """Every action line, with an album's link or "(new album)" as <album>."""
    found = []
    for line in stdout.splitlines():
        m = ANY_ACTION.match(line)
        if m:
            found.append(re.sub(r"https://imgur\.com/a/\w+|\(new album\)", "<album>", line))
    return found


def readme_symbols() -> set:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme.split("| symbol | action |", 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"^\| `(.)` \|", table, re.M))


def test_dry_run_prints_every_action_as_the_real_run_does(home, fake):
    home.write_credentials()
    a = home.folder("A", {f"a{i}.jpg": jpeg(i) for i in range(6)})
    b = home.folder("B", {"b0.jpg": jpeg(10)})
    home.write_albums(f"{a}\n{b}\n")
    assert piped(home, "sync").code == 0
    os.rename(a / "a0.jpg", a / "a0-renamed.jpg")              # = rename
    (a / "a1.jpg").write_bytes(jpeg(101))                      # ~ replace
    (a / "a2.jpg").unlink()                                    # - delete
    os.rename(a / "a3.jpg", b / "a3.jpg")                      # > move
    (a / "new.jpg").write_bytes(jpeg(102))                     # + upload
    c = home.folder("C", {"c0.jpg": jpeg(20)})                 # * new album
    d = home.folder("D", {"d0.jpg": jpeg(30), "d1.jpg": jpeg(31)})
    remote = fake.create_album("alice", "Remote D", image_ids=[
        fake.create_image("alice", jpeg(30), name="d0.jpg"),   # @ adopt
        fake.create_image("alice", jpeg(32), name="r1.jpg")])  # < download
    other = fake.create_album("alice", "Elsewhere", image_ids=[
        fake.create_image("alice", jpeg(40), name="e0.jpg")])  # * link, < download
    home.write_albums(f"{a}\n{b}\n{c}\n{d} -> https://imgur.com/a/{remote}\n{other}\n")

    dry = piped(home, "--dry-run")
    assert dry.code == 0, dry
    real = piped(home, "sync")
    assert real.code == 0, real
    planned, done = normalised_actions(dry.stdout), normalised_actions(real.stdout)
    # Grouped by album in the plan, in execution order in the run: the same lines.
    assert sorted(planned) == sorted(done), (dry.stdout, real.stdout)
    assert {line[0] for line in done} == set("*=~->+@<"), done
    assert "= rename A/a0.jpg -> A/a0-renamed.jpg" in done
    assert "> move A/a3.jpg -> B/a3.jpg" in done
    assert any(re.fullmatch(r"@ adopt D/d0\.jpg as image \w+", line) for line in done), done
    assert "< download D/r1.jpg" in done and "< download Elsewhere/e0.jpg" in done, done
    assert "* album C <album>" in done and "* album Elsewhere <album>" in done, done
    assert {line[0] for line in planned} <= readme_symbols(), readme_symbols()


def test_dry_run_counts_credits_in_the_right_number(home, fake):
    home.write_credentials()
    a = home.folder("A", {f"a{i}.jpg": jpeg(i) for i in range(4)})
    home.write_albums(f"{a}\n")
    assert piped(home, "sync").code == 0
    (a / "a0.jpg").unlink()
    dry = piped(home, "--dry-run")
    assert dry.code == 0, dry
    assert re.search(r"\): 1 request, 1 credit$", dry.stdout, re.M), dry.stdout
    assert "plan: 1 request, 1 credit" in dry.stdout, dry.stdout
    assert "1 credits" not in dry.stdout and "1 requests" not in dry.stdout, dry.stdout


# --------------------------------------------------------------------------- hints and intents

def test_exit_5_hint_is_the_command_to_paste_and_it_works(tmp_path, fake):
    """The interpreter running (a venv's), the script's absolute path, --home for a home
    that is not the script's folder, quoted for the shell: pasted as shown, it works."""
    home = Home(tmp_path / "my home", tmp_path / "photos", fake)
    folder = home.folder("Trip", {"a.jpg": jpeg(1)})
    home.write_albums(f"{folder}\n")
    result = home.run("sync")
    assert result.code == 5, result
    expected = shlex.join([sys.executable, str(IMGURBOX), "--home", str(home.path), "auth"])
    assert f"`{expected}`" in result.stderr, result.stderr
    tokens = fake.issue_tokens()
    pasted = subprocess.run(["sh", "-c", expected], capture_output=True, text=True,
                            env=home.env({"IMGUR_CLIENT_ID": "test-client-id",
                                          "IMGUR_CLIENT_SECRET": "test-client-secret",
                                          "IMGUR_REFRESH_TOKEN": tokens["refresh_token"]}),
                            stdin=subprocess.DEVNULL, cwd="/")
    assert pasted.returncode == 0, pasted
    assert "Authorized as alice" in pasted.stdout
    assert home.run("sync").code == 0


def test_a_bad_flag_points_at_help_that_can_be_pasted(home, fake):
    result = piped(home, "--bogus")
    assert result.code == 2
    assert f"`{shlex.join([sys.executable, str(IMGURBOX), '--help'])}`" in result.stderr


def test_deleted_folder_offers_each_intent_and_the_summary_names_it(home, fake):
    home.write_credentials()
    cats = home.folder("Cats", {"c.jpg": jpeg(1)})
    garden = home.folder("Garden", {"g.jpg": jpeg(2)})
    home.write_albums(f"{cats}\n{garden}\n")
    assert piped(home, "sync").code == 0
    shutil.rmtree(garden)
    result = piped(home, "sync")
    assert result.code == 1, result
    assert "If you deleted it on purpose, remove line 2 of albums.txt to stop syncing it " \
           "(its album stays on Imgur)" in result.stderr, result.stderr
    assert "reconnect the drive" in result.stderr and "new path on line 2" in result.stderr
    assert "1 failed: Garden (unavailable)" in summary_line(result.stdout), result.stdout


def test_delete_guard_hint_is_a_command_to_paste(home, fake):
    home.write_credentials()
    folder = home.folder("Trip", {f"p{i}.jpg": jpeg(i) for i in range(4)})
    home.write_albums(f"{folder}\n")
    assert piped(home, "sync").code == 0
    for i in range(3):
        (folder / f"p{i}.jpg").unlink()
    result = piped(home, "sync")
    assert result.code == 1, result
    command = shlex.join([sys.executable, str(IMGURBOX), "--home", str(home.path),
                          "--max-delete", "3"])
    assert f"`{command}`" in result.stderr, result.stderr
    pasted = subprocess.run(["sh", "-c", command], capture_output=True, text=True,
                            env=home.env(), stdin=subprocess.DEVNULL)
    assert pasted.returncode == 0, pasted
    assert pasted.stdout.count("- delete Trip/") == 3, pasted.stdout


# --------------------------------------------------------------------------- the hourly limit

def test_a_big_first_sync_says_how_long_the_hourly_limit_makes_it(home, fake):
    fake.user_limit = 500                              # Imgur's: about 50 uploads an hour
    home.write_credentials()
    folder = home.folder("Big", {f"p{i:03}.jpg": jpeg(i) for i in range(120)})
    home.write_albums(f"{folder}\n")
    dry = piped(home, "--dry-run")
    assert dry.code == 0, dry
    assert "120 uploads: about 3 hours at Imgur's ~50 uploads an hour; schedule hourly " \
           "runs" in dry.stdout, dry.stdout
    real = piped(home, "sync", "--jobs", "1")
    assert real.code == 4, real
    uploaded = count_in(summary_line(real.stdout), "uploaded")
    assert 40 <= uploaded < 50 and uploaded == len(done_uploads(fake)), real
    left = 120 - uploaded
    assert f"{left} uploads left: about 2 hours at Imgur's ~50 uploads an hour; " \
           "schedule hourly runs" in real.stderr, real.stderr


def test_a_small_sync_gives_no_hours(home, fake):
    new_home(home, files=3)
    dry = piped(home, "--dry-run")
    assert dry.code == 0 and "uploads an hour" not in dry.stdout, dry


# --------------------------------------------------------------------------- status: time, --json

STATUS_KEYS = {"line", "folder", "album", "album_url", "mode", "download_only", "synced_files",
               "to_do", "held_back", "errors", "refused", "unreadable", "skipped",
               "skipped_names", "last_sync", "last_sync_seconds_ago", "last_error"}


def status_json(home, fake, env=None) -> dict:
    fake.reset_requests()
    before = snapshot(home.path, home.photos)
    result = piped(home, "status", "--json", env=env)
    assert result.code == 0, result
    assert fake.requests == [] and snapshot(home.path, home.photos) == before
    assert result.stdout.isascii(), result.stdout
    return json.loads(result.stdout)                     # one document, nothing else


def test_status_shows_local_time_and_how_long_ago(home, fake):
    import datetime as dt
    new_home(home, files=2)
    assert piped(home, "sync").code == 0
    three_hours_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=3, minutes=5)
    state = json.loads((home.path / "state.json").read_text(encoding="utf-8"))
    for album in state["albums"].values():
        album["last_sync"] = three_hours_ago.isoformat(timespec="seconds")
    (home.path / "state.json").write_text(json.dumps(state), encoding="utf-8")
    (home.path / "log.txt").unlink()                     # its "sync ok" line is newer
    tokyo = {"TZ": "Asia/Tokyo"}
    shown = piped(home, "status", env=tokyo)
    assert shown.code == 0, shown
    local = three_hours_ago.astimezone(dt.timezone(dt.timedelta(hours=9)))
    assert f"  last sync: {local:%Y-%m-%d %H:%M} (3 hours ago)" in shown.stdout, shown.stdout
    document = status_json(home, fake, env=tokyo)
    folder = document["folders"][0]
    assert folder["last_sync"] == local.isoformat(timespec="seconds"), folder
    assert folder["last_sync"].endswith("+09:00")
    assert 3 * 3600 + 5 * 60 <= folder["last_sync_seconds_ago"] < 3 * 3600 + 10 * 60


def test_status_json_has_the_documented_keys(home, fake):
    folder = new_home(home, files=3)
    before = status_json(home, fake)
    assert set(before) == {"imgurbox", "home", "folders", "pending_operations"}
    assert before["home"] == str(home.path) and before["pending_operations"] == 0
    [entry] = before["folders"]
    assert set(entry) == STATUS_KEYS, set(entry) ^ STATUS_KEYS
    assert entry["folder"] == str(folder) and entry["album"] is None and entry["line"] == 1
    assert entry["to_do"] == {"new album": 1, "upload": 3}, entry
    assert entry["skipped"] == {".heic": 1} and entry["skipped_names"] == ["IMG_0001.HEIC"]
    assert entry["last_sync"] is None and entry["synced_files"] == 0

    assert piped(home, "sync").code == 0
    (folder / "p0.jpg").unlink()
    (folder / "odd\x1b]52;c;eA==\x07\u202e.txt").write_bytes(b"x")
    after = status_json(home, fake)
    [entry] = after["folders"]
    assert entry["album_url"] == f"https://imgur.com/a/{entry['album']}"
    assert entry["synced_files"] == 3 and entry["to_do"] == {"deletion": 1}, entry
    assert "odd\x1b]52;c;eA==\x07\u202e.txt" in entry["skipped_names"], entry
    assert entry["last_sync"] and entry["last_sync_seconds_ago"] < 600
    # The README documents every key.
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for key in STATUS_KEYS | set(after):
        assert f"`{key}`" in readme, key


def test_an_empty_new_folder_is_said_to_start_an_empty_album(home, fake):
    home.write_credentials()
    folder = home.folder("Empty")
    home.write_albums(f"{folder}\n")
    result = piped(home, "--dry-run")
    assert result.code == 0, result
    assert f"warning: {folder} holds no photo yet: its album starts empty" in result.stderr
