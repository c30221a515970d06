"""Kill-point suite (issue 5, README "Reliability"): SIGKILL imgurbox at every API request
of a run, before the fake acts and after it acted but before it answers, then run again
without faults: every file must be in its album exactly once, no orphan image, state.json
valid.

Each kill point is its own test id, ``<scenario>[NN-<request>-<phase>]``: the number of
kill points survived is the number of passing tests in this file (README, reliability).
The lists of requests below are checked against a fault-free pass of the same run
(``test_*_requests_are_the_kill_points``), so a change in what imgurbox sends shows up
there rather than as silently skipped kill points.
"""

from __future__ import annotations

import os
import signal
import threading

import pytest

from imagefiles import gif, png
from mirror_check import assert_mirror, kind, load_state

# The change run, --jobs 1 (deterministic order): three uploads (two new files and the
# new version of an edited one), the move (add, then remove), then the two DELETEs (the
# deleted file, the edited file's old version; which comes first is not pinned).
CHANGE_REQUESTS = ["upload", "upload", "upload", "add", "remove", "delete", "delete"]
# A first sync of a new folder, --jobs 1: the album, its read-back (hidden?), then its
# three files.
FIRST_SYNC_REQUESTS = ["create", "GET_/3/album/{id}", "upload", "upload", "upload"]
# A first sync of eight files with four parallel uploads: kill at some of the uploads
# while others are in flight (acted on, answered or not).
PARALLEL_FILES = 8
PARALLEL_KILLS = [3, 5, 7, 10]
PHASES = ["before", "after"]


def kill_points(requests):
    return [pytest.param(index, phase, id=f"{index:02d}-{label}-{phase}")
            for index, label in enumerate(requests, 1) for phase in PHASES]


class Killer:
    """on_request hook: SIGKILL the imgurbox process at the ``index``-th API request
    (1-based) in ``phase``, and drop that request's connection."""

    def __init__(self, index: int, phase: str):
        self.index, self.phase = index, phase
        self.count = 0
        self.pid = None
        self.killed_at = None
        self.started = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, phase, request):
        if not request.path.startswith(("/3/", "/oauth2/")):
            return None
        if phase == "before":
            with self.lock:
                self.count += 1
                request.kill_index = self.count
        if phase == self.phase and getattr(request, "kill_index", None) == self.index:
            self.started.wait(10)
            self.killed_at = request          # before the kill: the test reads it after
            os.kill(self.pid, signal.SIGKILL)
            return "drop"
        return None


def run_killed(home, fake, index, phase, *args, timeout=60):
    """Run ``sync *args`` with a Killer at (index, phase); return the killed request."""
    killer = Killer(index, phase)
    fake.on_request = killer
    try:
        proc = home.start("sync", *args)
        killer.pid = proc.pid
        killer.started.set()
        out, err = proc.communicate(timeout=timeout)
    finally:
        fake.on_request = None
    assert killer.killed_at is not None, (
        f"the run made only {killer.count} API requests, exit {proc.returncode}:\n"
        f"{out.decode(errors='replace')}\n{err.decode(errors='replace')}")
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, err.decode(errors="replace"))
    return killer.killed_at


def recover(home, fake, folders, *args):
    """The run after a kill: exit 0, an exact mirror; then a run with nothing to do."""
    r = home.run("sync", *args)
    assert r.code == 0, f"recovery run: exit {r.code}\n{r.stdout}\n{r.stderr}"
    assert_mirror(home, fake, folders)
    fake.reset_requests()
    again = home.run("sync")
    assert again.code == 0, again
    assert fake.api_requests() == [], (
        f"a third run still sent {[kind(q) for q in fake.api_requests()]}")
    load_state(home)


# --------------------------------------------------------------------------- the change set

def synced_home(home):
    """Two folders synced once: A (five files) and B (three)."""
    a = home.folder("A", {f"a{i}.png": png(f"a{i}") for i in range(1, 6)})
    b = home.folder("B", {f"b{i}.gif": gif(f"b{i}") for i in range(1, 4)})
    home.write_credentials()
    home.write_albums(f"{a}\n{b}\n")
    r = home.run("sync")
    assert r.code == 0, r
    assert_mirror(home, home.fake, [a, b])
    home.fake.reset_requests()
    return a, b


def make_changes(a, b):
    """Two new files, a move A -> B, an edit (same name, new content), a delete."""
    (a / "a6.png").write_bytes(png("a6"))
    (b / "b4.gif").write_bytes(gif("b4"))
    os.replace(a / "a2.png", b / "a2.png")
    (a / "a3.png").write_bytes(png("a3 edited"))
    (a / "a4.png").unlink()


def test_change_requests_are_the_kill_points(home, fake):
    a, b = synced_home(home)
    make_changes(a, b)
    r = home.run("sync", "--jobs", "1")
    assert r.code == 0, r
    assert [kind(q) for q in fake.api_requests()] == CHANGE_REQUESTS
    assert_mirror(home, fake, [a, b])


@pytest.mark.parametrize("index, phase", kill_points(CHANGE_REQUESTS))
def test_change_killed(home, fake, index, phase):
    a, b = synced_home(home)
    make_changes(a, b)
    killed = run_killed(home, fake, index, phase, "--jobs", "1")
    assert kind(killed) == CHANGE_REQUESTS[index - 1]
    recover(home, fake, [a, b])


# --------------------------------------------------------------------------- first sync

def new_home(home, count=3):
    folder = home.folder("New", {f"n{i}.png": png(f"n{i}") for i in range(1, count + 1)})
    home.write_credentials()
    home.write_albums(f"{folder}\n")
    return folder


def test_first_sync_requests_are_the_kill_points(home, fake):
    folder = new_home(home)
    r = home.run("sync", "--jobs", "1")
    assert r.code == 0, r
    assert [kind(q) for q in fake.api_requests()] == FIRST_SYNC_REQUESTS
    assert_mirror(home, fake, [folder])


@pytest.mark.parametrize("index, phase", kill_points(FIRST_SYNC_REQUESTS))
def test_first_sync_killed(home, fake, index, phase):
    folder = new_home(home)
    killed = run_killed(home, fake, index, phase, "--jobs", "1")
    assert kind(killed) == FIRST_SYNC_REQUESTS[index - 1]
    recover(home, fake, [folder])
    assert f"{folder} -> https://imgur.com/a/" in home.albums_bytes().decode()


@pytest.mark.parametrize("index, phase", [
    pytest.param(index, phase, id=f"{index:02d}-{phase}")
    for index in PARALLEL_KILLS for phase in PHASES])
def test_first_sync_parallel_killed(home, fake, index, phase):
    """Request 1 is the album, 2 its read-back; 3.. are uploads, four at a time: the kill finds others
    in flight, some acted on and never answered."""
    folder = new_home(home, PARALLEL_FILES)
    killed = run_killed(home, fake, index, phase, "--jobs", "4")
    assert kind(killed) == "upload"
    recover(home, fake, [folder])
