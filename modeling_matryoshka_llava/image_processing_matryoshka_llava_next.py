"""LLaVA-NeXT "anyres" image preprocessing.

An image is resized (keeping its aspect ratio) and zero-padded to the best of the `image_grid_pinpoints`
resolutions, cut into square crops row by row, and preceded by a base crop: the whole image resized to one crop,
as transformers' `LlavaNextImageProcessor` does (the arithmetic lives in `anyres_layout`). Besides `pixel_values`
(zero-padded to the batch's largest number of crops) it returns each image's `image_sizes` (height, width) and `image_grid_shapes` (rows, columns), so
the model lays tokens out on the grid the image was really cut into, whatever pinpoints were used.
Part of the remote-code bundle: imports only transformers and its dependencies (numpy, PIL).
"""

import math

import numpy as np
from PIL import Image

from .anyres_layout import LLAVA_NEXT_GRID_PINPOINTS, anyres_num_image_tokens, check_grid_pinpoints, select_crop_grid
from .image_processing_matryoshka_llava import (
    CLIP_MEAN,
    CLIP_STD,
    crop_and_normalize,
    flatten_images,
    load_image,
    shortest_edge,
)
from .transformers_imports import BaseImageProcessor, BatchFeature


class MatryoshkaLlavaNextImageProcessor(BaseImageProcessor):
    r"""
    LLaVA-NeXT "anyres" preprocessing: the base crop plus the crops of the best grid among `image_grid_pinpoints`.
    Accepts every image format [`MatryoshkaLlavaImageProcessor`] does (PIL, numpy, torch, paths, bytes).

    Args:
        image_grid_pinpoints (`list[list[int]]`, defaults to LLaVA-NeXT's): (height, width) resolutions, each a
            multiple of the crop size. Overridable per call, e.g. `anyres_grid_pinpoints(3, 3)` for longer grids.
        size (`dict`, defaults to `{"shortest_edge": 336}`): the base crop is the image resized to this square.
        crop_size (`dict`, defaults to `{"height": 336, "width": 336}`): the side of every crop.
        resample (`int`, defaults to bicubic): PIL resampling filter.
        rescale_factor (`float`, defaults to 1/255).
        image_mean, image_std (`list[float]`): CLIP normalisation.
    """

    model_input_names = ["pixel_values", "image_sizes", "image_grid_shapes"]

    def __init__(
        self,
        image_grid_pinpoints: list[list[int]] | None = None,
        size: dict | None = None,
        crop_size: dict | None = None,
        resample: int = Image.Resampling.BICUBIC,
        rescale_factor: float = 1 / 255,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.size = size if size is not None else {"shortest_edge": 336}
        self.crop_size = crop_size if crop_size is not None else {"height": 336, "width": 336}
        if self.crop_size["height"] != self.crop_size["width"]:
            raise ValueError(f"LLaVA-NeXT crops are square; got crop_size {self.crop_size}.")
        pinpoints = image_grid_pinpoints if image_grid_pinpoints is not None else LLAVA_NEXT_GRID_PINPOINTS
        self.image_grid_pinpoints = check_grid_pinpoints(pinpoints, self.crop_side)
        self.resample = int(resample)
        self.rescale_factor = rescale_factor
        self.image_mean = list(image_mean) if image_mean is not None else list(CLIP_MEAN)
        self.image_std = list(image_std) if image_std is not None else list(CLIP_STD)

    @property
    def crop_side(self) -> int:
        return self.crop_size["height"]

    def crop_grid(self, image_size: tuple[int, int], image_grid_pinpoints=None) -> tuple[int, int]:
        """(rows, columns) of crops an image of (height, width) is cut into."""
        pinpoints = self._pinpoints(image_grid_pinpoints)
        return select_crop_grid(image_size, pinpoints, self.crop_side)

    def num_image_tokens(self, image_size: tuple[int, int], num_visual_tokens: int, image_grid_pinpoints=None) -> int:
        """Visual tokens an image of (height, width) becomes at `num_visual_tokens` per crop."""
        return anyres_num_image_tokens(image_size, self.crop_grid(image_size, image_grid_pinpoints), num_visual_tokens)

    def _pinpoints(self, image_grid_pinpoints) -> list[list[int]]:
        if image_grid_pinpoints is None:
            return self.image_grid_pinpoints
        return check_grid_pinpoints(image_grid_pinpoints, self.crop_side)

    def preprocess_one(self, image: Image.Image, pinpoints: list[list[int]]) -> tuple[np.ndarray, tuple[int, int]]:
        """One RGB PIL image -> ((1 + rows * columns, 3, crop, crop) float32 crops, (rows, columns))."""
        crop = self.crop_side
        rows, columns = select_crop_grid((image.height, image.width), pinpoints, crop)
        best_height, best_width = rows * crop, columns * crop
        # Fit inside the best resolution keeping the aspect ratio, then pad with black around the centre.
        scale_width, scale_height = best_width / image.width, best_height / image.height
        if scale_width < scale_height:
            new_width, new_height = best_width, min(math.ceil(image.height * scale_width), best_height)
        else:
            new_width, new_height = min(math.ceil(image.width * scale_height), best_width), best_height
        canvas = Image.new("RGB", (best_width, best_height), (0, 0, 0))
        canvas.paste(
            image.resize((new_width, new_height), resample=self.resample),
            ((best_width - new_width) // 2, (best_height - new_height) // 2),
        )
        shortest = shortest_edge(self.size)
        crops = [image.resize((shortest, shortest), resample=self.resample)]
        crops += [
            canvas.crop((column * crop, row * crop, (column + 1) * crop, (row + 1) * crop))
            for row in range(rows)
            for column in range(columns)
        ]
        square_crop = {"height": crop, "width": crop}
        normalized = [
            crop_and_normalize(crop_image, self.size, square_crop, self.resample, self.rescale_factor,
                               self.image_mean, self.image_std)
            for crop_image in crops
        ]
        return np.stack(normalized), (rows, columns)

    def __call__(self, images, image_grid_pinpoints=None, return_tensors=None, **kwargs) -> BatchFeature:
        return self.preprocess(images, image_grid_pinpoints=image_grid_pinpoints, return_tensors=return_tensors)

    def preprocess(self, images, image_grid_pinpoints=None, return_tensors=None, **kwargs) -> BatchFeature:
        r"""
        Args:
            images: one image, a list, or a list per sample (flattened in order).
            image_grid_pinpoints (`list[list[int]]`, *optional*): other resolutions for this call (e.g. longer grids).
            return_tensors: `"pt"`, `"np"` or None (numpy arrays).
        """
        pinpoints = self._pinpoints(image_grid_pinpoints)
        loaded = [load_image(image, index) for index, image in enumerate(flatten_images(images))]
        if not loaded:
            raise ValueError("No images were given.")
        processed = [self.preprocess_one(image, pinpoints) for image in loaded]
        max_crops = max(crops.shape[0] for crops, _ in processed)
        pixel_values = np.zeros((len(processed), max_crops, *processed[0][0].shape[1:]), dtype=np.float32)
        for index, (crops, _) in enumerate(processed):
            pixel_values[index, : crops.shape[0]] = crops
        data = {
            "pixel_values": pixel_values,
            "image_sizes": np.array([(image.height, image.width) for image in loaded], dtype=np.int64),
            "image_grid_shapes": np.array([grid for _, grid in processed], dtype=np.int64),
        }
        return BatchFeature(data, tensor_type=return_tensors)


__all__ = ["MatryoshkaLlavaNextImageProcessor"]
