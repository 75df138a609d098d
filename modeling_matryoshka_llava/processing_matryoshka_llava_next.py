"""Processor of M3-LLaVA-NeXT: anyres images, videos as frame collages, text; one call serves every count.

As for M3-LLaVA each `<image>` stays one placeholder token by default and the model expands it to the number of
tokens the image becomes at the requested count per crop, which depends on the image's size and crop grid. Each
`<video>` in the text (the chat template writes one per `{"type": "video"}` item) becomes an image placeholder
for the video's collage. With `num_visual_tokens` the placeholders are expanded here instead, to exactly the
count the model produces (`num_image_tokens`).
Part of the remote-code bundle: imports only transformers and its dependencies.
"""

import re

from .anyres_layout import anyres_num_image_tokens
from .image_processing_matryoshka_llava import flatten_images
from .processing_matryoshka_llava import MatryoshkaLlavaProcessor
from .transformers_imports import BatchFeature
from .video_collage import DEFAULT_NUM_FRAMES, check_num_frames, collage_grid, split_videos, video_to_collage
from .visual_token_counts import POSITIVE_SQUARES


class MatryoshkaLlavaNextProcessor(MatryoshkaLlavaProcessor):
    r"""
    Wraps a [`MatryoshkaLlavaNextImageProcessor`] and a tokenizer that knows `image_token` as a special token.

    Args:
        image_processor: the anyres image processor.
        tokenizer: the tokenizer (`<image>` added as a special token; `<video>` needs no token of its own).
        chat_template (`str`, *optional*): defaults to the vicuna_v1 template (which renders videos as `<video>\n`).
        image_token (`str`, defaults to `"<image>"`), video_token (`str`, defaults to `"<video>"`): placeholders.
        num_frames (`int`, defaults to 6): frames sampled from each video (frame i * floor(T / num_frames)).
        video_grid (`(rows, columns)`, *optional*): collage layout; defaults to the most square grid with no more
            columns than rows (3 x 2 for 6 frames).
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        chat_template=None,
        image_token: str = "<image>",
        video_token: str = "<video>",
        num_frames: int = DEFAULT_NUM_FRAMES,
        video_grid: list[int] | None = None,
        valid_num_visual_tokens: list[int] | None = None,
        **kwargs,
    ):
        self.video_token = video_token
        self.num_frames = check_num_frames(num_frames)
        self.video_grid = list(collage_grid(self.num_frames, video_grid)) if video_grid is not None else None
        super().__init__(
            image_processor, tokenizer, chat_template=chat_template, image_token=image_token,
            valid_num_visual_tokens=valid_num_visual_tokens,
        )

    # Counts are tokens per crop: without the model's scales, any positive square.
    unknown_model_counts = POSITIVE_SQUARES

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values", "image_sizes", "image_grid_shapes"]

    def __call__(
        self,
        images=None,
        text=None,
        videos=None,
        num_visual_tokens=None,
        image_grid_pinpoints=None,
        num_frames: int | None = None,
        video_grid=None,
        return_tensors=None,
        **kwargs,
    ) -> BatchFeature:
        r"""
        Args:
            images: PIL images, numpy arrays, torch tensors, file paths or bytes (one, a list, or a list per sample).
            text (`str` or `list[str]`): prompts with one `image_token` per image and one `video_token` per video.
                Images and videos are matched to their placeholders in text order.
            videos: one video or a list of videos; a video is a file path (decoded with PyAV), a list of frames
                (PIL images or arrays) or a 4-D (frames, height, width, channels) array.
            num_visual_tokens (`int` or `list[int]`, *optional*): tokens per crop; expand each placeholder now to
                the image's exact token count (one value, or one per image/video in text order). By default
                placeholders stay compact and the model expands them, so one call serves every count.
            image_grid_pinpoints (`list[list[int]]`, *optional*): other (height, width) resolutions for this call,
                e.g. `anyres_grid_pinpoints(3, 3)` for longer grids; the model follows the returned
                `image_grid_shapes`.
            num_frames (`int`, *optional*), video_grid (`(rows, columns)`, *optional*): override the processor's.
            return_tensors: as for the tokenizer; other keyword arguments (padding, ...) go to the tokenizer.

        Returns `input_ids`, `attention_mask`, and for images `pixel_values` (num_images, max_crops, 3, H, W),
        `image_sizes` (height, width) and `image_grid_shapes` (rows, columns).
        """
        texts = [text] if isinstance(text, str) else list(text) if text is not None else []
        images = flatten_images(images)
        videos = split_videos(videos)
        visuals = self._in_text_order(texts, images, videos, num_frames, video_grid)
        texts = [sample.replace(self.video_token, self.image_token) for sample in texts]
        run_pattern = re.compile(f"(?:{re.escape(self.image_token)})+")
        num_runs = sum(len(run_pattern.findall(sample)) for sample in texts)
        if texts and num_runs != len(visuals):
            raise ValueError(
                f"The text holds {num_runs} separate image/video placeholders for {len(visuals)} images and videos: "
                "separate adjacent placeholders by at least one other character."
            )
        data = {}
        if visuals:
            data.update(self.image_processor(visuals, image_grid_pinpoints=image_grid_pinpoints))
        if num_visual_tokens is not None and texts and not (isinstance(num_visual_tokens, str) and num_visual_tokens == "auto"):
            counts = self.counts_per_image(num_visual_tokens, len(visuals))
            tokens = [
                anyres_num_image_tokens(tuple(size), tuple(grid), count)
                for size, grid, count in zip(data["image_sizes"].tolist(), data["image_grid_shapes"].tolist(), counts)
            ]
            texts = self._expand_runs(texts, run_pattern, tokens)
        if texts:
            data.update(self.tokenizer(texts, return_tensors=return_tensors, **kwargs))
        return BatchFeature(data, tensor_type=return_tensors)

    def _in_text_order(self, texts, images: list, videos: list, num_frames, video_grid) -> list:
        """Images and video collages in the order their placeholders appear (images then videos without text)."""
        num_frames = check_num_frames(num_frames if num_frames is not None else self.num_frames)
        grid = video_grid if video_grid is not None else self.video_grid
        collages = [video_to_collage(video, num_frames, grid, index) for index, video in enumerate(videos)]
        if not texts:
            return images + collages
        pattern = re.compile(f"(?:{re.escape(self.image_token)})+|{re.escape(self.video_token)}")
        kinds = [match.group(0) == self.video_token for sample in texts for match in pattern.finditer(sample)]
        num_video_placeholders = sum(kinds)
        if len(kinds) - num_video_placeholders != len(images):
            raise ValueError(
                f"The text holds {len(kinds) - num_video_placeholders} `{self.image_token}` placeholders but "
                f"{len(images)} images were given: give one placeholder per image (separate adjacent images by at "
                "least one other character)."
            )
        if num_video_placeholders != len(collages):
            raise ValueError(
                f"The text holds {num_video_placeholders} `{self.video_token}` placeholders but {len(collages)} "
                "videos were given: give one placeholder per video."
            )
        image_iter, video_iter = iter(images), iter(collages)
        return [next(video_iter) if is_video else next(image_iter) for is_video in kinds]

    def num_image_tokens(self, image_size, num_visual_tokens: int, image_grid_pinpoints=None) -> int:
        """Visual tokens an image of (height, width) becomes at `num_visual_tokens` per crop: what the model
        produces for it (see `anyres_layout`). `image_grid_pinpoints` defaults to the image processor's."""
        count = self.counts_per_image(num_visual_tokens, 1)[0]
        return self.image_processor.num_image_tokens(tuple(image_size), count, image_grid_pinpoints)


__all__ = ["MatryoshkaLlavaNextProcessor"]
