"""Source tensor names -> names of the converted model.

Layouts transformers itself wrote (llava-hf checkpoints of every era, CLIP towers with or without `vision_model.`)
are renamed with transformers' own key mappings: a reference model of the source's class is built on the meta
device, `get_model_conversion_mapping` gives the transforms its `from_pretrained` would apply, and each source key
goes through them. The next layout change is absorbed by transformers, not by a table here. Only the authors'
original LLaVA format, which transformers does not read, has a rule table of its own.

A rule maps a source prefix to a target prefix; a target of `DROP` discards the tensor on purpose (a projector the
target replaces, the text half of a CLIP checkpoint, buffers that newer transformers recompute). A name nothing
covers is reported as unexpected, never silently ignored.
"""

from dataclasses import dataclass, field

import torch
from transformers import CLIPVisionModel, LlavaForConditionalGeneration, LlavaNextForConditionalGeneration, WeightConverter
from transformers.conversion_mapping import get_model_conversion_mapping

from .errors import ConversionError
from .source_model import ORIGINAL_TOWER_PREFIX

DROP = None
# Buffers older transformers saved and current versions recompute.
OBSOLETE_BUFFER_SUFFIXES = (".rotary_emb.inv_freq", "embeddings.position_ids")
VISION_TOWER = "model.vision_tower."
PROJECTOR = "model.multi_modal_projector."
# The parts of a full CLIPModel checkpoint that are not its vision tower.
CLIP_TEXT_HALF = ("text_model.", "text_projection.", "visual_projection.", "logit_scale")


@dataclass
class KeyMapping:
    targets: dict[str, str] = field(default_factory=dict)  # target name -> source name
    dropped: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def add(self, key: str, target_key: str | None) -> None:
        if target_key is None:
            self.dropped.append(key)
        elif target_key in self.targets:  # e.g. a checkpoint mixing the current and legacy layouts
            self.unexpected.append(f"{key} (duplicates {self.targets[target_key]})")
        else:
            self.targets[target_key] = key


class TransformersKeyNames:
    """Renames checkpoint keys to the in-memory names of `model_class(config)`, as its `from_pretrained` does."""

    def __init__(self, model_class, config):
        with torch.device("meta"):
            reference = model_class(config)
        self.names = set(reference.state_dict())
        self.transforms = get_model_conversion_mapping(reference)
        self.base_model_prefix = reference.base_model_prefix

    def __call__(self, key: str) -> str:
        renamed = key
        for transform in self.transforms:
            renamed, matched = transform.rename_source_key(renamed)
            if matched is not None and isinstance(transform, WeightConverter):
                raise ConversionError(
                    f"{key} is stored in a layout transformers converts with tensor operations ({matched}); "
                    "load the checkpoint with transformers and save it again, then convert that folder."
                )
        # A checkpoint of the base model alone lacks the `model.` root (transformers adds it the same way).
        if renamed not in self.names and f"{self.base_model_prefix}.{renamed}" in self.names:
            renamed = f"{self.base_model_prefix}.{renamed}"
        return renamed


def map_llava_hf_keys(keys, source_config, target: str, llava_next: bool = False) -> KeyMapping:
    """llava-hf LLaVA / LLaVA-NeXT keys, any layout, to the target's (which keeps LLaVA's names)."""
    model_class = LlavaNextForConditionalGeneration if llava_next else LlavaForConditionalGeneration
    rename = TransformersKeyNames(model_class, source_config)
    mapping = KeyMapping()
    for key in keys:
        if key.endswith(OBSOLETE_BUFFER_SUFFIXES):
            mapping.dropped.append(key)
            continue
        name = rename(key)
        if name not in rename.names:
            mapping.unexpected.append(key)
        else:  # MQT replaces LLaVA's MLP projector by a fresh query transformer
            mapping.add(key, DROP if target == "mqt" and name.startswith(PROJECTOR) else name)
    return mapping


def map_clip_keys(keys, vision_config, into: str = VISION_TOWER, source_prefix: str = "") -> KeyMapping:
    """A CLIP tower's keys (a CLIPVisionModel or a full CLIPModel, any layout) to `into` + its in-memory names.
    Keys not starting with `source_prefix` are left out of the mapping (they belong to another part)."""
    rename = TransformersKeyNames(CLIPVisionModel, vision_config)
    mapping = KeyMapping()
    for key in keys:
        if not key.startswith(source_prefix):
            continue
        local = key[len(source_prefix) :]
        if local.endswith(OBSOLETE_BUFFER_SUFFIXES) or local.startswith(CLIP_TEXT_HALF):
            mapping.dropped.append(key)
            continue
        name = rename(local)
        if name in rename.names:
            mapping.add(key, into + name)
        else:
            mapping.unexpected.append(key)
    return mapping


def original_rules(source_format: str, target: str) -> list[tuple[str, str | None]]:
    """The authors' format (`llava_llama`) besides its CLIP tower, which `map_original_keys` reads as CLIP's."""
    rules = [
        ("model.embed_tokens.", "model.language_model.embed_tokens."),
        ("model.layers.", "model.language_model.layers."),
        ("model.norm.", "model.language_model.norm."),
        ("lm_head.", "lm_head."),
    ]
    if source_format in ("llava-next", "m3-next"):
        rules.append(("model.image_newline", "model.image_newline"))
    if source_format == "mqt":
        rules.append(("model.query_abstractor.", PROJECTOR))
    elif target == "m3":
        rules += [
            ("model.mm_projector.0.", PROJECTOR + "linear_1."),
            ("model.mm_projector.2.", PROJECTOR + "linear_2."),
        ]
    else:  # plain LLaVA -> MQT: the MLP projector is replaced by a fresh query transformer
        rules.append(("model.mm_projector.", DROP))
    return rules


def map_original_keys(keys, source_format: str, target: str, vision_config) -> KeyMapping:
    keys = list(keys)
    mapping = map_clip_keys(keys, vision_config, source_prefix=ORIGINAL_TOWER_PREFIX)
    rest = map_keys([key for key in keys if not key.startswith(ORIGINAL_TOWER_PREFIX)], original_rules(source_format, target))
    for key, target_key in ((source, name) for name, source in rest.targets.items()):
        mapping.add(key, target_key)
    mapping.dropped += rest.dropped
    mapping.unexpected += rest.unexpected
    return mapping


def map_keys(keys, rules: list[tuple[str, str | None]]) -> KeyMapping:
    """Apply the first matching prefix rule to each key."""
    mapping = KeyMapping()
    for key in keys:
        if key.endswith(OBSOLETE_BUFFER_SUFFIXES):
            mapping.dropped.append(key)
            continue
        for source_prefix, target_prefix in rules:
            if key.startswith(source_prefix):
                mapping.add(key, None if target_prefix is DROP else target_prefix + key[len(source_prefix) :])
                break
        else:
            mapping.unexpected.append(key)
    return mapping
