"""M3-LLaVA-NeXT configuration: LLaVA-NeXT (anyres crops) plus the per-crop visual-token counts it was trained at."""

from typing import Literal

from .configuration_m3_llava import resolve_m3_fields
from .transformers_imports import LlavaNextConfig


class M3LlavaNextConfig(LlavaNextConfig):
    r"""
    Configuration of [`M3LlavaNextForConditionalGeneration`]: a [`LlavaNextConfig`] whose projected visual tokens
    are average-pooled **per crop** to a per-request count (Matryoshka Multimodal Models, Cai et al. 2024), before
    the crops are laid out, un-padded and given one newline per row.

    matryoshka_scales (`list[int]`, *optional*):
        The per-crop visual-token counts the model was trained at, i.e. the values `num_visual_tokens` may take.
        Each must be a square s*s with s dividing the patch grid side. Defaults to the grid halved while it divides
        evenly, plus 1 (a 24x24 grid gives `[1, 9, 36, 144, 576]`).
    num_visual_tokens (`int`, *optional*):
        Tokens per crop when a request names none. Defaults to the full grid (plain LLaVA-NeXT behaviour).
    visual_token_reduction (`str`, *optional*, defaults to `"average_pooling"`):
        How each crop's grid is reduced: `"average_pooling"` (M3), `"spatial_sampling"` or `"sequential_sampling"`
        (the training-free baselines of the M3 paper).
    image_grid_pinpoints (`list[list[int]]`, *optional*):
        The (height, width) resolutions an image may be cut into, as in [`LlavaNextConfig`]; each a multiple of the
        crop size. Only used for inputs that do not say which grid each image was cut into (`image_grid_shapes`,
        which this package's processor always returns), so a processor may use longer grids than the model saw.

    Example:

    ```python
    >>> from modeling_matryoshka_llava import M3LlavaNextConfig, M3LlavaNextForConditionalGeneration
    >>> config = M3LlavaNextConfig()  # LLaVA-NeXT-7B shapes, scales [1, 9, 36, 144, 576] per crop
    >>> model = M3LlavaNextForConditionalGeneration(config)
    ```
    """

    model_type = "m3_llava_next"

    matryoshka_scales: list[int] | None = None
    num_visual_tokens: int | None = None
    visual_token_reduction: Literal["average_pooling", "spatial_sampling", "sequential_sampling"] = "average_pooling"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        resolve_m3_fields(self)
        crop_size = self.vision_config.image_size
        for pinpoint in self.image_grid_pinpoints:
            if len(pinpoint) != 2 or any(int(side) < crop_size or int(side) % crop_size for side in pinpoint):
                raise ValueError(
                    f"image_grid_pinpoints holds {list(pinpoint)}: each must be [height, width], both positive "
                    f"multiples of the crop size {crop_size}."
                )

    @property
    def valid_num_visual_tokens(self) -> list[int]:
        return self.matryoshka_scales


__all__ = ["M3LlavaNextConfig"]
