"""Terminal escapes from outside never reach the terminal or log.txt (issue 13 item 3;
README "Command line": names and messages from outside).

Album titles, image names and messages from Imgur, and local file and folder names, carry
ESC sequences (CSI, OSC 52 clipboard writes, window titles), NUL, CR, LF, DEL, C1 controls
and bidi overrides. Each test runs the real script against the fake, reads the raw bytes of
stdout, stderr and log.txt, and finds no control character in them but the line ends
imgurbox writes itself, while the names do show, escaped.
"""

from __future__ import annotations

import os
import re

from imagefiles import jpeg
from mirror_check import done_uploads, load_state, state_files

# Everything a terminal (or a log viewer) could act on, in UTF-8: C0 but LF, DEL, C1,
# ALM, LRM/RLM, the line and paragraph separators, the bidi embeddings and overrides,
# the isolates.
FORBIDDEN = re.compile(rb"[\x00-\x09\x0b-\x1f\x7f]|\xc2[\x80-\x9f]|\xd8\x9c"
                       rb"|\xe2\x80[\x8e\x8f\xa8-\xae]|\xe2\x81[\xa6-\xa9]")

OSC52 = "\x1b]52;c;ZXZpbA==\x07"                 # "write 'evil' to the clipboard"
CLEAR = "\x1b[2J"
TITLE = "\x1b]0;owned\x07"
# Local file names: everything a POSIX name can hold (not NUL, not "/").
LOCAL_NAMES = {
    "esc": f"esc{CLEAR}.jpg",
    "osc52": f"osc{OSC52}.jpg",
    "cr": "cr\rdone.jpg",
    "lf": "lf\n- delete forged.jpg",
    "del": "del\x7f.jpg",
    "c1": "c1\u009b2J\u0085.jpg",
    "bidi": "bidi\u202egpj.exe.jpg",
    "isolate": "iso\u2066x\u2069.jpg",
    "tab-bel": "tab\tbel\x07.jpg",
}
# What each looks like once escaped (the form README "Command line" documents).
ESCAPED = {
    "esc": r"esc\x1b[2J.jpg",
    "osc52": r"osc\x1b]52;c;ZXZpbA==\x07.jpg",
    "cr": r"cr\rdone.jpg",
    "lf": r"lf\n- delete forged.jpg",
    "del": r"del\x7f.jpg",
    "c1": r"c1\x9b2J\x85.jpg",
    "bidi": r"bidi\u202egpj.exe.jpg",
    "isolate": r"iso\u2066x\u2069.jpg",
    "tab-bel": r"tab\tbel\x07.jpg",
}
HOSTILE_FOLDER = f"Trip{TITLE}\u202e"
HOSTILE_FOLDER_SHOWN = r"Trip\x1b]0;owned\x07\u202e"


class RawRun:
    """One run's exit code and raw bytes: stdout, stderr."""

    def __init__(self, code, stdout: bytes, stderr: bytes):
        self.code, self.stdout, self.stderr = code, stdout, stderr

    @property
    def text(self) -> str:
        return (self.stdout + self.stderr).decode("utf-8")

    def __repr__(self):
        return f"RawRun({self.code}, {self.stdout!r}, {self.stderr!r})"


def raw_run(home, *args, env=None) -> RawRun:
    proc = home.start(*args, env=env)
    stdout, stderr = proc.communicate(timeout=120)
    return RawRun(proc.returncode, stdout, stderr)


def assert_clean(data: bytes, what: str) -> None:
    found = FORBIDDEN.search(data)
    assert found is None, f"{what}: control {found.group()!r} in {data!r}"


def assert_run_clean(home, result: RawRun) -> None:
    assert_clean(result.stdout, "stdout")
    assert_clean(result.stderr, "stderr")
    log = home.path / "log.txt"
    if log.exists():
        assert_clean(log.read_bytes(), "log.txt")


def lines_starting(result: RawRun, prefix: str) -> list:
    return [line for line in result.stdout.decode("utf-8").splitlines()
            if line.startswith(prefix)]


def hostile_folder(home):
    home.write_credentials()
    folder = home.folder(HOSTILE_FOLDER, {name: jpeg(i) for i, name
                                          in enumerate(LOCAL_NAMES.values())})
    home.write_albums(f"{folder}\n")
    return folder


# --------------------------------------------------------------------------- local names

def test_hostile_local_names_are_escaped_in_dry_run_sync_verbose_and_status(home, fake):
    folder = hostile_folder(home)

    dry = raw_run(home, "--dry-run")
    assert dry.code == 0, dry
    assert_run_clean(home, dry)
    for shown in ESCAPED.values():
        assert shown in dry.text, (shown, dry)
    assert HOSTILE_FOLDER_SHOWN in dry.text, dry
    assert lines_starting(dry, "- delete") == [], dry       # no forged line

    real = raw_run(home, "-v", "sync")
    assert real.code == 0, real
    assert_run_clean(home, real)
    assert len(done_uploads(fake)) == len(LOCAL_NAMES)
    uploaded = [line for line in lines_starting(real, "+ upload ")]
    assert len(uploaded) == len(LOCAL_NAMES), real
    for shown in ESCAPED.values():
        assert any(line.endswith("/" + shown) for line in uploaded), (shown, uploaded)
    assert lines_starting(real, "- delete") == [], real

    # A real delete of the name that holds a newline is one line, escaped.
    os.unlink(folder / LOCAL_NAMES["lf"])
    deleted = raw_run(home, "sync")
    assert deleted.code == 0, deleted
    assert_run_clean(home, deleted)
    assert lines_starting(deleted, "- delete") == [
        f"- delete {HOSTILE_FOLDER_SHOWN}/{ESCAPED['lf']}"], deleted

    status = raw_run(home, "status")
    assert status.code == 0, status
    assert_run_clean(home, status)
    assert HOSTILE_FOLDER_SHOWN in status.text, status


def test_status_lists_hostile_skipped_and_unreadable_names_escaped(home, fake):
    home.write_credentials()
    folder = home.folder("Trip", {"ok.jpg": jpeg(1), f"notes{OSC52}\n.txt": b"x"})
    home.write_albums(f"{folder}\n")
    assert raw_run(home, "sync").code == 0
    os.symlink(folder / "nowhere", folder / f"gone{CLEAR}\r.jpg")   # cannot be read
    for args in (("status",), ("-v", "sync"), ("-v", "--dry-run")):
        result = raw_run(home, *args)
        assert_run_clean(home, result)
        assert r"notes\x1b]52;c;ZXZpbA==\x07\n.txt" in result.text, (args, result)
        assert r"gone\x1b[2J\r.jpg" in result.text, (args, result)


def test_a_hostile_folder_name_that_vanished_is_escaped_in_the_error(home, fake):
    folder = hostile_folder(home)
    assert raw_run(home, "sync").code == 0
    os.rename(folder, folder.with_name("elsewhere"))
    for args in (("sync",), ("--dry-run",), ("status",)):
        result = raw_run(home, *args)
        assert result.code in (0, 1), (args, result)
        assert_run_clean(home, result)
        assert HOSTILE_FOLDER_SHOWN in result.text, (args, result)


def test_bad_albums_txt_line_with_escapes_exit_2_escaped(home, fake):
    home.write_credentials()
    home.write_albums(f"Trip{CLEAR} -> https://imgur.com/a/{OSC52}\n")
    for args in (("sync",), ("--dry-run",), ("status",)):
        result = raw_run(home, *args)
        assert result.code == 2, (args, result)
        assert_run_clean(home, result)
        assert r"\x1b]52;c;ZXZpbA==\x07" in result.stderr.decode(), (args, result)
        assert len(result.stderr.decode().splitlines()) == 2, result   # message + the line


# --------------------------------------------------------------------------- from Imgur

REMOTE_TITLE = f"Album{OSC52}{CLEAR}\x00\n- delete X/forged.jpg\u202e"
REMOTE_NAMES = {
    "nul": "nul\x00.jpg",
    "osc52": f"osc{OSC52}.jpg",
    "csi": f"csi{CLEAR}\x1b[31m.jpg",
    "newline": "nl\r\n- delete Trip/forged.jpg",
    "c1": "c1\u009d0;t\u009c.jpg",
    "bidi": "bidi\u202egpj.exe.jpg",
    "del": "del\x7f.jpg",
}


def hostile_remote_album(fake, seed=500) -> str:
    images = [fake.create_image("alice", jpeg(seed + i), name=name)
              for i, name in enumerate(REMOTE_NAMES.values())]
    return fake.create_album("alice", REMOTE_TITLE, image_ids=images)


def assert_no_forged_lines(result: RawRun) -> None:
    for line in result.stdout.decode("utf-8").splitlines():
        assert "forged" not in line or not line.startswith("- "), (line, result)


def test_hostile_remote_title_and_names_in_a_downloaded_album(home, fake):
    home.write_credentials()
    album = hostile_remote_album(fake)
    home.write_albums(f"{album}\n")

    dry = raw_run(home, "--dry-run")
    assert dry.code == 0, dry
    assert_run_clean(home, dry)
    assert_no_forged_lines(dry)
    # The dry run names the folder and files as the run will: made safe from the title.
    assert len(lines_starting(dry, "* album ")) == 1, dry
    assert len(lines_starting(dry, "< download ")) == len(REMOTE_NAMES), dry

    real = raw_run(home, "sync")
    assert real.code == 0, real
    assert_run_clean(home, real)
    assert_no_forged_lines(real)
    assert len(lines_starting(real, "< download ")) == len(REMOTE_NAMES), real
    # The files themselves got names without controls (README "Existing albums").
    state = load_state(home)
    for name in state_files(state, album):
        assert name.isprintable(), name


def test_hostile_remote_names_in_a_linked_album_and_under_verify(home, fake):
    home.write_credentials()
    album = hostile_remote_album(fake)
    folder = home.folder("Mine", {"local.jpg": jpeg(1)})
    home.write_albums(f"{folder} -> https://imgur.com/a/{album}\n")
    for args in (("--dry-run",), ("sync",)):
        result = raw_run(home, *args)
        assert result.code == 0, (args, result)
        assert_run_clean(home, result)
        assert_no_forged_lines(result)
    # An image added on Imgur later, found by --verify.
    fake.create_image("alice", jpeg(900), name=f"late{OSC52}\n- delete Mine/local.jpg",
                      album=album)
    for args in (("--dry-run", "--verify"), ("--verify",)):
        result = raw_run(home, *args)
        assert result.code == 0, (args, result)
        assert_run_clean(home, result)
        assert_no_forged_lines(result)
        assert lines_starting(result, "- delete") == [], result
        assert len(lines_starting(result, "< download ")) == 1, result
    assert "local.jpg" in state_files(load_state(home), album)


def test_hostile_messages_from_imgur_are_escaped(home, fake):
    home.write_credentials()
    folder = home.folder("Trip", {"a.jpg": jpeg(1), "b.jpg": jpeg(2)})
    home.write_albums(f"{folder}\n")
    message = f"bad{OSC52}{CLEAR}\r\n- delete Trip/b.jpg\u202e\x00"
    fake.add_fault("status", method="POST", path=r"^/3/image$", code=400, count=1,
                   message=message)
    result = raw_run(home, "sync", "--jobs", "1")
    assert result.code == 1, result
    assert_run_clean(home, result)
    assert lines_starting(result, "- delete") == [], result
    assert r"bad\x1b]52;c;ZXZpbA==\x07\x1b[2J\r\n- delete Trip/b.jpg\u202e\x00" \
        in result.text, result
    assert "bad" in (home.path / "log.txt").read_text(encoding="utf-8")
    # ... and a failed album read in a dry run.
    other = fake.create_album("alice", "Other")
    home.write_albums(f"{folder}\n{other}\n")
    fake.add_fault("status", method="GET", path=rf"^/3/album/{other}$", code=400,
                   count=None, message=message)
    dry = raw_run(home, "--dry-run")
    assert_run_clean(home, dry)
    assert r"\x1b]52" in dry.text, dry
    assert lines_starting(dry, "- delete") == [], dry


def test_auth_shows_a_hostile_account_name_escaped(home, fake):
    name = f"eve{TITLE}\u202e"
    fake.add_account(name)
    tokens = fake.issue_tokens(name)
    result = raw_run(home, "auth", env={"IMGUR_CLIENT_ID": "test-client-id",
                                        "IMGUR_CLIENT_SECRET": "test-client-secret",
                                        "IMGUR_REFRESH_TOKEN": tokens["refresh_token"]})
    assert result.code == 0, result
    assert_run_clean(home, result)
    assert r"Authorized as eve\x1b]0;owned\x07\u202e." in result.text, result


def test_escaping_is_one_function_for_output_and_log():
    """The documented escape forms, and escaping twice changes nothing."""
    from conftest import import_imgurbox
    printable = import_imgurbox().printable
    cases = {"a\x1bb": r"a\x1bb", "\n\r\t": r"\n\r\t", "\x00\x7f": r"\x00\x7f",
             "\u0085\u009f": r"\x85\x9f", "\u202a\u202e\u2066\u2069": r"\u202a\u202e\u2066\u2069",
             "\udce9": r"\xe9", "Caf\u00e9 日本 ok": "Caf\u00e9 日本 ok"}
    for raw, shown in cases.items():
        assert printable(raw) == shown
        assert printable(shown) == shown
