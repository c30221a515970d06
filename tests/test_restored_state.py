"""A state.json restored from state.json.bak, or lost, after later runs uploaded (issue 11).

The run counter (`run-counter` in the home) holds the number of the last run that wrote
to Imgur; state.json carries the number of the run that made it. A state older than the
counter does not know what those runs uploaded: the first run to upload into one of its
albums reads that album once and adopts, by file name, the images it does not know,
instead of uploading the files again. Every assertion is on the fake's record of
requests, state.json and the output.
"""

from __future__ import annotations

import json
import os
import shutil
import time

from imagefiles import png
from mirror_check import (album_of, assert_mirror, image_deletes, kind, load_state, state_files,
                          uploads, writes)
from test_reliability import files, first_sync


def album_reads(fake, album_id=None) -> list:
    return [q for q in fake.api_requests() if q.method == "GET" and q.path.endswith("/images")
            and (album_id is None or f"/{album_id}/" in q.path)]


def keep_state(home, tmp_path):
    """A copy of state.json as it is now, to restore later (what state.json.bak is)."""
    copy = tmp_path / "kept-state.json"
    shutil.copyfile(home.path / "state.json", copy)
    return copy


def restore_state(home, copy):
    shutil.copyfile(copy, home.path / "state.json")
    journal = home.path / "state.journal"
    if journal.exists():
        journal.unlink()


def later_run_uploads(home, fake, tmp_path, folder, new_files):
    """Keep the state, add ``new_files`` to ``folder`` and sync them (a later run),
    then put the kept state back. Returns the IDs the later run uploaded."""
    kept = keep_state(home, tmp_path)
    for name, data in new_files.items():
        (folder / name).write_bytes(data)
    r = home.run("sync")
    assert r.code == 0, r
    uploaded = [q for q in uploads(fake) if q.status == 200]
    assert sorted(q.value("name") for q in uploaded) == sorted(new_files)
    restore_state(home, kept)
    fake.reset_requests()
    return uploaded


def run_counter(home) -> int:
    return int((home.path / "run-counter").read_text())


# --------------------------------------------------------------------------- the counter

def test_the_run_counter_is_written_before_the_first_write_and_the_journal_carries_it(
        home, fake):
    folder = home.folder("A", files("a", 2))
    home.write_credentials()
    home.write_albums(f"{folder}\n")
    seen = []

    def hook(phase, request):
        if phase == "before" and kind(request) == "upload" and not seen:
            counter = home.path / "run-counter"
            journal = home.path / "state.journal"
            seen.append((counter.read_text() if counter.exists() else None,
                         [json.loads(line) for line in journal.read_text().splitlines()]
                         if journal.exists() else []))
        return None

    fake.on_request = hook
    r = home.run("sync", "--jobs", "1")
    fake.on_request = None
    assert r.code == 0, r
    counter_text, journal = seen[0]
    assert counter_text == "1\n", "the counter was not written before the first write"
    assert journal and all(line.get("run") == 1 for line in journal), journal
    assert load_state(home)["run"] == 1 and run_counter(home) == 1

    fake.reset_requests()
    r = home.run("sync")                     # nothing to write: the counter stays
    assert r.code == 0 and fake.api_requests() == [], r
    assert run_counter(home) == 1

    (folder / "new.png").write_bytes(png("new"))
    r = home.run("sync")
    assert r.code == 0, r
    assert run_counter(home) == 2 and load_state(home)["run"] == 2


def test_a_dry_run_never_moves_the_counter(home, fake):
    folder = home.folder("A", files("a", 2))
    home.write_credentials()
    home.write_albums(f"{folder}\n")
    r = home.run("sync", "--dry-run")
    assert r.code == 0, r
    assert not (home.path / "run-counter").exists()
    assert writes(fake) == []


# --------------------------------------------------------------------------- restored state

def test_a_restored_state_adopts_the_later_runs_uploads_and_uploads_nothing(
        home, fake, tmp_path):
    folder = first_sync(home, fake, A=files("a", 3))["A"]
    album_id = album_of(load_state(home), folder)
    later_run_uploads(home, fake, tmp_path, folder, files("b", 2))
    assert run_counter(home) == 2

    r = home.run("sync")
    assert r.code == 0, r
    assert uploads(fake) == [], "uploaded again: duplicates"
    assert "adopted 2 uploads of an earlier run that state.json did not know" in r.stdout, r
    assert "2 adopted" in r.stdout, r
    assert len(album_reads(fake, album_id)) >= 1
    assert_mirror(home, fake, [folder])
    state = load_state(home)
    # Adopting reads only: the run wrote nothing, so it took the counter's number.
    assert state["restore_owed"] == [] and state["run"] == 2 == run_counter(home)

    fake.reset_requests()
    r = home.run("sync")                     # adopted with their hashes: nothing to do
    assert r.code == 0 and fake.api_requests() == [], (r, fake.api_requests())


def test_the_state_json_bak_imgurbox_keeps_is_safe_to_restore(home, fake):
    folder = first_sync(home, fake, A=files("a", 3))["A"]
    for name, data in files("b", 2).items():
        (folder / name).write_bytes(data)
    r = home.run("sync")
    assert r.code == 0, r
    shutil.copyfile(home.path / "state.json.bak", home.path / "state.json")
    fake.reset_requests()
    r = home.run("sync")
    assert r.code == 0, r
    assert uploads(fake) == []
    assert_mirror(home, fake, [folder])


def test_a_restored_replacement_adopts_the_new_image_and_deletes_the_old(home, fake, tmp_path):
    folder = first_sync(home, fake, A={"a.png": png("old"), "b.png": png("b")})["A"]
    album_id = album_of(load_state(home), folder)
    kept = keep_state(home, tmp_path)
    (folder / "a.png").write_bytes(png("new"))
    r = home.run("sync")
    assert r.code == 0, r
    assert len(uploads(fake)) == 1 and len(image_deletes(fake)) == 1
    restore_state(home, kept)
    fake.reset_requests()

    r = home.run("sync")
    assert r.code == 0, r
    assert uploads(fake) == []
    assert "adopted 1 upload of an earlier run" in r.stdout, r
    assert_mirror(home, fake, [folder])
    images = [fake.images[i] for i in fake.album_image_ids(album_id)]
    assert sorted(i.data for i in images if i.name == "a.png") == [png("new")]


def test_a_file_edited_after_the_lost_upload_is_uploaded_again(home, fake, tmp_path):
    folder = first_sync(home, fake, A=files("a", 2))["A"]
    later_run_uploads(home, fake, tmp_path, folder, {"b.png": png("b1")})
    edited = folder / "b.png"
    edited.write_bytes(png("b2"))
    future = time.time() + 60                # surely later than the lost run's upload
    os.utime(edited, (future, future))

    r = home.run("sync")
    assert r.code == 0, r
    assert [q.value("name") for q in uploads(fake)] == ["b.png"], "the edit was not uploaded"
    assert len(image_deletes(fake)) == 1, "the adopted older image was not replaced"
    assert_mirror(home, fake, [folder])


def test_a_second_image_of_the_same_name_is_left_alone_and_reported(home, fake, tmp_path):
    folder = first_sync(home, fake, A=files("a", 2))["A"]
    album_id = album_of(load_state(home), folder)
    later_run_uploads(home, fake, tmp_path, folder, {"b.png": png("b")})
    fake.create_image("alice", png("b"), name="b.png", album=album_id)

    r = home.run("sync")
    assert r.code == 1, r
    assert uploads(fake) == [] and image_deletes(fake) == []
    assert "has the name of" in r.stderr and "left alone" in r.stderr, r
    state = load_state(home)
    same_name = [i for i in fake.album_image_ids(album_id) if fake.images[i].name == "b.png"]
    recorded = state_files(state, album_id)["b.png"]
    assert len(same_name) == 2 and recorded in same_name
    assert state["albums"][album_id]["ignored"] == [i for i in same_name if i != recorded]

    fake.reset_requests()
    r = home.run("sync")                     # reported once; the copy stays the user's call
    assert r.code == 0 and writes(fake) == [], r


def test_a_dry_run_says_what_it_would_adopt_and_writes_nothing(home, fake, tmp_path):
    folder = first_sync(home, fake, A=files("a", 2))["A"]
    later_run_uploads(home, fake, tmp_path, folder, files("b", 2))
    state_before = (home.path / "state.json").read_bytes()
    log_before = (home.path / "log.txt").read_text()

    r = home.run("sync", "--dry-run")
    assert r.code == 0, r
    assert "would adopt 2 uploads of an earlier run" in r.stdout, r
    assert writes(fake) == []
    assert (home.path / "state.json").read_bytes() == state_before
    assert "adopted" not in (home.path / "log.txt").read_text()[len(log_before):]
    assert run_counter(home) == 2

    r = home.run("sync")
    assert r.code == 0 and uploads(fake) == [], r
    assert "adopted 2 uploads" in r.stdout
    assert_mirror(home, fake, [folder])


def test_an_owed_album_is_read_only_when_a_run_would_upload_into_it(home, fake, tmp_path):
    paths = first_sync(home, fake, A=files("a", 2), B=files("b", 2))
    state = load_state(home)
    album_b = album_of(state, paths["B"])
    later_run_uploads(home, fake, tmp_path, paths["A"], {"a-new.png": png("an")})

    r = home.run("sync")                     # uploads only into A: B is not read
    assert r.code == 0, r
    assert uploads(fake) == [] and album_reads(fake, album_b) == []
    assert load_state(home)["restore_owed"] == [album_b]

    fake.reset_requests()
    (paths["B"] / "b-new.png").write_bytes(png("bn"))
    r = home.run("sync")                     # B has an upload now: read once first
    assert r.code == 0, r
    assert len(album_reads(fake, album_b)) == 1
    assert [q.value("name") for q in uploads(fake)] == ["b-new.png"]
    assert load_state(home)["restore_owed"] == []
    assert_mirror(home, fake, paths.values())


def test_an_album_that_cannot_be_read_holds_its_uploads_for_a_later_run(home, fake, tmp_path):
    folder = first_sync(home, fake, A=files("a", 2))["A"]
    album_id = album_of(load_state(home), folder)
    later_run_uploads(home, fake, tmp_path, folder, files("b", 2))
    fake.add_fault("status", method="GET", path=rf"/3/album/{album_id}/images", count=None,
                   code=500)

    r = home.run("sync")
    assert r.code == 1, r
    assert uploads(fake) == [], "uploaded without knowing what the album holds"
    assert "restored state.json" in r.stderr, r
    assert load_state(home)["restore_owed"] == [album_id]

    fake.clear_faults()
    r = home.run("sync")
    assert r.code == 0 and uploads(fake) == [], r
    assert_mirror(home, fake, [folder])


def test_an_unreadable_run_counter_takes_the_state_for_restored(home, fake):
    folder = first_sync(home, fake, A=files("a", 2))["A"]
    (home.path / "run-counter").write_text("not a number\n")
    (folder / "c.png").write_bytes(png("c"))
    r = home.run("sync")
    assert r.code == 0, r
    assert len(album_reads(fake)) >= 1 and [q.value("name") for q in uploads(fake)] == ["c.png"]
    assert_mirror(home, fake, [folder])
