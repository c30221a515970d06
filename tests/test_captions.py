"""Captions (README, "Captions"): with `imgurbox.py captions on`, a photo's own caption
(XMP dc:description, else IPTC Caption-Abstract, else EXIF ImageDescription; camera
boilerplate left out) becomes its Imgur description: with its upload at no extra request,
and a changed caption alone as one image update, never a re-upload.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from conftest import import_imgurbox
from imagefiles import jpeg, png
from mirror_check import image_deletes, image_updates, load_state, uploads, writes
from test_sync import Synced

ib = import_imgurbox()


def captions(home, choice):
    r = home.run("captions", choice)
    assert r.code == 0, r
    return r


def description_sent(request):
    values = request.form.get("description")
    return values[0] if values else None


def write_old(path, data: bytes) -> None:
    """Write a file dated an hour back: the next run trusts its stat data (a file changed
    within 2 s of a scan is read again whatever the state says)."""
    path.write_bytes(data)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - 3600 * 10**9))


def recorded(home, album_id, name, field):
    state = load_state(home)
    fields = state["file_fields"]
    row = next(row for row in state["albums"][album_id]["files"] if row[0] == name)
    return row[fields.index(field)]


# --------------------------------------------------------------------------- reading a caption

@pytest.mark.parametrize("data,caption", [
    (jpeg(1, description="Sunset over the bay", iptc="IPTC words",
          exif={"ImageDescription": "EXIF words"}), "Sunset over the bay"),
    (jpeg(1, iptc="IPTC words", exif={"ImageDescription": "EXIF words"}), "IPTC words"),
    (jpeg(1, exif={"ImageDescription": "EXIF words", "Rating": 5}), "EXIF words"),
    (jpeg(1, exif={"ImageDescription": "OLYMPUS DIGITAL CAMERA"}), ""),
    (jpeg(1, exif={"ImageDescription": "  sony   dsc "}), ""),
    (jpeg(1, iptc="   ", exif={"ImageDescription": "Fallback"}), "Fallback"),
    (jpeg(1, description="DCIM", iptc="Café au lait"), "Café au lait"),
    (jpeg(1), ""),
    (png(1, description="A PNG's caption"), "A PNG's caption"),
    (png(1, exif={"ImageDescription": "From eXIf"}), "From eXIf"),
], ids=["xmp-first", "iptc-second", "exif-last", "olympus", "sony-spaced", "blank-iptc",
        "dcim-xmp", "none", "png-xmp", "png-exif"])
def test_read_caption(tmp_path, data, caption):
    name = "p.png" if data.startswith(b"\x89PNG") else "p.jpg"
    path = tmp_path / name
    path.write_bytes(data)
    assert ib.read_caption(str(path), ib.file_extension(name)) == caption


def test_a_caption_is_no_part_of_the_hash(tmp_path):
    hashes = set()
    for data in (jpeg(1), jpeg(1, description="x"), jpeg(1, iptc="y"),
                 jpeg(1, exif={"ImageDescription": "z"})):
        (tmp_path / "p.jpg").write_bytes(data)
        hashes.add(ib.content_hash(str(tmp_path / "p.jpg"), "jpg"))
    assert len(hashes) == 1


# --------------------------------------------------------------------------- the setting

def test_captions_on_and_off_are_kept_in_settings_json(home, fake):
    r = captions(home, "on")
    path = Path(home.path) / "settings.json"
    assert json.loads(path.read_text()) == {"captions": True}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "on" in r.stdout
    captions(home, "off")
    assert json.loads(path.read_text()) == {"captions": False}
    assert fake.requests == []
    assert not (Path(home.path) / "log.txt").exists()


def test_a_damaged_settings_json_is_exit_2(home, fake):
    (Path(home.path) / "settings.json").write_text("{captions")
    home.folder("A", {"a.jpg": jpeg(1)})
    home.write_albums(f"{home.photos / 'A'}\n")
    r = home.run("sync")
    assert r.code == 2 and "settings.json" in r.stderr, r
    assert fake.requests == []


# --------------------------------------------------------------------------- uploads

def test_a_caption_travels_with_its_upload(home, fake):
    home.write_credentials()
    captions(home, "on")
    folder = home.folder("Trip", {"cap.jpg": jpeg(1, iptc="Grandma's 90th"),
                                  "boiler.jpg": jpeg(2, exif={"ImageDescription": "SONY DSC"}),
                                  "none.png": png(3)})
    home.write_albums(f"{folder}\n")
    r = home.run("sync")
    assert r.code == 0, r
    sent = {u.form["name"][0]: description_sent(u) for u in uploads(fake)}
    assert sent == {"cap.jpg": "Grandma's 90th", "boiler.jpg": None, "none.png": None}
    assert image_updates(fake) == []
    by_name = {image.name: image for image in fake.images.values()}
    assert by_name["cap.jpg"].description == "Grandma's 90th"


def test_captions_off_send_no_description(home, fake):
    s = Synced(home, fake, {"Trip": {"cap.jpg": jpeg(1, iptc="Private words")}})
    assert all(image.description is None for image in fake.images.values())
    s.file("Trip", "cap.jpg").write_bytes(jpeg(1, iptc="Other private words"))
    r = s.run()
    assert r.code == 0 and fake.api_requests() == [], r


# --------------------------------------------------------------------------- changes

@pytest.fixture
def captioned(home, fake):
    """A folder synced with captions on, requests reset."""
    captions(home, "on")
    s = Synced(home, fake, {"Trip": {"p.jpg": jpeg(1, description="First words"),
                                     "q.jpg": jpeg(2)}})
    s.old = s.image_id("Trip", "p.jpg")
    return s


def test_a_changed_caption_is_one_update_not_an_upload(captioned, fake):
    s = captioned
    s.file("Trip", "p.jpg").write_bytes(jpeg(1, description="Better words", exif={"Rating": 4}))
    r = s.run("--dry-run")
    assert r.code == 0, r
    assert "& caption Trip/p.jpg" in r.stdout and "plan: 1 request, 1 credit\n" in r.stdout, r.stdout
    assert writes(fake) == []
    r = s.run()
    assert r.code == 0, r
    assert uploads(fake) == [] and image_deletes(fake) == []
    (update,) = image_updates(fake)
    assert update.path == f"/3/image/{s.old}" and description_sent(update) == "Better words"
    assert fake.images[s.old].description == "Better words"
    assert "& caption Trip/p.jpg" in r.stdout and "1 caption updated" in r.stdout, r.stdout
    assert s.image_id("Trip", "p.jpg") == s.old
    fake.reset_requests()
    r = s.run()
    assert r.code == 0 and fake.api_requests() == [], r


def test_a_caption_removed_clears_the_description(captioned, fake):
    s = captioned
    s.file("Trip", "p.jpg").write_bytes(jpeg(1))
    r = s.run()
    assert r.code == 0, r
    (update,) = image_updates(fake)
    assert description_sent(update) == "" and fake.images[s.old].description == ""


def test_a_caption_changed_with_a_rename_is_one_update(captioned, fake):
    s = captioned
    s.file("Trip", "p.jpg").unlink()
    write_old(s.file("Trip", "renamed.jpg"), jpeg(1, description="New words"))
    r = s.run()
    assert r.code == 0, r
    assert uploads(fake) == [] and image_deletes(fake) == []
    (update,) = image_updates(fake)
    assert description_sent(update) == "New words"
    assert recorded(s.home, s.albums["Trip"], "renamed.jpg", "caption") == "New words"
    fake.reset_requests()
    assert s.run().code == 0 and fake.api_requests() == []


def test_captions_off_then_changed_sends_nothing(captioned, fake):
    s = captioned
    captions(s.home, "off")
    write_old(s.file("Trip", "p.jpg"), jpeg(1, description="Changed while off"))
    r = s.run()
    assert r.code == 0 and fake.api_requests() == [], r
    assert fake.images[s.old].description == "First words"
    # Turned on again, it waits for a --verify run, which brings it in line.
    captions(s.home, "on")
    assert s.run().code == 0 and fake.api_requests() == []
    r = s.run("--verify")
    assert r.code == 0, r
    (update,) = image_updates(fake)
    assert description_sent(update) == "Changed while off" and uploads(fake) == []


def test_turning_captions_on_sends_nothing_until_a_verify_run(home, fake):
    s = Synced(home, fake, {"Trip": {"cap.jpg": jpeg(1, iptc="Caption one"),
                                     "plain.jpg": jpeg(2),
                                     "other.jpg": jpeg(3, description="Caption two")}})
    other = s.image_id("Trip", "other.jpg")
    fake.images[other].description = "Caption two"          # already in line
    captions(home, "on")
    r = s.run()
    assert r.code == 0 and fake.api_requests() == [], r
    r = s.run("--rehash")
    assert r.code == 0 and fake.api_requests() == [], r
    r = s.run("--verify")
    assert r.code == 0, r
    assert uploads(fake) == []
    (update,) = image_updates(fake)
    assert update.path == f"/3/image/{s.image_id('Trip', 'cap.jpg')}"
    assert description_sent(update) == "Caption one"
    fake.reset_requests()
    for args in ((), ("--verify",)):
        r = s.run(*args)
        assert r.code == 0 and writes(fake) == [], r


def test_a_photo_without_a_caption_never_clears_a_description(home, fake):
    s = Synced(home, fake, {"Trip": {"plain.jpg": jpeg(2)}})
    image_id = s.image_id("Trip", "plain.jpg")
    fake.images[image_id].description = "Written on imgur.com"
    captions(home, "on")
    r = s.run("--verify")
    assert r.code == 0 and writes(fake) == [], r
    assert fake.images[image_id].description == "Written on imgur.com"


def test_downloaded_images_keep_their_description_until_the_local_caption_changes(home, fake):
    captions(home, "on")
    album = fake.create_album("alice", title="Shared")
    image_id = fake.create_image("alice", jpeg(1), name="d.jpg", album=album,
                                 description="Their words")
    home.write_credentials()
    home.write_albums(f"{album}\n")
    assert home.run("sync").code == 0
    fake.reset_requests()
    r = home.run("sync", "--verify")
    assert r.code == 0 and writes(fake) == [], r
    assert fake.images[image_id].description == "Their words"
    downloaded = Path(home.path) / "Shared" / "d.jpg"
    downloaded.write_bytes(jpeg(1, iptc="My words"))
    r = home.run("sync")
    assert r.code == 0, r
    (update,) = image_updates(fake)
    assert description_sent(update) == "My words" and uploads(fake) == []


def test_adopted_images_keep_their_description(home, fake):
    captions(home, "on")
    album = fake.create_album("alice", title="Linked")
    image_id = fake.create_image("alice", jpeg(1), name="mine.jpg", album=album,
                                 description="Set on Imgur")
    folder = home.folder("Linked", {"mine.jpg": jpeg(1, iptc="Local words")})
    home.write_credentials()
    home.write_albums(f"{folder} -> https://imgur.com/a/{album}\n")
    assert home.run("sync").code == 0
    for args in ((), ("--verify",)):
        r = home.run("sync", *args)
        assert r.code == 0 and writes(fake) == [], r
    assert fake.images[image_id].description == "Set on Imgur"


def test_the_credit_reserve_holds_back_caption_updates(home, fake):
    s = Synced(home, fake, {"Trip": {f"p{i}.jpg": jpeg(i, iptc=f"Caption {i}")
                                     for i in range(10)}})
    captions(home, "on")
    # After the --verify listing (1 credit), 11 of the application's credits are left:
    # enough for an update on the fake, but under the 10 % reserve of the limit.
    fake.client_limit = fake.credits_used + 12
    r = s.run("--verify")
    assert r.code == 4, r
    assert image_updates(fake) == [] and "reserve" in r.stderr, r.stderr
    fake.advance(25 * 3600)                    # the application's day is over
    fake.reset_requests()
    r = s.run("--verify")
    assert r.code == 0, r
    assert len(image_updates(fake)) == 10 and uploads(fake) == []


def test_a_caption_update_held_back_is_planned_again_next_run(captioned, fake):
    s = captioned
    write_old(s.file("Trip", "p.jpg"), jpeg(1, description="Held words"))
    fake.add_fault("status", method="POST", path=r"^/3/image/[A-Za-z0-9]+$", code=400,
                   count=1)
    r = s.run()
    assert r.code == 1, r
    fake.reset_requests()
    r = s.run()
    assert r.code == 0, r
    (update,) = image_updates(fake)
    assert description_sent(update) == "Held words" and uploads(fake) == []


def test_status_counts_a_caption_update(captioned, fake):
    s = captioned
    s.file("Trip", "p.jpg").write_bytes(jpeg(1, description="Status words"))
    r = s.home.run("status")
    assert r.code == 0 and "1 caption update" in r.stdout, r.stdout


def test_a_failed_caption_update_after_a_rename_waits_for_a_verify_run(captioned, fake):
    s = captioned
    s.file("Trip", "p.jpg").unlink()
    write_old(s.file("Trip", "renamed.jpg"), jpeg(1, description="Renamed words"))
    fake.add_fault("status", method="POST", path=r"^/3/image/[A-Za-z0-9]+$", code=400,
                   count=1)
    assert s.run().code == 1
    fake.reset_requests()
    r = s.run("--verify")
    assert r.code == 0, r
    (update,) = image_updates(fake)
    assert description_sent(update) == "Renamed words" and uploads(fake) == []


def test_damaged_metadata_gives_no_caption_and_no_error(tmp_path):
    good = jpeg(1, iptc="Fine words")
    cases = []
    for cut in range(2, 120, 3):                 # every truncation of a metadata block
        for marker, payload in ((0xED, b"Photoshop 3.0\x008BIM\x04\x04\x00\x00\x00\x00\x01\x00"
                                 + b"\x1c\x02\x78\x7f"),
                                (0xE1, b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff"),
                                (0xE1, b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta><rdf:RDF>&bad;"
                                 b"</rdf:RDF></x:xmpmeta>")):
            block = payload[:cut]
            segment = bytes([0xFF, marker]) + (len(block) + 2).to_bytes(2, "big") + block
            cases.append(good[:2] + segment + good[2:])
    for data in cases:
        (tmp_path / "p.jpg").write_bytes(data)
        assert ib.read_caption(str(tmp_path / "p.jpg"), "jpg") in ("", "Fine words")


def test_scrambled_metadata_gives_no_error(tmp_path):
    import random
    rng = random.Random(15)
    data = jpeg(1, description="X words", iptc="I words", exif={"ImageDescription": "E words"})
    header_end = data.index(b"\xff\xdb")          # the metadata blocks come before DQT
    for _ in range(300):
        scrambled = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            scrambled[rng.randrange(20, header_end)] = rng.randrange(256)
        (tmp_path / "p.jpg").write_bytes(bytes(scrambled))
        assert isinstance(ib.read_caption(str(tmp_path / "p.jpg"), "jpg"), str)
