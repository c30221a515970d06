"""Shared fixtures: a running fake Imgur (``fake``) and a temporary imgurbox home (``home``).

End-to-end tests run the real ``imgurbox.py`` as a subprocess against the fake; nothing
here mocks ``requests``. The one way to run it is ``Home.run`` (or ``Home.start`` for a
run the test signals or feeds a terminal); the one way to import it is ``import_imgurbox``.
What a run did on the fake is read with tests/mirror_check.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fake_imgur import FakeImgur

REPO = Path(__file__).resolve().parent.parent
IMGURBOX = REPO / 'imgurbox.py'

# tests/bench/ holds benchmarks (python3 tests/bench/run.py), never part of a test run.
collect_ignore = ['bench']

# Environment every run gets (on top of os.environ minus IMGUR_* and IMGURBOX_*):
# the fake's URL, backoff sleeps cut 100-fold, a short read timeout, no colour.
RUN_ENV = {
    'IMGURBOX_BACKOFF_SCALE': '0.01',
    'IMGURBOX_READ_TIMEOUT': '5',
    'IMGURBOX_SETTLE_SECONDS': '0',
    'NO_COLOR': '1',
}


@dataclasses.dataclass
class Result:
    """What one imgurbox run gave: exit code and decoded output."""
    code: int
    stdout: str
    stderr: str


class Home:
    """A temporary imgurbox home (``path``) and a folder for photo folders (``photos``)."""

    def __init__(self, path: Path, photos: Path, fake: FakeImgur):
        self.path = path
        self.photos = photos
        self.fake = fake
        path.mkdir(parents=True, exist_ok=True)
        photos.mkdir(parents=True, exist_ok=True)

    # Files in the home.

    def write_albums(self, text_or_bytes) -> Path:
        """Write albums.txt: bytes as given, str as UTF-8 with line endings kept."""
        target = self.path / 'albums.txt'
        if isinstance(text_or_bytes, bytes):
            target.write_bytes(text_or_bytes)
        else:
            with open(target, 'w', encoding='utf-8', newline='') as file:
                file.write(text_or_bytes)
        return target

    def albums_bytes(self) -> bytes:
        """albums.txt as bytes, to compare byte for byte."""
        return (self.path / 'albums.txt').read_bytes()

    def write_credentials(self, creds: dict | None = None) -> dict:
        """Write credentials.json (mode 0600); default: fresh ones from the fake."""
        creds = self.fake.credentials() if creds is None else creds
        target = self.path / 'credentials.json'
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, 'w', encoding='utf-8') as file:
            json.dump(creds, file)
        os.chmod(target, 0o600)
        return creds

    def state(self):
        """state.json parsed, or None when there is none."""
        target = self.path / 'state.json'
        if not target.exists():
            return None
        return json.loads(target.read_text(encoding='utf-8'))

    # Photo folders.

    def folder(self, name: str, files: dict | None = None) -> Path:
        """Create photos/<name> holding ``files`` (file name -> bytes); return its path."""
        target = self.photos / name
        target.mkdir(parents=True, exist_ok=True)
        for file_name, data in (files or {}).items():
            (target / file_name).write_bytes(data)
        return target

    # Running imgurbox.

    def env(self, overrides: dict | None = None) -> dict:
        """The environment of a run; a value of None in ``overrides`` removes a variable."""
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(('IMGUR_', 'IMGURBOX_'))}
        # The fake's clock may run ahead (fake.advance): imgurbox reads it the same way.
        env.update(RUN_ENV, IMGUR_API_URL=self.fake.url,
                   IMGURBOX_CLOCK_OFFSET=repr(self.fake.now() - time.time()))
        for key, value in (overrides or {}).items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def argv(self, *args, python_args=(), script=IMGURBOX) -> list:
        """``python [python_args] imgurbox.py --home <path> *args`` as a list; ``script``: a
        launcher that runs imgurbox.py's main() (same command line) instead."""
        return [sys.executable, *python_args, str(script), '--home', str(self.path),
                *map(str, args)]

    def run(self, *args, env: dict | None = None, input=None, timeout: float = 120,
            python_args=(), script=IMGURBOX) -> Result:
        """Run ``imgurbox.py --home <path> *args``; stdin is empty unless ``input`` is given."""
        if isinstance(input, str):
            input = input.encode('utf-8')
        completed = subprocess.run(
            self.argv(*args, python_args=python_args, script=script),
            input=input, stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True, env=self.env(env), timeout=timeout)
        return Result(completed.returncode,
                      completed.stdout.decode('utf-8', 'replace'),
                      completed.stderr.decode('utf-8', 'replace'))

    def start(self, *args, env: dict | None = None, **popen) -> subprocess.Popen:
        """Start ``imgurbox.py --home <path> *args`` without waiting (to signal it, kill
        it, or give it a terminal). Defaults: stdin empty, stdout and stderr piped (bytes),
        SIGINT at its default action; ``popen`` overrides any of them."""
        options = dict(stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=self.env(env),
                       preexec_fn=default_sigint if os.name == 'posix' else None)
        options.update(popen)
        return subprocess.Popen(self.argv(*args), **options)


def default_sigint():
    """preexec_fn for a child the test will Ctrl-C. A test runner started in the
    background (`pytest &`, some CI runners) passes SIGINT down as ignored, and Python
    then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def import_imgurbox():
    """imgurbox.py imported as the module ``imgurbox`` (for unit tests of its parts).

    An import error fails the calling test or module; it never skips it."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import imgurbox
    return imgurbox


@pytest.fixture
def fake():
    """A started FakeImgur (defaults of tests/INTERFACES.md), stopped after the test.

    The test fails if the fake itself hit an internal error (``fake.errors``).
    """
    server = FakeImgur()
    server.start()
    yield server
    server.stop()
    assert not server.errors, '\n'.join(server.errors)


@pytest.fixture
def home(tmp_path, fake):
    """A Home in tmp_path/home, with photo folders under tmp_path/photos."""
    return Home(tmp_path / 'home', tmp_path / 'photos', fake)
