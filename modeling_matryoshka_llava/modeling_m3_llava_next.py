"""M3-LLaVA-NeXT: LLaVA-NeXT whose projected visual tokens are average-pooled per crop to the requested count.

Each image arrives as its base crop (the whole image resized) plus a rows x columns grid of crops. Every crop's
patch grid is pooled to sqrt(k) x sqrt(k); then, as in LLaVA-NeXT, the base crop's tokens come first and the grid
crops are laid out spatially on the *pooled* grid, un-padded to the image's aspect ratio, with one `image_newline`
per row. The grid each image was cut into comes from `image_grid_shapes` when given (so a processor may use other
`image_grid_pinpoints` than the model's config), otherwise from `image_sizes` and `config.image_grid_pinpoints` as
in transformers' `LlavaNextForConditionalGeneration`, whose state-dict keys this model shares.
"""

import math

import torch
from torch import nn

from .anyres_layout import AnyresImageLayout, select_crop_grid
from .configuration_m3_llava_next import M3LlavaNextConfig
from .modeling_matryoshka_base import (
    MatryoshkaLlavaForConditionalGenerationBase,
    MatryoshkaLlavaModelBase,
    MatryoshkaLlavaPreTrainedModel,
    register_llava_key_mapping,
)
from .multimodal_projector import MatryoshkaMultiModalProjector
from .token_reducers import reduce_per_count
from .transformers_imports import AutoModel
from .transformers_imports import initialization as init


def _pairs(values, name: str, num_images: int, minimum: int) -> list[tuple[int, int]]:
    """(num_images, 2) integers from a tensor, array or nested list; ValueError naming `name` otherwise."""
    pairs = values.tolist() if hasattr(values, "tolist") else [list(pair) for pair in values]
    if len(pairs) != num_images or any(len(pair) != 2 for pair in pairs):
        raise ValueError(f"{name} must hold one (2,) pair per image: {num_images} images, got {pairs!r}.")
    for pair in pairs:
        if any(isinstance(value, bool) or int(value) != value or value < minimum for value in pair):
            raise ValueError(f"{name} holds {pair}: expected integers >= {minimum}.")
    return [(int(first), int(second)) for first, second in pairs]


def pool_and_lay_out_crops(
    encoded_crops: torch.Tensor,
    counts_per_image: list[int],
    image_layouts: list[AnyresImageLayout],
    image_newline: torch.Tensor,
    reduction: str = "average_pooling",
) -> list[torch.Tensor]:
    """(all crops, patches, hidden) projected crops in image order -> one laid-out (tokens_i, hidden) tensor per
    image: each crop pooled to its image's count, then laid out as LLaVA-NeXT does (see `lay_out_crops`).
    The one implementation of the layout: the model and the vLLM plugin both call it."""
    crop_counts = [count for count, layout in zip(counts_per_image, image_layouts) for _ in range(layout.num_crops)]
    pooled = reduce_per_count(encoded_crops, crop_counts, reduction)  # per crop (k_i, hidden)
    laid_out, start = [], 0
    for layout in image_layouts:
        laid_out.append(lay_out_crops(torch.stack(pooled[start : start + layout.num_crops]), layout, image_newline))
        start += layout.num_crops
    return laid_out


def lay_out_crops(crop_tokens: torch.Tensor, layout: AnyresImageLayout, image_newline: torch.Tensor) -> torch.Tensor:
    """(crops, k, hidden) pooled crop tokens -> base-crop tokens, then the un-padded grid row by row + newlines."""
    base_tokens = crop_tokens[0]
    if layout.num_crops == 1:
        return torch.cat([base_tokens, image_newline[None].to(base_tokens)])
    side = math.isqrt(crop_tokens.shape[1])
    rows, columns = layout.grid_shape
    grid = crop_tokens[1:].view(rows, columns, side, side, -1)
    grid = grid.permute(4, 0, 2, 1, 3).flatten(1, 2).flatten(2, 3)  # (hidden, rows * side, columns * side)
    _, _, kept_rows, kept_columns = layout.pooled_grid_window(crop_tokens.shape[1])
    grid = grid[:, kept_rows, kept_columns]  # un-padded to the image's aspect ratio
    newline = image_newline[:, None, None].expand(*grid.shape[:-1], 1).to(grid.device, grid.dtype)
    grid = torch.cat([grid, newline], dim=-1).flatten(1, 2).transpose(0, 1)  # (kept rows * (kept columns + 1), hidden)
    return torch.cat([base_tokens, grid])


class M3LlavaNextModel(MatryoshkaLlavaModelBase):
    config_class = M3LlavaNextConfig
    config: M3LlavaNextConfig
    image_input_names = ("image_sizes", "image_grid_shapes")

    def __init__(self, config: M3LlavaNextConfig):
        # LLaVA-NeXT's modules plus `image_newline`, which the base constructor does not create.
        MatryoshkaLlavaPreTrainedModel.__init__(self, config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.multi_modal_projector = self.build_projector(config)
        embed_std = 1 / math.sqrt(config.text_config.hidden_size)
        self.image_newline = nn.Parameter(torch.randn(config.text_config.hidden_size, dtype=self.dtype) * embed_std)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def build_projector(self, config: M3LlavaNextConfig) -> MatryoshkaMultiModalProjector:
        return MatryoshkaMultiModalProjector(config)

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, M3LlavaNextModel):
            init.normal_(module.image_newline, mean=0.0, std=1 / math.sqrt(self.config.text_config.hidden_size))

    def image_layouts(self, pixel_values, image_sizes=None, image_grid_shapes=None) -> list[AnyresImageLayout]:
        if pixel_values.ndim != 5:
            raise ValueError(
                "LLaVA-NeXT takes pixel_values of shape (num_images, num_crops, channels, height, width), as its "
                f"processor returns them; got shape {tuple(pixel_values.shape)}."
            )
        if image_sizes is None:
            raise ValueError(
                "LLaVA-NeXT needs `image_sizes`, the (height, width) of each original image, as its processor "
                "returns them: pass the processor's outputs with **inputs."
            )
        num_images = pixel_values.shape[0]
        sizes = _pairs(image_sizes, "image_sizes", num_images, minimum=1)
        if image_grid_shapes is None:
            crop_size = self.config.vision_config.image_size
            pinpoints = [list(pinpoint) for pinpoint in self.config.image_grid_pinpoints]
            grids = [select_crop_grid(size, pinpoints, crop_size) for size in sizes]
        else:
            grids = _pairs(image_grid_shapes, "image_grid_shapes", num_images, minimum=0)
            for grid in grids:
                if (grid[0] == 0) != (grid[1] == 0):
                    raise ValueError(
                        f"image_grid_shapes holds {list(grid)}: (rows, columns) must both be positive, or both 0 for "
                        "an image given as its base crop alone."
                    )
        layouts = [AnyresImageLayout(size, grid) for size, grid in zip(sizes, grids)]
        needed = max(layout.num_crops for layout in layouts)
        if needed != pixel_values.shape[1]:
            source = "image_grid_shapes" if image_grid_shapes is not None else "config.image_grid_pinpoints"
            raise ValueError(
                f"pixel_values holds {pixel_values.shape[1]} crops per image but the grids from {source} need "
                f"{needed} for the largest image. If the images were cut with other image_grid_pinpoints than the "
                "model's config, pass the `image_grid_shapes` the processor returns."
            )
        return layouts

    def vision_tower_inputs(self, pixel_values: torch.Tensor, image_layouts: list[AnyresImageLayout]) -> torch.Tensor:
        # Images with fewer crops than the largest are zero-padded in the batch; those crops are never encoded.
        return torch.cat([crops[: layout.num_crops] for crops, layout in zip(pixel_values, image_layouts)])

    def project_features(self, features: torch.Tensor) -> torch.Tensor:
        # Pooling happens per crop *after* the projector, so the projector belongs to the work every count shares.
        return self.multi_modal_projector(features)  # (crops, patches, text width)

    def reduce_image_features(
        self, encoded_images: torch.Tensor, counts_per_image: list[int], image_layouts: list[AnyresImageLayout]
    ) -> list[torch.Tensor]:
        """(all crops, patches, hidden) in image order -> one laid-out (tokens_i, hidden) tensor per image."""
        return pool_and_lay_out_crops(
            encoded_images, counts_per_image, image_layouts, self.image_newline, self.config.visual_token_reduction
        )

    def num_image_tokens(self, num_visual_tokens: int, image_index: int, image_layout: AnyresImageLayout) -> int:
        return image_layout.num_tokens(num_visual_tokens)


class M3LlavaNextForConditionalGeneration(MatryoshkaLlavaForConditionalGenerationBase):
    config_class = M3LlavaNextConfig
    config: M3LlavaNextConfig
    base_model_class = M3LlavaNextModel

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.LongTensor | None = None,
        image_grid_shapes: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        num_visual_tokens: int | list[int] | torch.Tensor | None = None,
        multi_scale_num_visual_tokens: list[int] | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        cache=None,
        return_dict: bool | None = None,
        **kwargs,
    ):
        r"""
        As [`M3LlavaForConditionalGeneration`], with LLaVA-NeXT's image inputs; `num_visual_tokens` counts tokens
        *per crop*.

        pixel_values (`torch.Tensor` of shape `(num_images, num_crops, channels, height, width)`):
            Base crop then grid crops of each image, zero-padded to the batch's largest number of crops.
        image_sizes (`torch.LongTensor` of shape `(num_images, 2)`):
            (height, width) of each original image.
        image_grid_shapes (`torch.LongTensor` of shape `(num_images, 2)`, *optional*):
            (rows, columns) of the crop grid each image was cut into. Defaults to the grid that
            `config.image_grid_pinpoints` selects, as in LLaVA-NeXT; the processor always returns it, which lets it
            use other pinpoints than the model was saved with.
        """
        return super().forward(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            labels=labels,
            num_visual_tokens=num_visual_tokens,
            multi_scale_num_visual_tokens=multi_scale_num_visual_tokens,
            logits_to_keep=logits_to_keep,
            cache=cache,
            return_dict=return_dict,
            image_sizes=image_sizes,
            image_grid_shapes=image_grid_shapes,
            **kwargs,
        )


register_llava_key_mapping(M3LlavaNextConfig.model_type, M3LlavaNextModel, "llava_next")

__all__ = ["M3LlavaNextForConditionalGeneration", "M3LlavaNextModel", "lay_out_crops", "pool_and_lay_out_crops"]
