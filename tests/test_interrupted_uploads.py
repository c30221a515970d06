"""Interrupted uploads and an immediate re-run (issue 11): never twice.

The race these tests set up on purpose: imgurbox is stopped (Ctrl-C, SIGTERM, SIGKILL)
at an upload's "body sent, no answer yet" point, while the fake still holds that upload,
and the next run starts at once. The rules under test:

- Ctrl-C or SIGTERM finish an upload whose body was completely sent: its answer is
  awaited and recorded, so the next run has nothing to look for.
- A second Ctrl-C abandons it and says so; after that, or after a SIGKILL, the next run's
  pending check does not find it yet, waits out the settle time, looks again and adopts it.

Every assertion is on the fake's record of requests and on state.json, never on time.
"""

from __future__ import annotations

import os
import signal
import threading

import pytest

from mirror_check import assert_mirror, kind, load_state, uploads
from test_reliability import files, new_folder

HELD = "held.png"                # the upload the fake holds at "body received"


class HoldUpload:
    """on_request hook: when the upload of HELD has arrived whole, call ``at_hold`` (which
    signals imgurbox), then keep the upload unperformed until ``release`` is set."""

    def __init__(self, at_hold):
        self.at_hold = at_hold
        self.release = threading.Event()
        self.held = threading.Event()
        self.first_check_answered = threading.Event()

    def __call__(self, phase, request):
        if kind(request) == "upload" and request.value("name") == HELD and phase == "before" \
                and not self.held.is_set():
            self.held.set()
            self.at_hold()
            assert self.release.wait(30), "never released"
        if phase == "after" and request.method == "GET" and request.path.endswith("/images"):
            self.first_check_answered.set()
        return None


def folder_with_held_file(home):
    content = files("a", 3)
    content[HELD] = files("held", 1)["held00.png"]
    return new_folder(home, "A", content)


def names_uploaded(fake) -> list:
    return sorted(q.value("name") for q in uploads(fake))


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_after_the_body_is_sent_waits_for_the_answer_and_records_it(
        home, fake, signum, code):
    folder = folder_with_held_file(home)
    proc = None

    def at_hold():
        proc.send_signal(signum)
        # The run is now stopping; it must still be waiting for this answer. Let the
        # fake perform the upload once the interruption has been noticed.
        threading.Timer(0.5, hold.release.set).start()

    hold = HoldUpload(at_hold)
    fake.on_request = hold
    proc = home.start("sync", "--jobs", "1")
    out, err = proc.communicate(timeout=60)
    fake.on_request = None
    err = err.decode(errors="replace")
    assert proc.returncode == code, err
    assert "waiting for Imgur's answer to 1 upload" in err, err
    assert "Traceback" not in err, err
    held = [q for q in uploads(fake) if q.value("name") == HELD]
    assert len(held) == 1 and held[0].status == 200, held
    state = load_state(home)
    assert not [p for p in state.get("pending", []) if p.get("op") == "upload"], state
    recorded = {row[0] for album in state["albums"].values() for row in album["files"]}
    assert HELD in recorded, "the answered upload was not recorded by the stopped run"

    fake.reset_requests()
    r = home.run("sync")                                 # at once: nothing to look for
    assert r.code == 0, r
    assert HELD not in names_uploaded(fake)
    assert_mirror(home, fake, [folder])


def test_a_ctrl_c_ignored_by_the_parent_stays_ignored(home, fake):
    # Started with SIGINT ignored (nohup, a background job), imgurbox keeps it ignored,
    # as Python does: the signal arrives while it waits for answers with signals held
    # (the moment the fake holds an upload), and the run must go on to the end.
    folder = folder_with_held_file(home)
    proc = None

    def at_hold():
        proc.send_signal(signal.SIGINT)
        threading.Timer(0.5, hold.release.set).start()

    hold = HoldUpload(at_hold)
    fake.on_request = hold
    proc = home.start("sync", "--jobs", "2",
                      preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    out, err = proc.communicate(timeout=60)
    fake.on_request = None
    assert proc.returncode == 0, err.decode(errors="replace")
    assert_mirror(home, fake, [folder])


def _stop_then_rerun(home, fake, stop):
    """Stop imgurbox with ``stop(proc)`` while the fake holds HELD's upload; start the
    next run at once; the fake performs the held upload only after that run's first
    pending check has answered "not there". Returns the next run's result."""
    folder = folder_with_held_file(home)
    proc = None
    hold = HoldUpload(lambda: stop(proc))
    fake.on_request = hold
    proc = home.start("sync", "--jobs", "1")
    out, err = proc.communicate(timeout=60)
    err = err.decode(errors="replace")
    assert "Traceback" not in err, err
    assert [q.value("name") for q in uploads(fake)].count(HELD) == 1

    # Release the held upload once the re-run's first check has answered (without it).
    releaser = threading.Thread(
        target=lambda: hold.first_check_answered.wait(60) and hold.release.set())
    releaser.start()
    try:
        r = home.run("sync", env={"IMGURBOX_SETTLE_SECONDS": "8"})
    finally:
        hold.release.set()
        releaser.join()
        fake.on_request = None
    fake.wait_idle()
    return folder, proc.returncode, err, r


def test_second_ctrl_c_abandons_and_the_next_run_waits_then_adopts(home, fake):
    def stop(proc):
        proc.send_signal(signal.SIGINT)
        # The second Ctrl-C once the first has been seen (the run says it is waiting).
        threading.Timer(0.5, proc.send_signal, (signal.SIGINT,)).start()

    folder, code, err, r = _stop_then_rerun(home, fake, stop)
    assert code == 130, err
    assert "abandoned 1 upload Imgur may have received" in err, err
    assert r.code == 0, r
    assert "waiting" in r.stdout + r.stderr, r
    assert names_uploaded(fake).count(HELD) == 1, "sent again: a duplicate"
    assert_mirror(home, fake, [folder])


def test_sigkill_after_the_body_is_sent_then_an_immediate_rerun_makes_no_duplicate(home, fake):
    folder, code, err, r = _stop_then_rerun(
        home, fake, lambda proc: os.kill(proc.pid, signal.SIGKILL))
    assert code == -signal.SIGKILL, err
    assert r.code == 0, r
    assert "adopted 1 upload of the interrupted run" in r.stdout, r
    assert names_uploaded(fake).count(HELD) == 1, "sent again: a duplicate"
    assert_mirror(home, fake, [folder])


def test_a_pending_upload_older_than_the_settle_time_is_sent_without_waiting(home, fake):
    """SIGKILL before the fake acts (it drops the request): the pending record is
    checked once and, being old enough, the upload is sent again at once."""
    folder = folder_with_held_file(home)
    proc = None

    def hook(phase, request):
        if phase == "before" and kind(request) == "upload" and request.value("name") == HELD:
            os.kill(proc.pid, signal.SIGKILL)
            return "drop"
        return None

    fake.on_request = hook
    proc = home.start("sync", "--jobs", "1")
    proc.communicate(timeout=60)
    fake.on_request = None
    fake.wait_idle()
    fake.reset_requests()
    r = home.run("sync", env={"IMGURBOX_SETTLE_SECONDS": "0"})
    assert r.code == 0, r
    checks = [q for q in fake.api_requests() if q.method == "GET" and q.path.endswith("/images")]
    assert len(checks) == 1, [kind(q) for q in fake.api_requests()]
    assert "waiting" not in r.stdout + r.stderr
    assert names_uploaded(fake) == [HELD]
    assert_mirror(home, fake, [folder])
