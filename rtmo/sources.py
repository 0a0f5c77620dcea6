"""What a user can point the predictor at: an image, a folder of images, a video, a webcam, a glob
pattern or a list of these; and the errors for what it cannot use, each naming the path and the
problem. Output files and folders that are complete or absent.

OpenCV's own log lines ("[ WARN:0@0.01] ... can't open camera by index") are switched off while it
opens or decodes something whose failure is reported here, so the user reads one message: ours.
"""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from rtmo.image_header import claimed_size

IMAGE_EXTENSIONS = frozenset(
    {".bmp", ".jpeg", ".jpg", ".jp2", ".png", ".pbm", ".pgm", ".ppm", ".tif", ".tiff", ".webp"}
)
VIDEO_EXTENSIONS = frozenset(
    {".avi", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".webm", ".wmv"}
)


class SourceError(Exception):
    """An input the user named cannot be used: missing, unsupported, empty or unreadable."""


class ImageReadError(SourceError):
    """An image file exists but cannot be decoded."""


# Images claiming more pixels than this are refused before decoding (a 16384 x 16384 image; 805 MB
# as BGR): a few hundred bytes can claim 50000 x 50000 pixels and 7.5 GB. Raise it for larger
# images; OpenCV keeps its own limit of 2^30 pixels above it.
MAX_IMAGE_PIXELS = 1 << 28

# Enough bytes for every header `claimed_size` reads (JPEG puts EXIF, up to 64 KB, before it).
_HEADER_BYTES = 1 << 17


def check_image_size(path: str | os.PathLike, header: bytes) -> None:
    """Raises ImageReadError when the image's header claims more than MAX_IMAGE_PIXELS pixels."""
    size = claimed_size(header)
    if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise ImageReadError(
            f"{path}: the image claims {size[0]}x{size[1]} pixels, more than the limit of "
            f"{MAX_IMAGE_PIXELS} (rtmo.sources.MAX_IMAGE_PIXELS); refused before decoding"
        )


_quiet_lock = threading.Lock()
_quiet_depth = 0
_loud_level = 0


@contextlib.contextmanager
def opencv_quiet() -> Iterator[None]:
    """OpenCV's logging silenced inside the block (nested and threaded uses restore the level the
    first one found once the last one ends)."""
    global _quiet_depth, _loud_level
    with _quiet_lock:
        if _quiet_depth == 0:
            _loud_level = cv2.utils.logging.getLogLevel()
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                cv2.utils.logging.setLogLevel(_loud_level)


@dataclass(frozen=True)
class Source:
    """A resolved input. kind: "image", "folder", "images" (the images a glob pattern matched),
    "video" or "webcam"."""

    kind: str
    name: str  # a short name for output files: the file stem, folder name or "webcam<index>"
    path: Path | None = None
    camera: int | None = None
    images: tuple[Path, ...] = ()


def _is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def resolve_source(text: str) -> Source:
    """The source a command-line SOURCE names: an existing image, folder or video file, or a
    webcam index such as "0"."""
    path = Path(text).expanduser()
    if text.isdigit() and not path.exists():
        return Source("webcam", f"webcam{int(text)}", camera=int(text))
    if not path.exists():
        raise SourceError(f"{text}: no such file or directory")
    if path.is_dir():
        images = tuple(sorted(p for p in path.iterdir() if _is_image_file(p)))
        if not images:
            raise SourceError(
                f"{text}: folder has no images (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        return Source("folder", path.resolve().name or "root", path=path, images=images)
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return Source("image", path.stem, path=path, images=(path,))
    if suffix in VIDEO_EXTENSIONS:
        return Source("video", path.stem, path=path)
    raise SourceError(
        f"{text}: unsupported source '{suffix or path.name}'; expected an image "
        f"({', '.join(sorted(IMAGE_EXTENSIONS))}), a video ({', '.join(sorted(VIDEO_EXTENSIONS))}),"
        " a folder of images or a webcam index"
    )


SourceItem = str | os.PathLike | int


def resolve_sources(items: SourceItem | Sequence[SourceItem]) -> list[Source]:
    """The sources of one or several inputs: paths, webcam indices and glob patterns ("b/*.png",
    "**/*.mp4"). A pattern's images become one "images" source, its videos one source each.

    Raises SourceError for an input that cannot be used or a pattern matching nothing usable.
    """
    if isinstance(items, (str, os.PathLike, int)):
        items = [items]
    if len(items) == 0:
        raise SourceError("no source given")
    sources = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, os.PathLike, int)):
            raise TypeError(
                f"a source must be a path, a glob pattern or a webcam index, got {item!r}"
            )
        text = str(item)
        if isinstance(item, int):
            sources.append(Source("webcam", f"webcam{item}", camera=item))
        elif glob.has_magic(text) and not Path(text).expanduser().exists():
            sources.extend(_expand_pattern(text))
        else:
            sources.append(resolve_source(text))
    return sources


def _expand_pattern(pattern: str) -> list[Source]:
    matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True))
    if not matches:
        raise SourceError(f"{pattern}: no file matches this pattern")
    images = tuple(p for p in matches if _is_image_file(p))
    videos = [p for p in matches if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()]
    if not images and not videos:
        raise SourceError(
            f"{pattern}: {len(matches)} paths match but none is an image or a video file"
        )
    sources = []
    if images:
        name = images[0].parent.resolve().name or "images"
        sources.append(Source("images", name, images=images))
    return sources + [Source("video", p.stem, path=p) for p in videos]


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as HxWx3 BGR uint8, decoded as mmpose's LoadImage does (cv2.IMREAD_COLOR:
    grayscale is repeated, alpha dropped, 16 bits reduced to 8)."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path}: no such file")
    if path.is_dir():
        raise SourceError(f"{path}: is a folder, not an image")
    # np.fromfile + imdecode instead of cv2.imread: imread reports nothing about why it failed.
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise ImageReadError(f"{path}: cannot read ({err.strerror or err})") from err
    return decode_image(data, path)


def decode_image(data: bytes | np.ndarray, name: str | os.PathLike) -> np.ndarray:
    """The bytes of an image file as `read_image` decodes them; errors name the file `name`."""
    data = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else data
    check_image_size(name, data[:_HEADER_BYTES].tobytes())
    with opencv_quiet():
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ImageReadError(f"{name}: cannot decode image (corrupt or not an image)")
    return image


@contextlib.contextmanager
def atomic_output(path: Path, keep_on: tuple[type[BaseException], ...] = ()) -> Iterator[Path]:
    """Yields a temporary path beside `path` to write to; renames it to `path` when the block ends
    without error and deletes it otherwise, so `path` is either complete or absent. An exception
    of a type in `keep_on` (e.g. KeyboardInterrupt, for a writer that keeps what it completed)
    renames what was written into place before it propagates.

    The temporary name keeps the suffix, which OpenCV uses to choose the file format.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:
        yield tmp
    except keep_on:
        if tmp.exists():
            os.replace(tmp, path)
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if not tmp.exists():
        raise OSError(f"{path}: nothing was written")
    os.replace(tmp, path)


def write_image(path: Path, image: np.ndarray) -> None:
    """Writes a BGR image atomically; the format follows the suffix."""
    with atomic_output(path) as tmp:
        ok, encoded = cv2.imencode(path.suffix, image)
        if not ok:
            raise OSError(f"{path}: cannot encode image as {path.suffix}")
        encoded.tofile(tmp)


@contextlib.contextmanager
def output_folder(path: Path) -> Iterator[Path]:
    """Creates the folder `path` (and missing parents) and checks that files can be written in it;
    the folders it created are removed again at the end if they are still empty, so a run that
    fails before writing anything leaves nothing behind. OSError names the problem."""
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a folder")
    created = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
        yield path
    finally:
        for folder in created:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
