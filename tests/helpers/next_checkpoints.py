"""Tiny LLaVA-NeXT checkpoints in the formats users convert from, written in code with the real key names of the released checkpoints.

- llava-hf (`LlavaNextForConditionalGeneration`): the llava-hf LLaVA-1.5 keys plus `model.image_newline` (current)
  or `vision_tower.vision_model.*`, `multi_modal_projector.*`, `language_model.model.*`,
  `language_model.lm_head.*`, `image_newline` (legacy); `model_type: llava_next`, (height, width)
  `image_grid_pinpoints`, a `LlavaNextImageProcessor` preprocessor config, a `LlavaNextProcessor` processor config
  and a chat template of its own.
- original LLaVA-NeXT / the M3 release (`mucai/llava-next-vicuna-7b-m3`): original LLaVA-1.5 keys with the tower
  inside plus `model.image_newline`; config `image_aspect_ratio: anyres`, `mm_patch_merge_type: spatial_unpad`,
  `image_grid_pinpoints` as (width, height) pairs, `unfreeze_mm_vision_tower`, and for M3
  `matryoshka_vis_token_scale`.

Both pinpoint sets are asymmetric (only wide grids for the original format, only tall ones for llava-hf), so
reading (width, height) as (height, width) or the other way round changes the crops of a non-square image.
"""

from pathlib import Path

import torch
from original_checkpoints import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGE_SIZE,
    TEXT_WIDTH,
    clip_vision_state,
    llama_state,
    mlp_projector_state,
    original_config,
    text_config,
    vicuna_tokenizer,
    vision_config,
    write_json,
    write_shards,
)
from tiny_models import tiny_tokenizer

CROP = IMAGE_SIZE
# Original format: (width, height) -> 1x2, 1x3 and 2x2 crops (rows x columns).
ORIGINAL_PINPOINTS_WIDTH_HEIGHT = [[2 * CROP, CROP], [3 * CROP, CROP], [2 * CROP, 2 * CROP]]
# llava-hf: (height, width) -> 2x1, 3x1 and 2x2 crops.
LLAVA_HF_PINPOINTS = [[2 * CROP, CROP], [3 * CROP, CROP], [2 * CROP, 2 * CROP]]
LLAVA_HF_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() + ': ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}"
    "{% endfor %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def image_newline(seed: int) -> torch.Tensor:
    return torch.randn(TEXT_WIDTH, generator=torch.Generator().manual_seed(seed))


def write_original_next_checkpoint(folder: Path, variant: str = "m3", num_shards: int = 2,
                                   dtype: torch.dtype = torch.float16, seed: int = 20) -> Path:
    """The original LLaVA-NeXT format (`variant` "llava") or the M3 LLaVA-NeXT release ("m3")."""
    tokenizer = vicuna_tokenizer()
    vocab_size = len(tokenizer)
    state = llama_state(vocab_size, seed)
    state.update(mlp_projector_state("model.mm_projector.", seed + 2))
    state["model.image_newline"] = image_newline(seed + 4)
    tower = clip_vision_state(seed + 3)
    state.update({f"model.vision_tower.vision_tower.{name}": value for name, value in tower.items()})
    state = {key: value.to(dtype) if value.is_floating_point() else value for key, value in state.items()}
    write_shards(folder, state, num_shards)
    config = original_config(variant, vocab_size, str(dtype).removeprefix("torch."))
    config.update(
        image_aspect_ratio="anyres",
        image_grid_pinpoints=ORIGINAL_PINPOINTS_WIDTH_HEIGHT,
        mm_patch_merge_type="spatial_unpad",
        unfreeze_mm_vision_tower=True,
        tokenizer_model_max_length=4096,
    )
    write_json(folder / "config.json", config)
    tokenizer.save_pretrained(folder)
    return folder


def write_llava_hf_next_checkpoint(folder: Path, layout: str = "current", num_shards: int = 2,
                                   dtype: torch.dtype = torch.float32, seed: int = 30) -> Path:
    """A transformers LLaVA-NeXT checkpoint as llava-hf uploaded them (current or legacy key layout)."""
    tokenizer = tiny_tokenizer()
    vocab_size = 320
    language = llama_state(vocab_size, seed)
    tower = clip_vision_state(seed + 3)
    projector = mlp_projector_state("", seed + 2)
    projector = {name.replace("0.", "linear_1.").replace("2.", "linear_2."): value for name, value in projector.items()}
    if layout == "current":
        prefixes = ("model.vision_tower.", "model.multi_modal_projector.", "model.language_model.", "lm_head.",
                    "model.image_newline")
    else:
        prefixes = ("vision_tower.", "multi_modal_projector.", "language_model.model.", "language_model.lm_head.",
                    "image_newline")
    state = {prefixes[0] + name: value for name, value in tower.items() if not name.endswith("position_ids")}
    state.update({prefixes[1] + name: value for name, value in projector.items()})
    state.update({prefixes[2] + name.removeprefix("model."): value for name, value in language.items()
                  if name.startswith("model.")})
    state[prefixes[3] + "weight"] = language["lm_head.weight"]
    state[prefixes[4]] = image_newline(seed + 4)
    state = {key: value.to(dtype) for key, value in state.items()}
    write_shards(folder, state, num_shards)
    image_token_index = tokenizer.convert_tokens_to_ids("<image>")
    config = {
        "architectures": ["LlavaNextForConditionalGeneration"],
        "model_type": "llava_next",
        "image_token_index": image_token_index,
        "image_grid_pinpoints": LLAVA_HF_PINPOINTS,
        "projector_hidden_act": "gelu",
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
        "tie_word_embeddings": False,
        "torch_dtype": str(dtype).removeprefix("torch."),
        "text_config": {**text_config(vocab_size, pad_token_id=tokenizer.pad_token_id).to_dict(),
                        "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id},
        "vision_config": vision_config().to_dict(),
    }
    write_json(folder / "config.json", config)
    write_json(folder / "preprocessor_config.json", {
        "aspect_ratio_setting": "anyres", "crop_size": {"height": CROP, "width": CROP}, "do_center_crop": True,
        "do_convert_rgb": True, "do_normalize": True, "do_pad": True, "do_rescale": True, "do_resize": True,
        "image_grid_pinpoints": LLAVA_HF_PINPOINTS, "image_mean": CLIP_MEAN,
        "image_processor_type": "LlavaNextImageProcessor", "image_std": CLIP_STD, "processor_class": "LlavaNextProcessor",
        "resample": 3, "rescale_factor": 1 / 255, "size": {"shortest_edge": CROP},
    })
    write_json(folder / "processor_config.json", {
        "image_token": "<image>", "num_additional_image_tokens": 1, "patch_size": 2,
        "processor_class": "LlavaNextProcessor", "vision_feature_select_strategy": "default",
    })
    write_json(folder / "chat_template.json", {"chat_template": LLAVA_HF_CHAT_TEMPLATE})
    tokenizer.save_pretrained(folder)
    return folder
