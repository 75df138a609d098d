"""Which visual-token counts a model accepts, and the one place a requested count is checked.

Part of the remote-code bundle: imports only torch and the standard library.
"""

from collections.abc import Sequence
from numbers import Integral

import torch


def nested_pooling_scales(grid_size: int) -> list[int]:
    """The M3 scales of a square patch grid: the grid halved while it divides evenly, then global pooling.

    A 24x24 grid gives [1, 9, 36, 144, 576], the scales of the M3 paper.
    """
    sides = [grid_size]
    while sides[-1] % 2 == 0 and sides[-1] > 2:
        sides.append(sides[-1] // 2)
    sides.append(1)
    return sorted({side * side for side in sides})


def describe_valid(valid: Sequence[int]) -> str:
    if isinstance(valid, range):
        return f"an integer from {valid.start} to {valid.stop - 1}"
    return f"one of {list(valid)}"


def is_integer(value) -> bool:
    """An integer in the everyday sense: bool is an Integral in Python, but a flag passed by mistake must not mean
    0 or 1 tokens; floats, strings and tensors are not counts either (a 0-d integer tensor is unwrapped first)."""
    return not isinstance(value, bool) and isinstance(value, Integral)


def check_count(value, valid: Sequence[int], what: str = "num_visual_tokens") -> int:
    """`value` as an int if it is one of `valid`; ValueError naming the valid values otherwise."""
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_floating_point():
        value = value.item()
    if not is_integer(value) or int(value) not in valid:
        raise ValueError(f"{what}={value!r} is not valid for this model: it must be {describe_valid(valid)}.")
    return int(value)


def resolve_num_visual_tokens(
    num_visual_tokens, valid: Sequence[int], num_images: int, default: int
) -> list[int] | None:
    """Check a requested `num_visual_tokens` and return it per image (None when the caller asked for nothing).

    Accepts one count for every image, or a list / 1-D integer tensor with one count per image. Raises
    `ValueError` naming the valid values for anything else: 0, negatives, floats, bools, strings, counts the
    model was not trained at, or a list whose length is not the number of images.
    """
    if default not in valid:
        raise ValueError(f"The model's default num_visual_tokens={default} is not {describe_valid(valid)}.")
    if num_visual_tokens is None:
        return None
    if isinstance(num_visual_tokens, torch.Tensor) and num_visual_tokens.ndim == 1:
        num_visual_tokens = num_visual_tokens.tolist()
    if isinstance(num_visual_tokens, (list, tuple)):
        if len(num_visual_tokens) != num_images:
            raise ValueError(
                f"num_visual_tokens has {len(num_visual_tokens)} values but the inputs hold {num_images} images: "
                f"pass one value ({describe_valid(valid)}) or one per image."
            )
        return [check_count(value, valid, f"num_visual_tokens[{i}]") for i, value in enumerate(num_visual_tokens)]
    return [check_count(num_visual_tokens, valid, "num_visual_tokens")] * num_images
