"""End-to-end reliability tests (issue 5; README "Reliability": retries, rate limits,
pending operations; "Safety rules"; "Exit codes"): imgurbox.py runs as a subprocess against
the fake Imgur server with injected faults, and must keep every file exactly once online.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import time

import pytest
from filelock import FileLock

from imagefiles import jpeg, png
from mirror_check import (assert_mirror, done_uploads, image_deletes, kind, route,
                          token_requests, uploads)

RESUMES = re.compile(r"resumes after (\d{4}-\d\d-\d\dT\d\d:\d\d[^\s.]*)")


# --------------------------------------------------------------------------- helpers

def files(prefix: str, count: int, start: int = 0) -> dict:
    return {f"{prefix}{i:02d}.png": png(f"{prefix}{i}") for i in range(start, start + count)}


def first_sync(home, fake, **folders) -> dict:
    """Sync the given folders (name -> files) once: exit 0; requests reset.
    Returns name -> folder path."""
    paths = {name: home.folder(name, content) for name, content in folders.items()}
    home.write_credentials()
    home.write_albums("".join(f"{p}\n" for p in paths.values()))
    r = home.run("sync")
    assert r.code == 0, r
    assert_mirror(home, fake, paths.values())
    fake.reset_requests()
    return paths


def new_folder(home, name, content) -> object:
    """A folder listed in albums.txt, never synced."""
    path = home.folder(name, content)
    home.write_credentials()
    home.write_albums(f"{path}\n")
    return path


def finishes_clean(home, fake, folders):
    """A fault-free run completes the mirror; one more run sends nothing."""
    fake.clear_faults()
    r = home.run("sync")
    assert r.code == 0, r
    assert_mirror(home, fake, folders)
    fake.reset_requests()
    r = home.run("sync")
    assert r.code == 0 and fake.api_requests() == [], (r, fake.api_requests())


def no_traceback(r):
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError("timed out waiting")


# --------------------------------------------------------------------------- transient faults

@pytest.mark.parametrize("failures, code", [(1, 500), (3, 503)])
def test_5xx_burst_on_delete_is_retried_until_it_succeeds(home, fake, failures, code):
    paths = first_sync(home, fake, A=files("a", 3))
    (paths["A"] / "a00.png").unlink()
    fake.add_fault("status", method="DELETE", path=r"^/3/image/", code=code, count=failures)
    r = home.run("sync")
    assert r.code == 0, r
    assert len(image_deletes(fake)) == failures + 1  # up to 4 tries (README "Reliability")
    finishes_clean(home, fake, paths.values())


def test_5xx_on_every_try_fails_the_item_after_four_tries(home, fake):
    paths = first_sync(home, fake, A=files("a", 3))
    (paths["A"] / "a00.png").unlink()
    fake.add_fault("status", method="DELETE", path=r"^/3/image/", code=502, count=4)
    r = home.run("sync")
    assert r.code == 1, r
    assert len(image_deletes(fake)) == 4
    assert "a00.png" in r.stdout + r.stderr
    no_traceback(r)
    finishes_clean(home, fake, paths.values())


def test_5xx_burst_on_upload_looks_before_each_resend(home, fake):
    """An upload answered 5xx may have been done: each resend is preceded by the
    pending check (one GET of the album's images), and nothing is uploaded twice."""
    folder = new_folder(home, "A", files("a", 1))
    fake.add_fault("status", method="POST", path=r"^/3/image$", code=500, count=2)
    r = home.run("sync")
    assert r.code == 0, r
    kinds = [kind(q) for q in fake.api_requests()]
    assert kinds == ["create", "GET_/3/album/{id}", "upload", "GET_/3/album/{id}/images", "upload",
                     "GET_/3/album/{id}/images", "upload"], kinds
    assert_mirror(home, fake, [folder])


def test_5xx_on_album_creation_looks_before_creating_again(home, fake):
    folder = new_folder(home, "A", files("a", 2))
    fake.add_fault("status", method="POST", path=r"^/3/album$", code=503, count=1)
    r = home.run("sync")
    assert r.code == 0, r
    assert [kind(q) for q in fake.api_requests()][:3] == [
        "create", "GET_/3/account/me/albums/{page}", "create"]
    assert_mirror(home, fake, [folder])


def test_stall_past_the_read_timeout_is_retried(home, fake):
    paths = first_sync(home, fake, A=files("a", 3))
    (paths["A"] / "a00.png").unlink()
    fake.add_fault("stall", method="DELETE", path=r"^/3/image/", seconds=3.0)
    r = home.run("sync", env={"IMGURBOX_READ_TIMEOUT": "1"})
    assert r.code == 0, r
    # Two DELETEs: the stalled one was given up at the read timeout and sent again
    # (without a timeout the run would have waited for the stalled answer instead).
    assert len(image_deletes(fake)) == 2
    fake.wait_idle()                                    # the stalled request ends
    finishes_clean(home, fake, paths.values())


@pytest.mark.parametrize("fault", [
    pytest.param(dict(kind="html", code=503), id="503-html"),
    pytest.param(dict(kind="status", code=502, html=True), id="502-html"),
    pytest.param(dict(kind="status", code=200, html=True), id="200-html"),
])
def test_html_error_pages_are_retried(home, fake, fault):
    paths = first_sync(home, fake, A=files("a", 3))
    (paths["A"] / "a00.png").unlink()
    fake.add_fault(fault.pop("kind"), method="DELETE", path=r"^/3/image/", count=2, **fault)
    r = home.run("sync")
    assert r.code == 0, r
    no_traceback(r)
    assert len(image_deletes(fake)) == 3
    finishes_clean(home, fake, paths.values())


@pytest.mark.parametrize("html", [False, True], ids=["json", "html"])
def test_over_capacity_403_is_retried_without_token_refresh(home, fake, html):
    folder = new_folder(home, "A", files("a", 2))
    fake.add_fault("over_capacity", method="POST", path=r"^/3/image$", count=2, html=html)
    r = home.run("sync", "--jobs", "1")
    assert r.code == 0, r
    assert token_requests(fake) == []
    assert len(uploads(fake)) == 4                      # 2 refused, then 2 done
    assert_mirror(home, fake, [folder])


def test_drop_after_upload_is_adopted_not_uploaded_again(home, fake):
    folder = new_folder(home, "A", files("a", 3))
    fake.add_fault("drop_after", method="POST", path=r"^/3/image$", count=1)
    r = home.run("sync", "--jobs", "1")
    assert r.code == 0, r
    assert len(uploads(fake)) == 3
    assert len(fake.images) == 3
    assert_mirror(home, fake, [folder])


def test_drop_before_upload_is_sent_again(home, fake):
    folder = new_folder(home, "A", files("a", 2))
    fake.add_fault("drop_before", method="POST", path=r"^/3/image$", count=1)
    r = home.run("sync", "--jobs", "1")
    assert r.code == 0, r
    assert len(uploads(fake)) == 3
    assert_mirror(home, fake, [folder])


def test_three_requests_failing_every_try_stop_the_run(home, fake):
    folder = first_sync(home, fake, A=files("a", 1))["A"]
    for name, data in files("b", 8).items():
        (folder / name).write_bytes(data)
    fake.add_fault("status", code=500, count=None)      # Imgur is down
    r = home.run("sync", "--jobs", "1")
    assert r.code == 1, r
    no_traceback(r)
    sent = fake.api_requests()
    # Three uploads, each followed by a pending check (a GET) tried 4 times.
    assert len(sent) <= 3 * (1 + 4), [route(q) for q in sent]
    assert "in a row" in r.stderr, r.stderr
    finishes_clean(home, fake, [folder])


# --------------------------------------------------------------------------- rate limits

@pytest.mark.parametrize("shape", ["envelope", "errors", "too_fast"])
def test_rate_limit_stops_the_run_with_exit_4(home, fake, shape):
    folder = new_folder(home, "A", files("a", 6))
    if shape == "too_fast":
        fake.add_fault("too_fast", method="POST", path=r"^/3/image$", count=1)
    else:
        fake.rate_limit_shape = shape
        fake.add_fault("rate_limit", method="POST", path=r"^/3/image$", count=1, minutes=37)
    r = home.run("sync", "--jobs", "1")
    assert r.code == 4, r
    no_traceback(r)
    assert len(uploads(fake)) == 1, "an upload was sent after the rate limit"
    assert kind(fake.api_requests()[-1]) == "upload", "a request was sent after the limit"
    assert "resumes" in r.stderr, r.stderr
    assert fake.images == {}
    fake.advance(3600)                  # the hour the 429's headers showed spent is over
    finishes_clean(home, fake, [folder])


def test_rate_limit_with_parallel_uploads_starts_nothing_new(home, fake):
    folder = new_folder(home, "A", files("a", 12))
    fake.add_fault("rate_limit", method="POST", path=r"^/3/image$", count=1)

    def slow_uploads(phase, request):                  # the 429 is answered first
        if phase == "before" and kind(request) == "upload" and request.status is None \
                and len(uploads(fake)) > 1:
            time.sleep(0.3)

    fake.on_request = slow_uploads
    r = home.run("sync", "--jobs", "4")
    fake.on_request = None
    assert r.code == 4, r
    assert len(uploads(fake)) <= 4, "an upload started after the 429 was answered"
    fake.advance(3600)                  # past the reset the 429 showed
    finishes_clean(home, fake, [folder])


def test_rate_limit_on_delete_stops_the_run(home, fake):
    paths = first_sync(home, fake, A=files("a", 6))
    for name in ("a00.png", "a01.png", "a02.png"):
        (paths["A"] / name).unlink()
    fake.add_fault("rate_limit", method="DELETE", count=1)
    r = home.run("sync")
    assert r.code == 4, r
    assert len(image_deletes(fake)) == 1
    finishes_clean(home, fake, paths.values())


@pytest.mark.parametrize("style", ["relative", "epoch"])
def test_rate_limit_reset_is_read_in_both_conventions(home, fake, style):
    """X-RateLimit-UserReset as seconds from now (2025) or as epoch seconds."""
    fake.reset_style = style
    fake.user_limit = 1 + 10 + 5                        # album + one upload, then < 10
    folder = new_folder(home, "A", files("a", 3))
    r = home.run("sync", "--jobs", "1")
    assert r.code == 4, r
    assert len(done_uploads(fake)) == 1
    match = RESUMES.search(r.stderr)
    assert match, r.stderr
    reset = dt.datetime.fromisoformat(match.group(1)).timestamp()
    assert fake.now() - 60 < reset <= fake.now() + 3600 + 60, match.group(0)
    fake.advance(3600)
    fake.user_limit = 12500
    fake.reset_requests()
    r = home.run("sync")
    assert r.code == 0, r
    assert len(done_uploads(fake)) == 2
    assert_mirror(home, fake, [folder])


def test_user_remaining_below_10_stops_uploads(home, fake):
    # 1 (album) + 3 uploads of 10 leaves 4 < 10: a fourth upload never starts.
    fake.user_limit = 35
    folder = new_folder(home, "A", files("a", 6))
    r = home.run("sync", "--jobs", "1")
    assert r.code == 4, r
    assert len(uploads(fake)) == 3
    assert not [q for q in fake.api_requests() if q.status == 429]
    assert "resumes after" in r.stderr, r.stderr
    fake.advance(3600)
    fake.user_limit = 12500
    fake.reset_requests()
    r = home.run("sync")
    assert r.code == 0, r
    assert len(done_uploads(fake)) == 3
    assert_mirror(home, fake, [folder])


def test_credit_reserve_keeps_10_percent_of_the_client_credits(home, fake):
    # ClientLimit 200: the reserve is 20. After the album (1) and 18 uploads, 19 are
    # left: the fake would take one more upload, the reserve does not let it start.
    fake.client_limit = 200
    new_folder(home, "A", files("a", 25))
    r = home.run("sync", "--jobs", "1")
    assert r.code == 4, r
    assert len(uploads(fake)) == 18
    assert not [q for q in fake.api_requests() if q.status == 429]
    assert "reserve" in r.stderr, r.stderr
    assert_mirror_partial(fake, 18)


def test_credit_reserve_already_reached_starts_no_upload(home, fake):
    """A run that finds the application's credits under the 10 % reserve starts no
    upload (the previous run's answers said so), and exits 4."""
    fake.client_limit = 200
    new_folder(home, "A", files("a", 25))
    assert home.run("sync", "--jobs", "1").code == 4
    fake.reset_requests()
    r = home.run("sync")
    assert r.code == 4, r
    assert uploads(fake) == [], "an upload started inside the credit reserve"


def test_credit_reserve_stop_says_when_the_client_credits_reset(home, fake):
    fake.client_limit = 200
    new_folder(home, "A", files("a", 25))
    r = home.run("sync", "--jobs", "1")
    assert r.code == 4, r
    match = RESUMES.search(r.stderr)
    assert match, r.stderr
    reset = dt.datetime.fromisoformat(match.group(1)).timestamp()
    # The application's credits come back after a day, not after the user's hour.
    assert reset > fake.now() + 3600, match.group(0)


def assert_mirror_partial(fake, count):
    ids = [i for album in fake.albums.values() for i in album.image_ids]
    assert len(ids) == len(set(ids)) == count == len(fake.images)
    names = [fake.images[i].name for i in ids]
    assert len(names) == len(set(names))


# --------------------------------------------------------------------------- the lock

def test_second_run_while_the_lock_is_held_exits_3(home, fake):
    paths = first_sync(home, fake, A=files("a", 2))
    (paths["A"] / "new.png").write_bytes(png("new"))
    lock = FileLock(str(home.path / "imgurbox.lock"))
    with lock.acquire(timeout=5):
        r = home.run("sync")
    assert r.code == 3, r
    assert fake.api_requests() == []
    assert "another" in r.stderr.lower(), r.stderr
    finishes_clean(home, fake, paths.values())


def test_concurrent_run_exits_3_while_a_slow_run_holds_the_lock(home, fake):
    folder = new_folder(home, "A", files("a", 3))
    fake.latency = 0.3
    first = home.start("sync", "--jobs", "1")
    try:
        wait_for(lambda: len(fake.api_requests()) >= 1)
        second = home.run("sync", timeout=10)
        assert second.code == 3, second
    finally:
        out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    fake.latency = 0
    finishes_clean(home, fake, [folder])


# --------------------------------------------------------------------------- delete safety

def test_missing_folder_is_unavailable_and_nothing_is_deleted(home, fake):
    paths = first_sync(home, fake, A=files("a", 3), B=files("b", 2))
    hidden = paths["A"].with_name("A-unmounted")
    os.replace(paths["A"], hidden)
    (paths["B"] / "b09.png").write_bytes(png("b9"))
    r = home.run("sync")
    assert r.code == 1, r
    assert image_deletes(fake) == []
    assert "unavailable" in r.stderr, r.stderr
    assert len(uploads(fake)) == 1                      # the other folder still syncs
    os.replace(hidden, paths["A"])
    finishes_clean(home, fake, paths.values())


def test_emptied_folder_is_unavailable_unless_forced(home, fake):
    paths = first_sync(home, fake, A=files("a", 5))
    for p in list(paths["A"].iterdir()):
        p.unlink()
    r = home.run("sync")
    assert r.code == 1, r
    assert image_deletes(fake) == []
    assert "--force" in r.stderr, r.stderr
    fake.reset_requests()
    r = home.run("sync", "--force")
    assert r.code == 0, r
    assert len(image_deletes(fake)) == 5
    assert_mirror(home, fake, paths.values())


def test_delete_guard_holds_deletions_of_more_than_half(home, fake):
    paths = first_sync(home, fake, A=files("a", 6))
    for name in ("a00.png", "a01.png", "a02.png", "a03.png"):
        (paths["A"] / name).unlink()
    (paths["A"] / "new.png").write_bytes(png("new"))
    dry = home.run("sync", "--dry-run")
    assert dry.code == 0, dry
    assert "held" in (dry.stdout + dry.stderr).lower(), dry
    r = home.run("sync")
    assert r.code == 1, r
    assert image_deletes(fake) == []
    assert "--max-delete" in r.stderr, r.stderr
    assert len(uploads(fake)) == 1                      # the rest of the run goes on
    fake.reset_requests()
    r = home.run("sync", "--max-delete", "3")
    assert r.code == 1, r
    assert image_deletes(fake) == []
    r = home.run("sync", "--max-delete", "4")
    assert r.code == 0, r
    assert len(image_deletes(fake)) == 4
    assert_mirror(home, fake, paths.values())


def test_delete_guard_holds_replacements_of_more_than_half(home, fake):
    paths = first_sync(home, fake, A=files("a", 4))
    for name in ("a00.png", "a01.png", "a02.png"):
        (paths["A"] / name).write_bytes(png(name + " edited"))
    r = home.run("sync")
    assert r.code == 1, r
    assert uploads(fake) == [] and image_deletes(fake) == []
    r = home.run("sync", "--force")
    assert r.code == 0, r
    assert len(uploads(fake)) == 3 and len(image_deletes(fake)) == 3
    assert_mirror(home, fake, paths.values())


def test_delete_guard_allows_half(home, fake):
    paths = first_sync(home, fake, A=files("a", 4))
    for name in ("a00.png", "a01.png"):
        (paths["A"] / name).unlink()
    r = home.run("sync")
    assert r.code == 0, r
    assert len(image_deletes(fake)) == 2
    assert_mirror(home, fake, paths.values())


# --------------------------------------------------------------------------- state and signals

def test_corrupt_state_json_exits_2_and_is_left_alone(home, fake):
    paths = first_sync(home, fake, A=files("a", 2))
    (paths["A"] / "new.png").write_bytes(png("new"))
    state = home.path / "state.json"
    damaged = state.read_bytes()[:-20] + b"\x00garbage"
    state.write_bytes(damaged)
    r = home.run("sync")
    assert r.code == 2, r
    assert state.read_bytes() == damaged
    assert "state.json.bak" in r.stderr, r.stderr
    assert fake.api_requests() == []
    no_traceback(r)


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)],
                         ids=["SIGTERM", "SIGINT"])
def test_signal_mid_upload_saves_state_and_the_next_run_completes(home, fake, signum, code):
    folder = new_folder(home, "A", files("a", 8))
    fake.latency = 0.2
    proc = home.start("sync")
    try:
        wait_for(lambda: len(uploads(fake)) >= 2)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = err.decode(errors="replace")
    assert proc.returncode == code, err
    assert "Traceback" not in err, err
    assert (home.path / "state.json").exists()
    fake.latency = 0
    finishes_clean(home, fake, [folder])


# --------------------------------------------------------------------------- files

def test_refused_file_is_recorded_and_not_retried_until_it_changes(home, fake):
    folder = new_folder(home, "A", {"good.png": png("good"), "bad.jpg": b"not an image" * 10})
    r = home.run("sync")
    assert r.code == 1, r
    assert "bad.jpg" in r.stdout + r.stderr
    state = home.state()
    assert state["refused"], state
    fake.reset_requests()
    r = home.run("sync")
    assert r.code == 1, r
    assert fake.api_requests() == [], "a refused file was sent again"
    (folder / "bad.jpg").write_bytes(jpeg("now a photo"))
    r = home.run("sync")
    assert r.code == 0, r
    assert len(uploads(fake)) == 1
    assert_mirror(home, fake, [folder])


def test_file_changed_between_scan_and_upload_waits_for_the_next_run(home, fake):
    """z.png is cut to half (a writer at work) after the scan, before its upload starts:
    it is not uploaded half-written; the next run uploads the finished file."""
    content = {f"a{i}.png": png(f"a{i}") for i in range(3)}
    whole = jpeg("z")
    content["z.jpg"] = whole
    content["y.png"] = png("y")
    folder = new_folder(home, "A", content)

    def hook(phase, request):
        if phase == "before" and kind(request) == "upload" and request.value("name") == "a0.png":
            (folder / "z.jpg").write_bytes(whole[:len(whole) // 2])
            (folder / "y.png").unlink()
        return None

    fake.on_request = hook
    r = home.run("sync", "--jobs", "1")
    fake.on_request = None
    names = [q.value("name") for q in uploads(fake)]
    assert "z.jpg" not in names and "y.png" not in names, names
    assert r.code == 1, r                               # not everything is in sync
    assert "z.jpg" in r.stdout + r.stderr
    (folder / "z.jpg").write_bytes(whole)               # the writer finishes
    fake.reset_requests()
    r = home.run("sync")
    assert r.code == 0, r
    assert [q.value("name") for q in uploads(fake)] == ["z.jpg"]
    assert_mirror(home, fake, [folder])
