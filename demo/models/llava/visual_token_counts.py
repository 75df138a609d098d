"""Which visual-token counts a model accepts, its default, the counts a trade-off compares, and the one place a
requested count is checked. Configs, models, processors, trainers, eval, cost, bench and model cards all ask here.

Part of the remote-code bundle: imports only torch and the standard library.
"""

import math
import sys
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


def patch_grid_side(vision_config) -> int:
    """Side of the square patch grid the vision tower produces (24 for CLIP ViT-L/14 at 336 px)."""
    return vision_config.image_size // vision_config.patch_size


def valid_num_visual_tokens(config) -> Sequence[int]:
    """The counts a model accepts: its config's (M3: the trained scales; MQT: range(1, M + 1)); for a plain LLaVA,
    which only the training-free reductions shorten, the nested scales of its patch grid."""
    valid = getattr(config, "valid_num_visual_tokens", None)
    return valid if valid is not None else nested_pooling_scales(patch_grid_side(config.vision_config))


def default_num_visual_tokens(config) -> int:
    """The count used when a request names none: the config's (never random); a plain LLaVA's full grid."""
    default = getattr(config, "num_visual_tokens", None)
    return default if default is not None else patch_grid_side(config.vision_config) ** 2


def comparison_counts(config) -> list[int]:
    """The counts a trade-off table compares when none are given: every valid count of a model trained at a few
    scales (M3), and for a model accepting every count 1..M (MQT) the doubling ladder 2, 4, 8, ..., M."""
    valid = valid_num_visual_tokens(config)
    if not isinstance(valid, range):
        return list(valid)
    ladder, count = [], 2
    while count < valid[-1]:
        ladder.append(count)
        count *= 2
    return ladder + [valid[-1]]


# Any count at all, for a processor that was not told its model's counts (the model checks them again).
ANY_POSITIVE_COUNT = range(1, sys.maxsize)


class PositiveSquares:
    """Every positive square: what tokens per LLaVA-NeXT crop can be when no model config says more (each crop's
    grid is pooled to sqrt(k) x sqrt(k))."""

    def __contains__(self, value) -> bool:
        return is_integer(value) and value >= 1 and math.isqrt(value) ** 2 == value


POSITIVE_SQUARES = PositiveSquares()


def processor_count_settings(config) -> dict:
    """What a processor saves of its model's counts: M3's scales, or M for a model accepting any count 1..M."""
    valid = valid_num_visual_tokens(config)
    if isinstance(valid, range):
        return {"max_num_visual_tokens": valid[-1]}
    return {"valid_num_visual_tokens": list(valid)}


def describe_valid(valid: Sequence[int]) -> str:
    if valid == ANY_POSITIVE_COUNT:
        return "a positive integer"
    if valid is POSITIVE_SQUARES:
        return "a positive square (LLaVA-NeXT tokens per crop tile a sqrt(k) x sqrt(k) grid)"
    if isinstance(valid, range):
        return f"any integer from {valid.start} to {valid.stop - 1}"
    return "one of " + ", ".join(str(count) for count in valid)


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
    num_visual_tokens, valid: Sequence[int], num_images: int, default: int | None = None
) -> list[int] | None:
    """Check a requested `num_visual_tokens` and return it per image (None when the caller asked for nothing).

    Accepts one count for every image, or a list / 1-D integer tensor with one count per image. Raises
    `ValueError` naming the valid values for anything else: 0, negatives, floats, bools, strings, counts the
    model was not trained at, or a list whose length is not the number of images. A model's `default` is checked
    too (a processor, which has none, passes None).
    """
    if default is not None and default not in valid:
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
