"""A dataset job cut into blocks: the unit of work a worker takes, retries and writes as one output
file. Planned on the driver, in input order, the same way every time for the same sources: a
block's number names its output file, which is how a re-run knows what is already done.

A block holds the images of one source (never two: batches restart at each source, as in
`rtmo predict`) or a range of a video's frame positions. Local paths are made absolute (the
workers do not share the driver's working directory); URIs stay as given.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from rtmo.distributed.storage import is_uri, list_images
from rtmo.sources import Source, SourceError, resolve_sources
from rtmo.video import VideoReader


@dataclass(frozen=True)
class Block:
    """seq: the block's number in the job (input order). kind: "images" or "video".
    items: the images (kind "images"), local paths or URIs. root: the URI the images were
    listed under (None for local files). video, start, stop: the video file and the range of
    frame positions [start, stop) (stop None: to the end of the file)."""

    seq: int
    kind: str
    items: tuple[str, ...] = ()
    root: str | None = None
    video: str | None = None
    start: int = 0
    stop: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Block:
        fields = json.loads(text)
        return cls(**{**fields, "items": tuple(fields["items"])})


SourcesInput = str | os.PathLike | Sequence[str | os.PathLike]


def plan_blocks(sources: SourcesInput, block_size: int) -> list[Block]:
    """The blocks of `sources` (image files, folders, glob patterns, video files, image URIs and
    URI prefixes, or a list of these), `block_size` images or frames each. A video whose
    container states no frame rate or length is one block. SourceError names a source that
    cannot be used."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    blocks: list[Block] = []

    def add(kind: str, **fields: object) -> None:
        blocks.append(Block(len(blocks), kind, **fields))  # type: ignore[arg-type]

    for item in sources:
        text = os.fspath(item)
        if is_uri(text):
            images = list_images(text)
            for first in range(0, len(images), block_size):
                add("images", items=tuple(images[first : first + block_size]), root=text)
            continue
        for source in resolve_sources(text):
            for fields in _local_blocks(source, block_size):
                add(**fields)
    if not blocks:
        raise SourceError("no source given")
    return blocks


def _local_blocks(source: Source, block_size: int) -> list[dict[str, object]]:
    if source.kind == "webcam":
        raise SourceError(
            f"webcam {source.camera}: a live camera cannot be split across workers; "
            "give image or video files"
        )
    if source.kind != "video":
        images = [os.path.abspath(path) for path in source.images]
        return [
            {"kind": "images", "items": tuple(images[first : first + block_size])}
            for first in range(0, len(images), block_size)
        ]
    video = os.path.abspath(source.path)
    reader = VideoReader(video)
    try:
        if not reader.seekable:
            return [{"kind": "video", "video": video}]
        count = reader.frame_count
    finally:
        reader.close()
    starts = range(0, count, block_size)
    # The last range runs to the end of the file, as reading the whole file does.
    stops = [*starts[1:], None]
    return [
        {"kind": "video", "video": video, "start": start, "stop": stop}
        for start, stop in zip(starts, stops, strict=True)
    ]
