"""Tests of albums.txt (README "albums.txt"): end to end against the fake, and the parser
through import."""

from __future__ import annotations

import ntpath
import os
import re
from pathlib import Path

import pytest

from conftest import import_imgurbox
from imagefiles import jpeg
from mirror_check import album_creations, album_names, delete_requests, field, uploads

ALBUM_URL = re.compile(rb"-> https://imgur\.com/a/([A-Za-z0-9]+)")
BOM = b"\xef\xbb\xbf"


# --------------------------------------------------------------------------- helpers

def linked_ids(home) -> list[str]:
    return [m.decode() for m in ALBUM_URL.findall(home.albums_bytes())]


def mentions_line(output: str, n: int) -> bool:
    """The output names line n (as 'line n', 'albums.txt:n' or a leading 'n:')."""
    pat = rf"(?im)(\bline\s*{n}\b|albums\.txt[:(]\s*{n}\b|^\s*{n}\s*[:|)])"
    return re.search(pat, output) is not None


def sync_ok(home, *args, **kw):
    r = home.run("sync", *args, **kw)
    assert r.code == 0, r
    return r


def rewritten(before: bytes, line: bytes, album_id: str) -> bytes:
    """before, with the one occurrence of line (as typed) linked to album_id."""
    assert before.count(line) == 1
    return before.replace(line, line + b" -> https://imgur.com/a/" + album_id.encode())


# --------------------------------------------------------------------------- comments, quotes, BOM, CRLF

def test_comments_are_ignored_and_kept(home, fake):
    folder = home.folder("Trip", {"a.jpg": jpeg(1)})
    home.write_credentials()
    before = (b"# a comment\n// another comment\n//\n  # indented comment\n"
              + str(folder).encode() + b"\n#" + b"x" * 3 + b"\n")
    home.write_albums(before)
    sync_ok(home)
    assert len(album_creations(fake)) == 1
    (album_id,) = linked_ids(home)
    assert home.albums_bytes() == rewritten(before, str(folder).encode(), album_id)


def test_double_slash_without_space_is_not_a_comment(home, fake):
    # '//nonexistent' names a folder (it has '/'), which does not exist and has no history
    home.write_credentials()
    home.write_albums("//nonexistent-folder-for-imgurbox-tests\n")
    r = home.run("sync")
    assert r.code == 2, r
    assert fake.api_requests() == []


def test_quoted_path_with_spaces(home, fake):
    folder = home.folder("My Summer Trip", {"a.jpg": jpeg(1)})
    home.write_credentials()
    home.write_albums(f'  "{folder}"  \n')
    sync_ok(home)
    (album_id,) = linked_ids(home)
    assert field(fake.albums[album_id], "title") == "My Summer Trip"
    assert album_names(fake, album_id) == ["a.jpg"]
    line = home.albums_bytes().decode()
    assert str(folder) in line and line.endswith(f"-> https://imgur.com/a/{album_id}\n")
    # the rewritten line reads back as the same folder and album
    fake.reset_requests()
    sync_ok(home)
    assert fake.api_requests() == []


def test_bom_and_crlf_are_kept_when_rewriting(home, fake):
    a = home.folder("A", {"a.jpg": jpeg(1)})
    b = home.folder("B", {"b.jpg": jpeg(2)})
    home.write_credentials()
    before = BOM + b"# albums\r\n" + str(a).encode() + b"\r\n\r\n" + str(b).encode() + b"\n# tail\r\n"
    home.write_albums(before)
    sync_ok(home)
    ids = linked_ids(home)
    assert len(ids) == 2
    after = home.albums_bytes()
    expected = rewritten(rewritten(before, str(a).encode(), ids[0]), str(b).encode(), ids[1])
    assert after == expected
    fake.reset_requests()
    sync_ok(home)
    assert fake.api_requests() == []
    assert home.albums_bytes() == expected


def test_line_without_final_newline_stays_without(home, fake):
    folder = home.folder("A", {"a.jpg": jpeg(1)})
    home.write_credentials()
    before = b"# x\r\n" + str(folder).encode()
    home.write_albums(before)
    sync_ok(home)
    (album_id,) = linked_ids(home)
    assert home.albums_bytes() == rewritten(before, str(folder).encode(), album_id)


# --------------------------------------------------------------------------- paths

def _folder_in_home(home, name, files) -> Path:
    folder = home.path / "photos" / name
    folder.mkdir(parents=True)
    for file_name, data in files.items():
        (folder / file_name).write_bytes(data)
    return folder


def _chdir_elsewhere(monkeypatch, tmp_path):
    """Make the current directory (inherited by the run) one holding a decoy photos/Trip."""
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "photos" / "Trip").mkdir(parents=True)
    (elsewhere / "photos" / "Trip" / "decoy.jpg").write_bytes(jpeg(666))
    monkeypatch.chdir(elsewhere)


@pytest.mark.parametrize("line", ["photos/Trip", "./photos/Trip", "photos/Trip/", "photos/../photos/Trip"])
def test_relative_path_is_relative_to_albums_txt_not_cwd(home, fake, tmp_path, monkeypatch, line):
    _folder_in_home(home, "Trip", {"a.jpg": jpeg(1)})
    _chdir_elsewhere(monkeypatch, tmp_path)
    home.write_credentials()
    home.write_albums(line + "\n")
    r = home.run("sync")
    assert r.code == 0, r
    (album_id,) = linked_ids(home)
    assert album_names(fake, album_id) == ["a.jpg"]
    assert home.albums_bytes() == rewritten((line + "\n").encode(), line.encode(), album_id)


def test_relative_path_outside_the_home(home, fake, tmp_path, monkeypatch):
    folder = home.folder("Trip", {"a.jpg": jpeg(1)})  # tmp/photos/Trip, beside tmp/home
    line = os.path.relpath(folder, home.path)
    assert line.startswith("..")
    _chdir_elsewhere(monkeypatch, tmp_path)
    home.write_credentials()
    home.write_albums(line + "\n")
    r = home.run("sync")
    assert r.code == 0, r
    (album_id,) = linked_ids(home)
    assert album_names(fake, album_id) == ["a.jpg"]


def test_tilde_expands_to_the_user_home(home, fake, tmp_path):
    user_home = tmp_path / "userhome"
    (user_home / "Pics").mkdir(parents=True)
    (user_home / "Pics" / "p.jpg").write_bytes(jpeg(3))
    home.write_credentials()
    home.write_albums("~/Pics\n")
    r = home.run("sync", env={"HOME": str(user_home), "USERPROFILE": str(user_home)})
    assert r.code == 0, r
    (album_id,) = linked_ids(home)
    assert album_names(fake, album_id) == ["p.jpg"]
    assert home.albums_bytes() == f"~/Pics -> https://imgur.com/a/{album_id}\n".encode()


# --------------------------------------------------------------------------- invalid lines

def _assert_rejected_without_request(home, fake, r, bad_lines, albums_before):
    out = r.stdout + r.stderr
    assert r.code == 2, r
    for n in bad_lines:
        assert mentions_line(out, n), f"line {n} not reported:\n{out}"
    assert fake.api_requests() == []
    assert home.albums_bytes() == albums_before
    assert not (home.path / "state.json").exists()


def test_every_invalid_line_is_listed_before_any_request(home, fake):
    good = home.folder("Good", {"a.jpg": jpeg(1)})
    home.write_credentials()
    lines = [
        "# header",                                       # 1
        str(good),                                        # 2 valid, would need work
        "abc",                                            # 3 too short for an ID, no path
        "# comment",                                      # 4
        "toolongforanalbumid123",                         # 5 not 5-7 letters and digits
        f"{good}2 -> ../account/me",                      # 6 invalid album
        "",                                               # 7
        f"{home.path / 'does-not-exist'}",                # 8 missing PATH, no history
        f"{good} -> https://example.com/a/abcde12",       # 9 not imgur.com
        "ab_cd1",                                         # 10 underscore: not an ID, not a path
    ]
    home.write_albums("\n".join(lines) + "\n")
    before = home.albums_bytes()
    r = home.run("sync")
    _assert_rejected_without_request(home, fake, r, [3, 5, 6, 8, 9, 10], before)


def test_invalid_utf8_is_an_error_naming_the_line(home, fake):
    good = home.folder("Good", {"a.jpg": jpeg(1)})
    home.write_credentials()
    home.write_albums(str(good).encode() + b"\n# ok\n" + b"/photos/caf\xe9\n")
    before = home.albums_bytes()
    r = home.run("sync")
    _assert_rejected_without_request(home, fake, r, [3], before)


def test_missing_bare_path_without_history_is_invalid(home, fake):
    home.write_credentials()
    home.write_albums(f"{home.photos / 'Nowhere'}\n")
    before = home.albums_bytes()
    r = home.run("sync")
    _assert_rejected_without_request(home, fake, r, [1], before)


def test_invalid_lines_are_reported_in_dry_run_too(home, fake):
    home.write_credentials()
    home.write_albums("# x\nabc\n")
    r = home.run("sync", "--dry-run")
    assert r.code == 2, r
    assert mentions_line(r.stdout + r.stderr, 2)
    assert fake.api_requests() == []


@pytest.mark.parametrize("album", [
    "../account/me",
    "abc/../../account/me",
    "https://imgur.com/a/../../3/account/me",
    "https://imgur.com/a/abc%2F..%2Fme",
    "https://evil.example/a/abcde12",
    "https://imgur.com.evil.example/a/abcde12",
    "abcd",
    "abcdefghijk",
    "abc de",
])
def test_invalid_album_never_reaches_the_api(home, fake, album):
    folder = home.folder("Trip", {"a.jpg": jpeg(1)})
    home.write_credentials()
    home.write_albums(f"{folder} -> {album}\n")
    before = home.albums_bytes()
    r = home.run("sync")
    assert r.code == 2, r
    assert mentions_line(r.stdout + r.stderr, 1), r
    assert fake.api_requests() == []
    assert home.albums_bytes() == before


# --------------------------------------------------------------------------- duplicates

@pytest.mark.parametrize("kind", ["absolute-and-relative", "trailing-slash", "dot-segments", "symlink"])
def test_one_folder_on_two_lines_is_an_error_naming_both(home, fake, kind):
    folder = home.folder("Trip", {"a.jpg": jpeg(1)})
    (folder.parent / "x").mkdir()
    home.write_credentials()
    first = str(folder)
    if kind == "absolute-and-relative":
        second = os.path.relpath(folder, home.path)
    elif kind == "trailing-slash":
        second = str(folder) + "/"
    elif kind == "dot-segments":
        second = str(folder.parent / "." / "x" / ".." / folder.name)
    else:
        second = str(home.path / "trip-link")
        os.symlink(folder, second, target_is_directory=True)
    home.write_albums(f"# c\n{first}\n# c\n{second}\n")
    before = home.albums_bytes()
    r = home.run("sync")
    _assert_rejected_without_request(home, fake, r, [2, 4], before)


@pytest.mark.parametrize("second", ["ID", "https://imgur.com/a/ID", "imgur.com/a/some-title-ID"])
def test_one_album_on_two_lines_is_an_error_naming_both(home, fake, second):
    album_id = fake.create_album("alice", "Shared")
    a = home.folder("A", {"a.jpg": jpeg(1)})
    b = home.folder("B", {"b.jpg": jpeg(2)})
    home.write_credentials()
    home.write_albums(f"{a} -> https://imgur.com/a/{album_id}\n\n{b} -> {second.replace('ID', album_id)}\n")
    before = home.albums_bytes()
    r = home.run("sync")
    _assert_rejected_without_request(home, fake, r, [1, 3], before)


# --------------------------------------------------------------------------- album URL forms

@pytest.mark.parametrize("form", [
    "ID",
    "https://imgur.com/a/ID",
    "imgur.com/a/slug-words-ID",
    "http://m.imgur.com/a/ID/",
    "www.imgur.com/gallery/foo-ID?x#y",
    "https://imgur.com/a/ID#frag",
])
def test_album_url_forms_link_to_the_existing_album(home, fake, form):
    album_id = fake.create_album("alice", "Existing")
    folder = home.folder("Trip", {"a.jpg": jpeg(1), "b.jpg": jpeg(2)})
    home.write_credentials()
    home.write_albums(f"{folder} -> {form.replace('ID', album_id)}\n")
    r = home.run("sync")
    assert r.code == 0, r
    assert not album_creations(fake)
    assert len(uploads(fake)) == 2
    assert album_names(fake, album_id) == ["a.jpg", "b.jpg"]
    assert list(fake.albums) == [album_id]


def test_link_adopts_images_by_name_and_deletes_nothing(home, fake):
    album_id = fake.create_album("alice", "Existing")
    fake.create_image("alice", jpeg(1), "a.jpg", album=album_id)
    fake.create_image("alice", jpeg(9), "remote-only.jpg", album=album_id)
    folder = home.folder("Trip", {"a.jpg": jpeg(1, comment="local edit"), "local-only.jpg": jpeg(2)})
    home.write_credentials()
    home.write_albums(f"{folder} -> {album_id}\n")
    r = home.run("sync")
    assert r.code == 0, r
    assert not delete_requests(fake)
    assert len(uploads(fake)) == 1
    assert sorted(p.name for p in folder.iterdir()) == ["a.jpg", "local-only.jpg", "remote-only.jpg"]
    assert album_names(fake, album_id) == ["a.jpg", "local-only.jpg", "remote-only.jpg"]


def test_bare_album_id_downloads_into_a_folder_in_home(home, fake):
    album_id = fake.create_album("alice", "Holiday")
    fake.create_image("alice", jpeg(1), "one.jpg", album=album_id)
    home.write_credentials()
    home.write_albums(f"{album_id}\n")
    r = home.run("sync")
    assert r.code == 0, r
    assert (home.path / "Holiday" / "one.jpg").is_file()
    assert home.albums_bytes() == f"Holiday -> https://imgur.com/a/{album_id}\n".encode()


# --------------------------------------------------------------------------- the parser, through import

@pytest.fixture(scope="module")
def imgurbox_module():
    return import_imgurbox()  # an import error fails the tests, it does not skip them


@pytest.fixture
def parse(imgurbox_module):
    return imgurbox_module.parse_albums_txt


def win(parse, data: bytes, exists=lambda p: True, state_folders=()):
    return parse(data, "C:\\Users\\me\\imgurbox", state_folders=state_folders, pathmod=ntpath, exists=exists)


def same_win_path(a, b) -> bool:
    return ntpath.normcase(ntpath.normpath(a)) == ntpath.normcase(ntpath.normpath(b))


@pytest.mark.parametrize("line,expected", [
    ("C:\\Photos", "C:\\Photos"),
    ("D:/x", "D:\\x"),
    ("\\\\server\\share\\pics", "\\\\server\\share\\pics"),
    ("\"C:\\My Photos\\2024\"", "C:\\My Photos\\2024"),
    ("pics\\2024", "C:\\Users\\me\\imgurbox\\pics\\2024"),
    (".\\pics", "C:\\Users\\me\\imgurbox\\pics"),
    ("..\\other", "C:\\Users\\me\\other"),
])
def test_windows_paths(parse, line, expected):
    parsed = win(parse, line.encode() + b"\r\n")
    assert parsed.errors == []
    (entry,) = parsed.lines
    assert entry.number == 1
    assert entry.kind == "path"
    assert same_win_path(entry.path, expected), entry.path


def test_windows_linked_line(parse):
    parsed = win(parse, b"C:\\Photos\\Trip -> https://imgur.com/a/Ab3De9z\r\n")
    assert parsed.errors == []
    (entry,) = parsed.lines
    assert (entry.number, entry.kind, entry.album_id) == (1, "link", "Ab3De9z")
    assert same_win_path(entry.path, "C:\\Photos\\Trip")


def test_windows_arrow_splits_on_the_last_one(parse):
    parsed = win(parse, b"C:\\a -> b -> Ab3De9z\r\n")
    assert parsed.errors == []
    (entry,) = parsed.lines
    assert entry.kind == "link" and entry.album_id == "Ab3De9z"
    assert same_win_path(entry.path, "C:\\a -> b")


def test_windows_crlf_and_bom_line_numbers(parse):
    data = BOM + b"# comment\r\nC:\\A\r\n\r\n// c\r\n\"D:\\B C\" -> imgur.com/a/some-slug-Xy12345\r\n"
    parsed = win(parse, data)
    assert parsed.errors == []
    assert [(e.number, e.kind) for e in parsed.lines] == [(2, "path"), (5, "link")]
    first, second = parsed.lines
    assert same_win_path(first.path, "C:\\A")  # no BOM, no \r in the path
    assert same_win_path(second.path, "D:\\B C")
    assert second.album_id == "Xy12345"


def test_windows_bare_album_id(parse):
    parsed = win(parse, b"Ab3De9z\r\nhttps://imgur.com/gallery/title-Qw12345\r\n", exists=lambda p: False)
    assert parsed.errors == []
    assert [(e.number, e.kind, e.album_id) for e in parsed.lines] == [
        (1, "album", "Ab3De9z"), (2, "album", "Qw12345")]


def test_windows_existing_folder_wins_over_album_id(parse):
    parsed = win(parse, b"Ab3De9z\r\n", exists=lambda p: True)
    assert parsed.errors == []
    assert parsed.lines[0].kind == "path"


def test_windows_missing_path_without_history_is_an_error(parse):
    parsed = win(parse, b"# x\r\nC:\\Gone\r\n", exists=lambda p: False)
    assert [n for n, _ in parsed.errors] == [2]


def test_windows_missing_path_with_history_is_a_path(parse):
    # the state knows its folders by key: normcase(realpath)
    key = ntpath.normcase(ntpath.realpath("C:\\Gone"))
    parsed = win(parse, b"C:\\Gone\r\n", exists=lambda p: False, state_folders=(key,))
    assert parsed.errors == []
    assert parsed.lines[0].kind == "path"


def test_windows_two_spellings_of_one_folder_name_both_lines(parse):
    parsed = win(parse, b"C:\\Photos\r\n# x\r\nc:/photos/\r\n")
    assert parsed.errors, "duplicate folder not reported"
    reported = {n for n, _ in parsed.errors} | {
        int(m) for _, msg in parsed.errors for m in re.findall(r"\b\d+\b", msg)}
    assert {1, 3} <= reported


def test_windows_every_bad_line_is_an_error(parse):
    data = b"C:\\ok\r\nabc\r\nC:\\x -> ../account/me\r\nC:\\y -> abcd\r\n\xff\xfe\r\n"
    parsed = win(parse, data, exists=lambda p: p.lower() == "c:\\ok")
    assert sorted(n for n, _ in parsed.errors) == [2, 3, 4, 5]


@pytest.mark.parametrize("form", [
    "Ab3De9z",
    "https://imgur.com/a/Ab3De9z",
    "imgur.com/a/slug-words-Ab3De9z",
    "http://m.imgur.com/a/Ab3De9z/",
    "www.imgur.com/gallery/foo-Ab3De9z?x#y",
    "https://www.imgur.com/a/Ab3De9z?ref=1",
])
def test_parser_album_forms_after_the_arrow(parse, form):
    parsed = win(parse, f"C:\\Photos -> {form}\r\n".encode())
    assert parsed.errors == []
    assert [(e.kind, e.album_id) for e in parsed.lines] == [("link", "Ab3De9z")]


@pytest.mark.parametrize("form", [
    "../account/me", "https://imgur.com/a/../account/me", "https://evil.example/a/Ab3De9z",
    "https://imgur.com/a/Ab_3De9z", "abcd", "abcdefghijk", "https://imgur.com/Ab3De9z/edit/../x",
])
def test_parser_rejects_bad_album_forms(parse, form):
    parsed = win(parse, f"C:\\Photos -> {form}\r\n".encode())
    assert [n for n, _ in parsed.errors] == [1]


def test_dry_run_of_an_album_line_downloads_nothing(home, fake):
    album_id = fake.create_album("alice", "Holiday")
    fake.create_image("alice", jpeg(1), "one.jpg", album=album_id)
    home.write_credentials()
    home.write_albums(f"{album_id}\n")
    r = home.run("sync", "--dry-run")
    assert r.code == 0, r
    assert not (home.path / "Holiday").exists()
    assert home.albums_bytes() == f"{album_id}\n".encode()
    assert {q.method for q in fake.api_requests() if not q.path.startswith("/oauth2/")} <= {"GET"}
