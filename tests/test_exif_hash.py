"""Ratings and tags that cost nothing (README, "Which files" and "Changes and what they do
on Imgur"): the content hash leaves out all of EXIF but its orientation, in JPEG APP1 Exif
and PNG eXIf, and the change of definition migrates the state without a request.

Windows Explorer and Photos write a rating and tags into EXIF (Rating, RatingPercent,
XPKeywords as UTF-16LE bytes, Microsoft's padding tag); imagefiles.jpeg/png(exif=...)
write them that way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import import_imgurbox
from imagefiles import WINDOWS_RATING, WINDOWS_RETAGGED, jpeg, png
from mirror_check import (album_adds, album_removes, image_deletes, load_state, uploads,
                          writes)
from test_sync import Synced

ib = import_imgurbox()

OLD_FILE_FIELDS = ["name", "image_id", "hash", "size", "mtime_ns", "inode"]


def hash_of(tmp_path, data: bytes, name: str = "p.jpg", version: int = ib.HASH_VERSION) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return ib.content_hash(str(path), ib.file_extension(name), version)


def rows(state: dict, album_id: str) -> dict:
    """name -> {field: value} of one album's file rows."""
    fields = state["file_fields"]
    return {row[0]: dict(zip(fields, row)) for row in state["albums"][album_id]["files"]}


def downgrade_state(home) -> None:
    """Rewrite state.json as imgurbox wrote it before hash versions, links and captions:
    six-field rows whose hashes are of the first definition (all of EXIF counted)."""
    path = Path(home.path) / "state.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    fields = data["file_fields"]
    for album in data["albums"].values():
        old_rows = []
        for row in album["files"]:
            record = dict(zip(fields, row))
            record["hash"] = ib.content_hash(str(Path(album["folder"]) / record["name"]),
                                             ib.file_extension(record["name"]),
                                             ib.OLD_HASH_VERSION)
            old_rows.append([record[name] for name in OLD_FILE_FIELDS])
        album["files"] = old_rows
    data["file_fields"] = OLD_FILE_FIELDS
    path.write_text(json.dumps(data), encoding="utf-8")


# --------------------------------------------------------------------------- the definition

def test_hash_leaves_out_exif_but_orientation(tmp_path):
    plain = hash_of(tmp_path, jpeg(1))
    assert hash_of(tmp_path, jpeg(1, exif=WINDOWS_RATING)) == plain
    assert hash_of(tmp_path, jpeg(1, exif=WINDOWS_RETAGGED)) == plain
    # an absent orientation is orientation 1
    assert hash_of(tmp_path, jpeg(1, exif_orientation=1)) == plain
    assert hash_of(tmp_path, jpeg(1, exif={**WINDOWS_RATING, "Orientation": 1})) == plain
    rotated = hash_of(tmp_path, jpeg(1, exif={**WINDOWS_RATING, "Orientation": 6}))
    assert rotated != plain
    assert hash_of(tmp_path, jpeg(1, exif_orientation=6)) == rotated
    assert hash_of(tmp_path, jpeg(1, exif_orientation=8)) not in (plain, rotated)
    assert hash_of(tmp_path, jpeg(2, exif=WINDOWS_RATING)) != plain      # pixels count


def test_png_exif_chunk_counts_only_its_orientation(tmp_path):
    plain = hash_of(tmp_path, png(1), "p.png")
    assert hash_of(tmp_path, png(1, exif=WINDOWS_RATING), "p.png") == plain
    assert hash_of(tmp_path, png(1, exif={"Orientation": 1}), "p.png") == plain
    assert hash_of(tmp_path, png(1, exif={"Orientation": 3}), "p.png") != plain


def test_old_definition_counted_all_of_exif(tmp_path):
    old = ib.OLD_HASH_VERSION
    assert hash_of(tmp_path, jpeg(1, exif=WINDOWS_RATING), version=old) != \
        hash_of(tmp_path, jpeg(1), version=old)
    # without any EXIF, both definitions agree
    assert hash_of(tmp_path, jpeg(1), version=old) == hash_of(tmp_path, jpeg(1))


def test_exif_block_that_does_not_parse_is_hashed(tmp_path):
    def broken(junk: bytes) -> bytes:
        data = jpeg(1)
        segment = b"\xff\xe1" + (len(junk) + 8).to_bytes(2, "big") + b"Exif\x00\x00" + junk
        return data[:2] + segment + data[2:]
    assert hash_of(tmp_path, broken(b"not a tiff")) != hash_of(tmp_path, broken(b"other junk"))


# --------------------------------------------------------------------------- end to end

@pytest.mark.parametrize("name,before,after", [
    ("p.jpg", jpeg(1), jpeg(1, exif=WINDOWS_RATING)),
    ("p.jpg", jpeg(1, exif=WINDOWS_RATING), jpeg(1, exif=WINDOWS_RETAGGED)),
    ("p.jpg", jpeg(1, exif_orientation=6), jpeg(1, exif={**WINDOWS_RATING, "Orientation": 6})),
    ("p.png", png(1), png(1, exif=WINDOWS_RATING)),
], ids=["jpeg-rated", "jpeg-retagged", "jpeg-rotated-rated", "png-exif"])
def test_rating_and_tags_in_exif_send_no_request(home, fake, name, before, after):
    s = Synced(home, fake, {"Trip": {name: before, "other.jpg": jpeg(50)}})
    old = s.image_id("Trip", name)
    s.file("Trip", name).write_bytes(after)
    r = s.run()
    assert r.code == 0, r
    assert fake.api_requests() == []
    assert s.image_id("Trip", name) == old
    r = s.run("--rehash")                       # the new stat data were recorded
    assert r.code == 0 and fake.api_requests() == []


@pytest.mark.parametrize("name,before,after", [
    ("p.jpg", jpeg(1, exif=WINDOWS_RATING), jpeg(1, exif={**WINDOWS_RATING, "Orientation": 6})),
    ("p.png", png(1, exif=WINDOWS_RATING), png(1, exif={**WINDOWS_RATING, "Orientation": 8})),
], ids=["jpeg", "png"])
def test_orientation_change_is_a_replace(home, fake, name, before, after):
    s = Synced(home, fake, {"Trip": {name: before, "other.jpg": jpeg(50)}})
    old = s.image_id("Trip", name)
    s.file("Trip", name).write_bytes(after)
    r = s.run()
    assert r.code == 0, r
    assert len(uploads(fake)) == 1
    assert [d.path for d in image_deletes(fake)] == [f"/3/image/{old}"]
    s.mirrors()


# --------------------------------------------------------------------------- the migration

def test_migration_from_an_old_state_sends_nothing_and_saves_the_new_version(home, fake):
    s = Synced(home, fake, {"Trip": {"rated.jpg": jpeg(1, exif=WINDOWS_RATING),
                                     "plain.jpg": jpeg(2), "p.png": png(3, exif=WINDOWS_RATING)},
                            "Cats": {"c.jpg": jpeg(4, exif_orientation=6)}})
    downgrade_state(home)
    (Path(home.path) / "credentials.json").unlink()      # and none is needed
    before = {album_id: rows(load_state(home), album_id) for album_id in s.albums.values()}
    r = s.run()
    assert r.code == 0, r
    assert fake.api_requests() == []
    state = load_state(home)
    assert state["file_fields"][-3:] == ["hash_version", "link", "caption"]
    for folder, album_id in s.albums.items():
        migrated = rows(state, album_id)
        assert sorted(migrated) == sorted(before[album_id])
        for name, row in migrated.items():
            assert row["hash_version"] == ib.HASH_VERSION
            assert row["image_id"] == before[album_id][name]["image_id"]
            assert row["hash"] == ib.content_hash(str(s.file(folder, name)),
                                                  ib.file_extension(name))
    # Under the new definition, a rating written by Windows costs nothing.
    s.file("Trip", "plain.jpg").write_bytes(jpeg(2, exif=WINDOWS_RATING))
    r = s.run()
    assert r.code == 0 and fake.api_requests() == [], r


def test_migration_run_matches_moved_renamed_and_touched_files_by_their_old_hash(home, fake):
    s = Synced(home, fake, {"A": {"a1.jpg": jpeg(1, exif=WINDOWS_RATING), "a2.jpg": jpeg(2),
                                  "a3.jpg": jpeg(3, exif=WINDOWS_RATING), "a4.jpg": jpeg(4)},
                            "B": {"b1.jpg": jpeg(5)}})
    moved_id = s.image_id("A", "a1.jpg")
    downgrade_state(home)
    os.replace(s.file("A", "a1.jpg"), s.file("B", "a1.jpg"))        # a move
    os.replace(s.file("A", "a2.jpg"), s.file("A", "renamed.jpg"))   # a rename
    stat = s.file("A", "a3.jpg").stat()                             # a touch
    os.utime(s.file("A", "a3.jpg"), ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    r = s.run()
    assert r.code == 0, r
    assert uploads(fake) == [] and image_deletes(fake) == []
    assert len(album_adds(fake)) == 1 and len(album_removes(fake)) == 1
    state = load_state(home)
    assert rows(state, s.albums["B"])["a1.jpg"]["image_id"] == moved_id
    for album_id in s.albums.values():
        assert {row["hash_version"] for row in rows(state, album_id).values()} == {ib.HASH_VERSION}
    fake.reset_requests()
    r = s.run("--rehash")
    assert r.code == 0 and fake.api_requests() == [], r


def test_migration_in_a_dry_run_writes_nothing(home, fake):
    s = Synced(home, fake, {"Trip": {"p.jpg": jpeg(1, exif=WINDOWS_RATING)}})
    downgrade_state(home)
    old = (Path(home.path) / "state.json").read_bytes()
    r = s.run("--dry-run")
    assert r.code == 0, r
    assert writes(fake) == [] and (Path(home.path) / "state.json").read_bytes() == old
    # the file matched by its old hash: nothing to do, not even a rename onto itself
    assert "rename" not in r.stdout and "plan: 0 requests" in r.stdout, r
    r = s.run()
    assert r.code == 0 and fake.api_requests() == [], r
    assert (Path(home.path) / "state.json").read_bytes() != old


def test_a_journal_line_from_before_hash_versions_holds_an_old_hash(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    store = ib.StateStore.load(str(home))
    store.set_album("alb1", folder=str(tmp_path), listed=True, title="t")
    store.save()
    generation = store.generation
    line = {"op": "file", "album": "alb1", "name": "a.jpg",
            "record": ["img1", "h1", 1, 2, 3], "gen": generation, "run": 1}
    (home / "state.journal").write_text(json.dumps(line) + "\n", encoding="utf-8")
    record = ib.StateStore.load(str(home)).albums["alb1"].files["a.jpg"]
    assert (record.image_id, record.hash, record.hash_version) == ("img1", "h1",
                                                                   ib.OLD_HASH_VERSION)
    assert record.link == "" and record.caption is None
