"""Tiny checkpoints in the four formats users convert from, written in code with the real key names of the released checkpoints.

- llava-hf: `model.vision_tower.vision_model.*`, `model.multi_modal_projector.linear_{1,2}.*`,
  `model.language_model.*`, `lm_head.weight` (current) or `vision_tower.vision_model.*`, `multi_modal_projector.*`,
  `language_model.model.*`, `language_model.lm_head.*` (legacy); tokenizer with `<image>` and `<pad>`.
- original LLaVA-1.5 (`llava_llama`): `model.embed_tokens`, `model.layers.*`, `model.norm`, `lm_head`,
  `model.mm_projector.{0,2}.*`, optionally `model.vision_tower.vision_tower.vision_model.*`; a Vicuna-style tokenizer
  without `<image>`; pickled .bin or safetensors shards with an index.
- M3 release: original format, tower inside, `matryoshka_vis_token_scale`.
- MQT release: original format, `model.query_abstractor.*` (`proj` stored (in, out), fp16 `pos_embed`), bf16,
  `num_visual_tokens: "second_stage"`, no tower (taken from the CLIP checkpoint).
- CLIP (openai layout): `vision_model.*`, `text_model.*`, projections, `logit_scale`, `position_ids` buffers.

Vision width 32 and text width 48 differ, so a transposed projector cannot go unnoticed. Weights are re-drawn
with unit-scale statistics so logits are O(1) and sensitive to every tensor.
"""

import json
import math
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from tiny_models import CORPUS, tiny_tokenizer
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    CLIPConfig,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

IMAGE_SIZE, PATCH_SIZE = 48, 2  # the real 24x24 patch grid
VISION_WIDTH, TEXT_WIDTH = 32, 48
MQT_QUERIES, MQT_HEADS = 256, 16  # as released (16 heads hard-coded by the authors)
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
# The conversions the tests run: (source name, target), and the format each source is in.
CASES = [
    ("llava_hf", "m3"),
    ("llava_hf_legacy", "mqt"),
    ("llava", "m3"),
    ("llava_no_tower", "mqt"),
    ("m3_release", "m3"),
    ("mqt_release", "mqt"),
]
SOURCE_FORMATS = {
    "llava_hf": "llava-hf",
    "llava_hf_legacy": "llava-hf",
    "llava": "llava",
    "llava_no_tower": "llava",
    "m3_release": "m3",
    "mqt_release": "mqt",
}
VICUNA_CORPUS = CORPUS + [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please describe the colours, shapes and objects you can see in this photograph.",
    "Numbers like 12, 345 and 6789 appear on the sign; read them out loud.",
]


def vision_config() -> CLIPVisionConfig:
    return CLIPVisionConfig(
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, hidden_size=VISION_WIDTH, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, projection_dim=16,
    )


def text_config(vocab_size: int, **overrides) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=TEXT_WIDTH, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048, rms_norm_eps=1e-5,
        bos_token_id=1, eos_token_id=2, **overrides,
    )


def vicuna_tokenizer(vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """Llama/Vicuna conventions: <unk>=0, <s>=1, </s>=2, padding with <unk>, no <image> and no <pad>."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(VICUNA_CORPUS, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<unk>", padding_side="right")


def redraw(state: dict, generator: torch.Generator) -> dict:
    """Unit-scale weights: matrices N(0, 1/fan_in), norms 1 + N(0, 0.1), biases and embeddings N(0, 0.1..1)."""
    drawn = {}
    for name, value in state.items():
        if not value.is_floating_point():
            drawn[name] = value.clone()
            continue
        noise = torch.randn(value.shape, generator=generator)
        if "norm" in name or "layrnorm" in name or "ln_" in name:
            drawn[name] = (1.0 if name.endswith("weight") else 0.0) + 0.1 * noise
        elif value.ndim >= 2 and "embed" not in name and "query" not in name:
            drawn[name] = noise / math.sqrt(value.shape[-1] if value.ndim == 2 else value[0].numel())
        elif "embed" in name:
            drawn[name] = noise
        else:
            drawn[name] = 0.1 * noise
    return drawn


def clip_vision_state(seed: int) -> dict:
    """CLIP vision tower tensors named as stored on the Hub: `vision_model.*`."""
    torch.manual_seed(seed)
    tower = CLIPVisionModel(vision_config())
    state = {name if name.startswith("vision_model.") else f"vision_model.{name}": value
             for name, value in tower.state_dict().items()}
    return redraw(state, torch.Generator().manual_seed(seed))


def llama_state(vocab_size: int, seed: int) -> dict:
    """Llama tensors named as in the original LLaVA checkpoints: model.embed_tokens / model.layers / lm_head."""
    torch.manual_seed(seed)
    return redraw(LlamaForCausalLM(text_config(vocab_size)).state_dict(), torch.Generator().manual_seed(seed + 1))


def mlp_projector_state(prefix: str, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {
        f"{prefix}0.weight": torch.randn(TEXT_WIDTH, VISION_WIDTH, generator=generator) / math.sqrt(VISION_WIDTH),
        f"{prefix}0.bias": 0.1 * torch.randn(TEXT_WIDTH, generator=generator),
        f"{prefix}2.weight": torch.randn(TEXT_WIDTH, TEXT_WIDTH, generator=generator) / math.sqrt(TEXT_WIDTH),
        f"{prefix}2.bias": 0.1 * torch.randn(TEXT_WIDTH, generator=generator),
    }


def mae_sincos_pos_embed(embed_dim: int, grid_size: int) -> np.ndarray:
    """As in the MQT release (MAE's get_2d_sincos_pos_embed): first half from the column, second from the row."""
    def one_axis(dim, positions):
        omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
        out = np.einsum("m,d->md", positions.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid = np.stack(np.meshgrid(np.arange(grid_size, dtype=np.float32), np.arange(grid_size, dtype=np.float32)))
    return np.concatenate([one_axis(embed_dim // 2, grid[0]), one_axis(embed_dim // 2, grid[1])], axis=1)


def query_abstractor_state(seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    prefix = "model.query_abstractor."
    state = {
        "query": 0.5 * torch.randn(MQT_QUERIES, VISION_WIDTH, generator=generator),
        "attn.in_proj_weight": torch.randn(3 * VISION_WIDTH, VISION_WIDTH, generator=generator) / math.sqrt(VISION_WIDTH),
        "attn.in_proj_bias": 0.1 * torch.randn(3 * VISION_WIDTH, generator=generator),
        "attn.out_proj.weight": torch.randn(VISION_WIDTH, VISION_WIDTH, generator=generator) / math.sqrt(VISION_WIDTH),
        "attn.out_proj.bias": 0.1 * torch.randn(VISION_WIDTH, generator=generator),
        "proj": torch.randn(VISION_WIDTH, TEXT_WIDTH, generator=generator) / math.sqrt(VISION_WIDTH),  # (in, out)
    }
    for norm in ("ln_q", "ln_k", "ln_v"):
        state[f"{norm}.weight"] = 1 + 0.1 * torch.randn(VISION_WIDTH, generator=generator)
        state[f"{norm}.bias"] = 0.1 * torch.randn(VISION_WIDTH, generator=generator)
    state = {prefix + name: value for name, value in state.items()}
    grid = math.isqrt(MQT_QUERIES)
    state[prefix + "pos_embed"] = torch.from_numpy(mae_sincos_pos_embed(VISION_WIDTH, grid)).half()
    return state


def write_shards(folder: Path, state: dict, num_shards: int, fmt: str = "safetensors") -> None:
    """Split `state` in key order into shards with a weight index, as save_pretrained (or LLaVA's trainer) did."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = list(state)
    per_shard = math.ceil(len(keys) / num_shards)
    stem, suffix = ("model", "safetensors") if fmt == "safetensors" else ("pytorch_model", "bin")
    weight_map = {}
    for index in range(num_shards):
        name = f"{stem}-{index + 1:05d}-of-{num_shards:05d}.{suffix}"
        part = {key: state[key].contiguous() for key in keys[index * per_shard : (index + 1) * per_shard]}
        if fmt == "safetensors":
            save_file(part, folder / name, metadata={"format": "pt"})
        else:
            torch.save(part, folder / name)
        weight_map.update(dict.fromkeys(part, name))
    index_name = f"{stem}.{suffix}.index.json"
    total = sum(value.numel() * value.element_size() for value in state.values())
    (folder / index_name).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2))


def clip_preprocessor_config() -> dict:
    # openai/clip-vit-large-patch14-336 style: integer sizes.
    return {"crop_size": IMAGE_SIZE, "do_center_crop": True, "do_normalize": True, "do_resize": True,
            "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
            "resample": 3, "size": IMAGE_SIZE}


def write_clip_checkpoint(folder: Path, seed: int = 11) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    state = clip_vision_state(seed)
    state["vision_model.embeddings.position_ids"] = torch.arange((IMAGE_SIZE // PATCH_SIZE) ** 2 + 1)[None]
    state.update({
        "text_model.embeddings.token_embedding.weight": torch.randn(50, 16),
        "text_model.embeddings.position_ids": torch.arange(8)[None],
        "text_model.final_layer_norm.weight": torch.ones(16),
        "visual_projection.weight": torch.randn(16, VISION_WIDTH),
        "text_projection.weight": torch.randn(16, 16),
        "logit_scale": torch.tensor(2.6592),
    })
    torch.save(state, folder / "pytorch_model.bin")
    config = CLIPConfig(text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                     "num_attention_heads": 2, "vocab_size": 50, "bos_token_id": 0, "eos_token_id": 1},
                        vision_config=vision_config().to_dict(), projection_dim=16)
    write_json(folder / "config.json", config.to_dict())
    write_json(folder / "preprocessor_config.json", clip_preprocessor_config())
    return folder


def original_config(variant: str, vocab_size: int, dtype: str) -> dict:
    config = {
        "_name_or_path": "./checkpoints/vicuna-7b-v1.5",
        "architectures": ["LlavaLlamaForCausalLM"],
        "model_type": "llava_llama",
        **{key: value for key, value in text_config(vocab_size).to_dict().items()
           if key in ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers",
                      "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "hidden_act",
                      "bos_token_id", "eos_token_id", "tie_word_embeddings", "attention_bias", "pretraining_tp")},
        "vocab_size": vocab_size,
        "pad_token_id": 0,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "torch_dtype": dtype,
        "use_cache": True,
        "mm_vision_tower": "openai/clip-vit-large-patch14-336",
        "mm_hidden_size": VISION_WIDTH,
        "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "mm_patch_merge_type": "flat",
        "image_aspect_ratio": "pad",
        "image_grid_pinpoints": None,
        "tokenizer_padding_side": "right",
        "tokenizer_model_max_length": 2048,
        "tune_mm_mlp_adapter": False,
        "freeze_mm_mlp_adapter": False,
        "use_mm_proj": True,
    }
    if variant == "m3":
        config["matryoshka_vis_token_scale"] = [1, 9, 36, 144, 576]
    if variant == "mqt":
        config.update(mm_projector_type="linear", query_abstractor_type="matry_query", num_visual_tokens="second_stage")
    return config


def write_original_checkpoint(folder: Path, variant: str = "llava", with_tower: bool = True, fmt: str = "safetensors",
                              num_shards: int = 2, dtype: torch.dtype = torch.float16, seed: int = 0) -> Path:
    """An original-format (llava_llama) checkpoint: plain LLaVA-1.5, the M3 release or the MQT release."""
    tokenizer = vicuna_tokenizer()
    vocab_size = len(tokenizer)
    state = {}
    if variant == "llava":  # checkpoints saved with transformers 4.31 still carried rotary buffers
        state["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.rand(TEXT_WIDTH // 8)
    state.update(llama_state(vocab_size, seed))
    if variant == "mqt":
        state.update(query_abstractor_state(seed + 2))
    else:
        state.update(mlp_projector_state("model.mm_projector.", seed + 2))
    if with_tower:
        tower = clip_vision_state(seed + 3)
        state.update({f"model.vision_tower.vision_tower.{name}": value for name, value in tower.items()})
    state = {key: value.to(dtype) if value.is_floating_point() and not key.endswith("pos_embed") else value
             for key, value in state.items()}
    write_shards(folder, state, num_shards, fmt)
    write_json(folder / "config.json", original_config(variant, vocab_size, str(dtype).removeprefix("torch.")))
    tokenizer.save_pretrained(folder)
    return folder


def write_llava_hf_checkpoint(folder: Path, layout: str = "current", num_shards: int = 2,
                              dtype: torch.dtype = torch.float32, seed: int = 5) -> Path:
    """A transformers LLaVA-1.5 checkpoint as uploaded to the Hub by llava-hf (current or legacy key layout)."""
    tokenizer = tiny_tokenizer()
    vocab_size = 320  # len(tokenizer) padded to a multiple of 64, as llava-hf did
    language = llama_state(vocab_size, seed)
    tower = clip_vision_state(seed + 3)
    projector = mlp_projector_state("", seed + 2)
    projector = {name.replace("0.", "linear_1.").replace("2.", "linear_2."): value for name, value in projector.items()}
    if layout == "current":
        prefixes = ("model.vision_tower.", "model.multi_modal_projector.", "model.language_model.", "lm_head.")
    else:
        prefixes = ("vision_tower.", "multi_modal_projector.", "language_model.model.", "language_model.lm_head.")
    state = {prefixes[0] + name: value for name, value in tower.items() if not name.endswith("position_ids")}
    state.update({prefixes[1] + name: value for name, value in projector.items()})
    state.update({prefixes[2] + name.removeprefix("model."): value for name, value in language.items()
                  if name.startswith("model.")})
    state[prefixes[3] + "weight"] = language["lm_head.weight"]
    state = {key: value.to(dtype) for key, value in state.items()}
    write_shards(folder, state, num_shards)
    image_token_index = tokenizer.convert_tokens_to_ids("<image>")
    config = {
        "architectures": ["LlavaForConditionalGeneration"],
        "model_type": "llava",
        "image_token_index": image_token_index,
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
    processor_config = {"crop_size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE}, "do_center_crop": True,
                        "do_normalize": True, "do_resize": True, "image_processor_type": "CLIPImageProcessor",
                        "image_mean": CLIP_MEAN, "image_std": CLIP_STD, "resample": 3,
                        "rescale_factor": 1 / 255, "size": {"shortest_edge": IMAGE_SIZE}}
    write_json(folder / "preprocessor_config.json", processor_config)
    tokenizer.save_pretrained(folder)
    return folder
