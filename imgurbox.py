#!/usr/bin/env python3
"""imgurbox: keep local photo folders and Imgur albums in step.

List folders in albums.txt, one a line, and run `python3 imgurbox.py` by hand or from a
scheduler. Each folder is one Imgur album: new photos are uploaded, deleted ones deleted,
moved ones moved between albums. Files are identified by their content, so renames cost
nothing and a different photo with an old name is never mistaken for a move.

    python3 imgurbox.py auth            # once: import your client ID, secret, refresh token
    python3 imgurbox.py                 # sync (the default command)
    python3 imgurbox.py --dry-run       # show the plan and its credit cost, change nothing
    python3 imgurbox.py status          # what is synced and what is waiting; no network
    python3 imgurbox.py links --format markdown   # every synced image's link; no network
    python3 imgurbox.py captions on     # photos' own captions become Imgur descriptions
    python3 imgurbox.py watch           # stay running: sync each change within seconds

albums.txt lines:  PATH  |  ALBUM (ID or imgur.com URL)  |  PATH -> ALBUM
Exit codes: 0 in sync, 1 items failed or held back, 2 bad usage or file, 3 locked,
4 rate limit (resume next run), 5 run `imgurbox.py auth`, 130/143 interrupted.

The file reads top to bottom: constants, errors, settings from the environment, models,
albums.txt, state store, settings.json, folder scan (with the content hash and captions),
targets, planner (pure), output and log, Imgur client (Api, RemoteReader, Remote: the one
write gate), executor, commands (sync, auth, status, links, captions, watch), main().
README.md is the user's manual and states the rules this file implements; comments
that cite a rule name the README section that states it.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime as dt
import errno
import hashlib
import json
import ntpath
import os
import random
import re
import signal
import stat
import struct
import sys
import threading
import time
import unicodedata
import urllib.parse
import zlib
from typing import Callable, NamedTuple

# Heavy imports (requests, imgurpython, requests_toolbelt) happen only when a run
# needs the network: a no-op run from cron should cost a directory walk.

###############################################################################
# Constants
###############################################################################

VERSION = "1.1.0"

EXIT_OK = 0
EXIT_FAILED = 1          # finished, but items failed or were held back
EXIT_USAGE = 2           # bad usage or a bad file; nothing changed
EXIT_LOCKED = 3          # another run holds the lock
EXIT_RATE_LIMIT = 4      # Imgur's limit or our credit reserve stopped the run early
EXIT_AUTH = 5            # authorization missing or refused
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

DEFAULT_API_URL = "https://api.imgur.com/"
ALBUM_URL = "https://imgur.com/a/{}"

ALBUMS_FILE = "albums.txt"
STATE_FILE = "state.json"
STATE_BACKUP = "state.json.bak"
JOURNAL_FILE = "state.journal"
# The number of the last run that wrote to Imgur, kept apart from state.json so that a
# restored or lost state.json can be told from a current one (README, "Reliability").
RUN_COUNTER_FILE = "run-counter"
CREDENTIALS_FILE = "credentials.json"
SETTINGS_FILE = "settings.json"      # lasting choices: `imgurbox.py captions on|off`
LOG_FILE = "log.txt"
LOCK_FILE = "imgurbox.lock"
LOG_MAX_BYTES = 1024 * 1024
LOG_KEEP = 3
# Characters of one log line's text; the rest is cut, so that a 100 MB line of albums.txt
# in an error message cannot blow the log past its LOG_KEEP + 1 files of about 1 MiB.
LOG_LINE_MAX = 4000
SETTINGS_FILE = "settings.json"          # written by a later version (captions on|off)
# Names a downloaded album's folder never takes: imgurbox's own files in the home, with
# their rotated (log.txt.1) and temporary (state.json.tmp-123) forms, settings.json and
# the script itself (the home is the script's folder by default), compared as the most
# forgiving file systems compare them (is_home_file_name).
HOME_FILE_NAMES = frozenset(name.casefold() for name in (
    ALBUMS_FILE, STATE_FILE, STATE_BACKUP, JOURNAL_FILE, RUN_COUNTER_FILE,
    CREDENTIALS_FILE, LOG_FILE, LOCK_FILE, SETTINGS_FILE, "imgurbox.py",
    os.path.basename(__file__)))

STATE_VERSION = 1
# One file's record in state.json is a row, not a dict: 20,000 rows parse several times
# faster than 20,000 dicts, and a no-op run is mostly "load state, walk folders".
FILE_FIELDS = ("name", "image_id", "hash", "size", "mtime_ns", "inode", "hash_version",
               "link", "caption")
# The definition of the content hash (README, "Which files"). 1 counted all of EXIF; 2
# counts only its orientation. A record keeps the version its hash was made with, so a
# new definition migrates the state without a re-upload (scan_folder, content_matches).
HASH_VERSION = 2
OLD_HASH_VERSION = 1

IMAGE_EXTENSIONS = frozenset("jpg jpeg jpe png apng gif tif tiff bmp".split())
MAX_IMAGE_BYTES = 20 * 1000 * 1000
MAX_GIF_BYTES = 200 * 1000 * 1000
MIME_TYPES = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "jpe": "image/jpeg",
              "png": "image/png", "apng": "image/apng", "gif": "image/gif",
              "tif": "image/tiff", "tiff": "image/tiff", "bmp": "image/bmp"}
EXTENSION_OF_MIME = {"image/jpeg": "jpg", "image/png": "png", "image/apng": "png",
                     "image/gif": "gif", "image/tiff": "tif", "image/bmp": "bmp"}

IS_WINDOWS = os.name == "nt"
COARSE_MTIME_NS = 2_000_000_000      # files this close to the last scan are re-hashed
HASH_CHUNK = 1024 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A download is written to ".imgurbox-<image ID>-<random>.part" in its folder, then
# linked into place; one a crash left behind is removed by the next run's scan.
DOWNLOAD_PART_PREFIX = ".imgurbox-"
DOWNLOAD_PART_SUFFIX = ".part"

# Credits: an upload costs 10, any other API call 1, OAuth nothing.
UPLOAD_CREDITS = 10
CALL_CREDITS = 1

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
MAX_TRIES = 4
MAX_BACKOFF_TOTAL = 30.0
MAX_FAILED_REQUESTS_IN_A_ROW = 3
MAX_JOBS = 16                        # parallel uploads: more only invites 429s
# An API answer is read whole, so it is capped: the largest real answers (an album of
# thousands of images) are a few MB; a bigger one is hostile or broken, never kept.
ANSWER_MAX_BYTES = 32 * 1024 * 1024
# Titles and names from Imgur are kept in state.json and printed: Imgur's own limits
# are far below these, so a longer one is cut rather than carried.
REMOTE_TEXT_MAX = 1000
# A saved window that resets within this many seconds is taken as reset: an hourly job
# starts about an hour after the last one's first request, and holding it back for a
# second's difference would cost it the whole hour.
RATE_RESTORE_MARGIN = 300
RATE_WINDOW_TOLERANCE = 60          # seconds: reset times this close are one window
# No limit of Imgur's lasts longer than a day (the application's daily credits): a reset
# further ahead is not a time (epoch milliseconds, 9e18, a broken proxy) and is ignored,
# never clamped nor saved; the next answer's headers decide. The tolerance allows for
# clocks that disagree and for rounding.
RATE_RESET_MAX_AHEAD = 24 * 3600 + RATE_WINDOW_TOLERANCE
USER_CREDITS_FLOOR = 10              # no upload starts below this
UPLOADS_PER_HOUR = 50                # what Imgur's hourly user budget allows in practice
CLIENT_CREDITS_RESERVE = 0.10        # keep 10 % of the application's daily credits
PENDING_CLOCK_SLACK = 120            # seconds: remote clocks and our clock disagree
ADOPT_CLOCK_TOLERANCE = 5            # seconds: a file newer than the image adopted for it
# After an abandoned upload or a crash, Imgur may still be storing an upload whose body it
# received: a pending upload the check does not find is sent again only once its record is
# this old (README, "Reliability").
SETTLE_SECONDS = 30.0
STALE_READ_PAUSE = 2.0               # seconds: a read right after a write may be stale
TAKEOVER_MATCH = 0.90
DELETE_GUARD_MIN_FILES = 4
DOWNLOAD_NAME_MAX = 120               # characters of a downloaded file's name
DOWNLOAD_NAME_MAX_BYTES = 200         # and its UTF-8 bytes (most file systems: 255)
ALBUMS_PER_PAGE = 50
NETWORK_PENDING = ("upload", "create_album")   # pending kinds settled by asking Imgur

RE_ALBUM_ID = re.compile(r"[A-Za-z0-9]+\Z")
RE_IMGUR_URL = re.compile(
    r"(?:https?://)?(?:www\.|m\.)?imgur\.com/(a|gallery)/([^/?#\s]+)/?(?:[?#].*)?\Z",
    re.IGNORECASE)
RE_LOOKS_LIKE_URL = re.compile(r"(?:https?://|(?:www\.|m\.)?imgur\.com/)", re.IGNORECASE)
WINDOWS_RESERVED_NAMES = frozenset(
    ["CON", "PRN", "AUX", "NUL"] + ["COM%d" % i for i in range(1, 10)]
    + ["LPT%d" % i for i in range(1, 10)])


###############################################################################
# Errors: one root (and Interrupted, a signal, outside it); main() turns each into a
# message and an exit code
###############################################################################

class ImgurboxError(Exception):
    """A failure with a message for the user and the exit code it means."""
    exit_code = EXIT_FAILED

    def lines(self) -> tuple:
        """The message as lines to print, each escaped on its own (Output.error)."""
        return (str(self),)


class UsageError(ImgurboxError):
    """Bad command line or bad file: nothing was changed. `details`: lines that follow
    the message (one per bad albums.txt line)."""
    exit_code = EXIT_USAGE

    def __init__(self, message: str, details=()):
        super().__init__(message)
        self.details = tuple(details)

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def lines(self) -> tuple:
        return (str(self.args[0]),) + self.details


class CredentialsDamaged(UsageError):
    """credentials.json does not parse. `problem` says what is wrong, without the
    advice, for `auth`, which replaces the file."""

    def __init__(self, problem: str, advice: str):
        super().__init__("%s: %s" % (problem, advice))
        self.problem = problem


class LockHeldError(ImgurboxError):
    """Another imgurbox run holds the lock in this home."""
    exit_code = EXIT_LOCKED


class AuthError(ImgurboxError):
    """Credentials are missing, or Imgur refused them: run `imgurbox.py auth`.
    `problem` is the message without the advice to run auth, for `auth` itself."""
    exit_code = EXIT_AUTH

    def __init__(self, problem: str, advice: str = ""):
        super().__init__("%s: %s" % (problem, advice) if advice else problem)
        self.problem, self.advice = problem, advice


class RateLimitError(ImgurboxError):
    """Imgur's rate limit, or our credit reserve, stops the run; the next run resumes."""
    exit_code = EXIT_RATE_LIMIT

    def __init__(self, message: str, reset_at: float | None = None):
        super().__init__(message)
        self.reset_at = reset_at


class ServiceDownError(ImgurboxError):
    """Imgur failed several requests in a row, each after every try: stop early."""
    exit_code = EXIT_FAILED


class NetworkBlocked(ServiceDownError):
    """Imgur refuses this network or country (400 with `CDN-Error: yes`): no file is at
    fault and no retry helps, so the run stops."""


class RequestFailed(ImgurboxError):
    """One request did not succeed: its item fails, the run goes on with the others.
    Callers that only need to know that catch this; the two kinds below tell why."""
    status = 0


class RequestRefused(RequestFailed):
    """A definite no: Imgur answered with a refusal (400, 403 after a refresh, 404, ...),
    or imgurbox itself refused to act (an unsafe link or file name: status 0). Nothing
    was carried out."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class GaveUp(RequestFailed):
    """No answer to go by: every try failed, or the check that would have told failed.
    The request may have been carried out, so a pending record stays to be checked."""


class MalformedAnswer(GaveUp):
    """An answer that is not what Imgur sends (a wrong type, no usable ID): the request
    may have been carried out, so it counts as giving up, and a pending record stays."""


class OutcomeUnknown(ImgurboxError):
    """A request may or may not have been carried out (timeout, dropped line, 5xx)."""


class UploadAbandoned(ImgurboxError):
    """An upload given up because the run is stopping. `maybe_performed` is False when no
    attempt's body was completely sent: Imgur cannot have stored it."""

    def __init__(self, maybe_performed: bool):
        super().__init__("upload abandoned")
        self.maybe_performed = maybe_performed


class Interrupted(BaseException):
    """SIGTERM (and Ctrl-C where a handler turns it into one). Like KeyboardInterrupt a
    BaseException, not an ImgurboxError: code that handles imgurbox's errors (watch's
    look at albums.txt between syncs, say) must never swallow a signal by accident."""

    def __init__(self, exit_code: int):
        super().__init__("interrupted")
        self.exit_code = exit_code


###############################################################################
# Settings from the environment: read once, by main(), and handed down
###############################################################################

class Clock(NamedTuple):
    """The clock Imgur's datetimes and reset times are measured by. `offset` is zero in
    real use; tests run Imgur's clock fast (an hour of rate limit passes in a moment)
    and put imgurbox on the same clock with IMGURBOX_CLOCK_OFFSET."""
    offset: float = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def local_ns(self, imgur_seconds: float) -> float:
        """An Imgur time as a local time in nanoseconds, to compare with an mtime."""
        return (imgur_seconds - self.offset) * 1e9


@dataclasses.dataclass(frozen=True)
class Environment:
    """Every setting imgurbox takes from environment variables (README, "Command
    line"). The IMGURBOX_ timing knobs exist for the test suite's fake Imgur."""
    home: str | None = None                     # IMGURBOX_HOME
    api_url: str = DEFAULT_API_URL              # IMGUR_API_URL, checked when used
    client_id: str | None = None                # IMGUR_CLIENT_ID
    client_secret: str | None = None            # IMGUR_CLIENT_SECRET
    refresh_token: str | None = None            # IMGUR_REFRESH_TOKEN
    no_color: bool = False                      # NO_COLOR
    connect_timeout: float = CONNECT_TIMEOUT    # IMGURBOX_CONNECT_TIMEOUT
    read_timeout: float = READ_TIMEOUT          # IMGURBOX_READ_TIMEOUT
    backoff_scale: float = 1.0                  # IMGURBOX_BACKOFF_SCALE
    settle_seconds: float = SETTLE_SECONDS      # IMGURBOX_SETTLE_SECONDS
    clock: Clock = Clock()                      # IMGURBOX_CLOCK_OFFSET

    @classmethod
    def read(cls, environ) -> "Environment":
        def seconds(name: str, default: float) -> float:
            text = environ.get(name)
            if not text:
                return default
            try:
                return float(text)
            except ValueError:
                raise UsageError("%s must be a number (it is %r)" % (name, text)) from None
        return cls(
            home=environ.get("IMGURBOX_HOME") or None,
            api_url=environ.get("IMGUR_API_URL") or DEFAULT_API_URL,
            client_id=environ.get("IMGUR_CLIENT_ID") or None,
            client_secret=environ.get("IMGUR_CLIENT_SECRET") or None,
            refresh_token=environ.get("IMGUR_REFRESH_TOKEN") or None,
            no_color=bool(environ.get("NO_COLOR")),
            connect_timeout=seconds("IMGURBOX_CONNECT_TIMEOUT", CONNECT_TIMEOUT),
            read_timeout=seconds("IMGURBOX_READ_TIMEOUT", READ_TIMEOUT),
            backoff_scale=seconds("IMGURBOX_BACKOFF_SCALE", 1.0),
            settle_seconds=seconds("IMGURBOX_SETTLE_SECONDS", SETTLE_SECONDS),
            clock=Clock(seconds("IMGURBOX_CLOCK_OFFSET", 0.0)))

    @property
    def client_identity(self) -> dict:
        """The client ID and secret the environment gives, to put over credentials.json."""
        return {key: value for key, value in (("client_id", self.client_id),
                                              ("client_secret", self.client_secret)) if value}


###############################################################################
# Data model
###############################################################################

class FileRecord(NamedTuple):
    """What the state remembers of one synced file (the name is the key)."""
    image_id: str
    hash: str
    size: int
    mtime_ns: int
    inode: int
    hash_version: int = HASH_VERSION   # the content hash's definition (HASH_VERSION)
    link: str = ""                     # the direct link Imgur answered; "" not known yet
    # The caption Imgur's description is in line with: the one sent with the upload or
    # the last caption update, or the local caption when the image was downloaded or
    # adopted. None: not known (recorded while captions were off, or before captions).
    caption: str | None = None


def file_record(values) -> FileRecord:
    """A record from a state row or a journal line. One written before hash versions
    (five values) holds a hash of the first definition."""
    values = list(values)
    if len(values) == len(FileRecord._fields):
        return FileRecord._make(values)
    if len(values) == 5:
        values.append(OLD_HASH_VERSION)
    return FileRecord(*values)


@dataclasses.dataclass
class AlbumState:
    """One album in state.json: its folder and the files synced into it."""
    album_id: str
    folder: str
    listed: bool = True
    title: str = ""
    owner: str | None = None           # the owner's username, when known
    download_only: bool = False        # another account's album: never pushed to
    incomplete: bool = False           # downloads still to do: list the album next run
    files: dict = dataclasses.field(default_factory=dict)        # name -> FileRecord
    to_delete: list = dataclasses.field(default_factory=list)    # replaced image IDs
    ignored: list = dataclasses.field(default_factory=list)      # ambiguous remote IDs
    last_sync: str | None = None
    last_error: str | None = None
    # An album this tool created that Imgur has not yet shown as hidden: nothing is
    # uploaded into it until a read-back does (it may be public).
    privacy_unverified: bool = False


@dataclasses.dataclass
class AlbumLine:
    """One meaningful line of albums.txt, validated and resolved."""
    number: int                        # 1-based line number
    kind: str                          # 'path', 'album' or 'link' (PATH -> ALBUM)
    text: str                          # the line as typed, stripped
    path: str | None = None            # absolute folder (path and link lines)
    path_text: str | None = None       # the PATH part as typed
    album_id: str | None = None        # album and link lines


@dataclasses.dataclass
class ParsedAlbums:
    lines: list
    errors: list                       # (line number, message)
    raw_lines: list                    # bytes, each with its own line ending
    bom: bool


class ScannedFile(NamedTuple):
    """One eligible file as found by this run's scan."""
    name: str
    path: str
    size: int
    mtime_ns: int
    inode: int
    hash: str | None                   # None: the file could not be read this run
    # While the state still holds records of the previous hash definition: this file's
    # hash under it, so that it matches those records too (README, "Which files").
    old_hash: str | None = None
    caption: str | None = None         # the photo's own caption; None: not read this run


@dataclasses.dataclass
class FolderScan:
    folder: str
    error: str | None = None           # the folder itself could not be listed
    files: dict = dataclasses.field(default_factory=dict)       # name -> ScannedFile
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    skipped_names: list = dataclasses.field(default_factory=list)
    unreadable: list = dataclasses.field(default_factory=list)  # (name, reason)
    rehashed: int = 0
    trusted: int = 0                   # files whose stat data matched the state
    leftovers: list = dataclasses.field(default_factory=list)   # paths of stale downloads
    to_read: list = dataclasses.field(default_factory=list)     # ToRead, not hashed yet
    read: list = dataclasses.field(default_factory=list)        # (name, why), hashed
    # mtime_ns of files read only because they were modified near the last scan
    near_last_scan: list = dataclasses.field(default_factory=list)


class ToRead(NamedTuple):
    """A file the scan must read (hash) before the plan, and why (README, `-v`)."""
    name: str
    path: str
    size: int
    mtime_ns: int
    inode: int
    extension: str
    why: str
    old_hash: str | None = None        # a record of the first definition its stat vouches for


@dataclasses.dataclass
class RemoteImage:
    image_id: str
    name: str | None
    link: str
    datetime: int
    mime: str | None
    size: int = 0
    width: int = 0
    height: int = 0
    description: str | None = None


@dataclasses.dataclass
class RemoteAlbum:
    """What Imgur said of an album (GET /3/album/{id}), or that it is gone."""
    album_id: str
    found: bool
    title: str | None = None
    owner: str | None = None
    owned: bool = True                 # owned by the account imgurbox acts for
    images: list = dataclasses.field(default_factory=list)      # RemoteImage
    error: str | None = None           # could not be read this run (not a 404)


@dataclasses.dataclass
class Target:
    """A listed line, settled against the state: which album its folder syncs with."""
    line: AlbumLine
    folder: str
    mode: str                          # 'sync', 'create', 'link' or 'download'
    album_id: str | None               # None until created ('create', 'download')
    retitle: bool = False              # the album's title should follow the folder

    @property
    def key(self) -> str:
        """Album ID, or a placeholder for an album this run creates."""
        return self.album_id or "new:" + self.folder


# Actions: what the planner asks the executor to do. An action class is the one place
# that says everything about its kind: where it runs in a plan (`order`), what it costs
# in requests and credits (for --dry-run and the delete guard), how the plan and
# `status` name it (`symbol`, `verb`, `noun`, `label()`, and `lines()`: the --dry-run
# lines, in the form the real run prints); Executor.do_<class name> carries it out
# (uploads, which run in parallel, Executor.run_uploads). A new kind of action is a
# class here and its do_ method.
#
# `where(album key, name)` names a file as every action line does: its folder's last
# part, a slash, its name ("Cats/felix.jpg"); without a name, the folder alone.

DOWNLOAD_ONLY_NOTE = " (download-only: another account's)"
REPAIRED_NOTE = " (was missing on Imgur)"


@dataclasses.dataclass
class Action:
    album: str                         # album key (ID or 'new:<folder>')
    order = 0                          # albums first, deletions last (_in_execution_order)
    requests = 1
    credits = CALL_CREDITS
    symbol = " "
    verb = ""                          # the plan's word: "upload a.jpg"
    noun = ""                          # status's word: "2 uploads"

    def label(self) -> str:
        """The file's name, or what else names this action."""
        file = getattr(self, "file", None)
        return file.name if file is not None else getattr(self, "name", "")

    def lines(self, where: Callable[[str, str], str]) -> list:
        """What --dry-run prints after the symbol: the real run's line for it."""
        return ["%s %s" % (self.verb, where(self.album, self.label()))]


@dataclasses.dataclass
class LinkAlbum(Action):
    """Record an existing album in the state (an ALBUM or first PATH -> ALBUM line)."""
    folder: str = ""
    title: str = ""
    owner: str | None = None
    download_only: bool = False
    order = 0
    requests = credits = 0
    symbol, verb, noun = "*", "link album", "album link"

    def label(self) -> str:
        return self.title or self.folder

    def lines(self, where) -> list:
        return ["album %s %s%s" % (where(self.album, ""), ALBUM_URL.format(self.album),
                                   DOWNLOAD_ONLY_NOTE if self.download_only else "")]


@dataclasses.dataclass
class CreateAlbum(Action):
    folder: str = ""
    title: str = ""
    order = 1
    # The creation, then a read-back that shows it hidden before any photo goes in.
    requests, credits = 2, 2 * CALL_CREDITS
    symbol, verb, noun = "*", "create album", "new album"

    def label(self) -> str:
        return self.title or self.folder

    def lines(self, where) -> list:
        return ["album %s (new album)" % self.label()]


@dataclasses.dataclass
class RetitleAlbum(Action):
    title: str = ""
    order = 2
    symbol, verb, noun = "*", "retitle album", "album title"

    def label(self) -> str:
        return self.title

    def lines(self, where) -> list:
        return ["retitle album %s as %s" % (ALBUM_URL.format(self.album), self.title)]


@dataclasses.dataclass
class Upload(Action):
    file: ScannedFile = None
    replaces: str | None = None        # image ID deleted once the new one is in
    repair: bool = False               # a --verify re-upload of a vanished image
    order = 5
    credits = UPLOAD_CREDITS
    symbol, verb, noun = "+", "upload", "upload"

    def __post_init__(self):
        if self.replaces:
            self.requests, self.credits = 2, UPLOAD_CREDITS + CALL_CREDITS
            self.symbol, self.verb, self.noun = "~", "replace", "replacement"

    def lines(self, where) -> list:
        return ["%s %s%s" % (self.verb, where(self.album, self.file.name),
                             REPAIRED_NOTE if self.repair else "")]


@dataclasses.dataclass
class MoveItem:
    image_id: str
    old_name: str
    file: ScannedFile
    record: FileRecord


@dataclasses.dataclass
class Move(Action):
    """Images moved from one album to another: one add and one remove_images call."""
    source: str = ""
    items: list = dataclasses.field(default_factory=list)      # MoveItem
    order = 6
    requests, credits = 2, 2 * CALL_CREDITS
    symbol, verb, noun = ">", "move", "move"

    def label(self) -> str:
        return ", ".join("%s -> %s" % (i.old_name, i.file.name) for i in self.items)

    def lines(self, where) -> list:
        return ["move %s -> %s" % (where(self.source, item.old_name),
                                   where(self.album, item.file.name)) for item in self.items]


@dataclasses.dataclass
class Rename(Action):
    old_name: str = ""
    file: ScannedFile = None
    record: FileRecord = None
    order = 3
    requests = credits = 0
    symbol, verb, noun = "=", "rename", "rename"

    def label(self) -> str:
        return "%s -> %s" % (self.old_name, self.file.name)

    def lines(self, where) -> list:
        return ["rename %s -> %s" % (where(self.album, self.old_name),
                                     where(self.album, self.file.name))]


@dataclasses.dataclass
class Delete(Action):
    name: str = ""
    image_id: str = ""
    order = 8
    symbol, verb, noun = "-", "delete", "deletion"


@dataclasses.dataclass
class PurgeReplaced(Action):
    """A replaced image whose DELETE failed on an earlier run."""
    image_id: str = ""
    order = 9
    symbol, verb, noun = "-", "delete old version", "old version to delete"

    def label(self) -> str:
        return self.image_id

    def lines(self, where) -> list:
        return ["delete old version %s (image %s)" % (where(self.album, ""), self.image_id)]


@dataclasses.dataclass
class Adopt(Action):
    """A remote image taken as the copy of a local file with that name: no transfer."""
    file: ScannedFile = None
    image_id: str = ""
    link: str = ""
    order = 3
    requests = credits = 0
    symbol, verb, noun = "@", "adopt", "adoption"

    def lines(self, where) -> list:
        return ["adopt %s as image %s" % (where(self.album, self.file.name), self.image_id)]


@dataclasses.dataclass
class Download(Action):
    folder: str = ""
    image: RemoteImage = None
    order = 4
    requests = credits = 0              # image links are not API calls
    symbol, verb, noun = "<", "download", "download"

    def label(self) -> str:
        return self.image.name or self.image.image_id

    def lines(self, where) -> list:
        # The name it is saved under; a name taken in the folder gets " (1)" then.
        return ["download %s" % where(self.album, safe_file_name(
            self.image.name, self.image.image_id, self.image.mime))]


@dataclasses.dataclass
class Repair(Action):
    """--verify found a recorded image missing from its album: re-add or re-upload."""
    name: str = ""
    record: FileRecord = None
    file: ScannedFile = None
    order = 7
    requests, credits = 2, 2 * CALL_CREDITS
    symbol, verb, noun = "+", "repair", "repair"

    def lines(self, where) -> list:
        # The real run re-adds the image, or uploads the file again if the image is gone.
        return ["re-add or upload %s%s" % (where(self.album, self.name), REPAIRED_NOTE)]


@dataclasses.dataclass
class UpdateCaption(Action):
    """The photo's own caption is not the image's description (captions on): one image
    update, no re-upload; the link stays."""
    file: ScannedFile = None
    caption: str = ""
    order = 7
    symbol, verb, noun = "&", "caption", "caption update"


@dataclasses.dataclass
class Held:
    """Work the safety rules hold back this run (exit 1)."""
    album: str
    folder: str
    reason: str
    actions: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Plan:
    targets: list                                               # Target
    actions: list = dataclasses.field(default_factory=list)
    held: list = dataclasses.field(default_factory=list)        # Held
    errors: list = dataclasses.field(default_factory=list)      # (folder, message)
    stat_updates: list = dataclasses.field(default_factory=list)  # (album, ScannedFile)
    refused: list = dataclasses.field(default_factory=list)     # (folder, name)
    needs_remote: set = dataclasses.field(default_factory=set)  # album IDs to GET
    notes: list = dataclasses.field(default_factory=list)       # (folder, warning)
    # What a --verify listing told of an image without a change on Imgur (its link, or
    # that its description is in line): (album ID, name, image ID, {field: value}),
    # recorded by finish_state.
    learnt: list = dataclasses.field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(a.requests for a in self.actions)

    @property
    def credits(self) -> int:
        return sum(a.credits for a in self.actions)

    @property
    def uploads(self) -> int:
        """Uploads and replacements: what Imgur's hourly upload limit counts."""
        return sum(isinstance(a, Upload) for a in self.actions)


###############################################################################
# albums.txt
###############################################################################

def parse_album_ref(text: str, id_lengths: tuple = (5, 10)) -> str | None:
    """The album ID in an album ID or imgur.com album URL, or None when it is neither."""
    match = RE_IMGUR_URL.match(text)
    if match:
        album_id = match.group(2).rsplit("-", 1)[-1]
        return album_id if RE_ALBUM_ID.match(album_id) else None
    low, high = id_lengths
    if RE_ALBUM_ID.match(text) and low <= len(text) <= high:
        return text
    return None


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


def _is_comment(text: str) -> bool:
    return text.startswith("#") or text == "//" or text.startswith(("// ", "//\t"))


def folder_key(path: str, pathmod=os.path) -> str:
    """The identity of a folder: two spellings of one folder have the same key."""
    try:
        return pathmod.normcase(pathmod.realpath(path))
    except (OSError, ValueError):
        return pathmod.normcase(pathmod.abspath(path))


def folder_identity(path: str, pathmod=os.path):
    """What makes two paths one folder: the device and inode of an existing folder
    (bind mounts, case-insensitive names), else its normalised real path."""
    if pathmod is os.path:
        try:
            st = os.stat(path)
            if st.st_ino:                               # 0 where the OS has no inode
                return ("inode", st.st_dev, st.st_ino)
        except (OSError, ValueError):
            pass
    return folder_key(path, pathmod)


def resolve_folder(text: str, base_dir: str, pathmod=os.path) -> str:
    """An albums.txt PATH made absolute: `~` expands, relative means beside albums.txt."""
    path = pathmod.expanduser(text)
    if not pathmod.isabs(path):
        path = pathmod.join(base_dir, path)
    parts = path.replace(pathmod.sep, "/").replace(pathmod.altsep or "/", "/").split("/")
    if ".." in parts:
        return path     # `link/..` is the symlink target's parent, not where normpath goes
    return pathmod.normpath(path)


def parse_albums_txt(data: bytes, base_dir: str, state_folders=(), pathmod=os.path,
                     exists: Callable[[str], bool] = os.path.isdir) -> ParsedAlbums:
    """Parse albums.txt (README, "albums.txt"). Every line is checked; bad ones land in .errors.

    state_folders: folder keys the state knows (a bare PATH with history is valid even
    when the folder is missing: it is then reported unavailable, never deleted).
    """
    bom = data.startswith(b"\xef\xbb\xbf")
    raw_lines = (data[3:] if bom else data).splitlines(keepends=True)
    known = set(state_folders)
    lines, errors = [], []
    for number, raw in enumerate(raw_lines, 1):
        try:
            text = raw.rstrip(b"\r\n").decode("utf-8")
        except UnicodeDecodeError:
            errors.append((number, "not valid UTF-8 (save albums.txt as UTF-8)"))
            continue
        text = _unquote(text.strip())
        if not text or _is_comment(text):
            continue
        line, error = _parse_line(number, text, base_dir, known, pathmod, exists)
        if error:
            errors.append((number, error))
        else:
            lines.append(line)
    errors.extend(_duplicate_errors(lines, pathmod))
    errors.sort()
    return ParsedAlbums(lines, errors, raw_lines, bom)


def _missing_folder_message(text: str, path: str, pathmod) -> str:
    """Why a PATH line names no folder, with the likely slip when there is one."""
    if pathmod is not ntpath and re.match(r"[A-Za-z]:[\\/]|\\\\", text):
        return ("%s is a Windows path: on this computer, write the folder as a path like "
                "/home/you/Pictures" % text)
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return "folder %s does not exist (use double quotes, or none, around a path)" % path
    if "\\ " in text and pathmod.sep == "/":
        return "folder %s does not exist (write spaces as they are, without backslashes)" % path
    return "folder %s does not exist" % path


def _parse_line(number, text, base_dir, known, pathmod, exists):
    """One non-blank, non-comment line -> (AlbumLine, None) or (None, error message)."""
    if text.endswith(" ->") or text == "->":
        return None, "nothing after ' -> ': add the album's URL, or remove the arrow"
    if " => " in text or " - > " in text:
        return None, "write the arrow as ' -> ' (a hyphen and a greater-than sign)"
    if " -> " in text:
        path_text, album_text = (_unquote(part) for part in text.rsplit(" -> ", 1))
        album_id = parse_album_ref(album_text, (5, 10))
        if not path_text:
            return None, "no folder before ' -> '"
        if album_id is None:
            return None, ("%r is not an Imgur album (an album ID, or a URL like "
                          "https://imgur.com/a/ID)" % album_text)
        path = resolve_folder(path_text, base_dir, pathmod)
        return AlbumLine(number, "link", text, path, path_text, album_id), None
    if RE_LOOKS_LIKE_URL.match(text):
        album_id = parse_album_ref(text, (5, 10))
        if album_id is None:
            return None, "%r is not an Imgur album URL (expected imgur.com/a/ID)" % text
        return AlbumLine(number, "album", text, album_id=album_id), None
    path = resolve_folder(text, base_dir, pathmod)
    has_history = folder_key(path, pathmod) in known
    if exists(path) or has_history:
        return AlbumLine(number, "path", text, path, text), None
    if any(c in text for c in "/\\~.: "):
        return None, _missing_folder_message(text, path, pathmod)
    if RE_ALBUM_ID.match(text) and 5 <= len(text) <= 7:
        return AlbumLine(number, "album", text, album_id=text), None
    return None, "%r is neither an existing folder nor an Imgur album ID" % text


def _duplicate_errors(lines, pathmod):
    errors, by_folder, by_album = [], {}, {}
    for line in lines:
        if line.path:
            key = folder_identity(line.path, pathmod)
            if key in by_folder:
                errors.append((line.number, "same folder as line %d" % by_folder[key]))
            by_folder.setdefault(key, line.number)
        if line.album_id:
            if line.album_id in by_album:
                errors.append((line.number,
                               "same album as line %d" % by_album[line.album_id]))
            by_album.setdefault(line.album_id, line.number)
    return errors


def rewrite_albums_txt(parsed: ParsedAlbums, new_texts: dict) -> bytes:
    """albums.txt with the given lines replaced (line number -> text), every other
    byte unchanged: the BOM, other lines and each line's own ending are kept."""
    out = [b"\xef\xbb\xbf"] if parsed.bom else []
    for number, raw in enumerate(parsed.raw_lines, 1):
        if number in new_texts:
            ending = raw[len(raw.rstrip(b"\r\n")):]
            out.append(new_texts[number].encode("utf-8") + ending)
        else:
            out.append(raw)
    return b"".join(out)


###############################################################################
# State store: state.json, state.json.bak and the append-only state.journal
###############################################################################

# File names that are not UTF-8. A name the file system gives that is not valid UTF-8
# (an old archive, a camera card written on another system) is held in memory as Python
# gives it, a str with each undecodable byte as one lone surrogate U+DC80-U+DCFF
# (os.fsdecode's "surrogateescape"), so that the file can always be opened again; on
# Windows a name may hold a lone UTF-16 surrogate the same way. In state.json and the
# journal such a character is the JSON escape "\udcXX" (state_json_bytes): both files
# stay valid UTF-8 JSON and json.loads reads the escape back as the same character, so
# the name round-trips exactly. (A file system never gives a high surrogate followed by
# a low one, the only pair json.loads would join.) Imgur is sent readable text instead:
# imgur_name() puts U+FFFD for each such character, and that name is kept in the
# pending record, because the pending check and the restored-state pass match on it.
# Messages show the bytes escaped (printable: Caf\xe9.png).

def state_json_bytes(value, **dump_options) -> bytes:
    """A value as UTF-8 JSON, lone surrogates (bytes of names that are not UTF-8) as
    "\\udcXX" escapes, which json.loads reads back as they were."""
    return json.dumps(value, ensure_ascii=False, **dump_options).encode(
        "utf-8", "backslashreplace")


# imgurbox's own files in the home are its alone: each is created 0600 (they hold the
# links of hidden albums), an existing one of ours is set back to 0600 when it is next
# written, and none is written through a symbolic link (a link there could make imgurbox
# append to, truncate or replace a file elsewhere). A linked one stops the run, exit 2,
# naming it (refuse_linked_own_files, and O_NOFOLLOW where a file is opened). albums.txt
# is the user's: it keeps its mode, and a linked albums.txt (kept in a dotfiles
# repository, say) is rewritten at its target, on purpose (README "Files in the home").
OWN_FILE_MODE = 0o600
O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)          # not on Windows: checked by islink


def linked_own_file(path: str) -> UsageError:
    return UsageError("%s is a symbolic link: imgurbox does not write its own files through "
                      "links; put the file itself there (move the file it points to)" % path)


def refuse_linked_own_files(home: str) -> None:
    """Exit 2 before anything changes if one of imgurbox's own files is a link."""
    names = [STATE_FILE, STATE_BACKUP, JOURNAL_FILE, RUN_COUNTER_FILE, CREDENTIALS_FILE,
             LOG_FILE, LOCK_FILE, SETTINGS_FILE]
    names += ["%s.%d" % (LOG_FILE, index) for index in range(1, LOG_KEEP + 1)]
    for name in names:
        path = os.path.join(home, name)
        if os.path.islink(path):
            raise linked_own_file(path)


def fix_own_mode(fd: int) -> None:
    """An own file readable by others, and ours: back to 0600 (POSIX)."""
    if not hasattr(os, "fchmod") or not hasattr(os, "geteuid"):
        return                          # Windows: no POSIX modes to keep
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o077 and st.st_uid == os.geteuid():
            os.fchmod(fd, OWN_FILE_MODE)
    except OSError:
        pass                            # a file system without modes: nothing to keep


def open_own_file(path: str, flags: int) -> int:
    """os.open for one of imgurbox's own files: created 0600, set back to 0600 if ours,
    never through a symbolic link (UsageError naming it)."""
    if not O_NOFOLLOW and os.path.islink(path):
        raise linked_own_file(path)
    try:
        fd = os.open(path, flags | O_NOFOLLOW | getattr(os, "O_BINARY", 0), OWN_FILE_MODE)
    except OSError:
        if os.path.islink(path):        # ELOOP (Linux, macOS) or EMLINK (FreeBSD)
            raise linked_own_file(path) from None
        raise
    fix_own_mode(fd)
    return fd


def write_atomically(path: str, data: bytes, mode: int | None = None,
                     through_link: bool = False) -> None:
    """Write a file so that a crash leaves either the old or the new content. It is
    created with `mode` (default 0600, an own file's). A link at `path` is refused
    (UsageError), unless `through_link`: then its target is written (albums.txt)."""
    if os.path.islink(path):
        if not through_link:
            raise linked_own_file(path)
        path = os.path.realpath(path)
    tmp = "%s.tmp-%d" % (path, os.getpid())
    # Created new, never through a link planted under that name: a leftover of a
    # crashed run with the same process ID is removed first.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_NOFOLLOW | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(tmp, flags, OWN_FILE_MODE if mode is None else mode)
    except FileExistsError:
        os.unlink(tmp)
        fd = os.open(tmp, flags, OWN_FILE_MODE if mode is None else mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _fsync_folder(folder: str) -> None:
    """Make a rename in the folder durable (POSIX; Windows has no such call)."""
    if IS_WINDOWS:
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def iso_now() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


# The shape of state.json and of each journal line: valid JSON of another shape (a list,
# a number where text belongs, a missing key) is a damaged file, reported with restore
# advice (exit 2), never a traceback later in the run. Kinds: "text", "whole" (an int),
# "number", "bool", "texts" (a list of text), "object", "list"; a trailing "?" allows null.
ALBUM_FIELDS = {"folder": "text", "listed": "bool", "title": "text?", "owner": "text?",
                "download_only": "bool", "incomplete": "bool", "to_delete": "texts",
                "ignored": "texts", "last_sync": "text?", "last_error": "text?",
                "privacy_unverified": "bool"}
PENDING_FIELDS = {
    "upload": {"album": "text", "name": "text", "hash": "text", "size": "whole",
               "mtime_ns": "whole", "inode": "whole", "sent_name": "text"},
    "create_album": {"folder": "text", "title": "text"},
    "download": {"album": "text", "image_id": "text", "hash": "text", "folder": "text"}}
JOURNAL_FIELDS = {
    "album": {"album": "text", "fields": "object"},
    "file": {"album": "text", "name": "text", "record": "list"},
    "unfile": {"album": "text", "name": "text", "image_id": "text"},
    "refile": {"album": "text", "name": "text", "to_album": "text", "to_name": "text",
               "record": "list"},
    "to_delete": {"album": "text", "image_id": "text"},
    "deleted": {"album": "text", "image_id": "text"},
    "ignore": {"album": "text", "image_id": "text"},
    "pending": {"record": "object"},
    "resolved": {"id": "text"},
    "refused": {"hash": "text", "info": "object"},
    "run": {"number": "whole"},
    "restore_begun": {"number": "whole", "albums": "texts"},
    "restore_checked": {"album": "text"}}
OPTIONAL_FIELDS = {"sent_name"}           # pending uploads recorded before it existed
_KIND_NAMES = {"text": "text", "whole": "a whole number", "number": "a number",
               "bool": "true or false", "texts": "a list of text", "object": "an object",
               "list": "a list"}


def _is_kind(value, kind: str) -> bool:
    if kind.endswith("?"):
        return value is None or _is_kind(value, kind[:-1])
    if kind == "text":
        return type(value) is str
    if kind == "whole":
        return type(value) is int
    if kind == "number":
        return type(value) in (int, float)
    if kind == "bool":
        return type(value) is bool
    if kind == "texts":
        return type(value) is list and all(type(item) is str for item in value)
    return type(value) is (dict if kind == "object" else list)


def check_fields(what: str, value, kinds: dict, required: bool = True) -> dict:
    """`value` as a JSON object whose fields have the given kinds (every one of them
    present unless `required` is False); ValueError naming `what` and the field if not."""
    if type(value) is not dict:
        raise ValueError("%s is not a JSON object" % what)
    for key, kind in kinds.items():
        if key not in value:
            if required and key not in OPTIONAL_FIELDS:
                raise ValueError("%s has no %r" % (what, key))
        elif not _is_kind(value[key], kind):
            raise ValueError("%s: %r is not %s" % (what, key, _KIND_NAMES[kind.rstrip("?")]))
    return value


def file_records(what: str, rows: list) -> dict:
    """name -> FileRecord from rows [name, image_id, hash, size, mtime_ns, inode,
    hash_version, link, caption] (FILE_FIELDS), or the six-value rows saved before hash
    versions, links and captions (their hashes are of the first definition); ValueError
    for a row of another shape. Written out for speed: a no-op run loads every row of a
    large library."""
    records, make, full = {}, tuple.__new__, len(FILE_FIELDS)
    for row in rows:
        if type(row) is not list or len(row) not in (6, full):
            raise ValueError("%s: a file row is not [%s]" % (what, ", ".join(FILE_FIELDS)))
        name, image_id, content, size, mtime_ns, inode = row[:6]
        if type(name) is not str or type(image_id) is not str or type(content) is not str \
                or type(size) is not int or type(mtime_ns) is not int or type(inode) is not int:
            raise ValueError("%s: a file row is not [%s]" % (what, ", ".join(FILE_FIELDS)))
        if len(row) == 6:
            records[name] = FileRecord(image_id, content, size, mtime_ns, inode,
                                       OLD_HASH_VERSION)
            continue
        if type(row[6]) is not int or type(row[7]) is not str or \
                not (row[8] is None or type(row[8]) is str):
            raise ValueError("%s: a file row is not [%s]" % (what, ", ".join(FILE_FIELDS)))
        records[name] = make(FileRecord, row[1:])
    return records


def check_pending(what: str, record) -> dict:
    check_fields(what, record, {"op": "text", "id": "text", "since": "number"})
    kinds = PENDING_FIELDS.get(record["op"])
    if kinds is None:
        raise ValueError("%s: unknown operation %r" % (what, record["op"]))
    return check_fields(what, record, kinds)


def check_album_fields(what: str, fields, new: bool) -> dict:
    """An album's fields (all but its files); a new album needs at least its folder."""
    check_fields(what, fields, ALBUM_FIELDS, required=False)
    unknown = sorted(set(fields) - set(ALBUM_FIELDS))
    if unknown:
        raise ValueError("%s: unknown field %r" % (what, unknown[0]))
    if new and "folder" not in fields:
        raise ValueError("%s has no 'folder'" % what)
    return fields


class StateStore:
    """The state, in memory, with every change journaled before it is relied on.

    state.json is rewritten only when a run ends (O(library) once), while each remote
    operation appends one JSON line to state.journal (O(1)), made durable with an fsync
    before any upload or album creation is sent (see _record). Journal lines carry
    the generation of the state.json they apply to, so lines already folded into a newer
    state.json are ignored when a crash left the journal behind.

    The run counter (RUN_COUNTER_FILE) holds the number of the last run that wrote to
    Imgur, and is written before that run's first write; state.json and every journal
    line carry the number of the run that made them. A state older than the counter was
    restored from state.json.bak or lost: that run's uploads are in albums the state
    does not know of. Such a run first marks every album it knows as owed a check
    (`restore_owed`, kept in the state from then on) and takes the counter's number;
    SyncRun.adopt_restored_uploads then reads each owed album once, the first time the
    run would upload into it, and adopts those uploads.
    """

    def __init__(self, home: str, writable: bool = True, clock: Clock = Clock()):
        self.clock = clock
        self.path = os.path.join(home, STATE_FILE)
        self.backup_path = os.path.join(home, STATE_BACKUP)
        self.journal_path = os.path.join(home, JOURNAL_FILE)
        self.counter_path = os.path.join(home, RUN_COUNTER_FILE)
        self.writable = writable
        self.generation = 0
        self.run = 0                       # the run that made this state
        self.last_run = 0                  # the run counter: the last run that wrote
        self.this_run = 1                  # the number this run takes if it writes
        self.restore_owed: list = []       # albums to read for a lost run's uploads
        self.scanned_at_ns = 0
        self.albums: dict[str, AlbumState] = {}
        self.pending: list[dict] = []
        self.refused: dict[str, dict] = {}
        self.rate: dict = {}               # the last rate-limit view (RateView.snapshot)
        self.dirty = False
        self._journal = None
        self._journal_has_lines = False
        self._lock = threading.RLock()

    # -- loading ----------------------------------------------------------------

    @classmethod
    def load(cls, home: str, writable: bool = True, clock: Clock = Clock()) -> "StateStore":
        store = cls(home, writable, clock)
        try:
            with open(store.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            raw = None
        except OSError as e:
            raise UsageError("cannot read %s: %s" % (store.path, e.strerror))
        if raw is not None:
            try:
                store._from_json(json.loads(raw))
            except (ValueError, TypeError) as e:      # not JSON, or JSON of another shape
                raise UsageError(
                    "%s is damaged (%s). Nothing was changed. Copy %s over it: the next "
                    "run finds what later runs uploaded and adopts it, so nothing is "
                    "uploaded twice." % (store.path, e, STATE_BACKUP))
        store._replay_journal()
        store.last_run = store._read_run_counter()
        store.this_run = max(store.run, store.last_run) + 1
        return store

    def _read_run_counter(self) -> int:
        try:
            with open(self.counter_path, "rb") as f:
                return int(f.read().strip() or 0)
        except FileNotFoundError:
            return 0
        except (OSError, ValueError):
            # Unreadable: take the state for restored. That costs a GET per album the
            # run uploads into; taking it for current could cost duplicates.
            return self.run + 1

    def _from_json(self, data) -> None:
        """Take a parsed state.json; ValueError if it has another shape than to_json's."""
        if type(data) is not dict:
            raise ValueError("not a JSON object")
        if data.get("version") != STATE_VERSION:
            raise ValueError("unknown state version %r" % data.get("version"))
        check_fields("the state", data, {"generation": "whole", "albums": "object"})
        check_fields("the state", data, {
            "run": "whole", "restore_owed": "texts", "scanned_at_ns": "whole",
            "pending": "list", "refused": "object", "rate": "object"}, required=False)
        self.generation = data["generation"]
        self.run = data.get("run", 0)
        self.restore_owed = list(data.get("restore_owed", []))
        self.scanned_at_ns = data.get("scanned_at_ns", 0)
        for album_id, album in data["albums"].items():
            what = "album %s" % album_id
            if type(album) is not dict or type(album.get("files")) is not list:
                raise ValueError("%s: 'files' is not a list" % what)
            fields = check_album_fields(what, {k: v for k, v in album.items()
                                               if k != "files"}, new=True)
            files = file_records(what, album["files"])
            self.albums[album_id] = AlbumState(album_id=album_id, files=files, **fields)
        self.pending = [check_pending("a pending operation", p)
                        for p in data.get("pending", [])]
        self.refused = {content: check_fields("a refused file", info, {}) for content, info
                        in data.get("refused", {}).items()}
        self.rate = dict(data.get("rate", {}))      # RateView.restore checks its values

    def _replay_journal(self) -> None:
        try:
            with open(self.journal_path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return
        lines = data.split(b"\n")
        good_end = 0                          # bytes up to the end of the last good line
        for index, line in enumerate(lines):
            if not line.strip():
                good_end += len(line) + 1
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                if index >= len(lines) - 2:   # a last line cut short by a crash
                    data = data[:min(good_end, len(data))]
                    self._cut_journal(len(data))
                    break
                raise UsageError("%s is damaged at line %d. Restore %s over %s and "
                                 "delete the journal." % (self.journal_path, index + 1,
                                                          STATE_BACKUP, STATE_FILE))
            good_end += len(line) + 1
            try:
                if type(entry) is not dict:
                    raise ValueError("not a JSON object")
                if entry.get("gen") == self.generation:
                    self._check_entry(entry)
                    self._apply(entry)
                    self.dirty = True
                    self._journal_has_lines = True
            except ValueError as e:
                raise UsageError("%s is damaged at line %d (%s). Nothing was changed. "
                                 "Restore %s over %s and delete the journal: the next run "
                                 "finds what later runs uploaded and adopts it."
                                 % (self.journal_path, index + 1, e, STATE_BACKUP,
                                    STATE_FILE))
        if data and not data.endswith(b"\n") and self.writable:
            with self._open_journal() as f:              # the next line starts a line
                f.write(b"\n")

    def _cut_journal(self, size: int) -> None:
        """Drop a torn last line, so that lines appended after it stay readable."""
        if self.writable:
            with os.fdopen(open_own_file(self.journal_path, os.O_RDWR), "r+b") as f:
                f.truncate(size)

    def _open_journal(self):
        """state.journal for appending: 0600, never through a link."""
        return os.fdopen(open_own_file(self.journal_path, os.O_WRONLY | os.O_APPEND
                                       | os.O_CREAT), "ab")

    def to_json(self) -> dict:
        albums = {}
        plain = [f.name for f in dataclasses.fields(AlbumState)
                 if f.name not in ("album_id", "files")]
        for album_id, album in sorted(self.albums.items()):
            # Not dataclasses.asdict: it would deep-copy every file record first.
            fields = {name: getattr(album, name) for name in plain}
            fields["files"] = [[name, *record] for name, record in sorted(album.files.items())]
            albums[album_id] = fields
        return {"version": STATE_VERSION, "generation": self.generation, "run": self.run,
                "restore_owed": self.restore_owed, "scanned_at_ns": self.scanned_at_ns,
                "file_fields": list(FILE_FIELDS),
                "albums": albums, "pending": self.pending, "refused": self.refused,
                "rate": self.rate}

    # -- saving -----------------------------------------------------------------

    def save(self) -> bool:
        """Fold everything into state.json (keeping the old one as .bak). True if written."""
        if not self.writable or not (self.dirty or self._journal_has_lines):
            return False
        self.generation += 1
        data = state_json_bytes(self.to_json(), separators=(",", ":"))
        try:
            with open(self.path, "rb") as f:
                write_atomically(self.backup_path, f.read())
        except FileNotFoundError:
            pass
        write_atomically(self.path, data)
        _fsync_folder(os.path.dirname(self.path))   # the rename lands before the unlink
        self._close_journal()
        try:
            os.unlink(self.journal_path)
        except FileNotFoundError:
            pass
        self.dirty = self._journal_has_lines = False
        return True

    def _close_journal(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def _record(self, entry: dict, durable: bool = False) -> None:
        """Apply a change in memory and append it to the journal at once.

        Every line is flushed, so a killed run loses nothing. Only `durable` lines (a
        pending upload or album creation, written before the request) are also fsync'd,
        which makes every line before them durable too: one fsync per upload, not three.
        A power cut can lose the lines after the last fsync; each such loss costs the
        next run at most a request (the pending check, a repeated move or a 404 delete),
        never a duplicate upload."""
        self._apply(entry)
        self.dirty = True
        if not self.writable:
            return
        if self._journal is None:
            self._journal = self._open_journal()
        entry = dict(entry, gen=self.generation, run=self.this_run)
        self._journal.write(state_json_bytes(entry) + b"\n")
        self._journal.flush()
        if durable:
            os.fsync(self._journal.fileno())
        self._journal_has_lines = True

    def _check_entry(self, entry: dict) -> None:
        """A journal line read back has the shape _record wrote, and names albums the
        state knows where it changes one; ValueError if not."""
        check_fields("the line", entry, {"op": "text"})
        kinds = JOURNAL_FIELDS.get(entry["op"])
        if kinds is None:
            raise ValueError("unknown operation %r" % entry["op"])
        check_fields("the line", entry, kinds)
        op = entry["op"]
        if op == "album":
            check_album_fields("the line", entry["fields"],
                               new=entry["album"] not in self.albums)
        elif op == "pending":
            check_pending("the line", entry["record"])
        elif op not in ("resolved", "refused", "run", "restore_begun", "restore_checked"):
            for key in ("album", "to_album"):
                if key in entry and entry[key] not in self.albums:
                    raise ValueError("album %s is not in the state" % entry[key])
        if "record" in kinds and op != "pending":
            file_records("the line", [["", *entry["record"]]])

    def _apply(self, entry: dict) -> None:
        with self._lock:        # upload workers read the state (known_image_ids) meanwhile
            self._apply_unlocked(entry)

    def _apply_unlocked(self, entry: dict) -> None:
        op = entry["op"]
        album = self.albums.get(entry.get("album", ""))
        if op == "album":
            if album is None:
                self.albums[entry["album"]] = AlbumState(album_id=entry["album"],
                                                         **entry["fields"])
            else:
                for key, value in entry["fields"].items():
                    setattr(album, key, value)
        elif op == "file":
            album.files[entry["name"]] = file_record(entry["record"])
        elif op == "unfile":
            record = album.files.get(entry["name"])
            if record is not None and record.image_id == entry["image_id"]:
                del album.files[entry["name"]]
        elif op == "refile":
            moved = file_record(entry["record"])
            old = album.files.get(entry["name"])
            if old is not None and old.image_id == moved.image_id:
                del album.files[entry["name"]]
            self.albums[entry["to_album"]].files[entry["to_name"]] = moved
        elif op == "to_delete":
            if entry["image_id"] not in album.to_delete:
                album.to_delete.append(entry["image_id"])
        elif op == "deleted":
            if entry["image_id"] in album.to_delete:
                album.to_delete.remove(entry["image_id"])
        elif op == "ignore":
            if entry["image_id"] not in album.ignored:
                album.ignored.append(entry["image_id"])
        elif op == "pending":
            self.pending.append(entry["record"])
        elif op == "resolved":
            self.pending = [p for p in self.pending if p["id"] != entry["id"]]
        elif op == "refused":
            self.refused[entry["hash"]] = entry["info"]
        elif op == "run":
            self.run = entry["number"]
        elif op == "restore_begun":
            self.run = max(self.run, entry["number"])
            self.restore_owed = sorted(set(self.restore_owed) | set(entry["albums"]))
        elif op == "restore_checked":
            self.restore_owed = [a for a in self.restore_owed if a != entry["album"]]
        else:
            raise ValueError("unknown journal entry %r" % op)

    # -- changes ------------------------------------------------------------------

    def set_album(self, album_id: str, **fields) -> None:
        self._record({"op": "album", "album": album_id, "fields": fields})

    def set_file(self, album_id: str, name: str, record: FileRecord) -> None:
        self._record({"op": "file", "album": album_id, "name": name, "record": list(record)})

    def drop_file(self, album_id: str, name: str, image_id: str) -> None:
        """Forget a file, if its name still maps to that image (a rename or move this
        run may have given the name to another image already)."""
        self._record({"op": "unfile", "album": album_id, "name": name, "image_id": image_id})

    def refile(self, from_album: str, old_name: str, to_album: str, new_name: str,
               record: FileRecord) -> None:
        """A rename or move as one journal line: a crash between forgetting the old
        name and recording the new one would leave the image recorded nowhere."""
        self._record({"op": "refile", "album": from_album, "name": old_name,
                      "to_album": to_album, "to_name": new_name, "record": list(record)})

    def add_to_delete(self, album_id: str, image_id: str) -> None:
        self._record({"op": "to_delete", "album": album_id, "image_id": image_id})

    def deleted(self, album_id: str, image_id: str) -> None:
        self._record({"op": "deleted", "album": album_id, "image_id": image_id})

    def ignore_image(self, album_id: str, image_id: str) -> None:
        self._record({"op": "ignore", "album": album_id, "image_id": image_id})

    def add_pending(self, record: dict, durable: bool = True) -> dict:
        """Record an operation before its request; durable=False leaves the fsync to a
        sync_journal() call before the request is sent (several uploads, one fsync)."""
        record = dict(record, id="%x-%x" % (time.time_ns(), random.getrandbits(32)),
                      since=self.clock.now())
        self._record({"op": "pending", "record": record}, durable=durable)
        return record

    def sync_journal(self) -> None:
        if self._journal is not None:
            os.fsync(self._journal.fileno())

    def resolve_pending(self, pending_id: str) -> None:
        self._record({"op": "resolved", "id": pending_id})

    def set_refused(self, content_hash: str, info: dict) -> None:
        self._record({"op": "refused", "hash": content_hash, "info": info})

    def begin_writing(self) -> None:
        """Called before this run's first remote write: the counter is made durable
        first, so a state.json.bak restored later is always found older than it."""
        write_atomically(self.counter_path, b"%d\n" % self.this_run)
        _fsync_folder(os.path.dirname(self.counter_path))
        self.last_run = self.this_run
        self._record({"op": "run", "number": self.this_run}, durable=True)

    @property
    def restored(self) -> bool:
        """Older than the last run that wrote to Imgur: restored from state.json.bak, or
        started afresh after state.json was lost."""
        return self.run < self.last_run

    def begin_restore(self) -> None:
        """A restored state: every album it knows may hold uploads it does not know.
        Recorded (with the counter's number) before anything else, so that a run cut
        short before it read them all leaves the rest owed."""
        self._record({"op": "restore_begun", "number": self.last_run,
                      "albums": sorted(self.albums)}, durable=True)

    def restore_check_done(self, album_id: str) -> None:
        self._record({"op": "restore_checked", "album": album_id})

    def touch_stat(self, album_id: str, name: str, record: FileRecord) -> None:
        """Changes of stat data, hash definition or what a --verify learnt: kept in
        memory, written with state.json (not journaled: losing them costs a re-hash or
        another --verify, never a request)."""
        self.albums[album_id].files[name] = record
        self.dirty = True

    # -- queries ------------------------------------------------------------------

    def holds_old_hashes(self) -> bool:
        """Whether a record still holds a hash of the previous definition: files read
        this run then get both hashes (scan_folder)."""
        return any(record.hash_version != HASH_VERSION for album in self.albums.values()
                   for record in album.files.values())

    def known_image_ids(self) -> set:
        with self._lock:
            return self._known_image_ids()

    def _known_image_ids(self) -> set:
        ids = set()
        for album in self.albums.values():
            ids.update(record.image_id for record in album.files.values())
            ids.update(album.to_delete)
            ids.update(album.ignored)
        return ids

    def folder_keys(self) -> dict:
        """folder key -> album ID, for every album in the state."""
        return {folder_key(album.folder): album_id for album_id, album in self.albums.items()}


###############################################################################
# Settings: settings.json, the choices that last (`imgurbox.py captions on|off`)
###############################################################################

@dataclasses.dataclass
class Settings:
    captions: bool = False             # photos' own captions become Imgur descriptions


def read_settings(home: str) -> Settings:
    """settings.json (absent: the defaults); a damaged one is a UsageError naming it."""
    path = os.path.join(home, SETTINGS_FILE)
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("captions", False), bool):
            raise ValueError("not an object of settings")
    except FileNotFoundError:
        return Settings()
    except (ValueError, UnicodeDecodeError) as e:
        raise UsageError("%s is damaged (%s): fix it, or delete it and run `imgurbox.py "
                         "captions on` or `off` again" % (path, e))
    except OSError as e:
        raise UsageError("cannot read %s: %s" % (path, e.strerror))
    return Settings(captions=data.get("captions", False))


def write_settings(home: str, settings: Settings) -> None:
    data = json.dumps(dataclasses.asdict(settings), indent=2) + "\n"
    write_atomically(os.path.join(home, SETTINGS_FILE), data.encode("utf-8"), mode=0o600)


###############################################################################
# Folder scan and content hash
###############################################################################

_JPEG_XMP_HEADERS = (b"http://ns.adobe.com/xap/1.0/\x00", b"http://ns.adobe.com/xmp/extension/\x00")
_JPEG_EXIF_HEADER = b"Exif\x00\x00"
_PNG_METADATA_CHUNKS = frozenset([b"tEXt", b"zTXt", b"iTXt", b"tIME"])
_PNG_XMP_KEYWORD = b"XML:com.adobe.xmp"
_EXIF_MAX_BYTES = 1024 * 1024          # a larger PNG eXIf chunk is hashed, not parsed
_TIFF_ORIENTATION = 0x0112
_TIFF_IMAGE_DESCRIPTION = 0x010E
_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}


class _NotThatFormat(Exception):
    """The file does not parse as its extension says: hash it whole."""


def content_hash(path: str, extension: str, version: int = HASH_VERSION) -> str:
    """A hash of what Imgur keeps of a photo (README, "Which files"), read in constant memory.

    Imgur strips metadata, so the hash leaves out what a photo manager rewrites when a
    user only rates, tags or captions: JPEG XMP, APP13 (IPTC) and COM segments, PNG
    tEXt/zTXt/iTXt/tIME chunks, and of the EXIF (JPEG APP1 `Exif`, PNG eXIf) all but
    the orientation, which changes how the photo is shown (Windows writes ratings and
    tags into EXIF). An orientation other than 1 (an absent tag is 1) is hashed after
    the rest; an EXIF block that does not parse is hashed whole. `version`
    OLD_HASH_VERSION is the first definition, which hashed all of EXIF: the migration
    of a state made with it needs it (scan_folder).
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        digest = hashlib.blake2b(digest_size=16)
        whole_exif = version == OLD_HASH_VERSION
        try:
            if extension in ("jpg", "jpeg", "jpe"):
                orientation = _hash_jpeg(f, size, digest, whole_exif)
            elif extension in ("png", "apng"):
                orientation = _hash_png(f, size, digest, whole_exif)
            else:
                raise _NotThatFormat
            if orientation != 1:
                digest.update(b"\x00orientation %d" % orientation)
        except _NotThatFormat:
            digest = hashlib.blake2b(digest_size=16)
            f.seek(0)
            _hash_copy(f, digest, None)
        return digest.hexdigest()


def _hash_copy(f, digest, count: int | None) -> None:
    """Feed `count` bytes (all the rest when None) of f to the digest, in chunks."""
    while count is None or count > 0:
        chunk = f.read(HASH_CHUNK if count is None else min(HASH_CHUNK, count))
        if not chunk:
            if count:
                raise _NotThatFormat
            return
        digest.update(chunk)
        if count is not None:
            count -= len(chunk)


def _read_exact(f, count: int) -> bytes:
    data = f.read(count)
    if len(data) != count:
        raise _NotThatFormat
    return data


def _tiff_ifd0(tiff: bytes) -> tuple | None:
    """The first IFD of a TIFF structure (the body of an EXIF block): (byte order,
    {tag: (type, raw value bytes)}), or None when it does not parse."""
    order = {b"II*\x00": "<", b"MM\x00*": ">"}.get(tiff[:4])
    if order is None:
        return None
    try:
        (offset,) = struct.unpack_from(order + "I", tiff, 4)
        (count,) = struct.unpack_from(order + "H", tiff, offset)
        entries = {}
        for index in range(count):
            tag, kind, number, value = struct.unpack_from(order + "HHI4s", tiff,
                                                          offset + 2 + 12 * index)
            length = _TIFF_TYPE_SIZES.get(kind, 1) * number
            if length > 4:
                (at,) = struct.unpack(order + "I", value)
                value = tiff[at:at + length]
            entries.setdefault(tag, (kind, value[:length]))
        return order, entries
    except struct.error:
        return None


def _exif_body(block: bytes) -> bytes:
    """The TIFF structure of an EXIF block (a JPEG APP1 payload or a PNG eXIf chunk,
    which some writers also start with the JPEG header)."""
    return block[len(_JPEG_EXIF_HEADER):] if block.startswith(_JPEG_EXIF_HEADER) else block


def exif_orientation(block: bytes) -> int | None:
    """The orientation an EXIF block gives (1 when it has none, as viewers take it;
    values outside 2..8 are not orientations either), or None if it does not parse."""
    ifd = _tiff_ifd0(_exif_body(block))
    if ifd is None:
        return None
    order, entries = ifd
    kind, value = entries.get(_TIFF_ORIENTATION, (3, b""))
    if kind != 3 or len(value) < 2:
        return 1
    (orientation,) = struct.unpack(order + "H", value[:2])
    return orientation if 2 <= orientation <= 8 else 1


def _hash_jpeg(f, size: int, digest, whole_exif: bool) -> int:
    """Hash a JPEG's image segments; returns the orientation its EXIF gives."""
    if _read_exact(f, 2) != b"\xff\xd8":
        raise _NotThatFormat
    digest.update(b"\xff\xd8")
    orientation = None
    while True:
        if _read_exact(f, 1) != b"\xff":
            raise _NotThatFormat
        marker = _read_exact(f, 1)
        while marker == b"\xff":                      # fill bytes
            marker = _read_exact(f, 1)
        code = marker[0]
        if code == 0xD9 or 0xD0 <= code <= 0xD7 or code == 0x01:
            digest.update(b"\xff" + marker)          # markers without a length
            if code == 0xD9:
                _hash_copy(f, digest, None)
                return orientation or 1
            continue
        length_bytes = _read_exact(f, 2)
        length = struct.unpack(">H", length_bytes)[0]
        if length < 2 or f.tell() + length - 2 > size:
            raise _NotThatFormat
        payload = length - 2
        if code in (0xED, 0xFE):                      # APP13 (IPTC), COM
            f.seek(payload, os.SEEK_CUR)
            continue
        if code == 0xE1:                              # APP1: XMP goes, EXIF but orientation
            head = _read_exact(f, min(payload, 35))
            if head.startswith(_JPEG_XMP_HEADERS):
                f.seek(payload - len(head), os.SEEK_CUR)
                continue
            if head.startswith(_JPEG_EXIF_HEADER) and not whole_exif:
                block = head + _read_exact(f, payload - len(head))
                found = exif_orientation(block)
                if found is not None:
                    orientation = orientation or found
                    continue
                digest.update(b"\xff" + marker + length_bytes + block)
                continue
            digest.update(b"\xff" + marker + length_bytes + head)
            _hash_copy(f, digest, payload - len(head))
            continue
        digest.update(b"\xff" + marker + length_bytes)
        _hash_copy(f, digest, payload)
        if code == 0xDA:                              # start of scan: the rest is image
            _hash_copy(f, digest, None)
            return orientation or 1


def _hash_png(f, size: int, digest, whole_exif: bool) -> int:
    """Hash a PNG's image chunks; returns the orientation its eXIf chunk gives."""
    signature = _read_exact(f, 8)
    if signature != PNG_SIGNATURE:
        raise _NotThatFormat
    digest.update(signature)
    orientation = None
    while True:
        header = f.read(8)
        if not header:
            return orientation or 1
        if len(header) != 8:
            raise _NotThatFormat
        length, chunk_type = struct.unpack(">I4s", header)
        if f.tell() + length + 4 > size or not chunk_type.isalpha():
            raise _NotThatFormat
        if chunk_type in _PNG_METADATA_CHUNKS:
            f.seek(length + 4, os.SEEK_CUR)
            continue
        if chunk_type == b"eXIf" and not whole_exif and length <= _EXIF_MAX_BYTES:
            block = _read_exact(f, length + 4)        # with its CRC
            found = exif_orientation(block[:-4])
            if found is not None:
                orientation = orientation or found
                continue
            digest.update(header + block)
            continue
        digest.update(header)
        _hash_copy(f, digest, length + 4)


# Names that are not UTF-8: see state_json_bytes.

def _is_surrogate(c: str) -> bool:
    return "\ud800" <= c <= "\udfff"


def imgur_name(name: str) -> str:
    """The name as Imgur is sent it: the file's name, each byte that was not UTF-8 (a
    lone surrogate) replaced by U+FFFD."""
    if name.isascii():
        return name
    return "".join("\ufffd" if _is_surrogate(c) else c for c in name)


def sent_as_note(name: str) -> str:
    """For a message about an upload: the name Imgur was sent, when it is not the file's."""
    sent = imgur_name(name)
    return "" if sent == name else "; its name is not UTF-8 and was sent as %r" % sent


# Captions (README, "Captions"): what a camera writes on its own is no caption. Compared
# case-insensitively with runs of white space made one space.
CAMERA_BOILERPLATE = frozenset(text.casefold() for text in (
    "OLYMPUS DIGITAL CAMERA", "SONY DSC", "DCIM", "DIGITAL CAMERA",
    "KODAK Digital Still Camera", "KONICA MINOLTA DIGITAL CAMERA",
    "MINOLTA DIGITAL CAMERA", "SAMSUNG CAMERA PICTURES", "SAMSUNG DIGITAL CAMERA",
    "LEICA DIGITAL CAMERA", "Default", "Untitled", "Camera", "Picture", "Image"))
_CAPTION_MAX_BYTES = 64 * 1024           # metadata blocks read for a caption, at most
_XMP_DC = "{http://purl.org/dc/elements/1.1/}"
_XMP_RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


def read_caption(path: str, extension: str) -> str:
    """The photo's own caption: XMP dc:description, else IPTC Caption-Abstract, else
    EXIF ImageDescription, camera boilerplate left out; "" when it has none (or the file
    does not parse). Only the metadata blocks are read."""
    blocks = {"xmp": None, "iptc": None, "exif": None}
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if extension in ("jpg", "jpeg", "jpe"):
                _jpeg_metadata(f, size, blocks)
            elif extension in ("png", "apng"):
                _png_metadata(f, size, blocks)
    except (_NotThatFormat, struct.error, zlib.error):
        pass
    for source, parse in (("xmp", _xmp_description), ("iptc", _iptc_caption),
                          ("exif", _exif_description)):
        if blocks[source] is None:
            continue
        try:
            caption = clean_caption(parse(blocks[source]))
        except (struct.error, ValueError, IndexError, SyntaxError):
            continue                     # a damaged block says nothing: the next one
        if caption:
            return caption
    return ""


def _jpeg_metadata(f, size: int, blocks: dict) -> None:
    """The first XMP, APP13 and EXIF blocks of a JPEG, up to its image data."""
    if _read_exact(f, 2) != b"\xff\xd8":
        raise _NotThatFormat
    while True:
        marker = _read_exact(f, 2)
        if marker[0] != 0xFF or marker[1] in (0xD9, 0xDA):
            return
        if 0xD0 <= marker[1] <= 0xD7 or marker[1] in (0x01, 0xFF):
            continue
        (length,) = struct.unpack(">H", _read_exact(f, 2))
        payload = length - 2
        if payload < 0 or f.tell() + payload > size:
            raise _NotThatFormat
        if marker[1] in (0xE1, 0xED) and payload <= _CAPTION_MAX_BYTES:
            data = _read_exact(f, payload)
            if marker[1] == 0xED:
                blocks["iptc"] = blocks["iptc"] or data
            elif data.startswith(_JPEG_XMP_HEADERS[0]):
                blocks["xmp"] = blocks["xmp"] or data[len(_JPEG_XMP_HEADERS[0]):]
            elif data.startswith(_JPEG_EXIF_HEADER):
                blocks["exif"] = blocks["exif"] or data
        else:
            f.seek(payload, os.SEEK_CUR)


def _png_metadata(f, size: int, blocks: dict) -> None:
    """A PNG's XMP (iTXt XML:com.adobe.xmp) and eXIf chunks."""
    if _read_exact(f, 8) != PNG_SIGNATURE:
        raise _NotThatFormat
    while True:
        header = f.read(8)
        if len(header) != 8:
            return
        length, chunk_type = struct.unpack(">I4s", header)
        if f.tell() + length + 4 > size:
            raise _NotThatFormat
        if chunk_type in (b"iTXt", b"eXIf") and length <= _CAPTION_MAX_BYTES:
            data = _read_exact(f, length)
            f.seek(4, os.SEEK_CUR)
            if chunk_type == b"eXIf":
                blocks["exif"] = blocks["exif"] or data
            elif data.startswith(_PNG_XMP_KEYWORD + b"\x00"):
                blocks["xmp"] = blocks["xmp"] or _itxt_text(data)
        else:
            f.seek(length + 4, os.SEEK_CUR)


def _itxt_text(data: bytes) -> bytes:
    """The text of an iTXt chunk: keyword, flag, method, language, translated keyword."""
    _, _, rest = data.partition(b"\x00")
    compressed, rest = rest[:1] == b"\x01", rest[2:]
    _, _, rest = rest.partition(b"\x00")                 # language
    _, _, text = rest.partition(b"\x00")                 # translated keyword
    return zlib.decompressobj().decompress(text, _CAPTION_MAX_BYTES) if compressed else text


def _decode_text(data: bytes) -> str:
    """Metadata text: UTF-8 when it is, else Latin-1 (what older tools wrote)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _xmp_description(packet: bytes) -> str:
    """dc:description of an XMP packet: its x-default entry, else its first."""
    import xml.etree.ElementTree as ElementTree
    start = packet.find(b"<x:xmpmeta")
    if start < 0:
        start = packet.find(b"<rdf:RDF")
    end_tag = b"</x:xmpmeta>" if packet[start:start + 10] == b"<x:xmpmeta" else b"</rdf:RDF>"
    end = packet.rfind(end_tag)
    if start < 0 or end < 0:
        return ""
    try:
        root = ElementTree.fromstring(packet[start:end + len(end_tag)])
    except ElementTree.ParseError:
        return ""
    for element in root.iter():
        if _XMP_DC + "description" in element.attrib:
            return element.attrib[_XMP_DC + "description"]
        if element.tag != _XMP_DC + "description":
            continue
        entries = list(element.iter(_XMP_RDF + "li"))
        for entry in entries:
            if entry.get(_XML_LANG) == "x-default":
                return entry.text or ""
        return (entries[0].text if entries else element.text) or ""
    return ""


def _iptc_caption(app13: bytes) -> str:
    """IPTC Caption-Abstract (record 2, dataset 120) of a Photoshop APP13 block."""
    if not app13.startswith(b"Photoshop 3.0\x00"):
        return ""
    at = 14
    while at + 12 <= len(app13) and app13[at:at + 4] == b"8BIM":
        (resource,) = struct.unpack(">H", app13[at + 4:at + 6])
        name_length = 1 + app13[at + 6]
        at += 6 + name_length + name_length % 2
        (length,) = struct.unpack(">I", app13[at:at + 4])
        block = app13[at + 4:at + 4 + length]
        if resource == 0x0404:                        # IPTC-NAA
            return _iim_caption(block)
        at += 4 + length + length % 2
    return ""


def _iim_caption(block: bytes) -> str:
    at, caption, utf8 = 0, None, False
    while at + 5 <= len(block) and block[at] == 0x1C:
        record, dataset = block[at + 1], block[at + 2]
        (length,) = struct.unpack(">H", block[at + 3:at + 5])
        if length & 0x8000:                           # an extended length: no caption
            break
        value = block[at + 5:at + 5 + length]
        if (record, dataset) == (1, 90):              # coded character set
            utf8 = value == b"\x1b%G"
        elif (record, dataset) == (2, 120) and caption is None:
            caption = value
        at += 5 + length
    if caption is None:
        return ""
    return caption.decode("utf-8", "replace") if utf8 else _decode_text(caption)


def _exif_description(block: bytes) -> str:
    ifd = _tiff_ifd0(_exif_body(block))
    if ifd is None:
        return ""
    kind, value = ifd[1].get(_TIFF_IMAGE_DESCRIPTION, (2, b""))
    return _decode_text(value.split(b"\x00", 1)[0]) if kind in (1, 2, 7) else ""


def clean_caption(text: str) -> str:
    """A caption as it is sent: white space around it trimmed; "" for a blank one, one
    without a letter or digit, or camera boilerplate (CAMERA_BOILERPLATE)."""
    text = text.replace("\x00", " ").strip()
    words = " ".join(text.split()).casefold()
    if not any(c.isalnum() for c in words) or words in CAMERA_BOILERPLATE:
        return ""
    return text


def file_extension(name: str) -> str:
    return os.path.splitext(name)[1][1:].lower()


def _is_hidden(name: str, st: os.stat_result) -> bool:
    if name.startswith("."):
        return True
    attributes = getattr(st, "st_file_attributes", 0)     # Windows only
    return bool(attributes & (getattr(stat, "FILE_ATTRIBUTE_HIDDEN", 2)
                              | getattr(stat, "FILE_ATTRIBUTE_SYSTEM", 4)))


def _stat_problem(entry, error: OSError) -> str:
    """Why a directory entry could not be looked at, in the user's words."""
    if entry.is_symlink():
        return "symbolic link loop" if error.errno == errno.ELOOP else "broken symbolic link"
    return error.strerror or str(error)


def _size_limit(extension: str) -> int:
    return MAX_GIF_BYTES if extension == "gif" else MAX_IMAGE_BYTES


NEAR_LAST_SCAN = "modified near the last scan"        # a reason to read a file (-v)


def scan_folder(folder: str, known: dict, scanned_at_ns: int, rehash_all: bool = False,
                read_now: bool = True, old_hashes: bool = False, captions: bool = False,
                verify_captions: bool = False) -> FolderScan:
    """List a folder's eligible files (README, "Which files"), hashing only what may have changed.

    known: name -> FileRecord from the state; a file whose size, mtime_ns and inode
    match, and whose mtime is not within 2 s of the last scan, keeps its hash unread.
    With read_now False the files to hash are left in `to_read` (read_files hashes
    them), so that the hashing of every folder can show its total from the start.
    A record of the previous hash definition is re-hashed (its old hash is then the
    record's); with `old_hashes` (the state still holds such records) every file read
    gets both hashes, so that it matches records of either definition.
    `captions`: read the caption of every file read; `verify_captions` (a --verify run)
    also that of unread files whose record has no caption yet.
    """
    scan = FolderScan(folder)
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        scan.error = "folder not found"
        return scan
    except OSError as e:
        scan.error = "cannot list the folder: %s" % (e.strerror or e)
        return scan
    # Files modified before this are trusted on their stat data; later ones may have
    # changed within the file system's clock resolution and are read again.
    trust_before = scanned_at_ns - COARSE_MTIME_NS if scanned_at_ns else 1 << 62
    known_record = known.get if not rehash_all else {}.get
    files, trusted, make = scan.files, 0, tuple.__new__
    for entry in entries:
        name = entry.name
        record = known_record(name)
        if record is not None:
            # The fast path of a no-op run: the file we hashed before, unread and
            # unchecked (its name passed every check when it was first synced), when
            # its size, mtime and inode are those recorded. Written for speed (one
            # tuple compare; the ScannedFile made without a Python-level __new__): a
            # no-op run does this for every file of the library.
            try:
                st = entry.stat()                        # cached: the slow path reuses it
            except OSError:
                st = None
            if st is not None and (st.st_size, st.st_mtime_ns, st.st_ino, HASH_VERSION) \
                    == record[2:6] and st.st_mtime_ns < trust_before \
                    and not (IS_WINDOWS and _is_hidden(name, st)):
                caption = None
                if verify_captions and record.caption is None:
                    caption = _caption_or_none(entry.path, file_extension(name))
                files[name] = make(ScannedFile, (name, entry.path, st.st_size,
                                                 st.st_mtime_ns, st.st_ino, record[1], None,
                                                 caption))
                trusted += 1
                continue
        if name.startswith(DOWNLOAD_PART_PREFIX) and name.endswith(DOWNLOAD_PART_SUFFIX):
            scan.leftovers.append(entry.path)            # a download a crash cut short
            continue
        try:
            st = entry.stat()                            # follows symbolic links
        except OSError as e:
            if file_extension(name) in IMAGE_EXTENSIONS and not name.startswith("."):
                scan.unreadable.append((name, _stat_problem(entry, e)))
            continue                    # (a broken link to a non-photo is no concern)
        record = known.get(name)
        if not stat.S_ISREG(st.st_mode):
            if stat.S_ISDIR(st.st_mode):
                scan.skipped_names.append(name + os.sep + " (a subfolder: only the top "
                                                          "level is synced)")
            continue
        extension = file_extension(name)
        if _is_hidden(name, st):
            scan.skipped["hidden"] += 1
            scan.skipped_names.append(name + " (hidden)")
            continue
        if extension not in IMAGE_EXTENSIONS:
            scan.skipped["." + extension if extension else "no extension"] += 1
            scan.skipped_names.append(name)
            continue
        if st.st_size > _size_limit(extension):
            scan.skipped["too large"] += 1
            scan.skipped_names.append("%s (%.1f MB, over Imgur's %d MB limit)" % (
                name, st.st_size / 1e6, _size_limit(extension) // 1000000))
            continue
        if st.st_size == 0:
            scan.skipped["empty"] += 1
            scan.skipped_names.append(name + " (empty file)")
            continue
        same_stat = (record is not None and record.size == st.st_size
                     and record.mtime_ns == st.st_mtime_ns and record.inode == st.st_ino)
        trusted_stat = same_stat and bool(record.hash) and not rehash_all \
            and st.st_mtime_ns < trust_before
        if trusted_stat and record.hash_version == HASH_VERSION:      # (Windows, hidden)
            caption = None
            if verify_captions and record.caption is None:
                caption = _caption_or_none(entry.path, extension)
            scan.files[name] = ScannedFile(name, entry.path, st.st_size, st.st_mtime_ns,
                                           st.st_ino, record.hash, None, caption)
            continue
        why = ("new" if record is None else "not read before" if not record.hash
               else "size changed" if record.size != st.st_size
               else "modified" if record.mtime_ns != st.st_mtime_ns
               else "inode changed" if record.inode != st.st_ino
               else "--rehash" if rehash_all
               else "hash definition changed" if trusted_stat
               else NEAR_LAST_SCAN)
        # Unchanged stat data vouch for the old hash of a record of the previous
        # definition: only the new one is read (the migration, README "Which files").
        scan.to_read.append(ToRead(name, entry.path, st.st_size, st.st_mtime_ns,
                                   st.st_ino, extension, why,
                                   record.hash if trusted_stat else None))
    scan.trusted = trusted
    if read_now:
        read_files(scan, _NoProgress(), old_hashes, captions)
    scan.skipped_names.sort()
    return scan


def read_files(scan: FolderScan, progress, old_hashes: bool = False,
               captions: bool = False) -> None:
    """Hash the files the scan left to read (both definitions while the state still holds
    old ones; the caption too with `captions`); one that cannot be read is listed as such."""
    for file in scan.to_read:
        shown = progress.item(os.path.join(os.path.basename(scan.folder), file.name),
                              file.size)
        old, caption = file.old_hash, None
        try:
            content = content_hash(file.path, file.extension)
            if old is None and old_hashes:
                old = content_hash(file.path, file.extension, OLD_HASH_VERSION)
            if captions:
                caption = read_caption(file.path, file.extension)
        except OSError as e:
            scan.unreadable.append((file.name, e.strerror or str(e)))
            content = None
        else:
            scan.rehashed += 1
            scan.read.append((file.name, file.why))
            if file.why == NEAR_LAST_SCAN:
                scan.near_last_scan.append(file.mtime_ns)
        finally:
            shown.update(file.size)
            shown.close()
        scan.files[file.name] = ScannedFile(file.name, file.path, file.size, file.mtime_ns,
                                            file.inode, content, old, caption)
    scan.to_read = []
    scan.unreadable.sort()


def _caption_or_none(path: str, extension: str) -> str | None:
    """The caption of a file not otherwise read this run; None if it cannot be read."""
    try:
        return read_caption(path, extension)
    except OSError:
        return None


###############################################################################
# Targets: which album each albums.txt line syncs with. This reads the disk (real
# paths, and folders' inodes, to tell two spellings of one folder apart), so it runs
# before the planner, which then needs nothing but what it is given.
###############################################################################

def target_conflicts(targets: list, key_of: Callable[[str], str] = None) -> list:
    """(line number, message) for lines that, once settled, name one album or folder
    twice (a bare PATH the state links to album X, and a line naming X, say)."""
    key_of = key_of or folder_identity
    errors, by_album, by_folder = [], {}, {}
    for target in targets:
        number = target.line.number
        if target.album_id:
            if target.album_id in by_album:
                errors.append((number, "same album as line %d" % by_album[target.album_id]))
            by_album.setdefault(target.album_id, number)
        if target.folder:
            key = key_of(target.folder)
            if key in by_folder and by_folder[key] != number:
                errors.append((number, "same folder as line %d" % by_folder[key]))
            by_folder.setdefault(key, number)
    return errors


def settle_targets(lines: list, state: StateStore, scans: dict,
                   key_of: Callable[[str], str] = folder_key) -> list:
    """Decide which album each listed line syncs with (README, "Existing albums":
    continuations and takeovers): a recorded album or folder continues; a new folder
    whose content is at least 90 % of an unlisted folder's takes over that album; else
    a new album."""
    album_of_folder = {key_of(a.folder): album_id for album_id, a in state.albums.items()}
    pending_folders = {key_of(p["folder"]) for p in state.pending if p["op"] == "create_album"}
    targets, deferred = [], []
    for line in lines:
        if line.kind == "link":
            if line.album_id in state.albums:
                moved = key_of(state.albums[line.album_id].folder) != key_of(line.path)
                targets.append(Target(line, line.path, "sync", line.album_id, retitle=moved))
            else:
                targets.append(Target(line, line.path, "link", line.album_id))
        elif line.kind == "album":
            album = state.albums.get(line.album_id)
            if album is not None:
                targets.append(Target(line, album.folder, "sync", line.album_id))
            else:
                targets.append(Target(line, "", "download", line.album_id))
        else:
            album_id = album_of_folder.get(key_of(line.path))
            if album_id is not None:
                targets.append(Target(line, line.path, "sync", album_id))
            elif key_of(line.path) in pending_folders:
                targets.append(Target(line, line.path, "create", None))
            else:
                deferred.append(line)
    claimed = {t.album_id for t in targets}
    for line in deferred:
        album_id = _takeover_candidate(scans.get(line.path), state, claimed)
        if album_id is not None:
            claimed.add(album_id)
            targets.append(Target(line, line.path, "sync", album_id, retitle=True))
        else:
            targets.append(Target(line, line.path, "create", None))
    targets.sort(key=lambda t: t.line.number)
    return targets


def _takeover_candidate(scan: FolderScan | None, state: StateStore, claimed: set):
    if scan is None or not scan.files:
        return None
    hashes = set().union(*(content_keys(f) for f in scan.files.values()))
    best, best_ratio = None, TAKEOVER_MATCH
    for album_id, album in sorted(state.albums.items()):
        if album_id in claimed or not album.files:
            continue
        matched = sum(1 for record in album.files.values() if record_key(record) in hashes)
        ratio = matched / len(album.files)
        if ratio >= best_ratio:
            best, best_ratio = album_id, ratio
    return best


###############################################################################
# Planner: a pure function from the targets, state and scans (+ what Imgur said) to
# actions. No I/O: the executor does everything, and --dry-run prints the same plan.
###############################################################################

def content_keys(found: ScannedFile) -> set:
    """What a scanned file's content is known by: (hash version, hash) pairs, the
    previous definition's too while the state holds records of it."""
    keys = {(HASH_VERSION, found.hash)} if found.hash else set()
    if found.old_hash:
        keys.add((OLD_HASH_VERSION, found.old_hash))
    return keys


def record_key(record: FileRecord) -> tuple:
    return (record.hash_version, record.hash)


def content_matches(found: ScannedFile | None, record: FileRecord) -> bool:
    """Whether a scanned file has the content a record was made of, by the record's
    own hash definition."""
    if found is None:
        return False
    if record.hash_version == HASH_VERSION:
        return found.hash is not None and found.hash == record.hash
    return found.old_hash is not None and found.old_hash == record.hash


def caption_changed(found: ScannedFile, record: FileRecord) -> bool:
    """The photo's own caption (read: captions are on) is not the one the image's
    description is in line with. An unknown one (None) waits for a --verify run."""
    return found.caption is not None and record.caption is not None \
        and found.caption != record.caption


def carried_record(record: FileRecord, found: ScannedFile) -> FileRecord:
    """A record following its content to a new name or album: hashed by the current
    definition; its caption forgotten when the file was read while captions were off
    (it may have changed unseen) or changes now (the caption update that follows may
    be held back: a --verify run then brings it in line)."""
    forget = caption_changed(found, record) or (
        found.caption is None and (found.size, found.mtime_ns, found.inode) != record[2:5])
    return record._replace(hash=found.hash, hash_version=HASH_VERSION,
                           caption=None if forget else record.caption)


@dataclasses.dataclass
class PlanOptions:
    force: bool = False
    max_delete: int | None = None
    verify: bool = False
    command: str = "imgurbox.py"       # how hints name this imgurbox (command_line())


class _Vanished(NamedTuple):
    target: Target
    name: str
    record: FileRecord
    still_there: bool                 # the name is still there, with other content


class _New(NamedTuple):
    target: Target
    file: ScannedFile


def plan_sync(targets: list, scans: dict, state: StateStore, remote: dict,
              options: PlanOptions) -> Plan:
    """Every action this run should take, in execution order (README, "Changes and what they do on
    Imgur")."""
    plan = Plan(targets)
    for target in targets:
        album = state.albums.get(target.album_id or "")
        wants_listing = target.mode in ("link", "download") or (
            target.mode == "sync" and (options.verify or (album and album.incomplete)))
        if wants_listing and target.album_id not in remote:
            plan.needs_remote.add(target.album_id)

    pairable = _available_targets(targets, scans, state, options, plan, remote)
    vanished, new, captions = _differences(pairable, scans, state, plan)
    changes = _pair(vanished, new, state, plan) + captions
    album_actions, link_actions = [], []
    for target in targets:
        album_actions.extend(_album_actions(target, state))
        if target.mode in ("link", "download") and target.album_id in remote:
            link_actions.extend(_link_actions(target, remote[target.album_id],
                                              scans.get(target.folder), plan))
    verify_actions = []
    pairable_ids = {id(t) for t in pairable}
    for target in targets:
        # --verify, or downloads an earlier run left undone; another account's album
        # only gets its downloads.
        album = state.albums.get(target.album_id or "")
        scan = scans.get(target.folder)
        if target.mode != "sync" or target.album_id not in remote or album is None \
                or not remote[target.album_id].found or remote[target.album_id].error \
                or not (options.verify or album.incomplete) or scan is None or scan.error \
                or not (id(target) in pairable_ids or album.download_only):
            continue
        found = _verify_actions(target, remote[target.album_id], scan, state, changes, plan)
        verify_actions.extend(a for a in found
                              if not album.download_only or isinstance(a, Download))
    changes = _delete_guard(changes, pairable, scans, state, options, plan)
    purges = [PurgeReplaced(album_id, image_id=image_id)
              for album_id, album in sorted(state.albums.items())
              for image_id in album.to_delete]
    plan.actions = _in_execution_order(album_actions + link_actions + changes
                                       + verify_actions + purges)
    return plan


def _available_targets(targets, scans, state, options, plan, remote) -> list:
    """Targets whose folders can be synced; the rest are reported unavailable."""
    candidates = [t for t in targets if t.mode in ("sync", "create")]
    moved_in = None                       # content new to its folder, once a folder is empty
    available = []
    for target in candidates:
        scan = scans.get(target.folder)
        album = state.albums.get(target.album_id) if target.album_id else None
        if scan is None or scan.error:
            reason = scan.error if scan else "not scanned"
            plan.errors.append((target.folder, "unavailable (%s): nothing deleted or "
                                "uploaded for it this run. If you deleted it on purpose, "
                                "remove line %d of albums.txt to stop syncing it (its album "
                                "stays on Imgur); if it is on a drive, reconnect the drive; "
                                "if the folder moved, put its new path on line %d"
                                % (reason, target.line.number, target.line.number)))
            continue
        problem = _remote_problem(target, remote[target.album_id]) \
            if target.album_id in remote else None
        if problem:                                   # --verify found the album gone
            plan.errors.append((target.folder, problem))
            continue
        if album is not None and album.download_only:
            # Stat data and hash definitions are recorded all the same (into `plan`).
            if any(_differences([target], scans, state, plan)):
                plan.notes.append((target.folder, "album %s is another account's "
                                   "(download-only): local changes are not uploaded"
                                   % target.album_id))
            continue
        recorded = album.files if album is not None else {}
        if recorded and not scan.files and not scan.unreadable and not options.force:
            if moved_in is None:
                moved_in = _new_content(candidates, scans, state)
            # Only content that turned up as *new* elsewhere says "moved": a copy synced
            # in another folder all along says nothing about this one.
            if not any(record_key(r) in moved_in for r in recorded.values()):
                plan.errors.append((target.folder, "unavailable: the folder holds no "
                                    "photo while %d are synced (an unmounted drive?); "
                                    "nothing deleted. If you emptied it on purpose, run "
                                    "`%s --force`" % (len(recorded), options.command)))
                continue
        available.append(target)
    return available


def _new_content(targets, scans, state) -> set:
    """Hashes of files new to their folder, renames within it left out: content that
    may have moved in from another folder."""
    content = set()
    for target in targets:
        scan = scans.get(target.folder)
        album = state.albums.get(target.album_id) if target.album_id else None
        recorded = album.files if album is not None else {}
        if scan is None:
            continue
        gone_here = {record_key(record) for name, record in recorded.items()
                     if not content_matches(scan.files.get(name), record)}
        for name, found in scan.files.items():
            record = recorded.get(name)
            keys = content_keys(found)
            if keys and (record is None or not content_matches(found, record)) \
                    and not keys & gone_here:
                content |= keys
    return content


def _differences(targets, scans, state, plan):
    """Recorded files whose content is gone from their name, files not yet synced, and
    caption updates of files whose content stayed (UpdateCaption)."""
    vanished, new, captions = [], [], []
    for target in targets:
        scan = scans[target.folder]
        album = state.albums.get(target.album_id) if target.album_id else None
        recorded = album.files if album is not None else {}
        if scan.trusted == len(recorded) == len(scan.files):
            continue                      # every file as recorded: nothing to compare
        for name, record in recorded.items():
            found = scan.files.get(name)
            if found is not None and (found.hash is None or content_matches(found, record)):
                if found.hash and caption_changed(found, record):
                    # Its stat data are recorded with the update: held back or failed,
                    # the file is read again next run and the update planned again.
                    captions.append(UpdateCaption(target.album_id, file=found,
                                                  caption=found.caption))
                elif found.hash and ((found.size, found.mtime_ns, found.inode) != record[2:5]
                                     or record.hash_version != HASH_VERSION):
                    plan.stat_updates.append((target.album_id, found))
                continue
            vanished.append(_Vanished(target, name, record, found is not None))
        for name, found in scan.files.items():
            record = recorded.get(name)
            if found.hash is not None and (record is None or not content_matches(found, record)):
                new.append(_New(target, found))
    vanished.sort(key=lambda v: (v.target.folder, v.name))
    new.sort(key=lambda n: (n.target.folder, n.file.name))
    return vanished, new, captions


def _pair(vanished, new, state, plan) -> list:
    """Renames first (same folder), then moves (another scanned folder), then the rest
    as replacements, deletions and uploads. Pairs are taken in sorted path order."""
    by_hash = collections.defaultdict(list)           # (version, hash) -> new files
    for candidate in new:
        for key in content_keys(candidate.file):
            by_hash[key].append(candidate)
    taken, paired, actions = set(), set(), []
    moves = {}                                        # (source, destination) -> Move

    def take(v, same_folder):
        for candidate in by_hash.get(record_key(v.record), ()):
            if id(candidate) in taken or (candidate.target is v.target) != same_folder:
                continue
            taken.add(id(candidate))
            paired.add(id(v))
            return candidate
        return None

    def caption_update(album_key, v, found):
        if caption_changed(found, v.record):
            actions.append(UpdateCaption(album_key, file=found, caption=found.caption))

    for v in vanished:
        candidate = take(v, same_folder=True)
        if candidate:
            actions.append(Rename(v.target.album_id, old_name=v.name, file=candidate.file,
                                  record=carried_record(v.record, candidate.file)))
            caption_update(v.target.album_id, v, candidate.file)
    for v in vanished:
        if id(v) in paired:
            continue
        candidate = take(v, same_folder=False)
        if candidate:
            pair = (v.target.album_id, candidate.target.key)
            if pair not in moves:
                moves[pair] = Move(candidate.target.key, source=v.target.album_id)
                actions.append(moves[pair])
            moves[pair].items.append(MoveItem(v.record.image_id, v.name, candidate.file,
                                              carried_record(v.record, candidate.file)))
            caption_update(candidate.target.key, v, candidate.file)
    new_at = {(n.target.key, n.file.name): n for n in new}
    for v in vanished:
        if id(v) in paired:
            continue
        replacement = new_at.get((v.target.key, v.name)) if v.still_there else None
        if replacement is not None and id(replacement) not in taken:
            taken.add(id(replacement))
            actions.append(Upload(v.target.album_id, file=replacement.file,
                                  replaces=v.record.image_id))
        else:
            actions.append(Delete(v.target.album_id, name=v.name,
                                  image_id=v.record.image_id))
    for candidate in new:
        if id(candidate) in taken:
            continue
        if candidate.file.hash in state.refused or candidate.file.old_hash in state.refused:
            plan.refused.append((candidate.target.folder, candidate.file.name))
            continue
        actions.append(Upload(candidate.target.key, file=candidate.file))
    return actions


def _album_actions(target: Target, state: StateStore) -> list:
    if target.mode == "create":
        return [CreateAlbum(target.key, folder=target.folder,
                            title=os.path.basename(target.folder))]
    if target.mode == "sync" and target.retitle:
        title = os.path.basename(target.folder)
        album = state.albums[target.album_id]
        if album.title != title and not album.download_only:
            return [RetitleAlbum(target.album_id, title=title)]
    return []


def _remote_problem(target: Target, remote: RemoteAlbum) -> str | None:
    """Why an album Imgur was asked about cannot be synced this run, if it cannot."""
    if remote.error:
        return "album %s could not be read from Imgur (%s); skipped this run" % (
            remote.album_id, remote.error)
    if remote.found:
        return None
    if target.mode in ("link", "sync"):
        return ("album %s was not found on Imgur: remove ' -> ...' from line %d of "
                "albums.txt to have a new album created for this folder"
                % (remote.album_id, target.line.number))
    return ("album %s was not found on Imgur: check the ID or URL, or remove the line "
            "(for a folder named %s, write ./%s)" % (remote.album_id, remote.album_id,
                                                      remote.album_id))


def _link_actions(target: Target, remote: RemoteAlbum, scan, plan) -> list:
    """First link of a folder to an existing album: adopt images whose name matches a
    local file, download the remote-only ones, upload the local-only ones. No deletes."""
    problem = _remote_problem(target, remote)
    if problem:
        where = target.folder if target.mode == "link" else \
            "%s:%d" % (ALBUMS_FILE, target.line.number)
        plan.errors.append((where, problem))
        return []
    actions = [LinkAlbum(remote.album_id, folder=target.folder, title=remote.title or "",
                         owner=remote.owner, download_only=not remote.owned)]
    # Names compared in NFC: macOS file systems hand back decomposed names (NFD).
    local = {unicodedata.normalize("NFC", imgur_name(name)): found
             for name, found in (scan.files.items() if scan is not None else ())}
    for image in sorted(remote.images, key=lambda i: (i.datetime, i.image_id)):
        match = local.pop(unicodedata.normalize("NFC", image.name), None) if image.name else None
        if match is not None and match.hash is not None:
            actions.append(Adopt(remote.album_id, file=match, image_id=image.image_id,
                                 link=image.link))
        else:
            actions.append(Download(remote.album_id, folder=target.folder, image=image))
    if remote.owned:
        for _, found in sorted(local.items()):
            if found.hash is not None:
                actions.append(Upload(remote.album_id, file=found))
    return actions


def _verify_actions(target, remote, scan, state, changes, plan) -> list:
    """--verify: repair recorded images missing from the album; download images that
    were added on Imgur; record the links not recorded yet, and bring in line the
    descriptions of images whose caption is not known (captions on): an update where
    the photo has a caption Imgur does not show, else only a note in the state."""
    album = state.albums[target.album_id]
    busy = {a.old_name for a in changes if isinstance(a, Rename)}
    busy.update(a.name for a in changes if isinstance(a, Delete))
    busy.update(i.old_name for a in changes if isinstance(a, Move) for i in a.items)
    busy.update(a.file.name for a in changes if isinstance(a, Upload) and a.replaces)
    present = {image.image_id: image for image in remote.images}
    actions = [Repair(target.album_id, name=name, record=record, file=scan.files.get(name))
               for name, record in sorted(album.files.items())
               if record.image_id not in present and name not in busy]
    captioned = {a.file.name for a in changes if isinstance(a, UpdateCaption)}
    for name, record in sorted(album.files.items()):
        image, found = present.get(record.image_id), scan.files.get(name)
        if image is None or name in busy or name in captioned:
            continue
        learnt = {"link": image.link} if not record.link and image.link else {}
        if record.caption is None and found is not None and found.caption is not None \
                and content_matches(found, record) and not album.download_only:
            # A photo without a caption of its own never clears a description it did
            # not send (one set on imgur.com, or a downloaded image's).
            if found.caption and found.caption != (image.description or ""):
                actions.append(UpdateCaption(target.album_id, file=found,
                                             caption=found.caption))
            else:
                learnt["caption"] = found.caption
        if learnt:
            plan.learnt.append((target.album_id, name, record.image_id, learnt))
    known = state.known_image_ids()
    for image in sorted(remote.images, key=lambda i: (i.datetime, i.image_id)):
        if image.image_id not in known:
            actions.append(Download(target.album_id, folder=target.folder, image=image))
    return actions


def _delete_guard(actions, targets, scans, state, options, plan) -> list:
    """In an album of 4+ files, deletions (or replacements) touching more than half of
    them are all held back, unless --max-delete N allows that many or --force."""
    kept = []
    by_album = collections.defaultdict(list)
    for action in actions:
        by_album[action.album].append(action)
    folders = {t.key: t.folder for t in targets}
    for album_key, album_actions in by_album.items():
        album = state.albums.get(album_key)
        recorded = len(album.files) if album is not None else 0
        folder = folders.get(album_key, album_key)
        held = set()
        for label, kind in (("deletions", Delete), ("replacements", Upload)):
            group = [a for a in album_actions
                     if isinstance(a, kind) and (kind is Delete or a.replaces)]
            if not group or _guard_allows(len(group), recorded, options):
                continue
            held.update(map(id, group))
            plan.held.append(Held(album_key, folder, "%d %s of %d synced files is more "
                                  "than half: none done. If this is intended, run `%s "
                                  "--max-delete %d`" % (len(group), label, recorded,
                                                        options.command, len(group)), group))
        scan = scans.get(folder)
        if scan is not None and scan.unreadable:
            deletes = [a for a in album_actions
                       if isinstance(a, Delete) and id(a) not in held]
            if deletes:
                held.update(map(id, deletes))
                plan.held.append(Held(album_key, folder, "files could not be read: no "
                                      "deletions in this folder this run", deletes))
        kept.extend(a for a in album_actions if id(a) not in held)
    return kept


def _guard_allows(count: int, recorded: int, options: PlanOptions) -> bool:
    if options.force or recorded < DELETE_GUARD_MIN_FILES or count * 2 <= recorded:
        return True
    return options.max_delete is not None and count <= options.max_delete


def _in_execution_order(actions: list) -> list:
    """Albums first, then local bookkeeping, downloads, uploads (per album in file-name
    order), moves, repairs; deletions last, once everything else has been tried."""
    def key(action):
        name = getattr(getattr(action, "file", None), "name", "") or getattr(action, "name", "")
        return (action.order, action.album if isinstance(action, Upload) else "",
                name)
    return sorted(actions, key=key)


###############################################################################
# Output, log and secrets
###############################################################################

_SECRETS: set = set()


def register_secret(value) -> None:
    """Remember a token or secret so that no message ever shows it."""
    if isinstance(value, str) and len(value) >= 4:
        _SECRETS.add(value)


# What text from outside (Imgur's titles, names and messages; file and folder names; a
# user's albums.txt) may never carry to a terminal or log.txt: C0 controls (ESC opens
# every terminal escape: CSI, OSC 52 clipboard writes, window titles; CR and LF would
# overwrite or forge a line), DEL, C1 controls (U+009B is a CSI on its own to some
# terminals), the bidi overrides, isolates and marks that make a name read backwards,
# the Unicode line separators, and lone surrogates (the bytes of a name that is not
# UTF-8). README, "Command line": how they are shown.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029"
                          "\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match) -> str:
    char = match.group()
    code = ord(char)
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    if 0xDC80 <= code <= 0xDCFF:                # os.fsdecode's stand-in for byte 0x80-0xff
        return "\\x%02x" % (code - 0xDC00)
    return "\\x%02x" % code if code < 0x100 else "\\u%04x" % code


def printable(text) -> str:
    """Text from outside with every control character shown escaped (`\\x1b`, `\\n`,
    `\\u202e`), so that it can never move the cursor, retitle the terminal, write the
    clipboard or forge a line. Idempotent; Output and Log apply it to all they write."""
    text = str(text)
    return text if text.isprintable() else _UNPRINTABLE.sub(_escape, text)


def redact(text: str) -> str:
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


class Log:
    """log.txt: one line per remote operation and per error, rotated before 1 MiB."""

    def __init__(self, home: str):
        self.path = os.path.join(home, LOG_FILE)
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        # Redacted before it is cut, so that no cut leaves part of a secret in the clear;
        # escaped (printable), so that one entry is one line and carries no control.
        text = printable(redact(text))
        if len(text) > LOG_LINE_MAX:
            text = "%s... (%d more characters)" % (text[:LOG_LINE_MAX], len(text) - LOG_LINE_MAX)
        line = ("%s %s\n" % (iso_now(), text)).encode("utf-8")
        with self._lock:
            try:
                self._rotate_if_needed(len(line))
                fd = open_own_file(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
                with os.fdopen(fd, "ab") as f:
                    f.write(line)
            except (OSError, UsageError):
                # A full disk must not turn a sync into a crash; a linked log.txt is
                # refused at the start of the run (refuse_linked_own_files), never
                # written through.
                pass

    def _rotate_if_needed(self, incoming: int) -> None:
        try:
            size = os.path.getsize(self.path)
        except OSError:
            return
        if size + incoming < LOG_MAX_BYTES:
            return
        for index in range(LOG_KEEP, 0, -1):
            older = "%s.%d" % (self.path, index)
            newer = self.path if index == 1 else "%s.%d" % (self.path, index - 1)
            if os.path.lexists(newer):
                os.replace(newer, older)
                if not os.path.islink(older):       # an older version's 0644 log
                    fd = os.open(older, os.O_RDONLY | O_NOFOLLOW)
                    try:
                        fix_own_mode(fd)
                    finally:
                        os.close(fd)


class Output:
    """What the user sees: actions and the summary on stdout, the rest on stderr. Every
    line passes printable() here: a name, title or message from outside never reaches
    the terminal with a control character in it, and never starts a line of its own."""

    COLORS = {"+": "32", "-": "31", ">": "36", "~": "33", "!": "1;31", "<": "34",
              "*": "1", "=": "2", "@": "2", "&": "35", "warning": "33", "error": "1;31"}

    def __init__(self, verbosity: int, log: Log | None, no_color: bool = False):
        self.verbosity = verbosity                  # -1 quiet, 0 normal, 1 verbose
        self.log = log
        self.ansi = _ansi_terminal()
        no_color = no_color or not self.ansi
        self.color_out = _isatty(sys.stdout) and not no_color
        self.color_err = _isatty(sys.stderr) and not no_color
        self.progress_enabled = _isatty(sys.stderr) and verbosity >= 0
        # Held by every write to the terminal, and by the upload threads' progress.
        self._lock = threading.RLock()
        self._shown = []                            # Progress blocks on screen, in order
        self._drawn = 0                             # lines they take up below the cursor
        self._drawn_at = 0.0

    def _paint(self, text: str, key: str, enabled: bool) -> str:
        return "\x1b[%sm%s\x1b[0m" % (self.COLORS[key], text) if enabled else text

    @staticmethod
    def _clean(text) -> str:
        return printable(redact(str(text)))

    def _write(self, stream, prefix: str, *lines) -> None:
        """One message: its lines (each escaped; the first after `prefix`, which is
        imgurbox's own and may be coloured), then a newline imgurbox writes itself."""
        text = prefix + "\n".join(self._clean(line) for line in lines)
        with self._lock:
            try:
                self._erase()                       # whole lines: the bars make way
                stream.write(text + "\n")
                stream.flush()
                self._draw()
            except (OSError, ValueError):
                pass                                # a closed pipe must not crash a sync

    def action(self, symbol: str, text: str, always: bool = False) -> None:
        if self.verbosity >= 0 or (always and symbol == "!"):
            stream = sys.stdout if symbol != "!" or self.verbosity >= 0 else sys.stderr
            self._write(stream, self._paint(symbol, symbol, self.color_out) + " ", text)

    def info(self, text: str) -> None:
        if self.verbosity >= 0:
            self._write(sys.stdout, "", text)

    def show(self, *lines) -> None:
        """What a command was asked to show (status, auth): printed even with -q."""
        self._write(sys.stdout, "", *lines)

    def detail(self, text: str) -> None:
        if self.verbosity > 0:
            self._write(sys.stdout, "  ", text)

    def warn(self, text: str) -> None:
        if self.verbosity >= 0:
            self._write(sys.stderr, self._paint("warning:", "warning", self.color_err) + " ",
                        text)
        if self.log:
            self.log.write("warning " + text)

    def error(self, text: str, *details) -> None:
        """An error, and lines of imgurbox's own that explain it (a list of bad lines)."""
        self._write(sys.stderr, self._paint("error:", "error", self.color_err) + " ",
                    text, *details)
        if self.log:
            self.log.write(" ".join(("error " + text,) + details))

    # -- progress: drawn below the last line, erased before each new one -----------

    def progress(self, title: str, files: int, size: int) -> "Progress | _NoProgress":
        """A phase's progress (files and bytes to go), shown at once on a terminal's
        stderr and never elsewhere; a block that does nothing when there is no work."""
        if not self.progress_enabled or files <= 0:
            return _NoProgress()
        progress = Progress(self, title, files, size)
        with self._lock:
            self._shown.append(progress)
            self.redraw(force=True)
        return progress

    def end_progress(self, progress: "Progress") -> None:
        with self._lock:
            if progress in self._shown:
                self._shown.remove(progress)
                self.redraw(force=True)

    def redraw(self, force: bool = False) -> None:
        """Draw the progress again, at most ten times a second unless forced."""
        with self._lock:
            now = time.monotonic()
            if not force and now - self._drawn_at < PROGRESS_INTERVAL:
                return
            try:
                self._erase()
                self._draw()
            except (OSError, ValueError):
                pass

    def _erase(self) -> None:
        """Clear the block from the screen; the cursor is left where it began."""
        if not self._drawn:
            return
        if self.ansi:
            sys.stderr.write("\r\x1b[J")               # to the end of the screen
        else:
            sys.stderr.write("\r%s\r" % (" " * (_terminal_width() - 1)))
        sys.stderr.flush()
        self._drawn = 0

    def _draw(self) -> None:
        """Write the block below the cursor and go back to its first column, so that the
        next line printed begins there (after _erase) and not inside the block."""
        if not self._shown:
            return
        width = _terminal_width()
        lines = [line for progress in self._shown for line in progress.lines(width)]
        if not self.ansi:
            lines = lines[:1]                       # one line, redrawn with \r alone
        lines = [_fit(line, width - 1) for line in lines]
        if self.ansi:
            text = "\x1b[K\n".join(lines) + "\x1b[K\r"
            if len(lines) > 1:
                text += "\x1b[%dA" % (len(lines) - 1)
        else:
            text = lines[0] + "\r"
        sys.stderr.write(text)
        sys.stderr.flush()
        self._drawn = len(lines)
        self._drawn_at = time.monotonic()


class Progress:
    """One phase on a terminal, like rclone -P: files done of the total, bytes with
    percentage, rate and time left, and below it each file in flight. Output draws it
    and erases it before every line it prints, so a line never begins inside it."""

    def __init__(self, out: Output, title: str, files: int, size: int):
        self.out = out
        self.title = title
        self.files, self.size = files, max(size, 0)
        self.files_done = self.bytes_done = 0
        self.started = time.monotonic()
        self.flying = []                            # ProgressItem, in start order

    def item(self, name: str, size: int) -> "ProgressItem":
        """A file this phase is now working on (shown by name until it is closed)."""
        item = ProgressItem(self, printable(name), size)
        with self.out._lock:
            self.flying.append(item)
            self.out.redraw()
        return item

    def update(self, n: int = 1) -> None:
        """Bytes done that belong to no file shown."""
        with self.out._lock:
            self.bytes_done += n
            self.out.redraw()

    def close(self) -> None:
        self.out.end_progress(self)

    def lines(self, width: int) -> list:
        elapsed = time.monotonic() - self.started
        done = min(self.bytes_done, self.size)
        fraction = done / self.size if self.size else self.files_done / self.files
        rate = done / elapsed if elapsed > 0 else 0
        eta = _clock_text((self.size - done) / rate) if rate else "?"
        tail = " %s/%s files, %s/%s, %s/s, ETA %s" % (
            "{:,}".format(self.files_done), "{:,}".format(self.files),
            _size_text(done), _size_text(self.size), _size_text(rate), eta)
        head = "%-7s%3d%%" % (self.title, int(fraction * 100))
        bar_width = max(0, min(30, width - 1 - len(head) - len(tail) - 2))
        lines = [head + ("|%s|" % _bar(fraction, bar_width) if bar_width >= 5 else "") + tail]
        shown = self.flying[:PROGRESS_MAX_NAMES]
        lines += ["  * %s: %d%% of %s" % (item.name, item.percent(), _size_text(item.size))
                  for item in shown]
        if len(self.flying) > len(shown):
            lines.append("  * and %d more" % (len(self.flying) - len(shown)))
        return lines


class ProgressItem:
    """A file in flight: its bytes count towards its phase as they are done."""

    def __init__(self, progress: Progress, name: str, size: int):
        self.progress, self.name, self.size, self.done = progress, name, size, 0

    def percent(self) -> int:
        return int(100 * min(self.done, self.size) / self.size) if self.size else 0

    def update(self, n: int = 1) -> None:
        with self.progress.out._lock:
            self.done += n
            self.progress.bytes_done += n
            self.progress.out.redraw()

    def close(self) -> None:
        """The file is done (or given up): it counts as done and leaves the list."""
        progress = self.progress
        with progress.out._lock:
            if self in progress.flying:
                progress.flying.remove(self)
                progress.files_done += 1
                if progress.files_done >= progress.files:
                    progress.close()                # the phase is over: make way at once
                else:
                    progress.out.redraw()


class _NoProgress:
    """Progress where none is shown (piped, -q, or nothing to do)."""

    def item(self, name: str, size: int) -> "_NoProgress":
        return self

    def update(self, n=1):
        pass

    def close(self):
        pass


PROGRESS_INTERVAL = 0.1             # seconds between two drawings of the progress
PROGRESS_MAX_NAMES = 8              # files in flight named below the meter


def _terminal_width() -> int:
    try:
        return max(20, os.get_terminal_size(sys.stderr.fileno()).columns)
    except (OSError, ValueError, AttributeError):
        return 80


def _bar(fraction: float, width: int) -> str:
    """A bar of `width` cells, in eighths where the terminal's encoding has them."""
    try:
        "\u2588\u258f".encode(sys.stderr.encoding or "ascii")
        full, partial = "\u2588", " \u258f\u258e\u258d\u258c\u258b\u258a\u2589"
    except (LookupError, UnicodeEncodeError):
        full, partial = "#", " "
    eighths = int(max(0.0, min(1.0, fraction)) * width * 8)
    cells = full * (eighths // 8)
    if len(cells) < width:
        cells += partial[eighths % 8 * len(partial) // 8]
    return cells.ljust(width)


def _fit(line: str, columns: int) -> str:
    """Cut a line to the terminal's columns (wide characters count two): a line that
    wrapped would leave the block taller than _erase knows."""
    used = 0
    for index, char in enumerate(line):
        used += 2 if unicodedata.east_asian_width(char) in "WF" else 1
        if used > columns:
            return line[:index]
    return line


def _size_text(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return ("%d %s" if unit == "B" else "%.1f %s") % (size, unit)
        size /= 1024


def _clock_text(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    return ("%d:%02d:%02d" % (hours, rest // 60, rest % 60) if hours
            else "%d:%02d" % (rest // 60, rest % 60))


def _ansi_terminal() -> bool:
    """Whether colour codes will show as colour: yes outside Windows; on Windows only
    once the console's VT mode is on (Windows 10 and later; older consoles get none)."""
    if not IS_WINDOWS:
        return True
    try:
        import ctypes
        kernel32 = ctypes.windll.kernel32
        enable_vt = 0x0004                          # ENABLE_VIRTUAL_TERMINAL_PROCESSING
        for handle_id in (-11, -12):                # standard output, standard error
            handle = kernel32.GetStdHandle(handle_id)
            mode = ctypes.c_uint32()
            if not kernel32.GetConsoleMode(handle, ctypes.byref(mode)):
                continue                            # not a console (piped)
            if not kernel32.SetConsoleMode(handle, mode.value | enable_vt):
                return False
        return True
    except (AttributeError, OSError):
        return False


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def stdin_is_terminal() -> bool:
    return _isatty(sys.stdin)


###############################################################################
# Imgur client. Api sends every request (two retry tiers: transport, then one token
# refresh for a refusal about the token). make_client gives imgurpython's ImgurClient
# imgurbox's own make_request. RemoteReader is what a run reads of Imgur; Remote adds
# the only write methods and the never-twice protocol for uploads and album creations.
###############################################################################

class Credentials:
    """credentials.json (0600): client ID and secret, access and refresh tokens."""

    FIELDS = ("client_id", "client_secret", "access_token", "refresh_token",
              "account_username", "account_id")

    def __init__(self, path: str, values: dict):
        self.path = path
        self.values = {k: values.get(k) for k in self.FIELDS}
        for key in ("client_secret", "access_token", "refresh_token"):
            register_secret(self.values.get(key))

    @classmethod
    def load(cls, home: str, out: Output | None = None, fix_mode: bool = True,
             identity: dict | None = None) -> "Credentials":
        """The stored credentials, with the client `identity` the environment gives
        (Environment.client_identity) put over them."""
        path = os.path.join(home, CREDENTIALS_FILE)
        values = {}
        try:
            with open(path, "rb") as f:
                values = json.loads(f.read().decode("utf-8"))
            if not isinstance(values, dict):
                raise ValueError("not a JSON object")
        except FileNotFoundError:
            pass
        except (ValueError, UnicodeDecodeError) as e:
            what = "not valid JSON (line %d, column %d)" % (e.lineno, e.colno) \
                if isinstance(e, json.JSONDecodeError) else "not a JSON object of credentials"
            raise CredentialsDamaged("%s is %s" % (path, what),
                                     "fix it, or delete it and run `%s`" % auth_command(home))
        except OSError as e:
            raise UsageError("cannot read %s: %s" % (path, e.strerror))
        values.update(identity or {})
        credentials = cls(path, values)
        if values and out is not None:
            credentials._check_permissions(out, fix_mode)
        return credentials

    def _check_permissions(self, out: Output, fix_mode: bool) -> None:
        if os.name != "posix":
            return
        try:
            st = os.stat(self.path)
        except OSError:
            return
        if st.st_mode & 0o077:
            if fix_mode and st.st_uid == os.getuid():
                os.chmod(self.path, 0o600)
                out.warn("%s was readable by others; its mode is now 0600" % self.path)
            else:
                out.warn("%s is readable by others: run chmod 600 on it" % self.path)

    def __getitem__(self, key):
        return self.values.get(key)

    @property
    def usable(self) -> bool:
        return bool(self["client_id"] and self["client_secret"] and self["refresh_token"])

    def update(self, **values) -> None:
        for key, value in values.items():
            if key in self.FIELDS and value:
                self.values[key] = value
                register_secret(value) if key != "account_username" else None

    def save(self) -> None:
        data = {k: v for k, v in self.values.items() if v}
        write_atomically(self.path, (json.dumps(data, indent=2) + "\n").encode("utf-8"),
                         mode=0o600)


class RateView:
    """What the last answers said of Imgur's limits, shared by every worker."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self._lock = threading.Lock()
        self.user_limit = self.user_remaining = self.user_reset = None
        self.client_limit = self.client_remaining = self.client_reset = None
        self.post_remaining = self.post_reset = None
        self.in_flight = 0                # credits of uploads started but not answered

    def _reset_time(self, value):
        """Imgur sends epoch seconds, or (answers seen in 2025) seconds from now; a past
        time means now. None when there is none, or when it is not a plausible time."""
        if value is None:
            return None
        now = self.clock.now()
        return plausible_reset(value if value >= 1e9 else now + value, now)

    def update(self, headers) -> None:
        def number(name):
            try:
                return int(float(headers[name]))
            except (KeyError, TypeError, ValueError, OverflowError):    # "inf", "nan", text
                return None
        with self._lock:
            for attribute, header in (("user_limit", "X-RateLimit-UserLimit"),
                                      ("client_limit", "X-RateLimit-ClientLimit")):
                value = number(header)
                if value is not None:
                    setattr(self, attribute, value)
            for remaining, reset, remaining_header, reset_header in (
                    ("user_remaining", "user_reset", "X-RateLimit-UserRemaining",
                     "X-RateLimit-UserReset"),
                    ("client_remaining", "client_reset", "X-RateLimit-ClientRemaining",
                     "X-RateLimit-ClientReset"),
                    ("post_remaining", "post_reset", "X-Post-Rate-Limit-Remaining",
                     "X-Post-Rate-Limit-Reset")):
                self._update_window(remaining, reset, number(remaining_header),
                                    number(reset_header))

    def _update_window(self, remaining: str, reset: str, value, reset_value) -> None:
        """Parallel answers arrive out of order: within one window the counter only
        falls, so keep the lowest; a reset time an hour on means a new window."""
        new_reset = self._reset_time(reset_value)
        old_reset = getattr(self, reset)
        same_window = new_reset is None or old_reset is None or \
            abs(new_reset - old_reset) < RATE_WINDOW_TOLERANCE
        if value is not None:
            old = getattr(self, remaining)
            keep_lower = same_window and old is not None and old_reset is not None
            setattr(self, remaining, min(old, value) if keep_lower else value)
        if new_reset is not None:
            setattr(self, reset, new_reset)

    def reserve_upload(self) -> str | None:
        """Book an upload's credits; None if it may start, else why it may not."""
        with self._lock:
            shortage = self._shortage(self.in_flight)
            if shortage is None:
                self.in_flight += UPLOAD_CREDITS
            return shortage

    def exhausted(self) -> str | None:
        """Why the credits seen last are down to a reserve, or None (also when no answer
        has shown any): a 429 with credits left is about the token, not the limit."""
        with self._lock:
            if self.client_remaining is not None and self.client_remaining <= 0:
                return "the application's daily credits are used up"
            return self._shortage(0)

    def _shortage(self, booked: int) -> str | None:
        """Why no upload may start with `booked` credits already promised (lock held)."""
        if self.user_remaining is not None and \
                self.user_remaining - booked < USER_CREDITS_FLOOR:
            return "Imgur's hourly credits for this account are used up"
        if self.client_limit and self.client_remaining is not None and \
                self.client_remaining - booked < CLIENT_CREDITS_RESERVE * self.client_limit:
            return ("the application's daily credits are down to the 10 % reserve "
                    "(five days a month at the cap block the application)")
        if self.post_remaining is not None and self.post_remaining < 1:
            return "Imgur's hourly limit of uploads from this address is reached"
        return None

    def release_upload(self) -> None:
        with self._lock:
            self.in_flight = max(0, self.in_flight - UPLOAD_CREDITS)

    WINDOWS = (("user_remaining", "user_reset"), ("client_remaining", "client_reset"),
               ("post_remaining", "post_reset"))

    def snapshot(self) -> dict:
        """The view, for state.json: the next run knows the limits before its first answer."""
        with self._lock:
            return {name: getattr(self, name) for name in
                    ("user_limit", "client_limit") + sum(self.WINDOWS, ())
                    if getattr(self, name) is not None}

    def restore(self, saved: dict) -> None:
        """Take a saved view, keeping only the windows that have not reset since. A
        window whose reset is not a plausible time (an older version saved whatever
        Imgur sent) is dropped: the next answer's headers decide, so one bad header
        cannot hold uploads back run after run."""
        def whole(value):
            return value if isinstance(value, int) and not isinstance(value, bool) else None
        with self._lock:
            now = self.clock.now()
            self.user_limit = whole(saved.get("user_limit"))
            self.client_limit = whole(saved.get("client_limit"))
            for remaining, reset in self.WINDOWS:
                at, left = saved.get(reset), whole(saved.get(remaining))
                if isinstance(at, bool) or not isinstance(at, (int, float)) or left is None:
                    continue
                if at > now + RATE_RESTORE_MARGIN and plausible_reset(at, now) == at:
                    setattr(self, remaining, left)
                    setattr(self, reset, at)

    def reset_at(self) -> float | None:
        candidates = [self.user_reset, self.post_reset]
        with self._lock:
            if self.client_limit and self.client_remaining is not None and \
                    self.client_remaining < CLIENT_CREDITS_RESERVE * self.client_limit:
                candidates.append(self.client_reset)     # the reserve lasts the day
        candidates = [t for t in candidates if t]
        return max(candidates) if candidates else None


def plausible_reset(at: float, now: float) -> float | None:
    """A reset time as Imgur's limits allow one: `now` for a past one, None (not a
    time: ignore it) for one more than a day ahead, or not a finite number."""
    if not isinstance(at, (int, float)) or at != at:            # NaN
        return None
    if at > now + RATE_RESET_MAX_AHEAD:
        return None
    return max(at, now)


def local_time_text(at: float | None) -> str | None:
    """A time for a message, as local ISO time to the minute; None if it is not one
    (a message must never fail on a year out of range)."""
    if at is None:
        return None
    try:
        return dt.datetime.fromtimestamp(at).astimezone().isoformat(timespec="minutes")
    except (OverflowError, OSError, ValueError):
        return None


def _error_message(payload) -> str:
    """Imgur's error text from either answer shape (envelope or `errors`)."""
    if not isinstance(payload, dict):
        return ""
    data = payload.get("data")
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            return str(error.get("message") or error.get("type") or error)
        if error is not None:
            return str(error)
    errors = payload.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return str(errors[0].get("detail") or errors[0].get("status") or errors[0])
    return ""


def _is_over_capacity(status: int, message: str) -> bool:
    """Overload, in the 403 form or (seen in 2025) a 500 or 429 envelope."""
    return (status in (403, 429) or status >= 500) and "over capacity" in message.lower()


def _is_network_block(status: int, headers) -> bool:
    """Imgur refusing this network or country, not the file: 400 with `CDN-Error: yes`."""
    return status == 400 and str(headers.get("CDN-Error", "")).strip().lower() == "yes"


def _is_ownership_refusal(message: str) -> bool:
    """A 403 about whose images or albums these are: never a token problem."""
    text = message.lower()
    return any(words in text for words in ("must own", "permission", "not the owner",
                                           "do not own", "don't own", "forbidden"))


def _is_token_message(message: str) -> bool:
    text = message.lower()
    return "token" in text or "authenticat" in text or "unauthorized" in text


def _is_rate_limit(status: int, message: str) -> bool:
    text = message.lower()
    return status == 429 or (status == 400 and ("too fast" in text or "wait" in text))


def header_deadline_adapter():
    """A requests transport adapter whose connections give an answer's status line and
    headers the read timeout in all, not per read: the socket's own timeout restarts
    with every byte, so a server sending a header a byte a second would hold the run,
    and its lock, for as long as it liked. At the deadline the socket is shut down,
    which ends the wait like a dropped connection. The body has its own deadline
    (Api._read_body); the time to send a large upload is not counted in either."""
    import socket
    import requests.adapters
    import urllib3.connection
    import urllib3.connectionpool

    def with_deadline(connection_class):
        class DeadlineConnection(connection_class):
            def getresponse(self, *args, **kwargs):
                sock, lock, headers = self.sock, threading.Lock(), ["awaited"]
                seconds = self.timeout if isinstance(self.timeout, (int, float)) else 60.0

                def cut_off():
                    with lock:
                        if headers[0] == "arrived":
                            return
                        headers[0] = "cut off"
                    try:    # the plain socket's shutdown: TLS's would race the reader
                        socket.socket.shutdown(sock, socket.SHUT_RDWR)
                    except OSError:
                        pass

                timer = threading.Timer(seconds, cut_off)
                timer.daemon = True
                timer.start()
                try:
                    return super().getresponse(*args, **kwargs)
                finally:
                    with lock:
                        if headers[0] == "awaited":
                            headers[0] = "arrived"
                    timer.cancel()
        return DeadlineConnection

    class HTTPPool(urllib3.connectionpool.HTTPConnectionPool):
        ConnectionCls = with_deadline(urllib3.connection.HTTPConnection)

    class HTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
        ConnectionCls = with_deadline(urllib3.connection.HTTPSConnection)

    class HeaderDeadlineAdapter(requests.adapters.HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = POOLS

        def proxy_manager_for(self, *args, **kwargs):
            manager = super().proxy_manager_for(*args, **kwargs)
            manager.pool_classes_by_scheme = POOLS
            return manager

    POOLS = {"http": HTTPPool, "https": HTTPSPool}

    return HeaderDeadlineAdapter


class Api:
    """Every HTTP request to Imgur: one keep-alive session per thread, timeouts,
    bounded retries with backoff and jitter, rate-limit headers, one token refresh."""

    def __init__(self, credentials: Credentials, log: Log, out: Output, env: Environment):
        self.base_url = api_base_url(env)
        self.credentials = credentials
        self.log = log
        self.out = out
        self.clock = env.clock
        self.rate = RateView(env.clock)
        self.timeouts = (env.connect_timeout, env.read_timeout)
        self.backoff_scale = env.backoff_scale
        self.settle_seconds = env.settle_seconds
        self.requests_sent = 0
        self._local = threading.local()
        self._token_lock = threading.Lock()
        self._fresh_token = None                # the access token this run's refresh got
        self._count_lock = threading.Lock()
        self._failed_in_a_row = 0
        # The write gate: a --dry-run Api refuses every write; a real one calls
        # before_first_write once (the run counter) before its first write goes out.
        self.read_only = False
        self.before_first_write = None
        self._write_gate = threading.Lock()
        require_network_libraries()
        import requests
        self._requests = requests
        self._adapter_class = header_deadline_adapter()

    def session(self):
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._requests.Session()
            session.mount("http://", self._adapter_class())
            session.mount("https://", self._adapter_class())
            # Descriptive, and Accept */*: with text/html first, i.imgur.com sends its web
            # page instead of the image. requests sends no Referer.
            session.headers["User-Agent"] = "imgurbox/%s (photo folder sync; python-requests)" \
                % VERSION
            session.headers["Accept"] = "*/*"
            self._local.session = session
        return session

    def backoff(self, attempt: int) -> float:
        """Exponential backoff (1, 2, 4, 8 s, capped at 8) with "equal jitter": each wait
        is drawn from 50-100 % of its step, so parallel retries spread out but never come
        back at once. The caller stops once 30 s of waiting are spent."""
        delay = min(8.0, 1.0 * 2 ** attempt) * (0.5 + random.random() / 2)
        delay *= self.backoff_scale
        if delay > 0:
            time.sleep(delay)
        return delay

    def pause(self) -> None:
        """Wait for Imgur's reads to catch up with a write (scaled like backoff)."""
        time.sleep(STALE_READ_PAUSE * self.backoff_scale)

    def _pass_write_gate(self, method: str, route: str) -> None:
        if self.read_only:
            raise AssertionError("a dry run sent %s %s" % (method, route))
        with self._write_gate:          # upload workers wait until the counter is written
            if self.before_first_write is not None:
                self.before_first_write()
                self.before_first_write = None

    def _auth_header(self, anon: bool) -> tuple:
        token = self.credentials["access_token"]
        if anon or not token:
            return {"Authorization": "Client-ID %s" % self.credentials["client_id"]}, None
        return {"Authorization": "Bearer %s" % token}, token

    def note_outcome(self, failed: bool) -> None:
        """Count requests that failed after all their tries: too many in a row stop the run."""
        with self._count_lock:
            self._failed_in_a_row = self._failed_in_a_row + 1 if failed else 0
            if self._failed_in_a_row >= MAX_FAILED_REQUESTS_IN_A_ROW:
                raise ServiceDownError("Imgur failed %d requests in a row, each after %d "
                                       "tries: stopping early; the next run resumes"
                                       % (self._failed_in_a_row, MAX_TRIES))

    def request(self, method: str, route: str, params=None, data=None, files_body=None,
                anon: bool = False, idempotent: bool = True):
        """Send one API call and return the answer's `data` (README "Reliability").

        Two tiers of retry. The transport tier (_exchange) sends again what went wrong on
        the way: no answer, a 5xx, an answer that is not JSON, Imgur over capacity. The
        refusal tier, here, answers a refusal about the token with one refresh and one
        more exchange; every other refusal is final. A non-idempotent call (upload, album
        creation) whose outcome is unknown raises OutcomeUnknown: the caller looks before
        sending it again.
        """
        url = self.base_url + "3/" + route
        if method != "GET":
            self._pass_write_gate(method, route)
        if not anon and not self.credentials["access_token"] and self.credentials["refresh_token"]:
            # No access token yet (credentials brought by hand): a Client-ID upload would
            # be anonymous, outside every album, so get a user token first.
            self.refresh(None)
        refreshed = False
        while True:
            status, payload, token_used = self._exchange(method, url, route, params, data,
                                                         files_body, anon, idempotent)
            message = _error_message(payload)
            can_refresh = not anon and not refreshed and bool(self.credentials["refresh_token"])
            if status == 429 and can_refresh and not self.rate.exhausted() \
                    and self.refresh(token_used):
                # Since 2025 Imgur answers some stale tokens with a 429 while the
                # credits are plainly left: one refresh is free, and tells them apart.
                refreshed = True
                continue
            if _is_rate_limit(status, message):
                raise RateLimitError("Imgur's rate limit: %s" % (message or status),
                                     self.rate.reset_at())
            if self._is_token_problem(status, message) and not anon:
                if not can_refresh or not self.refresh(token_used):
                    self.note_outcome(False)
                    raise RequestRefused("refused after a token refresh: %s"
                                         % (message or status), status)
                refreshed = True
                continue
            self.note_outcome(False)
            if status >= 400:
                raise RequestRefused(message or "HTTP %d" % status, status)
            if isinstance(payload, dict) and payload.get("success") is False:
                raise MalformedAnswer("Imgur answered HTTP %d but success: false%s" % (
                    status, " (%s)" % message if message else ""))
            if isinstance(payload, dict) and "data" in payload:
                return payload["data"]
            return payload

    def _exchange(self, method: str, url: str, route: str, params, data, files_body,
                  anon: bool, idempotent: bool) -> tuple:
        """The transport tier: send until an answer comes that says something, with
        backoff, at most MAX_TRIES times and 30 s of waiting. Returns (status, JSON
        payload, the access token sent)."""
        attempt, waited = 0, 0.0
        while True:
            headers, token_used = self._auth_header(anon)
            body = data
            if files_body is not None:
                body, headers["Content-Type"] = files_body()
            unknown = True
            try:
                with self._count_lock:
                    self.requests_sent += 1
                response, content = self._send(method, url, params=params, data=body,
                                               headers=headers)
            except self._requests.RequestException as e:
                problem = "no answer from %s (%s)" % (urllib.parse.urlsplit(url).netloc,
                                                      type(e).__name__)
            except _UnusableAnswer as e:
                problem = str(e)
            else:
                # A 429 without rate headers is judged by the previous answer's: update()
                # keeps what no header replaces.
                self.rate.update(response.headers)
                payload = _parse_json(content)
                status = response.status_code
                message = _error_message(payload)
                if _is_network_block(status, response.headers):
                    raise NetworkBlocked(
                        "Imgur refuses requests from this network or country (HTTP 400 "
                        "%r, CDN-Error): nothing is wrong with your files and none was "
                        "marked refused; try again from another network" % (message or ""))
                if _is_over_capacity(status, message) or (status == 403 and payload is None):
                    problem, unknown = "Imgur is over capacity (HTTP %d)" % status, False
                elif status != 429 and (status >= 500 or payload is None):
                    problem = "HTTP %d%s" % (status, "" if payload is not None else ", not JSON")
                else:
                    return status, payload, token_used
            if unknown and not idempotent:
                raise OutcomeUnknown(problem)
            attempt += 1
            if attempt >= MAX_TRIES or waited >= MAX_BACKOFF_TOTAL * self.backoff_scale:
                self.note_outcome(True)
                raise GaveUp("%s %s failed %d times: %s" % (method, route, attempt, problem))
            waited += self.backoff(attempt - 1)

    def _send(self, method: str, url: str, **options) -> tuple:
        """One HTTP exchange: (response, its body). A redirect is never followed: an API
        or token request carries a token or a secret, and a redirect to another host (a
        captive portal, a hijacked resolver) would hand it over; it fails like a
        connection error. The body is read with a cap on its size and on the time it
        takes to arrive after the answer began (the read timeout), so a server that
        dribbles or never ends cannot hold the run and its lock."""
        response = self.session().request(method, url, timeout=self.timeouts, stream=True,
                                          allow_redirects=False, **options)
        with response:
            if response.is_redirect or 300 <= response.status_code < 400:
                where = urllib.parse.urlsplit(response.headers.get("Location", ""))
                raise _UnusableAnswer("HTTP %d redirect to %s, not followed" % (
                    response.status_code, printable(where.netloc or "nowhere")))
            return response, self._read_body(response)

    def _read_body(self, response) -> bytes:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > ANSWER_MAX_BYTES:
            raise _UnusableAnswer("an answer of %s bytes, over the %d MiB cap"
                                  % (declared, ANSWER_MAX_BYTES >> 20))
        deadline = time.monotonic() + self.timeouts[1]
        raw, chunks, size = response.raw, [], 0
        while True:
            # read1 returns what has arrived, so the deadline is checked as bytes come.
            read = raw.read1 if hasattr(raw, "read1") else raw.read
            chunk = read(64 * 1024, decode_content=True)       # gzip is undone
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > ANSWER_MAX_BYTES:
                raise _UnusableAnswer("an answer over the %d MiB cap"
                                      % (ANSWER_MAX_BYTES >> 20))
            if time.monotonic() > deadline:
                raise _UnusableAnswer("an answer still arriving after %.0f s"
                                      % self.timeouts[1])
            chunks.append(chunk)

    @staticmethod
    def _is_token_problem(status: int, message: str) -> bool:
        """A 401, or a 403 that is about the access token (or says nothing at all); a
        403 about ownership or permission refuses that one request only."""
        if status == 401:
            return True
        if status != 403 or _is_ownership_refusal(message):
            return False
        return _is_token_message(message) or not message.strip()

    def refresh(self, token_used: str | None) -> bool:
        """Exchange the refresh token for a new access token; save the answer at once.
        False when the refused token is one this run just got: the refusal is not about
        the token (say, another account's album), and refreshing again would not help."""
        with self._token_lock:
            if self.credentials["access_token"] != token_used:
                return True                          # another worker refreshed already
            if token_used is not None and token_used == self._fresh_token:
                return False
            if getattr(self, "_refresh_refused", None):
                refused = self._refresh_refused         # refused once: never asked again
                raise AuthError(refused.problem, refused.advice)
            try:
                answer = self._token_request({
                    "refresh_token": self.credentials["refresh_token"],
                    "client_id": self.credentials["client_id"],
                    "client_secret": self.credentials["client_secret"],
                    "grant_type": "refresh_token"})
            except AuthError as e:
                self._refresh_refused = e
                raise
            self.credentials.update(access_token=answer.get("access_token"),
                                    refresh_token=answer.get("refresh_token"),
                                    account_username=answer.get("account_username"),
                                    account_id=_as_int(answer.get("account_id")) or None)
            self.credentials.save()
            self._fresh_token = self.credentials["access_token"]
            self.log.write("token refreshed")
            return True

    def _token_request(self, form: dict) -> dict:
        """POST /oauth2/token; a refusal is AuthError, an unreachable server is retried."""
        for key in ("refresh_token", "client_secret", "pin", "code"):
            register_secret(form.get(key))
        url = self.base_url + "oauth2/token"
        for attempt in range(MAX_TRIES):
            try:
                response, content = self._send("POST", url, data=form)
            except self._requests.RequestException as e:
                problem = "no answer (%s)" % type(e).__name__
            except _UnusableAnswer as e:
                problem = str(e)            # transient: a captive portal is not exit 5
            else:
                payload = _parse_json(content)
                if response.status_code < 500 and payload is not None:
                    if response.status_code == 200 and isinstance(payload, dict) \
                            and payload.get("access_token"):
                        for key in ("access_token", "refresh_token"):
                            register_secret(payload.get(key))
                        return payload
                    raise AuthError("Imgur refused the authorization (%s)"
                                    % (_error_message(payload) or response.status_code),
                                    "run `%s` to authorize again" % auth_command(
                                        os.path.dirname(self.credentials.path)))
                problem = "HTTP %d" % response.status_code
            if attempt + 1 < MAX_TRIES:
                self.backoff(attempt)
        self.note_outcome(True)
        raise GaveUp("cannot reach Imgur to refresh the token: %s" % problem)

    def download(self, link: str, destination, on_bytes: Callable[[int], None],
                 limit: int) -> str:
        """Stream an image link into an open file, without the Authorization header, at
        most `limit` bytes (what Imgur said it is, or its largest file). Returns the
        final URL (a deleted image ends at removed.png)."""
        if urllib.parse.urlsplit(link).scheme not in ("http", "https"):
            raise RequestRefused("not an http(s) link: %r" % printable(link), 0)
        for attempt in range(MAX_TRIES):
            destination.seek(0)
            destination.truncate()
            try:
                with self.session().get(link, stream=True, timeout=self.timeouts) as response:
                    if response.status_code == 404:
                        return "removed.png"
                    if response.status_code >= 500:
                        raise self._requests.ConnectionError("HTTP %d" % response.status_code)
                    response.raise_for_status()
                    if response.url.rstrip("/").endswith("removed.png"):
                        return response.url         # deleted: nothing to read
                    expected = response.headers.get("Content-Length")
                    if expected is not None and expected.isdigit() and int(expected) > limit:
                        raise _TooLong(int(expected))
                    received = 0
                    for chunk in response.iter_content(HASH_CHUNK):
                        received += len(chunk)
                        if received > limit:
                            raise _TooLong(received)
                        destination.write(chunk)
                        on_bytes(len(chunk))
                    if expected is not None and received != int(expected):
                        raise self._requests.ConnectionError("download cut short")
                    return response.url
            except _TooLong as e:
                raise RequestRefused("the link sent %s bytes or more where %d were expected; "
                                     "not kept" % (e.args[0], limit), 0) from None
            except self._requests.HTTPError as e:
                raise RequestRefused(printable(e), e.response.status_code
                                     if e.response is not None else 0)
            except self._requests.RequestException:
                if attempt + 1 == MAX_TRIES:
                    self.note_outcome(True)
                    raise GaveUp("download of %s failed %d times" % (link, MAX_TRIES))
                self.backoff(attempt)
        return link


class _TooLong(Exception):
    """A download longer than its limit."""


class _UnusableAnswer(Exception):
    """An answer that cannot be used (a redirect, too big, too slow): like no answer."""


def _parse_json(content: bytes):
    """The answer as JSON, or None: decided by parsing, never by Content-Type."""
    try:
        return json.loads(content)
    except ValueError:
        return None


def make_client(api: Api):
    """An imgurpython ImgurClient whose every request goes through `api`.

    imgurpython 1.1.7's __init__ calls /3/credits, and its make_request uses the bare
    `requests` functions: a new connection per call, no timeout (a stalled connection
    hangs the run for ever), no retry. So both are replaced; its models, endpoint
    helpers and exception classes are kept.
    """
    import imgurpython.client
    from imgurpython import ImgurClient

    imgurpython.client.API_URL = api.base_url      # redirects anything left to it

    class ImgurboxClient(ImgurClient):
        def __init__(self):                          # no /3/credits request
            self.client_id = api.credentials["client_id"]
            self.client_secret = api.credentials["client_secret"]
            self.auth = None
            self.mashape_key = None
            self.credits = {}
            self.api = api

        def make_request(self, method, route, data=None, force_anon=False):
            method = method.upper()
            if route.startswith("album") and route.rstrip("/").endswith("remove_images"):
                method = "POST"                 # the DELETE form now removes nothing
            if route.startswith("album") and method in ("POST", "PUT"):
                return self.album_write(route, data or {})
            if method in ("GET", "DELETE"):
                return api.request(method, route, params=data, anon=force_anon)
            return api.request(method, route, data=data, anon=force_anon,
                               idempotent=not route.rstrip("/").endswith(("image", "upload")))

        def album_write(self, route: str, fields: dict):
            """An album write as multipart/form-data, one `ids[]` part per ID: Imgur
            refuses form-urlencoded album writes since December 2024 (Apollo-Reborn
            PR #61; PyImgur, March 2025), and imgurpython sends exactly those."""
            from requests_toolbelt.multipart.encoder import MultipartEncoder
            parts = []
            for key, value in fields.items():
                if isinstance(value, (list, tuple)):
                    parts += [(key.rstrip("[]") + "[]", str(item)) for item in value]
                elif isinstance(value, str) and key in ("ids", "ids[]"):
                    parts += [("ids[]", item) for item in value.split(",") if item]
                elif value is not None:
                    parts.append((key, str(value)))

            def fresh_body():
                encoder = MultipartEncoder(fields=parts)
                return encoder, encoder.content_type
            creating = route.rstrip("/") == "album"
            return api.request("POST", route, files_body=fresh_body, idempotent=not creating)

        def create_album(self, fields):
            return self.album_write("album", fields)

        def album_add_images(self, album_id, ids):
            return self.album_write("album/%s/add" % album_id, {"ids": list(ids)})

        def album_remove_images(self, album_id, ids):
            return self.album_write("album/%s/remove_images" % album_id, {"ids": list(ids)})

        def update_album(self, album_id, fields):
            return self.album_write("album/%s" % album_id, fields)

        def upload_file(self, path: str, album_id: str, name: str, on_bytes,
                        transfer: "Transfer", description: str | None = None) -> dict:
            """Binary multipart upload, streamed from disk (a third fewer bytes than
            imgurpython's base64 form, in constant memory). `transfer` learns when the
            whole body has been handed to the socket, and can abandon it before that."""
            from requests_toolbelt.multipart.encoder import (MultipartEncoder,
                                                             MultipartEncoderMonitor)
            mime = MIME_TYPES.get(file_extension(name), "application/octet-stream")
            opened = []

            def read_body(monitor):
                transfer.body_read(monitor.bytes_read, monitor.len)
                on_bytes(monitor.bytes_read)

            def fresh_body():                       # one per attempt: a body is read once
                transfer.new_attempt()
                f = open(path, "rb")
                opened.append(f)
                encoder = MultipartEncoder(fields=[
                    ("album", album_id), ("name", name), ("type", "file")]
                    + ([("description", description)] if description else [])
                    + [("image", (name, f, mime))])
                monitor = MultipartEncoderMonitor(encoder, read_body)
                return monitor, monitor.content_type
            try:
                return api.request("POST", "image", files_body=fresh_body, idempotent=False)
            finally:
                for f in opened:
                    f.close()

    return ImgurboxClient()


def _remote_image(data) -> RemoteImage | None:
    """An image of an answer, or None if it is not one (no usable ID)."""
    if not isinstance(data, dict) or answer_id(data) is None:
        return None
    return RemoteImage(data["id"], _remote_text(data.get("name")) or None,
                       _remote_text(data.get("link")), _as_int(data.get("datetime")),
                       _remote_text(data.get("type")) or None, _as_int(data.get("size")),
                       _as_int(data.get("width")), _as_int(data.get("height")),
                       _remote_text(data.get("description")) or None)


def _remote_images(data) -> list:
    return [image for image in map(_remote_image, data if isinstance(data, list) else [])
            if image is not None]


def answer_id(data) -> str | None:
    """The `id` of an answer if it is one Imgur could have given (letters and digits)."""
    value = data.get("id") if isinstance(data, dict) else None
    if isinstance(value, str) and len(value) <= 64 and RE_ALBUM_ID.match(value):
        return value
    return None


def _remote_text(value) -> str:
    """A text field of an answer: a string, cut to a sane length; anything else is ""."""
    return value[:REMOTE_TEXT_MAX] if isinstance(value, str) else ""


# i.imgur.com answers a blocked country with HTTP 200 and always this PNG ("Content not
# viewable in your region"; issinoho/tvdinner, shayanline/iptv-iran): no status or header
# tells it from a photo.
REGION_PLACEHOLDER_MD5 = "f953f499c9824953791551bfef65fe61"
REGION_PLACEHOLDER_SHAPE = ("image/png", 34641, 336, 478)


def sniff_image(head: bytes) -> str | None:
    """The image type a file's first bytes say it is, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(PNG_SIGNATURE):
        return "image/png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    if head[:2] == b"BM":
        return "image/bmp"
    return None


def _png_dimensions(head: bytes) -> tuple:
    if head.startswith(PNG_SIGNATURE) and head[12:16] == b"IHDR":
        return struct.unpack(">II", head[16:24])
    return (0, 0)


def download_problem(path: str, image: RemoteImage) -> str | None:
    """Why a downloaded file is not the photo the API described, or None.

    Checked: the file's signature (an HTML page in place of an image is not one), the type,
    size and dimensions the API gave, and Imgur's region placeholder."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(64)
    kind = sniff_image(head)
    if kind is None:
        text = head.lstrip().lower()
        if text.startswith((b"<!doctype", b"<html", b"<")):
            return "Imgur sent a web page instead of the image"
        return "the file is not an image"
    width, height = _png_dimensions(head)
    if (kind, size, width, height) == REGION_PLACEHOLDER_SHAPE or \
            (size == REGION_PLACEHOLDER_SHAPE[1] and _md5(path) == REGION_PLACEHOLDER_MD5):
        return ("Imgur sent its 'not viewable in your region' placeholder: Imgur blocks "
                "this network or country")
    declared = (image.mime or "").lower().replace("image/apng", "image/png")
    if declared.startswith("image/") and declared != kind:
        return "Imgur said %s but sent %s" % (declared, kind)
    if image.size and size != image.size:
        return "Imgur said %d bytes but sent %d" % (image.size, size)
    if kind == "image/png" and image.width and image.height and \
            (width, height) != (image.width, image.height):
        return "Imgur said %dx%d but sent %dx%d" % (image.width, image.height, width, height)
    return None


def _md5(path: str) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _privacy_problem(seen: tuple) -> str | None:
    """None if an album view shows it hidden, else what Imgur shows."""
    if seen[1] == "hidden":
        return None
    return "Imgur shows its privacy as %r" % (seen[1] or "unknown")


def _album_view(data) -> tuple:
    if not isinstance(data, dict):
        return ("", None)
    return (_remote_text(data.get("title")), _remote_text(data.get("privacy")) or None)


class UploadResult(NamedTuple):
    image_id: str
    extra_ids: tuple = ()              # other images a pending check found: reported
    link: str = ""                     # the direct link of the answer ("" after a check)


class Transfer:
    """One upload's body on its way out, shared by its worker and the main thread.

    On Ctrl-C an upload whose body has been completely sent is finished (Imgur may store
    it); one still sending is abandoned: the next read of its body raises, so the rest
    never leaves and Imgur, without a whole body, cannot store it.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.sent_all = False           # this attempt's body is all handed to the socket
        self.maybe_performed = False    # some attempt's body was all sent
        self.abandoned = False

    def new_attempt(self) -> None:
        with self._lock:
            if self.abandoned:
                raise UploadAbandoned(self.maybe_performed)
            self.sent_all = False

    def body_read(self, done: int, total: int) -> None:
        """Called after each read of the body, before those bytes are sent."""
        with self._lock:
            if self.abandoned and not self.sent_all:
                raise UploadAbandoned(self.maybe_performed)
            if done >= total:
                self.sent_all = self.maybe_performed = True

    def abandon_unless_sent(self) -> bool:
        """Abandon it unless its body is all sent; True if it must be waited for."""
        with self._lock:
            if self.sent_all:
                return True
            self.abandoned = True
            return False

    def abandon(self) -> None:
        with self._lock:
            self.abandoned = True


class RemoteReader:
    """Imgur as a run reads it: albums, their images, the account. What a --dry-run gets:
    it has no write method, so a dry run cannot write by construction (and Api's write
    gate would refuse a request that slipped past)."""

    def __init__(self, api: Api, state: StateStore):
        self.api = api
        self.client = make_client(api)
        self.state = state
        self.clock = api.clock
        self.rate = api.rate
        self.settle_seconds = api.settle_seconds
        self.answer_timeout = api.timeouts[1]

    def album(self, album_id: str) -> dict:
        data = self.client.make_request("GET", "album/%s" % album_id)
        return data if isinstance(data, dict) else {}

    def album_view(self, album_id: str) -> tuple:
        """(title, privacy) as Imgur shows them now."""
        return _album_view(self.album(album_id))

    def album_images(self, album_id: str) -> list:
        data = self.client.make_request("GET", "album/%s/images" % album_id)
        if not isinstance(data, list):
            raise MalformedAnswer("Imgur's listing of album %s is not a list" % album_id)
        return _remote_images(data)

    def image_exists(self, image_id: str) -> bool:
        try:
            self.client.make_request("GET", "image/%s" % image_id)
        except RequestFailed as e:
            if e.status == 404:
                return False
            raise
        return True

    def account(self) -> dict:
        data = self.client.make_request("GET", "account/me")
        return data if isinstance(data, dict) else {}

    def account_albums(self, page: int) -> list:
        # Not imgurpython's get_account_albums: it refuses "me" without its own auth
        # object, which this client (its make_request replaced) does not have.
        data = self.client.make_request("GET", "account/me/albums/%d" % page)
        return data if isinstance(data, list) else []

    def pause(self) -> None:
        self.api.pause()

    # -- looking for what an interrupted operation did ------------------------------------

    def look_for_upload(self, pending: dict, cache: dict) -> list:
        """IDs of images that may be this pending upload: unknown to the state, same
        name, made no earlier than 120 s before it was recorded; oldest first."""
        album_id = pending["album"]
        if album_id not in cache:
            cache[album_id] = self.album_images(album_id)
        known = self.state.known_image_ids()
        since = pending["since"] - PENDING_CLOCK_SLACK
        sent_name = pending.get("sent_name", pending["name"])     # older records: name
        found = [image for image in cache[album_id]
                 if image.image_id not in known and image.name == sent_name
                 and image.datetime >= since]
        found.sort(key=lambda image: (image.datetime, image.image_id))
        return [image.image_id for image in found]

    def look_for_album(self, pending: dict) -> list:
        """IDs of albums that may be this pending creation: made since it was recorded
        and unknown to the state; the title only breaks ties, since Imgur has been seen
        to ignore the fields of an album write."""
        since = pending["since"] - PENDING_CLOCK_SLACK
        found, page = [], 0
        while True:
            albums = self.account_albums(page)
            for album in albums:
                if not isinstance(album, dict) or not album.get("id"):
                    continue
                made = _as_int(album.get("datetime"))
                if made >= since and str(album["id"]) not in self.state.albums:
                    found.append((made, str(album["id"]),
                                  _remote_text(album.get("title")) == pending["title"]))
            if len(albums) < ALBUMS_PER_PAGE:
                break
            page += 1
        if len(found) > 1:
            found = [candidate for candidate in found if candidate[2]] or found
        return [album_id for _, album_id, _ in sorted(found)]

    def settle_wait(self, pending: dict) -> float:
        """Seconds until a pending upload's record is as old as the settle time: before
        that Imgur may still be storing what it received, and not finding it proves
        nothing."""
        return pending["since"] + self.settle_seconds - self.clock.now()

    # -- the never-twice protocol's bookkeeping (local: the state only) -------------------

    def record_upload(self, pending: dict, found: UploadResult, replaces: str | None,
                      caption: str | None = None) -> None:
        """An upload's image is known (its answer came, or a look found it): record it,
        then resolve its pending record. `replaces` is the image of the version it
        replaces, kept for deletion first: a crash between the two journal lines must
        not forget the old version on Imgur. Extra candidates are never adopted."""
        album_id, name = pending["album"], pending["name"]
        if replaces and replaces != found.image_id:
            self.state.add_to_delete(album_id, replaces)
        self.state.set_file(album_id, name, FileRecord(
            found.image_id, pending["hash"], pending["size"], pending["mtime_ns"],
            pending["inode"], link=found.link, caption=caption))
        for extra in found.extra_ids:
            self.state.ignore_image(album_id, extra)
        self.state.resolve_pending(pending["id"])

    def record_album(self, pending: dict, album_id: str) -> None:
        """An album creation's album is known: recorded as not yet verified hidden (so
        that one that turns out public is known, and checked, rather than forgotten on
        Imgur), then its pending record resolved."""
        self.state.set_album(album_id, folder=pending["folder"], listed=True,
                             title=pending["title"], privacy_unverified=True)
        self.state.resolve_pending(pending["id"])

    def drop_pending(self, pending: dict) -> None:
        """The operation is known not to have happened (or has nothing left to check)."""
        self.state.resolve_pending(pending["id"])

    def hidden_problem(self, album_id: str) -> str | None:
        """None if Imgur shows the album hidden, else what it shows (a read only)."""
        return _privacy_problem(self.album_view(album_id))


class Remote(RemoteReader):
    """Imgur as a run changes it: the only code with write methods (albums created,
    retitled and hidden; images uploaded, added, removed, deleted, updated, downloaded).

    Uploads and album creations follow the never-twice protocol here and nowhere else:
    the operation is recorded as pending (journaled durably before it is sent), sent,
    and when its outcome is unknown, looked for on Imgur; what is found is adopted,
    and only what is not found is sent again (README, "Reliability").
    """

    # -- albums ---------------------------------------------------------------------------

    def creation_unresolved(self, folder: str) -> bool:
        return any(p["op"] == "create_album" and folder_key(p["folder"]) == folder_key(folder)
                   for p in self.state.pending)

    def create_album(self, folder: str, title: str) -> str:
        """Create a hidden album; its ID, recorded in the state as not yet verified."""
        pending = self.state.add_pending({"op": "create_album", "folder": folder,
                                          "title": title})
        for attempt in range(MAX_TRIES):
            try:
                answer = self.client.create_album({"title": title, "privacy": "hidden"})
                album_id = answer_id(answer)
                if album_id is None:       # the pending record stays: the next run looks
                    raise MalformedAnswer("Imgur's answer to the album creation has no "
                                          "album ID")
                break
            except OutcomeUnknown:
                self.api.backoff(attempt)
                found = self.look_for_album(pending)
                if len(found) > 1:
                    raise RequestRefused("several albums titled %r appeared; adopted none: "
                                         "delete the extra ones on Imgur" % title, 0)
                if found:
                    album_id = found[0]
                    break
        else:
            raise GaveUp("album creation failed %d times" % MAX_TRIES)
        self.record_album(pending, album_id)
        return album_id

    def make_hidden(self, album_id: str, title: str) -> str | None:
        """Read an album back; None once Imgur shows it hidden with this title, else what
        it shows.

        Imgur has ignored fields of album writes (and a new album takes the account's
        default privacy, which may be public), so the privacy sent is not taken on trust.
        A read right after a write may be stale: a difference is read again after a
        pause. If the album still differs, one update sets title and privacy, and a
        second read checks.
        """
        def read_settled():
            seen = self.album_view(album_id)
            if seen != (title, "hidden"):
                self.pause()
                seen = self.album_view(album_id)
            return seen
        if read_settled() == (title, "hidden"):
            return None
        self.client.update_album(album_id, {"title": title, "privacy": "hidden"})
        return _privacy_problem(read_settled())

    def retitle_album(self, album_id: str, title: str) -> None:
        self.client.update_album(album_id, {"title": title})

    def add_images(self, album_id: str, image_ids: list) -> None:
        self.client.album_add_images(album_id, image_ids)

    def remove_images(self, album_id: str, image_ids: list) -> None:
        self.client.album_remove_images(album_id, image_ids)

    # -- images ---------------------------------------------------------------------------

    def delete_image(self, image_id: str) -> None:
        """Delete an image; one already gone counts as deleted."""
        try:
            self.client.delete_image(image_id)
        except RequestFailed as e:
            if e.status != 404:
                raise

    def update_image(self, image_id: str, fields: dict) -> None:
        self.client.make_request("POST", "image/%s" % image_id, fields)

    def download(self, image: RemoteImage, destination,
                 on_bytes: Callable[[int], None]) -> str:
        """Stream an image into an open file; the final URL (removed.png if gone). At
        most the size Imgur gave for it, or Imgur's largest file where it gave none."""
        limit = image.size or max(MAX_IMAGE_BYTES, MAX_GIF_BYTES)
        return self.api.download(image.link, destination, on_bytes, limit)

    def begin_upload(self, album_id: str, file: ScannedFile) -> dict:
        """Record an upload as pending. Journaled but not yet durable: commit_pending()
        makes a batch durable with one fsync before any of it is sent (group commit: an
        fsync costs as much as a fast upload, so one per upload would double a big first
        sync)."""
        return self.state.add_pending({"op": "upload", "album": album_id, "name": file.name,
                                       "sent_name": imgur_name(file.name),
                                       "hash": file.hash, "size": file.size,
                                       "mtime_ns": file.mtime_ns, "inode": file.inode},
                                      durable=False)

    def commit_pending(self) -> None:
        self.state.sync_journal()

    def upload(self, pending: dict, path: str, on_bytes, transfer: Transfer,
               stop: threading.Event, say: Callable[[str], None],
               description: str | None = None) -> UploadResult:
        """Send a pending upload (in a worker thread); after an unknown outcome, look for
        it before sending it again. Refused outright (rate limit, authorization), the
        error carries `not_sent`: nothing was sent, so nothing is pending."""
        for attempt in range(MAX_TRIES):
            try:
                answer = self.client.upload_file(path, pending["album"],
                                                 pending["sent_name"], on_bytes, transfer,
                                                 description=description)
                if answer_id(answer) is None:  # the pending record stays: the next run looks
                    raise MalformedAnswer("Imgur's answer to the upload has no image ID")
                return UploadResult(answer["id"], link=_remote_text(answer.get("link")))
            except (AuthError, RateLimitError) as e:
                e.not_sent = attempt == 0
                raise
            except OutcomeUnknown:
                if stop.is_set():                   # the next run looks for it
                    raise UploadAbandoned(True) from None
                self.api.backoff(attempt)
                found = self._look_before_resending(pending, stop, say)
                if found:
                    return UploadResult(found[0], tuple(found[1:]))
        self.api.note_outcome(True)
        raise GaveUp("upload failed %d times with no answer" % MAX_TRIES)

    def _look_before_resending(self, pending: dict, stop: threading.Event, say) -> list:
        """Imgur may still be storing what it received: a record younger than the settle
        time waits out the rest and looks again."""
        try:
            found = self.look_for_upload(pending, {})
            wait = self.settle_wait(pending)
            if found or wait <= 0:
                return found
            say("waiting %.0f s for Imgur to finish storing %s before sending it again"
                % (wait, pending["name"]))
            if stop.wait(wait):
                raise UploadAbandoned(True)
            return self.look_for_upload(pending, {})
        except RequestFailed as e:
            # The check failed, not the upload: its outcome stays unknown, and so the
            # pending record stays for the next run.
            raise GaveUp("could not check whether the upload arrived: %s" % e) from None

    def end_upload(self, pending: dict, outcome: BaseException) -> None:
        """An upload ended without an image: drop its pending record if the outcome shows
        it was not performed; otherwise it stays, and the next run looks for it."""
        if isinstance(outcome, UploadAbandoned):
            performed = outcome.maybe_performed        # its body never left whole
        elif isinstance(outcome, (RateLimitError, AuthError, ServiceDownError)):
            performed = not getattr(outcome, "not_sent", False)
        elif isinstance(outcome, RequestRefused):
            performed = not 400 <= outcome.status < 500
        else:
            performed = True
        if not performed:
            self.drop_pending(pending)


###############################################################################
# Executor: applies a plan's actions through a Remote, and so makes nearly every change,
# local or remote. The others, all in SyncRun: the recovery passes before the plan (they
# read albums, adopt into the state, and make an unverified album hidden, through the
# same Remote), and finish_state / rewrite_albums after it (state.json, albums.txt).
# Api.refresh rewrites credentials.json. A dry run gets a RemoteReader, which has no
# write method; Api's write gate refuses a write that slipped past.
###############################################################################

@dataclasses.dataclass
class SyncOptions:
    dry_run: bool = False
    verify: bool = False
    rehash: bool = False
    force: bool = False
    max_delete: int | None = None
    jobs: int = 4
    captions: bool = False             # settings.json: photos' captions go to Imgur


@dataclasses.dataclass
class Tally:
    """What the run did, for the summary line and the exit code."""
    counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    failed: int = 0
    failed_what: list = dataclasses.field(default_factory=list)    # for the summary
    held: int = 0
    rate_limit: RateLimitError | None = None
    auth_error: AuthError | None = None
    stopped: ImgurboxError | None = None

    def exit_code(self) -> int:
        if self.auth_error:
            return EXIT_AUTH
        if self.rate_limit:
            return EXIT_RATE_LIMIT
        return EXIT_FAILED if (self.failed or self.held or self.stopped) else EXIT_OK


class UploadSkipped(NamedTuple):
    """An upload that did not start; `reason` is what the user is told, if anything."""
    reason: str                  # "no album", "vanished", "changed" or "not started"


def where_in(folder: str, name: str = "") -> str:
    """How an action line names a file: its folder's last part, a slash, its name."""
    label = os.path.basename(folder) or folder
    return "%s/%s" % (label, name) if name else label


class Executor:
    """Applies a plan: albums, local bookkeeping, downloads, uploads (parallel),
    moves, repairs, deletions last. State is journaled after every remote change."""

    def __init__(self, state: StateStore, remote: Remote, out: Output, log: Log,
                 options: SyncOptions, tally: Tally, folders: dict, scan_started_ns: int):
        self.scan_started_ns = scan_started_ns  # downloads are dated before it
        self.state = state
        self.remote = remote
        self.out = out
        self.log = log
        self.options = options
        self.tally = tally
        self.folders = folders                  # album key -> folder, for messages
        self.album_ids = {}                     # 'new:<folder>' -> created album ID
        self.failed_keys = set()                # album keys whose creation failed
        self.announced = set()                  # album IDs whose link was printed
        self.downloads_left = collections.Counter()     # album ID -> downloads to do
        self.pending_of = {}                    # id(Upload) -> its pending record
        self.download_bar = _NoProgress()
        self.stopping = False
        self.stop_event = threading.Event()     # set on Ctrl-C: workers stop waiting

    # -- helpers -------------------------------------------------------------------

    def album_id(self, key: str) -> str | None:
        return self.album_ids.get(key, None if key.startswith("new:") else key)

    def where(self, key: str, name: str = "") -> str:
        return where_in(self.folders.get(key) or self.folders.get(self.album_id(key) or "",
                                                                    key), name)

    def fail(self, what: str, why: str) -> None:
        """`what` failed (a file, an album, an action on one), and `why`; the summary
        names `what`."""
        self.tally.failed += 1
        self.tally.failed_what.append(what)
        self.out.action("!", "failed %s: %s" % (what, why), always=True)
        self.log.write("failed %s: %s" % (what, why))

    def done(self, symbol: str, verb: str, text: str, count_as: str,
             album_key: str | None = None) -> None:
        if album_key:
            self.announce(album_key)
        self.tally.counts[count_as] += 1
        self.out.action(symbol, "%s %s" % (verb, text))
        self.log.write("%s %s" % (verb, text))

    def announce(self, album_key: str) -> None:
        """Print each album's link once, before the first thing done in it."""
        album_id = self.album_id(album_key)
        if album_id and album_id not in self.announced:
            self.announced.add(album_id)
            self.out.info("%s %s" % (self.where(album_id), ALBUM_URL.format(album_id)))

    def stop_for(self, error: ImgurboxError) -> None:
        """Record why the run stops early; nothing new starts after this."""
        self.stopping = True
        if isinstance(error, RateLimitError):
            self.tally.rate_limit = self.tally.rate_limit or error
        elif isinstance(error, AuthError):
            self.tally.auth_error = self.tally.auth_error or error
        else:
            self.tally.stopped = self.tally.stopped or error

    # -- the plan ------------------------------------------------------------------

    def run(self, actions: list) -> None:
        downloads = [a for a in actions if isinstance(a, Download)]
        self.downloads_left = collections.Counter(a.album for a in downloads)
        # One block for all downloads (Imgur's sizes are those it serves).
        self.download_bar = self.out.progress("download", len(downloads),
                                              sum(a.image.size or 0 for a in downloads))
        try:
            self._run(actions)
        finally:
            self.download_bar.close()

    def _run(self, actions: list) -> None:
        index = 0
        while index < len(actions) and not self.stopping:
            action = actions[index]
            if isinstance(action, Upload):
                end = index
                while end < len(actions) and isinstance(actions[end], Upload):
                    end += 1
                self.run_uploads(actions[index:end])
                index = end
                continue
            try:
                self.apply(action)
            except (RateLimitError, AuthError, ServiceDownError) as e:
                self.stop_for(e)
            except RequestFailed as e:
                self.fail("%s %s" % (action.verb, self.describe(action)), str(e))
            except OSError as e:                 # a local write failed: that item only
                self.fail("%s %s" % (action.verb, self.describe(action)),
                          str(e.strerror or e))
            index += 1
        if not self.stopping:
            self.purge_replaced()

    def describe(self, action) -> str:
        name = getattr(getattr(action, "file", None), "name", None) or getattr(action, "name", "")
        return self.where(action.album, name)

    def apply(self, action) -> None:
        key = action.album
        if key in self.failed_keys:
            return
        handler = getattr(self, "do_" + type(action).__name__)
        handler(action)

    # -- albums -----------------------------------------------------------------------

    def do_LinkAlbum(self, action: LinkAlbum) -> None:
        os.makedirs(action.folder, exist_ok=True)
        existing = self.state.albums.get(action.album)
        self.state.set_album(action.album, folder=action.folder, listed=True,
                             title=action.title, owner=action.owner,
                             download_only=action.download_only,
                             incomplete=bool(self.downloads_left[action.album]))
        if existing is None:
            self.announced.add(action.album)
            self.out.action("*", action.lines(self.where)[0])
            self.log.write("link album %s %s" % (action.album, action.folder))

    def do_CreateAlbum(self, action: CreateAlbum) -> None:
        if self.remote.creation_unresolved(action.folder):
            self.failed_keys.add(action.album)
            self.fail(action.title, "an earlier album creation is still unresolved")
            return
        try:
            album_id = self.remote.create_album(action.folder, action.title)
        except BaseException:
            if not isinstance(sys.exc_info()[1], (OutcomeUnknown, Interrupted, KeyboardInterrupt)):
                self.failed_keys.add(action.album)
            raise
        problem = self.remote.make_hidden(album_id, action.title)
        if problem:
            self.failed_keys.add(action.album)
            self.folders[album_id] = action.folder
            self.fail(action.folder, unverified_album_reason(album_id, problem))
            return
        self._record_new_album(album_id, action.folder, action.title)
        self.album_ids[action.album] = album_id

    def _record_new_album(self, album_id: str, folder: str, title: str) -> None:
        self.state.set_album(album_id, folder=folder, listed=True, title=title,
                             privacy_unverified=False)
        self.folders[album_id] = folder
        self.announced.add(album_id)
        self.done("*", "album", "%s %s" % (title, ALBUM_URL.format(album_id)), "new albums")

    def do_RetitleAlbum(self, action: RetitleAlbum) -> None:
        self.remote.retitle_album(action.album, action.title)
        self.state.set_album(action.album, title=action.title,
                             folder=self.folders.get(action.album, ""))
        self.out.action("*", action.lines(self.where)[0])
        self.log.write("retitle album %s %r" % (action.album, action.title))

    # -- bookkeeping without transfer -----------------------------------------------------

    def do_Adopt(self, action: Adopt) -> None:
        f = action.file
        self.state.set_file(action.album, f.name,
                            FileRecord(action.image_id, f.hash, f.size, f.mtime_ns, f.inode,
                                       link=action.link, caption=f.caption))
        self.done("@", "adopt", "%s as image %s" % (self.where(action.album, f.name),
                                                    action.image_id), "adopted")

    def do_Rename(self, action: Rename) -> None:
        record = action.record
        f = action.file
        self.state.refile(action.album, action.old_name, action.album, f.name,
                          record._replace(size=f.size, mtime_ns=f.mtime_ns, inode=f.inode))
        self.done("=", "rename", "%s -> %s" % (self.where(action.album, action.old_name),
                                               self.where(action.album, f.name)), "renamed")

    # -- downloads -----------------------------------------------------------------------

    def do_Download(self, action: Download) -> None:
        image = action.image
        folder = action.folder
        os.makedirs(folder, exist_ok=True)
        album = self.state.albums.get(action.album)
        if album is not None and not album.incomplete:     # until every download is in
            self.state.set_album(action.album, incomplete=True)
        name = safe_file_name(image.name, image.image_id, image.mime)
        import tempfile
        # Created new and exclusively, under a name no one can guess beforehand: a file
        # or symlink planted in the folder is never followed or written through.
        descriptor, tmp_path = tempfile.mkstemp(
            prefix="%s%s-" % (DOWNLOAD_PART_PREFIX, image.image_id),
            suffix=DOWNLOAD_PART_SUFFIX, dir=folder)
        try:
            shown = self.download_bar.item(self.where(action.album, name), image.size or 0)
            with os.fdopen(descriptor, "wb") as f:
                try:
                    final_url = self.remote.download(image, f, shown.update)
                finally:
                    shown.close()
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp_path, 0o666 & ~current_umask())   # a photo, not a secret
            if final_url.rstrip("/").endswith("removed.png"):
                os.unlink(tmp_path)
                self.out.warn("%s: image %s was deleted on Imgur; not downloaded"
                              % (self.where(action.album), image.image_id))
                self.state.ignore_image(action.album, image.image_id)
                self._download_done(action.album)
                return
            problem = download_problem(tmp_path, image)
            if problem:                     # the album stays "not fully downloaded"
                self.fail("download %s (image %s)" % (self.where(action.album), image.image_id),
                          "%s; not kept, tried again next run" % problem)
                return
            # Dated before this run's scan (the photo's Imgur date, if older), so that the
            # next run trusts the file's stat data instead of reading it again.
            taken = self.remote.clock.local_ns(image.datetime) if image.datetime else float("inf")
            mtime_ns = int(min(taken, self.scan_started_ns - 2 * COARSE_MTIME_NS))
            os.utime(tmp_path, ns=(time.time_ns(), mtime_ns))
            content = content_hash(tmp_path, file_extension(name))
            # Journaled before the photo appears in the folder: after a crash in between,
            # the next run would otherwise take it for a new file (and upload it) while
            # its image looked unknown (and was downloaded again).
            pending = self.state.add_pending({"op": "download", "album": action.album,
                                              "image_id": image.image_id, "hash": content,
                                              "folder": folder})
            path = place_download(tmp_path, folder, name)
        finally:
            if os.path.exists(tmp_path):
                os.unlink(tmp_path)
        st = os.stat(path)
        # As a scan will see it: os.scandir reports inode 0 on Windows.
        inode = 0 if IS_WINDOWS else st.st_ino
        # Its description on Imgur stays until the local caption changes.
        caption = read_caption(path, file_extension(name)) if self.options.captions else None
        self.state.set_file(action.album, os.path.basename(path),
                            FileRecord(image.image_id, content, st.st_size, st.st_mtime_ns,
                                       inode, link=image.link, caption=caption))
        self.state.resolve_pending(pending["id"])
        self.done("<", "download", self.where(action.album, os.path.basename(path)),
                  "downloaded", action.album)
        self._download_done(action.album)

    def _download_done(self, album_id: str) -> None:
        """The album's last download this run is in: no need to list it next run."""
        self.downloads_left[album_id] -= 1
        album = self.state.albums.get(album_id)
        if self.downloads_left[album_id] <= 0 and album is not None and album.incomplete:
            self.state.set_album(album_id, incomplete=False)

    # -- uploads (parallel, reported in plan order) ---------------------------------------

    def run_uploads(self, uploads: list) -> None:
        import queue
        jobs = max(1, self.options.jobs)
        bar = self.out.progress("upload", len(uploads), sum(a.file.size for a in uploads))
        done_queue = queue.Queue()
        work_queue = queue.Queue()
        results, started, reported = {}, 0, 0
        flying = {}                              # index -> Transfer, sent and unanswered

        def worker():
            while True:
                item = work_queue.get()
                if item is None:
                    return
                index, action, pending, transfer = item
                shown = bar.item(self.where(action.album, action.file.name), action.file.size)
                try:
                    result = self._send_upload(action, pending, shown, transfer)
                except BaseException as e:             # handed to the main thread
                    result = e
                shown.close()
                done_queue.put((index, result))

        def take_answers(timeout: float) -> bool:
            """Move finished uploads from the workers into `results`; False if none came.
            A signal waits until they are all moved: one taken from the queue but not
            yet in `results` would be neither recorded now nor ever."""
            with signals_held():
                return move_answers(timeout)

        def move_answers(timeout: float) -> bool:
            try:
                finished = [done_queue.get(timeout=timeout)]
            except queue.Empty:
                return False
            while True:                          # answers already in: take them all
                try:
                    finished.append(done_queue.get_nowait())
                except queue.Empty:
                    break
            for index, result in finished:
                flying.pop(index, None)
                self.remote.rate.release_upload()
                results[index] = result
                if isinstance(result, (RateLimitError, AuthError, ServiceDownError)):
                    # Stop now, not when the result's turn to be reported comes:
                    # otherwise the next upload would start after a 429.
                    self.stop_for(result)
            return True

        threads = [threading.Thread(target=worker, daemon=True, name="upload-%d" % i)
                   for i in range(min(jobs, len(uploads)))]
        for thread in threads:
            thread.start()
        try:
            while reported < len(uploads):
                batch = []
                while not self.stopping and started < len(uploads) and \
                        len(flying) + len(batch) < jobs:
                    prepared = self._prepare_upload(uploads[started])
                    if isinstance(prepared, UploadSkipped):
                        results[started] = prepared
                    else:
                        batch.append((started, uploads[started], prepared, Transfer()))
                    started += 1
                if batch:
                    self.remote.commit_pending()    # durable before any of it is sent
                    for item in batch:
                        flying[item[0]] = item[3]
                        work_queue.put(item)
                while reported in results:
                    # Recorded whole or not begun: a signal in the middle would lose
                    # an answer already taken from `results` (the handler below
                    # records the rest).
                    with signals_held():
                        self._finish_upload(uploads[reported], results.pop(reported))
                        reported += 1
                if reported >= started and (self.stopping or started >= len(uploads)):
                    break
                if flying:
                    take_answers(0.2)
        except (KeyboardInterrupt, Interrupted):
            self.stopping = True
            self.stop_event.set()
            self._land_in_flight(flying, take_answers)
            for index in sorted(results):        # what came back, in plan order
                if index >= reported:
                    self._finish_upload(uploads[index], results[index])
            raise
        finally:
            for _ in threads:
                work_queue.put(None)
            bar.close()

    def _land_in_flight(self, flying: dict, take_answers) -> None:
        """After Ctrl-C or SIGTERM: abandon the uploads still sending their body, and wait
        (up to the read timeout) for the answers to those Imgur has received whole, so
        that they are recorded now rather than found, or missed, by the next run."""
        awaited = {index for index, transfer in flying.items()
                   if transfer.abandon_unless_sent()}
        if awaited:
            self.out.warn("stopping: waiting for Imgur's answer to %s it has received "
                          "(press Ctrl-C again to abandon %s)"
                          % (_count(len(awaited), "upload"),
                             "it" if len(awaited) == 1 else "them"))
        now = time.monotonic()
        awaited_until = now + self.remote.answer_timeout + 1
        abandoned_until = now + 2               # they stop at their next read of the body
        try:
            while flying:
                now = time.monotonic()
                waiting_for_awaited = awaited & set(flying) and now < awaited_until
                if not waiting_for_awaited and now >= abandoned_until:
                    break
                take_answers(0.1)
        except (KeyboardInterrupt, Interrupted):
            unanswered = awaited & set(flying)
            for transfer in flying.values():
                transfer.abandon()
            if unanswered:
                self.out.warn("abandoned %s Imgur may have received: the next run looks "
                              "for %s before sending %s again"
                              % (_count(len(unanswered), "upload"),
                                 "it" if len(unanswered) == 1 else "them",
                                 "it" if len(unanswered) == 1 else "them"))

    def _prepare_upload(self, action: Upload) -> "dict | UploadSkipped":
        """Checks before an upload starts; returns its pending record, or why not."""
        album_id = self.album_id(action.album)
        if album_id is None:
            return UploadSkipped("no album")             # its creation failed
        f = action.file
        try:
            st = os.stat(f.path)
        except OSError:
            return UploadSkipped("vanished")
        if (st.st_size, st.st_mtime_ns) != (f.size, f.mtime_ns):
            return UploadSkipped("changed")
        blocked = self.remote.rate.reserve_upload()
        if blocked:
            self.stop_for(RateLimitError(blocked, self.remote.rate.reset_at()))
            return UploadSkipped("not started")
        pending = self.remote.begin_upload(album_id, f)
        self.pending_of[id(action)] = pending
        return pending

    def _send_upload(self, action: Upload, pending: dict, bar,
                     transfer: Transfer) -> UploadResult:
        """In a worker thread."""
        sent = [0]

        def on_bytes(total_read):
            # Count the file's bytes only (not the multipart framing), so the bar's
            # total, the sum of the file sizes, is reached and not passed.
            counted = min(total_read, action.file.size)
            bar.update(max(0, counted - sent[0]))
            sent[0] = max(sent[0], counted)
        return self.remote.upload(pending, action.file.path, on_bytes, transfer,
                                  self.stop_event, self.out.detail,
                                  description=action.file.caption or None)

    def _finish_upload(self, action: Upload,
                       result: "UploadResult | UploadSkipped | BaseException") -> None:
        """In the main thread, in plan order: record, print, log."""
        f = action.file
        where = self.where(action.album, f.name)
        pending = self.pending_of.pop(id(action), None)
        if isinstance(result, UploadSkipped):
            if result.reason in ("vanished", "changed"):
                self.out.warn("%s %s since the scan: it waits for the next run"
                              % (where, result.reason))
            if result.reason == "changed":
                self.tally.held += 1            # not in sync: exit 1, not 0
            return
        if isinstance(result, BaseException):
            if pending:
                self.remote.end_upload(pending, result)
            self._report_upload_failure(f, where, result)
            return
        album_id = self.album_id(action.album)
        self.remote.record_upload(pending, result, action.replaces, caption=f.caption)
        for extra in result.extra_ids:
            self.fail(where, "Imgur holds another copy, image %s; adopted the oldest, left "
                             "this one alone" % extra)
        if action.replaces:
            self.done("~", "replace", where, "replaced", album_id)
        elif action.repair:
            self.done("+", "upload", where + REPAIRED_NOTE, "uploaded", album_id)
        else:
            self.done("+", "upload", where, "uploaded", album_id)
        self.log.write("  image %s in album %s" % (result.image_id, album_id))

    def _report_upload_failure(self, f: ScannedFile, where: str, error: BaseException) -> None:
        if isinstance(error, UploadAbandoned):
            return
        if isinstance(error, (RateLimitError, AuthError, ServiceDownError)):
            self.stop_for(error)
        elif isinstance(error, (Interrupted, KeyboardInterrupt)):
            raise error
        elif isinstance(error, RequestFailed) and error.status == 400:
            self.state.set_refused(f.hash, {"name": f.name, "message": str(error)})
            self.fail(where, "Imgur refused the file (%s%s); it is retried once it changes"
                      % (error, sent_as_note(f.name)))
        elif isinstance(error, RequestFailed):
            self.fail(where, str(error))
        else:
            self.fail(where, redact(repr(error)))

    # -- moves, repairs, deletions ------------------------------------------------------

    def do_Move(self, action: Move) -> None:
        destination = self.album_id(action.album)
        if destination is None:
            return
        items = list(action.items)
        try:
            self.remote.add_images(destination, [item.image_id for item in items])
        except RequestFailed as e:
            # Imgur refuses the whole add if one image of it is gone (403 "You must own
            # all the image ids ..."): upload the gone ones, add the rest.
            if e.status != 403:
                raise
            gone = [item for item in items if not self.remote.image_exists(item.image_id)]
            if not gone:
                raise
            items = [item for item in items if item not in gone]
            if items:
                self.remote.add_images(destination, [item.image_id for item in items])
            self._upload_gone_images(action.source, destination, gone)
        if items:
            self.remote.remove_images(action.source, [item.image_id for item in items])
        for item in items:
            record = item.record
            f = item.file
            self.state.refile(action.source, item.old_name, destination, f.name,
                              record._replace(size=f.size, mtime_ns=f.mtime_ns, inode=f.inode))
            self.done(">", "move", "%s -> %s" % (self.where(action.source, item.old_name),
                                                 self.where(destination, f.name)), "moved",
                      destination)

    def _upload_gone_images(self, source: str, destination: str, gone: list) -> None:
        """Files whose image was deleted on Imgur go up again, into their new album.
        They are uploads, not replacements: the delete guard does not count them."""
        for item in gone:
            self.state.drop_file(source, item.old_name, item.image_id)
            self.out.detail("%s: image %s is gone on Imgur; uploading it again"
                            % (self.where(source, item.old_name), item.image_id))
        self.run_uploads([Upload(destination, file=item.file, repair=True) for item in gone])

    def do_Repair(self, action: Repair) -> None:
        if not self.remote.image_exists(action.record.image_id):
            f = action.file
            if f is None or f.hash is None:
                return
            self.state.drop_file(action.album, action.name, action.record.image_id)
            self.run_uploads([Upload(action.album, file=f, repair=True)])
            return
        self.remote.add_images(action.album, [action.record.image_id])
        self.done("+", "re-add", self.where(action.album, action.name) + REPAIRED_NOTE,
                  "repaired", action.album)

    def do_UpdateCaption(self, action: UpdateCaption) -> None:
        """One image update with the new description; held back by the credit reserve
        as uploads are. The file's stat data are recorded only now: until then, the
        next run reads it again and plans the update again."""
        album_id = self.album_id(action.album)
        f = action.file
        record = self.state.albums[album_id].files.get(f.name) if album_id else None
        if record is None:
            return
        blocked = self.remote.rate.exhausted()
        if blocked:
            raise RateLimitError(blocked, self.remote.rate.reset_at())
        self.remote.update_image(record.image_id, {"description": action.caption})
        self.state.set_file(album_id, f.name, record._replace(
            hash=f.hash, hash_version=HASH_VERSION, size=f.size, mtime_ns=f.mtime_ns,
            inode=f.inode, caption=action.caption))
        self.done("&", "caption", self.where(album_id, f.name), "captions updated", album_id)

    def do_Delete(self, action: Delete) -> None:
        self.remote.delete_image(action.image_id)
        self.state.drop_file(action.album, action.name, action.image_id)
        self.done("-", "delete", self.where(action.album, action.name), "deleted", action.album)

    def do_PurgeReplaced(self, action: PurgeReplaced) -> None:
        """A planned one: an old version whose delete failed on an earlier run."""
        if self._purge(action.album, action.image_id):
            self.out.action("-", action.lines(self.where)[0])

    def _purge(self, album_id: str, image_id: str) -> bool:
        if image_id not in self.state.albums[album_id].to_delete:
            return False
        self.remote.delete_image(image_id)
        self.state.deleted(album_id, image_id)
        self.log.write("delete old version %s" % image_id)
        return True

    def purge_replaced(self) -> None:
        """Delete old versions replaced during this run (after their new versions)."""
        for album_id, album in list(self.state.albums.items()):
            for image_id in list(album.to_delete):
                if self.stopping:
                    return
                try:
                    self._purge(album_id, image_id)
                except (RateLimitError, AuthError, ServiceDownError) as e:
                    self.stop_for(e)
                except RequestFailed as e:
                    self.fail("delete of old version %s" % image_id, str(e))


def unverified_album_reason(album_id: str, problem: str) -> str:
    return ("album %s may be public (%s), so nothing was uploaded into it; the next run "
            "checks it again first. To make sure, set it to hidden on imgur.com"
            % (ALBUM_URL.format(album_id), problem))


def _as_int(value) -> int:
    """A number field of an answer; "" or null (unset fields) count as 0."""
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _remove_leftover(path: str) -> None:
    """Remove a stale download (never followed: a symlink planted there goes, not what
    it points to); one that cannot be removed stays, harmless, for the next run."""
    try:
        os.unlink(path)
    except OSError:
        pass


def current_umask() -> int:
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


def safe_file_name(name: str | None, image_id: str, mime: str | None) -> str:
    """A file name from Imgur (which anyone can set) that is safe on every OS."""
    extension = EXTENSION_OF_MIME.get(mime or "", "jpg")
    base = name or image_id
    base = base.replace("\\", "/").split("/")[-1]
    base = "".join(c for c in base if c.isprintable() and c not in '<>:"|?*')
    base = base.strip().strip(".").lstrip("-")
    stem, dot, ext = base.rpartition(".")
    if not dot or ext.lower() not in IMAGE_EXTENSIONS:
        stem, ext = base, extension
    if not stem or stem.upper().split(".")[0] in WINDOWS_RESERVED_NAMES:
        stem = "%s_%s" % (stem, image_id) if stem else image_id
    # File systems count bytes (255 on most), not characters: 120 CJK characters are
    # 360 bytes. Leave room for a " (12)" suffix and the extension.
    stem = stem[:DOWNLOAD_NAME_MAX].encode("utf-8")[:DOWNLOAD_NAME_MAX_BYTES]
    stem = stem.decode("utf-8", "ignore").rstrip(" .") or image_id
    return "%s.%s" % (stem, ext)


def place_download(tmp_path: str, folder: str, name: str) -> str:
    """Move a finished download into the folder under `name`, never over another file:
    an existing name gets a suffix. Returns the final path."""
    stem, ext = os.path.splitext(name)
    folder_real = os.path.realpath(folder)
    for index in range(1000):
        candidate = os.path.join(folder, name if index == 0 else "%s (%d)%s" % (stem, index, ext))
        if os.path.dirname(os.path.realpath(candidate)) != folder_real:
            raise RequestRefused("unsafe file name %r" % name, 0)
        try:
            os.link(tmp_path, candidate)          # fails if the name exists: no overwrite
        except FileExistsError:
            continue
        except OSError:
            if os.path.lexists(candidate):
                continue
            os.replace(tmp_path, candidate)       # file systems without hard links
            return candidate
        os.unlink(tmp_path)
        return candidate
    raise RequestRefused("no free file name for %r" % name, 0)


###############################################################################
# Commands: sync, auth, status, watch, links, captions
###############################################################################

def api_base_url(env: Environment) -> str:
    url = env.api_url
    if not re.match(r"https?://[^/]", url):
        raise UsageError("IMGUR_API_URL must start with http:// or https:// (it is %r)" % url)
    return url if url.endswith("/") else url + "/"


def read_albums(home: str, state: StateStore, out: Output) -> tuple:
    """albums.txt's bytes and its parse; bad lines are a UsageError listing them all."""
    path = os.path.join(home, ALBUMS_FILE)
    example = os.path.join(os.path.dirname(os.path.abspath(__file__)), "albums.txt.example")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise UsageError("no %s in %s: create it with one folder per line (see %s)"
                         % (ALBUMS_FILE, home, example))
    except OSError as e:
        raise UsageError("cannot read %s: %s" % (path, e.strerror))
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UsageError("%s is saved as UTF-16 (Notepad's \"Unicode\"): save it as UTF-8"
                         % path)
    parsed = parse_albums_txt(data, home, state.folder_keys())
    if not parsed.lines and not parsed.errors:
        out.warn("%s lists no folder yet: add one folder per line (see %s)" % (path, example))
    if parsed.errors:
        raise UsageError("%s has %d bad line%s; nothing was changed:" % (
            path, len(parsed.errors), "" if len(parsed.errors) == 1 else "s"),
            ["  %s:%d: %s" % (ALBUMS_FILE, n, m) for n, m in parsed.errors])
    return data, parsed


def settle_pending_downloads(state: StateStore, scans: dict) -> None:
    """A download a crash cut between renaming the photo into place and recording it:
    find the photo by its content in the scanned folder and record it (no request)."""
    by_folder = {folder_key(folder): scan for folder, scan in scans.items()}
    for pending in list(state.pending):
        if pending["op"] != "download":
            continue
        scan = by_folder.get(folder_key(pending["folder"]))
        album = state.albums.get(pending["album"])
        if scan is None or album is None:
            continue                            # its folder is not scanned this run
        recorded = {record.image_id for record in album.files.values()}
        if pending["image_id"] not in recorded:
            for name, found in sorted(scan.files.items()):
                if found.hash == pending["hash"] and name not in album.files:
                    state.set_file(pending["album"], name, FileRecord(
                        pending["image_id"], found.hash, found.size, found.mtime_ns,
                        found.inode))
                    break
        state.resolve_pending(pending["id"])


def settle_checked(parsed: ParsedAlbums, state: StateStore, scans: dict) -> list:
    """settle_targets, refusing (exit 2) lines that end up naming one album twice."""
    targets = settle_targets(parsed.lines, state, scans)
    errors = target_conflicts(targets)
    if errors:
        raise UsageError("%s names one album or folder twice; nothing was changed:"
                         % ALBUMS_FILE,
                         ["  %s:%d: %s" % (ALBUMS_FILE, n, m) for n, m in errors])
    return targets


def scan_listed_folders(parsed: ParsedAlbums, state: StateStore, rehash: bool,
                        out: Output, captions: bool = False, verify: bool = False) -> dict:
    """Scan every folder albums.txt names (with what the state knows of each); with
    `captions`, the captions of the files read (and, with `verify`, of those whose
    record has none)."""
    by_key = {folder_key(a.folder): a for a in state.albums.values()}
    folders = {}
    for line in parsed.lines:
        album = state.albums.get(line.album_id) if line.album_id else None
        folder = line.path or (album.folder if album else None)
        if folder:
            known = album or by_key.get(folder_key(folder))
            folders[folder] = known.files if known else {}
    old_hashes = state.holds_old_hashes()
    scans = {folder: scan_folder(folder, known, state.scanned_at_ns, rehash, read_now=False,
                                 old_hashes=old_hashes, captions=captions,
                                 verify_captions=captions and verify)
             for folder, known in folders.items()}
    to_read = [file for scan in scans.values() for file in scan.to_read]
    # Shown from the start of hashing, with its total; a no-op run shows none.
    progress = out.progress("hash", len(to_read), sum(file.size for file in to_read))
    try:
        for scan in scans.values():
            read_files(scan, progress, old_hashes, captions)
    finally:
        progress.close()
    return scans


class cyclic_gc_paused:
    """Loading the state and scanning make two small tuples per file and no reference
    cycle: the cyclic garbage collector, which would walk them all again and again as
    they pile up, is paused meanwhile (a quarter of a no-op run's time at 100,000 files),
    and what they made is then frozen out of its later walks. They are still freed as
    usual when no longer referenced, and unfrozen when the run ends (a long-running
    process must not keep them out of its collections for good)."""

    def __enter__(self):
        import gc
        self.was_enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc):
        import gc
        gc.freeze()             # what was made stays out of later collections' walks
        if self.was_enabled:
            gc.enable()


class SyncRun:
    """One `sync`: read, scan, plan, and (when the plan needs it) talk to Imgur."""

    def __init__(self, home: str, options: SyncOptions, out: Output, log: Log,
                 env: Environment):
        self.home = home
        self.options = options
        self.env = env
        self.out = out
        self.log = log
        self.tally = Tally()
        self.started = time.monotonic()
        self.api = None
        self._download_folders = {}             # album ID -> folder chosen this run
        self.planned_uploads = 0                # for the time left at the hourly limit
        self.unsettled = set()                  # (album ID, name): pending check failed

    def run(self) -> int:
        """read -> scan -> plan -> (reconcile with Imgur, plan again) -> execute -> fold
        the state -> report. Only the plan decides; only the executor (and the recovery
        passes of reconcile) change anything on Imgur."""
        with cyclic_gc_paused():
            state = StateStore.load(self.home, writable=not self.options.dry_run,
                                    clock=self.env.clock)
            albums_bytes, parsed = read_albums(self.home, state, self.out)
            scan_started_ns = time.time_ns()
            scans = self.scan(parsed, state)
            targets, plan = self.plan(parsed, state, scans, {})
        self.warn_empty_albums(targets, scans)
        if state.restored:
            state.begin_restore()
        # Missing credentials are decided before anything changes (exit 5, README "Exit codes").
        needs_imgur = self.needs_imgur(state, plan)
        remote = self.connect(state, plan) if needs_imgur else None
        if needs_imgur and remote is None:      # declined after an offered `auth`
            self.out.info("nothing was changed; see every action first with `%s`, then "
                          "run `%s`" % (command_line(self.home, "--dry-run"),
                                        command_line(self.home)))
            return EXIT_OK
        try:
            if remote is not None:
                targets, plan = self.reconcile(remote, parsed, state, scans, targets, plan)
            self.report_plan_problems(plan)
            self.planned_uploads = plan.uploads
            if self.options.dry_run:
                print_plan(plan, state, self.out)
                return EXIT_OK
            self.execute(remote, state, targets, plan, scan_started_ns)
        except RateLimitError as e:              # before the executor ran (pending checks)
            self.tally.rate_limit = e
        except ServiceDownError as e:
            self.tally.stopped = e
        finally:
            if not self.options.dry_run:
                with signals_held():            # a second Ctrl-C must not cut the save
                    self.finish_state(state, plan, scans, scan_started_ns)
            import gc
            gc.unfreeze()                       # see cyclic_gc_paused
        if not self.options.dry_run:
            self.rewrite_albums(albums_bytes, parsed, targets, state)
        return self.summarize(scans)

    def scan(self, parsed: ParsedAlbums, state: StateStore) -> dict:
        """Walk the listed folders (hashing what is new or changed) and say what could
        not be read."""
        scans = scan_listed_folders(parsed, state, self.options.rehash, self.out,
                                    self.options.captions, self.options.verify)
        for scan in scans.values():
            if not self.options.dry_run:
                for path in scan.leftovers:
                    _remove_leftover(path)
            for name, why in sorted(scan.read):
                self.out.detail("read %s (%s)" % (os.path.join(scan.folder, name), why))
            for name in scan.skipped_names:
                self.out.detail("skip %s" % os.path.join(scan.folder, name))
            for name, reason in scan.unreadable:
                self.tally.failed += 1
                self.out.error("%s: cannot be read (%s); nothing done with it this run: "
                               "fix its permissions or remove it"
                               % (os.path.join(scan.folder, name), reason))
        settle_pending_downloads(state, scans)
        return scans

    def plan(self, parsed: ParsedAlbums, state: StateStore, scans: dict,
             remote: dict) -> tuple:
        """The targets (albums.txt lines settled against the state and the scans) and
        the plan for them, given what is known of Imgur (`remote`: nothing at first)."""
        targets = settle_checked(parsed, state, scans)
        for target in targets:
            self._restore_download_folder(target, remote)
        options = PlanOptions(self.options.force, self.options.max_delete, self.options.verify,
                              command_line(self.home))
        return targets, plan_sync(targets, scans, state, remote, options)

    def warn_empty_albums(self, targets: list, scans: dict) -> None:
        for target in targets:
            scan = scans.get(target.folder)
            if target.mode == "create" and scan is not None and not scan.files \
                    and scan.skipped:
                self.out.warn("%s has no file Imgur takes (%s skipped): its album will "
                              "stay empty; convert them to JPEG to sync them" % (
                                  target.folder, ", ".join("%d %s" % (n, e) for e, n
                                                           in sorted(scan.skipped.items()))))
            elif target.mode == "create" and scan is not None and not scan.error \
                    and not scan.files and not scan.unreadable:
                self.out.warn("%s holds no photo yet: its album starts empty" % target.folder)

    @staticmethod
    def needs_imgur(state: StateStore, plan: Plan) -> bool:
        """Whether the run must reach Imgur: a plan with requests, an album to read,
        an interrupted operation to settle, an album still to verify hidden."""
        return bool(plan.requests or plan.needs_remote or any(
            p["op"] in NETWORK_PENDING for p in state.pending) or any(
            a.privacy_unverified and a.listed for a in state.albums.values()))

    def reconcile(self, remote: RemoteReader, parsed: ParsedAlbums, state: StateStore,
                  scans: dict, targets: list, plan: Plan) -> tuple:
        """Bring the state in line with Imgur before the plan is trusted, then plan
        again with the albums the plan needs to see."""
        # Before anything else, so that a lost run's uploads are known to the pending
        # checks too; it reads only, and only albums it would upload into.
        self.adopt_restored_uploads(remote, state, plan)
        self.resolve_pending(remote, state)
        held_albums = self.check_unverified_albums(remote, state)
        albums = self.fetch_remote(remote, targets, plan)
        targets, plan = self.plan(parsed, state, scans, albums)
        self.hold_unsettled_uploads(plan)
        plan.actions = [a for a in plan.actions if a.album not in held_albums
                        and getattr(a, "source", None) not in held_albums]
        self.clear_completed_downloads(state, albums, plan)
        return targets, plan

    def execute(self, remote: Remote | None, state: StateStore, targets: list, plan: Plan,
                scan_started_ns: int) -> None:
        folders = {t.key: t.folder for t in targets}
        folders.update({a: s.folder for a, s in state.albums.items() if a not in folders})
        executor = Executor(state, remote, self.out, self.log, self.options, self.tally,
                            folders, scan_started_ns)
        executor.run(plan.actions)

    def _restore_download_folder(self, target: Target, remote: dict) -> None:
        """An ALBUM line downloads into a new folder named after the album's title."""
        if target.mode != "download" or target.album_id not in remote:
            return
        album = remote[target.album_id]
        target.folder = self.download_folder(album)

    def download_folder(self, album: RemoteAlbum) -> str:
        """Its title, or its ID if untitled; `Title (ID)` if that folder exists."""
        if album.album_id not in self._download_folders:
            title = safe_folder_name(album.title) or album.album_id
            folder = os.path.join(self.home, title)
            if os.path.lexists(folder) or is_home_file_name(title):
                folder = os.path.join(self.home, "%s (%s)" % (title, album.album_id))
            self._download_folders[album.album_id] = folder
        return self._download_folders[album.album_id]

    # -- the network side ----------------------------------------------------------

    def connect(self, state: StateStore, plan: Plan):
        """A client with usable credentials; None when the user, asked at a terminal
        after the `auth` this run offered, chose not to go on."""
        # --dry-run changes nothing, not even a file's mode: it only warns.
        credentials = Credentials.load(self.home, self.out, fix_mode=not self.options.dry_run,
                                       identity=self.env.client_identity)
        if not credentials.usable:
            if stdin_is_terminal() and not self.options.dry_run:
                answer = prompt("No Imgur authorization yet. Run `%s` now? [Y/n] "
                                % auth_command(self.home))
                if answer.strip().lower() in ("", "y", "yes"):
                    run_auth(self.home, self.out, self.log, self.env, take_lock=False)
                    credentials = Credentials.load(self.home, self.out,
                                                   identity=self.env.client_identity)
                    if credentials.usable and not self.go_on_after_auth(plan, state):
                        return None
            if not credentials.usable:
                raise AuthError("imgurbox is not authorized yet: run `%s` (nothing was "
                                "changed)" % auth_command(self.home))
        self.api = Api(credentials, self.log, self.out, self.env)
        self.api.rate.restore(state.rate)
        if self.options.dry_run:
            self.api.read_only = True
            return RemoteReader(self.api, state)
        self.api.before_first_write = state.begin_writing
        return Remote(self.api, state)

    def go_on_after_auth(self, plan: Plan, state: StateStore) -> bool:
        """After the `auth` a first run offered (at a terminal, so someone is there):
        what the sync would do, and whether to do it now (README, "Getting started")."""
        uploads = plan.uploads
        albums = sum(isinstance(a, CreateAlbum) for a in plan.actions)
        summary = "This sync would upload %s into %s: %s" % (
            _count(uploads, "file"), _count(albums, "new album"),
            _count(plan.credits, "credit"))
        if uploads > UPLOADS_PER_HOUR:
            summary += "; " + hours_at_the_limit(uploads)
        self.out.show(summary + ".")
        while True:
            answer = prompt("Sync now? [Y/n, or d to see every action first] ")
            answer = answer.strip().lower()
            if answer in ("d", "dry-run"):
                print_plan(plan, state, self.out)
                continue
            return answer in ("", "y", "yes")

    def adopt_restored_uploads(self, remote: RemoteReader, state: StateStore,
                               plan: Plan) -> None:
        """A state restored from state.json.bak (or lost) does not know what the runs
        after it uploaded: in each album it would upload into, images it does not know
        whose name is that of a file to upload are taken for those uploads (README, "Reliability")."""
        uploads = collections.defaultdict(list)
        for action in plan.actions:
            if isinstance(action, Upload) and action.album in state.restore_owed:
                uploads[action.album].append(action)
        adopted = 0
        for album_id, actions in sorted(uploads.items()):
            try:
                images = remote.album_images(album_id)
            except RequestFailed as e:
                # Checked again next run; until then none of its uploads is sent.
                self.unsettled.update((album_id, a.file.name) for a in actions)
                self.tally.failed += 1
                self.out.error("cannot look in album %s for what a run the restored "
                               "state.json does not know uploaded: %s; its uploads wait"
                               % (album_id, e))
                continue
            adopted += self._adopt_unknown_images(state, album_id, actions, images)
            state.restore_check_done(album_id)
        if adopted:
            self.tally.counts["adopted"] += adopted
            self.out.info("%s %s of an earlier run that state.json did not know" % (
                "would adopt" if self.options.dry_run else "adopted",
                _count(adopted, "upload")))

    def _adopt_unknown_images(self, state: StateStore, album_id: str, actions: list,
                              images: list) -> int:
        known = state.known_image_ids()
        by_name = collections.defaultdict(list)
        for image in images:
            if image.image_id not in known and image.name:
                by_name[unicodedata.normalize("NFC", image.name)].append(image)
        adopted = 0
        for action in actions:
            sent = imgur_name(action.file.name)              # the name Imgur was sent
            found = sorted(by_name.pop(unicodedata.normalize("NFC", sent), []),
                           key=lambda image: (image.datetime, image.image_id), reverse=True)
            if not found:
                continue
            newest, file = found[0], action.file
            if action.replaces:
                state.add_to_delete(album_id, action.replaces)
            # A file edited after that upload is recorded with no hash, so that the next
            # plan replaces the image. The lost run hashed the file before it sent it,
            # so a later mtime means an edit (clocks agree to a few seconds).
            uploaded_ns = self.env.clock.local_ns(newest.datetime + ADOPT_CLOCK_TOLERANCE)
            if file.mtime_ns > uploaded_ns:
                record = FileRecord(newest.image_id, "", 0, 0, 0)
            else:
                record = FileRecord(newest.image_id, file.hash, file.size, file.mtime_ns,
                                    file.inode)
            state.set_file(album_id, file.name, record)
            adopted += 1
            if not self.options.dry_run:
                self.log.write("adopted image %s for %s" % (newest.image_id, file.name))
            for extra in found[1:]:
                state.ignore_image(album_id, extra.image_id)
                self.tally.failed += 1
                self.out.error("image %s has the name of %s too; left alone: delete it on "
                               "Imgur if it is a copy" % (extra.image_id, file.path))
        return adopted

    def resolve_pending(self, remote: RemoteReader, state: StateStore) -> None:
        """Settle uploads and album creations a crash left unanswered (README, "Reliability")."""
        uploads = []
        for pending in list(state.pending):
            if pending["op"] == "create_album":
                self._resolve_pending_album(remote, pending)
            elif pending["op"] != "upload":
                continue
            elif pending["album"] not in state.albums:
                remote.drop_pending(pending)
            else:
                uploads.append(pending)
        before = self.tally.counts["adopted"]
        self._resolve_pending_uploads(remote, uploads)
        adopted = self.tally.counts["adopted"] - before
        if adopted:
            self.out.info("%s %s of the interrupted run" % (
                "would adopt" if self.options.dry_run else "adopted",
                _count(adopted, "upload")))

    def _resolve_pending_album(self, remote: RemoteReader, pending: dict) -> None:
        try:
            found = remote.look_for_album(pending)
        except RequestFailed as e:           # checked again next run
            self.tally.failed += 1
            self.out.error("cannot check an interrupted album creation for %s: %s"
                           % (pending["folder"], e))
            return
        if len(found) > 1:
            self.tally.failed += 1
            self.out.error("%d albums titled %r may come from one interrupted "
                           "creation; adopted none: delete the extra ones on Imgur"
                           % (len(found), pending["title"]))
            return
        if found:
            # Checked hidden by check_unverified_albums, before anything goes in.
            remote.record_album(pending, found[0])
            if not self.options.dry_run:
                self.log.write("adopted album %s for %s" % (found[0], pending["folder"]))
        else:
            remote.drop_pending(pending)

    def _resolve_pending_uploads(self, remote: RemoteReader, pendings: list) -> None:
        """Look for interrupted uploads; one not found that is younger than the settle
        time may still be being stored by Imgur: wait out the rest, then look again."""
        cache, young = {}, []
        for pending in pendings:
            found = self._check_pending_upload(remote, pending, cache)
            if found is None:
                continue
            if not found and remote.settle_wait(pending) > 0:
                young.append(pending)
                continue
            self._settle_pending_upload(remote, pending, found)
        if not young:
            return
        wait = max(remote.settle_wait(p) for p in young)
        if wait > 0:
            self.out.info("waiting %.0f s for Imgur to finish %s an interrupted run sent, "
                          "so that nothing is uploaded twice"
                          % (wait, _count(len(young), "upload")))
            time.sleep(wait)
        cache = {}
        for pending in young:
            found = self._check_pending_upload(remote, pending, cache)
            if found is not None:
                self._settle_pending_upload(remote, pending, found)

    def _check_pending_upload(self, remote: RemoteReader, pending: dict, cache: dict):
        """The candidates for a pending upload, or None when the check itself failed."""
        try:
            return remote.look_for_upload(pending, cache)
        except RequestFailed as e:
            if e.status == 404:
                return []
            # Unsettled: that file is not uploaded again this run (it may be on Imgur
            # already); the check is repeated next run.
            self.unsettled.add((pending["album"], pending["name"]))
            self.tally.failed += 1
            self.out.error("cannot check an interrupted upload of %s: %s"
                           % (pending["name"], e))
            return None

    def _settle_pending_upload(self, remote: RemoteReader, pending: dict,
                               found: list) -> None:
        """Adopt the oldest candidate (if any), or drop the record: not found once the
        settle time is over, it never arrived."""
        if not found:
            remote.drop_pending(pending)
            return
        # The name may still hold the version this upload replaces: keep that image
        # recorded for deletion, or it would be forgotten on Imgur.
        old = remote.state.albums[pending["album"]].files.get(pending["name"])
        remote.record_upload(pending, UploadResult(found[0], tuple(found[1:])),
                             old.image_id if old is not None else None)
        self.tally.counts["adopted"] += 1
        if not self.options.dry_run:
            self.log.write("adopted image %s for %s" % (found[0], pending["name"]))
        for extra in found[1:]:
            self.tally.failed += 1
            self.out.error("image %s looks like a second copy of %s; left alone"
                           % (extra, pending["name"]))

    def check_unverified_albums(self, remote: RemoteReader, state: StateStore) -> set:
        """Albums this tool created that Imgur has not shown hidden yet are checked
        before anything else; returns those still not shown hidden (held this run)."""
        held = set()
        for album_id, album in sorted(state.albums.items()):
            if not (album.privacy_unverified and album.listed):
                continue
            try:
                if isinstance(remote, Remote):
                    problem = remote.make_hidden(album_id, album.title)
                else:                           # a dry run reads only
                    problem = remote.hidden_problem(album_id)
            except RequestFailed as e:
                problem = "it could not be read: %s" % e
            if problem:
                held.add(album_id)
                self.tally.failed += 1
                self.out.error("%s: %s" % (album.folder,
                                           unverified_album_reason(album_id, problem)))
                self.log.write("album %s may be public: %s" % (album_id, problem))
            elif not self.options.dry_run:
                state.set_album(album_id, privacy_unverified=False)
                self.log.write("album %s checked hidden" % album_id)
        return held

    def fetch_remote(self, remote: RemoteReader, targets: list, plan: Plan) -> dict:
        """GET the albums the plan needs to see: lines to link or download, --verify."""
        albums = {}
        for target in targets:
            album_id = target.album_id
            if album_id not in plan.needs_remote or album_id in albums:
                continue
            try:
                if target.mode == "sync":              # --verify: the images only
                    albums[album_id] = RemoteAlbum(album_id, True,
                                                   images=remote.album_images(album_id))
                    continue
                data = remote.album(album_id)
            except RequestFailed as e:
                # 404: the album is gone. Anything else fails this album only.
                albums[album_id] = RemoteAlbum(album_id, False,
                                               error=None if e.status == 404 else str(e))
                continue
            # Owners compared by name, else by number (Imgur has answered account_url
            # null with account_id set); a null, "" or 0 owner is anonymous, never ours.
            owner = _remote_text(data.get("account_url")) or None
            owner_id = _as_int(data.get("account_id"))
            owned = False
            if owner:
                owned = owner == self.account_identity(remote, need_id=False)[0]
            if not owned and owner_id:
                owned = owner_id == self.account_identity(remote, need_id=True)[1]
            albums[album_id] = RemoteAlbum(
                album_id, True, _remote_text(data.get("title")) or None,
                owner or (str(owner_id) if owner_id else None), owned=owned,
                images=_remote_images(data.get("images")))
        return albums

    def account_identity(self, remote: RemoteReader, need_id: bool) -> tuple:
        """(username, numeric account ID) of the account imgurbox acts for; one
        GET /3/account/me when credentials.json does not hold what is needed."""
        name = self.api.credentials["account_username"]
        number = _as_int(self.api.credentials["account_id"])
        if not name or (need_id and not number):
            account = remote.account()
            name = name or _remote_text(account.get("url")) or None
            number = number or _as_int(account.get("id"))
            self.api.credentials.update(account_username=name, account_id=number or None)
        return name, number

    # -- after the plan ----------------------------------------------------------------

    def clear_completed_downloads(self, state: StateStore, remote: dict, plan: Plan) -> None:
        """An album marked incomplete whose listing shows nothing left to download is
        complete (a crash may have come between its last download and the flag)."""
        downloading = {a.album for a in plan.actions if isinstance(a, Download)}
        for album_id, listing in remote.items():
            album = state.albums.get(album_id)
            if album is not None and album.incomplete and listing.found \
                    and not listing.error and album_id not in downloading:
                state.set_album(album_id, incomplete=False)

    def hold_unsettled_uploads(self, plan: Plan) -> None:
        """No upload of a file whose earlier, interrupted upload could not be checked."""
        held = [a for a in plan.actions if isinstance(a, Upload)
                and (a.album, a.file.name) in self.unsettled]
        plan.actions = [a for a in plan.actions if not any(a is h for h in held)]
        self.tally.held += len(held)

    def report_plan_problems(self, plan: Plan) -> None:
        for folder, message in plan.errors:
            self.tally.failed += 1
            self.tally.failed_what.append("%s (%s)" % (
                where_in(folder), message.split(":", 1)[0].split(" (", 1)[0]))
            self.out.error("%s: %s" % (folder, message))
        for held in plan.held:
            self.tally.held += len(held.actions)
            self.out.error("%s: %s" % (held.folder, held.reason))
        for folder, name in plan.refused:
            self.tally.held += 1
            self.out.warn("%s: Imgur refused this file before; it is retried once it "
                          "changes" % os.path.join(folder, name))
        for folder, message in plan.notes:
            self.out.warn("%s: %s" % (folder, message))

    def finish_state(self, state: StateStore, plan: Plan, scans: dict,
                     scan_started_ns: int) -> None:
        if self.api is not None and self.api.requests_sent:
            snapshot = self.api.rate.snapshot()
            if snapshot != state.rate:
                state.rate = snapshot
                state.dirty = True
        for target in plan.targets:     # a moved folder's album follows it, once titled
            album = state.albums.get(target.album_id or "")
            if target.mode == "sync" and album is not None and target.folder \
                    and folder_key(album.folder) != folder_key(target.folder) \
                    and (album.download_only or album.title == os.path.basename(target.folder)):
                state.set_album(target.album_id, folder=target.folder)
        for album_id, found in plan.stat_updates:
            record = state.albums[album_id].files.get(found.name)
            if record is not None and content_matches(found, record):
                # Read while captions are off, a file may have a new caption unseen: it
                # is forgotten, and a --verify run with captions on settles it.
                seen = found.caption is not None or \
                    (found.size, found.mtime_ns, found.inode) == record[2:5]
                state.touch_stat(album_id, found.name, record._replace(
                    size=found.size, mtime_ns=found.mtime_ns, inode=found.inode,
                    hash=found.hash, hash_version=HASH_VERSION,
                    caption=record.caption if seen else None))
        for album_id, name, image_id, fields in plan.learnt:
            record = state.albums[album_id].files.get(name)
            if record is not None and record.image_id == image_id:
                state.touch_stat(album_id, name, record._replace(**fields))
        listed = {t.album_id for t in plan.targets}
        # An album created this run has no ID in its target: found by its folder, else
        # it would be saved as unlisted and the next (no-op) run would rewrite state.json.
        created = {folder_key(t.folder) for t in plan.targets if t.mode == "create"}
        listed.update(album_id for album_id, album in state.albums.items()
                      if folder_key(album.folder) in created)
        errors = dict(plan.errors)
        for album_id, album in state.albums.items():
            if album.listed != (album_id in listed):
                album.listed = album_id in listed
                state.dirty = True
            error = errors.get(album.folder)
            if error and album.last_error != error:
                album.last_error = error
                state.dirty = True
        # Files read again only for their mtime near the last scan, and old enough now
        # to be trusted against this one: saving this scan's time spares them the next
        # run, which would otherwise read them again, and every run after it.
        if any(mtime_ns < scan_started_ns - COARSE_MTIME_NS
               for scan in scans.values() for mtime_ns in scan.near_last_scan):
            state.dirty = True
        if state.dirty:
            # Only now: a run that changed nothing leaves state.json alone.
            state.scanned_at_ns = scan_started_ns
            now = iso_now()
            errors = {folder for folder, _ in plan.errors}
            # A run stopped early (auth, rate limit, an exception passing through the
            # caller's `finally`) is no successful sync.
            stopped = (self.tally.auth_error or self.tally.rate_limit or self.tally.stopped
                       or sys.exc_info()[0] is not None)
            for target in plan.targets:
                album = state.albums.get(target.album_id or "") or next(
                    (a for a in state.albums.values() if target.folder
                     and folder_key(a.folder) == folder_key(target.folder)), None)
                if album is not None and target.folder not in errors and not stopped:
                    album.last_sync, album.last_error = now, None
        state.save()

    def line_path(self, folder: str) -> str:
        """How albums.txt names a downloaded folder: relative to the home, and written
        so that it reads back as that very folder. A title is anyone's choice: `~`
        would read as the user's home, `# Trip` as a comment."""
        try:
            text = os.path.relpath(folder, self.home)
        except ValueError:                      # Windows: another drive
            text = folder
        if text == os.pardir or text.startswith(os.pardir + os.sep) or os.path.isabs(text):
            text = folder
        elif text.startswith(("~", "#", "//", '"')) or text != text.strip() \
                or " -> " in text or RE_LOOKS_LIKE_URL.match(text):
            text = os.path.join(os.curdir, text)
        read_back = resolve_folder(_unquote(text.strip()), self.home)   # as the parser will
        if folder_key(read_back) != folder_key(folder):
            text = folder                       # an absolute path reads back as itself
        return text

    def rewrite_albums(self, original: bytes, parsed: ParsedAlbums, targets: list,
                       state: StateStore) -> None:
        """Write `PATH -> https://imgur.com/a/ID` for lines now linked to an album."""
        new_texts = {}
        by_folder = {folder_key(a.folder): album_id for album_id, a in state.albums.items()}
        for target in targets:
            line = target.line
            if line.kind == "link":
                continue
            album_id = target.album_id if target.album_id in state.albums else \
                by_folder.get(folder_key(target.folder)) if target.folder else None
            if album_id is None:
                continue
            typed = parsed.raw_lines[line.number - 1].decode("utf-8").strip()
            if line.kind == "album":
                typed = self.line_path(state.albums[album_id].folder)
            new_texts[line.number] = "%s -> %s" % (typed, ALBUM_URL.format(album_id))
        if not new_texts:
            return
        path = os.path.join(self.home, ALBUMS_FILE)
        try:
            with open(path, "rb") as f:
                current = f.read()
        except OSError:
            current = None
        if current != original:
            self.out.warn("%s changed during the run; it is left alone and the next run "
                          "adds the album links" % path)
            return
        write_atomically(path, rewrite_albums_txt(parsed, new_texts),
                         mode=stat.S_IMODE(os.stat(path).st_mode), through_link=True)

    def summarize(self, scans: dict) -> int:
        tally = self.tally
        parts = ["%d %s" % (n, what) for what, n in (
            ("uploaded", tally.counts["uploaded"]), ("replaced", tally.counts["replaced"]),
            ("moved", tally.counts["moved"]), ("deleted", tally.counts["deleted"]),
            ("downloaded", tally.counts["downloaded"]), ("repaired", tally.counts["repaired"]),
            ("renamed", tally.counts["renamed"]), ("linked", tally.counts["linked"]),
            ("captions updated" if tally.counts["captions updated"] != 1
             else "caption updated", tally.counts["captions updated"]),
            ("adopted", tally.counts["adopted"]),
            ("new album" if tally.counts["new albums"] == 1 else "new albums",
             tally.counts["new albums"])) if n]
        if tally.failed:
            parts.append("%d failed%s" % (tally.failed, _failed_text(tally)))
        if tally.held:
            parts.append("%d held back" % tally.held)
        skipped = collections.Counter()
        for scan in scans.values():
            skipped.update(scan.skipped)
        text = ", ".join(parts) if parts else "nothing to do" if tally.exit_code() == EXIT_OK \
            else "nothing done"
        if skipped:
            text += "; skipped %s" % ", ".join("%d %s" % (n, ext) for ext, n in sorted(skipped.items()))
        text += "; %.1f s" % (time.monotonic() - self.started)
        rate = self.api.rate if self.api else None
        if rate is not None and rate.user_remaining is not None:
            text += "; %d credits left" % rate.user_remaining
        if tally.rate_limit:
            reset = local_time_text(tally.rate_limit.reset_at)
            left = self.planned_uploads - tally.counts["uploaded"] - tally.counts["replaced"]
            self.out.error("%s. Stopped early; the next run resumes%s" % (
                tally.rate_limit, " after %s" % reset if reset else ""),
                *([hours_at_the_limit(left, left=True)] if left > 0 else []))
        if tally.stopped:
            self.out.error(*tally.stopped.lines())
        if tally.auth_error:
            self.out.error(*tally.auth_error.lines())
        self.out.info(("dry run: " if self.options.dry_run else "") + text)
        code = tally.exit_code()         # a dry run gets here only if no plan was printed
        # "sync ok" lines let `status` tell when a run last succeeded, even one that
        # changed nothing (and so did not rewrite state.json).
        self.log.write("%s %s: %s" % ("dry-run" if self.options.dry_run else "sync",
                                      "ok" if code == EXIT_OK else "exit %d" % code, text))
        return code


def _failed_text(tally: Tally) -> str:
    """What failed, for the summary: ": Garden (unavailable), Cats/a.jpg and 2 more"."""
    named = tally.failed_what[:3]
    if not named:
        return ""
    more = tally.failed - len(named)
    return ": %s%s" % (", ".join(named), " and %d more" % more if more > 0 else "")


def is_home_file_name(name: str) -> bool:
    """Whether a folder of this name in the home could be taken for one of imgurbox's
    own files (HOME_FILE_NAMES), or their rotated or temporary forms: compared in NFC
    and case-folded (macOS and Windows ignore case, and fold "ſ" to "s"), without the
    trailing dots and spaces Windows drops."""
    folded = unicodedata.normalize("NFC", name).rstrip(" .").casefold()
    return any(folded == own or folded.startswith(own + ".") for own in HOME_FILE_NAMES)


def safe_folder_name(title: str | None) -> str:
    if not title:
        return ""
    name = safe_file_name(title + ".jpg", "x", None)[:-4]
    return name if name not in (".", "..") else ""


def print_plan(plan: Plan, state: StateStore, out: Output) -> None:
    """--dry-run: the plan grouped by album, with what each album costs; each action in
    the line the real run prints for it."""
    groups = collections.OrderedDict()
    for action in plan.actions:
        groups.setdefault(action.album, []).append(action)
    for held in plan.held:
        groups.setdefault(held.album, [])
    folders = {album_id: album.folder for album_id, album in state.albums.items()}
    folders.update({t.key: t.folder for t in plan.targets if t.folder})

    def where(key: str, name: str = "") -> str:
        return where_in(folders.get(key, key), name)
    for album_key, actions in groups.items():
        folder = folders.get(album_key, album_key)
        link = "new album" if album_key.startswith("new:") else ALBUM_URL.format(album_key)
        requests_ = sum(a.requests for a in actions)
        credits = sum(a.credits for a in actions)
        out.info("%s (%s): %s, %s" % (folder, link, _count(requests_, "request"),
                                      _count(credits, "credit")))
        for action in actions:
            for line in action.lines(where):
                out.action(action.symbol, line)
        for held in plan.held:
            if held.album == album_key:
                for action in held.actions:
                    for line in action.lines(where):
                        out.action("!", "held: " + line)
    out.info("plan: %s, %s" % (_count(plan.requests, "request"), _count(plan.credits, "credit")))
    if plan.uploads > UPLOADS_PER_HOUR:
        out.info(hours_at_the_limit(plan.uploads))


def hours_at_the_limit(uploads: int, left: bool = False) -> str:
    """How long Imgur's hourly limit makes a big sync take (README, "Imgur limits")."""
    hours = -(-uploads // UPLOADS_PER_HOUR)
    return "%s %s%s: about %s at Imgur's ~%d uploads an hour; schedule hourly runs " \
           "(README, Scheduling)" % ("{:,}".format(uploads),
                                     "upload" if uploads == 1 else "uploads",
                                     " left" if left else "",
                                     "1 hour" if hours == 1 else "{:,} hours".format(hours),
                                     UPLOADS_PER_HOUR)


class NoAnswer(AuthError):
    """End of input (Ctrl-D) at a prompt: stop asking."""


def prompt(text: str, secret: bool = False) -> str:
    """Ask on the terminal; EOF is an AuthError, never a hang."""
    try:
        if secret:
            import getpass
            return getpass.getpass(text)
        return input(text)
    except EOFError:
        raise NoAnswer("no answer on standard input; nothing was saved")


def parse_authorize_answer(text: str) -> dict:
    """Tokens from the address the browser landed on (#access_token=...), or a PIN."""
    text = text.strip()
    if "#" in text or "access_token=" in text:
        fragment = text.split("#", 1)[-1]
        fields = dict(urllib.parse.parse_qsl(fragment.split("?", 1)[-1]))
        if fields.get("access_token") and fields.get("refresh_token"):
            return {"tokens": fields}
        return {"error": "that address has no access_token and refresh_token in it; copy "
                         "the whole address from the browser's address bar, or type 1 "
                         "to paste a refresh token instead"}
    if "code=" in text:
        query = urllib.parse.urlsplit(text).query or text
        code = dict(urllib.parse.parse_qsl(query)).get("code")
        if code:
            return {"code": code}
    if re.fullmatch(r"[A-Za-z0-9]{4,64}", text):
        return {"pin": text}
    if "1024" in text or "error" in text.lower():
        return {"error": "Imgur showed an error page: since 2025 its authorize page fails "
                         "for many logins. Use a refresh token you already have instead "
                         "(README, Getting started): type 1 here to paste it."}
    return {"error": "that is neither the address you landed on nor a PIN: paste the "
                     "whole address (it contains #access_token=), or type 1 to paste a "
                     "refresh token instead"}


def run_auth(home: str, out: Output, log: Log, env: Environment,
             take_lock: bool = True) -> int:
    """`auth`: from client ID, secret and a refresh token (or the browser) to a saved,
    checked credentials.json."""
    lock = acquire_lock(home) if take_lock else None
    try:
        return _auth(home, out, log, env)
    finally:
        if lock is not None:
            lock.release()


def _auth(home: str, out: Output, log: Log, env: Environment) -> int:
    interactive = stdin_is_terminal()
    try:
        credentials = Credentials.load(home, out, identity=env.client_identity)
    except UsageError as e:                     # damaged or unreadable
        if not interactive:
            raise
        problem = e.problem if isinstance(e, CredentialsDamaged) else str(e)
        out.warn("%s; auth will replace it" % problem)
        credentials = Credentials(os.path.join(home, CREDENTIALS_FILE), {})
    refresh_from_env = env.refresh_token
    if not interactive and not refresh_from_env:
        raise AuthError("`auth` needs a terminal, or IMGUR_REFRESH_TOKEN (with "
                        "IMGUR_CLIENT_ID and IMGUR_CLIENT_SECRET or credentials.json)")
    while True:
        client_id = credentials["client_id"] or _ask(interactive, "Imgur client ID: ")
        client_secret = credentials["client_secret"] or _ask(interactive, "Imgur client secret (not shown): ", secret=True)
        register_secret(client_secret)
        credentials.values.update(client_id=client_id.strip(), client_secret=client_secret.strip())
        api = Api(credentials, log, out, env)
        try:
            tokens = _obtain_tokens(api, credentials, refresh_from_env, out)
            credentials.update(access_token=tokens.get("access_token"),
                               refresh_token=tokens.get("refresh_token"))
            account = api.request("GET", "account/me")
        except (AuthError, RequestFailed) as e:
            if not interactive or isinstance(e, NoAnswer):
                raise AuthError(str(e))
            problem = e.problem if isinstance(e, AuthError) else str(e)
            out.error("%s. Check the client ID, secret and token, and try again."
                      % problem)                        # (we are in `auth` already)
            credentials.values.update(client_id=None, client_secret=None)
            refresh_from_env = None
            continue
        credentials.update(account_username=account.get("url"),
                           account_id=_as_int(account.get("id")) or None)
        credentials.save()
        log.write("auth saved for account %s" % account.get("url"))
        out.show("Authorized as %s. Saved %s (readable only by you)." % (
            account.get("url"), credentials.path))
        return EXIT_OK


def _ask(interactive: bool, text: str, secret: bool = False) -> str:
    if not interactive:
        raise AuthError("missing %s: set IMGUR_CLIENT_ID and IMGUR_CLIENT_SECRET"
                        % text.split("(")[0].strip(" :"))
    while True:
        answer = prompt(text, secret).strip()
        if answer:
            return answer


def _obtain_tokens(api: Api, credentials: Credentials, refresh_token: str | None,
                   out: Output) -> dict:
    form = {"client_id": credentials["client_id"], "client_secret": credentials["client_secret"]}
    if refresh_token:
        return api._token_request(dict(form, grant_type="refresh_token",
                                       refresh_token=refresh_token.strip()))
    out.show("How do you want to authorize imgurbox?",
             "  1) paste a refresh token you already have (works today)",
             "  2) authorize in the browser (Imgur's page fails for some logins since 2025)")
    choice = prompt("Choose 1 or 2 [1]: ").strip() or "1"
    while choice not in ("1", "2"):
        choice = prompt("Please type 1 or 2 [1]: ").strip() or "1"
    if choice == "1":
        token = _ask(True, "Refresh token (not shown): ", secret=True)
        return api._token_request(dict(form, grant_type="refresh_token", refresh_token=token))
    url = "%soauth2/authorize?client_id=%s&response_type=token" % (
        api.base_url, urllib.parse.quote(credentials["client_id"]))
    out.show("Open this address, allow access, then paste the address you land on "
             "(or the PIN Imgur shows):", "  %s" % url)
    try:
        import webbrowser
        webbrowser.open(url)
    except Exception:
        pass
    while True:
        text = prompt("Address or PIN: ")
        if text.strip() == "1":
            token = _ask(True, "Refresh token (not shown): ", secret=True)
            return api._token_request(dict(form, grant_type="refresh_token", refresh_token=token))
        answer = parse_authorize_answer(text)
        if "tokens" in answer:
            return answer["tokens"]
        if "pin" in answer:
            return api._token_request(dict(form, grant_type="pin", pin=answer["pin"]))
        if "code" in answer:
            return api._token_request(dict(form, grant_type="authorization_code",
                                           code=answer["code"]))
        out.error(answer["error"])


def run_status(home: str, out: Output, as_json: bool = False) -> int:
    """`status`: per folder, what is synced and what waits; no lock, request or write.
    With as_json, the same as one JSON document (README, "status --json": its keys)."""
    state = StateStore.load(home, writable=False)
    _, parsed = read_albums(home, state, out)
    scans = scan_listed_folders(parsed, state, False, Output(-1, None, no_color=True),
                                captions=read_settings(home).captions)
    targets = settle_checked(parsed, state, scans)
    plan = plan_sync(targets, scans, state, {}, PlanOptions(command=command_line(home)))
    last_ok = last_successful_run(home)
    now = time.time()
    folders = [_folder_status(target, state, scans.get(target.folder), plan, last_ok, now)
               for target in targets]
    if as_json:
        document = {"imgurbox": VERSION, "home": home, "folders": folders,
                    "pending_operations": len(state.pending)}
        # ASCII only: every name's control and non-ASCII characters as JSON's \uXXXX.
        out.show(*json.dumps(_json_safe(document), indent=2, ensure_ascii=True).split("\n"))
        return EXIT_OK
    for status in folders:
        out.show(*_status_lines(status))
    if state.pending:
        out.show("%s not yet confirmed by Imgur (from an interrupted run, or one running now): "
                 "the next sync checks %s" % (_count(len(state.pending), "operation"),
                                              "it" if len(state.pending) == 1 else "them"))
    return EXIT_OK


LINK_FORMATS = ("url", "page", "markdown", "html", "bbcode", "bbcode-thumb")
IMAGE_PAGE_URL = "https://imgur.com/{}"
IMAGE_DIRECT_URL = "https://i.imgur.com/{}.{}"
THUMBNAIL_SUFFIX = "m"                   # Imgur's medium thumbnail: 320 px


def run_links(home: str, out: Output, link_format: str, paths: list) -> int:
    """`links`: the links of what is synced, from albums.txt and the state alone: no
    lock, no credentials, no request, no write (README, "Sharing links")."""
    state = StateStore.load(home, writable=False)
    _, parsed = read_albums(home, state, out)
    targets = settle_checked(parsed, state, {})
    chosen = _links_selection(targets, state, paths)
    missing_links = 0
    blocks = []
    for target, names in chosen:
        album = state.albums[target.album_id]
        title = album.title or os.path.basename(target.folder)
        lines = [format_album_link(link_format, target.album_id, title)]
        for name in sorted(album.files if names is None else names & set(album.files)):
            record = album.files[name]
            direct = _recorded_link(record)
            if direct is None:
                missing_links += 1
                direct = IMAGE_DIRECT_URL.format(record.image_id, _served_extension(name))
                out.warn("%s: no link recorded yet; shown as %s" % (
                    os.path.join(target.folder, name), direct))
            lines.append(format_image_link(link_format, name, record.image_id, direct))
        local = _local_photo_names(target.folder) if names is None else names
        for name in sorted(local - set(album.files)):
            out.warn("%s: not uploaded yet (the next sync uploads it)"
                     % os.path.join(target.folder, name))
        blocks.append("\n".join(lines))
    for target in targets:
        if not paths and target.album_id not in state.albums:
            out.warn("%s: no album yet (the next sync creates it)"
                     % (target.folder or target.line.text))
    if missing_links:
        out.warn("%s recorded before imgurbox kept links: one `imgurbox.py --verify` run "
                 "records them, without uploading anything" % _count(missing_links, "image"))
    if blocks:
        print("\n\n".join(blocks))
    return EXIT_OK


def _links_selection(targets: list, state: StateStore, paths: list) -> list:
    """(target, names or None for all) for each folder `links` covers, in albums.txt
    order. A path is a PATH as written on a line, else relative to the current
    directory; one that names no synced folder, nor a file in one, is a UsageError."""
    synced = [t for t in targets if t.album_id in state.albums and t.folder]
    if not paths:
        return [(t, None) for t in synced]
    by_text = {t.line.path_text: t for t in synced if t.line.path_text}
    by_key = {folder_key(t.folder): t for t in synced}
    listed = {folder_key(t.folder) for t in targets if t.folder}
    wanted, problems = {}, []
    for text in paths:
        target, name = by_text.get(text), None
        path = os.path.abspath(os.path.expanduser(text))
        if target is None:
            target = by_key.get(folder_key(path))
        if target is None:
            target = by_key.get(folder_key(os.path.dirname(path)))
            name = os.path.basename(path)
            if target is not None and name not in state.albums[target.album_id].files \
                    and not os.path.isfile(path):
                problems.append("%s: no such file" % text)
                continue
        if target is None:
            problems.append("%s: %s" % (text, "not synced yet (the next sync creates its "
                                              "album)" if folder_key(path) in listed else
                                        "not a folder listed in albums.txt, nor a file in one"))
            continue
        names = wanted.setdefault(id(target), set())
        if name is None:
            wanted[id(target)] = None                  # the whole folder
        elif names is not None:
            names.add(name)
    if problems:
        raise UsageError("nothing to show for %s:" % (
            "this path" if len(problems) == 1 else "these paths"),
            ["  " + problem for problem in problems])
    return [(t, wanted[id(t)]) for t in synced if id(t) in wanted]


def _local_photo_names(folder: str) -> set:
    """The names of a folder's photos, by extension alone (nothing is read)."""
    try:
        return {entry.name for entry in os.scandir(folder) if not entry.name.startswith(".")
                and file_extension(entry.name) in IMAGE_EXTENSIONS and entry.is_file()}
    except OSError:
        return set()


def _recorded_link(record: FileRecord) -> str | None:
    """The direct link Imgur answered for a record, if one is recorded (http(s) only)."""
    link = record.link
    return link if urllib.parse.urlsplit(link).scheme in ("http", "https") else None


def _served_extension(name: str) -> str:
    return EXTENSION_OF_MIME.get(MIME_TYPES.get(file_extension(name), ""), "jpg")


def _url(url: str) -> str:
    """A URL with everything that could end it early in Markdown, HTML or BBCode
    (spaces, quotes, brackets, parentheses, angle brackets) percent-encoded."""
    return urllib.parse.quote(url, safe=":/?#@!$&*+,;=%~._-")


def _label(text: str) -> str:
    """A name on one line: control characters (a newline in a file name) as spaces."""
    return "".join(c if c.isprintable() else " " for c in text)


def _markdown_text(text: str) -> str:
    return re.sub(r"([\\`*_{}\[\]()<>#+!|&~])", r"\\\1", _label(text))


def _bbcode_text(text: str) -> str:
    """BBCode has no escape: a bracket in a title would open or close a tag."""
    return _label(text).replace("[", "(").replace("]", ")")


def thumbnail_link(direct: str) -> str:
    """Imgur's medium thumbnail of a direct link: the size letter before the extension."""
    parts = urllib.parse.urlsplit(direct)
    folder, _, last = parts.path.rpartition("/")
    stem, dot, extension = last.rpartition(".")
    last = stem + THUMBNAIL_SUFFIX + dot + extension if dot else last + THUMBNAIL_SUFFIX
    return urllib.parse.urlunsplit(parts._replace(path=folder + "/" + last))


def format_album_link(link_format: str, album_id: str, title: str) -> str:
    import html
    url = _url(ALBUM_URL.format(album_id))
    if link_format == "markdown":
        return "[%s](%s)" % (_markdown_text(title), url)
    if link_format == "html":
        return '<a href="%s">%s</a>' % (html.escape(url), html.escape(_label(title)))
    if link_format.startswith("bbcode"):
        return "[url=%s]%s[/url]" % (url, _bbcode_text(title))
    return url


def format_image_link(link_format: str, name: str, image_id: str, direct: str) -> str:
    import html
    page = _url(IMAGE_PAGE_URL.format(image_id))
    if link_format == "page":
        return page
    if link_format == "markdown":
        return "![%s](%s)" % (_markdown_text(name), _url(direct))
    if link_format == "html":
        return '<a href="%s"><img src="%s" alt="%s"></a>' % (
            html.escape(page), html.escape(_url(direct)), html.escape(_label(name)))
    if link_format == "bbcode":
        return "[img]%s[/img]" % _url(direct)
    if link_format == "bbcode-thumb":
        return "[url=%s][img]%s[/img][/url]" % (_url(direct), _url(thumbnail_link(direct)))
    return _url(direct)


def run_captions(home: str, out: Output, choice: str) -> int:
    """`captions on|off`: recorded in settings.json; local, no request."""
    require_writable(home)
    settings = read_settings(home)
    settings.captions = choice == "on"
    write_settings(home, settings)
    if settings.captions:
        out.info("captions are on: each photo's own caption goes to Imgur as its "
                 "description with its upload, and a changed caption costs one update. "
                 "Images already on Imgur get theirs with the next `--verify` run.")
    else:
        out.info("captions are off: nothing more is sent; descriptions already on Imgur "
                 "stay as they are.")
    return EXIT_OK


def _count(number: int, noun: str) -> str:
    return "%d %s%s" % (number, noun, "" if number == 1 else "s")


def _folder_status(target: Target, state: StateStore, scan, plan: Plan, last_ok,
                   now: float) -> dict:
    """What `status` says of one albums.txt line; its keys are those of --json."""
    album = state.albums.get(target.album_id or "")
    todo = collections.Counter()
    for action in plan.actions:
        moved_out = isinstance(action, Move) and target.album_id is not None \
            and action.source == target.album_id
        if action.album == target.key or moved_out:
            todo[action.noun] += len(action.items) if isinstance(action, Move) else 1
    errors = [message for folder, message in plan.errors if folder == target.folder]
    last = None
    if album is not None:
        trusted_ok = None if (album.last_error or errors) else last_ok
        stamps = [_parse_time(t) for t in (album.last_sync, trusted_ok)]
        last = max(filter(None, stamps), default=None)
    return {
        "line": target.line.number,
        "folder": target.folder or None,
        "album": target.album_id,
        "album_url": ALBUM_URL.format(target.album_id) if target.album_id else None,
        "mode": target.mode,
        "download_only": bool(album and album.download_only),
        "synced_files": len(album.files) if album else 0,
        "to_do": dict(sorted(todo.items())),
        "held_back": [h.reason for h in plan.held if h.album == target.key],
        "errors": errors,
        "refused": [name for folder, name in plan.refused if folder == target.folder],
        "unreadable": [{"name": name, "reason": reason}
                       for name, reason in (scan.unreadable if scan else [])],
        "skipped": dict(sorted(scan.skipped.items())) if scan else {},
        "skipped_names": list(scan.skipped_names) if scan else [],
        "last_sync": last.isoformat(timespec="seconds") if last else None,
        "last_sync_seconds_ago": max(0, int(now - last.timestamp())) if last else None,
        "last_error": album.last_error if album else None,
    }


def _status_lines(status: dict) -> list:
    """The lines `status` prints for one albums.txt line."""
    lines = ["%s  %s" % (status["folder"] or "line %d" % status["line"],
                         status["album_url"] or "(new album)")]
    if status["mode"] == "download":
        return lines + ["  to do: download the album into a new folder"]
    lines.append("  synced: %s%s" % (_count(status["synced_files"], "file"),
                                     "  (download-only)" if status["download_only"] else ""))
    waiting = ", ".join(_count(n, noun) for noun, n in status["to_do"].items())
    lines.append("  to do: %s" % (waiting or ("nothing that can run now (see below)"
                                              if status["held_back"] or status["errors"]
                                              else "nothing")))
    lines += ["  held back: %s" % reason for reason in status["held_back"]]
    lines += ["  %s" % message for message in status["errors"]]
    lines += ["  refused by Imgur: %s (tried again once it changes)" % name
              for name in status["refused"]]
    lines += ["  cannot read: %(name)s (%(reason)s)" % u for u in status["unreadable"]]
    if status["skipped"]:
        lines.append("  skipped: %s" % ", ".join(
            "%d %s" % (n, e) for e, n in status["skipped"].items()))
    lines += ["    %s" % name for name in status["skipped_names"]]
    if status["album"] is not None:
        if status["last_sync"]:
            when = dt.datetime.fromisoformat(status["last_sync"])
            lines.append("  last sync: %s (%s)" % (when.strftime("%Y-%m-%d %H:%M"),
                                                  _ago(status["last_sync_seconds_ago"])))
        else:
            lines.append("  last sync: never")
        if status["last_error"]:
            lines.append("  last error: %s" % status["last_error"])
    return lines


# -- watch ---------------------------------------------------------------------------------

WATCH_RETRY_FIRST = 60.0             # seconds after a run that failed items, doubling
WATCH_RETRY_MAX = 3600.0
WATCH_RATE_LIMIT_FALLBACK = 900.0    # a rate limit that said no reset time
WATCH_LOCK_POLL = 1.0
# The longest watch's main thread waits in one call. A signal handler runs only when the
# main thread runs Python code, and with watchdog's threads alive the kernel may hand
# SIGTERM to one of them: a wait with no end would then never see it.
WATCH_WAKE = 0.5


class Watcher:
    """`watch`: one ordinary sync at start, then one each time the listed folders (or
    albums.txt) have changed and been quiet for `quiet_seconds`. Holds the lock only
    while a sync runs. Sleeps through rate limits, backs off after failures, and stops
    for good only where a sync would need the user (exit 2 or 5), or on a signal."""

    def __init__(self, home: str, options: SyncOptions, quiet_seconds: float, out: Output,
                 log: Log, env: Environment):
        self.home = home
        self.options = options
        self.quiet_seconds = quiet_seconds
        self.out = out
        self.log = log
        self.env = env
        self.changed = threading.Event()        # set by the watcher thread
        self.last_change = 0.0                  # time.monotonic() of the latest event
        self.watched = {}                       # folder -> watchdog's watch handle
        self.retry_in = WATCH_RETRY_FIRST
        self.next_try = None                    # monotonic time of a retry, if one is due

    def run(self) -> int:
        observer = self._start_observer()
        try:
            self.out.info("watching the folders of %s; Ctrl-C to stop"
                          % os.path.join(self.home, ALBUMS_FILE))
            self.log.write("watch: started (quiet time %g s)" % self.quiet_seconds)
            code = self.sync()
            while code not in (EXIT_USAGE, EXIT_AUTH):
                self.wait_for_a_reason()
                code = self.sync()
            return code
        finally:
            observer.stop()

    def _start_observer(self):
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:
            raise UsageError("watch needs the watchdog package: run `%s -m pip install -r "
                             "requirements.txt`" % sys.executable) from None
        watcher = self

        class OnChange(FileSystemEventHandler):
            def on_any_event(self, event):
                if getattr(event, "event_type", "") in ("opened", "closed_no_write"):
                    return                      # reads, ours included, change nothing
                if not any(watcher.matters(path) for path in
                           (event.src_path, getattr(event, "dest_path", ""))):
                    return
                watcher.last_change = time.monotonic()
                watcher.changed.set()

        self.handler = OnChange()
        self.observer = Observer()
        self.observer.daemon = True
        self.observer.schedule(self.handler, self.home, recursive=False)   # albums.txt
        self.observer.start()
        return self.observer

    def matters(self, path) -> bool:
        """In the home only albums.txt counts (the state, journal and log change with
        every sync, and must not start another); in a folder, all but our downloads'
        temporary files."""
        if not path:
            return False
        path = os.fsdecode(path)
        if folder_key(path) == folder_key(self.home):
            return False                        # the home itself: its files say what
        folder, name = os.path.split(path)
        if folder_key(folder) == folder_key(self.home) and folder_key(path) \
                not in {folder_key(f) for f in self.watched}:
            return name == ALBUMS_FILE
        return not (name.startswith(DOWNLOAD_PART_PREFIX)
                    and name.endswith(DOWNLOAD_PART_SUFFIX))

    def follow_folders(self) -> None:
        """Watch what albums.txt lists now (lines come and go between syncs)."""
        wanted = set(listed_folders(self.home))
        for folder in set(self.watched) - wanted:
            self.observer.unschedule(self.watched.pop(folder))
        for folder in sorted(wanted - set(self.watched)):
            try:
                self.watched[folder] = self.observer.schedule(self.handler, folder,
                                                              recursive=False)
            except OSError:
                pass                    # not there (yet): the sync says so; tried again

    def wait_for_a_reason(self) -> None:
        """Until the changed folders have been quiet long enough, or a retry is due."""
        while True:
            now = time.monotonic()
            if self.changed.is_set():
                quiet_left = self.quiet_seconds - (now - self.last_change)
                if quiet_left <= 0:
                    return
                time.sleep(min(quiet_left, WATCH_WAKE))   # set: a wait would not wait
                continue
            if self.next_try is not None and now >= self.next_try:
                return
            left = WATCH_WAKE if self.next_try is None else self.next_try - now
            self.changed.wait(min(left, WATCH_WAKE))

    def sync(self) -> int:
        """One ordinary sync run, under the lock; decides when the next one is due."""
        self.changed.clear()
        self.next_try = None
        self.follow_folders()
        lock = self.take_lock()
        try:
            run = SyncRun(self.home, self.options, self.out, self.log, self.env)
            code = run.run()
        except Interrupted:
            raise                               # SIGTERM / Ctrl-C: watch ends with the run
        except (UsageError, AuthError) as e:
            self.out.error(*e.lines())
            return e.exit_code
        except ImgurboxError as e:              # anything else a run can stop on
            self.out.error(*e.lines())
            code = e.exit_code
            run = None
        finally:
            lock.release()
        self.follow_folders()                   # albums.txt may name other folders now
        if code == EXIT_RATE_LIMIT and run is not None:
            self.sleep_until_reset(run.tally.rate_limit)
        elif code in (EXIT_FAILED, EXIT_RATE_LIMIT):
            self.next_try = time.monotonic() + self.retry_in * self.env.backoff_scale
            self.retry_in = min(WATCH_RETRY_MAX, self.retry_in * 2)
        else:
            self.retry_in = WATCH_RETRY_FIRST
        return code

    def take_lock(self):
        """The lock, waiting for a scheduled run (a daily --verify) that holds it."""
        said = False
        while True:
            try:
                return acquire_lock(self.home)
            except LockHeldError:
                if not said:
                    self.out.info("another imgurbox run is active; waiting for it to end")
                    self.log.write("watch: waiting for another run to release the lock")
                    said = True
                time.sleep(WATCH_LOCK_POLL)

    def sleep_until_reset(self, limit: RateLimitError | None) -> None:
        """Imgur's limit: no sync until it resets (changes meanwhile wait for it)."""
        reset_at = limit.reset_at if limit is not None else None
        wait = (reset_at - self.env.clock.now()) if reset_at else WATCH_RATE_LIMIT_FALLBACK
        wait = max(1.0, wait)
        self.out.info("rate limit: sleeping %s until it resets, then carrying on"
                      % _duration(wait))
        self.log.write("watch: rate limit, sleeping %.0f s" % wait)
        until = time.monotonic() + wait
        while time.monotonic() < until:
            time.sleep(min(until - time.monotonic(), WATCH_WAKE))
        self.next_try = time.monotonic()        # the rest of the work, at once


def listed_folders(home: str) -> list:
    """The folders albums.txt lists that exist now; [] if it cannot be read (the sync
    reports why)."""
    try:
        state = StateStore.load(home, writable=False)
        _, parsed = read_albums(home, state, Output(-1, None, True))
    except (ImgurboxError, OSError, ValueError):
        return []
    folders = []
    for line in parsed.lines:
        album = state.albums.get(line.album_id) if line.album_id else None
        folder = line.path or (album.folder if album else None)
        if folder and os.path.isdir(folder):
            folders.append(folder)
    return folders


def _duration(seconds: float) -> str:
    if seconds < 120:
        return "%.0f s" % seconds
    if seconds < 7200:
        return "%.0f min" % (seconds / 60)
    return "%.1f h" % (seconds / 3600)


def _parse_time(text: str | None):
    """A timestamp imgurbox wrote (state.json, log.txt), in local time; None if none."""
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text).astimezone()
    except (ValueError, TypeError, OverflowError):
        return None


def _ago(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            return "%s ago" % _count(seconds // size, unit)
    return "just now"


def _json_safe(value):
    """A name that is not UTF-8 as its printable form (\\xNN), so that the document
    is valid UTF-8 JSON; everything else as it is."""
    if isinstance(value, str):
        return printable(value) if re.search("[\ud800-\udfff]", value) else value
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


def last_successful_run(home: str) -> str | None:
    """The timestamp of the newest "sync ok" line in log.txt (its last 64 KiB)."""
    try:
        with open(os.path.join(home, LOG_FILE), "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 65536))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        stamp, _, rest = line.partition(" ")
        if rest.startswith("sync ok"):
            return stamp
    return None


class _FlockLock:
    """An flock held on an open lock file; closing the file releases it."""

    def __init__(self, fd: int):
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def acquire_lock(home: str):
    """The home's lock, held by the OS: a crashed run never blocks the next one."""
    path = os.path.join(home, LOCK_FILE)
    try:
        import fcntl
    except ImportError:                  # Windows: filelock's msvcrt lock
        fcntl = None
    if fcntl is not None:
        # filelock's own POSIX lock is this flock; taking it directly spares a no-op
        # run filelock's imports (about a fifth of its start-up).
        fd = open_own_file(path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return _FlockLock(fd)
        except BlockingIOError:
            os.close(fd)
            raise LockHeldError("another imgurbox run is using %s; try again when it "
                                "ends" % home)
        except OSError:                  # no flock here (some network file systems)
            os.close(fd)
    from filelock import FileLock, Timeout
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise LockHeldError("another imgurbox run is using %s; try again when it ends" % home)
    return lock


###############################################################################
# main()
###############################################################################

def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--home", metavar="DIR", default=argparse.SUPPRESS,
                        help="imgurbox's folder (albums.txt, state, log); default: the "
                             "script's folder, or $IMGURBOX_HOME")
    noise = common.add_mutually_exclusive_group()
    noise.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="also show every decision, skipped files included")
    noise.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                       help="show errors only")
    sync_options = _Parser(add_help=False)
    sync_options.add_argument("--dry-run", action="store_true", default=argparse.SUPPRESS,
                              help="print the plan and its credit cost; change nothing")
    sync_options.add_argument("--verify", action="store_true", default=argparse.SUPPRESS,
                              help="also check each album on Imgur and repair it")
    sync_options.add_argument("--rehash", action="store_true", default=argparse.SUPPRESS,
                              help="re-read every file instead of trusting size and time")
    sync_options.add_argument("--max-delete", type=_non_negative, metavar="N",
                              default=argparse.SUPPRESS,
                              help="allow up to N deletions (or replacements) per album")
    sync_options.add_argument("--force", action="store_true", default=argparse.SUPPRESS,
                              help="lift the delete guard; sync folders that were emptied")
    sync_options.add_argument("--jobs", type=_positive, metavar="N", default=argparse.SUPPRESS,
                              help="parallel uploads (default 4)")
    parser = _Parser(
        prog="imgurbox.py", parents=[common, sync_options],
        description="Mirror the photo folders listed in albums.txt to Imgur albums.",
        epilog="examples:\n  python3 imgurbox.py auth\n  python3 imgurbox.py --dry-run\n"
               "  python3 imgurbox.py -q          # from cron\n"
               "exit codes: 0 in sync, 1 some items failed or held, 2 bad usage or file,\n"
               "3 another run is active, 4 rate limit (the next run resumes), 5 run auth",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version="imgurbox " + VERSION)
    commands = parser.add_subparsers(dest="command", metavar="{%s}" % ",".join(COMMANDS))
    commands.add_parser("sync", parents=[common, sync_options], help="sync (the default)",
                        description="Upload, move and delete so that each album mirrors "
                                    "its folder.",
                        epilog="example: python3 imgurbox.py sync --dry-run")
    commands.add_parser("auth", parents=[common], help="authorize imgurbox with Imgur",
                        description="Save a checked credentials.json: client ID and secret, "
                                    "then a refresh token (IMGUR_REFRESH_TOKEN or a prompt) "
                                    "or the browser route.",
                        epilog="example (the token stays out of your shell history):\n"
                               "  read -rs IMGUR_REFRESH_TOKEN && export IMGUR_REFRESH_TOKEN\n"
                               "  python3 imgurbox.py auth",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    status = commands.add_parser(
        "status", parents=[common], help="show what is synced; no network",
        description="Per folder: album, synced files, pending changes, skipped files, "
                    "last sync and error.",
        epilog="example: python3 imgurbox.py status --json")
    status.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print it as one JSON document (keys: README, status --json)")
    watch = commands.add_parser(
        "watch", parents=[common], help="stay running; sync each change within seconds",
        description="Sync once, then again each time a listed folder (or albums.txt) "
                    "changes and has been quiet for a while. Meant to be started at login.",
        epilog="example: python3 imgurbox.py watch --quiet-seconds 30")
    watch.add_argument("--quiet-seconds", type=_non_negative_seconds, metavar="N",
                       default=10.0, help="sync a changed folder once it has been quiet "
                                          "this long (default 10)")
    watch.add_argument("--jobs", type=_positive, metavar="N", default=argparse.SUPPRESS,
                       help="parallel uploads (default 4)")
    links = commands.add_parser(
        "links", parents=[common], help="print the links of what is synced; no network",
        description="Per folder, the album's link and one line per file, ready to paste: "
                    "from albums.txt and state.json alone.",
        epilog="examples:\n  python3 imgurbox.py links --format markdown ~/Pictures/Cats\n"
               "  python3 imgurbox.py links --format bbcode-thumb ~/Pictures/Cats/felix.jpg",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    links.add_argument("--format", choices=LINK_FORMATS, default="url",
                       help="url (direct link, the default), page, markdown, html, bbcode, "
                            "bbcode-thumb (a medium thumbnail linking to the image)")
    links.add_argument("paths", nargs="*", metavar="FOLDER | FILE",
                       help="folders or files to show (default: every folder in albums.txt)")
    captions = commands.add_parser(
        "captions", parents=[common], help="send photos' own captions to Imgur, or not",
        description="Turn captions on or off; it lasts (settings.json). With captions on, "
                    "a photo's own caption becomes its Imgur description.",
        epilog="example: python3 imgurbox.py captions on")
    captions.add_argument("choice", choices=("on", "off"), metavar="on|off")
    return parser


def _whole_number(text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a whole number" % text) from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError("must be from %d to %d" % (low, high))
    return value


def _non_negative_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86400:
        raise argparse.ArgumentTypeError("%r is not a number of seconds from 0 to 86400"
                                         % text)
    return value


def _positive(text: str) -> int:
    return _whole_number(text, 1, MAX_JOBS)


def _non_negative(text: str) -> int:
    return _whole_number(text, 0, 10 ** 9)


class _Parser(argparse.ArgumentParser):
    """argparse with one clear line for a bad flag, instead of usage text and exit 2."""

    def error(self, message):
        choice = re.search(r"argument \{[^}]*\}: invalid choice: '([^']*)'", message)
        if choice:
            message = "unknown command %r (commands: %s; folders go in albums.txt)" % (
                choice.group(1), ", ".join(COMMANDS))
        raise UsageError("%s (see `%s`)" % (message, help_command()))


SYNC_ONLY_OPTIONS = ("dry_run", "verify", "rehash", "max_delete", "force", "jobs")
COMMANDS = ("sync", "auth", "status", "watch", "links", "captions")
LOCAL_COMMANDS = ("status", "links", "captions")     # no lock, no log, no request


def parse_args(argv: list) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.command in ("auth", "watch") + LOCAL_COMMANDS:
        given = [name for name in SYNC_ONLY_OPTIONS if hasattr(args, name)
                 and not (args.command == "watch" and name == "jobs")]
        if given:
            raise UsageError("--%s is an option of sync, not of %s (see `%s`)"
                             % (given[0].replace("_", "-"), args.command, help_command()))
    defaults = dict(home=None, verbose=False, quiet=False, json=False, dry_run=False,
                    verify=False, rehash=False, max_delete=None, force=False, jobs=4)
    for key, value in defaults.items():
        if not hasattr(args, key):
            setattr(args, key, value)
    args.command = args.command or "sync"
    return args


def command_line(home: str, *args: str) -> str:
    """A command that runs this very imgurbox on this home, for a hint to paste into a
    shell or a scheduler: the interpreter running now (a virtual environment's, say),
    the script's absolute path, `--home` unless the home is the script's folder, each
    word quoted as this platform's shell needs."""
    script = os.path.abspath(__file__)
    words = [sys.executable or ("py" if IS_WINDOWS else "python3"), script]
    if folder_key(home) != folder_key(os.path.dirname(script)):
        words += ["--home", home]
    words += args
    if IS_WINDOWS:
        import subprocess
        return subprocess.list2cmdline(words)
    import shlex
    return " ".join(shlex.quote(word) for word in words)


def help_command() -> str:
    return command_line(os.path.dirname(os.path.abspath(__file__)), "--help")


def auth_command(home: str) -> str:
    """The command that authorizes this very home, for messages."""
    return command_line(home, "auth")


def require_writable(home: str) -> None:
    if not os.access(home, os.W_OK):
        raise UsageError("cannot write in %s: imgurbox keeps its state, log and lock there "
                         "(check its permissions, or choose another with --home)" % home)


def require_network_libraries() -> None:
    """A clear word, not a traceback, when the Python that runs imgurbox lacks them."""
    for module in ("requests", "imgurpython", "requests_toolbelt"):
        try:
            __import__(module)
        except ImportError:
            requirements = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                        "requirements.txt")
            raise UsageError("this Python (%s) lacks %s: install the requirements with "
                             "`%s -m pip install -r %s` (README: Install)"
                             % (sys.executable, module, sys.executable, requirements))


def resolve_home(args, env: Environment) -> str:
    script_folder = os.path.dirname(os.path.abspath(__file__))
    source = "--home" if args.home else "IMGURBOX_HOME" if env.home else None
    home = os.path.abspath(os.path.expanduser(args.home or env.home or script_folder))
    if not os.path.isdir(home):
        raise UsageError("home folder %s (from %s) %s: create it, or name another" % (
            home, source or "the script's folder",
            "is not a folder" if os.path.exists(home) else "does not exist"))
    return home


class signals_held:
    """Hold Ctrl-C and SIGTERM while state is saved; deliver them afterwards."""

    SIGNALS = [getattr(signal, name) for name in ("SIGINT", "SIGTERM") if hasattr(signal, name)]

    def __enter__(self):
        self.caught = []
        self.previous = {}
        # Masking holds a signal only in this thread: with others alive (watch's file
        # watcher), the kernel hands it to one of them, and Python still runs the
        # handler here. Then the handlers are swapped for ones that only record.
        self.masked = hasattr(signal, "pthread_sigmask") and \
            threading.current_thread() is threading.main_thread() and \
            threading.active_count() == 1
        if self.masked:                     # POSIX: the kernel holds them, atomically
            signal.pthread_sigmask(signal.SIG_BLOCK, self.SIGNALS)
        elif threading.current_thread() is threading.main_thread():
            for number in self.SIGNALS:
                if signal.getsignal(number) in (signal.SIG_IGN, None):
                    continue                # ignored (nohup, say): it stays ignored
                self.previous[number] = signal.signal(
                    number, lambda signum, frame: self.caught.append(signum))
        return self

    def __exit__(self, *exc):
        if self.masked:                     # held signals are delivered here, as usual
            signal.pthread_sigmask(signal.SIG_UNBLOCK, self.SIGNALS)
            return False
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        if self.caught and exc[0] is None:
            signum = self.caught[0]
            raise KeyboardInterrupt if signum == signal.SIGINT else Interrupted(EXIT_SIGTERM)
        return False


def _on_sigterm(signum, frame):
    raise Interrupted(EXIT_SIGTERM)


def main(argv: list | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    for stream in (sys.stdout, sys.stderr):
        try:                    # a folder named 日本 must not vanish from cp1252 output
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):
            pass
    log = None
    try:
        env = Environment.read(os.environ)      # the only read of the environment
    except UsageError as e:
        Output(0, None, no_color=True).error(*e.lines())
        return EXIT_USAGE
    out = Output(0, None, env.no_color)
    saved = ""                                  # what an interruption message adds
    try:
        args = parse_args(argv)
        verbosity = -1 if args.quiet else (1 if args.verbose else 0)
        home = resolve_home(args, env)
        refuse_linked_own_files(home)
        # status and links write nothing; captions writes settings.json alone
        log = Log(home) if args.command not in LOCAL_COMMANDS else None
        out = Output(verbosity, log, env.no_color)
        if hasattr(signal, "SIGTERM"):
            signal.signal(signal.SIGTERM, _on_sigterm)
        if args.command == "status":
            return run_status(home, out, as_json=args.json)
        if args.command == "links":
            return run_links(home, out, args.format, args.paths)
        if args.command == "captions":
            return run_captions(home, out, args.choice)
        if args.command == "auth":
            require_writable(home)
            return run_auth(home, out, log, env)
        options = SyncOptions(args.dry_run, args.verify, args.rehash, args.force,
                              args.max_delete, args.jobs, read_settings(home).captions)
        require_writable(home)
        if args.command == "watch":
            saved = "; state saved, the next run carries on"
            return Watcher(home, options, args.quiet_seconds, out, log, env).run()
        lock = acquire_lock(home)
        saved = "; state saved, the next run carries on"
        try:
            return SyncRun(home, options, out, log, env).run()
        finally:
            lock.release()
    except KeyboardInterrupt:
        out.error("interrupted" + saved)
        return EXIT_SIGINT
    except Interrupted as e:
        out.error("stopped by %s%s" % ("SIGTERM" if e.exit_code == EXIT_SIGTERM else "Ctrl-C",
                                       saved))
        return e.exit_code
    except ImgurboxError as e:
        out.error(*e.lines())
        return e.exit_code
    except BrokenPipeError:                 # `imgurbox.py status | head`: reader left
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return EXIT_FAILED
    except OSError as e:                    # a local file imgurbox cannot read or write
        out.error("%s%s" % ("%s: " % e.filename if e.filename else "", e.strerror or e))
        return EXIT_FAILED
    except Exception:
        import traceback
        out.error("internal error (please report it):",
                  *traceback.format_exc().rstrip("\n").split("\n"))
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
