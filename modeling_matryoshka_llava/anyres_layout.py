"""LLaVA-NeXT "anyres" arithmetic, in one place: which crop grid an image is cut into, and how many visual tokens
it becomes at k tokens per crop. The model lays tokens out with `AnyresImageLayout`, the processor and the cost
model count them with the same object, so the three can never disagree.

An image of (height, width) goes to the best of the `image_grid_pinpoints` resolutions, cut into rows x columns
crops, plus a base crop (the whole image resized). At k tokens per crop every crop is pooled to sqrt(k) x sqrt(k);
the grid crops are laid out as one (rows * sqrt(k)) x (columns * sqrt(k)) grid, un-padded to the image's aspect
ratio, with one newline token per row; the base crop's k tokens come first. A grid of (0, 0) means the base crop
alone (k tokens and one newline), as LLaVA-NeXT does for single-crop images.

Part of the remote-code bundle: standard library only.
"""

import math
from dataclasses import dataclass
from numbers import Integral

# LLaVA-NeXT's (height, width) resolutions: 1x2, 2x1, 2x2, 3x1 and 1x3 grids of 336 px crops.
LLAVA_NEXT_GRID_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]


def anyres_grid_pinpoints(max_rows: int, max_columns: int, crop_size: int = 336) -> list[list[int]]:
    """(height, width) pinpoints of every grid up to max_rows x max_columns crops, e.g. (3, 3) for the longer
    grids of the M3 paper (Table 5), to pass as `image_grid_pinpoints` at inference."""
    for name, value in (("max_rows", max_rows), ("max_columns", max_columns), ("crop_size", crop_size)):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return [
        [rows * crop_size, columns * crop_size]
        for rows in range(1, max_rows + 1)
        for columns in range(1, max_columns + 1)
    ]


def check_grid_pinpoints(pinpoints, crop_size: int) -> list[list[int]]:
    """Pinpoints as a list of [height, width], each a positive multiple of the crop size; ValueError otherwise."""
    if isinstance(pinpoints, (str, bytes)) or not hasattr(pinpoints, "__iter__"):
        raise ValueError(f"image_grid_pinpoints must be a list of [height, width] pairs, got {pinpoints!r}.")
    checked = []
    for pinpoint in pinpoints:
        pair = list(pinpoint) if hasattr(pinpoint, "__iter__") else [pinpoint]
        if len(pair) != 2 or any(
            isinstance(side, bool) or not isinstance(side, Integral) or side < crop_size or side % crop_size
            for side in pair
        ):
            raise ValueError(
                f"image_grid_pinpoints holds {pinpoint!r}: each must be [height, width], both positive multiples of "
                f"the crop size {crop_size}."
            )
        checked.append([int(side) for side in pair])
    if not checked:
        raise ValueError("image_grid_pinpoints is empty: give at least one [height, width] resolution.")
    return checked


def select_best_resolution(image_size: tuple[int, int], pinpoints: list[list[int]]) -> tuple[int, int]:
    """LLaVA-NeXT's choice of resolution for an image of (height, width): the pinpoint that keeps the most of the
    image's pixels once fitted inside it, ties broken by the least padding."""
    original_height, original_width = image_size
    best, best_effective, best_wasted = None, 0, math.inf
    for height, width in pinpoints:
        scale = min(width / original_width, height / original_height)
        downscaled = int(original_width * scale) * int(original_height * scale)
        effective = min(downscaled, original_width * original_height)
        wasted = width * height - effective
        if effective > best_effective or (effective == best_effective and wasted < best_wasted):
            best, best_effective, best_wasted = (height, width), effective, wasted
    return best


def select_crop_grid(image_size: tuple[int, int], pinpoints: list[list[int]], crop_size: int) -> tuple[int, int]:
    """(rows, columns) of crops LLaVA-NeXT cuts an image of (height, width) into: the best pinpoint over crop size."""
    best_height, best_width = select_best_resolution(tuple(image_size), pinpoints)
    return best_height // crop_size, best_width // crop_size


def unpadded_window(image_size: tuple[int, int], height: int, width: int) -> tuple[slice, slice]:
    """The (rows, columns) of a height x width grid that hold the image once its padding is removed.

    The grid covers the image resized to fit and padded on both sides of one axis; the padding of that axis is
    cut, rounded as LLaVA-NeXT's `unpad_image` does (to 7 decimals, then down to whole rows or columns).
    """
    original_height, original_width = image_size
    if original_width / original_height > width / height:
        new_height = int(round(original_height * (width / original_width), 7))
        padding = (height - new_height) // 2
        return slice(padding, height - padding), slice(0, width)
    new_width = int(round(original_width * (height / original_height), 7))
    padding = (width - new_width) // 2
    return slice(0, height), slice(padding, width - padding)


@dataclass(frozen=True)
class AnyresImageLayout:
    """How one image was cut: its original (height, width) and the (rows, columns) of its grid crops."""

    image_size: tuple[int, int]
    grid_shape: tuple[int, int]

    @property
    def num_crops(self) -> int:
        """The base crop plus the grid crops."""
        return 1 + self.grid_shape[0] * self.grid_shape[1]

    def pooled_grid_window(self, num_visual_tokens: int) -> tuple[int, int, slice, slice]:
        """(height, width) of the grid crops laid out at k tokens per crop, and the window the un-padding keeps."""
        side = math.isqrt(num_visual_tokens)
        height, width = self.grid_shape[0] * side, self.grid_shape[1] * side
        return (height, width, *unpadded_window(self.image_size, height, width))

    def num_tokens(self, num_visual_tokens: int) -> int:
        """Visual tokens of this image at `num_visual_tokens` per crop: base crop, un-padded grid rows, newlines."""
        if self.num_crops == 1:
            return num_visual_tokens + 1
        height, width, rows, columns = self.pooled_grid_window(num_visual_tokens)
        kept_rows = len(range(height)[rows])
        kept_columns = len(range(width)[columns])
        return num_visual_tokens + kept_rows * (kept_columns + 1)


def anyres_num_image_tokens(image_size: tuple[int, int], grid_shape: tuple[int, int], num_visual_tokens: int) -> int:
    """Visual tokens of an image of (height, width) cut into a (rows, columns) grid, at k tokens per crop."""
    return AnyresImageLayout(tuple(image_size), tuple(grid_shape)).num_tokens(num_visual_tokens)


__all__ = [
    "LLAVA_NEXT_GRID_PINPOINTS",
    "AnyresImageLayout",
    "anyres_grid_pinpoints",
    "anyres_num_image_tokens",
    "check_grid_pinpoints",
    "select_best_resolution",
    "select_crop_grid",
    "unpadded_window",
]
