"""Video as one anyres image (IG-VLM, as the M3 paper evaluates video): uniform frame sampling, 3x2 collage, PyAV decoding, placeholders, errors."""

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_next_models import tiny_m3_next, tiny_next_processor

from modeling_matryoshka_llava.video_collage import collage_grid, sample_frame_indices, split_videos, video_to_collage

FRAME_SIZE = (32, 24)  # (width, height)


def frame_colour(index: int) -> tuple[int, int, int]:
    return ((index * 17) % 256, 255 - (index * 17) % 256, (index * 40) % 256)


def frames(count: int) -> list[Image.Image]:
    return [Image.new("RGB", FRAME_SIZE, frame_colour(i)) for i in range(count)]


def write_video(path, num_frames: int, codec: str = "ffv1", pix_fmt: str = "bgr0"):
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height = FRAME_SIZE
        stream.pix_fmt = pix_fmt
        for frame in frames(num_frames):
            for packet in stream.encode(av.VideoFrame.from_image(frame)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def tile_colours(collage: Image.Image, grid=(3, 2)) -> list[tuple[float, ...]]:
    """Mean colour of each tile, row by row."""
    rows, columns = grid
    array = np.asarray(collage, dtype=np.float64)
    height, width = array.shape[0] // rows, array.shape[1] // columns
    return [
        tuple(array[r * height : (r + 1) * height, c * width : (c + 1) * width].mean(axis=(0, 1)))
        for r in range(rows)
        for c in range(columns)
    ]


@pytest.fixture(scope="module")
def next_processor():
    return tiny_next_processor()


def test_frames_are_sampled_uniformly_as_ig_vlm():
    assert sample_frame_indices(20, 6) == [0, 3, 6, 9, 12, 15]
    assert sample_frame_indices(6, 6) == [0, 1, 2, 3, 4, 5]
    assert sample_frame_indices(13, 4) == [0, 3, 6, 9]
    with pytest.raises(ValueError, match="5 frames, fewer than the 6"):
        sample_frame_indices(5, 6)
    assert [collage_grid(n) for n in (6, 4, 8, 9, 1)] == [(3, 2), (2, 2), (4, 2), (3, 3), (1, 1)]
    with pytest.raises(ValueError, match="3x3 collage does not hold exactly 6"):
        collage_grid(6, (3, 3))


def test_six_frames_are_tiled_three_rows_by_two_columns():
    collage = video_to_collage(frames(13))  # indices 0, 2, 4, 6, 8, 10
    assert collage.size == (2 * FRAME_SIZE[0], 3 * FRAME_SIZE[1])
    assert tile_colours(collage) == [tuple(float(v) for v in frame_colour(i)) for i in (0, 2, 4, 6, 8, 10)]
    as_array = video_to_collage(np.stack([np.asarray(frame) for frame in frames(13)]))
    assert np.array_equal(np.asarray(as_array), np.asarray(collage))
    mixed_sizes = frames(6)
    mixed_sizes[3] = mixed_sizes[3].resize((64, 48))
    assert video_to_collage(mixed_sizes).size == collage.size


@pytest.mark.parametrize(
    "codec, pix_fmt, suffix, tolerance", [("ffv1", "bgr0", "mkv", 0), ("mpeg4", "yuv420p", "mp4", 8)]
)
def test_video_files_are_decoded_with_pyav(codec, pix_fmt, suffix, tolerance, tmp_path):
    # The .mkv stores no frame count (frames are counted by decoding); the .mp4 does.
    path = write_video(tmp_path / f"clip.{suffix}", 13, codec, pix_fmt)
    collage = video_to_collage(path)
    expected = [frame_colour(i) for i in (0, 2, 4, 6, 8, 10)]
    for tile, colour in zip(tile_colours(collage), expected):
        assert np.abs(np.array(tile) - colour).max() <= tolerance


def test_unreadable_or_short_videos_raise_clear_errors(tmp_path):
    pytest.importorskip("av")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"definitely not a video" * 10)
    with pytest.raises(ValueError, match="broken.mp4.*could not be decoded"):
        video_to_collage(broken)
    with pytest.raises(ValueError, match="missing.mp4.*no such file"):
        video_to_collage(tmp_path / "missing.mp4")
    with pytest.raises(ValueError, match="4 frames, fewer than the 6"):
        video_to_collage(write_video(tmp_path / "short.mkv", 4))
    with pytest.raises(ValueError, match="3 frames, fewer than the 6"):
        video_to_collage(frames(3))
    with pytest.raises(ValueError, match="unsupported type"):
        video_to_collage(12)
    with pytest.raises(ValueError, match="mixes single frames"):
        split_videos([frames(6), frames(1)[0]])


def test_processor_maps_the_video_placeholder_to_the_collage(next_processor):
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}]
    prompt = next_processor.apply_chat_template(messages, add_generation_prompt=True)
    assert "USER: <video>\nWhat happens? ASSISTANT:" in prompt
    video = frames(12)
    from_video = next_processor(videos=video, text=prompt, return_tensors="pt")
    collage = video_to_collage(video)
    from_image = next_processor(images=collage, text=prompt.replace("<video>", "<image>"), return_tensors="pt")
    assert set(from_video) == set(from_image)
    assert all(torch.equal(from_video[key], from_image[key]) for key in from_video)
    assert from_video["image_sizes"].tolist() == [[72, 64]]
    assert (from_video["input_ids"] == next_processor.image_token_id).sum() == 1
    expanded = next_processor(videos=video, text=prompt, num_visual_tokens=9, return_tensors="pt")
    num_tokens = (expanded["input_ids"] == next_processor.image_token_id).sum()
    assert num_tokens == next_processor.num_image_tokens((72, 64), 9)


def test_images_and_videos_follow_their_placeholders_in_text_order(next_processor):
    image = Image.new("RGB", (50, 40), (250, 0, 0))
    video = frames(6)
    text = "USER: <video>\nthen <image>\nand <video>\n ASSISTANT:"
    inputs = next_processor(images=[image], videos=[video, frames(8)], text=text, return_tensors="pt")
    alone = next_processor(images=[video_to_collage(video), image, video_to_collage(frames(8))], return_tensors="pt")
    assert torch.equal(inputs["pixel_values"], alone["pixel_values"])
    assert inputs["image_sizes"].tolist() == [[72, 64], [40, 50], [72, 64]]
    with pytest.raises(ValueError, match="2 `<video>` placeholders but 1 videos"):
        next_processor(images=[image], videos=[video], text=text)
    with pytest.raises(ValueError, match="0 `<video>` placeholders but 1 videos"):
        next_processor(videos=[video], text="USER: Hi ASSISTANT:")


def test_frame_count_and_grid_are_configurable(tmp_path):
    processor = tiny_next_processor(num_frames=4)
    inputs = processor(videos=frames(9), text="<video>\nHi", return_tensors="pt")
    assert inputs["image_sizes"].tolist() == [[48, 64]]  # 2x2 collage of 32x24 frames
    per_call = processor(videos=frames(9), text="<video>\nHi", num_frames=6, video_grid=(2, 3), return_tensors="pt")
    assert per_call["image_sizes"].tolist() == [[48, 96]]
    with pytest.raises(ValueError, match="3 frames, fewer than the 4"):
        processor(videos=frames(3), text="<video>\nHi")
    with pytest.raises(ValueError, match="num_frames must be a positive integer"):
        processor(videos=frames(3), text="<video>\nHi", num_frames=0)


def test_model_answers_about_a_video_file(next_processor, tmp_path):
    model = tiny_m3_next()
    path = write_video(tmp_path / "clip.mkv", 12)
    prompt = next_processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}],
        add_generation_prompt=True,
    )
    from_file = next_processor(videos=str(path), text=prompt, return_tensors="pt")
    from_frames = next_processor(videos=frames(12), text=prompt, return_tensors="pt")
    assert torch.equal(from_file["pixel_values"], from_frames["pixel_values"])
    output = model.generate(**from_file, num_visual_tokens=9, max_new_tokens=3, do_sample=False)
    assert output.shape == (1, from_file["input_ids"].shape[1] + 3)
