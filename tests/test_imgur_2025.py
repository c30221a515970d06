"""Imgur as it behaves since December 2024 (issue 10), end to end against the fake:
album writes as multipart, no photo in an album not shown hidden, refusals told apart,
moves when an image is gone on Imgur."""

from __future__ import annotations

import os

import pytest

from imagefiles import jpeg, png
from mirror_check import (album_writes, assert_mirror, kind, load_state, token_requests,
                          uploads)
from test_reliability import files, first_sync, new_folder


def test_album_writes_go_as_multipart_with_one_ids_part_per_id(home, fake):
    paths = first_sync(home, fake, A=files("a", 3), B=files("b", 1))
    for name in ("a00.png", "a01.png"):
        os.replace(paths["A"] / name, paths["B"] / name)
    r = home.run("sync")
    assert r.code == 0, r
    writes = album_writes(fake)
    assert sorted(kind(q) for q in writes) == ["add", "remove"], [kind(q) for q in writes]
    for q in writes:
        assert q.method == "POST", q
        assert q.headers["Content-Type"].startswith("multipart/form-data"), q.headers
        assert len(q.form.get("ids[]", [])) == 2, q.form
    assert_mirror(home, fake, paths.values())


def test_a_new_album_not_shown_hidden_gets_no_photo_until_a_later_run_sees_it_hidden(
        home, fake):
    """Imgur ignoring the privacy of album writes: the album is read back, updated once,
    read again; still public, its folder does not sync; the next run checks it first."""
    folder = new_folder(home, "A", files("a", 2))

    def ignore_privacy(phase, request):
        if phase == "after" and request.method == "POST" and request.path.startswith("/3/album"):
            for album in fake.albums.values():
                album.privacy = "public"
        return None

    fake.on_request = ignore_privacy
    r = home.run("sync")
    fake.on_request = None
    assert r.code == 1, r
    assert "may be public" in r.stdout + r.stderr, r
    assert uploads(fake) == [], "a photo went into an album that may be public"
    kinds = [kind(q) for q in fake.api_requests()]
    assert kinds == ["create", "GET_/3/album/{id}", "GET_/3/album/{id}",
                     "POST_/3/album/{id}", "GET_/3/album/{id}", "GET_/3/album/{id}"], kinds
    state = load_state(home)
    (album_id,) = state["albums"]
    assert state["albums"][album_id]["privacy_unverified"] is True

    fake.albums[album_id].privacy = "hidden"         # the user set it hidden on imgur.com
    fake.reset_requests()
    r = home.run("sync")
    assert r.code == 0, r
    assert kind(fake.api_requests()[0]) == "GET_/3/album/{id}", "not checked first"
    assert len(uploads(fake)) == 2
    assert load_state(home)["albums"][album_id]["privacy_unverified"] is False
    assert_mirror(home, fake, [folder])


def test_a_429_with_credits_left_is_a_stale_token_refreshed_once(home, fake):
    """Since 2025 Imgur answers some stale tokens with a 429 whose rate headers still
    show credits left: one refresh, then the run carries on (not exit 4)."""
    folder = new_folder(home, "A", files("a", 2))
    fake.add_fault("status", method="POST", path=r"^/3/image$", code=429,
                   message="Too Many Requests", count=1)
    r = home.run("sync", "--jobs", "1")
    assert r.code == 0, r
    assert len(token_requests(fake)) == 1
    assert_mirror(home, fake, [folder])


def test_a_move_whose_image_is_gone_on_imgur_uploads_it_into_the_new_album(home, fake):
    paths = first_sync(home, fake, A=files("a", 4), B=files("b", 1))
    state = load_state(home)
    album_a = next(i for i, a in state["albums"].items() if a["folder"] == str(paths["A"]))
    gone_id = next(row[1] for row in state["albums"][album_a]["files"] if row[0] == "a00.png")
    fake.delete_image(gone_id)                       # deleted on imgur.com
    for name in ("a00.png", "a01.png", "a02.png"):
        os.replace(paths["A"] / name, paths["B"] / name)
    r = home.run("sync")
    assert r.code == 0, r
    adds = [q for q in fake.api_requests() if kind(q) == "add"]
    assert adds[0].status == 403 and adds[-1].status == 200, [q.status for q in adds]
    assert sorted(adds[-1].form["ids[]"]) == sorted(
        row[1] for row in state["albums"][album_a]["files"] if row[0] in ("a01.png", "a02.png"))
    assert [q.value("name") for q in uploads(fake)] == ["a00.png"]
    assert token_requests(fake) == [], "an ownership refusal is not a token problem"
    assert_mirror(home, fake, paths.values())
    fake.reset_requests()
    r = home.run("sync")
    assert r.code == 0 and fake.api_requests() == [], r


# --------------------------------------------------------------------------- ownership

def test_an_album_whose_answer_names_no_owner_url_is_ours_by_account_id(home, fake):
    """Imgur has answered account_url null with account_id set: compared by number."""
    album_id = fake.create_album("alice", "Mine")
    fake.create_image("alice", png("m1"), name="m1.png", album=album_id)
    folder = home.folder("Mine", {"local.png": png("local")})
    home.write_credentials()
    home.write_albums(f"{folder} -> https://imgur.com/a/{album_id}\n")
    answer_null_owner(fake)
    r = home.run("sync")
    assert r.code == 0, r
    assert "download-only" not in r.stdout + r.stderr
    assert [q.value("name") for q in uploads(fake)] == ["local.png"]


def test_an_anonymous_album_is_never_ours(home, fake):
    album_id = fake.create_album(None, "Nobody's")
    fake.create_image(None, png("n1"), name="n1.png", album=album_id)
    folder = home.folder("Nobody", {"local.png": png("local")})
    home.write_credentials()
    home.write_albums(f"{folder} -> https://imgur.com/a/{album_id}\n")
    r = home.run("sync")
    assert "download-only" in r.stdout + r.stderr, r
    assert uploads(fake) == [], "pushed into an album that is not the account's"


def answer_null_owner(fake):
    """Album models with account_url null (account_id kept), as seen in a 2024 answer."""
    original = fake._album_model

    def model(album, viewer, *args, **kwargs):
        data = original(album, viewer, *args, **kwargs)
        data["account_url"] = None
        return data
    fake._album_model = model


# --------------------------------------------------------------------------- downloads

def region_placeholder() -> bytes:
    """A PNG shaped like Imgur's region placeholder: 336x478, exactly 34,641 bytes."""
    import struct
    import zlib

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    pixels = zlib.compress(b"\0" * (478 * (1 + 336)))       # grey rows, filter byte 0
    head = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 336, 478, 8, 0, 0, 0, 0))
    tail = chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    padding = 34641 - len(head) - len(tail) - 12
    data = head + chunk(b"pADd", b"\0" * padding) + tail
    assert len(data) == 34641
    return data


@pytest.mark.parametrize("served", ["region", "html"])
def test_a_download_that_is_not_the_photo_described_is_not_kept(home, fake, served):
    album_id = fake.create_album("alice", "Trip")
    good = fake.create_image("alice", jpeg(1), name="good.jpg", album=album_id)
    bad = fake.create_image("alice", jpeg(2), name="bad.jpg", album=album_id)
    record = fake.images[bad]
    if served == "region":
        record.data, record.mime, record.width, record.height = (
            region_placeholder(), "image/png", 336, 478)
    else:
        record.data = b"<!DOCTYPE html><html><body>Imgur</body></html>"
    home.write_credentials()
    home.write_albums(f"{album_id}\n")
    r = home.run("sync")
    assert r.code == 1, r
    folder = home.path / "Trip"
    assert sorted(p.name for p in folder.iterdir()) == ["good.jpg"], list(folder.iterdir())
    assert ("region" if served == "region" else "web page") in r.stdout + r.stderr, r
    state = load_state(home)
    assert state["albums"][album_id]["incomplete"] is True
    assert good in fake.images
