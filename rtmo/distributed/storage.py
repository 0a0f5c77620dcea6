"""Files of a dataset job on local disk or on any storage pyarrow reaches (s3://, gs://, abfs://,
hdfs://, file://): listing images under a URI, reading one, and output files written whole.

A URI is a string with "://". A URI prefix is listed recursively, as Ray Data's readers list
one; a local folder is not (it goes through `rtmo.sources`, like `rtmo predict`).
"""

from __future__ import annotations

import functools
import os
import uuid

import pyarrow.fs as pafs

from rtmo.sources import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, ImageReadError, SourceError

# The temporary name of an output file being written starts with "." so that readers of the
# folder (pyarrow.dataset, pandas, Ray Data) skip it.
PARTIAL_MARK = ".partial-"


def is_uri(text: str) -> bool:
    return "://" in text


def filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem of a URI and the path inside it (a local path: the local filesystem and the
    absolute path)."""
    if is_uri(location):
        return _uri_filesystem(location)
    return pafs.LocalFileSystem(), os.path.abspath(location)


@functools.lru_cache(maxsize=32)
def _uri_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    # Cached: setting up an object store's filesystem (credentials, region) is a network call.
    return pafs.FileSystem.from_uri(uri)


def list_images(uri: str) -> list[str]:
    """The image URIs a URI names: the file itself, or the images under a prefix (recursively),
    in sorted order. SourceError when there are none, or the URI names a video (videos are read
    by OpenCV, which takes local paths)."""
    fs, path = filesystem(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise SourceError(f"{uri}: no such file or prefix")
    if info.type == pafs.FileType.File:
        suffix = os.path.splitext(path)[1].lower()
        if suffix in VIDEO_EXTENSIONS:
            raise SourceError(f"{uri}: videos are read from local paths (or a mounted filesystem)")
        if suffix not in IMAGE_EXTENSIONS:
            raise SourceError(f"{uri}: not an image ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        return [uri]
    listed = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    base = path.rstrip("/")
    images = sorted(
        uri.rstrip("/") + entry.path[len(base) :]
        for entry in listed
        if entry.type == pafs.FileType.File
        and os.path.splitext(entry.path)[1].lower() in IMAGE_EXTENSIONS
    )
    if not images:
        raise SourceError(f"{uri}: no images under this prefix")
    return images


def read_bytes(location: str, root: str | None = None) -> bytes:
    """The bytes of a file: a local path, or a URI listed under the URI `root` (whose filesystem
    is set up once). ImageReadError names the file when it cannot be read."""
    try:
        if root is None:
            with open(location, "rb") as handle:
                return handle.read()
        fs, base = filesystem(root)
        with fs.open_input_stream(base.rstrip("/") + location[len(root.rstrip("/")) :]) as stream:
            return stream.read()
    except OSError as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise ImageReadError(f"{location}: cannot read ({reason})") from err


def output_folder(location: str) -> tuple[pafs.FileSystem, str]:
    """The output folder's filesystem and path, created if missing; OSError names the problem."""
    fs, path = filesystem(location)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        raise NotADirectoryError(f"{location} exists and is not a folder")
    fs.create_dir(path, recursive=True)
    return fs, path


def write_whole(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Writes `path` under a temporary name beside it and moves it into place: readers see the
    whole file or none, and two writers of the same file (a retried task and the one it replaced)
    each leave a whole copy of the same content."""
    folder, name = path.rsplit("/", 1)
    stem, suffix = os.path.splitext(name)
    tmp = f"{folder}/.{stem}{PARTIAL_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}"
    try:
        with fs.open_output_stream(tmp) as stream:
            stream.write(data)
        fs.move(tmp, path)
    except BaseException:
        if fs.get_file_info(tmp).type != pafs.FileType.NotFound:
            fs.delete_file(tmp)
        raise


def file_names(fs: pafs.FileSystem, folder: str) -> set[str]:
    """The names of the files directly in `folder`."""
    entries = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    return {entry.base_name for entry in entries if entry.type == pafs.FileType.File}


def remove_partials(fs: pafs.FileSystem, folder: str) -> None:
    """Deletes the temporary files that writers killed mid-write left in `folder`."""
    for name in file_names(fs, folder):
        if name.startswith(".") and PARTIAL_MARK in name:
            fs.delete_file(f"{folder}/{name}")
