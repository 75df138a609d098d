"""LLaVA-NeXT's anyres arithmetic as the original code writes it (haotian-liu/LLaVA `mm_utils.py` and
`llava_arch.py`, which mu-cai/matryoshka-mm keeps): what `--verify` rebuilds a LLaVA-NeXT source's image tokens
with, independently of this package's model and processor.

The original code passes image sizes as PIL's (width, height) and reads `image_grid_pinpoints` as (width, height)
pairs; the functions here take (height, width) sizes like the rest of this package and swap where the original
code would, so a mix-up of the two orders shows up as a mismatch. M3 pools every crop's grid before the layout,
so the layout accepts any square grid per crop.
"""

import ast
import math

import torch


def stored_pinpoints(config: dict) -> list:
    """`image_grid_pinpoints` of an original config as stored: (width, height) pairs (a string is read with
    `ast.literal_eval`, as LLaVA does)."""
    pinpoints = config["image_grid_pinpoints"]
    return ast.literal_eval(pinpoints) if isinstance(pinpoints, str) else pinpoints


def select_best_resolution(original_size: tuple[int, int], possible_resolutions) -> tuple[int, int]:
    """`mm_utils.select_best_resolution`: (width, height) in, the (width, height) pinpoint that keeps the most of
    the image at the least waste out."""
    original_width, original_height = original_size
    best_fit, max_effective, min_wasted = None, 0, float("inf")
    for width, height in possible_resolutions:
        scale = min(width / original_width, height / original_height)
        downscaled_width, downscaled_height = int(original_width * scale), int(original_height * scale)
        effective = min(downscaled_width * downscaled_height, original_width * original_height)
        wasted = width * height - effective
        if effective > max_effective or (effective == max_effective and wasted < min_wasted):
            best_fit, max_effective, min_wasted = (width, height), effective, wasted
    return best_fit


def original_grid_shape(image_size: tuple[int, int], pinpoints_width_height, crop_size: int) -> tuple[int, int]:
    """(rows, columns) of crops for an image of (height, width), from pinpoints listed (width, height) as in an
    original config (`get_anyres_image_grid_shape`, which returns (columns, rows))."""
    height, width = image_size
    best_width, best_height = select_best_resolution((width, height), [tuple(pair) for pair in pinpoints_width_height])
    return best_height // crop_size, best_width // crop_size


def original_unpad(tensor: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """`llava_arch.unpad_image` on a (channels, height, width) grid, for an image of (height, width)."""
    original_height, original_width = image_size
    current_height, current_width = tensor.shape[1:]
    if original_width / original_height > current_width / current_height:
        new_height = int(original_height * (current_width / original_width))
        padding = (current_height - new_height) // 2
        return tensor[:, padding : current_height - padding, :]
    new_width = int(original_width * (current_height / original_height))
    padding = (current_width - new_width) // 2
    return tensor[:, :, padding : current_width - padding]


def spatial_unpad_layout(crop_tokens: torch.Tensor, grid_shape: tuple[int, int], image_size: tuple[int, int],
                         newline: torch.Tensor, unpad=original_unpad) -> torch.Tensor:
    """`mm_patch_merge_type == "spatial_unpad"`: (crops, k, C) tokens of one image (base crop first) -> the base
    crop's tokens, then the grid crops as one un-padded (rows * s) x (columns * s) grid with a newline per row."""
    if crop_tokens.shape[0] == 1:
        return torch.cat([crop_tokens[0], newline[None].to(crop_tokens)])
    side = math.isqrt(crop_tokens.shape[1])
    rows, columns = grid_shape
    grid = crop_tokens[1:].view(rows, columns, side, side, -1)
    grid = grid.permute(4, 0, 2, 1, 3).contiguous().flatten(1, 2).flatten(2, 3)
    grid = unpad(grid, image_size)
    grid = torch.cat([grid, newline[:, None, None].expand(*grid.shape[:-1], 1).to(grid)], dim=-1)
    return torch.cat([crop_tokens[0], grid.flatten(1, 2).transpose(0, 1)])
