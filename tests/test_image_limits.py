"""Decompression bombs: an image header claiming 50000 x 50000 pixels (7.5 GB as BGR) is refused
with a clear message before anything is decoded or allocated; the header readers give the true
size of real files of every covered format."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from rtmo import sources
from rtmo.image_header import claimed_size
from rtmo.sources import ImageReadError, read_image

BOMB = (50000, 50000)


def png_claiming(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR (correct CRC) claiming width x height, with one tiny IDAT."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real JPEG whose start-of-frame segment is rewritten to claim width x height."""
    ok, data = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    assert ok
    data = bytearray(data.tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.mark.parametrize(
    ("suffix", "make"), [(".png", png_claiming), (".jpg", jpeg_claiming)], ids=["png", "jpeg"]
)
def test_bomb_is_refused_before_decoding(tmp_path, monkeypatch, suffix, make):
    path = tmp_path / f"bomb{suffix}"
    path.write_bytes(make(*BOMB))
    decoded = []
    monkeypatch.setattr(sources.cv2, "imdecode", lambda *a: decoded.append(a))
    with pytest.raises(ImageReadError) as refused:
        read_image(path)
    assert str(refused.value) == (
        f"{path}: the image claims 50000x50000 pixels, more than the limit of 268435456 "
        "(rtmo.sources.MAX_IMAGE_PIXELS); refused before decoding"
    )
    assert decoded == []


def test_the_limit_is_a_setting(tmp_path, monkeypatch):
    path = tmp_path / "small.png"
    path.write_bytes(png_claiming(30, 30))
    monkeypatch.setattr(sources, "MAX_IMAGE_PIXELS", 30 * 30 - 1)
    with pytest.raises(ImageReadError, match="claims 30x30 pixels, more than the limit of 899"):
        read_image(path)
    monkeypatch.setattr(sources, "MAX_IMAGE_PIXELS", 30 * 30)
    # Past our check, OpenCV reads the header and finds the pixel data missing.
    with pytest.raises(ImageReadError, match="cannot decode image"):
        read_image(path)


def test_bomb_through_the_command_line(tmp_path, capsys):
    from rtmo import cli

    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(*BOMB))
    status = cli.main(["predict", str(path), "--random-weights", "--out", str(tmp_path / "out")])
    assert status == cli.EXIT_FAILED
    assert "claims 50000x50000 pixels" in capsys.readouterr().err


@pytest.mark.parametrize(
    "suffix", [".png", ".jpg", ".bmp", ".webp", ".tiff", ".ppm", ".pgm"], ids=lambda s: s[1:]
)
@pytest.mark.parametrize("size", [(37, 21), (1, 300)])
def test_header_gives_the_size_of_real_files(suffix, size):
    width, height = size
    image = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    if suffix == ".pgm":
        image = image[:, :, 0]
    ok, data = cv2.imencode(suffix, image)
    assert ok
    assert claimed_size(data.tobytes()) == size


def test_lossless_webp_header():
    ok, data = cv2.imencode(
        ".webp", np.zeros((9, 70, 3), np.uint8), [cv2.IMWRITE_WEBP_QUALITY, 101]
    )
    assert ok
    assert data.tobytes()[12:16] == b"VP8L"
    assert claimed_size(data.tobytes()) == (70, 9)


@pytest.mark.parametrize(
    "data",
    [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0\x00", b"BM", b"RIFF\x00\x00\x00\x00WEBP",
     b"II*\x00\xff\xff\xff\x7f", b"P6\n# no size", b"GIF89a", b"\xff\xd8" + b"\xff" * 300],
)  # fmt: skip
def test_damaged_or_unknown_headers_give_no_size(data):
    assert claimed_size(data) is None
