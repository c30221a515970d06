"""End-to-end tests of README "What a sync does", run against the fake Imgur server.

Each test runs imgurbox.py as a subprocess (fixture `home`, from conftest.py) and checks
the exit code, what the fake holds afterwards, and which API requests were sent.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from collections import Counter

import pytest

from imagefiles import gif, jpeg, png
from mirror_check import (album_adds, album_names, album_removes, assert_album_mirrors, field,
                          image_deletes, routes, token_requests, uploads, writes)

ALBUM_URL = re.compile(r"-> https://imgur\.com/a/([A-Za-z0-9]+)")


# --------------------------------------------------------------------------- helpers

def album_ids_from_txt(home) -> dict[str, str]:
    """line text before ' -> ' -> album id, for every linked line of albums.txt."""
    out = {}
    text = home.albums_bytes().decode("utf-8-sig")
    for line in text.splitlines():
        m = ALBUM_URL.search(line)
        if m:
            out[line[:m.start()].strip().strip('"')] = m.group(1)
    return out


def image_id_by_name(fake, album_id, name) -> str:
    ids = [i for i in fake.album_image_ids(album_id) if field(fake.images[i], "name") == name]
    assert len(ids) == 1, f"{name!r} is {len(ids)} times in album {album_id}"
    return ids[0]


def lines_starting(out: str, symbol: str, name: str) -> list[str]:
    return [ln for ln in out.splitlines() if ln.lstrip().startswith(symbol) and name in ln]


class Synced:
    """A home whose folders have been synced once (exit 0), requests reset."""

    def __init__(self, home, fake, folders: dict[str, dict[str, bytes]]):
        self.home, self.fake = home, fake
        self.dirs = {name: home.folder(name, files) for name, files in folders.items()}
        home.write_credentials()
        home.write_albums("".join(f"{p}\n" for p in self.dirs.values()))
        r = home.run("sync")
        assert r.code == 0, f"first sync failed: {r}"
        linked = album_ids_from_txt(home)
        self.albums = {name: linked[str(p)] for name, p in self.dirs.items()}
        for name in folders:
            assert_album_mirrors(fake, self.albums[name], self.dirs[name])
        fake.reset_requests()

    def file(self, folder, name):
        return self.dirs[folder] / name

    def image_id(self, folder, name):
        return image_id_by_name(self.fake, self.albums[folder], name)

    def run(self, *args, **kw):
        return self.home.run("sync", *args, **kw)

    def mirrors(self, *folders):
        for f in folders or self.dirs:
            assert_album_mirrors(self.fake, self.albums[f], self.dirs[f])


def four(seed=0) -> dict[str, bytes]:
    return {f"img{i}.jpg": jpeg(seed + i) for i in range(4)}


# --------------------------------------------------------------------------- first sync

def test_first_sync_creates_one_hidden_album_titled_after_the_folder(home, fake):
    folder = home.folder("Summer 2024", {"a.jpg": jpeg(1), "b.png": png(2)})
    home.write_credentials()
    home.write_albums(f"{folder}\n")
    r = home.run("sync")
    assert r.code == 0, r
    assert routes(fake)["POST /3/album"] == 1
    (album_id,) = album_ids_from_txt(home).values()
    album = fake.albums[album_id]
    assert field(album, "privacy") == "hidden"
    assert field(album, "title") == "Summer 2024"
    assert_album_mirrors(fake, album_id, folder)


def test_first_sync_rewrites_only_the_synced_line(home, fake):
    folder = home.folder("Trip", {"a.jpg": jpeg(1)})
    home.write_credentials()
    home.write_albums(f"# my albums\n\n{folder}\n// the end\n# no newline at the end")
    assert home.run("sync").code == 0
    (album_id,) = album_ids_from_txt(home).values()
    expected = f"# my albums\n\n{folder} -> https://imgur.com/a/{album_id}\n// the end\n# no newline at the end"
    assert home.albums_bytes() == expected.encode()


def test_first_sync_uploads_each_file_once_as_multipart_with_name(home, fake):
    files = {"a.jpg": jpeg(1), "b.png": png(2), "c.gif": gif(3)}
    folder = home.folder("Trip", files)
    home.write_credentials()
    home.write_albums(f"{folder}\n")
    r = home.run("sync")
    assert r.code == 0, r
    ups = uploads(fake)
    assert len(ups) == 3
    (album_id,) = album_ids_from_txt(home).values()
    for req in ups:
        assert req.headers.get("Content-Type", "").startswith("multipart/form-data")
        (name,) = req.form["name"]
        assert req.form["album"] == [album_id]
        assert "title" not in req.form
        filename, data = req.files["image"]
        assert data == files[name], f"{name} not sent as the binary image part"
        assert lines_starting(r.stdout, "+", name), r.stdout
    assert_album_mirrors(fake, album_id, folder)


def test_uploads_into_an_album_start_in_file_name_order(home, fake):
    names = ["d.jpg", "a.jpg", "c.jpg", "b.jpg"]
    folder = home.folder("Trip", {n: jpeg(i) for i, n in enumerate(names)})
    home.write_credentials()
    home.write_albums(f"{folder}\n")
    assert home.run("sync", "--jobs", "1").code == 0
    sent = [r.form["name"][0] for r in uploads(fake)]
    assert sent == sorted(names)


# --------------------------------------------------------------------------- no-op runs

def test_second_run_sends_no_request(home, fake):
    s = Synced(home, fake, {"Trip": {"a.jpg": jpeg(1), "b.jpg": jpeg(2)}})
    r = s.run()
    assert r.code == 0, r
    assert fake.api_requests() == []
    s.mirrors()


def test_second_run_needs_no_credentials(home, fake):
    s = Synced(home, fake, {"Trip": {"a.jpg": jpeg(1)}})
    (home.path / "credentials.json").unlink()
    r = s.run()
    assert r.code == 0, r
    assert fake.api_requests() == []


def test_second_run_leaves_albums_txt_byte_identical(home, fake):
    s = Synced(home, fake, {"Trip": {"a.jpg": jpeg(1)}})
    before = home.albums_bytes()
    assert s.run().code == 0
    assert home.albums_bytes() == before


def test_second_run_does_not_rewrite_state_json(home, fake):
    s = Synced(home, fake, {"Trip": {"a.jpg": jpeg(1)}})
    state = home.path / "state.json"
    before = (state.read_bytes(), state.stat().st_mtime_ns)
    assert s.run().code == 0
    # an empty plan rewrites state.json only if stat data changed
    assert (state.read_bytes(), state.stat().st_mtime_ns) == before


# --------------------------------------------------------------------------- the table

def test_new_file_is_one_upload(home, fake):
    s = Synced(home, fake, {"Trip": {"a.jpg": jpeg(1)}})
    s.file("Trip", "b.jpg").write_bytes(jpeg(2))
    r = s.run()
    assert r.code == 0, r
    assert routes(fake) == Counter({"POST /3/image": 1}) or routes(fake) == Counter({"POST /3/upload": 1})
    assert lines_starting(r.stdout, "+", "b.jpg"), r.stdout
    s.mirrors()


def test_deleted_file_is_one_delete(home, fake):
    s = Synced(home, fake, {"Trip": {"a.jpg": jpeg(1), "b.jpg": jpeg(2)}})
    old = s.image_id("Trip", "b.jpg")
    s.file("Trip", "b.jpg").unlink()
    r = s.run()
    assert r.code == 0, r
    assert routes(fake) == Counter({"DELETE /3/image/{id}": 1})
    assert image_deletes(fake)[0].path == f"/3/image/{old}"
    assert old not in fake.images
    assert lines_starting(r.stdout, "-", "b.jpg"), r.stdout
    s.mirrors()


def test_moved_file_is_added_then_removed_without_upload(home, fake):
    s = Synced(home, fake, {"A": {"a.jpg": jpeg(1), "m.jpg": jpeg(2)}, "B": {"b.jpg": jpeg(3)}})
    moved = s.image_id("A", "m.jpg")
    shutil.move(s.file("A", "m.jpg"), s.file("B", "m.jpg"))
    r = s.run()
    assert r.code == 0, r
    assert routes(fake) == Counter({"POST /3/album/{id}/add": 1, "remove /3/album/{id}/remove_images": 1}), routes(fake)
    add, = album_adds(fake)
    remove, = album_removes(fake)
    assert add.path == f"/3/album/{s.albums['B']}/add"
    assert remove.path == f"/3/album/{s.albums['A']}/remove_images"
    reqs = fake.api_requests()
    assert reqs.index(add) < reqs.index(remove), "the image must be added before it is removed"
    assert s.image_id("B", "m.jpg") == moved
    assert moved not in fake.album_image_ids(s.albums["A"])
    assert lines_starting(r.stdout, ">", "m.jpg"), r.stdout
    s.mirrors()


def test_several_moves_between_one_pair_use_one_add_and_one_remove(home, fake):
    s = Synced(home, fake, {"A": {f"m{i}.jpg": jpeg(i) for i in range(5)}, "B": {"b.jpg": jpeg(10)}})
    ids = {f"m{i}.jpg": s.image_id("A", f"m{i}.jpg") for i in range(3)}
    for name in ids:
        shutil.move(s.file("A", name), s.file("B", name))
    r = s.run()
    assert r.code == 0, r
    assert routes(fake) == Counter({"POST /3/album/{id}/add": 1, "remove /3/album/{id}/remove_images": 1}), routes(fake)
    for name, image_id in ids.items():
        assert s.image_id("B", name) == image_id
    s.mirrors()


def test_folder_emptied_by_moving_all_its_files_is_not_unavailable(home, fake):
    s = Synced(home, fake, {"A": {"x.jpg": jpeg(1), "y.jpg": jpeg(2)}, "B": {"b.jpg": jpeg(3)}})
    ids = {n: s.image_id("A", n) for n in ("x.jpg", "y.jpg")}
    for name in ids:
        shutil.move(s.file("A", name), s.file("B", name))
    r = s.run()
    assert r.code == 0, r
    assert not uploads(fake) and not image_deletes(fake)
    assert {n: s.image_id("B", n) for n in ids} == ids
    assert fake.album_image_ids(s.albums["A"]) == []


def test_rename_within_folder_sends_no_request(home, fake):
    s = Synced(home, fake, {"Trip": {"a.jpg": jpeg(1), "b.jpg": jpeg(2)}})
    s.file("Trip", "a.jpg").rename(s.file("Trip", "renamed.jpg"))
    r = s.run()
    assert r.code == 0, r
    assert fake.api_requests() == []
    # a third run does not see anything to do either: the state followed the name
    r = s.run()
    assert r.code == 0 and fake.api_requests() == []


def test_changed_content_uploads_the_new_version_then_deletes_the_old(home, fake):
    s = Synced(home, fake, {"Trip": {"a.jpg": jpeg(1), "b.jpg": jpeg(2)}})
    old = s.image_id("Trip", "a.jpg")
    s.file("Trip", "a.jpg").write_bytes(jpeg(99))
    r = s.run()
    assert r.code == 0, r
    reqs = fake.api_requests()
    up, = uploads(fake)
    dl, = image_deletes(fake)
    assert dl.path == f"/3/image/{old}"
    assert reqs.index(up) < reqs.index(dl), "the old image must be deleted only after the new upload"
    assert len(writes(fake)) == 2
    assert s.image_id("Trip", "a.jpg") != old
    assert lines_starting(r.stdout, "~", "a.jpg"), r.stdout
    s.mirrors()


def test_same_name_other_content_in_another_folder_is_not_a_move(home, fake):
    s = Synced(home, fake, {"A": {"a.jpg": jpeg(1), "p.jpg": jpeg(2)}, "B": {"b.jpg": jpeg(3)}})
    old = s.image_id("A", "p.jpg")
    s.file("A", "p.jpg").unlink()
    s.file("B", "p.jpg").write_bytes(jpeg(4))
    r = s.run()
    assert r.code == 0, r
    assert not album_adds(fake) and not album_removes(fake)
    assert len(uploads(fake)) == 1
    assert [d.path for d in image_deletes(fake)] == [f"/3/image/{old}"]
    s.mirrors()


def test_identical_bytes_in_two_folders_are_two_images(home, fake):
    same = jpeg(7)
    s = Synced(home, fake, {"A": {"x.jpg": same}, "B": {"x.jpg": same}})
    a, b = s.image_id("A", "x.jpg"), s.image_id("B", "x.jpg")
    assert a != b
    assert len(fake.images) == 2


def test_identical_bytes_twice_in_one_folder_are_two_images(home, fake):
    same = jpeg(7)
    s = Synced(home, fake, {"A": {"x.jpg": same, "copy of x.jpg": same}})
    assert s.image_id("A", "x.jpg") != s.image_id("A", "copy of x.jpg")


def test_copy_to_another_folder_is_an_upload_not_a_move(home, fake):
    s = Synced(home, fake, {"A": {"x.jpg": jpeg(1)}, "B": {"b.jpg": jpeg(2)}})
    shutil.copy(s.file("A", "x.jpg"), s.file("B", "x.jpg"))
    r = s.run()
    assert r.code == 0, r
    assert routes(fake) in (Counter({"POST /3/image": 1}), Counter({"POST /3/upload": 1})), routes(fake)
    s.mirrors()


def test_rename_in_own_folder_wins_over_a_move(home, fake):
    s = Synced(home, fake, {"A": {"x.jpg": jpeg(1)}, "B": {"b.jpg": jpeg(2)}})
    old = s.image_id("A", "x.jpg")
    data = s.file("A", "x.jpg").read_bytes()
    s.file("A", "x.jpg").rename(s.file("A", "y.jpg"))
    s.file("B", "z.jpg").write_bytes(data)
    r = s.run()
    assert r.code == 0, r
    assert not album_adds(fake) and not album_removes(fake) and not image_deletes(fake)
    assert len(uploads(fake)) == 1
    # Imgur keeps the image's old name: a rename sends nothing
    assert fake.album_image_ids(s.albums["A"]) == [old]
    s.mirrors("B")


def test_content_from_an_unlisted_folder_is_uploaded_not_moved(home, fake):
    s = Synced(home, fake, {"A": {"x.jpg": jpeg(1)}, "B": {"b.jpg": jpeg(2)}})
    _unlist(home, s.dirs["A"])  # then move its file into B
    shutil.move(s.file("A", "x.jpg"), s.file("B", "x.jpg"))
    r = s.run()
    assert r.code == 0, r
    assert not album_adds(fake) and not album_removes(fake) and not image_deletes(fake)
    assert len(uploads(fake)) == 1
    s.mirrors("B")


# --------------------------------------------------------------------------- what the hash leaves out

METADATA_EDITS = {
    "jpeg-xmp": ("p.jpg", jpeg(1), jpeg(1, xmp="rating 5")),
    "jpeg-iptc": ("p.jpg", jpeg(1), jpeg(1, iptc="a caption")),
    "jpeg-comment": ("p.jpg", jpeg(1), jpeg(1, comment="a comment")),
    "jpeg-all": ("p.jpg", jpeg(1, exif_orientation=1), jpeg(1, exif_orientation=1, xmp="x", iptc="y", comment="z")),
    "jpeg-xmp-changed": ("p.jpg", jpeg(1, xmp="one"), jpeg(1, xmp="two, longer")),
    "png-text": ("p.png", png(1), png(1, text="hello")),
    "png-ztxt": ("p.png", png(1), png(1, ztxt="hello")),
    "png-itxt": ("p.png", png(1), png(1, itxt="héllo")),
    "png-time": ("p.png", png(1), png(1, time=True)),
    "png-time-changed": ("p.png", png(1, time=(2020, 1, 1, 0, 0, 0)), png(1, time=(2024, 2, 2, 2, 2, 2))),
}


@pytest.mark.parametrize("case", sorted(METADATA_EDITS))
def test_metadata_only_edit_sends_no_request(home, fake, case):
    name, before, after = METADATA_EDITS[case]
    assert before != after
    s = Synced(home, fake, {"Trip": {name: before, "other.jpg": jpeg(50)}})
    old = s.image_id("Trip", name)
    s.file("Trip", name).write_bytes(after)
    r = s.run()
    assert r.code == 0, r
    assert fake.api_requests() == []
    assert s.image_id("Trip", name) == old
    # and the state recorded the new size/mtime: the next run is still free
    r = s.run("--rehash")
    assert r.code == 0 and fake.api_requests() == []


def test_metadata_edit_saved_as_a_new_file_sends_no_request(home, fake):
    """Photo managers often save to a temporary file and rename it over the original."""
    s = Synced(home, fake, {"Trip": {"p.jpg": jpeg(1), "q.jpg": jpeg(2)}})
    tmp = s.file("Trip", ".p.jpg.tmp")
    tmp.write_bytes(jpeg(1, xmp="rating 4", iptc="caption"))
    os.replace(tmp, s.file("Trip", "p.jpg"))
    r = s.run()
    assert r.code == 0, r
    assert fake.api_requests() == []


@pytest.mark.parametrize("before,after", [(None, 6), (1, 6), (6, 3)], ids=["added", "1-to-6", "6-to-3"])
def test_exif_orientation_change_is_a_replace(home, fake, before, after):
    s = Synced(home, fake, {"Trip": {"p.jpg": jpeg(1, exif_orientation=before), "q.jpg": jpeg(2)}})
    old = s.image_id("Trip", "p.jpg")
    s.file("Trip", "p.jpg").write_bytes(jpeg(1, exif_orientation=after))
    r = s.run()
    assert r.code == 0, r
    assert len(uploads(fake)) == 1
    assert [d.path for d in image_deletes(fake)] == [f"/3/image/{old}"]
    s.mirrors()


def test_pixel_change_with_same_metadata_is_a_replace(home, fake):
    s = Synced(home, fake, {"Trip": {"p.png": png(1, text="t"), "q.png": png(2)}})
    s.file("Trip", "p.png").write_bytes(png(3, text="t"))
    r = s.run()
    assert r.code == 0, r
    assert len(uploads(fake)) == 1 and len(image_deletes(fake)) == 1


# --------------------------------------------------------------------------- unlisting

def _unlist(home, folder):
    text = home.albums_bytes().decode()
    home.write_albums("".join(ln + "\n" for ln in text.splitlines() if str(folder) not in ln))


def test_removing_a_line_sends_no_request_and_deletes_nothing(home, fake):
    s = Synced(home, fake, {"A": {"a.jpg": jpeg(1)}, "B": {"b.jpg": jpeg(2)}})
    _unlist(home, s.dirs["A"])
    s.file("A", "a.jpg").unlink()  # even a local deletion is not pushed once unlisted
    r = s.run()
    assert r.code == 0, r
    assert fake.api_requests() == []
    assert s.albums["A"] in fake.albums
    assert len(fake.album_image_ids(s.albums["A"])) == 1


@pytest.mark.parametrize("how", ["linked-line", "bare-path"])
def test_adding_a_removed_line_back_costs_no_upload(home, fake, how):
    s = Synced(home, fake, {"A": {"a.jpg": jpeg(1), "b.jpg": jpeg(2)}, "B": {"c.jpg": jpeg(3)}})
    original = home.albums_bytes()
    linked_line = next(ln for ln in original.decode().splitlines() if str(s.dirs["A"]) in ln)
    _unlist(home, s.dirs["A"])
    assert s.run().code == 0
    fake.reset_requests()
    text = home.albums_bytes().decode()
    home.write_albums(text + (linked_line if how == "linked-line" else str(s.dirs["A"])) + "\n")
    r = s.run()
    assert r.code == 0, r
    assert not uploads(fake) and not image_deletes(fake)
    assert routes(fake)["POST /3/album"] == 0
    s.mirrors()


# --------------------------------------------------------------------------- unavailable folders

def _make_unavailable(s, how):
    d = s.dirs["A"]
    if how == "deleted":
        shutil.rmtree(d)
    elif how == "renamed-away":
        d.rename(d.with_name("A-elsewhere"))
    elif how == "emptied":
        for p in d.iterdir():
            p.unlink()
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["deleted", "renamed-away", "emptied"])
def test_unavailable_folder_exits_1_and_deletes_nothing(home, fake, how):
    s = Synced(home, fake, {"A": {"a.jpg": jpeg(1), "b.jpg": jpeg(2)}, "B": {"c.jpg": jpeg(3)}})
    before = list(fake.album_image_ids(s.albums["A"]))
    _make_unavailable(s, how)
    r = s.run()
    assert r.code == 1, r
    assert not image_deletes(fake)
    assert not album_removes(fake)
    assert fake.album_image_ids(s.albums["A"]) == before
    assert str(s.dirs["A"]) in r.stderr + r.stdout, "the unavailable folder is named"


def test_unavailable_folder_does_not_stop_other_folders(home, fake):
    s = Synced(home, fake, {"A": {"a.jpg": jpeg(1)}, "B": {"c.jpg": jpeg(3)}})
    shutil.rmtree(s.dirs["A"])
    s.file("B", "d.jpg").write_bytes(jpeg(4))
    r = s.run()
    assert r.code == 1, r
    assert len(uploads(fake)) == 1 and not image_deletes(fake)
    s.mirrors("B")


def test_unavailable_folder_stays_unavailable_on_the_next_run(home, fake):
    s = Synced(home, fake, {"A": {"a.jpg": jpeg(1), "b.jpg": jpeg(2)}})
    _make_unavailable(s, "emptied")
    assert s.run().code == 1
    r = s.run()
    assert r.code == 1, r
    assert not image_deletes(fake)


def test_force_syncs_an_emptied_folder(home, fake):
    s = Synced(home, fake, {"A": {"a.jpg": jpeg(1), "b.jpg": jpeg(2)}})
    ids = set(fake.album_image_ids(s.albums["A"]))
    _make_unavailable(s, "emptied")
    r = s.run("--force")
    assert r.code == 0, r
    assert {d.path for d in image_deletes(fake)} == {f"/3/image/{i}" for i in ids}
    assert fake.album_image_ids(s.albums["A"]) == []


def test_linked_album_that_answers_404_makes_the_folder_unavailable(home, fake):
    folder = home.folder("Trip", {"a.jpg": jpeg(1)})
    home.write_credentials()
    home.write_albums(f"{folder} -> https://imgur.com/a/Zz9Yy8X\n")
    r = home.run("sync")
    assert r.code == 1, r
    assert not uploads(fake) and routes(fake)["POST /3/album"] == 0
    assert "->" in r.stdout + r.stderr, "the message says to remove the '-> URL' part"


# --------------------------------------------------------------------------- delete guard

def test_delete_guard_holds_back_deleting_more_than_half(home, fake):
    s = Synced(home, fake, {"A": four()})
    for i in range(3):
        s.file("A", f"img{i}.jpg").unlink()
    r = s.run()
    assert r.code == 1, r
    assert not image_deletes(fake)
    assert len(fake.album_image_ids(s.albums["A"])) == 4


def test_delete_guard_allows_exactly_half(home, fake):
    s = Synced(home, fake, {"A": four()})
    for i in range(2):
        s.file("A", f"img{i}.jpg").unlink()
    r = s.run()
    assert r.code == 0, r
    assert len(image_deletes(fake)) == 2
    s.mirrors()


def test_delete_guard_does_not_apply_below_four_files(home, fake):
    s = Synced(home, fake, {"A": {f"img{i}.jpg": jpeg(i) for i in range(3)}})
    for i in range(3):
        s.file("A", f"img{i}.jpg").unlink()
    s.file("A", "new.jpg").write_bytes(jpeg(9))  # not emptied, so not unavailable
    r = s.run()
    assert r.code == 0, r
    assert len(image_deletes(fake)) == 3
    s.mirrors()


@pytest.mark.parametrize("args", [("--max-delete", "3"), ("--max-delete", "10"), ("--force",)],
                         ids=["max-delete-3", "max-delete-10", "force"])
def test_delete_guard_can_be_lifted(home, fake, args):
    s = Synced(home, fake, {"A": four()})
    for i in range(3):
        s.file("A", f"img{i}.jpg").unlink()
    r = s.run(*args)
    assert r.code == 0, r
    assert len(image_deletes(fake)) == 3
    s.mirrors()


def test_delete_guard_is_per_run_and_says_so_again(home, fake):
    s = Synced(home, fake, {"A": four()})
    for i in range(3):
        s.file("A", f"img{i}.jpg").unlink()
    assert s.run().code == 1
    r = s.run()
    assert r.code == 1, r
    assert not image_deletes(fake)


def test_delete_guard_holds_back_replacing_more_than_half(home, fake):
    s = Synced(home, fake, {"A": four()})
    for i in range(3):
        s.file("A", f"img{i}.jpg").write_bytes(jpeg(100 + i))
    r = s.run()
    assert r.code == 1, r
    assert not image_deletes(fake)
    # README "Safety rules": the delete guard "does none of it"
    assert not uploads(fake), "a held-back replacement must not upload either"
    assert len(fake.album_image_ids(s.albums["A"])) == 4


def test_replacements_can_be_forced(home, fake):
    s = Synced(home, fake, {"A": four()})
    for i in range(3):
        s.file("A", f"img{i}.jpg").write_bytes(jpeg(100 + i))
    r = s.run("--force")
    assert r.code == 0, r
    assert len(uploads(fake)) == 3 and len(image_deletes(fake)) == 3
    s.mirrors()


# --------------------------------------------------------------------------- skipped files

def test_ineligible_files_are_never_uploaded(home, fake):
    folder = home.folder("Trip", {
        "a.JPG": jpeg(1), "b.jpeg": jpeg(2), "c.Jpe": jpeg(3), "d.PNG": png(4), "e.gif": gif(5),
        "f.heic": jpeg(6), "g.webp": jpeg(7), ".hidden.jpg": jpeg(8), "notes.txt": b"hello",
        "noext": jpeg(9),
    })
    sub = folder / "sub"
    sub.mkdir()
    (sub / "inner.jpg").write_bytes(jpeg(10))
    home.write_credentials()
    home.write_albums(f"{folder}\n")
    r = home.run("sync")
    assert r.code == 0, r
    (album_id,) = album_ids_from_txt(home).values()
    assert album_names(fake, album_id) == ["a.JPG", "b.jpeg", "c.Jpe", "d.PNG", "e.gif"]
    assert len(uploads(fake)) == 5
    assert_album_mirrors(fake, album_id, folder)
    fake.reset_requests()
    assert home.run("sync").code == 0
    assert fake.api_requests() == []


# --------------------------------------------------------------------------- --dry-run

def test_dry_run_of_a_new_folder_changes_nothing(home, fake):
    folder = home.folder("Trip", {"a.jpg": jpeg(1), "b.jpg": jpeg(2)})
    home.write_credentials()
    home.write_albums(f"{folder}\n")
    before = home.albums_bytes()
    r = home.run("sync", "--dry-run")
    assert r.code == 0, r
    assert all(req.method == "GET" for req in fake.api_requests() if not req.path.startswith("/oauth2/"))
    assert not token_requests(fake)
    assert fake.albums == {} and fake.images == {}
    assert home.albums_bytes() == before
    assert not (home.path / "state.json").exists()
    assert lines_starting(r.stdout, "+", "a.jpg") and lines_starting(r.stdout, "+", "b.jpg"), r.stdout


def test_dry_run_prints_the_plan_and_writes_no_state(home, fake):
    s = Synced(home, fake, {"A": {"keep.jpg": jpeg(1), "gone.jpg": jpeg(2), "mv.jpg": jpeg(3),
                                  "chg.jpg": jpeg(4)},
                            "B": {"b.jpg": jpeg(5)}})
    state_before = (home.path / "state.json").read_bytes()
    albums_before = home.albums_bytes()
    images_before = {a: list(fake.album_image_ids(a)) for a in s.albums.values()}
    s.file("A", "gone.jpg").unlink()
    shutil.move(s.file("A", "mv.jpg"), s.file("B", "mv.jpg"))
    s.file("A", "chg.jpg").write_bytes(jpeg(40))
    s.file("A", "new.jpg").write_bytes(jpeg(6))
    r = s.run("--dry-run")
    assert r.code == 0, r
    assert {req.method for req in fake.api_requests()} <= {"GET"}, routes(fake)
    assert (home.path / "state.json").read_bytes() == state_before
    assert home.albums_bytes() == albums_before
    assert {a: list(fake.album_image_ids(a)) for a in s.albums.values()} == images_before
    assert lines_starting(r.stdout, "+", "new.jpg"), r.stdout
    assert lines_starting(r.stdout, "-", "gone.jpg"), r.stdout
    assert lines_starting(r.stdout, ">", "mv.jpg"), r.stdout
    assert lines_starting(r.stdout, "~", "chg.jpg"), r.stdout
    # and the real run afterwards still does all of it
    fake.reset_requests()
    r = s.run()
    assert r.code == 0, r
    assert len(uploads(fake)) == 2 and len(image_deletes(fake)) == 2
    assert len(album_adds(fake)) == 1 and len(album_removes(fake)) == 1
    s.mirrors()


# --------------------------------------------------------------------------- bad state

@pytest.mark.parametrize("content", [b"{not json", b"", b"[1, 2, 3]", b"\xff\xfe\x00garbage"],
                         ids=["truncated", "empty", "wrong-type", "binary"])
def test_corrupt_state_json_exits_2_and_is_left_alone(home, fake, content):
    s = Synced(home, fake, {"A": {"a.jpg": jpeg(1)}})
    s.file("A", "b.jpg").write_bytes(jpeg(2))
    (home.path / "state.json").write_bytes(content)
    albums_before = home.albums_bytes()
    r = s.run()
    assert r.code == 2, r
    assert (home.path / "state.json").read_bytes() == content
    assert home.albums_bytes() == albums_before
    assert fake.api_requests() == []


# --------------------------------------------------------------------------- tokens

def _creds(home):
    import json
    return json.loads((home.path / "credentials.json").read_text())


def test_expired_token_is_refreshed_once_and_saved(home, fake):
    s = Synced(home, fake, {"A": {"a.jpg": jpeg(1)}})
    old_token = _creds(home)["access_token"]
    s.file("A", "b.jpg").write_bytes(jpeg(2))
    s.file("A", "c.jpg").write_bytes(jpeg(3))
    fake.expire_access_tokens()
    r = s.run()
    assert r.code == 0, r
    assert len(token_requests(fake)) == 1
    assert len(uploads(fake)) >= 2
    s.mirrors()
    creds = _creds(home)
    assert creds["access_token"] != old_token
    assert stat.S_IMODE(os.stat(home.path / "credentials.json").st_mode) == 0o600
    # the saved token works: the next change needs no refresh
    fake.reset_requests()
    s.file("A", "d.jpg").write_bytes(jpeg(4))
    assert s.run().code == 0
    assert not token_requests(fake)


def test_revoked_refresh_token_exits_5(home, fake):
    s = Synced(home, fake, {"A": {"a.jpg": jpeg(1)}})
    s.file("A", "b.jpg").write_bytes(jpeg(2))
    fake.expire_access_tokens()
    fake.revoke_refresh_tokens()
    r = s.run()
    assert r.code == 5, r
    assert len(fake.album_image_ids(s.albums["A"])) == 1
    assert len(token_requests(fake)) == 1


def test_missing_credentials_with_work_to_do_exits_5_before_any_request(home, fake):
    s = Synced(home, fake, {"A": {"a.jpg": jpeg(1)}})
    (home.path / "credentials.json").unlink()
    s.file("A", "b.jpg").write_bytes(jpeg(2))
    r = s.run()
    assert r.code == 5, r
    assert fake.api_requests() == []


def test_over_capacity_is_retried_without_a_token_refresh(home, fake):
    s = Synced(home, fake, {"A": {"a.jpg": jpeg(1)}})
    s.file("A", "b.jpg").write_bytes(jpeg(2))
    fake.add_fault("over_capacity", method="POST", path=r"^/3/(image|upload)$", count=1)
    r = s.run()
    assert r.code == 0, r
    assert not token_requests(fake)
    assert [req.status for req in uploads(fake)] == [403, 200]
    s.mirrors()
