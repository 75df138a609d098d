"""M3-LLaVA configuration: LLaVA-1.5 plus the visual-token counts its nested pooling was trained at."""

import math
from typing import Literal

from .count_chooser import check_count_chooser_fields
from .token_reducers import VISUAL_TOKEN_REDUCTIONS
from .transformers_imports import LlavaConfig
from .visual_token_counts import check_count, is_integer, nested_pooling_scales, patch_grid_side


class M3LlavaConfig(LlavaConfig):
    r"""
    Configuration of [`M3LlavaForConditionalGeneration`]: a [`LlavaConfig`] whose projected visual tokens are
    average-pooled to a per-request count (Matryoshka Multimodal Models, Cai et al. 2024).

    matryoshka_scales (`list[int]`, *optional*):
        The visual-token counts the model was trained at, i.e. the values `num_visual_tokens` may take. Each must
        be a square s*s with s dividing the patch grid side. Defaults to the grid halved while it divides evenly,
        plus 1 (a 24x24 grid gives `[1, 9, 36, 144, 576]`).
    num_visual_tokens (`int`, *optional*):
        The count used when a request names none. Defaults to the full grid (plain LLaVA behaviour).
    visual_token_reduction (`str`, *optional*, defaults to `"average_pooling"`):
        How the grid is reduced: `"average_pooling"` (M3) or one of the training-free baselines of the M3 paper,
        `"spatial_sampling"` (a regular strided sub-grid) and `"sequential_sampling"` (the first k tokens).
    count_chooser_counts (`list[int]`, *optional*):
        The counts `num_visual_tokens="auto"` chooses among (see `count_chooser`); None: the model has no chooser.
    count_chooser_hidden_size (`int`, *optional*, defaults to 64):
        Width of the chooser's hidden layer.
    count_chooser_threshold (`float`, *optional*, defaults to 0.5):
        "auto" takes the smallest candidate whose predicted probability of a right answer reaches it: lower spends
        fewer tokens, higher answers more questions right.

    Example:

    ```python
    >>> from modeling_matryoshka_llava import M3LlavaConfig, M3LlavaForConditionalGeneration
    >>> config = M3LlavaConfig()  # LLaVA-1.5-7B shapes, scales [1, 9, 36, 144, 576]
    >>> model = M3LlavaForConditionalGeneration(config)
    ```
    """

    model_type = "m3_llava"

    matryoshka_scales: list[int] | None = None
    num_visual_tokens: int | None = None
    visual_token_reduction: Literal["average_pooling", "spatial_sampling", "sequential_sampling"] = "average_pooling"
    count_chooser_counts: list[int] | None = None
    count_chooser_hidden_size: int = 64
    count_chooser_threshold: float = 0.5

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        resolve_m3_fields(self)
        check_count_chooser_fields(self)

    @property
    def valid_num_visual_tokens(self) -> list[int]:
        return self.matryoshka_scales


def resolve_m3_fields(config) -> None:
    """Fill in and check the M3 fields of a config (shared by M3-LLaVA and M3-LLaVA-NeXT, whose per-crop grid is
    the same patch grid): `matryoshka_scales`, `num_visual_tokens`, `visual_token_reduction`, `image_seq_length`."""
    grid_size = patch_grid_side(config.vision_config)
    if config.matryoshka_scales is None:
        config.matryoshka_scales = nested_pooling_scales(grid_size)
    for scale in config.matryoshka_scales:
        side = math.isqrt(scale) if is_integer(scale) and scale >= 1 else 0
        if side == 0 or side * side != scale or grid_size % side != 0:
            raise ValueError(
                f"matryoshka_scales holds {scale!r}, which does not pool a {grid_size}x{grid_size} patch grid "
                "evenly: each scale must be an integer s*s with s dividing the grid side."
            )
    config.matryoshka_scales = sorted(int(scale) for scale in config.matryoshka_scales)
    if config.num_visual_tokens is None:
        config.num_visual_tokens = grid_size * grid_size
    config.num_visual_tokens = check_count(config.num_visual_tokens, config.matryoshka_scales)
    if config.visual_token_reduction not in VISUAL_TOKEN_REDUCTIONS:
        raise ValueError(f"visual_token_reduction must be one of {VISUAL_TOKEN_REDUCTIONS}.")
    config.image_seq_length = grid_size * grid_size


__all__ = ["M3LlavaConfig", "resolve_m3_fields"]
