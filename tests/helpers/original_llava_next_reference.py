"""Independent references of LLaVA-NeXT for checking NeXT conversions, from the raw source files and a PIL image.

- `ReferenceLlavaNext`: the original haotian-liu/LLaVA computation as mu-cai/matryoshka-mm runs it for LLaVA-NeXT:
  `process_anyres_image` (best (width, height) pinpoint for `image.size`, resize-and-pad, crops row by row, the
  base image resized to the crop size first), CLIP features of every crop, `mm_projector`, M3's average pooling
  of each crop's grid, `spatial_unpad` (un-padding on the pooled grid with `int()`, one `image_newline` per row),
  then the image spliced in place of IMAGE_TOKEN_INDEX = -200.
- `llava_hf_next_reference_logits`: transformers' own `LlavaNextForConditionalGeneration` and its
  `LlavaNextImageProcessorPil`; below the full grid its crops' projected tokens are pooled and laid out by hand.

Shares no code with `conversion/` or the models it checks.
"""

import json
import math
from pathlib import Path

import numpy as np
import torch
from original_llava_reference import IMAGE_TOKEN_INDEX, ReferenceLlava, load_raw_state_dict
from PIL import Image
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

from matryoshka_llava.conversion.original_anyres import original_unpad


def select_best_resolution(original_size, possible_resolutions):
    """llava/mm_utils.py: sizes and resolutions as (width, height)."""
    original_width, original_height = original_size
    best_fit, max_effective_resolution, min_wasted_resolution = None, 0, float("inf")
    for width, height in possible_resolutions:
        scale = min(width / original_width, height / original_height)
        downscaled_width, downscaled_height = int(original_width * scale), int(original_height * scale)
        effective_resolution = min(downscaled_width * downscaled_height, original_width * original_height)
        wasted_resolution = (width * height) - effective_resolution
        if effective_resolution > max_effective_resolution or (
            effective_resolution == max_effective_resolution and wasted_resolution < min_wasted_resolution
        ):
            max_effective_resolution, min_wasted_resolution, best_fit = effective_resolution, wasted_resolution, (width, height)
    return best_fit


def resize_and_pad_image(image: Image.Image, target_resolution) -> Image.Image:
    original_width, original_height = image.size
    target_width, target_height = target_resolution
    scale_w, scale_h = target_width / original_width, target_height / original_height
    if scale_w < scale_h:
        new_width, new_height = target_width, min(math.ceil(original_height * scale_w), target_height)
    else:
        new_height, new_width = target_height, min(math.ceil(original_width * scale_h), target_width)
    resized = image.resize((new_width, new_height))
    padded = Image.new("RGB", (target_width, target_height), (0, 0, 0))
    padded.paste(resized, ((target_width - new_width) // 2, (target_height - new_height) // 2))
    return padded


def divide_to_patches(image: Image.Image, patch_size: int) -> list[Image.Image]:
    width, height = image.size
    return [image.crop((j, i, j + patch_size, i + patch_size))
            for i in range(0, height, patch_size) for j in range(0, width, patch_size)]


def clip_preprocess(image: Image.Image, mean, std) -> torch.Tensor:
    """CLIPImageProcessor on an image already at the crop size: rescale and normalise only."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    array = (array - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


class ReferenceLlavaNext(ReferenceLlava):
    def __init__(self, folder: Path, clip_folder: Path):
        super().__init__(folder, clip_folder)
        config = json.loads((Path(folder) / "config.json").read_text())
        assert config["image_aspect_ratio"] == "anyres" and config["mm_patch_merge_type"] == "spatial_unpad"
        self.grid_pinpoints = config["image_grid_pinpoints"]  # (width, height)
        self.image_newline = load_raw_state_dict(folder)["model.image_newline"]
        preprocessor = json.loads((Path(clip_folder) / "preprocessor_config.json").read_text())
        self.crop_size, self.mean, self.std = preprocessor["crop_size"], preprocessor["image_mean"], preprocessor["image_std"]

    def process_anyres_image(self, image: Image.Image) -> torch.Tensor:
        best_resolution = select_best_resolution(image.size, self.grid_pinpoints)
        patches = divide_to_patches(resize_and_pad_image(image, best_resolution), self.crop_size)
        base = image.resize((self.crop_size, self.crop_size))
        return torch.stack([clip_preprocess(patch, self.mean, self.std) for patch in [base] + patches])

    def image_tokens(self, image: Image.Image, num_visual_tokens: int) -> torch.Tensor:
        crops = self.process_anyres_image(image)
        features = self.encode_images(crops, num_visual_tokens)  # projector, then M3 pooling per crop
        base, grid = features[0], features[1:]
        height = width = math.isqrt(features.shape[1])
        best_width, best_height = select_best_resolution(image.size, self.grid_pinpoints)
        num_patch_width, num_patch_height = best_width // self.crop_size, best_height // self.crop_size
        grid = grid.view(num_patch_height, num_patch_width, height, width, -1)
        grid = grid.permute(4, 0, 2, 1, 3).contiguous().flatten(1, 2).flatten(2, 3)
        grid = original_unpad(grid, image.size[::-1])  # llava_arch's unpad_image, (width, height) there
        grid = torch.cat((grid, self.image_newline[:, None, None].expand(*grid.shape[:-1], 1)), dim=-1)
        return torch.cat((base, grid.flatten(1, 2).transpose(0, 1)), dim=0)

    @torch.no_grad()
    def logits(self, input_ids: list[int], image: Image.Image, num_visual_tokens: int) -> torch.Tensor:
        position = input_ids.index(IMAGE_TOKEN_INDEX)
        embed = self.language_model.get_input_embeddings()
        pieces = [embed(torch.tensor(input_ids[:position])), self.image_tokens(image, num_visual_tokens),
                  embed(torch.tensor(input_ids[position + 1 :]))]
        return self.language_model(inputs_embeds=torch.cat(pieces)[None]).logits[0]


def llava_hf_image_processor(folder: Path) -> LlavaNextImageProcessorPil:
    settings = json.loads((Path(folder) / "preprocessor_config.json").read_text())
    keys = ("crop_size", "size", "image_grid_pinpoints", "image_mean", "image_std", "resample", "rescale_factor")
    return LlavaNextImageProcessorPil(**{key: settings[key] for key in keys})


@torch.no_grad()
def llava_hf_next_reference_logits(llava_next, image_processor, input_ids: list[int], image: Image.Image,
                                   num_visual_tokens: int) -> torch.Tensor:
    """transformers' LLaVA-NeXT: its forward at the full grid; below it, its parts with each crop pooled by hand."""
    inputs = image_processor(image, return_tensors="pt")
    pixel_values, image_sizes = inputs["pixel_values"], inputs["image_sizes"]
    config = llava_next.config
    position = input_ids.index(IMAGE_TOKEN_INDEX)
    full = (config.vision_config.image_size // config.vision_config.patch_size) ** 2
    if num_visual_tokens == full:
        count = llava_next.model.get_image_features(
            pixel_values, image_sizes, vision_feature_layer=config.vision_feature_layer,
            vision_feature_select_strategy=config.vision_feature_select_strategy,
        ).pooler_output[0].shape[0]
        ids = input_ids[:position] + [config.image_token_id] * count + input_ids[position + 1 :]
        return llava_next(input_ids=torch.tensor([ids]), pixel_values=pixel_values, image_sizes=image_sizes).logits[0]
    height, width = image_sizes[0].tolist()
    best_height, best_width = select_best_resolution((height, width), config.image_grid_pinpoints)  # (h, w) here
    rows, columns = best_height // config.vision_config.image_size, best_width // config.vision_config.image_size
    crops = pixel_values[0, : 1 + rows * columns]
    hidden = llava_next.model.vision_tower(crops, output_hidden_states=True).hidden_states[-2][:, 1:]
    projected = llava_next.model.multi_modal_projector(hidden)
    side, cell = math.isqrt(num_visual_tokens), math.isqrt(full) // math.isqrt(num_visual_tokens)
    pooled = projected.reshape(-1, side, cell, side, cell, projected.shape[-1]).mean(dim=(2, 4))  # (crops, s, s, C)
    grid = pooled[1:].reshape(rows, columns, side, side, -1).permute(4, 0, 2, 1, 3).reshape(-1, rows * side, columns * side)
    grid = original_unpad(grid, (height, width))
    newline = llava_next.model.image_newline
    grid = torch.cat((grid, newline[:, None, None].expand(*grid.shape[:-1], 1)), dim=-1).flatten(1, 2).transpose(0, 1)
    image_tokens = torch.cat((pooled[0].reshape(side * side, -1), grid))
    embed = llava_next.get_input_embeddings()
    embeds = torch.cat([embed(torch.tensor(input_ids[:position])), image_tokens, embed(torch.tensor(input_ids[position + 1 :]))])
    return llava_next.lm_head(llava_next.model.language_model(inputs_embeds=embeds[None]).last_hidden_state)[0]
