"""Which of the supported checkpoint formats a source is, detected from its config and tensor names.

LLaVA-1.5 sources:
- `llava-hf`: transformers' LlavaForConditionalGeneration (current or legacy key layout).
- `llava`: the original haotian-liu LLaVA-1.5 (`llava_llama`): `model.mm_projector.*`, `model.layers.*`.
- `m3`: the released M3 checkpoints: original format plus `matryoshka_vis_token_scale`.
- `mqt`: the released MQT checkpoint: original format with `model.query_abstractor.*` instead of `mm_projector`.

LLaVA-NeXT (anyres) sources, which become M3-LLaVA-NeXT:
- `llava-hf-next`: transformers' LlavaNextForConditionalGeneration (current or legacy key layout).
- `llava-next`: the original LLaVA-NeXT (`llava_llama` with `image_aspect_ratio: anyres`, `model.image_newline`).
- `m3-next`: the released M3 LLaVA-NeXT (`mucai/llava-next-vicuna-7b-m3`): `llava-next` plus
  `matryoshka_vis_token_scale`.
"""

from .errors import ConversionError

LLAVA_1_5_FORMATS = ("llava-hf", "llava", "m3", "mqt")
NEXT_FORMATS = ("llava-hf-next", "llava-next", "m3-next")
SOURCE_FORMATS = LLAVA_1_5_FORMATS + NEXT_FORMATS
LLAVA_HF_FORMATS = ("llava-hf", "llava-hf-next")
ORIGINAL_FORMATS = ("llava", "m3", "mqt", "llava-next", "m3-next")
MATRYOSHKA_RELEASES = ("m3", "m3-next")  # original format with `matryoshka_vis_token_scale` and a fine-tuned tower
TARGETS = ("m3", "mqt")
# What `--dtype` may cast floating tensors to (names of torch dtypes).
DTYPE_NAMES = ("bfloat16", "float16", "float32")
# Other transformers LLaVA-NeXT variants: video and OneVision checkpoints are laid out differently.
UNSUPPORTED_NEXT_MODEL_TYPES = ("llava_next_video", "llava_onevision")
# Targets each source can become: a released M3 keeps its trained MLP projector, a released MQT its query transformer;
# MQT exists for LLaVA-1.5 only.
COMPATIBLE_TARGETS = {
    "llava-hf": TARGETS, "llava": TARGETS, "m3": ("m3",), "mqt": ("mqt",),
    "llava-hf-next": ("m3",), "llava-next": ("m3",), "m3-next": ("m3",),
}
CONVERTED_MODEL_TYPES = ("m3_llava", "m3_llava_next", "mqt_llava")


def is_llava_next(config: dict, keys: list[str]) -> bool:
    """Anything that marks an anyres model: its model type, its config fields, or an `image_newline` tensor."""
    return (
        config.get("model_type") == "llava_next"
        or str(config.get("image_aspect_ratio", "")).startswith("anyres")
        or "unpad" in str(config.get("mm_patch_merge_type", ""))
        or any(key.endswith("image_newline") for key in keys)
    )


def detect_source_format(config: dict, keys: list[str]) -> str:
    model_type = config.get("model_type")
    if model_type in CONVERTED_MODEL_TYPES:
        raise ConversionError(f"The source is already a matryoshka-llava checkpoint (model_type {model_type!r}).")
    if model_type in UNSUPPORTED_NEXT_MODEL_TYPES:
        raise ConversionError(
            f"The source is a {model_type} checkpoint; LLaVA-NeXT image models (llava_next, or the original "
            "anyres format) are supported, its video and OneVision variants are not."
        )
    has_hf_configs = "text_config" in config or "vision_config" in config
    if is_llava_next(config, keys):
        if model_type == "llava_next" and has_hf_configs:
            return "llava-hf-next"
        if any(key.startswith("model.query_abstractor.") for key in keys):
            raise ConversionError("The source has an MQT query abstractor and LLaVA-NeXT settings: MQT is LLaVA-1.5 only.")
        return "m3-next" if "matryoshka_vis_token_scale" in config else "llava-next"
    if model_type == "llava" and has_hf_configs:
        return "llava-hf"
    if any(key.startswith("model.query_abstractor.") for key in keys):
        return "mqt"
    if "matryoshka_vis_token_scale" in config:
        return "m3"
    if "mm_vision_tower" in config or any(key.startswith("model.mm_projector.") for key in keys):
        return "llava"
    raise ConversionError(
        f"Cannot tell the format of the source (config model_type={model_type!r}, no LLaVA projector weights). "
        f"Supported: {', '.join(SOURCE_FORMATS)}; pass --from to name one."
    )


def resolve_source_format(requested: str, config: dict, keys: list[str]) -> str:
    """`requested` ("auto" or a format) checked against what the files say."""
    if requested != "auto" and requested not in SOURCE_FORMATS:
        raise ConversionError(f"Unknown source format {requested!r}: use auto or one of {', '.join(SOURCE_FORMATS)}.")
    detected = detect_source_format(config, keys)
    if requested == "auto":
        return detected
    # Within the original family of one architecture the caller may choose (e.g. treat a released M3 as plain
    # LLaVA); across families or architectures the key layouts and computations differ, so a mismatch is a mistake.
    if (requested in LLAVA_HF_FORMATS) != (detected in LLAVA_HF_FORMATS) or (
        (requested in NEXT_FORMATS) != (detected in NEXT_FORMATS)
    ):
        raise ConversionError(f"--from {requested} was given, but the source looks like a {detected} checkpoint.")
    if requested == "mqt" and detected != "mqt":
        raise ConversionError("--from mqt was given, but the source has no model.query_abstractor.* weights.")
    return requested


def check_target(source_format: str, target: str) -> None:
    if target not in TARGETS:
        raise ConversionError(f"Unknown target {target!r}: use one of {', '.join(TARGETS)}.")
    if target in COMPATIBLE_TARGETS[source_format]:
        return
    if source_format in NEXT_FORMATS:
        raise ConversionError(
            f"A {source_format} checkpoint is LLaVA-NeXT (anyres), and MQT-LLaVA is LLaVA-1.5 only: convert it with "
            "--to m3 (M3-LLaVA-NeXT)."
        )
    raise ConversionError(
        f"A {source_format} checkpoint converts to --to {COMPATIBLE_TARGETS[source_format][0]} only: its trained "
        f"projector has no counterpart in a {target.upper()}-LLaVA model."
    )


def target_model_name(source_format: str, target: str) -> str:
    """The converted model's name for messages: M3-LLaVA, M3-LLaVA-NeXT or MQT-LLaVA."""
    return f"{target.upper()}-LLaVA" + ("-NeXT" if source_format in NEXT_FORMATS else "")
