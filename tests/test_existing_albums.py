"""End-to-end tests of issue 4 / README "albums.txt", "Existing albums", "Safety rules",
`--verify`.

Albums are made directly on the fake (``fake.create_image`` / ``fake.create_album``);
imgurbox.py runs as a subprocess (fixture ``home``) and the tests check the exit code, the
files on disk, albums.txt, what the fake holds and which requests it received.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest

from imagefiles import jpeg, png
from mirror_check import (LINK, album_adds, album_creations, album_names, delete_requests,
                          link_fetches, photos_in, routes, state_files, uploads)


# --------------------------------------------------------------------------- helpers


def every_file(root) -> set:
    """Every file and folder under root, as relative paths."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            out.add(os.path.relpath(os.path.join(dirpath, name), root))
    return out


def album_line(home) -> tuple[str, str]:
    """(text before ' -> ', album ID) of the only linked line of albums.txt."""
    (line,) = [ln for ln in home.albums_bytes().decode("utf-8-sig").splitlines() if ln.strip()]
    m = LINK.search(line)
    assert m, f"albums.txt line not linked: {line!r}"
    return line[:m.start()].strip(), m.group(1)


def make_album(fake, images: dict, title="Summer Trip", owner="alice") -> tuple[str, dict]:
    """An album on the fake holding ``images`` (name -> bytes); returns (album ID, name -> image ID)."""
    album = fake.create_album(owner, title=title)
    ids = {}
    for n, (name, data) in enumerate(images.items()):
        ids[name] = fake.create_image(owner, data, name=name, album=album,
                                      datetime=int(fake.now()) - 1000 + n)
    return album, ids


def sync_folder(home, fake, name, files) -> tuple:
    """A folder synced once by a bare PATH line (exit 0); returns (folder, album ID)."""
    folder = home.folder(name, files)
    home.write_credentials()
    home.write_albums(f"{folder}\n")
    r = home.run("sync")
    assert r.code == 0, r
    _, album_id = album_line(home)
    assert album_names(fake, album_id) == sorted(files)
    fake.reset_requests()
    return folder, album_id


def assert_no_request_on_second_run(home, fake):
    fake.reset_requests()
    r = home.run("sync")
    assert r.code == 0, r
    assert fake.requests == [], fake.requests


# --------------------------------------------------------------------------- ALBUM lines

ALBUM_FORMS = [
    "{id}",
    "https://imgur.com/a/{id}",
    "imgur.com/a/summer-trip-{id}",
    "http://m.imgur.com/a/{id}/",
    "www.imgur.com/gallery/foo-{id}?x=1#y",
]


@pytest.mark.parametrize("form", ALBUM_FORMS)
def test_album_line_downloads_into_folder_named_after_title(home, fake, form):
    images = {"a.jpg": jpeg(1), "b.png": png(2), "c.jpg": jpeg(3)}
    album_id, ids = make_album(fake, images)
    home.write_credentials()
    home.write_albums(form.format(id=album_id) + "\n")
    r = home.run("sync")
    assert r.code == 0, r
    folder = home.path / "Summer Trip"
    assert folder.is_dir()
    assert photos_in(folder) == images
    assert uploads(fake) == [] and delete_requests(fake) == [] and album_creations(fake) == []
    assert home.albums_bytes() == f"Summer Trip -> https://imgur.com/a/{album_id}\n".encode()
    assert state_files(home.state(), album_id) == ids
    assert fake.album_image_ids(album_id) == list(ids.values())
    assert_no_request_on_second_run(home, fake)
    assert photos_in(folder) == images


def test_untitled_album_goes_into_a_folder_named_after_its_id(home, fake):
    album_id, _ = make_album(fake, {"a.jpg": jpeg(1)}, title=None)
    home.write_credentials()
    home.write_albums(f"https://imgur.com/a/{album_id}\n")
    r = home.run("sync")
    assert r.code == 0, r
    assert photos_in(home.path / album_id) == {"a.jpg": jpeg(1)}
    assert home.albums_bytes() == f"{album_id} -> https://imgur.com/a/{album_id}\n".encode()
    assert_no_request_on_second_run(home, fake)


def test_existing_title_folder_gets_title_and_id(home, fake):
    album_id, _ = make_album(fake, {"a.jpg": jpeg(1)}, title="Summer Trip")
    (home.path / "Summer Trip").mkdir()
    (home.path / "Summer Trip" / "mine.jpg").write_bytes(jpeg(50))
    home.write_credentials()
    home.write_albums(f"{album_id}\n")
    r = home.run("sync")
    assert r.code == 0, r
    assert photos_in(home.path / "Summer Trip") == {"mine.jpg": jpeg(50)}, "existing folder touched"
    folder = home.path / f"Summer Trip ({album_id})"
    assert photos_in(folder) == {"a.jpg": jpeg(1)}
    assert home.albums_bytes() == (f"Summer Trip ({album_id}) -> https://imgur.com/a/{album_id}\n"
                                   .encode())
    assert uploads(fake) == []
    assert_no_request_on_second_run(home, fake)


@pytest.mark.parametrize("title", ["run-counter", "Log.txt", "state.json.bak", "albums.txt"])
def test_album_titled_like_a_home_file_gets_title_and_id(home, fake, title):
    """A folder named like imgurbox's own files (README "Files in the home") would be taken
    for one of them."""
    album_id, _ = make_album(fake, {"a.jpg": jpeg(1)}, title=title)
    home.write_credentials()
    home.write_albums(f"{album_id}\n")
    r = home.run("sync")
    assert r.code == 0, r
    folder = home.path / f"{title} ({album_id})"
    assert photos_in(folder) == {"a.jpg": jpeg(1)}
    assert not (home.path / title).is_dir()
    assert_no_request_on_second_run(home, fake)


def test_album_line_rewrite_keeps_other_lines_and_line_ending(home, fake):
    album_id, _ = make_album(fake, {"a.jpg": jpeg(1)}, title="Trip")
    home.write_credentials()
    home.write_albums(f"# my albums\r\n\r\n  {album_id}  \r\n// done\r\n")
    r = home.run("sync")
    assert r.code == 0, r
    assert home.albums_bytes() == (f"# my albums\r\n\r\nTrip -> https://imgur.com/a/{album_id}"
                                   "\r\n// done\r\n").encode()


def test_album_with_two_images_of_one_name_keeps_both(home, fake):
    album_id, _ = make_album(fake, {"x.jpg": jpeg(1)}, title="Dups")
    fake.create_image("alice", jpeg(2), name="x.jpg", album=album_id)
    home.write_credentials()
    home.write_albums(f"{album_id}\n")
    r = home.run("sync")
    assert r.code == 0, r
    got = photos_in(home.path / "Dups")
    assert sorted(got.values()) == sorted([jpeg(1), jpeg(2)])
    assert "x.jpg" in got and len(got) == 2
    assert uploads(fake) == []
    assert_no_request_on_second_run(home, fake)


def test_downloaded_album_then_syncs_local_changes(home, fake):
    album_id, ids = make_album(fake, {"a.jpg": jpeg(1), "b.jpg": jpeg(2)}, title="Trip")
    home.write_credentials()
    home.write_albums(f"{album_id}\n")
    assert home.run("sync").code == 0
    folder = home.path / "Trip"
    (folder / "new.jpg").write_bytes(jpeg(3))
    fake.reset_requests()
    r = home.run("sync")
    assert r.code == 0, r
    assert [u.value("name") for u in uploads(fake)] == ["new.jpg"]
    assert [u.value("album") for u in uploads(fake)] == [album_id]
    assert album_names(fake, album_id) == ["a.jpg", "b.jpg", "new.jpg"]


def test_image_links_are_fetched_without_authorization(home, fake):
    album_id, _ = make_album(fake, {"a.jpg": jpeg(1), "b.png": png(2)})
    home.write_credentials()
    home.write_albums(f"{album_id}\n")
    r = home.run("sync")
    assert r.code == 0, r
    fetched = link_fetches(fake)
    assert len(fetched) >= 2
    assert [r.auth for r in fetched] == [None] * len(fetched)
    assert all(r.headers.get("Authorization") is None for r in fetched)


# --------------------------------------------------------------------------- PATH -> ALBUM

def test_first_link_adopts_downloads_and_uploads_and_deletes_nothing(home, fake):
    album_id, ids = make_album(fake, {"same.jpg": jpeg(1), "remote.jpg": jpeg(2)})
    # Imgur re-encodes: the local copy of same.jpg has other bytes (a metadata edit here).
    local = {"same.jpg": jpeg(1, comment="mine"), "local.jpg": jpeg(3)}
    folder = home.folder("Mine", local)
    home.write_credentials()
    home.write_albums(f"{folder} -> {album_id}\n")
    r = home.run("sync")
    assert r.code == 0, r
    assert photos_in(folder) == {**local, "remote.jpg": jpeg(2)}
    assert [u.value("name") for u in uploads(fake)] == ["local.jpg"]
    assert [u.value("album") for u in uploads(fake)] == [album_id]
    assert delete_requests(fake) == [] and album_creations(fake) == []
    assert [f.path for f in link_fetches(fake)] == [f"/i/{ids['remote.jpg']}.jpg"]
    assert album_names(fake, album_id) == ["local.jpg", "remote.jpg", "same.jpg"]
    recorded = state_files(home.state(), album_id)
    assert recorded["same.jpg"] == ids["same.jpg"]
    assert recorded["remote.jpg"] == ids["remote.jpg"]
    assert set(recorded) == {"same.jpg", "remote.jpg", "local.jpg"}
    # The line is already linked: it stays as typed.
    assert home.albums_bytes() == f"{folder} -> {album_id}\n".encode()
    assert_no_request_on_second_run(home, fake)


def test_link_with_url_form_and_relative_path(home, fake):
    album_id, ids = make_album(fake, {"r.jpg": jpeg(2)})
    folder = home.folder("Rel", {"l.jpg": jpeg(3)})
    rel = os.path.relpath(folder, home.path)
    home.write_credentials()
    home.write_albums(f"{rel} -> https://imgur.com/a/trip-{album_id}#x\n")
    r = home.run("sync")
    assert r.code == 0, r
    assert photos_in(folder) == {"l.jpg": jpeg(3), "r.jpg": jpeg(2)}
    assert album_names(fake, album_id) == ["l.jpg", "r.jpg"]
    assert_no_request_on_second_run(home, fake)


def test_link_to_a_missing_path_creates_it(home, fake):
    album_id, _ = make_album(fake, {"a.jpg": jpeg(1), "b.jpg": jpeg(2)})
    folder = home.photos / "Not yet" / "here"
    home.write_credentials()
    home.write_albums(f"{folder} -> {album_id}\n")
    r = home.run("sync")
    assert r.code == 0, r
    assert photos_in(folder) == {"a.jpg": jpeg(1), "b.jpg": jpeg(2)}
    assert uploads(fake) == [] and delete_requests(fake) == []
    assert_no_request_on_second_run(home, fake)


def test_link_never_overwrites_a_local_file(home, fake):
    """A local file whose name matches is adopted, never overwritten by the download."""
    album_id, _ = make_album(fake, {"a.jpg": jpeg(1)})
    folder = home.folder("Mine", {"a.jpg": jpeg(9)})
    home.write_credentials()
    home.write_albums(f"{folder} -> {album_id}\n")
    r = home.run("sync")
    assert r.code == 0, r
    assert photos_in(folder) == {"a.jpg": jpeg(9)}
    assert uploads(fake) == [] and link_fetches(fake) == []


def test_link_then_local_deletion_is_synced(home, fake):
    album_id, ids = make_album(fake, {"a.jpg": jpeg(1), "b.jpg": jpeg(2), "c.jpg": jpeg(3),
                                      "d.jpg": jpeg(4)})
    folder = home.photos / "Linked"
    home.write_credentials()
    home.write_albums(f"{folder} -> {album_id}\n")
    assert home.run("sync").code == 0
    (folder / "a.jpg").unlink()
    fake.reset_requests()
    r = home.run("sync")
    assert r.code == 0, r
    assert [d.path for d in delete_requests(fake)] == [f"/3/image/{ids['a.jpg']}"]
    assert uploads(fake) == []


# --------------------------------------------------------------------------- hostile input

HOSTILE_NAMES = ["../../x.jpg", "/etc/passwd", "CON", "con.jpg", "a\x00b.jpg",
                 "line\nbreak.jpg", "..", "...jpg", "sub\\..\\..\\win.jpg", "-rf.jpg",
                 "a" * 300 + ".jpg"]


def test_hostile_names_and_title_stay_inside_the_folder(home, fake, tmp_path):
    images = {name: jpeg(n) for n, name in enumerate(HOSTILE_NAMES)}
    album_id, _ = make_album(fake, images, title="../../evil")
    home.write_credentials()
    home.write_albums(f"{album_id}\n")
    before = every_file(tmp_path)
    r = home.run("sync")
    assert r.code == 0, r
    created = every_file(tmp_path) - before
    home_rel = os.path.relpath(home.path, tmp_path)
    folders = {p for p in created if os.path.dirname(p) == home_rel
               and (tmp_path / p).is_dir()}
    assert len(folders) == 1, created
    (folder_rel,) = folders
    folder = tmp_path / folder_rel
    assert ".." not in folder.name and "/" not in folder.name and folder.name
    allowed_home_files = {"state.json", "state.json.bak", "state.journal", "log.txt",
                          "imgurbox.lock", "albums.txt", "credentials.json", "run-counter"}
    for p in created:
        if os.path.dirname(p) == home_rel:
            assert p == folder_rel or os.path.basename(p) in allowed_home_files \
                or os.path.basename(p).startswith(("albums.txt.", "state.json.")), p
        else:
            assert os.path.dirname(p) == folder_rel, f"written outside the folder: {p}"
    got = photos_in(folder)
    assert sorted(got.values()) == sorted(images.values()), "every image downloaded once"
    for name in os.listdir(folder):
        assert name.isprintable() and "\x00" not in name and "\n" not in name, repr(name)
        assert not name.startswith("-") and len(name.encode()) <= 255, name
        stem = name.split(".")[0].upper()
        assert stem not in {"CON", "PRN", "AUX", "NUL"}, name
    assert uploads(fake) == []
    assert not (tmp_path / "x.jpg").exists() and not (tmp_path.parent / "x.jpg").exists()
    assert not (home.path.parent / "evil").exists()
    assert_no_request_on_second_run(home, fake)


@pytest.mark.parametrize("title", ["../../evil", "..", ".", "CON", "a/b", "line\nbreak",
                                   "   ", "credentials.json", "x\x00y", "/etc"])
def test_hostile_titles_make_one_folder_in_the_home(home, fake, tmp_path, title):
    album_id, _ = make_album(fake, {"a.jpg": jpeg(1)}, title=title)
    home.write_credentials()
    home.write_albums(f"{album_id}\n")
    before = every_file(tmp_path)
    r = home.run("sync")
    assert r.code == 0, r
    home_rel = os.path.relpath(home.path, tmp_path)
    new_dirs = [p for p in every_file(tmp_path) - before if (tmp_path / p).is_dir()]
    assert len(new_dirs) == 1 and os.path.dirname(new_dirs[0]) == home_rel, new_dirs
    folder = tmp_path / new_dirs[0]
    assert folder.name.isprintable() and folder.name.strip() == folder.name
    assert folder.name.split(".")[0].upper() not in {"CON", "PRN", "AUX", "NUL"}
    assert folder.name not in (".", "..", "")
    assert photos_in(folder) == {"a.jpg": jpeg(1)}
    assert (home.path / "credentials.json").is_file()
    assert home.albums_bytes() == f"{folder.name} -> https://imgur.com/a/{album_id}\n".encode()
    assert_no_request_on_second_run(home, fake)


def test_hostile_names_on_a_link_line_stay_inside_the_folder(home, fake, tmp_path):
    images = {"../x.jpg": jpeg(1), "../../y.jpg": jpeg(2), "/etc/passwd": jpeg(3)}
    album_id, _ = make_album(fake, images)
    folder = home.folder("Mine", {})
    home.write_credentials()
    home.write_albums(f"{folder} -> {album_id}\n")
    before = every_file(tmp_path)
    r = home.run("sync")
    assert r.code == 0, r
    folder_rel = os.path.relpath(folder, tmp_path)
    home_rel = os.path.relpath(home.path, tmp_path)
    for p in every_file(tmp_path) - before:
        assert os.path.dirname(p) in (folder_rel, home_rel), p
    assert sorted(photos_in(folder).values()) == sorted(images.values())
    assert not (home.photos / "x.jpg").exists() and not (tmp_path / "y.jpg").exists()


# --------------------------------------------------------------------------- interrupted downloads

def test_download_cut_off_every_time_leaves_no_file_and_a_later_run_completes_it(home, fake):
    album_id, ids = make_album(fake, {"a.jpg": jpeg(1), "b.jpg": jpeg(2)}, title="Trip")
    fake.add_fault("truncate", path=rf"^/i/{ids['b.jpg']}", count=None)
    home.write_credentials()
    home.write_albums(f"{album_id}\n")
    r = home.run("sync")
    assert r.code == 1, r
    folder = home.path / "Trip"
    assert photos_in(folder) == {"a.jpg": jpeg(1)}
    assert sorted(os.listdir(folder)) == ["a.jpg"], "a half file or .part was left behind"
    assert uploads(fake) == []
    fake.clear_faults()
    fake.reset_requests()
    r = home.run("sync")
    assert r.code == 0, r
    folder = home.path / "Trip"
    assert photos_in(folder) == {"a.jpg": jpeg(1), "b.jpg": jpeg(2)}
    assert sorted(os.listdir(folder)) == ["a.jpg", "b.jpg"]
    assert uploads(fake) == []
    assert set(state_files(home.state(), album_id)) == {"a.jpg", "b.jpg"}
    # The retry lists the album once and fetches only the missing image.
    assert routes(fake) == Counter({"GET /3/album/{id}/images": 1}), routes(fake)
    assert [f.path for f in link_fetches(fake)] == [f"/i/{ids['b.jpg']}.jpg"]
    assert_no_request_on_second_run(home, fake)


def test_download_cut_off_on_a_link_line_is_completed_later_and_never_uploaded(home, fake):
    album_id, ids = make_album(fake, {"a.jpg": jpeg(1), "b.jpg": jpeg(2)})
    fake.add_fault("truncate", path=rf"^/i/{ids['b.jpg']}", count=None)
    folder = home.folder("Mine", {"l.jpg": jpeg(3)})
    home.write_credentials()
    home.write_albums(f"{folder} -> {album_id}\n")
    r = home.run("sync")
    assert r.code == 1, r
    assert sorted(os.listdir(folder)) == ["a.jpg", "l.jpg"]
    fake.clear_faults()
    fake.reset_requests()
    r = home.run("sync")
    assert r.code == 0, r
    assert photos_in(folder) == {"a.jpg": jpeg(1), "b.jpg": jpeg(2), "l.jpg": jpeg(3)}
    assert uploads(fake) == []
    assert album_names(fake, album_id) == ["a.jpg", "b.jpg", "l.jpg"]


def test_download_cut_off_once_is_retried_in_the_same_run(home, fake):
    album_id, ids = make_album(fake, {"a.jpg": jpeg(1), "b.png": png(2)}, title="Trip")
    fake.add_fault("truncate", path=r"^/i/", count=1)
    home.write_credentials()
    home.write_albums(f"{album_id}\n")
    r = home.run("sync")
    assert r.code == 0, r
    folder = home.path / "Trip"
    assert photos_in(folder) == {"a.jpg": jpeg(1), "b.png": png(2)}
    assert sorted(os.listdir(folder)) == ["a.jpg", "b.png"]


def test_downloads_failing_in_a_row_stop_the_run_and_a_later_run_completes_them(home, fake):
    images = {f"p{n}.jpg": jpeg(n) for n in range(5)}
    album_id, _ = make_album(fake, images, title="Trip")
    fake.add_fault("truncate", path=r"^/i/", count=None)
    home.write_credentials()
    home.write_albums(f"{album_id}\n")
    r = home.run("sync")
    assert r.code == 1, r
    folder = home.path / "Trip"
    assert os.listdir(folder) == []
    fake.clear_faults()
    fake.reset_requests()
    r = home.run("sync")
    assert r.code == 0, r
    assert photos_in(folder) == images
    assert home.albums_bytes() == f"Trip -> https://imgur.com/a/{album_id}\n".encode()
    assert uploads(fake) == []
    assert_no_request_on_second_run(home, fake)


def test_dry_run_of_an_album_line_writes_nothing(home, fake):
    album_id, _ = make_album(fake, {"a.jpg": jpeg(1)}, title="Trip")
    home.write_credentials()
    home.write_albums(f"{album_id}\n")
    r = home.run("sync", "--dry-run")
    assert r.code == 0, r
    assert not (home.path / "Trip").exists()
    assert home.state() is None
    assert home.albums_bytes() == f"{album_id}\n".encode()
    assert {q.method for q in fake.requests} <= {"GET"}
    assert link_fetches(fake) == []


def test_removed_placeholder_is_never_saved_as_a_photo(home, fake):
    album_id, ids = make_album(fake, {"a.jpg": jpeg(1), "gone.jpg": jpeg(2)}, title="Trip")
    gone = ids["gone.jpg"]

    def delete_after_listing(phase, request):
        if phase == "after" and request.path.rstrip("/") in (f"/3/album/{album_id}",
                                                              f"/3/album/{album_id}/images"):
            if gone in fake.images:
                fake.delete_image(gone)
    fake.on_request = delete_after_listing
    home.write_credentials()
    home.write_albums(f"{album_id}\n")
    r = home.run("sync")
    fake.on_request = None
    assert r.code == 0, r
    assert any(p.path == f"/i/{gone}.jpg" for p in link_fetches(fake)), "the link was not tried"
    folder = home.path / "Trip"
    assert sorted(os.listdir(folder)) == ["a.jpg"]
    assert photos_in(folder) == {"a.jpg": jpeg(1)}
    assert uploads(fake) == []
    assert "removed.png" not in {p.name for p in folder.iterdir()}
    assert_no_request_on_second_run(home, fake)
    assert sorted(os.listdir(folder)) == ["a.jpg"]


# --------------------------------------------------------------------------- --verify

def test_verify_reuploads_an_image_deleted_on_imgur(home, fake):
    folder, album_id = sync_folder(home, fake, "V", {"a.jpg": jpeg(1), "b.jpg": jpeg(2),
                                                     "c.jpg": jpeg(3)})
    old = state_files(home.state(), album_id)["b.jpg"]
    fake.delete_image(old)
    r = home.run("sync")
    assert r.code == 0, r
    assert fake.requests == [], "without --verify a no-op run sends nothing"
    r = home.run("sync", "--verify")
    assert r.code == 0, r
    assert [u.value("name") for u in uploads(fake)] == ["b.jpg"]
    assert [u.value("album") for u in uploads(fake)] == [album_id]
    assert routes(fake)["GET /3/album/{id}/images"] == 1
    assert album_names(fake, album_id) == ["a.jpg", "b.jpg", "c.jpg"]
    new = state_files(home.state(), album_id)["b.jpg"]
    assert new != old and new in fake.album_image_ids(album_id)
    assert photos_in(folder) == {"a.jpg": jpeg(1), "b.jpg": jpeg(2), "c.jpg": jpeg(3)}
    assert_no_request_on_second_run(home, fake)


def test_verify_readds_an_image_removed_from_the_album_only(home, fake):
    folder, album_id = sync_folder(home, fake, "V", {"a.jpg": jpeg(1), "b.jpg": jpeg(2),
                                                     "c.jpg": jpeg(3)})
    image_id = state_files(home.state(), album_id)["c.jpg"]
    fake.albums[album_id].image_ids.remove(image_id)
    r = home.run("sync")
    assert r.code == 0 and fake.requests == []
    r = home.run("sync", "--verify")
    assert r.code == 0, r
    assert uploads(fake) == [] and delete_requests(fake) == []
    assert len(album_adds(fake)) == 1
    assert image_id in fake.album_image_ids(album_id)
    assert state_files(home.state(), album_id)["c.jpg"] == image_id
    assert_no_request_on_second_run(home, fake)


def test_verify_downloads_an_image_added_on_imgur(home, fake):
    folder, album_id = sync_folder(home, fake, "V", {"a.jpg": jpeg(1)})
    phone = fake.create_image("alice", jpeg(77), name="phone.jpg", album=album_id)
    r = home.run("sync")
    assert r.code == 0 and fake.requests == []
    r = home.run("sync", "--verify")
    assert r.code == 0, r
    assert photos_in(folder) == {"a.jpg": jpeg(1), "phone.jpg": jpeg(77)}
    assert uploads(fake) == [] and delete_requests(fake) == []
    assert state_files(home.state(), album_id)["phone.jpg"] == phone
    assert fake.album_image_ids(album_id).count(phone) == 1
    assert_no_request_on_second_run(home, fake)
    fake.reset_requests()
    r = home.run("sync", "--verify")
    assert r.code == 0, r
    assert routes(fake) == Counter({"GET /3/album/{id}/images": 1}), routes(fake)


def test_verify_on_an_album_in_sync_is_one_get(home, fake):
    sync_folder(home, fake, "V", {"a.jpg": jpeg(1), "b.jpg": jpeg(2)})
    r = home.run("sync", "--verify")
    assert r.code == 0, r
    assert routes(fake) == Counter({"GET /3/album/{id}/images": 1}), routes(fake)
    assert link_fetches(fake) == []


def test_verify_on_an_album_deleted_on_imgur_uploads_nothing(home, fake):
    folder, album_id = sync_folder(home, fake, "V", {"a.jpg": jpeg(1), "b.jpg": jpeg(2)})
    fake.delete_album(album_id)
    r = home.run("sync", "--verify")
    assert r.code == 1, r
    assert "->" in r.stdout + r.stderr and "remove" in (r.stdout + r.stderr).lower()
    assert uploads(fake) == [] and delete_requests(fake) == [] and album_creations(fake) == []
    assert photos_in(folder) == {"a.jpg": jpeg(1), "b.jpg": jpeg(2)}


# --------------------------------------------------------------------------- renamed folders

def _ten():
    return {f"p{n:02d}.jpg": jpeg(100 + n) for n in range(10)}


def test_renamed_folder_with_its_line_updated_keeps_its_album(home, fake):
    files = _ten()
    folder, album_id = sync_folder(home, fake, "Old name", files)
    ids = state_files(home.state(), album_id)
    new = folder.with_name("New name")
    folder.rename(new)
    home.write_albums(f"{new} -> https://imgur.com/a/{album_id}\n")
    r = home.run("sync")
    assert r.code == 0, r
    assert uploads(fake) == [] and delete_requests(fake) == [] and album_creations(fake) == []
    assert fake.albums[album_id].title == "New name"
    assert state_files(home.state(), album_id) == ids
    assert home.state()["albums"][album_id]["folder"] == str(new)
    assert home.albums_bytes() == f"{new} -> https://imgur.com/a/{album_id}\n".encode()
    assert_no_request_on_second_run(home, fake)


def test_renamed_folder_on_a_bare_line_takes_over_the_album(home, fake):
    files = _ten()
    folder, album_id = sync_folder(home, fake, "Old name", files)
    ids = state_files(home.state(), album_id)
    new = folder.with_name("New name")
    folder.rename(new)
    home.write_albums(f"{new}\n")
    r = home.run("sync")
    assert r.code == 0, r
    assert uploads(fake) == [] and delete_requests(fake) == [] and album_creations(fake) == []
    assert fake.albums[album_id].title == "New name"
    assert state_files(home.state(), album_id) == ids
    assert home.albums_bytes() == f"{new} -> https://imgur.com/a/{album_id}\n".encode()
    assert_no_request_on_second_run(home, fake)


def test_folder_moved_under_the_same_name_keeps_its_album_with_zero_requests(home, fake):
    files = _ten()
    folder, album_id = sync_folder(home, fake, "Photos", files)
    ids = state_files(home.state(), album_id)
    new = home.photos / "drive2" / "Photos"
    new.parent.mkdir()
    folder.rename(new)
    home.write_albums(f"{new} -> https://imgur.com/a/{album_id}\n")
    r = home.run("sync")
    assert r.code == 0, r
    assert fake.requests == []
    assert home.state()["albums"][album_id]["folder"] == str(new)
    assert state_files(home.state(), album_id) == ids
    # A new folder at the old place is a new album; the moved one loses nothing.
    home.folder("Photos", {"other.jpg": jpeg(500)})
    home.write_albums(f"{new} -> https://imgur.com/a/{album_id}\n{folder}\n")
    r = home.run("sync")
    assert r.code == 0, r
    assert delete_requests(fake) == [] and len(album_creations(fake)) == 1
    assert [u.value("name") for u in uploads(fake)] == ["other.jpg"]
    assert len(fake.album_image_ids(album_id)) == 10


def test_takeover_at_ninety_percent(home, fake):
    files = _ten()
    folder, album_id = sync_folder(home, fake, "Old name", files)
    gone_id = state_files(home.state(), album_id)["p09.jpg"]
    new = folder.with_name("New name")
    folder.rename(new)
    (new / "p09.jpg").unlink()
    home.write_albums(f"{new}\n")
    r = home.run("sync")
    assert r.code == 0, r
    assert uploads(fake) == [] and album_creations(fake) == []
    assert [d.path for d in delete_requests(fake)] == [f"/3/image/{gone_id}"]
    assert home.albums_bytes() == f"{new} -> https://imgur.com/a/{album_id}\n".encode()
    assert fake.albums[album_id].title == "New name"


def test_below_ninety_percent_is_a_new_album(home, fake):
    files = _ten()
    folder, album_id = sync_folder(home, fake, "Old name", files)
    new = folder.with_name("New name")
    folder.rename(new)
    (new / "p08.jpg").unlink()
    (new / "p09.jpg").unlink()
    home.write_albums(f"{new}\n")
    r = home.run("sync")
    assert r.code == 0, r
    assert len(album_creations(fake)) == 1
    assert delete_requests(fake) == []
    _, new_album = album_line(home)
    assert new_album != album_id
    assert len(fake.album_image_ids(album_id)) == 10, "the old album is left alone"


# --------------------------------------------------------------------------- another account

def test_another_accounts_album_is_download_only(home, fake):
    fake.add_account("bob")
    album_id, ids = make_album(fake, {"b1.jpg": jpeg(1), "b2.jpg": jpeg(2)}, title="Bobs",
                               owner="bob")
    folder = home.folder("FromBob", {"mine.jpg": jpeg(3)})
    home.write_credentials()
    home.write_albums(f"{folder} -> {album_id}\n")
    r = home.run("sync")
    assert r.code == 0, r
    out = r.stdout + r.stderr
    assert out.lower().count("download-only") == 1, out
    assert uploads(fake) == [] and delete_requests(fake) == [] and album_adds(fake) == []
    got = photos_in(folder)
    assert got.pop("mine.jpg") == jpeg(3)
    assert sorted(got.values()) == [jpeg(1), jpeg(2)]
    assert fake.album_image_ids(album_id) == list(ids.values())
    # A later local addition or deletion is not pushed either, and that is said once.
    (folder / "later.jpg").write_bytes(jpeg(4))
    (folder / sorted(got)[0]).unlink()
    fake.reset_requests()
    r = home.run("sync")
    assert r.code == 0, r
    out = r.stdout + r.stderr
    assert out.lower().count("download-only") == 1, out
    assert [r for r in fake.api_requests() if r.method != "GET"] == []
    assert fake.album_image_ids(album_id) == list(ids.values())


def test_verify_downloads_an_image_added_to_another_accounts_album(home, fake):
    fake.add_account("bob")
    album_id, ids = make_album(fake, {"b1.jpg": jpeg(1)}, title="Bobs", owner="bob")
    folder = home.photos / "FromBob"
    home.write_credentials()
    home.write_albums(f"{folder} -> {album_id}\n")
    assert home.run("sync").code == 0
    fake.create_image("bob", jpeg(2), name="b2.jpg", album=album_id)
    fake.reset_requests()
    r = home.run("sync", "--verify")
    assert r.code == 0, r
    assert sorted(photos_in(folder).values()) == [jpeg(1), jpeg(2)]
    assert [r for r in fake.api_requests() if r.method != "GET"] == []
    assert_no_request_on_second_run(home, fake)


def test_renaming_the_folder_of_another_accounts_album_pushes_nothing(home, fake):
    fake.add_account("bob")
    album_id, _ = make_album(fake, {"b1.jpg": jpeg(1)}, title="Bobs", owner="bob")
    folder = home.photos / "FromBob"
    home.write_credentials()
    home.write_albums(f"{folder} -> {album_id}\n")
    assert home.run("sync").code == 0
    new = folder.with_name("Renamed")
    folder.rename(new)
    home.write_albums(f"{new} -> {album_id}\n")
    fake.reset_requests()
    r = home.run("sync")
    assert r.code == 0, r
    assert [r for r in fake.api_requests() if r.method != "GET"] == []
    assert fake.albums[album_id].title == "Bobs"
    assert sorted(photos_in(new).values()) == [jpeg(1)]
    assert home.state()["albums"][album_id]["folder"] == str(new)


def test_another_accounts_album_line_downloads(home, fake):
    fake.add_account("bob")
    album_id, ids = make_album(fake, {"b1.jpg": jpeg(1)}, title="Bobs", owner="bob")
    home.write_credentials()
    home.write_albums(f"https://imgur.com/a/{album_id}\n")
    r = home.run("sync")
    assert r.code == 0, r
    assert sorted(photos_in(home.path / "Bobs").values()) == [jpeg(1)]
    assert home.albums_bytes() == f"Bobs -> https://imgur.com/a/{album_id}\n".encode()
    assert uploads(fake) == []
    assert_no_request_on_second_run(home, fake)


# --------------------------------------------------------------------------- 404 album

def test_link_to_an_album_that_is_gone_makes_the_folder_unavailable(home, fake):
    folder = home.folder("Mine", {"a.jpg": jpeg(1)})
    other = home.folder("Other", {"o.jpg": jpeg(2)})
    home.write_credentials()
    home.write_albums(f"{folder} -> https://imgur.com/a/ZZZZZ99\n{other}\n")
    r = home.run("sync")
    assert r.code == 1, r
    out = r.stdout + r.stderr
    assert "ZZZZZ99" in out and "->" in out and "remove" in out.lower(), out
    assert [u.value("name") for u in uploads(fake)] == ["o.jpg"], "other folders still sync"
    assert len(album_creations(fake)) == 1
    assert photos_in(folder) == {"a.jpg": jpeg(1)}
    text = home.albums_bytes().decode()
    assert text.startswith(f"{folder} -> https://imgur.com/a/ZZZZZ99\n")
    # Following the advice: the line without ' -> ...' gets a new album.
    home.write_albums(text.replace(" -> https://imgur.com/a/ZZZZZ99", ""))
    fake.reset_requests()
    r = home.run("sync")
    assert r.code == 0, r
    assert [u.value("name") for u in uploads(fake)] == ["a.jpg"]


def test_album_line_that_is_gone_is_an_error(home, fake):
    home.write_credentials()
    home.write_albums("https://imgur.com/a/ZZZZZ99\n")
    r = home.run("sync")
    assert r.code == 1, r
    assert "ZZZZZ99" in r.stdout + r.stderr
    assert [p for p in home.path.iterdir() if p.is_dir()] == []
    assert uploads(fake) == [] and album_creations(fake) == []


# --------------------------------------------------------------------------- invalid lines

INVALID = [
    "../account/me",
    "imgur.com/a/",
    "https://imgur.com/a/ab$cd",
    "https://imgur.com/a/../../3/account/me",
    "imgur.com/gallery/foo-",
    "https://evil.example/a/AbCdE12",
    "https://imgur.com/a/AbC12/extra",
    "abcd",
    "abcdefgh",
    "ab_cd1",
    "{folder} -> ../account/me",
    "{folder} -> imgur.com/a/",
    "{folder} -> https://imgur.com/a/ab$cd",
    "{folder} -> abcd",
    "{folder} -> abcdefghijk",
]


def test_two_lines_naming_one_album_exit_2_before_any_request(home, fake):
    folder = home.folder("Mine", {"a.jpg": jpeg(1)})
    home.write_credentials()
    home.write_albums(f"AbCdE12\n{folder} -> https://imgur.com/a/AbCdE12\n")
    r = home.run("sync")
    assert r.code == 2, r
    assert fake.requests == []
    assert "1" in r.stderr and "2" in r.stderr


@pytest.mark.parametrize("line", INVALID)
def test_invalid_album_line_exits_2_before_any_request(home, fake, line):
    folder = home.folder("Mine", {"a.jpg": jpeg(1)})
    home.write_credentials()
    text = f"{folder}\n" if "{folder}" not in line else ""
    text += "# comment\n" + line.format(folder=folder) + "\n"
    home.write_albums(text)
    before = home.albums_bytes()
    r = home.run("sync")
    assert r.code == 2, r
    assert fake.requests == []
    n = text.splitlines().index(line.format(folder=folder)) + 1
    assert f":{n}" in r.stderr or f"line {n}" in r.stderr, r.stderr
    assert home.albums_bytes() == before
    assert home.state() is None
