"""Self-tests of the image builders used by the end-to-end tests."""

import struct
import zlib

import pytest

import imagefiles
from imagefiles import gif, jpeg, jpeg_segments, png, png_chunks


def test_jpeg_segments_walk_from_soi_to_sos_and_end_at_eoi():
    data = jpeg(1)
    markers = [m for m, _ in jpeg_segments(data)]
    assert markers == [0xE0, 0xDB, 0xC0, 0xC4, 0xDA]
    assert data.startswith(b"\xff\xd8") and data.endswith(b"\xff\xd9")


def test_jpeg_with_all_metadata_walks_cleanly():
    data = jpeg(1, xmp="five stars", iptc="a caption", comment="hello", exif_orientation=6)
    segs = jpeg_segments(data)
    markers = [m for m, _ in segs]
    assert markers == [0xE0, 0xE1, 0xE1, 0xED, 0xFE, 0xDB, 0xC0, 0xC4, 0xDA]
    payloads = dict(enumerate(p for _, p in segs))
    assert payloads[1].startswith(b"Exif\x00\x00MM")
    assert payloads[2].startswith(b"http://ns.adobe.com/xap/1.0/\x00")
    assert payloads[3].startswith(b"Photoshop 3.0\x008BIM\x04\x04")
    assert payloads[4] == b"hello"


def test_jpeg_exif_orientation_is_in_ifd0():
    segs = jpeg_segments(jpeg(3, exif_orientation=8))
    exif = next(p for m, p in segs if m == 0xE1 and p.startswith(b"Exif"))
    tiff = exif[6:]
    (ifd,) = struct.unpack(">I", tiff[4:8])
    (count,) = struct.unpack(">H", tiff[ifd:ifd + 2])
    tag, typ, n, value = struct.unpack(">HHIH", tiff[ifd + 2:ifd + 12])
    assert (count, tag, typ, n, value) == (1, 0x0112, 3, 1, 8)


def test_jpeg_is_deterministic_and_seed_dependent():
    assert jpeg(5) == jpeg(5)
    assert len({jpeg(s) for s in range(50)}) == 50


def test_jpeg_metadata_variants_differ_only_outside_the_image_data():
    base = jpeg(7)
    variants = [
        jpeg(7, xmp="x"), jpeg(7, iptc="x"), jpeg(7, comment="x"), jpeg(7, exif_orientation=1),
        jpeg(7, exif_orientation=6),
    ]
    assert len({base, *variants}) == 1 + len(variants)
    # the entropy-coded data (after SOS) is the same in all of them
    def scan(d):
        return d[d.index(b"\xff\xda"):]
    assert all(scan(v) == scan(base) for v in variants)


def test_jpeg_entropy_data_is_byte_stuffed():
    for s in range(200):
        jpeg_segments(jpeg(s))  # raises on an unstuffed 0xFF


def test_png_chunk_crcs_verify():
    data = png(1, text="hi", ztxt=("Title", "z"), itxt={"Description": "é"}, time=True)
    types = [t for t, _ in png_chunks(data)]
    assert types == [b"IHDR", b"tIME", b"IDAT", b"tEXt", b"zTXt", b"iTXt", b"IEND"]


def test_png_corruption_is_detected_by_the_checker():
    data = bytearray(png(1))
    data[20] ^= 0xFF  # inside IHDR
    with pytest.raises(ValueError):
        png_chunks(bytes(data))


def test_png_pixels_come_from_the_seed():
    def pixels(d):
        idat = b"".join(p for t, p in png_chunks(d) if t == b"IDAT")
        return zlib.decompress(idat)
    raw = pixels(png(2))
    assert len(raw) == 8 * (1 + 8 * 3)
    assert pixels(png(2)) == raw
    assert pixels(png(3)) != raw
    assert pixels(png(2, text="a", itxt="b", time=(2020, 1, 2, 3, 4, 5))) == raw


def test_png_metadata_variants_differ_in_bytes():
    variants = [png(4), png(4, text="a"), png(4, text="b"), png(4, ztxt="a"), png(4, itxt="a"),
                png(4, time=True), png(4, time=(2001, 2, 3, 4, 5, 6))]
    assert len(set(variants)) == len(variants)


def test_gif_structure():
    data = gif(1)
    assert data.startswith(b"GIF89a") and data.endswith(b"\x00\x3b")
    w, h, flags = struct.unpack("<HHB", data[6:11])
    assert (w, h) == (8, 8) and flags & 0x80
    assert data[13 + 12] == 0x2C  # image descriptor right after the 4-colour palette


def test_gif_distinct_seeds_give_distinct_files():
    assert gif(1) == gif(1)
    assert len({gif(s) for s in range(50)}) == 50


def _lzw_decode(data: bytes, min_code_size: int) -> list:
    clear, eoi = 1 << min_code_size, (1 << min_code_size) + 1
    pos = nbits = acc = 0
    size = min_code_size + 1
    table = [(i,) for i in range(clear)] + [None, None]
    out, prev = [], None
    while True:
        while nbits < size:
            acc |= data[pos] << nbits
            pos += 1
            nbits += 8
        code = acc & ((1 << size) - 1)
        acc >>= size
        nbits -= size
        if code == clear:
            table = table[:clear + 2]
            size = min_code_size + 1
            prev = None
            continue
        if code == eoi:
            return out
        if prev is None:
            entry = table[code]
        else:
            entry = table[code] if code < len(table) else prev + prev[:1]
            table.append(prev + entry[:1])
            if len(table) == (1 << size) and size < 12:
                size += 1
        out.extend(entry)
        prev = entry


def test_gif_lzw_data_decodes_to_the_seeded_pixels():
    data = gif(9)
    pos = 13 + 12 + 10
    assert data[pos] == 2
    pos += 1
    stream = b""
    while data[pos]:
        stream += data[pos + 1:pos + 1 + data[pos]]
        pos += 1 + data[pos]
    expected = [b & 3 for b in imagefiles.seed_bytes(9, 12 + 64, "gif")[12:]]
    assert _lzw_decode(stream, 2) == expected
