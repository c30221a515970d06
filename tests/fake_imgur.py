#!/usr/bin/env python3
"""A fake Imgur API v3 server for imgurbox's tests and for trying imgurbox offline.

It follows Imgur's public API documentation (apidocs.imgur.com and the older
api.imgur.com pages) and what users of Imgur clients have reported in public issue
trackers, quirks included: the JSON envelope, Bearer and Client-ID authentication, uploads
(multipart or base64 form), album writes, OAuth (refresh token, browser redirect, PIN,
code), rate-limit headers and credits, and image links that end at ``removed.png`` once an
image is deleted. By default it behaves as Imgur does since 2025; each later behaviour
below names its public source and the switch that gives the older one.

In tests::

    fake = FakeImgur(user_limit=500)
    url = fake.start()              # http://127.0.0.1:PORT/, served by a daemon thread
    creds = fake.credentials()      # client_id, client_secret, access_token, ...
    fake.add_fault('status', method='POST', path=r'^/3/image$', code=502)
    ...
    fake.stop()

Standalone (for "Try it offline")::

    python3 tests/fake_imgur.py [--port N] [--home DIR] [--latency S]

prints the URL, an ``export IMGUR_API_URL=...`` line and a ready credentials.json
(also written, mode 0600, to DIR/credentials.json with --home), then serves until Ctrl-C.

Album writes since December 2024 (Apollo-ImprovedCustomApi and Apollo-Reborn PR #61,
April 2025; PyImgur moved create/add/remove/update off form bodies in March 2025,
live-tested: "incompatible changes Imgur have made"):
- ``POST /3/album``, ``PUT``/``POST /3/album/{id}``, ``/add`` and ``/remove_images`` take
  their fields only as multipart/form-data (one ``ids[]`` part per ID, as Imgur's
  documentation writes it; ``ids`` comma-separated is read too) or JSON (``{"ids": [...]}``).
  A form-urlencoded body, or a POST/PUT whose fields are in the query string, is answered
  400 "Album fields must be sent as multipart/form-data or JSON" and nothing is done
  (``album_form_bodies=True`` accepts it, as Imgur did before). A write with no body and
  no query (a DELETE, say) is not affected. ``Request.body_type`` tells what was sent.
- ``/add`` naming any ID that is not an image the caller owns (deleted, unknown, another
  account's) is refused whole: 403 "You must own all the image ids to add them to album
  {id}", nothing added (a public REST-assured suite run against the live API;
  ``add_refuses_unowned=False`` gives the silent skipping older clients describe).
- ``DELETE /3/album/{id}/remove_images?ids=...``, the form PyImgur abandoned in 2025,
  answers success and removes nothing (``legacy_delete_removes=True``: it removes);
  ``POST`` with ``ids[]`` removes, and IDs not in the album are ignored.

Answers seen since 2024:
- An invalid or expired access token: 403 "The access token provided is invalid." by
  default; ``invalid_token_shape='legacy429'`` answers it HTTP 429 in the ``errors`` shape
  (``{"errors": [{"code": "429", "status": "Too Many Requests", "detail": ...}]}``,
  Content-Type application/vnd.imgur.v1+json) while the X-RateLimit-* headers still show
  credits left (PyImgur, March 2025: "can trigger both a 401 ... and a 429, depending on
  the access token"). The ``detail`` text is the fake's: none was published. Either way
  the refusal costs no credit; the ``token_expired`` fault answers in the same shape.
- Imgur has answered an Album with ``account_url`` null and ``account_id`` set (an answer
  published in 2024): ``album_account_url_null=True``. Album and Image models carry
  ``account_id`` (the owner's number); unset fields come back as Imgur's "unset" values,
  so an anonymous album or image has ``account_url`` null and ``account_id`` 0.
- Over capacity ("Imgur is temporarily over capacity. Please try again later.") is a 403
  by default, and has also come as a 500 or 429 envelope, sometimes for a long time
  (obsidian-imgur-plugin #102, May 2025; Apollo #86, Jan 2026; gallery-dl waits 600 s on
  it, March 2026): ``add_fault('over_capacity', code=500)`` (or 429; ``html=True`` gives
  an HTML page).
- A blocked network or country (ShareX #7910, #7982, #8009, #8107, #8200 and
  obsidian-imgur-plugin #101, May-Oct 2025): ``cdn_blocked=True`` answers every /3/ call
  400 "These actions are forbidden." in the envelope, with ``CDN-Error: yes``,
  ``Retry-After: 0`` and ``Server: cat factory 1.0``; nothing is performed or charged and,
  the CDN answering before the API, no X-RateLimit headers come with it. /oauth2/ and
  image links are not affected by this switch.
- i.imgur.com in a blocked region (the UK since 30 Sep 2025; issinoho/tvdinner and
  shayanline/iptv-iran, "byte-for-byte identical, confirmed live") answers every image
  link HTTP 200 ``image/png`` with one placeholder, 336x478 and 34,641 bytes:
  ``region_blocked=True`` serves ``REGION_PLACEHOLDER_PNG``, a valid PNG of that size and
  those dimensions (padded with a private ``rgPd`` chunk). Its pixels are not Imgur's, so
  its md5 is not Imgur's f953f499c9824953791551bfef65fe61: a client can only be tested on
  the shape (type, size, width, height) here.
- i.imgur.com answers its web page instead of the image in some cases (``text/html``
  first in Accept, yt-dlp #9458; a wrong extension): ``image_links_html=True`` answers
  every image link 200 with an HTML page.

Privacy and stale reads:
- A new album's privacy defaults to the account's setting, which may be public (Imgur's
  documentation): ``default_privacy='public'``.
- ``ignore_create_privacy=True`` / ``ignore_update_privacy=True``: album create / update
  ignore the ``privacy`` field (create gives the account's default). No public report
  says Imgur does this; they let a test check that a client reads privacy back instead of
  trusting what it sent.
- Reads right after a write may be stale (PyImgur's live album tests sleep 1-2 s between
  create/add/remove and the next read): with ``stale_album_reads=S`` (fake seconds, 0 by
  default), ``GET /3/album/{id}`` and ``/images`` within S of an API write to that album
  (create, update, add, remove, an upload into it) answer the album as it was just before
  that write. The fake's choice for a new album: a stale read shows it as created with
  nothing applied (the account's default privacy, no title, no images), never a 404.
  Images deleted since stay gone; listings (``account/{user}/albums``) are never stale;
  an album deleted is gone at once.

Incomplete requests (HTTP/1.1, RFC 9112 section 8: a message shorter than its
Content-Length, or a chunked body without its last chunk, is incomplete): the fake never
acts on one, as a real server never performs an upload whose body did not arrive. It is
not answered (the connection is closed), not charged and not logged in ``requests``; it
is kept in ``incomplete_requests`` as a ``Request`` with ``incomplete=True``,
``dropped=True``, ``status=None`` and the bytes that came in ``body_bytes``.

Hostile answers (no public report says Imgur sends them; they are what a captive portal,
a proxy or a broken server may send, and a careful client must survive): the faults
``redirect`` (a 3xx with ``Location`` to another host), ``answer`` (an envelope with any
``data`` and ``success``, or ``raw`` bytes), ``huge`` (an answer of ``size`` bytes, its
Content-Length declared) and ``dribble`` (one byte every ``interval`` seconds, of the
body or, with ``headers=True``, of a header line before the body). None of them acts on
the request.

Choices where Imgur's behaviour is not documented (see tests/INTERFACES.md):
- "User" credits are per IP on Imgur; every client of the fake comes from 127.0.0.1,
  so there is one user budget (window: ``hour`` fake seconds), one client budget
  (window: 24 * ``hour``) and one POST budget (window: ``hour``).
- Requests refused before acting (bad token, injected faults, 429) cost no credit; a
  request that reaches its handler is charged even if it answers 4xx.
- ``/oauth2/authorize`` with ``authorize_error`` answers HTTP 403 with an HTML page
  that says "Error 1024".
- An anonymous (Client-ID) upload with an ``album`` field is stored, belongs to no
  account and silently does not go into the album.
- A file type Imgur refuses answers 400 with the error as an object
  (``{"code": 1003, "message": "File type invalid (1)", "type": "ImgurException"}``);
  an oversize file answers 400 with a plain string error.
- ``rate_header_values={'X-RateLimit-UserReset': '9e18', ...}`` sends the given text
  instead of the fake's own value for each named rate header (names case-insensitive;
  ``X-Post-Rate-Limit-*`` only on POST answers, as always), to test a client against a
  broken or hostile server: resets in epoch milliseconds, years ahead, ``inf``, text.
  Only what is sent changes; the fake's own budgets are counted as usual.
- Uploads are "processed" like Imgur does: metadata stripped (JPEG APP1-APP15 and COM
  segments, PNG text/time/EXIF chunks) and a PNG over ``png_to_jpeg_size`` stored as a
  JPEG, so the served bytes may differ from the uploaded ones.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import email.message
import email.parser
import email.policy
import email.utils
import html
import http
import json
import math
import os
import random
import re
import socket
import socketserver
import string
import struct
import sys
import threading
import time
import traceback
import urllib.parse
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------

DEFAULT_CLIENT_ID = 'test-client-id'
DEFAULT_CLIENT_SECRET = 'test-client-secret'
DEFAULT_ACCOUNT = 'alice'

UPLOAD_COST = 10        # credits per upload (Imgur's API documentation)
CALL_COST = 1           # credits per other /3/ call; OAuth and image links cost 0
ALBUMS_PER_PAGE = 50
MB = 1024 * 1024
ID_ALPHABET = string.ascii_letters + string.digits
ID_LENGTH = 7
ALBUM_LINK = 'https://imgur.com/a/{}'

MSG_INVALID_TOKEN = 'The access token provided is invalid.'
MSG_AUTH_REQUIRED = 'Authentication required'
MSG_OVER_CAPACITY = 'Imgur is temporarily over capacity. Please try again later.'
MSG_TOO_FAST = 'Uploading file too fast!'
MSG_RATE_LIMIT = 'You are uploading too fast. Please wait {} more minutes.'
MSG_NO_IMAGE = 'No image data was sent to the upload api'
MSG_TOO_LARGE = 'File is over the size limit'
MSG_FORM_BODY = 'Album fields must be sent as multipart/form-data or JSON'
MSG_NOT_OWNER_ADD = 'You must own all the image ids to add them to album {}'
MSG_FORBIDDEN = 'These actions are forbidden.'
# The detail of the 429 some stale tokens get (the fake's wording: none was published).
MSG_TOKEN_429 = 'Too many requests. Please try again later.'
# Imgur's own error for a file type it refuses comes as an object, not a string.
ERROR_BAD_TYPE = {'code': 1003, 'message': 'File type invalid (1)',
                  'type': 'ImgurException', 'exception': []}

JSON_TYPE = 'application/json'
ERRORS_SHAPE_TYPE = 'application/vnd.imgur.v1+json'
HTML_TYPE = 'text/html; charset=utf-8'

FAULT_KINDS = {
    # kind: {option: default}
    'status': {'code': 500, 'html': False, 'message': None},
    'html': {'code': 503},
    'over_capacity': {'code': 403, 'html': False},
    'rate_limit': {'minutes': None},
    'too_fast': {},
    'token_expired': {},
    'stall': {'seconds': 10.0},
    'drop_before': {},
    'drop_after': {},
    'truncate': {},
    # Hostile answers (a captive portal, a compromised proxy or a broken server): not
    # Imgur's documented behaviour, but what a careful client must survive.
    'redirect': {'code': 307, 'location': None},        # Location: to another host
    'answer': {'code': 200, 'data': None, 'success': True, 'raw': None},
    'huge': {'size': 64 * 1024 * 1024},                 # a JSON-looking endless answer
    'dribble': {'interval': 0.2, 'size': 10_000,        # one byte every `interval` s,
                'headers': False},                      # of the body, or of a header
}
# Fault kinds that replace the answer without acting on the request.
ANSWERING_FAULTS = {'status', 'html', 'over_capacity', 'rate_limit', 'too_fast',
                    'token_expired', 'redirect', 'answer', 'huge', 'dribble'}

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
EXTENSIONS = {'image/jpeg': 'jpg', 'image/png': 'png', 'image/gif': 'gif',
              'image/tiff': 'tiff', 'image/bmp': 'bmp'}
# Metadata Imgur strips on upload.
PNG_METADATA_CHUNKS = {b'tEXt', b'zTXt', b'iTXt', b'tIME', b'eXIf'}


# ---------------------------------------------------------------------------
# Image bytes: sniffing, dimensions, metadata stripping, sample files
# ---------------------------------------------------------------------------

def sniff_image_type(data: bytes) -> str | None:
    """Return the MIME type of an image Imgur takes, judged by its magic bytes, or None."""
    if data.startswith(b'\xff\xd8\xff'):
        return 'image/jpeg'
    if data.startswith(PNG_SIGNATURE):          # APNG is a PNG too
        return 'image/png'
    if data[:6] in (b'GIF87a', b'GIF89a'):
        return 'image/gif'
    if data[:4] in (b'II*\x00', b'MM\x00*'):
        return 'image/tiff'
    # "BM" alone is too weak (a text file may start so): check the DIB header size.
    if data[:2] == b'BM' and len(data) >= 26:
        if struct.unpack('<I', data[14:18])[0] in (12, 40, 52, 56, 64, 108, 124):
            return 'image/bmp'
    return None


def image_dimensions(data: bytes, mime: str) -> tuple[int, int]:
    """Return (width, height) read from the file header; (0, 0) when unknown."""
    try:
        if mime == 'image/png' and len(data) >= 24:
            return struct.unpack('>II', data[16:24])
        if mime == 'image/gif' and len(data) >= 10:
            return struct.unpack('<HH', data[6:10])
        if mime == 'image/bmp':
            width, height = struct.unpack('<ii', data[18:26])
            return abs(width), abs(height)
        if mime == 'image/jpeg':
            return _jpeg_dimensions(data)
    except struct.error:
        pass
    return 0, 0


def _jpeg_segments(data: bytes):
    """Yield (marker, start, end) of each JPEG segment up to and including SOS.

    Raises ValueError when the structure is broken.
    """
    pos = 2
    while pos < len(data):
        if data[pos] != 0xFF:
            raise ValueError('not at a marker')
        while pos < len(data) and data[pos] == 0xFF:   # fill bytes
            pos += 1
        if pos >= len(data):
            raise ValueError('truncated')
        marker = data[pos]
        start = pos - 1
        pos += 1
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:   # standalone markers
            yield marker, start, pos
            continue
        if marker == 0xD9:
            yield marker, start, pos
            return
        if pos + 2 > len(data):
            raise ValueError('truncated')
        length = struct.unpack('>H', data[pos:pos + 2])[0]
        end = pos + length
        if length < 2 or end > len(data):
            raise ValueError('bad segment length')
        yield marker, start, end
        if marker == 0xDA:      # start of scan: entropy-coded data follows
            return
        pos = end


def _jpeg_dimensions(data: bytes) -> tuple[int, int]:
    sof_markers = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
    try:
        for marker, start, _end in _jpeg_segments(data):
            if marker in sof_markers:
                height, width = struct.unpack('>HH', data[start + 5:start + 9])
                return width, height
    except (ValueError, struct.error):
        pass
    return 0, 0


def is_animated(data: bytes, mime: str) -> bool:
    """True for an APNG or a GIF with more than one frame (a rough but cheap test)."""
    if mime == 'image/png':
        idat = data.find(b'IDAT')
        actl = data.find(b'acTL')
        return actl != -1 and (idat == -1 or actl < idat)
    if mime == 'image/gif':
        return data.count(b'\x21\xf9\x04') > 1
    return False


def strip_metadata(data: bytes, mime: str) -> bytes:
    """Drop what Imgur strips on upload; give back the data unchanged if it does not parse."""
    try:
        if mime == 'image/jpeg':
            out = [data[:2]]
            for marker, start, end in _jpeg_segments(data):
                if 0xE1 <= marker <= 0xEF or marker == 0xFE:
                    continue
                if marker == 0xDA:
                    out.append(data[start:])
                    return b''.join(out)
                out.append(data[start:end])
            return b''.join(out)
        if mime == 'image/png':
            out = [PNG_SIGNATURE]
            pos = len(PNG_SIGNATURE)
            while pos < len(data):
                length, kind = struct.unpack('>I4s', data[pos:pos + 8])
                end = pos + 12 + length
                if end > len(data):
                    return data
                if kind not in PNG_METADATA_CHUNKS:
                    out.append(data[pos:end])
                pos = end
            return b''.join(out)
    except (ValueError, struct.error):
        pass
    return data


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (struct.pack('>I', len(payload)) + kind + payload
            + struct.pack('>I', zlib.crc32(kind + payload) & 0xFFFFFFFF))


def make_png(width: int = 8, height: int = 8, seed: int | str = 0,
             chunks: tuple = ()) -> bytes:
    """A valid RGB PNG with pixels drawn from ``seed``.

    ``chunks``: (type, payload) pairs, e.g. ``(b'tEXt', b'Comment\\0hi')``, put before IDAT.
    """
    rng = random.Random(seed)
    rows = b''.join(b'\x00' + rng.randbytes(width * 3) for _ in range(height))
    parts = [PNG_SIGNATURE,
             _png_chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0))]
    parts += [_png_chunk(kind, payload) for kind, payload in chunks]
    parts += [_png_chunk(b'IDAT', zlib.compress(rows)), _png_chunk(b'IEND', b'')]
    return b''.join(parts)


def make_jpeg(width: int = 16, height: int = 16, seed: int | str = 0,
              segments: tuple = (), size: int = 256) -> bytes:
    """A structurally valid baseline JPEG (segments parse; pixels need not decode).

    ``segments``: (marker, payload) pairs put after APP0, e.g. ``(0xE1, b'Exif\\0\\0...')``.
    ``size``: rough total size; the entropy-coded data is random bytes from ``seed``.
    """
    def segment(marker: int, payload: bytes) -> bytes:
        return bytes((0xFF, marker)) + struct.pack('>H', len(payload) + 2) + payload

    rng = random.Random(seed)
    head = [b'\xff\xd8',
            segment(0xE0, b'JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00')]
    head += [segment(marker, payload) for marker, payload in segments]
    head += [segment(0xDB, b'\x00' + bytes(range(1, 65))),
             segment(0xC0, struct.pack('>BHHB', 8, height, width, 1) + b'\x01\x11\x00'),
             segment(0xDA, b'\x01\x01\x00\x00\x3f\x00')]
    header = b''.join(head)
    # 0xFF in entropy data must be followed by 0x00 ("byte stuffing").
    scan = rng.randbytes(max(16, size - len(header) - 2)).replace(b'\xff', b'\xff\x00')
    return header + scan + b'\xff\xd9'


def make_gif(width: int = 1, height: int = 1, seed: int | str = 0, frames: int = 1) -> bytes:
    """A GIF with a two-colour palette from ``seed``; ``frames`` > 1 makes it animated.

    Each frame holds the classic 1x1 pixel; the logical screen says width x height.
    """
    rng = random.Random(seed)
    out = [b'GIF89a', struct.pack('<HHBBB', width, height, 0x80, 0, 0), rng.randbytes(6)]
    for _ in range(frames):
        out.append(b'\x21\xf9\x04\x00\x0a\x00\x00\x00')            # graphic control
        out.append(b'\x2c' + struct.pack('<HHHHB', 0, 0, 1, 1, 0))  # image descriptor
        out.append(b'\x02\x02\x44\x01\x00')                        # LZW data, 1 pixel
    out.append(b'\x3b')
    return b''.join(out)


# Imgur's placeholder for a deleted image is a 161x81 PNG.
REMOVED_PNG = make_png(161, 81, seed='removed')

REGION_PLACEHOLDER_SIZE = 34641
REGION_PLACEHOLDER_WIDTH, REGION_PLACEHOLDER_HEIGHT = 336, 478


def _region_placeholder() -> bytes:
    """A valid 336x478 PNG of exactly 34,641 bytes, shaped like i.imgur.com's "Content
    not viewable in your region" image (its pixels and md5 are not Imgur's)."""
    width, height = REGION_PLACEHOLDER_WIDTH, REGION_PLACEHOLDER_HEIGHT
    grey, band = b'\xe6\xe6\xe6' * width, b'\x40\x40\x40' * width
    rows = b''.join(b'\x00' + (band if 200 <= y < 260 else grey) for y in range(height))
    head = (PNG_SIGNATURE
            + _png_chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0))
            + _png_chunk(b'IDAT', zlib.compress(rows, 9)))
    tail = _png_chunk(b'IEND', b'')
    # A private ancillary chunk (decoders skip it) pads the file to Imgur's exact size.
    text = b'Content not viewable in your region'
    padding = REGION_PLACEHOLDER_SIZE - len(head) - len(tail) - 12
    payload = (text + b'\x00' * padding)[:padding]
    return head + _png_chunk(b'rgPd', payload) + tail


REGION_PLACEHOLDER_PNG = _region_placeholder()
assert len(REGION_PLACEHOLDER_PNG) == REGION_PLACEHOLDER_SIZE


# ---------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------

@dataclasses.dataclass
class Account:
    """An Imgur account; ``name`` is the username (the API's ``url``)."""
    name: str
    id: int
    created: int


@dataclasses.dataclass(repr=False)
class ImageRecord:
    """A stored image. ``owner`` is a username, or None for an anonymous upload."""
    id: str
    owner: str | None
    data: bytes
    mime: str
    name: str | None
    title: str | None
    description: str | None
    datetime: int
    width: int
    height: int
    animated: bool
    deletehash: str
    views: int = 0
    bandwidth: int = 0

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def ext(self) -> str:
        return EXTENSIONS.get(self.mime, 'jpg')

    def __repr__(self) -> str:
        return (f'ImageRecord({self.id!r}, owner={self.owner!r}, name={self.name!r}, '
                f'size={self.size})')


@dataclasses.dataclass
class AlbumRecord:
    """A stored album; ``image_ids`` keeps the album's order."""
    id: str
    owner: str | None
    title: str | None
    description: str | None
    privacy: str
    datetime: int
    deletehash: str
    image_ids: list
    cover: str | None = None
    seq: int = 0        # creation order, to sort albums created in the same second


@dataclasses.dataclass(repr=False, eq=False)
class Request:
    """One HTTP request the fake received, as recorded in ``FakeImgur.requests``.

    ``query``: parsed query string (name -> list of values). ``status``: what was (or,
    if ``dropped`` after acting, would have been) answered; None if dropped before.
    ``form``: text fields of a form-encoded/multipart/JSON body (name -> list of values);
    ``files``: file parts of a multipart body (name -> (filename, bytes)).
    ``auth``: 'bearer', 'client-id' or None, from the Authorization header's scheme;
    ``account``: the username a valid Bearer token belongs to.
    ``body_type``: 'multipart', 'json', 'form' (form-urlencoded, or any other non-empty
    body) or 'none'. ``incomplete``: the body ended before its Content-Length (or its
    last chunk); such a request is never acted on and is kept in
    ``FakeImgur.incomplete_requests``, not in ``requests``.
    """
    method: str
    path: str
    query: dict
    status: int | None
    body_bytes: bytes
    auth: str | None
    headers: object = None          # http.client.HTTPMessage (case-insensitive .get)
    form: dict = dataclasses.field(default_factory=dict)
    files: dict = dataclasses.field(default_factory=dict)
    account: str | None = None
    time: float = 0.0               # fake clock when received
    dropped: bool = False
    parse_error: str | None = None
    incomplete: bool = False

    @property
    def body_type(self) -> str:
        """How the body was sent: 'multipart', 'json', 'form' or 'none'."""
        if not self.body_bytes:
            return 'none'
        content_type = self.headers.get_content_type() if self.headers else ''
        if content_type == 'multipart/form-data':
            return 'multipart'
        if content_type == 'application/json':
            return 'json'
        return 'form'       # read as form-encoded, like _parse_body does

    def value(self, name: str, default=None):
        """First value of field ``name``, from the body, else the query string."""
        values = self.form.get(name) or self.query.get(name)
        return values[0] if values else default

    def __repr__(self) -> str:
        return f'<Request {self.method} {self.path} -> {self.status}>'


@dataclasses.dataclass
class Fault:
    """A fault injected by ``add_fault``; ``remaining`` None means every match."""
    kind: str
    method: str | None
    path: str | None
    remaining: int | None
    options: dict
    fired: int = 0
    upload_name: str | None = None

    def matches(self, request: Request) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.method and self.method.upper() != request.method:
            return False
        if self.upload_name is not None and \
                re.search(self.upload_name, request.value('name') or '') is None:
            return False
        return self.path is None or re.search(self.path, request.path) is not None


@dataclasses.dataclass
class _AccessToken:
    username: str
    client_id: str
    expires_at: float


@dataclasses.dataclass
class _RefreshToken:
    username: str
    client_id: str
    revoked: bool = False


@dataclasses.dataclass
class _Answer:
    """What the handler sends: status, extra headers, body; ``truncate`` sends half.
    ``stream`` (chunks, each after ``interval`` seconds) replaces ``body`` for the
    hostile answers, with ``length`` as Content-Length; ``slow_header`` sends a header
    line of that many bytes first, one every ``interval`` seconds."""
    status: int
    body: bytes = b''
    headers: list = dataclasses.field(default_factory=list)
    truncate: bool = False
    stream: object = None
    length: int = 0
    interval: float = 0.0
    slow_header: int = 0


# ---------------------------------------------------------------------------
# Request parsing helpers
# ---------------------------------------------------------------------------

def _auth_kind(header: str | None) -> str | None:
    scheme = (header or '').split(' ', 1)[0].lower()
    return {'bearer': 'bearer', 'client-id': 'client-id'}.get(scheme)


def _fix_surrogates(text: str) -> str:
    """Header bytes reach us surrogate-escaped; read them back as UTF-8."""
    if any('\udc80' <= char <= '\udcff' for char in text):
        return text.encode('ascii', 'surrogateescape').decode('utf-8', 'replace')
    return text


def _parse_multipart(content_type: str, body: bytes):
    """Split a multipart/form-data body into (form, files) with the email package."""
    head = f'MIME-Version: 1.0\r\nContent-Type: {content_type}\r\n\r\n'
    message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(
        head.encode('latin-1') + body)
    if not message.is_multipart():
        raise ValueError('malformed multipart body')
    form, files = {}, {}
    for part in message.get_payload():
        # compat32 hides 8-bit header bytes (UTF-8 file names, as urllib3 sends them)
        # behind Header objects: read the raw value, repair it, then parse its params.
        raw = next((value for key, value in part.raw_items()
                    if key.lower() == 'content-disposition'), '')
        disposition = email.message.Message()
        disposition['Content-Disposition'] = _fix_surrogates(str(raw))
        name = disposition.get_param('name', header='content-disposition')
        if name is None:
            continue
        name = email.utils.collapse_rfc2231_value(name)
        filename = disposition.get_filename()
        payload = part.get_payload(decode=True) or b''
        if filename is not None:
            files[name] = (filename, payload)
        elif not part.get_content_type().startswith('text/'):
            files[name] = (None, payload)       # binary part sent without a file name
        else:
            form.setdefault(name, []).append(payload.decode('utf-8', 'replace'))
    return form, files


def _parse_body(headers, body: bytes):
    """Return (form, files, error) for a request body of any form Imgur accepts."""
    if not body:
        return {}, {}, None
    content_type = headers.get_content_type()
    try:
        if content_type == 'multipart/form-data':
            form, files = _parse_multipart(headers.get('Content-Type', ''), body)
            return form, files, None
        if content_type == 'application/json':
            obj = json.loads(body)
            if not isinstance(obj, dict):
                raise ValueError('JSON body is not an object')
            form = {}
            for key, value in obj.items():
                values = value if isinstance(value, list) else [value]
                form[key] = ['' if v is None else str(v) for v in values]
            return form, {}, None
    except ValueError as exc:
        return {}, {}, str(exc)
    # Anything else is read as form-encoded, which is what requests sends for data=dict.
    form = {}
    text = body.decode('utf-8', 'replace')
    for key, value in urllib.parse.parse_qsl(text, keep_blank_values=True):
        form.setdefault(key, []).append(value)
    return form, {}, None


_ALBUM_WRITES = {'_api_album_create', '_api_album_update', '_api_album_add',
                 '_api_album_remove'}


def _is_form_body(request: Request) -> bool:
    """A form-urlencoded body, or fields in the query string of a body-less write."""
    if request.body_bytes:
        return request.body_type == 'form'
    return bool(request.query)


def _requested_ids(request: Request) -> list:
    """IDs from ``ids[]`` (repeated) or ``ids`` (comma-separated), body or query."""
    raw = []
    for source in (request.form, request.query):
        raw += source.get('ids[]', []) + source.get('ids', [])
    ids = []
    for value in raw:
        for item in value.split(','):
            item = item.strip()
            if item and item not in ids:
                ids.append(item)
    return ids


def _has_ids_field(request: Request) -> bool:
    return any(key in source for source in (request.form, request.query)
               for key in ('ids', 'ids[]'))


# ---------------------------------------------------------------------------
# Answers
# ---------------------------------------------------------------------------

def _json_answer(status: int, obj, content_type: str = JSON_TYPE) -> _Answer:
    return _Answer(status, json.dumps(obj).encode('utf-8'), [('Content-Type', content_type)])


def _ok(data) -> _Answer:
    return _json_answer(200, {'data': data, 'success': True, 'status': 200})


def _error(request: Request, status: int, error) -> _Answer:
    """The envelope error: data = {"error", "request", "method"}."""
    data = {'error': error, 'request': request.path, 'method': request.method}
    return _json_answer(status, {'data': data, 'success': False, 'status': status})


def _html_answer(status: int, title: str, text: str) -> _Answer:
    page = (f'<!DOCTYPE html>\n<html><head><title>{html.escape(title)}</title></head>'
            f'<body><h1>{html.escape(title)}</h1><p>{text}</p></body></html>\n')
    return _Answer(status, page.encode('utf-8'), [('Content-Type', HTML_TYPE)])


def _redirect(location: str) -> _Answer:
    return _Answer(302, b'', [('Location', location)])


# ---------------------------------------------------------------------------
# The fake server
# ---------------------------------------------------------------------------

# (methods, path pattern, handler, needs a user, cost); first match wins.
_ROUTES = [(methods, re.compile('^' + pattern + '/?$'), handler, needs_user, cost)
           for methods, pattern, handler, needs_user, cost in [
    (('POST',), r'/3/(?:image|upload)', '_api_upload', False, UPLOAD_COST),
    (('GET',), r'/3/image/(?P<image_id>[A-Za-z0-9]+)', '_api_image_info', False, CALL_COST),
    (('POST', 'PUT'), r'/3/image/(?P<image_id>[A-Za-z0-9]+)', '_api_image_update', True,
     CALL_COST),
    (('DELETE',), r'/3/image/(?P<image_id>[A-Za-z0-9]+)', '_api_image_delete', True,
     CALL_COST),
    (('POST',), r'/3/album', '_api_album_create', True, CALL_COST),
    (('GET',), r'/3/album/(?P<album_id>[A-Za-z0-9]+)', '_api_album_info', False, CALL_COST),
    (('GET',), r'/3/album/(?P<album_id>[A-Za-z0-9]+)/images', '_api_album_images', False,
     CALL_COST),
    (('POST', 'PUT'), r'/3/album/(?P<album_id>[A-Za-z0-9]+)', '_api_album_update', True,
     CALL_COST),
    (('POST', 'PUT'), r'/3/album/(?P<album_id>[A-Za-z0-9]+)/add', '_api_album_add', True,
     CALL_COST),
    (('POST', 'DELETE'), r'/3/album/(?P<album_id>[A-Za-z0-9]+)/remove_images',
     '_api_album_remove', True, CALL_COST),
    (('DELETE',), r'/3/album/(?P<album_id>[A-Za-z0-9]+)', '_api_album_delete', True,
     CALL_COST),
    (('GET',), r'/3/account/(?P<username>[^/]+)', '_api_account', False, CALL_COST),
    (('GET',), r'/3/account/(?P<username>[^/]+)/albums(?:/(?P<page>\d+))?',
     '_api_account_albums', False, CALL_COST),
    (('GET',), r'/3/credits', '_api_credits', False, CALL_COST),
]]


class FakeImgur:
    """A fake Imgur API v3 server; see the module docstring and tests/INTERFACES.md.

    Every option is a plain attribute that may be changed at any time.
    """

    def __init__(self, *, user_limit: int = 12500, client_limit: int = 12500,
                 post_limit: int = 1250, reset_style: str = 'epoch',
                 rate_limit_shape: str = 'envelope', latency: float = 0.0,
                 token_ttl: int = 3600, hour: float = 3600,
                 authorize_error: bool = False, authorize_account: str = DEFAULT_ACCOUNT,
                 callback_url: str | None = None, default_privacy: str = 'public',
                 max_image_size: int = 20 * MB, max_gif_size: int = 200 * MB,
                 png_to_jpeg_size: int | None = 5 * MB, strip_metadata: bool = True,
                 album_form_bodies: bool = False, add_refuses_unowned: bool = True,
                 legacy_delete_removes: bool = False, invalid_token_shape: str = 'envelope',
                 album_account_url_null: bool = False, region_blocked: bool = False,
                 image_links_html: bool = False, cdn_blocked: bool = False,
                 ignore_create_privacy: bool = False, ignore_update_privacy: bool = False,
                 stale_album_reads: float = 0.0, rate_header_values: dict | None = None,
                 seed=None):
        # Options.
        self.user_limit = user_limit
        self.client_limit = client_limit
        self.post_limit = post_limit
        self.reset_style = reset_style
        self.rate_limit_shape = rate_limit_shape
        self.latency = latency
        self.token_ttl = token_ttl
        self.hour = hour
        self.authorize_error = authorize_error
        self.authorize_account = authorize_account
        self.callback_url = callback_url
        self.default_privacy = default_privacy      # the account's album privacy setting
        self.max_image_size = max_image_size
        self.max_gif_size = max_gif_size
        self.png_to_jpeg_size = png_to_jpeg_size
        self.strip_metadata = strip_metadata
        # Imgur since Dec 2024 (the module docstring, "Album writes since December 2024").
        self.album_form_bodies = album_form_bodies      # True: accept them, as before
        self.add_refuses_unowned = add_refuses_unowned  # False: skip them silently
        self.legacy_delete_removes = legacy_delete_removes  # True: the DELETE form works
        # Answers reported since 2024 (the module docstring, "Answers seen since 2024").
        self.invalid_token_shape = invalid_token_shape  # 'envelope' (403) | 'legacy429'
        self.album_account_url_null = album_account_url_null
        self.region_blocked = region_blocked            # image links: region placeholder
        self.image_links_html = image_links_html        # image links: a web page
        self.cdn_blocked = cdn_blocked                  # every /3/ call: CDN-Error 400
        # The module docstring, "Privacy and stale reads".
        self.ignore_create_privacy = ignore_create_privacy
        self.ignore_update_privacy = ignore_update_privacy
        self.stale_album_reads = stale_album_reads      # fake seconds; 0: reads are fresh
        # Hostile or broken answers: rate header name -> the text sent instead of the
        # fake's own value (the module docstring, "Choices").
        self.rate_header_values = dict(rate_header_values or {})
        self.on_request = None

        self._lock = threading.RLock()
        self._rng = random.Random(seed)
        self._clock_offset = 0.0

        # Accounts, clients and tokens.
        self.accounts: dict[str, Account] = {}
        self.clients: dict[str, str] = {DEFAULT_CLIENT_ID: DEFAULT_CLIENT_SECRET}
        self._access_tokens: dict[str, _AccessToken] = {}
        self._refresh_tokens: dict[str, _RefreshToken] = {}
        self._codes: dict[str, tuple] = {}     # authorization code -> (username, client)
        self._pins: dict[str, tuple] = {}      # PIN -> (username, client)
        self.add_account(DEFAULT_ACCOUNT)

        # Data.
        self.albums: dict[str, AlbumRecord] = {}
        self.images: dict[str, ImageRecord] = {}
        self._album_seq = 0
        # album ID -> (fake time of its last API write, AlbumRecord copy from before it).
        self._album_before_write: dict[str, tuple] = {}

        # Credits: (window start on the fake clock or None, credits used in the window).
        self._user_window = [None, 0]
        self._client_window = [None, 0]
        self._post_window = [None, 0]
        self.credits_used = 0

        # Log and faults.
        self.requests: list[Request] = []
        self.incomplete_requests: list[Request] = []   # bodies cut short: never acted on
        self.faults: list[Fault] = []
        self.errors: list[str] = []        # internal errors of the fake (should stay empty)
        self.connections = 0               # TCP connections accepted so far

        self._serving = 0                 # requests between arrival and answer
        self._server = None
        self._thread = None
        self._open_sockets = set()
        self.url = None

    # -- Lifecycle ------------------------------------------------------------

    def start(self, port: int = 0) -> str:
        """Serve on 127.0.0.1:``port`` (0: a free one) in a daemon thread; return the URL."""
        server = _Server(('127.0.0.1', port), _Handler)
        server.fake = self
        self._server = server
        self.url = f'http://127.0.0.1:{server.server_address[1]}/'
        # A short poll interval makes stop() quick; tests start hundreds of servers.
        self._thread = threading.Thread(target=server.serve_forever, kwargs={
            'poll_interval': 0.01}, name='fake-imgur', daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving and close every open (keep-alive) connection."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            sockets = list(self._open_sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5)
        self._server = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    # -- Clock ----------------------------------------------------------------

    def now(self) -> float:
        """The fake clock: time.time() plus every ``advance``."""
        return time.time() + self._clock_offset

    def advance(self, seconds: float) -> None:
        """Move the fake clock forward (token expiry, credit windows, datetimes)."""
        with self._lock:
            self._clock_offset += seconds

    # -- Accounts and tokens --------------------------------------------------

    def add_account(self, name: str) -> int:
        """Create account ``name`` (no-op if it exists); return its numeric ID."""
        with self._lock:
            if name not in self.accounts:
                self.accounts[name] = Account(name, 10000001 + len(self.accounts),
                                              int(self.now()))
            return self.accounts[name].id

    def issue_tokens(self, username: str = DEFAULT_ACCOUNT,
                     client_id: str = DEFAULT_CLIENT_ID) -> dict:
        """New tokens for ``username``, as ``/oauth2/token`` answers them."""
        with self._lock:
            account = self._account(username)
            access, refresh = self._secret(40), self._secret(40)
            self._access_tokens[access] = _AccessToken(username, client_id,
                                                       self.now() + self.token_ttl)
            self._refresh_tokens[refresh] = _RefreshToken(username, client_id)
            return {'access_token': access, 'expires_in': int(self.token_ttl),
                    'token_type': 'bearer', 'scope': None, 'refresh_token': refresh,
                    'account_id': account.id, 'account_username': username}

    def credentials(self, username: str = DEFAULT_ACCOUNT) -> dict:
        """A ready credentials.json for ``username`` (fresh tokens, default client)."""
        tokens = self.issue_tokens(username)
        return {'client_id': DEFAULT_CLIENT_ID, 'client_secret': DEFAULT_CLIENT_SECRET,
                'access_token': tokens['access_token'],
                'refresh_token': tokens['refresh_token'], 'account_username': username}

    def expire_access_tokens(self) -> None:
        """Make every access token issued so far expired (answers 403)."""
        with self._lock:
            for token in self._access_tokens.values():
                token.expires_at = float('-inf')

    def revoke_refresh_tokens(self) -> None:
        """Revoke every refresh token issued so far (refresh answers 400)."""
        with self._lock:
            for token in self._refresh_tokens.values():
                token.revoked = True

    def _account(self, username: str) -> Account:
        if username not in self.accounts:
            raise ValueError(f'unknown account {username!r}: call add_account() first')
        return self.accounts[username]

    def _secret(self, length: int) -> str:
        return ''.join(self._rng.choice('0123456789abcdef') for _ in range(length))

    def _new_id(self) -> str:
        while True:
            new_id = ''.join(self._rng.choice(ID_ALPHABET) for _ in range(ID_LENGTH))
            if new_id not in self.images and new_id not in self.albums:
                return new_id

    def _deletehash(self) -> str:
        return ''.join(self._rng.choice(ID_ALPHABET) for _ in range(15))

    # -- Data, set up and inspected directly by tests -------------------------

    def create_album(self, owner: str | None, title: str | None = None,
                     privacy: str = 'hidden', image_ids=(), datetime: int | None = None,
                     description: str | None = None) -> str:
        """Create an album directly (no request, no credits); return its ID."""
        with self._lock:
            if owner is not None:
                self._account(owner)
            self._album_seq += 1
            album = AlbumRecord(
                id=self._new_id(), owner=owner, title=title, description=description,
                privacy=privacy,
                datetime=int(self.now()) if datetime is None else int(datetime),
                deletehash=self._deletehash(), image_ids=[], seq=self._album_seq)
            for image_id in image_ids:
                if image_id not in self.images:
                    raise ValueError(f'unknown image {image_id!r}')
                if image_id not in album.image_ids:
                    album.image_ids.append(image_id)
            self.albums[album.id] = album
            return album.id

    def create_image(self, owner: str | None, data: bytes, name: str | None = None,
                     album: str | None = None, datetime: int | None = None,
                     title: str | None = None, description: str | None = None) -> str:
        """Store an image directly, its bytes kept as given; return its ID."""
        with self._lock:
            if owner is not None:
                self._account(owner)
            if album is not None and album not in self.albums:
                raise ValueError(f'unknown album {album!r}')
            mime = sniff_image_type(data)
            if mime is None:
                raise ValueError('not an image Imgur takes (see sniff_image_type)')
            image = self._store_image(owner, data, mime, name, title, description)
            if datetime is not None:
                image.datetime = int(datetime)
            if album is not None:
                self.albums[album].image_ids.append(image.id)
            return image.id

    def delete_image(self, image_id: str) -> None:
        """Delete an image directly: it leaves every album; its link ends at removed.png."""
        with self._lock:
            del self.images[image_id]
            for album in self.albums.values():
                if image_id in album.image_ids:
                    album.image_ids.remove(image_id)

    def delete_album(self, album_id: str) -> None:
        """Delete an album directly; its images stay."""
        with self._lock:
            del self.albums[album_id]
            self._album_before_write.pop(album_id, None)

    def album_image_ids(self, album_id: str) -> list:
        """The album's image IDs, in album order."""
        with self._lock:
            return list(self.albums[album_id].image_ids)

    def image_bytes(self, image_id: str) -> bytes:
        """The bytes served at the image's link."""
        with self._lock:
            return self.images[image_id].data

    def _store_image(self, owner, data, mime, name, title, description) -> ImageRecord:
        width, height = image_dimensions(data, mime)
        image = ImageRecord(
            id=self._new_id(), owner=owner, data=data, mime=mime, name=name, title=title,
            description=description, datetime=int(self.now()), width=width, height=height,
            animated=is_animated(data, mime), deletehash=self._deletehash())
        self.images[image.id] = image
        return image

    # -- Request log ----------------------------------------------------------

    def api_requests(self) -> list:
        """Logged requests to /3/ and /oauth2/ (not image links or pages)."""
        with self._lock:
            return [r for r in self.requests if r.path.startswith(('/3/', '/oauth2/'))]

    def reset_requests(self) -> None:
        """Forget the logged requests, incomplete ones too (credits_used is kept)."""
        with self._lock:
            self.requests.clear()
            self.incomplete_requests.clear()

    # -- Faults ---------------------------------------------------------------

    def add_fault(self, kind: str, method: str | None = None, path: str | None = None,
                  count: int | None = 1, *, upload_name: str | None = None,
                  **options) -> Fault:
        """Make the next ``count`` matching requests fail (None: all of them).

        ``path`` is a regex searched in the request path; ``upload_name`` one searched
        in the request's ``name`` field (an upload's file name; a request without one
        does not match). One fault fires per request: the first added that matches.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f'unknown fault kind {kind!r}')
        unknown = set(options) - set(FAULT_KINDS[kind])
        if unknown:
            raise ValueError(f'fault {kind!r} takes no option {sorted(unknown)}')
        fault = Fault(kind, method, path, count, {**FAULT_KINDS[kind], **options},
                      upload_name=upload_name)
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Remove every fault."""
        with self._lock:
            self.faults.clear()

    def _take_fault(self, request: Request) -> Fault | None:
        for fault in self.faults:
            if fault.matches(request):
                if fault.remaining is not None:
                    fault.remaining -= 1
                fault.fired += 1
                return fault
        return None

    def _fault_answer(self, fault: Fault, request: Request) -> _Answer:
        options = fault.options
        if fault.kind == 'status':
            code = options['code']
            message = options['message'] or http.HTTPStatus(code).phrase
            if options['html']:
                return _html_answer(code, f'{code} {http.HTTPStatus(code).phrase}', message)
            return _error(request, code, message)
        if fault.kind == 'html':
            code = options['code']
            title = f'{code} {http.HTTPStatus(code).phrase}'
            return _html_answer(code, title, 'The server could not answer your request.')
        if fault.kind == 'over_capacity':     # 403 usually; 500 and 429 seen in 2025
            if options['html']:
                return _html_answer(options['code'], 'Imgur is over capacity!',
                                    MSG_OVER_CAPACITY)
            return _error(request, options['code'], MSG_OVER_CAPACITY)
        if fault.kind == 'rate_limit':
            minutes = options['minutes']
            seconds = minutes * 60 if minutes is not None else self._user_reset_in()
            return self._rate_limited(request, seconds)
        if fault.kind == 'too_fast':
            return _error(request, 400, MSG_TOO_FAST)
        if fault.kind == 'token_expired':
            return self._invalid_token(request)
        if fault.kind == 'redirect':
            return _Answer(options['code'], b'', [('Location', options['location'])])
        if fault.kind == 'answer':
            if options['raw'] is not None:
                return _Answer(options['code'], options['raw'], [('Content-Type', JSON_TYPE)])
            return _json_answer(options['code'], {'data': options['data'],
                                                  'success': options['success'],
                                                  'status': options['code']})
        if fault.kind == 'huge':
            size, chunk = options['size'], b'[' + b' ' * (1024 * 1024 - 1)
            return _Answer(200, headers=[('Content-Type', JSON_TYPE)], length=size,
                           stream=(chunk for _ in range(size // len(chunk))))
        if fault.kind == 'dribble':
            size = options['size']
            if options['headers']:
                return _Answer(200, b'{}', [('Content-Type', JSON_TYPE)],
                               interval=options['interval'], slow_header=size)
            return _Answer(200, headers=[('Content-Type', JSON_TYPE)], length=size,
                           stream=(b' ' for _ in range(size)), interval=options['interval'])
        raise AssertionError(fault.kind)

    # -- Serving a request ----------------------------------------------------

    def _receive(self, method: str, raw_path: str, headers, body: bytes) -> Request:
        """Parse and log a request (called by the handler thread)."""
        split = urllib.parse.urlsplit(raw_path)
        form, files, parse_error = _parse_body(headers, body)
        request = Request(
            method=method, path=split.path,
            query=urllib.parse.parse_qs(split.query, keep_blank_values=True),
            status=None, body_bytes=body, auth=_auth_kind(headers.get('Authorization')),
            headers=headers, form=form, files=files, time=self.now(),
            parse_error=parse_error)
        with self._lock:
            self.requests.append(request)
        return request

    def _receive_incomplete(self, method: str, raw_path: str, headers, partial: bytes):
        """Record a request whose body never fully arrived; it is not acted on, not
        logged in ``requests``, not charged and gets no answer."""
        split = urllib.parse.urlsplit(raw_path)
        request = Request(
            method=method, path=split.path,
            query=urllib.parse.parse_qs(split.query, keep_blank_values=True),
            status=None, body_bytes=partial, auth=_auth_kind(headers.get('Authorization')),
            headers=headers, time=self.now(), dropped=True, incomplete=True)
        with self._lock:
            self.incomplete_requests.append(request)

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until no request is being served (a test's next run must not race with
        the last one's requests, unless that race is what it tests)."""
        deadline = time.monotonic() + timeout
        while self._serving and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._serving:
            raise AssertionError(f'{self._serving} requests still being served')

    def _respond(self, request: Request) -> _Answer | None:
        """Latency, faults and hook around acting; None means: drop the connection."""
        with self._lock:
            self._serving += 1
        try:
            return self._respond_unlocked(request)
        finally:
            with self._lock:
                self._serving -= 1

    def _respond_unlocked(self, request: Request) -> _Answer | None:
        if self.latency > 0:
            time.sleep(self.latency)
        with self._lock:
            fault = self._take_fault(request)
        kind = fault.kind if fault else None
        if self._call_hook('before', request) == 'drop' or kind == 'drop_before':
            request.dropped = True
            return None
        if kind == 'stall':
            time.sleep(fault.options['seconds'])
        with self._lock:
            if kind in ANSWERING_FAULTS:
                answer = self._fault_answer(fault, request)
                if request.path.startswith('/3/'):
                    headers = self._rate_headers(request)
                    if kind == 'rate_limit':
                        # A real limit shows in the headers: the hour's credits are spent
                        # (a 429 with credits left is how Imgur answers a stale token).
                        headers = [(name, '0' if name == 'X-RateLimit-UserRemaining'
                                    else value) for name, value in headers]
                    answer.headers += headers
            else:
                answer = self._act(request)
            request.status = answer.status
        if self._call_hook('after', request) == 'drop' or kind == 'drop_after':
            request.dropped = True
            return None
        answer.truncate = kind == 'truncate'
        return answer

    def _call_hook(self, phase: str, request: Request):
        hook = self.on_request
        if hook is None:
            return None
        try:
            return hook(phase, request)
        except Exception:                       # a broken hook must not kill the server
            self.errors.append('on_request hook raised:\n' + traceback.format_exc())
            return None

    def _act(self, request: Request) -> _Answer:
        """Perform the request (lock held) and build its answer."""
        try:
            if request.path.startswith('/3/'):
                return self._api(request)
            if request.path.startswith('/oauth2/'):
                return self._oauth(request)
            return self._static(request)
        except Exception:
            self.errors.append(f'{request.method} {request.path}:\n' + traceback.format_exc())
            return _error(request, 500, 'Internal error in the fake (see FakeImgur.errors)')

    # -- Rate limits ----------------------------------------------------------

    def _window(self, window: list, length: float) -> list:
        """Start or refill a credit window whose time is up."""
        now = self.now()
        if window[0] is None or now >= window[0] + length:
            window[0], window[1] = now, 0
        return window

    def _user_reset_in(self) -> float:
        start = self._window(self._user_window, self.hour)[0]
        return max(0.0, start + self.hour - self.now())

    def _client_reset_in(self) -> float:
        start = self._window(self._client_window, 24 * self.hour)[0]
        return max(0.0, start + 24 * self.hour - self.now())

    def _post_reset_in(self) -> float:
        start = self._window(self._post_window, self.hour)[0]
        return max(0.0, start + self.hour - self.now())

    def _charge(self, request: Request, cost: int) -> _Answer | None:
        """Take ``cost`` credits, or answer 429 (request not performed)."""
        user = self._window(self._user_window, self.hour)
        client = self._window(self._client_window, 24 * self.hour)
        post = self._window(self._post_window, self.hour)
        if self.user_limit - user[1] < cost:
            return self._rate_limited(request, self._user_reset_in())
        if self.client_limit - client[1] < cost:
            return self._rate_limited(request, self._client_reset_in())
        is_post = request.method == 'POST'
        if is_post and self.post_limit - post[1] < 1:
            return self._rate_limited(request, self._post_reset_in())
        user[1] += cost
        client[1] += cost
        if is_post:
            post[1] += 1
        self.credits_used += cost
        return None

    def _rate_limited(self, request: Request, seconds: float) -> _Answer:
        message = MSG_RATE_LIMIT.format(max(1, math.ceil(seconds / 60)))
        if self.rate_limit_shape == 'errors':
            return _json_answer(429, {'errors': [{
                'id': self._secret(16), 'code': '429', 'status': 'Too Many Requests',
                'detail': message}]}, ERRORS_SHAPE_TYPE)
        return _error(request, 429, message)

    def _reset_value(self, seconds_left: float) -> str:
        if self.reset_style == 'relative':
            return str(math.ceil(seconds_left))
        return str(math.ceil(self.now() + seconds_left))

    def _credits(self) -> dict:
        user = self._window(self._user_window, self.hour)
        client = self._window(self._client_window, 24 * self.hour)
        return {'UserLimit': self.user_limit,
                'UserRemaining': max(0, self.user_limit - user[1]),
                'UserReset': int(self._reset_value(self._user_reset_in())),
                'ClientLimit': self.client_limit,
                'ClientRemaining': max(0, self.client_limit - client[1]),
                'ClientReset': int(self._reset_value(self._client_reset_in()))}

    def _rate_headers(self, request: Request) -> list:
        credits = self._credits()
        headers = [(f'X-RateLimit-{key}', str(value)) for key, value in credits.items()]
        if request.method == 'POST':
            post = self._window(self._post_window, self.hour)
            headers += [('X-Post-Rate-Limit-Limit', str(self.post_limit)),
                        ('X-Post-Rate-Limit-Remaining', str(max(0, self.post_limit - post[1]))),
                        ('X-Post-Rate-Limit-Reset', str(math.ceil(self._post_reset_in())))]
        chosen = {name.lower(): value for name, value in self.rate_header_values.items()}
        return [(name, chosen.get(name.lower(), value)) for name, value in headers]

    # -- The /3/ API ----------------------------------------------------------

    def _api(self, request: Request) -> _Answer:
        if self.cdn_blocked:
            return self._cdn_refusal(request)
        answer = self._api_answer(request)
        answer.headers += self._rate_headers(request)
        return answer

    @staticmethod
    def _cdn_refusal(request: Request) -> _Answer:
        """A blocked network or country: Imgur's CDN answers before the API does, so
        nothing is performed, nothing charged, and no rate headers come with it."""
        answer = _error(request, 400, MSG_FORBIDDEN)
        answer.headers += [('CDN-Error', 'yes'), ('Retry-After', '0'),
                           ('Server', 'cat factory 1.0')]
        return answer

    def _invalid_token(self, request: Request) -> _Answer:
        """An invalid or expired access token, in the shape ``invalid_token_shape`` says."""
        if self.invalid_token_shape == 'legacy429':
            # Since 2025 some stale tokens get a 429 in the errors shape; the rate headers
            # added by _api still show credits left, since the refusal costs none.
            return _json_answer(429, {'errors': [{
                'id': self._secret(16), 'code': '429', 'status': 'Too Many Requests',
                'detail': MSG_TOKEN_429}]}, ERRORS_SHAPE_TYPE)
        return _error(request, 403, MSG_INVALID_TOKEN)

    def _authenticate(self, request: Request):
        """Return (username or None for Client-ID, error answer or None)."""
        header = request.headers.get('Authorization', '') if request.headers else ''
        credential = header.split(' ', 1)[1].strip() if ' ' in header else ''
        if request.auth == 'bearer':
            token = self._access_tokens.get(credential)
            if token is None or token.expires_at <= self.now():
                return None, self._invalid_token(request)
            request.account = token.username
            return token.username, None
        if request.auth == 'client-id':
            if credential not in self.clients:
                return None, _error(request, 403, 'Invalid client_id')
            return None, None
        return None, _error(request, 401, MSG_AUTH_REQUIRED)

    def _api_answer(self, request: Request) -> _Answer:
        user, refusal = self._authenticate(request)
        if refusal:
            return refusal
        for methods, pattern, handler, needs_user, cost in _ROUTES:
            match = pattern.match(request.path)
            if match and request.method in methods:
                break
        else:
            return (self._charge(request, CALL_COST)
                    or _error(request, 404, f'Unable to find a route for {request.path}'))
        if needs_user and user is None:
            return _error(request, 401, MSG_AUTH_REQUIRED)
        refusal = self._charge(request, cost)
        if refusal:
            return refusal
        if request.parse_error:
            return _error(request, 400, f'Could not read the request: {request.parse_error}')
        if handler in _ALBUM_WRITES and not self.album_form_bodies \
                and request.method in ('POST', 'PUT') and _is_form_body(request):
            return _error(request, 400, MSG_FORM_BODY)
        params = {key: value for key, value in match.groupdict().items() if value is not None}
        return getattr(self, handler)(request, user, **params)

    # Models.

    def _image_model(self, image: ImageRecord, viewer: str | None,
                     uploader: bool = False) -> dict:
        """The Image model; ``name`` and ``deletehash`` only for the owner (or uploader)."""
        is_owner = uploader or (image.owner is not None and image.owner == viewer)
        model = {
            'id': image.id, 'title': image.title, 'description': image.description,
            'datetime': image.datetime, 'type': image.mime, 'animated': image.animated,
            'width': image.width, 'height': image.height, 'size': image.size,
            'views': image.views, 'bandwidth': image.bandwidth, 'favorite': False,
            'nsfw': None, 'section': None, 'in_gallery': False,
            'account_url': image.owner,
            'account_id': self._account_id(image.owner),
            'name': image.name if is_owner else None,
            'link': f'{self.url}i/{image.id}.{image.ext}',
        }
        if is_owner:
            model['deletehash'] = image.deletehash
        return model

    def _account_id(self, username: str | None) -> int:
        """The owner's numeric ID; 0 (Imgur's "unset") for an anonymous image or album."""
        return self.accounts[username].id if username else 0

    def _album_model(self, album: AlbumRecord, viewer: str | None,
                     with_images: bool = True) -> dict:
        """The Album model; ``deletehash`` only for the owner; listings omit ``images``."""
        image_ids = [i for i in album.image_ids if i in self.images]   # see _album_as_read
        if album.cover in image_ids:
            cover = album.cover
        else:
            cover = image_ids[0] if image_ids else None
        model = {
            'id': album.id, 'title': album.title, 'description': album.description,
            'datetime': album.datetime, 'cover': cover,
            'account_url': None if self.album_account_url_null else album.owner,
            'account_id': self._account_id(album.owner),
            'privacy': album.privacy, 'layout': 'blog', 'views': 0,
            'link': ALBUM_LINK.format(album.id), 'favorite': False, 'nsfw': None,
            'section': None, 'in_gallery': False, 'is_ad': False,
            'images_count': len(image_ids),
        }
        if album.owner is not None and album.owner == viewer:
            model['deletehash'] = album.deletehash
        if with_images:
            model['images'] = self._album_image_models(album, viewer)
        return model

    # Images.

    def _api_upload(self, request: Request, user: str | None) -> _Answer:
        kind = request.value('type')
        filename = None
        if 'image' in request.files:
            filename, data = request.files['image']
            if kind == 'base64':
                data = data.decode('ascii', 'replace')
        elif request.form.get('image'):
            data = request.form['image'][0]
            if kind == 'file':
                data = data.encode('utf-8', 'surrogateescape')
        else:
            return _error(request, 400, MSG_NO_IMAGE)
        if isinstance(data, str):       # base64 text (what imgurpython sends) or a URL
            if kind == 'url' or data.startswith(('http://', 'https://')):
                return _error(request, 400, 'URL uploads are not supported by the fake')
            try:
                data = base64.b64decode(data)
            except (binascii.Error, ValueError):
                return _error(request, 400, 'Invalid base64 image data')
        if not data:
            return _error(request, 400, MSG_NO_IMAGE)

        album_id = request.value('album')
        album = None
        if album_id and user is not None:
            album = self.albums.get(album_id)
            if album is None or album.owner != user:
                return _error(request, 403, (
                    f"You are not the owner of album '{album_id}', which means you can't "
                    "add the image to it. For anonymous albums, use the album deletehash."))

        mime = sniff_image_type(data)
        if mime is None:
            return _error(request, 400, dict(ERROR_BAD_TYPE))
        limit = self.max_gif_size if mime == 'image/gif' else self.max_image_size
        if len(data) > limit:
            return _error(request, 400, MSG_TOO_LARGE)
        data, mime = self._process_upload(data, mime)

        image = self._store_image(user, data, mime, request.value('name') or filename,
                                  request.value('title'), request.value('description'))
        if album is not None:       # anonymous uploads never go into albums
            self._before_album_write(album)
            album.image_ids.append(image.id)
        return _ok(self._image_model(image, user, uploader=True))

    def _process_upload(self, data: bytes, mime: str) -> tuple[bytes, str]:
        """Strip metadata and convert a large PNG to JPEG, as Imgur does."""
        if self.strip_metadata:
            data = strip_metadata(data, mime)
        if (mime == 'image/png' and self.png_to_jpeg_size is not None
                and len(data) > self.png_to_jpeg_size):
            width, height = image_dimensions(data, mime)
            data = make_jpeg(width, height, seed=zlib.crc32(data), size=len(data) // 2)
            mime = 'image/jpeg'
        return data, mime

    def _find_image(self, request: Request, image_id: str):
        image = self.images.get(image_id)
        if image is None:
            return None, _error(request, 404, f'Unable to find an image with the id, {image_id}')
        return image, None

    def _owned_image(self, request: Request, user: str, image_id: str):
        image, error = self._find_image(request, image_id)
        if error is None and image.owner != user:
            error = _error(request, 403, f"You are not the owner of image '{image_id}'.")
        return image, error

    def _api_image_info(self, request, user, image_id):
        image, error = self._find_image(request, image_id)
        return error or _ok(self._image_model(image, user))

    def _api_image_update(self, request, user, image_id):
        image, error = self._owned_image(request, user, image_id)
        if error:
            return error
        for field in ('title', 'description'):
            value = request.value(field)
            if value is not None:
                setattr(image, field, value)
        return _ok(True)

    def _api_image_delete(self, request, user, image_id):
        _image, error = self._owned_image(request, user, image_id)
        if error:
            return error
        self.delete_image(image_id)
        return _ok(True)

    # Albums.

    def _find_album(self, request: Request, album_id: str, owner: str | None = None):
        album = self.albums.get(album_id)
        if album is None:
            return None, _error(request, 404, f'Unable to find an album with the id, {album_id}')
        if owner is not None and album.owner != owner:
            return None, _error(request, 403, f"You are not the owner of album '{album_id}'.")
        return album, None

    def _privacy(self, request: Request, default: str):
        privacy = request.value('privacy') or default
        if privacy not in ('public', 'hidden', 'secret'):
            return None, _error(request, 400, f'Invalid privacy: {privacy}')
        return privacy, None

    def _own_image_ids(self, request: Request, user: str) -> list:
        """The requested IDs that are the caller's images; the rest are silently dropped."""
        return [i for i in _requested_ids(request)
                if i in self.images and self.images[i].owner == user]

    def _api_album_create(self, request, user):
        privacy, error = self._privacy(request, self.default_privacy)
        if error:
            return error
        if self.ignore_create_privacy:          # the field is dropped: the account's setting
            privacy = self.default_privacy
        album_id = self.create_album(user, title=request.value('title'), privacy=privacy,
                                     image_ids=self._own_image_ids(request, user),
                                     description=request.value('description'))
        album = self.albums[album_id]
        album.cover = request.value('cover')
        # A stale read of a new album shows it as Imgur makes it before any field is
        # applied: the account's default privacy, no title, no images.
        self._album_before_write[album_id] = (self.now(), dataclasses.replace(
            album, title=None, description=None, privacy=self.default_privacy,
            image_ids=[], cover=None))
        return _ok({'id': album.id, 'deletehash': album.deletehash})

    def _api_album_info(self, request, user, album_id):
        album, error = self._find_album(request, album_id)
        return error or _ok(self._album_model(self._album_as_read(album), user))

    def _api_album_images(self, request, user, album_id):
        album, error = self._find_album(request, album_id)
        return error or _ok(self._album_image_models(self._album_as_read(album), user))

    def _album_image_models(self, album: AlbumRecord, viewer: str | None) -> list:
        # A stale snapshot may still name an image deleted since: it is gone for good.
        return [self._image_model(self.images[i], viewer) for i in album.image_ids
                if i in self.images]

    def _album_as_read(self, album: AlbumRecord) -> AlbumRecord:
        """The album, or its state before its last write while reads are stale."""
        written_at, before = self._album_before_write.get(album.id, (None, None))
        if (before is not None and self.stale_album_reads > 0
                and self.now() - written_at < self.stale_album_reads):
            return before
        return album

    def _before_album_write(self, album: AlbumRecord) -> None:
        """Keep the album as it is now, for stale reads right after this write."""
        self._album_before_write[album.id] = (
            self.now(), dataclasses.replace(album, image_ids=list(album.image_ids)))

    def _api_album_update(self, request, user, album_id):
        album, error = self._find_album(request, album_id, owner=user)
        if error:
            return error
        privacy, error = self._privacy(request, album.privacy)
        if error:
            return error
        self._before_album_write(album)
        if not self.ignore_update_privacy:
            album.privacy = privacy
        for field in ('title', 'description', 'cover'):
            value = request.value(field)
            if value is not None:
                setattr(album, field, value)
        if _has_ids_field(request):         # ids replaces the image set
            album.image_ids = self._own_image_ids(request, user)
        return _ok(True)

    def _api_album_add(self, request, user, album_id):
        album, error = self._find_album(request, album_id, owner=user)
        if error:
            return error
        owned = self._own_image_ids(request, user)
        if self.add_refuses_unowned and len(owned) < len(_requested_ids(request)):
            # Since 2025 one ID that is not the caller's image refuses the whole add.
            return _error(request, 403, MSG_NOT_OWNER_ADD.format(album_id))
        self._before_album_write(album)
        # Older quirk: IDs that are unknown, not the caller's, or already there are
        # skipped silently, and the answer is success all the same.
        for image_id in owned:
            if image_id not in album.image_ids:
                album.image_ids.append(image_id)
        return _ok(True)

    def _api_album_remove(self, request, user, album_id):
        album, error = self._find_album(request, album_id, owner=user)
        if error:
            return error
        if request.method == 'DELETE' and not self.legacy_delete_removes:
            # The old DELETE form with IDs in the query: since 2025 it answers success
            # and removes nothing (PyImgur moved off it in March 2025).
            return _ok(True)
        self._before_album_write(album)
        # Quirk: IDs not in the album are ignored.
        for image_id in _requested_ids(request):
            if image_id in album.image_ids:
                album.image_ids.remove(image_id)
        return _ok(True)

    def _api_album_delete(self, request, user, album_id):
        _album, error = self._find_album(request, album_id, owner=user)
        if error:
            return error
        self.delete_album(album_id)
        return _ok(True)

    # Account and credits.

    def _named_account(self, request, user, username):
        if username == 'me':
            if user is None:
                return None, _error(request, 401, MSG_AUTH_REQUIRED)
            username = user
        account = self.accounts.get(username)
        if account is None:
            return None, _error(request, 404, f'Unable to find account {username}')
        return account, None

    def _api_account(self, request, user, username):
        account, error = self._named_account(request, user, username)
        if error:
            return error
        return _ok({'id': account.id, 'url': account.name, 'bio': None, 'avatar': None,
                    'cover': None, 'reputation': 0, 'reputation_name': 'Neutral',
                    'created': account.created, 'pro_expiration': False,
                    'user_follow': {'status': False}, 'is_blocked': False})

    def _api_account_albums(self, request, user, username, page='0'):
        account, error = self._named_account(request, user, username)
        if error:
            return error
        is_owner = account.name == user
        albums = [a for a in self.albums.values()
                  if a.owner == account.name and (is_owner or a.privacy == 'public')]
        albums.sort(key=lambda a: (a.datetime, a.seq), reverse=True)     # newest first
        first = int(page) * ALBUMS_PER_PAGE
        return _ok([self._album_model(a, user, with_images=False)
                    for a in albums[first:first + ALBUMS_PER_PAGE]])

    def _api_credits(self, request, user):
        credits = self._credits()
        del credits['ClientReset']          # not part of the documented credits answer
        return _ok(credits)

    # -- OAuth ----------------------------------------------------------------

    def _oauth(self, request: Request) -> _Answer:
        if request.path.rstrip('/') == '/oauth2/token' and request.method == 'POST':
            return self._oauth_token(request)
        if request.path.rstrip('/') == '/oauth2/authorize' and request.method == 'GET':
            return self._oauth_authorize(request)
        return _error(request, 404, f'Unable to find a route for {request.path}')

    def _oauth_token(self, request: Request) -> _Answer:
        client_id = request.value('client_id')
        if client_id not in self.clients:
            return _error(request, 400, 'Invalid client_id')
        if request.value('client_secret') != self.clients[client_id]:
            return _error(request, 400, 'Invalid client_secret')
        grant = request.value('grant_type')
        if grant == 'refresh_token':
            token = self._refresh_tokens.get(request.value('refresh_token') or '')
            if token is None or token.revoked or token.client_id != client_id:
                return _error(request, 400, 'Invalid refresh token')
            username = token.username
        elif grant in ('authorization_code', 'pin'):
            grants, field = ((self._codes, 'code') if grant == 'authorization_code'
                             else (self._pins, 'pin'))
            issued = grants.get(request.value(field) or '')
            if issued is None or issued[1] != client_id:
                return _error(request, 400, f'Invalid {field}')
            del grants[request.value(field)]           # good for one use only
            username = issued[0]
        else:
            return _error(request, 400, 'Invalid grant_type')
        # Quirk: the token answer has no envelope.
        return _json_answer(200, self.issue_tokens(username, client_id))

    def _oauth_authorize(self, request: Request) -> _Answer:
        if self.authorize_error:
            # Reported since mid-2025 for new logins: no way to authorize in a browser.
            return _html_answer(403, 'Error 1024', 'Error 1024: Something went wrong. '
                                'Please try again later.')
        client_id = request.value('client_id')
        if client_id not in self.clients:
            return _html_answer(400, 'Invalid client_id', 'This application is unknown.')
        username = self.authorize_account
        if username not in self.accounts:
            return _html_answer(400, 'Unknown account', f'No account {username!r}.')
        callback = self.callback_url or f'{self.url}callback'
        state = request.value('state')
        extra = [('state', state)] if state is not None else []
        response_type = request.value('response_type')
        if response_type == 'token':
            tokens = self.issue_tokens(username, client_id)
            fragment = urllib.parse.urlencode([
                (key, tokens[key]) for key in ('access_token', 'expires_in', 'token_type',
                                               'refresh_token', 'account_username',
                                               'account_id')] + extra)
            return _redirect(f'{callback}#{fragment}')
        if response_type == 'code':
            code = self._secret(40)
            self._codes[code] = (username, client_id)
            return _redirect(f'{callback}?{urllib.parse.urlencode([("code", code)] + extra)}')
        if response_type == 'pin':
            pin = self._secret(10)
            self._pins[pin] = (username, client_id)
            return _html_answer(200, 'Authorized', 'Enter this PIN in the application: '
                                f'<code id="pin">{pin}</code>')
        return _html_answer(400, 'Invalid response_type',
                            'response_type must be token, pin or code.')

    # -- Image links and pages ------------------------------------------------

    def _static(self, request: Request) -> _Answer:
        if request.method not in ('GET', 'HEAD'):
            return _html_answer(405, 'Method Not Allowed', 'Only GET here.')
        match = re.match(r'^/i/([A-Za-z0-9]+)(?:\.[A-Za-z0-9]+)?$', request.path)
        if match and self.region_blocked:
            # i.imgur.com in a blocked region: 200 image/png, the same placeholder for
            # every link, nothing to tell it from a photo but its bytes.
            return _Answer(200, REGION_PLACEHOLDER_PNG, [('Content-Type', 'image/png')])
        if match and self.image_links_html:
            return _html_answer(200, 'Imgur', 'The web page, not the image.')
        if match:
            image = self.images.get(match.group(1))
            if image is None:      # deleted or never existed: Imgur's placeholder
                return _redirect(f'{self.url}removed.png')
            image.views += 1
            image.bandwidth += image.size
            return _Answer(200, image.data, [('Content-Type', image.mime)])
        if request.path == '/removed.png':
            return _Answer(200, REMOVED_PNG, [('Content-Type', 'image/png')])
        if request.path == '/callback':
            return _html_answer(200, 'Authorized', 'Copy the address of this page '
                                'into imgurbox.')
        return _html_answer(404, 'Not Found', 'Nothing here.')

    # -- Connection bookkeeping (for stop()) ----------------------------------

    def _connection_opened(self, sock) -> None:
        with self._lock:
            self.connections += 1
            self._open_sockets.add(sock)

    def _connection_closed(self, sock) -> None:
        with self._lock:
            self._open_sockets.discard(sock)


# ---------------------------------------------------------------------------
# HTTP plumbing
# ---------------------------------------------------------------------------

class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeImgur

    def server_bind(self):
        # HTTPServer.server_bind would look up the host's FQDN, which can be slow
        # without a network; the fake only ever binds 127.0.0.1.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class _IncompleteBody(Exception):
    """The request body ended before it was all there; ``partial`` is what came."""

    def __init__(self, partial: bytes):
        super().__init__('request body cut short')
        self.partial = partial


class _Handler(BaseHTTPRequestHandler):
    """Reads a request, lets the FakeImgur answer it, writes (or drops) the answer."""

    protocol_version = 'HTTP/1.1'       # keep-alive; every answer has a Content-Length
    server_version = 'FakeImgur/1.0'
    # Without TCP_NODELAY, Nagle + delayed ACK add ~40 ms to each answer on a kept-alive
    # connection: that would penalise a client for reusing connections.
    disable_nagle_algorithm = True

    def version_string(self):
        return getattr(self, '_server_header', None) or self.server_version

    def setup(self):
        super().setup()
        self.server.fake._connection_opened(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.fake._connection_closed(self.connection)

    def log_message(self, format, *args):      # keep test output quiet
        pass

    def do_GET(self):
        fake = self.server.fake
        try:
            body = self._read_body()
        except _IncompleteBody as exc:
            # The client went away mid-body: a server never acts on half a request.
            fake._receive_incomplete(self.command, self.path, self.headers, exc.partial)
            self._drop()
            return
        except OSError:
            self._drop()
            return
        request = fake._receive(self.command, self.path, self.headers, body)
        answer = fake._respond(request)
        if answer is None:
            self._drop()
        else:
            self._send(answer)

    do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_GET

    def _read_body(self) -> bytes:
        """The whole body; raises _IncompleteBody if it ends early or does not parse."""
        if 'chunked' in self.headers.get('Transfer-Encoding', '').lower():
            return self._read_chunked()
        try:
            length = int(self.headers.get('Content-Length') or 0)
        except ValueError:
            raise _IncompleteBody(b'') from None
        body = self.rfile.read(length) if length > 0 else b''
        if len(body) < length:          # rfile.read returns short at EOF
            raise _IncompleteBody(body)
        return body

    def _read_chunked(self) -> bytes:
        chunks = []
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b';', 1)[0].strip(), 16)
            except ValueError:          # EOF (b'') or garbage instead of a chunk size
                raise _IncompleteBody(b''.join(chunks)) from None
            if size == 0:
                break                   # the last chunk arrived: the body is whole
            chunk = self.rfile.read(size)
            chunks.append(chunk)
            if len(chunk) < size or self.rfile.readline(1024) == b'':
                raise _IncompleteBody(b''.join(chunks))
        while self.rfile.readline(1024) not in (b'\r\n', b'\n', b''):
            pass                                    # trailers
        return b''.join(chunks)

    def _send(self, answer: _Answer) -> None:
        # send_response writes the Server header itself: an answer may name its own.
        headers = [(name, value) for name, value in answer.headers if name != 'Server']
        self._server_header = next((value for name, value in answer.headers
                                    if name == 'Server'), None)
        try:
            self.send_response(answer.status)
            if answer.slow_header:
                self._dribble_header(answer)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header('Content-Length', str(answer.length if answer.stream is not None
                                                   else len(answer.body)))
            self.end_headers()
            if self.command == 'HEAD':
                return
            if answer.stream is not None:
                for chunk in answer.stream:
                    if answer.interval:
                        self.wfile.flush()
                        time.sleep(answer.interval)
                    self.wfile.write(chunk)
                return
            if answer.truncate:
                self.wfile.write(answer.body[:len(answer.body) // 2])
                self.wfile.flush()
                self._drop()
                return
            self.wfile.write(answer.body)
        except OSError:
            self.close_connection = True

    def _dribble_header(self, answer: _Answer) -> None:
        """Send the status line, then an X-Dribble header a byte at a time."""
        self.wfile.write(b''.join(self._headers_buffer) + b'X-Dribble: ')
        self._headers_buffer = []
        for _ in range(answer.slow_header):
            self.wfile.flush()
            time.sleep(answer.interval)
            self.wfile.write(b'x')
        self.wfile.write(b'\r\n')

    def _drop(self) -> None:
        """Close the connection without (the rest of) an answer."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


# ---------------------------------------------------------------------------
# Standalone
# ---------------------------------------------------------------------------

def main(argv=None) -> int:
    """Run the fake until Ctrl-C, printing what imgurbox needs to talk to it."""
    parser = argparse.ArgumentParser(description='A fake Imgur API server for imgurbox.')
    parser.add_argument('--port', type=int, default=0, help='port (default: a free one)')
    parser.add_argument('--home', type=Path, help='write credentials.json into this folder')
    parser.add_argument('--latency', type=float, default=0.0,
                        help='seconds to wait before each answer')
    args = parser.parse_args(argv)

    fake = FakeImgur(latency=args.latency)
    url = fake.start(args.port)
    credentials = json.dumps(fake.credentials(), indent=2)
    # Write the file before printing, so that whoever reads the output finds it there.
    if args.home:
        args.home.mkdir(parents=True, exist_ok=True)
        path = args.home / 'credentials.json'
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, 'w', encoding='utf-8') as file:
            file.write(credentials + '\n')
        os.chmod(path, 0o600)           # in case the file existed with other modes
    try:                    # Ctrl-C may come as soon as the last line is out
        print(f'Fake Imgur listening at {url}')
        print(f'export IMGUR_API_URL={url}')
        print(f'credentials.json (written to {path}):' if args.home else 'credentials.json:')
        print(credentials, flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


if __name__ == '__main__':
    sys.exit(main())
