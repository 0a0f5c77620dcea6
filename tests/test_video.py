"""Video reading in order with damaged frames skipped, and all-or-nothing output files."""

import cv2
import numpy as np
import pytest

from rtmo.sources import SourceError
from rtmo.video import VideoReader, batched, video_writer

SIZE = (64, 48)


def write_avi(path, num_frames: int, fps: float = 10.0):
    """An MJPG AVI whose frame i is uniformly grey level 20*i (survives JPEG within +-2)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, SIZE)
    for i in range(num_frames):
        writer.write(np.full((SIZE[1], SIZE[0], 3), 20 * i, np.uint8))
    writer.release()
    return path


def damage_frame(path, index: int):
    """Zeroes the JPEG data of one frame in an MJPG AVI so that it cannot be decoded."""
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    begin, end = starts[index], starts[index + 1]
    data[begin : end - 8] = bytes(end - 8 - begin)
    path.write_bytes(bytes(data))


def drop_frame(path, index: int):
    """Makes one frame of an MJPG AVI an empty chunk (an AVI's "dropped frame"), which OpenCV
    skips without a failed read: the next frame read is the one after it."""
    data = bytearray(path.read_bytes())
    offset = data.find(b"movi") + 4
    for _ in range(index):
        offset += 8 + int.from_bytes(data[offset + 4 : offset + 8], "little")
        offset += offset & 1
    assert data[offset : offset + 4] == b"00dc"
    size = int.from_bytes(data[offset + 4 : offset + 8], "little")
    # The chunk becomes empty and its data a JUNK chunk; the index entry's size becomes 0.
    data[offset + 4 : offset + 8] = (0).to_bytes(4, "little")
    data[offset + 8 : offset + 16] = b"JUNK" + (size - 8).to_bytes(4, "little")
    idx1 = data.find(b"idx1") + 8 + 16 * index
    assert data[idx1 : idx1 + 4] == b"00dc"
    data[idx1 + 12 : idx1 + 16] = (0).to_bytes(4, "little")
    path.write_bytes(bytes(data))


def test_frames_come_in_order(tmp_path):
    reader = VideoReader(write_avi(tmp_path / "v.avi", 7))
    assert reader.frame_count == 7
    assert reader.fps == pytest.approx(10.0)
    frames = list(reader)
    assert [i for i, _ in frames] == list(range(7))
    levels = [float(frame.mean()) for _, frame in frames]
    np.testing.assert_allclose(levels, [20 * i for i in range(7)], atol=3)
    assert reader.unreadable == []


def test_damaged_frame_is_skipped_and_reported(tmp_path):
    path = write_avi(tmp_path / "v.avi", 8)
    damage_frame(path, 3)
    reader = VideoReader(path)
    frames = list(reader)
    assert reader.unreadable == [3]
    assert [i for i, _ in frames] == [0, 1, 2, 4, 5, 6, 7]
    np.testing.assert_allclose(float(frames[3][1].mean()), 80, atol=3)


def test_frames_keep_their_container_positions_when_opencv_skips_one(tmp_path):
    path = write_avi(tmp_path / "v.avi", 10)
    damage_frame(path, 7)  # a failed read
    drop_frame(path, 4)  # skipped silently: a frame counter would call frame 5 "4"
    reader = VideoReader(path)
    frames = list(reader)
    assert reader.unreadable == [4, 7]
    assert [i for i, _ in frames] == [0, 1, 2, 3, 5, 6, 8, 9]
    levels = [float(frame.mean()) for _, frame in frames]
    np.testing.assert_allclose(levels, [20 * i for i, _ in frames], atol=3)


def test_unopenable_video_is_named(tmp_path):
    path = tmp_path / "garbage.mp4"
    path.write_bytes(b"not a video at all" * 10)
    with pytest.raises(SourceError, match=r"garbage\.mp4: cannot open video"):
        VideoReader(path)


def test_writer_renames_only_when_complete(tmp_path):
    out = tmp_path / "out" / "result.mp4"
    with video_writer(out, fps=10) as writer:
        for i in range(5):
            writer.write(np.full((SIZE[1], SIZE[0], 3), 40 * i, np.uint8))
        assert not out.exists()
    assert out.exists()
    assert list(out.parent.iterdir()) == [out]
    reader = VideoReader(out)
    assert len(list(reader)) == 5


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_writer_leaves_nothing_on_failure_or_interrupt(tmp_path, error):
    out = tmp_path / "result.mp4"

    def write_then_fail():
        with video_writer(out, fps=10) as writer:
            writer.write(np.zeros((SIZE[1], SIZE[0], 3), np.uint8))
            raise error

    with pytest.raises(type(error)):
        write_then_fail()
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_a_frame_of_another_size(tmp_path):
    out = tmp_path / "result.avi"

    def write_two_sizes():
        with video_writer(out, fps=10) as writer:
            writer.write(np.zeros((48, 64, 3), np.uint8))
            writer.write(np.zeros((40, 64, 3), np.uint8))

    with pytest.raises(ValueError, match="differs"):
        write_two_sizes()
    assert list(tmp_path.iterdir()) == []


def test_writer_with_no_frame_leaves_nothing(tmp_path):
    out = tmp_path / "result.mp4"
    with pytest.raises(SourceError, match="no frame"), video_writer(out, fps=10):
        pass
    assert list(tmp_path.iterdir()) == []


def test_batched_keeps_order_and_the_short_tail():
    assert list(batched(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(batched([], 3)) == []


def test_prefetch_keeps_order_and_raises_producer_errors():
    from rtmo.video import prefetch

    assert list(prefetch(range(50), depth=3)) == list(range(50))

    def failing():
        yield 1
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        got.extend(prefetch(failing(), depth=2))
    assert got == [1]


def test_prefetch_stops_its_thread_when_closed():
    import contextlib
    import threading

    from rtmo.video import prefetch

    closed = []

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.append(True)

    with contextlib.closing(prefetch(endless(), depth=2)) as items:
        assert [next(items) for _ in range(5)] == [0, 1, 2, 3, 4]
    assert closed == [True]
    assert not any(t.name == "rtmo-prefetch" for t in threading.enumerate())


def _write_mp4(path, num_frames: int):
    """An MPEG-4 Part 2 file (keyframes some frames apart, so that a seek lands before its
    target); frame i is grey level 4*i."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, SIZE)
    for i in range(num_frames):
        writer.write(np.full((SIZE[1], SIZE[0], 3), 4 * i, np.uint8))
    writer.release()
    return path


@pytest.mark.parametrize("kind", ["avi with damaged and dropped frames", "mp4"])
def test_frame_ranges_give_what_reading_the_whole_file_gives(tmp_path, kind):
    if kind == "mp4":
        path = _write_mp4(tmp_path / "v.mp4", 40)
    else:
        path = write_avi(tmp_path / "v.avi", 12)
        damage_frame(path, 5)  # a range starts on it
        drop_frame(path, 8)
    whole = VideoReader(path)
    frames = list(whole)
    assert VideoReader(path).seekable
    for size in (3, 5, 16):
        ranged, unreadable = [], []
        for start in range(0, whole.frame_count, size):
            stop = start + size if start + size < whole.frame_count else None
            reader = VideoReader(path)
            ranged += list(reader.read_range(start, stop))
            unreadable += reader.unreadable
        assert [i for i, _ in ranged] == [i for i, _ in frames]
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(ranged, frames, strict=True))
        assert unreadable == whole.unreadable
