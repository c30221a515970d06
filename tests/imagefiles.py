"""Builders of real, small image files for the tests (standard library only).

Every builder is deterministic: the same seed gives the same bytes, distinct seeds give
distinct pixel data. The metadata options add exactly the segments / chunks that the content
hash leaves out (JPEG XMP, APP13 IPTC, COM, EXIF but its orientation; PNG tEXt, zTXt, iTXt,
tIME, eXIf but its orientation) or keeps (the EXIF orientation tag; README "Changes and
what they do on Imgur"), so a test can make a "metadata-only edit" by calling the same
builder with the same seed and another option.

    jpeg(seed, *, xmp=None, iptc=None, comment=None, exif_orientation=None, exif=None,
         description=None) -> bytes
    png(seed, *, text=None, ztxt=None, itxt=None, time=None, exif=None,
        description=None) -> bytes
    gif(seed) -> bytes
    exif_tiff(tags, byte_order="<") -> bytes      # the TIFF body of an EXIF block

``exif`` is a dict of IFD0 tags (a name of EXIF_TAGS, or a number) -> value, written as
Windows Explorer and Photos write ratings and tags: little-endian, ``Rating`` and
``RatingPercent`` as SHORT, ``XPKeywords`` and the other XP tags as BYTE arrays of
UTF-16LE text ending in a NUL, ``Padding`` (Microsoft's 0xEA1C) as UNDEFINED bytes.
``description`` is an XMP ``dc:description`` (the caption photo managers write).

The JPEG is a real baseline grayscale JFIF (32x16 pixels, flat 8x8 blocks whose shades
come from the seed), encoded with real Huffman tables, so any decoder can read it.
"""

from __future__ import annotations

import hashlib
import struct
import zlib

__all__ = ["jpeg", "png", "gif", "seed_bytes", "exif_tiff", "xmp_description_packet",
           "EXIF_TAGS", "XMP_HEADER", "PHOTOSHOP_HEADER"]

XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
PHOTOSHOP_HEADER = b"Photoshop 3.0\x00"


def seed_bytes(seed, n: int, label: str = "") -> bytes:
    """n pseudo-random bytes derived from (seed, label)."""
    out = b""
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{label}|{seed!r}|{counter}".encode()).digest()
        counter += 1
    return out[:n]


# --------------------------------------------------------------------------- JPEG

_JPEG_W, _JPEG_H = 32, 16

# Standard luminance DC table (ITU T.81 Annex K.3).
_DC_BITS = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
_DC_VALS = list(range(12))
# A tiny AC table: two 2-bit codes, EOB (0x00) and 0x01. Only EOB is used.
_AC_BITS = [0, 2] + [0] * 14
_AC_VALS = [0x00, 0x01]


def _segment(marker: int, payload: bytes) -> bytes:
    if len(payload) + 2 > 0xFFFF:
        raise ValueError("JPEG segment too long")
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def _huffman_codes(bits, vals) -> dict[int, tuple[int, int]]:
    """Canonical Huffman codes: value -> (code, length)."""
    codes = {}
    code = 0
    k = 0
    for length in range(1, 17):
        for _ in range(bits[length - 1]):
            codes[vals[k]] = (code, length)
            k += 1
            code += 1
        code <<= 1
    return codes


class _BitWriter:
    def __init__(self):
        self.out = bytearray()
        self.acc = 0
        self.n = 0

    def write(self, value: int, length: int) -> None:
        for i in range(length - 1, -1, -1):
            self.acc = (self.acc << 1) | ((value >> i) & 1)
            self.n += 1
            if self.n == 8:
                self._flush_byte()

    def _flush_byte(self) -> None:
        self.out.append(self.acc)
        if self.acc == 0xFF:
            self.out.append(0x00)  # byte stuffing
        self.acc = 0
        self.n = 0

    def finish(self) -> bytes:
        while self.n:
            self.write(1, 1)  # pad with 1-bits
        return bytes(self.out)


def _dc_category(v: int) -> int:
    return abs(v).bit_length()


def _exif_orientation(orientation: int) -> bytes:
    # TIFF header (big endian), IFD0 with a single Orientation (0x0112) SHORT entry.
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8)
    tiff += struct.pack(">H", 1)
    tiff += struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff += struct.pack(">I", 0)  # no next IFD
    return b"Exif\x00\x00" + tiff


# IFD0 tags the tests write (TIFF 6.0; Microsoft's XP* and Rating tags, as Windows
# Explorer and Photos write them).
EXIF_TAGS = {"ImageDescription": 0x010E, "Make": 0x010F, "Model": 0x0110,
             "Orientation": 0x0112, "Software": 0x0131, "Rating": 0x4746,
             "RatingPercent": 0x4749, "XPTitle": 0x9C9B, "XPComment": 0x9C9C,
             "XPAuthor": 0x9C9D, "XPKeywords": 0x9C9E, "XPSubject": 0x9C9F,
             "Padding": 0xEA1C}
_SHORT_TAGS = {0x0112, 0x4746, 0x4749}
_XP_TAGS = {0x9C9B, 0x9C9C, 0x9C9D, 0x9C9E, 0x9C9F}


# What Windows Explorer writes when a photo is rated and tagged, and then retagged.
WINDOWS_RATING = {"Rating": 5, "RatingPercent": 99, "XPKeywords": "cats;garden",
                  "Padding": b"\x1c\xea" + b"\x00" * 30}
WINDOWS_RETAGGED = {"Rating": 2, "RatingPercent": 25, "XPKeywords": "dogs;beach;summer",
                    "XPSubject": "holiday", "ImageDescription": "On the beach"}


def exif_tiff(tags: dict, byte_order: str = "<") -> bytes:
    """A TIFF structure whose IFD0 holds ``tags`` (name or number -> value): SHORT for
    Orientation and the ratings (and any other int), BYTE UTF-16LE text for XP tags,
    ASCII for other str, UNDEFINED for bytes. Values over 4 bytes follow the IFD."""
    entries = []
    for key, value in tags.items():
        tag = EXIF_TAGS.get(key, key)
        if tag in _XP_TAGS:
            kind, raw = 1, value.encode("utf-16-le") + b"\x00\x00"
        elif isinstance(value, int) or tag in _SHORT_TAGS:
            kind, raw = 3, struct.pack(byte_order + "H", int(value))
        elif isinstance(value, str):
            kind, raw = 2, value.encode("utf-8") + b"\x00"
        else:
            kind, raw = 7, bytes(value)
        entries.append((tag, kind, raw))
    entries.sort()
    count = len(entries)
    data_at = 8 + 2 + 12 * count + 4
    ifd, data = b"", b""
    for tag, kind, raw in entries:
        number = len(raw) // 2 if kind == 3 else len(raw)
        if len(raw) <= 4:
            field = raw.ljust(4, b"\x00")
        else:
            field = struct.pack(byte_order + "I", data_at + len(data))
            data += raw + (b"\x00" if len(raw) % 2 else b"")
        ifd += struct.pack(byte_order + "HHI", tag, kind, number) + field
    head = (b"II*\x00" if byte_order == "<" else b"MM\x00*") + struct.pack(byte_order + "I", 8)
    return head + struct.pack(byte_order + "H", count) + ifd + struct.pack(byte_order + "I", 0) + data


def xmp_description_packet(description: str) -> bytes:
    """An XMP packet (without the APP1 header) whose dc:description is ``description``."""
    from xml.sax.saxutils import escape
    body = (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        '<dc:description><rdf:Alt><rdf:li xml:lang="x-default">'
        f'{escape(description)}</rdf:li></rdf:Alt></dc:description>'
        '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    )
    return body.encode("utf-8")


def _xmp_packet(text: str | bytes) -> bytes:
    if isinstance(text, bytes):
        return XMP_HEADER + text
    body = (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
        f'xmp:Label="{text}"/></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    )
    return XMP_HEADER + body.encode("utf-8")


def _iptc_app13(caption: str | bytes) -> bytes:
    data = caption.encode("utf-8") if isinstance(caption, str) else caption
    # IPTC-IIM record 2, dataset 120 (Caption/Abstract).
    iptc = b"\x1c\x02\x78" + struct.pack(">H", len(data)) + data
    if len(iptc) % 2:
        iptc += b"\x00"
    # Photoshop image resource block 0x0404 (IPTC-NAA), empty Pascal name padded to 2.
    resource = b"8BIM" + struct.pack(">H", 0x0404) + b"\x00\x00"
    resource += struct.pack(">I", len(iptc)) + iptc
    return PHOTOSHOP_HEADER + resource


def jpeg(seed, *, xmp=None, iptc=None, comment=None, exif_orientation=None, exif=None,
         description=None) -> bytes:
    """A valid baseline grayscale JFIF whose pixels come from the seed.

    xmp: str (a label put in an XMP packet) or bytes (the packet itself) -> APP1 XMP.
    iptc: str/bytes caption -> APP13 "Photoshop 3.0" with an IPTC record.
    comment: str/bytes -> COM segment.
    exif_orientation: int 1..8 -> APP1 Exif with IFD0 Orientation (big-endian, alone).
    exif: dict of IFD0 tags -> APP1 Exif as Windows writes it (exif_tiff).
    description: str -> APP1 XMP with dc:description (instead of ``xmp``).
    """
    out = bytearray(b"\xff\xd8")  # SOI
    out += _segment(0xE0, b"JFIF\x00" + bytes([1, 1, 0]) + struct.pack(">HH", 1, 1) + b"\x00\x00")
    if exif_orientation is not None:
        out += _segment(0xE1, _exif_orientation(int(exif_orientation)))
    if exif is not None:
        out += _segment(0xE1, b"Exif\x00\x00" + exif_tiff(exif))
    if description is not None:
        out += _segment(0xE1, XMP_HEADER + xmp_description_packet(description))
    if xmp is not None:
        out += _segment(0xE1, _xmp_packet(xmp))
    if iptc is not None:
        out += _segment(0xED, _iptc_app13(iptc))
    if comment is not None:
        out += _segment(0xFE, comment.encode("utf-8") if isinstance(comment, str) else comment)

    # DQT: table 0, 8-bit precision, all ones except DC = 8 (zig-zag order).
    out += _segment(0xDB, bytes([0x00, 8] + [1] * 63))
    # SOF0: 8-bit, H x W, one component (id 1, sampling 1x1, table 0).
    out += _segment(0xC0, struct.pack(">BHHB", 8, _JPEG_H, _JPEG_W, 1) + bytes([1, 0x11, 0]))
    # DHT: DC table 0 and AC table 0.
    out += _segment(0xC4, bytes([0x00] + _DC_BITS + _DC_VALS) + bytes([0x10] + _AC_BITS + _AC_VALS))
    # SOS: one component, DC/AC tables 0, spectral 0..63, no approximation.
    out += _segment(0xDA, bytes([1, 1, 0x00, 0, 63, 0]))

    # Entropy-coded data: one flat block per 8x8, DC value from the seed (-60..60),
    # i.e. pixel shades 68..188; AC all zero (EOB).
    dc_codes = _huffman_codes(_DC_BITS, _DC_VALS)
    ac_codes = _huffman_codes(_AC_BITS, _AC_VALS)
    nblocks = (_JPEG_W // 8) * (_JPEG_H // 8)
    rnd = seed_bytes(seed, nblocks, "jpeg")
    bw = _BitWriter()
    prev = 0
    for b in rnd:
        value = (b % 121) - 60
        diff = value - prev
        prev = value
        cat = _dc_category(diff)
        code, length = dc_codes[cat]
        bw.write(code, length)
        if cat:
            bits = diff if diff > 0 else diff + (1 << cat) - 1
            bw.write(bits, cat)
        code, length = ac_codes[0x00]
        bw.write(code, length)
    out += bw.finish()
    out += b"\xff\xd9"  # EOI
    return bytes(out)


def jpeg_segments(data: bytes) -> list[tuple[int, bytes]]:
    """Walk a JPEG from SOI to SOS: list of (marker, payload); raises ValueError if broken.

    The last item is (0xDA, sos_header). Entropy data and EOI are checked too.
    """
    if data[:2] != b"\xff\xd8":
        raise ValueError("no SOI")
    pos = 2
    segs = []
    while True:
        if pos + 4 > len(data) or data[pos] != 0xFF:
            raise ValueError(f"no marker at {pos}")
        marker = data[pos + 1]
        if marker in (0xD8, 0xD9) or 0xD0 <= marker <= 0xD7 or marker == 0x01:
            raise ValueError(f"unexpected standalone marker {marker:#x} at {pos}")
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        if length < 2 or pos + 2 + length > len(data):
            raise ValueError(f"bad length at {pos}")
        segs.append((marker, data[pos + 4:pos + 2 + length]))
        pos += 2 + length
        if marker == 0xDA:
            break
    # entropy-coded data: every 0xFF must be followed by 0x00 or RSTn, until EOI
    i = pos
    while i < len(data) - 1:
        if data[i] == 0xFF:
            nxt = data[i + 1]
            if nxt == 0xD9:
                if i + 2 != len(data):
                    raise ValueError("data after EOI")
                return segs
            if nxt != 0x00 and not 0xD0 <= nxt <= 0xD7:
                raise ValueError(f"bad marker {nxt:#x} in entropy data")
            i += 2
        else:
            i += 1
    raise ValueError("no EOI")


# --------------------------------------------------------------------------- PNG

_PNG_SIG = b"\x89PNG\r\n\x1a\n"


def _chunk(ctype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload) & 0xFFFFFFFF)


def _pairs(value, default_key):
    """str -> [(default_key, str)]; (k, v) -> [(k, v)]; dict -> items; list of pairs."""
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        return [(default_key, value)]
    if isinstance(value, dict):
        return list(value.items())
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        return [value]
    return list(value)


def _latin1(s) -> bytes:
    return s if isinstance(s, bytes) else s.encode("latin-1")


def png(seed, *, text=None, ztxt=None, itxt=None, time=None, exif=None,
        description=None) -> bytes:
    """A valid 8x8 RGB PNG whose pixels come from the seed.

    text / ztxt / itxt: a str (keyword "Comment"), a (keyword, value) pair, a dict or a list
    of pairs -> tEXt / zTXt / iTXt chunks (after IDAT, where photo tools append them).
    time: True (a fixed date) or a tuple (year, month, day, hour, minute, second) -> tIME.
    exif: dict of IFD0 tags -> an eXIf chunk (before IDAT, as the PNG 1.5 extension says).
    description: str -> an iTXt "XML:com.adobe.xmp" chunk with dc:description.
    """
    w = h = 8
    px = seed_bytes(seed, w * h * 3, "png")
    raw = b"".join(b"\x00" + px[y * w * 3:(y + 1) * w * 3] for y in range(h))
    out = bytearray(_PNG_SIG)
    out += _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    if time is not None:
        t = (2024, 5, 17, 12, 30, 0) if time is True else tuple(time)
        out += _chunk(b"tIME", struct.pack(">HBBBBB", *t))
    if exif is not None:
        out += _chunk(b"eXIf", exif_tiff(exif))
    out += _chunk(b"IDAT", zlib.compress(raw, 9))
    if description is not None:
        itxt = list(_pairs(itxt, "Description")) + [
            ("XML:com.adobe.xmp", xmp_description_packet(description))]
    for k, v in _pairs(text, "Comment"):
        out += _chunk(b"tEXt", _latin1(k) + b"\x00" + _latin1(v))
    for k, v in _pairs(ztxt, "Comment"):
        out += _chunk(b"zTXt", _latin1(k) + b"\x00\x00" + zlib.compress(_latin1(v)))
    for k, v in _pairs(itxt, "Description"):
        vb = v.encode("utf-8") if isinstance(v, str) else v
        # keyword \0 compression-flag compression-method language \0 translated-keyword \0 text
        out += _chunk(b"iTXt", _latin1(k) + b"\x00\x00\x00" + b"\x00" + b"\x00" + vb)
    out += _chunk(b"IEND", b"")
    return bytes(out)


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """List of (type, payload); raises ValueError on a bad signature, length or CRC."""
    if data[:8] != _PNG_SIG:
        raise ValueError("bad PNG signature")
    pos = 8
    chunks = []
    while pos < len(data):
        if pos + 12 > len(data):
            raise ValueError("truncated chunk")
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        ctype = data[pos + 4:pos + 8]
        payload = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        if len(payload) != length:
            raise ValueError("truncated payload")
        if zlib.crc32(ctype + payload) & 0xFFFFFFFF != crc:
            raise ValueError(f"bad CRC in {ctype!r}")
        chunks.append((ctype, payload))
        pos += 12 + length
        if ctype == b"IEND":
            break
    if pos != len(data):
        raise ValueError("data after IEND")
    return chunks


# --------------------------------------------------------------------------- GIF

def _lzw_encode(indices, min_code_size: int) -> bytes:
    clear = 1 << min_code_size
    eoi = clear + 1
    out = bytearray()
    acc = 0
    nbits = 0

    def emit(code, size):
        nonlocal acc, nbits
        acc |= code << nbits
        nbits += size
        while nbits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            nbits -= 8

    def reset():
        return {(i,): i for i in range(clear)}, eoi + 1, min_code_size + 1

    table, next_code, size = reset()
    emit(clear, size)
    w = ()
    for k in indices:
        wk = w + (k,)
        if wk in table:
            w = wk
            continue
        emit(table[w], size)
        if next_code < 4096:
            table[wk] = next_code
            if next_code == (1 << size) and size < 12:
                size += 1
            next_code += 1
        else:
            emit(clear, size)
            table, next_code, size = reset()
        w = (k,)
    if w:
        emit(table[w], size)
    emit(eoi, size)
    if nbits:
        out.append(acc & 0xFF)
    return bytes(out)


def gif(seed) -> bytes:
    """A valid GIF89a, 8x8, 4-colour global palette; palette and pixels from the seed."""
    w = h = 8
    rnd = seed_bytes(seed, 12 + w * h, "gif")
    palette = rnd[:12]
    pixels = [b & 3 for b in rnd[12:]]
    out = bytearray(b"GIF89a")
    # logical screen: w, h, global colour table flag + colour resolution + size (2^(1+1) = 4)
    out += struct.pack("<HHBBB", w, h, 0x80 | (1 << 4) | 0x01, 0, 0)
    out += palette
    out += struct.pack("<BHHHHB", 0x2C, 0, 0, w, h, 0)  # image descriptor, no local table
    data = _lzw_encode(pixels, 2)
    out.append(2)  # LZW minimum code size
    for i in range(0, len(data), 255):
        block = data[i:i + 255]
        out.append(len(block))
        out += block
    out.append(0)  # block terminator
    out.append(0x3B)  # trailer
    return bytes(out)
