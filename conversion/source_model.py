"""Everything a conversion needs to know about its source, gathered from the files before any tensor is read:
format, configs of the language model and vision tower, image preprocessing, and the tensors themselves.

Original-format sources carry no vision config or image-processor config: both come from the CLIP checkpoint
(`--clip`, else the `mm_vision_tower` the checkpoint names). Their CLIP weights come from the checkpoint when it
holds a tower (the M3 releases and LLaVA-NeXT fine-tuned it), else from that CLIP checkpoint.

LLaVA-NeXT sources also give the anyres resolutions (`image_grid_pinpoints`), always kept here as
(height, width) as transformers and this package use them: the original format lists them as (width, height)
(its `select_best_resolution` reads `image.size`), so they are swapped when read.
"""

import ast
from dataclasses import dataclass, field
from pathlib import Path

from transformers import CLIPConfig, CLIPVisionConfig, ImageProcessingMixin, LlamaConfig, LlavaConfig, LlavaNextConfig

from modeling_matryoshka_llava.anyres_layout import check_grid_pinpoints

from .checkpoint_weights import CheckpointWeights
from .errors import ConversionError
from .source_files import read_json, resolve_checkpoint
from .source_formats import MATRYOSHKA_RELEASES, NEXT_FORMATS, ORIGINAL_FORMATS

ORIGINAL_TOWER_PREFIX = "model.vision_tower.vision_tower."
SELECT_FEATURE_STRATEGIES = {"patch": "default", "cls_patch": "full"}
# The processor-level chat template files of a llava-hf checkpoint, in the order transformers reads them.
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json", "processor_config.json")
# Config keys of the original format that are LLaVA's, not the language model's.
LLAMA_CONFIG_KEYS = set(LlamaConfig().to_dict()) | {"rope_theta", "rope_scaling", "torch_dtype"}
LLAMA_CONFIG_KEYS -= {"_name_or_path", "architectures", "model_type", "transformers_version"}


@dataclass
class ClipSource:
    name: str
    folder: Path
    config: dict
    preprocessor: dict

    def weights(self) -> CheckpointWeights:
        return CheckpointWeights(self.folder)


@dataclass
class SourceModel:
    name: str  # as the user gave it: a Hub id or a path
    folder: Path
    format: str
    config: dict
    weights: CheckpointWeights
    text_config: LlamaConfig
    vision_config: CLIPVisionConfig
    image_processor_kwargs: dict
    vision_feature_layer: int | list[int] = -2
    vision_feature_select_strategy: str = "default"
    projector_hidden_act: str = "gelu"
    image_token_index: int | None = None  # llava-hf sources already have one
    matryoshka_scales: list[int] | None = None
    image_grid_pinpoints: list[list[int]] | None = None  # LLaVA-NeXT: (height, width) resolutions
    chat_template: str | None = None  # None: the vicuna_v1 template of LLaVA-1.5 and both Matryoshka releases
    clip: ClipSource | None = None
    clip_weights: CheckpointWeights | None = None  # when the vision tower is not in the checkpoint
    card_metadata: dict = field(default_factory=dict)

    @property
    def is_llava_next(self) -> bool:
        return self.format in NEXT_FORMATS

    @property
    def embedding_key(self) -> str:
        for key in ("model.language_model.embed_tokens.weight", "language_model.model.embed_tokens.weight",
                    "model.embed_tokens.weight"):
            if key in self.weights.tensors:
                return key
        raise ConversionError(f"The source {self.name} has no input embedding (embed_tokens) tensor.")

    @property
    def vocab_rows(self) -> int:
        return self.weights.tensors[self.embedding_key].shape[0]

    @property
    def dtype_name(self) -> str | None:
        value = self.config.get("dtype") or self.config.get("torch_dtype")
        return value if isinstance(value, str) and value != "auto" else None


def describe_source(name: str, folder: Path, source_format: str, config: dict, weights: CheckpointWeights,
                    clip: str | None = None) -> SourceModel:
    if source_format in ("llava-hf", "llava-hf-next"):
        if clip is not None:
            raise ConversionError("--clip applies to original-format sources; a llava-hf checkpoint holds its tower.")
        if source_format == "llava-hf-next":
            return describe_llava_hf_next(name, folder, config, weights)
        return describe_llava_hf(name, folder, config, weights)
    if source_format in ORIGINAL_FORMATS:
        return describe_original(name, folder, source_format, config, weights, clip)
    raise ConversionError(f"Unknown source format {source_format!r}.")


def describe_llava_hf(name: str, folder: Path, config: dict, weights: CheckpointWeights) -> SourceModel:
    llava = LlavaConfig.from_dict(config)
    # LLaVA-1.5 was trained on images padded to a square; llava-hf's CLIPImageProcessor configs do not record it.
    processor = image_processor_kwargs(read_image_processor_config(folder, f"The llava-hf source {name}"), default_pad=True)
    return SourceModel(
        name=name,
        folder=folder,
        format="llava-hf",
        config=config,
        weights=weights,
        text_config=llava.text_config,
        vision_config=llava.vision_config,
        image_processor_kwargs=processor,
        vision_feature_layer=llava.vision_feature_layer,
        vision_feature_select_strategy=llava.vision_feature_select_strategy,
        projector_hidden_act=llava.projector_hidden_act,
        image_token_index=llava.image_token_id,
        card_metadata=read_card_metadata(folder),
    )


def describe_llava_hf_next(name: str, folder: Path, config: dict, weights: CheckpointWeights) -> SourceModel:
    llava_next = LlavaNextConfig.from_dict(config)
    if llava_next.vision_feature_select_strategy != "default":
        raise ConversionError(
            f"The llava-hf LLaVA-NeXT source {name} keeps the CLS token (vision_feature_select_strategy "
            f"{llava_next.vision_feature_select_strategy!r}); LLaVA-NeXT lays out and M3 pools a square patch grid, "
            "which needs 'default'."
        )
    preprocessor = read_image_processor_config(folder, f"The llava-hf source {name}")
    crop_size = llava_next.vision_config.image_size
    pinpoints = checked_pinpoints(llava_next.image_grid_pinpoints, crop_size, f"config.json of {name}")
    if preprocessor.get("image_grid_pinpoints") is not None:
        processor_pinpoints = checked_pinpoints(preprocessor["image_grid_pinpoints"], crop_size,
                                                f"the image processor config of {name}")
        if processor_pinpoints != pinpoints:
            raise ConversionError(
                f"The source's config.json and image processor config disagree on image_grid_pinpoints "
                f"({pinpoints} vs {processor_pinpoints}): its model and processor would count image tokens "
                "differently. Fix the source first."
            )
    return SourceModel(
        name=name,
        folder=folder,
        format="llava-hf-next",
        config=config,
        weights=weights,
        text_config=llava_next.text_config,
        vision_config=llava_next.vision_config,
        image_processor_kwargs=next_image_processor_kwargs(preprocessor, pinpoints),
        vision_feature_layer=llava_next.vision_feature_layer,
        vision_feature_select_strategy=llava_next.vision_feature_select_strategy,
        projector_hidden_act=llava_next.projector_hidden_act,
        image_token_index=llava_next.image_token_id,
        image_grid_pinpoints=pinpoints,
        # llava-hf LLaVA-NeXT language models differ (Vicuna, Mistral, Yi, ...): keep the prompt format it ships.
        chat_template=read_processor_chat_template(folder),
        card_metadata=read_card_metadata(folder),
    )


def describe_original(name: str, folder: Path, source_format: str, config: dict, weights: CheckpointWeights,
                      clip: str | None) -> SourceModel:
    check_original_options(config, source_format)
    clip_source = load_clip_source(clip, config)
    has_tower = weights.has_prefix(ORIGINAL_TOWER_PREFIX)
    if source_format in MATRYOSHKA_RELEASES and not has_tower:
        raise ConversionError(
            f"The M3 source {name} holds no vision tower ({ORIGINAL_TOWER_PREFIX}*). The M3 release fine-tuned its "
            "CLIP tower, so it is never taken from stock CLIP: use the complete checkpoint."
        )
    if source_format in NEXT_FORMATS and not has_tower:
        raise ConversionError(
            f"The LLaVA-NeXT source {name} holds no vision tower ({ORIGINAL_TOWER_PREFIX}*). LLaVA-NeXT fine-tunes "
            "its CLIP tower, so it is never taken from stock CLIP: use the complete checkpoint."
        )
    select_feature = config.get("mm_vision_select_feature", "patch")
    if select_feature not in SELECT_FEATURE_STRATEGIES:
        raise ConversionError(f"Unsupported mm_vision_select_feature {select_feature!r} (expected patch or cls_patch).")
    vision_config = clip_vision_config(clip_source)
    pinpoints = None
    if source_format in NEXT_FORMATS:
        if select_feature != "patch":
            raise ConversionError(
                f"The LLaVA-NeXT source {name} keeps the CLS token (mm_vision_select_feature {select_feature!r}); "
                "LLaVA-NeXT lays out and M3 pools a square patch grid, which needs 'patch'."
            )
        pinpoints = original_grid_pinpoints(config, vision_config.image_size, name)
        processor_kwargs = next_image_processor_kwargs(clip_source.preprocessor, pinpoints)
    else:
        aspect_ratio = config.get("image_aspect_ratio", "square")
        processor_kwargs = image_processor_kwargs(clip_source.preprocessor, default_pad=aspect_ratio == "pad")
    return SourceModel(
        name=name,
        folder=folder,
        format=source_format,
        config=config,
        weights=weights,
        text_config=original_text_config(config),
        vision_config=vision_config,
        image_processor_kwargs=processor_kwargs,
        vision_feature_layer=config.get("mm_vision_select_layer", -2),
        vision_feature_select_strategy=SELECT_FEATURE_STRATEGIES[select_feature],
        matryoshka_scales=matryoshka_scales(config) if source_format in MATRYOSHKA_RELEASES else None,
        image_grid_pinpoints=pinpoints,
        clip=clip_source,
        clip_weights=None if has_tower else clip_source.weights(),
        card_metadata=read_card_metadata(folder),
    )


def checked_pinpoints(pinpoints, crop_size: int, where: str) -> list[list[int]]:
    try:
        return check_grid_pinpoints(pinpoints, crop_size)
    except ValueError as error:
        raise ConversionError(f"{where}: {error}") from error


def original_grid_pinpoints(config: dict, crop_size: int, name: str) -> list[list[int]]:
    """The original config's `image_grid_pinpoints`, listed as (width, height) pairs (a list, or its Python
    literal as a string, as LLaVA's `ast.literal_eval` reads it), as (height, width) pairs."""
    value = config.get("image_grid_pinpoints")
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise ConversionError(
                f"The LLaVA-NeXT source {name} gives image_grid_pinpoints as {value!r}, which is not a list of "
                "(width, height) pairs (the range form '(1x1),...,(NxN)' of later LLaVA versions is not supported)."
            ) from None
    if not isinstance(value, (list, tuple)) or not value or not all(
        isinstance(pair, (list, tuple)) and len(pair) == 2 for pair in value
    ):
        raise ConversionError(
            f"The LLaVA-NeXT source {name} needs image_grid_pinpoints, a list of (width, height) pairs; got {value!r}."
        )
    swapped = [[pair[1], pair[0]] for pair in value]
    return checked_pinpoints(swapped, crop_size, f"config.json of {name} (image_grid_pinpoints as (height, width))")


def original_text_config(config: dict) -> LlamaConfig:
    """The Llama part of a `llava_llama` config (its top level mixes Llama and LLaVA fields)."""
    fields = {key: value for key, value in config.items() if key in LLAMA_CONFIG_KEYS}
    if fields.get("rope_scaling") is None:
        fields.pop("rope_scaling", None)  # an explicit null is the default; passing it is deprecated
    return LlamaConfig(**fields)


def check_original_options(config: dict, source_format: str) -> None:
    if config.get("mm_use_im_start_end") or config.get("mm_use_im_patch_token"):
        raise ConversionError(
            "The source wraps images in start/end or patch tokens (mm_use_im_start_end / mm_use_im_patch_token), "
            "which LLaVA-1.5 does not use and the converted models do not support."
        )
    projector_type = config.get("mm_projector_type", "mlp2x_gelu")
    # The MQT release records LLaVA's default "linear" here but builds no MLP projector at all.
    if source_format != "mqt" and projector_type != "mlp2x_gelu":
        raise ConversionError(f"Unsupported mm_projector_type {projector_type!r}: LLaVA-1.5 uses mlp2x_gelu.")
    aspect_ratio = config.get("image_aspect_ratio", "square")
    if source_format not in NEXT_FORMATS:
        if aspect_ratio not in ("pad", "square"):
            raise ConversionError(f"Unsupported image_aspect_ratio {aspect_ratio!r} (expected pad or square).")
        return
    merge_type = config.get("mm_patch_merge_type", "flat")
    if aspect_ratio != "anyres" or merge_type != "spatial_unpad":
        raise ConversionError(
            f"Unsupported LLaVA-NeXT settings image_aspect_ratio={aspect_ratio!r}, mm_patch_merge_type={merge_type!r}: "
            "M3-LLaVA-NeXT reproduces LLaVA-NeXT's anyres crops with spatial_unpad (un-padding and one newline per "
            "row), i.e. image_aspect_ratio 'anyres' and mm_patch_merge_type 'spatial_unpad'."
        )


def matryoshka_scales(config: dict) -> list[int]:
    scales = config["matryoshka_vis_token_scale"]
    if not isinstance(scales, list) or not scales or not all(isinstance(s, int) and s > 0 for s in scales):
        raise ConversionError(f"matryoshka_vis_token_scale must be a list of positive integers, got {scales!r}.")
    return sorted(scales)


def load_clip_source(clip: str | None, config: dict) -> ClipSource:
    name = clip or config.get("mm_vision_tower")
    if not name:
        raise ConversionError("The source names no mm_vision_tower: pass --clip with the CLIP checkpoint it used.")
    try:
        folder = resolve_checkpoint(name, "CLIP checkpoint")
    except ConversionError as error:
        if clip is not None:
            raise
        raise ConversionError(
            f"{error} (The source's config names it as mm_vision_tower; its vision config and image preprocessing "
            "are needed. Pass --clip PATH to use a local copy.)"
        ) from error
    preprocessor = read_image_processor_config(folder, f"The CLIP checkpoint {name}")
    return ClipSource(name, folder, read_json(folder / "config.json"), preprocessor)


def read_image_processor_config(folder: Path, what: str) -> dict:
    """The image processor's settings, wherever the writing transformers put them: `preprocessor_config.json`, or
    the `image_processor` entry of `processor_config.json` (where processors save it today). Read by transformers'
    own `ImageProcessingMixin.get_image_processor_dict`, so any layout it knows is found."""
    try:
        settings, _ = ImageProcessingMixin.get_image_processor_dict(str(folder), local_files_only=True)
    except (OSError, ValueError) as error:
        raise ConversionError(
            f"{what} has no image preprocessing config (preprocessor_config.json, or an `image_processor` entry in "
            f"processor_config.json): {error}"
        ) from error
    return settings


def clip_vision_config(clip: ClipSource) -> CLIPVisionConfig:
    model_type = clip.config.get("model_type")
    if model_type == "clip":
        return CLIPConfig.from_dict(clip.config).vision_config
    if model_type == "clip_vision_model":
        return CLIPVisionConfig.from_dict(clip.config)
    raise ConversionError(f"{clip.name} is not a CLIP checkpoint (model_type {model_type!r}); LLaVA-1.5 uses CLIP.")


def image_processor_kwargs(preprocessor: dict, default_pad: bool) -> dict:
    """MatryoshkaLlavaImageProcessor arguments from a CLIP-style preprocessor_config.json."""
    size = preprocessor.get("size", 336)
    if isinstance(size, dict):
        size = size.get("shortest_edge", min(size.values()))
    crop = preprocessor.get("crop_size", size)
    if not isinstance(crop, dict):
        crop = {"height": crop, "width": crop}
    kwargs = {
        "do_pad": preprocessor.get("do_pad", default_pad),
        "size": {"shortest_edge": int(size)},
        "crop_size": {"height": int(crop["height"]), "width": int(crop["width"])},
    }
    for key in ("resample", "rescale_factor", "image_mean", "image_std"):
        if key in preprocessor:
            kwargs[key] = preprocessor[key]
    return kwargs


def next_image_processor_kwargs(preprocessor: dict, pinpoints: list[list[int]]) -> dict:
    """MatryoshkaLlavaNextImageProcessor arguments from a CLIP- or LlavaNext-style preprocessor_config.json."""
    kwargs = image_processor_kwargs(preprocessor, default_pad=False)
    kwargs.pop("do_pad")  # LLaVA-NeXT pads to the best resolution by design; there is no square padding
    kwargs["image_grid_pinpoints"] = pinpoints
    return kwargs


def read_processor_chat_template(folder: Path) -> str | None:
    """The chat template a llava-hf processor ships (chat_template.jinja, chat_template.json or processor_config),
    None without one. The tokenizer's own template is not read: it is the text-only template of the language model."""
    for name in CHAT_TEMPLATE_FILES:
        path = folder / name
        if not path.is_file():
            continue
        if path.suffix == ".jinja":
            return path.read_text(encoding="utf-8")
        template = read_json(path).get("chat_template")
        if isinstance(template, str) and template.strip():
            return template
    return None


def read_card_metadata(folder: Path) -> dict:
    """The source model card's YAML metadata (license, datasets), or {} without a card."""
    readme = folder / "README.md"
    if not readme.is_file():
        return {}
    from huggingface_hub import ModelCard

    try:
        return ModelCard.load(readme).data.to_dict()
    except Exception:  # noqa: BLE001 (a malformed source card only costs the defaults it would have provided)
        return {}
