"""Source tensor names -> names of the converted model, one rule table per source format.

A rule maps a source prefix to a target prefix; a target of `DROP` discards the tensor on purpose (a projector the
target replaces, the text half of a CLIP checkpoint, buffers that newer transformers recompute). A name no rule
covers is reported as unexpected, never silently ignored.
"""

from dataclasses import dataclass, field

DROP = None
# Buffers older transformers saved and current versions recompute.
OBSOLETE_BUFFER_SUFFIXES = (".rotary_emb.inv_freq", "embeddings.position_ids")


@dataclass
class KeyMapping:
    targets: dict[str, str] = field(default_factory=dict)  # target name -> source name
    dropped: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


def llava_hf_rules(target: str, vision_prefix: str, llava_next: bool = False) -> list[tuple[str, str | None]]:
    projector = "model.multi_modal_projector." if target == "m3" else DROP
    # LLaVA-NeXT adds one tensor, the row-end embedding (top-level `image_newline` in the legacy layout).
    newline = [("model.image_newline", "model.image_newline"), ("image_newline", "model.image_newline")]
    return (newline if llava_next else []) + [
        ("model.vision_tower.vision_model.", vision_prefix),
        ("model.vision_tower.", vision_prefix),  # saved by transformers >= 5, without `vision_model.`
        ("model.multi_modal_projector.", projector),
        ("model.language_model.", "model.language_model."),
        ("lm_head.", "lm_head."),
        # legacy layout (llava-hf uploads made before transformers 4.52)
        ("vision_tower.vision_model.", vision_prefix),
        ("multi_modal_projector.", projector),
        ("language_model.model.", "model.language_model."),
        ("language_model.lm_head.", "lm_head."),
    ]


def original_rules(source_format: str, target: str, vision_prefix: str) -> list[tuple[str, str | None]]:
    rules = [
        ("model.vision_tower.vision_tower.vision_model.", vision_prefix),
        ("model.embed_tokens.", "model.language_model.embed_tokens."),
        ("model.layers.", "model.language_model.layers."),
        ("model.norm.", "model.language_model.norm."),
        ("lm_head.", "lm_head."),
    ]
    if source_format in ("llava-next", "m3-next"):
        rules.append(("model.image_newline", "model.image_newline"))
    if source_format == "mqt":
        rules.append(("model.query_abstractor.", "model.multi_modal_projector."))
    elif target == "m3":
        rules += [
            ("model.mm_projector.0.", "model.multi_modal_projector.linear_1."),
            ("model.mm_projector.2.", "model.multi_modal_projector.linear_2."),
        ]
    else:  # plain LLaVA -> MQT: the MLP projector is replaced by a fresh query transformer
        rules.append(("model.mm_projector.", DROP))
    return rules


def clip_rules(vision_prefix: str) -> list[tuple[str, str | None]]:
    return [
        ("vision_model.", vision_prefix),
        ("text_model.", DROP),
        ("text_projection.", DROP),
        ("visual_projection.", DROP),
        ("logit_scale", DROP),
    ]


def map_keys(keys, rules: list[tuple[str, str | None]], skip_prefixes: tuple[str, ...] = ()) -> KeyMapping:
    """Apply the first matching rule to each key; `skip_prefixes` names source parts taken from elsewhere."""
    mapping = KeyMapping()
    for key in keys:
        if key.endswith(OBSOLETE_BUFFER_SUFFIXES) or key.startswith(skip_prefixes):
            mapping.dropped.append(key)
            continue
        for source_prefix, target_prefix in rules:
            if key.startswith(source_prefix):
                target_key = None if target_prefix is DROP else target_prefix + key[len(source_prefix) :]
                if target_key is None:
                    mapping.dropped.append(key)
                elif target_key in mapping.targets:  # e.g. a checkpoint mixing the current and legacy layouts
                    mapping.unexpected.append(f"{key} (duplicates {mapping.targets[target_key]})")
                else:
                    mapping.targets[target_key] = key
                break
        else:
            mapping.unexpected.append(key)
    return mapping
