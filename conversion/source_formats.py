"""Which of the four supported checkpoint formats a source is, detected from its config and tensor names.

- `llava-hf`: transformers' LlavaForConditionalGeneration (current or legacy key layout).
- `llava`: the original haotian-liu LLaVA-1.5 (`llava_llama`): `model.mm_projector.*`, `model.layers.*`.
- `m3`: the released M3 checkpoints: original format plus `matryoshka_vis_token_scale`.
- `mqt`: the released MQT checkpoint: original format with `model.query_abstractor.*` instead of `mm_projector`.
"""

from .errors import ConversionError

SOURCE_FORMATS = ("llava-hf", "llava", "m3", "mqt")
ORIGINAL_FORMATS = ("llava", "m3", "mqt")
TARGETS = ("m3", "mqt")
NEXT_MODEL_TYPES = ("llava_next", "llava_next_video", "llava_onevision")
# Targets each source can become: a released M3 keeps its trained MLP projector, a released MQT its query transformer.
COMPATIBLE_TARGETS = {"llava-hf": TARGETS, "llava": TARGETS, "m3": ("m3",), "mqt": ("mqt",)}


def is_llava_next(config: dict, keys: list[str]) -> bool:
    return (
        config.get("model_type") in NEXT_MODEL_TYPES
        or str(config.get("image_aspect_ratio", "")).startswith("anyres")
        or "unpad" in str(config.get("mm_patch_merge_type", ""))
        or any(key.endswith("image_newline") for key in keys)
    )


def detect_source_format(config: dict, keys: list[str]) -> str:
    model_type = config.get("model_type")
    if model_type in ("m3_llava", "mqt_llava"):
        raise ConversionError(f"The source is already a matryoshka-llava checkpoint (model_type {model_type!r}).")
    if is_llava_next(config, keys):
        raise ConversionError(
            "The source is a LLaVA-NeXT (anyres) checkpoint; this converter handles LLaVA-1.5-style sources. "
            "LLaVA-NeXT conversion is part of the M3-LLaVA-NeXT support."
        )
    if model_type == "llava" and ("text_config" in config or "vision_config" in config):
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
    # Within the original family the caller may choose (e.g. treat a released M3 as plain LLaVA); across families
    # the key layouts differ completely, so a mismatch is a mistake.
    if (requested == "llava-hf") != (detected == "llava-hf"):
        raise ConversionError(f"--from {requested} was given, but the source looks like a {detected} checkpoint.")
    if requested == "mqt" and detected != "mqt":
        raise ConversionError("--from mqt was given, but the source has no model.query_abstractor.* weights.")
    return requested


def check_target(source_format: str, target: str) -> None:
    if target not in TARGETS:
        raise ConversionError(f"Unknown target {target!r}: use one of {', '.join(TARGETS)}.")
    if target not in COMPATIBLE_TARGETS[source_format]:
        raise ConversionError(
            f"A {source_format} checkpoint converts to --to {COMPATIBLE_TARGETS[source_format][0]} only: its trained "
            f"projector has no counterpart in a {target.upper()}-LLaVA model."
        )
