"""Cost model: FLOPs, KV-cache bytes and activation memory of the vision side and the LLM prefill, per k.

Everything is counted by running the model's own modules on the `meta` device (shapes only, no weights, so the real
7B shapes cost a second of CPU): FLOPs with `torch.utils.flop_counter.FlopCounterMode`, the KV cache as the bytes of
the tensors in the returned cache, activation memory as the peak bytes of live tensors created during the forward
(`PeakMemoryTracker`). On `meta`, attention runs PyTorch's math kernel: the full T x T score matrix is materialised
and counted (FLOPs included, as a non-causal-aware kernel computes them); fused GPU kernels need less memory.

Conventions: a multiply-add is 2 FLOPs; the prefill computes logits for the last position only (as `generate` does);
`num_visual_tokens` is per image (per crop for LLaVA-NeXT).
"""

import weakref
from functools import partial

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode
from transformers import LlavaConfig

from matryoshka_llava.formatting import bytes_unit, flops_unit, human_bytes

from modeling_matryoshka_llava import (
    M3LlavaConfig,
    M3LlavaForConditionalGeneration,
    MQTLlavaConfig,
    MQTLlavaForConditionalGeneration,
)
from modeling_matryoshka_llava.anyres_layout import AnyresImageLayout, select_crop_grid
from modeling_matryoshka_llava.transformers_imports import CACHE_NAME
from modeling_matryoshka_llava.visual_token_counts import comparison_counts


class PeakMemoryTracker(TorchDispatchMode):
    """Peak bytes of tensor storage alive at once among the storages created while the mode is active.

    Every op result is seen: new storages are counted once, results aliasing a storage (views, in-place ops) only
    extend its lifetime. A storage is released when the last tensor object using it is garbage collected (CPython
    frees at the last reference, so the count follows the real lifetimes). Storages created before the mode
    (weights, inputs) are not counted. `peak_bytes(excluding=...)` replays the timeline without some storages that
    are still alive (e.g. the KV cache, reported separately).
    """

    def __init__(self):
        super().__init__()
        self._storages: dict[int, list[int]] = {}  # storage key -> [allocation index, live tensor objects]
        self._sizes: list[int] = []  # per allocation
        self._timeline: list[int] = []  # allocation index i when allocated, ~i when released

    def _drop(self, key: int) -> None:
        entry = self._storages[key]
        entry[1] -= 1
        if entry[1] == 0:
            self._timeline.append(~entry[0])
            del self._storages[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        results = out if isinstance(out, (tuple, list)) else (out,)
        for tensor in results:
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key = storage._cdata
            if key in self._storages:
                self._storages[key][1] += 1
            elif any(isinstance(arg, torch.Tensor) and arg.untyped_storage()._cdata == key for arg in args):
                continue  # aliases an input created before the mode
            else:
                self._storages[key] = [len(self._sizes), 1]
                self._timeline.append(len(self._sizes))
                self._sizes.append(storage.nbytes())
            weakref.finalize(tensor, self._drop, key)
        return out

    def peak_bytes(self, excluding=()) -> int:
        excluded_keys = {tensor.untyped_storage()._cdata for tensor in excluding}
        excluded = {index for key, (index, _) in self._storages.items() if key in excluded_keys}
        live = peak = 0
        for event in self._timeline:
            index = event if event >= 0 else ~event
            if index in excluded:
                continue
            live += self._sizes[index] if event >= 0 else -self._sizes[index]
            peak = max(peak, live)
        return peak


def _meta_model(config, dtype: torch.dtype):
    """(model, family) on the meta device: LLaVA-1.5 / NeXT as M3 (same modules), MQT as MQT."""
    if isinstance(config, MQTLlavaConfig) or getattr(config, "model_type", None) == "mqt_llava":
        model_class, family = MQTLlavaForConditionalGeneration, "mqt"
    else:
        family = "llava_next" if getattr(config, "model_type", None) == "llava_next" else "m3"
        if not isinstance(config, M3LlavaConfig):
            if not isinstance(config, LlavaConfig) and family != "llava_next":
                raise ValueError(
                    f"The cost model handles LLaVA-1.5 / LLaVA-NeXT / M3 / MQT configs, not model_type "
                    f"{getattr(config, 'model_type', type(config).__name__)!r}."
                )
            config = M3LlavaConfig(
                vision_config=config.vision_config.to_dict(), text_config=config.text_config.to_dict(),
                image_token_index=config.image_token_id, vision_feature_layer=config.vision_feature_layer,
                vision_feature_select_strategy=config.vision_feature_select_strategy,
                projector_hidden_act=config.projector_hidden_act,
                multimodal_projector_bias=getattr(config, "multimodal_projector_bias", True),
            )
        model_class = M3LlavaForConditionalGeneration
    with torch.device("meta"):
        model = model_class(config).to(dtype).eval()
    return model, family


def llava_next_visual_tokens(config, num_visual_tokens: int, image_size: tuple[int, int]) -> tuple[int, int]:
    """(LLM tokens, crops) of one LLaVA-NeXT image at k tokens per crop, counted by the model's own layout
    (`anyres_layout`). A square image on a 2x2 grid gives 7 / 51 / 2928 tokens at k = 1 / 9 / 576."""
    crop = config.vision_config.image_size
    grid = select_crop_grid(tuple(image_size), config.image_grid_pinpoints, crop)
    layout = AnyresImageLayout(tuple(image_size), grid)
    return layout.num_tokens(num_visual_tokens), layout.num_crops


def _counted(function):
    """(result, FLOPs, memory tracker) of function() run under the FLOP counter and a `PeakMemoryTracker`."""
    tracker = PeakMemoryTracker()
    with FlopCounterMode(display=False) as counter, tracker, torch.inference_mode():
        result = function()
    return result, counter.get_total_flops(), tracker


def _vision_side(model, pixel_values: torch.Tensor, count: int):
    return model.model.get_image_features(pixel_values, num_visual_tokens=count).pooler_output


def _prefill(model, sequence: int, dtype: torch.dtype):
    """The LLM over `sequence` input embeddings with a KV cache, logits for the last position (as `generate`)."""
    embeds = torch.empty(1, sequence, model.config.text_config.hidden_size, device="meta", dtype=dtype)
    output = model.model.language_model(inputs_embeds=embeds, use_cache=True)
    return output.get(CACHE_NAME), model.lm_head(output.last_hidden_state[:, -1:])


def prefill_cost(
    config,
    num_visual_tokens: list[int] | None = None,
    num_text_tokens: int = 30,
    *,
    dtype: torch.dtype = torch.float16,
    image_size: tuple[int, int] | None = None,
    config_name: str | None = None,
) -> dict:
    """The cost JSON for one image and `num_text_tokens` text tokens at each k (default: the model's scales).

    Rows hold `llm_prefill_flops`, `vision_flops` (tower + projector + reduction), `kv_cache_bytes` and
    `activation_bytes` (peak working memory on top of the weights during the prefill, vision side included),
    plus the split of that peak, the LLM sequence length and the FLOPs ratio to the largest k.
    """
    if num_text_tokens < 1:
        raise ValueError(f"num_text_tokens must be >= 1, got {num_text_tokens}.")
    model, family = _meta_model(config, dtype)
    counts = sorted(set(num_visual_tokens)) if num_visual_tokens else comparison_counts(config)
    model.model.resolve_num_visual_tokens(counts, len(counts))  # the model's own check of every k
    vision = config.vision_config
    if family == "llava_next":
        image_size = tuple(image_size) if image_size else (2 * vision.image_size, 2 * vision.image_size)
    elif image_size is not None:
        raise ValueError("image_size only applies to LLaVA-NeXT (anyres) configs; LLaVA-1.5 images are one crop.")
    hidden_size = config.text_config.hidden_size
    element_size = torch.empty(0, dtype=dtype).element_size()

    # A served model's steady state: one uncounted pass first, so that work a model does once and reuses (MQT's
    # position-only attention keys) is not charged to whichever count happens to run first.
    warm_up = torch.empty(1, 3, vision.image_size, vision.image_size, device="meta", dtype=dtype)
    if family != "llava_next":
        _counted(partial(_vision_side, model, warm_up, counts[0]))
    rows = []
    for count in counts:
        llm_visual, crops = llava_next_visual_tokens(config, count, image_size) if family == "llava_next" else (count, 1)
        sequence = num_text_tokens + llm_visual
        pixel_values = torch.empty(crops, 3, vision.image_size, vision.image_size, device="meta", dtype=dtype)

        _, vision_flops, vision_memory = _counted(partial(_vision_side, model, pixel_values, count))
        (cache, _), llm_flops, llm_memory = _counted(partial(_prefill, model, sequence, dtype))
        cache_tensors = [tensor for layer in cache.layers for tensor in (layer.keys, layer.values)]
        kv_bytes = sum(tensor.numel() * tensor.element_size() for tensor in cache_tensors)
        vision_activation = vision_memory.peak_bytes()
        llm_activation = llm_memory.peak_bytes(excluding=cache_tensors)
        rows.append({
            "num_visual_tokens": count,
            "llm_prefill_flops": int(llm_flops),
            "vision_flops": int(vision_flops),
            "kv_cache_bytes": int(kv_bytes),
            # The image features stay alive while the LLM runs; the two sides' working memory does not overlap otherwise.
            "activation_bytes": int(max(vision_activation, llm_activation + llm_visual * hidden_size * element_size)),
            "vision_activation_bytes": int(vision_activation),
            "llm_activation_bytes": int(llm_activation),
            "llm_visual_tokens": llm_visual,
            "llm_sequence_length": sequence,
            "num_crops": crops,
            "total_flops": int(llm_flops + vision_flops),
        })
    largest = rows[-1]["total_flops"]
    for row in rows:
        row["flops_ratio_vs_largest_k"] = largest / row["total_flops"]
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return {
        "config": config_name or getattr(config, "_name_or_path", None) or getattr(config, "model_type", "config"),
        "model_type": family,
        "num_text_tokens": num_text_tokens,
        "dtype": str(dtype).replace("torch.", ""),
        "image_size": list(image_size) if image_size else None,
        "weight_bytes": int(weight_bytes),
        "rows": rows,
    }


def cost_to_markdown(cost: dict) -> str:
    # One unit for the whole table, chosen so the largest entry has a digit before the point (a tiny model's
    # TFLOPs would all read 0.000).
    unit, scale = flops_unit(row["total_flops"] for row in cost["rows"])
    memory_unit, memory_scale = bytes_unit(
        value for row in cost["rows"] for value in (row["kv_cache_bytes"], row["activation_bytes"])
    )
    lines = [
        (f"Prefill cost of `{cost['config']}` ({cost['dtype']}), one image + {cost['num_text_tokens']} text tokens"
         + (f", image {cost['image_size'][0]}x{cost['image_size'][1]}" if cost.get("image_size") else "")
         + f"; weights {human_bytes(cost['weight_bytes'])}."),
        "",
        (f"| visual tokens | LLM tokens | LLM prefill {unit} | vision {unit} | total {unit} | FLOPs: largest k / k | "
         f"KV cache {memory_unit} | activations {memory_unit} |"),
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in cost["rows"]:
        lines.append(
            f"| {row['num_visual_tokens']} | {row['llm_sequence_length']} | {row['llm_prefill_flops'] / scale:.3f} | "
            f"{row['vision_flops'] / scale:.3f} | {row['total_flops'] / scale:.3f} | "
            f"{row['flops_ratio_vs_largest_k']:.2f}x | "
            f"{row['kv_cache_bytes'] / memory_scale:.1f} | {row['activation_bytes'] / memory_scale:.1f} |"
        )
    return "\n".join(lines) + "\n"
