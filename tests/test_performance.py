"""Issue 6, "Fast at any size": what a run costs, counted, never timed.

Timings are for tests/bench/run.py (these machines are noisy); here the suite asserts
what can be counted exactly: API requests per kind and the fake's credits for a mixed
change set, zero requests / no state rewrite / no hashing / no `requests` import for a
no-op run, bytes on the wire per uploaded byte, keep-alive connections per worker, and
a no-op over a state of thousands of files.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter

from imagefiles import gif, jpeg, png, seed_bytes
from mirror_check import all_state_files, credit_kind, credit_kinds, uploads

ALBUM_URL = re.compile(r"-> https://imgur\.com/a/([A-Za-z0-9]+)")
DAY_AGO_NS = time.time_ns() - 86_400 * 10**9

UPLOAD_CREDITS, CALL_CREDITS = 10, 1


# --------------------------------------------------------------------------- helpers

def backdate(*paths) -> None:
    """Give files an mtime a day old: far from any scan, so that the "modified within 2 s of
    the last scan" rule (README "Changes and what they do on Imgur") does not make a quick
    second run re-hash them."""
    for path in paths:
        os.utime(path, ns=(DAY_AGO_NS, DAY_AGO_NS))


def make_folder(home, name, files: dict):
    folder = home.folder(name, files)
    backdate(*(folder / n for n in files))
    return folder


def album_ids(home) -> dict:
    """folder path (as written in albums.txt) -> album ID."""
    out = {}
    for line in home.albums_bytes().decode("utf-8").splitlines():
        m = ALBUM_URL.search(line)
        if m:
            out[line[:m.start()].strip()] = m.group(1)
    return out


def stat_key(path):
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ino


def big_jpeg(seed, size: int) -> bytes:
    """A valid JPEG padded to about ``size`` bytes with COM segments of seed bytes."""
    data = jpeg(seed)
    pad = bytearray()
    remaining = size - len(data)
    n = 0
    while remaining > 4:
        chunk = min(remaining - 4, 65533)
        pad += b"\xff\xfe" + (chunk + 2).to_bytes(2, "big") + seed_bytes((seed, n), chunk, "pad")
        remaining -= chunk + 4
        n += 1
    return data[:2] + bytes(pad) + data[2:]


# --------------------------------------------------------------------------- credits per change

def test_mixed_change_set_costs_the_api_minimum(home, fake):
    """Each change at its minimum: upload 1 call / 10 credits, delete 1, album creation 1,
    a move of several images between one pair of albums 2, a rename 0, a metadata-only
    edit 0 (JPEG XMP/IPTC/COM, PNG tEXt/tIME), an EXIF orientation edit = upload + delete."""
    a_files = {f"a{i}.jpg": jpeg(i) for i in range(1, 7)}
    a_files.update({"meta.jpg": jpeg(100), "meta.png": png(101),
                    "orient.jpg": jpeg(102, exif_orientation=1), "ren.jpg": jpeg(103)})
    b_files = {f"b{i}.jpg": jpeg(200 + i) for i in range(1, 5)}
    a = make_folder(home, "A", a_files)
    b = make_folder(home, "B", b_files)
    home.write_credentials()
    home.write_albums(f"{a}\n{b}\n")
    assert home.run("sync").code == 0
    ids = album_ids(home)
    album_a, album_b = ids[str(a)], ids[str(b)]
    before = all_state_files(home.state())
    fake.reset_requests()
    credits_before = fake.credits_used

    # The change set.
    (a / "new1.jpg").write_bytes(jpeg(300))                                  # new
    (b / "new2.png").write_bytes(png(301))                                   # new
    (a / "a1.jpg").unlink()                                                  # delete
    for name in ("a2.jpg", "a3.jpg", "a4.jpg"):                              # move x3
        os.rename(a / name, b / name)
    os.rename(a / "ren.jpg", a / "renamed.jpg")                              # rename
    (a / "meta.jpg").write_bytes(jpeg(100, xmp="5 stars", iptc="a caption",  # metadata
                                      comment="edited by a photo manager"))
    (a / "meta.png").write_bytes(png(101, text={"Rating": "5"}, time=True))  # metadata
    (a / "orient.jpg").write_bytes(jpeg(102, exif_orientation=6))            # orientation
    c = home.folder("C", {"c1.jpg": jpeg(400)})                              # new album
    home.write_albums(home.albums_bytes().decode("utf-8") + f"{c}\n")

    r = home.run("sync")
    assert r.code == 0, r
    counted = credit_kinds(fake)
    assert counted == Counter({
        "upload": 4,            # new1, new2, c1, and orient.jpg's new version
        "delete": 2,            # a1, and orient.jpg's old version
        "album creation": 1,    # C
        "album read-back": 1,   # ... shown hidden before anything goes into it
        "album add": 1,         # a2, a3, a4 into B: one call ...
        "album remove": 1,      # ... and one out of A
    }), counted
    expected_credits = counted["upload"] * UPLOAD_CREDITS + (
        sum(counted.values()) - counted["upload"]) * CALL_CREDITS
    assert expected_credits == 46
    assert fake.credits_used - credits_before == expected_credits

    (add,) = [q for q in fake.api_requests() if credit_kind(q) == "album add"]
    assert add.path == f"/3/album/{album_b}/add"
    after = all_state_files(home.state())
    # The moved images and the renamed one keep their IDs; metadata-only edits keep theirs.
    for name in ("a2.jpg", "a3.jpg", "a4.jpg"):
        assert after[(album_b, name)] == before[(album_a, name)]
        assert before[(album_a, name)] in fake.album_image_ids(album_b)
        assert before[(album_a, name)] not in fake.album_image_ids(album_a)
    assert after[(album_a, "renamed.jpg")] == before[(album_a, "ren.jpg")]
    assert (album_a, "ren.jpg") not in after
    for name in ("meta.jpg", "meta.png"):
        assert after[(album_a, name)] == before[(album_a, name)]
        assert before[(album_a, name)] in fake.images
    assert after[(album_a, "orient.jpg")] != before[(album_a, "orient.jpg")]
    assert before[(album_a, "orient.jpg")] not in fake.images
    assert before[(album_a, "a1.jpg")] not in fake.images
    # The state follows the metadata edits' new size.
    rows = {row[0]: row for row in home.state()["albums"][album_a]["files"]}
    assert rows["meta.jpg"][3] == (a / "meta.jpg").stat().st_size

    fake.reset_requests()
    r = home.run("sync")
    assert r.code == 0, r
    assert fake.api_requests() == []


# --------------------------------------------------------------------------- no-op runs

HEAVY_MODULES = ("requests", "urllib3", "imgurpython", "requests_toolbelt")


def test_noop_run_sends_nothing_rewrites_nothing_and_hashes_nothing(home, fake):
    files = {"a.jpg": jpeg(1), "b.png": png(2), "c.gif": gif(3)}
    folder = make_folder(home, "Trip", files)
    home.write_credentials()
    home.write_albums(f"{folder}\n")
    assert home.run("sync").code == 0
    state_path = home.path / "state.json"
    journal_path = home.path / "state.journal"
    saved = (state_path.read_bytes(), stat_key(state_path))
    fake.reset_requests()

    for _ in range(2):                       # the 2nd and 3rd runs
        r = home.run("sync")
        assert r.code == 0, r
        assert fake.api_requests() == []
        assert (state_path.read_bytes(), stat_key(state_path)) == saved
        assert not journal_path.exists()

    # Unchanged stat data means unread content: change a file's bytes in place (same
    # inode, same size) and put its mtime back. A run that hashed it would replace it.
    target = folder / "a.jpg"
    key = stat_key(target)
    with open(target, "r+b") as f:
        f.write(jpeg(99)[:key[0]].ljust(key[0], b"\0"))
    os.utime(target, ns=(key[1], key[1]))
    assert stat_key(target) == key and target.read_bytes() != files["a.jpg"]
    r = home.run("sync")
    assert r.code == 0, r
    assert fake.api_requests() == []
    assert (state_path.read_bytes(), stat_key(state_path)) == saved
    # ... and --rehash, which reads everything, does see it (so the check above can fail).
    r = home.run("sync", "--rehash")
    assert credit_kinds(fake)["upload"] == 1, (r, credit_kinds(fake))


def test_a_file_read_for_its_mtime_near_the_last_scan_is_read_once_not_every_run(home, fake):
    """A file modified within 2 s before a scan is read again by the next run. When that
    run changes nothing, it still saves its scan time once: otherwise every later no-op
    run would read the file again, for good."""
    folder = make_folder(home, "Trip", {"a.jpg": jpeg(1), "b.jpg": jpeg(2)})
    home.write_credentials()
    home.write_albums(f"{folder}\n")
    assert home.run("sync").code == 0
    state_path = home.path / "state.json"
    state = json.loads(state_path.read_text())
    state["scanned_at_ns"] = DAY_AGO_NS + 1_000_000_000   # a.jpg: 1 s before that scan
    state_path.write_text(json.dumps(state))
    fake.reset_requests()

    r = home.run("sync", "-v")
    assert r.code == 0, r
    assert sorted(re.findall(r"read \S+/(\S+) \(modified near the last scan\)", r.stdout)) \
        == ["a.jpg", "b.jpg"], r.stdout
    saved = (state_path.read_bytes(), stat_key(state_path))
    assert json.loads(saved[0])["scanned_at_ns"] > DAY_AGO_NS + 1_000_000_000
    for _ in range(2):
        r = home.run("sync", "-v")
        assert r.code == 0, r
        assert "read " not in r.stdout, r.stdout
        assert (state_path.read_bytes(), stat_key(state_path)) == saved
    assert fake.api_requests() == []


def test_noop_run_does_not_import_the_http_stack(home, fake):
    folder = make_folder(home, "Trip", {"a.jpg": jpeg(1)})
    home.write_credentials()
    home.write_albums(f"{folder}\n")
    assert home.run("sync").code == 0
    fake.reset_requests()
    completed = home.run(python_args=["-X", "importtime"], timeout=60)
    assert completed.code == 0, completed
    imported = {line.rsplit("|", 1)[1].strip() for line in
                completed.stderr.splitlines()
                if line.startswith("import time:") and line.count("|") == 2}
    assert "json" in imported, "no -X importtime output"
    heavy = sorted(m for m in imported if m.split(".")[0] in HEAVY_MODULES)
    assert heavy == [], heavy
    assert fake.api_requests() == []

    # The same run with work to do does import them (the check above is not vacuous).
    (folder / "b.jpg").write_bytes(jpeg(2))
    completed = home.run(python_args=["-X", "importtime"], timeout=60)
    assert completed.code == 0, completed
    assert re.search(r"\|\s+requests$", completed.stderr, re.MULTILINE)


def test_noop_over_a_library_of_5000_files_stays_zero_request(home, fake):
    """5,000 files in 5 folders, adopted from existing albums by name (no transfer);
    then a no-op run: no request, state.json untouched."""
    lines = []
    for f in range(5):
        album = fake.create_album("alice", title=f"F{f}")
        files = {f"p{i:04d}.jpg": jpeg((f, i)) for i in range(1000)}
        for name, data in files.items():
            fake.create_image("alice", data, name=name, album=album)
        folder = make_folder(home, f"F{f}", files)
        lines.append(f"{folder} -> https://imgur.com/a/{album}\n")
    home.write_credentials()
    home.write_albums("".join(lines))
    r = home.run("sync", timeout=300)
    assert r.code == 0, r
    assert credit_kinds(fake)["upload"] == 0
    assert len(all_state_files(home.state())) == 5000
    state_path = home.path / "state.json"
    saved = (state_path.read_bytes(), stat_key(state_path))
    fake.reset_requests()

    r = home.run("sync", timeout=300)
    assert r.code == 0, r
    assert fake.api_requests() == []
    assert (state_path.read_bytes(), stat_key(state_path)) == saved


# --------------------------------------------------------------------------- uploads

def test_upload_bodies_are_binary_multipart(home, fake):
    """At most 1.02x the file plus 1 KiB on the wire (base64 in a form would be 1.33x+)."""
    files = {"big.jpg": big_jpeg(1, 300_000), "mid.jpg": big_jpeg(2, 40_000),
             "small.png": png(3), "pic.gif": gif(4), "tiny.jpg": jpeg(5)}
    folder = make_folder(home, "Trip", files)
    home.write_credentials()
    home.write_albums(f"{folder}\n")
    r = home.run("sync")
    assert r.code == 0, r
    sent = {q.form["name"][0]: q for q in uploads(fake)}
    assert sorted(sent) == sorted(files)
    for name, data in files.items():
        q = sent[name]
        assert q.headers.get("Content-Type", "").startswith("multipart/form-data")
        assert q.files["image"][1] == data, f"{name}: not the file's bytes as a binary part"
        assert len(data) <= len(q.body_bytes) <= 1.02 * len(data) + 1024, (
            name, len(data), len(q.body_bytes))
    total_file = sum(map(len, files.values()))
    total_wire = sum(len(q.body_bytes) for q in sent.values())
    assert total_wire < 1.02 * total_file + 1024 * len(files)


def test_parallel_uploads_keep_one_connection_per_worker(home, fake):
    """--jobs 4: uploads overlap, and each worker's session is reused (keep-alive), so
    the fake sees about one connection per worker, not one per request."""
    fake.latency = 0.15
    files = {f"p{i:02d}.jpg": jpeg(i) for i in range(16)}
    folder = make_folder(home, "Trip", files)
    home.write_credentials()
    home.write_albums(f"{folder}\n")
    ended = {}

    def hook(phase, request):
        if phase == "after":
            ended[id(request)] = fake.now()
    fake.on_request = hook
    connections_before = fake.connections
    r = home.run("sync", "--jobs", "4")
    assert r.code == 0, r
    ups = uploads(fake)
    assert len(ups) == 16
    events = sorted([(q.time, 1) for q in ups] + [(ended[id(q)], -1) for q in ups])
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    assert most >= 2, f"uploads never overlapped ({most})"
    connections = fake.connections - connections_before
    # 4 upload workers + the main thread's session (album creation).
    assert connections <= 4 + 1, f"{connections} connections for {len(fake.api_requests())} requests"
    assert len(fake.api_requests()) > connections
