"""The pixel size an image file claims in its header, read without decoding it.

A few hundred bytes can claim 50000 x 50000 pixels (a "decompression bomb": 7.5 GB as BGR). The
size is checked against a limit before the decoder allocates anything. Covered: PNG, JPEG, BMP,
WebP, TIFF and PNM; other formats return None and rely on OpenCV's own limit (2^30 pixels,
CV_IO_MAX_IMAGE_PIXELS).
"""

from __future__ import annotations

import struct

# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic; not DHT C4, JPG C8,
# DAC CC): their segment holds the height and the width.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])  # TEM, RST0-7: no length field
_TIFF_WIDTH, _TIFF_HEIGHT = 256, 257
_TIFF_SHORT, _TIFF_LONG = 3, 4


def claimed_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of an image file's bytes, or None when the format is not
    one of those covered or the header is too damaged to say."""
    try:
        for reader in (_png, _jpeg, _bmp, _webp, _tiff, _pnm):
            size = reader(data)
            if size is not None:
                return size
    except (struct.error, IndexError, ValueError):
        return None  # a damaged header: the decoder will refuse the file with its own message
    return None


def _png(data: bytes) -> tuple[int, int] | None:
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def _jpeg(data: bytes) -> tuple[int, int] | None:
    if not data.startswith(b"\xff\xd8"):
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        if marker == 0xDA or length < 2:  # start of scan before any frame header: damaged
            return None
        pos += 2 + length
    return None


def _bmp(data: bytes) -> tuple[int, int] | None:
    if not data.startswith(b"BM") or len(data) < 26:
        return None
    (header_size,) = struct.unpack("<I", data[14:18])
    if header_size == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        return struct.unpack("<HH", data[18:22])
    width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)  # a negative height means top-down rows


def _webp(data: bytes) -> tuple[int, int] | None:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    chunk = data[12:16]
    if chunk == b"VP8X":  # 24-bit width - 1 and height - 1
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    if chunk == b"VP8L":  # 14-bit width - 1 and height - 1 after the signature byte
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":  # key frame: 14-bit sizes after the start code
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


def _tiff(data: bytes) -> tuple[int, int] | None:
    order = {b"II*\x00": "<", b"MM\x00*": ">"}.get(data[:4])
    if order is None:
        return None
    (ifd,) = struct.unpack(order + "I", data[4:8])
    (count,) = struct.unpack(order + "H", data[ifd : ifd + 2])
    sizes = {}
    for i in range(count):
        entry = data[ifd + 2 + 12 * i : ifd + 14 + 12 * i]
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (_TIFF_WIDTH, _TIFF_HEIGHT) and kind in (_TIFF_SHORT, _TIFF_LONG):
            fmt = order + ("H" if kind == _TIFF_SHORT else "I")
            sizes[tag] = struct.unpack(fmt, entry[8 : 8 + struct.calcsize(fmt)])[0]
    if len(sizes) < 2:
        return None
    return sizes[_TIFF_WIDTH], sizes[_TIFF_HEIGHT]


def _pnm(data: bytes) -> tuple[int, int] | None:
    if len(data) < 2 or data[0:1] != b"P" or data[1:2] not in b"123456":
        return None
    fields: list[int] = []
    for line in data[2:512].split(b"\n"):
        fields += [int(word) for word in line.split(b"#", 1)[0].split()]
        if len(fields) >= 2:
            return fields[0], fields[1]
    return None
