"""Videos as one image (IG-VLM, as the M3 paper evaluates video): sample frames, tile them, feed them as one image.

Frame i of n is frame index i * floor(T / n) of a T-frame video; six frames are tiled 3 rows x 2 columns (row by
row), and the collage is processed like any other anyres image.
Part of the remote-code bundle: numpy and PIL; PyAV is imported only to decode video files.
"""

import math
import os
from numbers import Integral

from PIL import Image

from .image_processing_matryoshka_llava import load_image

DEFAULT_NUM_FRAMES = 6


def _import_av():
    try:
        import av
    except ImportError as error:
        raise ImportError(
            "Decoding video files needs PyAV: `pip install av` (or `pip install matryoshka-llava[video]`); "
            "alternatively pass the video as a list of frames."
        ) from error
    return av


def check_num_frames(num_frames) -> int:
    if isinstance(num_frames, bool) or not isinstance(num_frames, Integral) or num_frames < 1:
        raise ValueError(f"num_frames must be a positive integer, got {num_frames!r}.")
    return int(num_frames)


def sample_frame_indices(total_frames: int, num_frames: int = DEFAULT_NUM_FRAMES, index: int = 0) -> list[int]:
    """Indices i * floor(T / n) for i < n; ValueError when the video has fewer than n frames."""
    num_frames = check_num_frames(num_frames)
    if total_frames < num_frames:
        raise ValueError(f"Video {index} has {total_frames} frames, fewer than the {num_frames} frames to sample.")
    step = total_frames // num_frames
    return [i * step for i in range(num_frames)]


def collage_grid(num_frames: int, grid: tuple[int, int] | None = None) -> tuple[int, int]:
    """(rows, columns) of the collage: `grid` when given (it must hold exactly `num_frames`), else the most square
    grid with no more columns than rows (6 frames -> 3 x 2, as IG-VLM)."""
    num_frames = check_num_frames(num_frames)
    if grid is not None:
        rows, columns = (int(side) for side in grid)
        if rows < 1 or columns < 1 or rows * columns != num_frames:
            raise ValueError(f"A {rows}x{columns} collage does not hold exactly {num_frames} frames.")
        return rows, columns
    columns = math.isqrt(num_frames)
    while num_frames % columns:
        columns -= 1
    return num_frames // columns, columns


def read_video_frames(path, num_frames: int = DEFAULT_NUM_FRAMES, index: int = 0) -> list[Image.Image]:
    """Decode the sampled frames of a video file with PyAV; ValueError naming the file if it cannot be read."""
    av = _import_av()
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise ValueError(f"Video {index} ({name}) could not be read: no such file.")

    def decode(wanted: set[int] | None) -> tuple[int, dict[int, Image.Image]]:
        """(frames decoded, {index: frame}) for the wanted indices; all frames are counted when wanted is None."""
        try:
            with av.open(name) as container:
                if not container.streams.video:
                    raise ValueError(f"Video {index} ({name}) has no video stream.")
                stream = container.streams.video[0]
                kept, count = {}, 0
                for frame in container.decode(stream):
                    if wanted is not None and count in wanted:
                        kept[count] = frame.to_image().convert("RGB")
                        if len(kept) == len(wanted):
                            return count + 1, kept
                    count += 1
                return count, kept
        except (av.error.FFmpegError, OSError, UnicodeDecodeError) as error:
            raise ValueError(f"Video {index} ({name}) could not be decoded: {error}") from error

    try:
        with av.open(name) as container:
            streams = container.streams.video
            reported = streams[0].frames if streams else 0
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as error:
        raise ValueError(f"Video {index} ({name}) could not be decoded: {error}") from error
    if not streams:
        raise ValueError(f"Video {index} ({name}) has no video stream.")
    # The container's frame count is a hint: without one (or when it overstates), count by decoding.
    total = reported if reported > 0 else decode(None)[0]
    indices = sample_frame_indices(total, num_frames, index)
    decoded, kept = decode(set(indices))
    if len(kept) < len(indices):
        indices = sample_frame_indices(decoded, num_frames, index)
        _, kept = decode(set(indices))
    return [kept[i] for i in indices]


def tile_frames(frames: list[Image.Image], grid: tuple[int, int]) -> Image.Image:
    """Frames row by row into a rows x columns collage; every frame is resized to the first frame's size."""
    rows, columns = grid
    width, height = frames[0].size
    collage = Image.new("RGB", (columns * width, rows * height))
    for position, frame in enumerate(frames):
        if frame.size != (width, height):
            frame = frame.resize((width, height), resample=Image.Resampling.BICUBIC)
        collage.paste(frame, ((position % columns) * width, (position // columns) * height))
    return collage


def is_video_frame(item) -> bool:
    """A single frame (PIL image or a 2-D / 3-D array), as opposed to a video (a path, a frame list, a 4-D array)."""
    if isinstance(item, Image.Image):
        return True
    return hasattr(item, "ndim") and item.ndim in (2, 3)


def split_videos(videos) -> list:
    """One video or a list of videos -> a list of videos. A video is a file path, a list of frames, or a 4-D
    (frames, height, width, channels) array."""
    if videos is None:
        return []
    if isinstance(videos, (str, os.PathLike)) or (hasattr(videos, "ndim") and videos.ndim == 4):
        return [videos]
    if isinstance(videos, (list, tuple)):
        if videos and all(is_video_frame(item) for item in videos):
            return [list(videos)]
        if any(is_video_frame(item) for item in videos):
            raise ValueError(
                "videos mixes single frames with whole videos: pass one video as a list of frames, or a list of "
                "videos (each a file path, a list of frames or a 4-D array)."
            )
        return list(videos)
    raise ValueError(
        f"Unsupported video of type {type(videos).__name__}: pass a file path, a list of frames (PIL images or "
        "arrays) or a 4-D (frames, height, width, channels) array."
    )


def video_to_collage(video, num_frames: int = DEFAULT_NUM_FRAMES, grid=None, index: int = 0) -> Image.Image:
    """A video (file path, list of frames or 4-D array) -> the collage of its `num_frames` sampled frames."""
    rows_columns = collage_grid(num_frames, grid)
    if isinstance(video, (str, os.PathLike)):
        frames = read_video_frames(video, num_frames, index)
    elif isinstance(video, (list, tuple)) or (hasattr(video, "ndim") and video.ndim == 4):
        indices = sample_frame_indices(len(video), num_frames, index)
        frames = [load_image(video[i], index) for i in indices]
    else:
        raise ValueError(
            f"Video {index} has unsupported type {type(video).__name__}: pass a file path, a list of frames or a "
            "4-D (frames, height, width, channels) array."
        )
    return tile_frames(frames, rows_columns)


__all__ = [
    "DEFAULT_NUM_FRAMES",
    "collage_grid",
    "read_video_frames",
    "sample_frame_indices",
    "split_videos",
    "tile_frames",
    "video_to_collage",
]
