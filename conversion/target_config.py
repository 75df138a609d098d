"""The converted model's config: an M3LlavaConfig, M3LlavaNextConfig or MQTLlavaConfig built from the source's
parts."""

import torch

from modeling_matryoshka_llava import M3LlavaConfig, M3LlavaNextConfig, MQTLlavaConfig

from .errors import ConversionError
from .source_formats import target_model_name
from .source_model import SourceModel
from .tokenizer_assembly import TokenizerPlan


def build_target_config(source: SourceModel, target: str, tokens: TokenizerPlan, dtype: torch.dtype | None):
    text_config = source.text_config.to_dict()
    text_config.update(
        vocab_size=tokens.vocab_size,
        pad_token_id=tokens.tokenizer.pad_token_id,
        bos_token_id=tokens.tokenizer.bos_token_id,
        eos_token_id=tokens.tokenizer.eos_token_id,
    )
    common = {
        "vision_config": source.vision_config.to_dict(),
        "text_config": text_config,
        "image_token_index": tokens.image_token_index,
        "vision_feature_layer": source.vision_feature_layer,
        "vision_feature_select_strategy": source.vision_feature_select_strategy,
        "projector_hidden_act": source.projector_hidden_act,
        "tie_word_embeddings": bool(text_config.get("tie_word_embeddings", False)),
    }
    if "multimodal_projector_bias" in source.config:  # llava-hf configs may say the projector has no biases
        common["multimodal_projector_bias"] = bool(source.config["multimodal_projector_bias"])
    try:
        if target == "m3" and source.is_llava_next:
            config = M3LlavaNextConfig(
                **common, matryoshka_scales=source.matryoshka_scales, image_grid_pinpoints=source.image_grid_pinpoints
            )
        elif target == "m3":
            config = M3LlavaConfig(**common, matryoshka_scales=source.matryoshka_scales)
        else:
            config = MQTLlavaConfig(**common, **mqt_fields(source))
    except ValueError as error:
        name = target_model_name(source.format, target)
        raise ConversionError(f"The source's settings do not make a valid {name} config: {error}") from error
    if dtype is not None:
        dtype_name = str(dtype).removeprefix("torch.")
    else:  # as the source says, else as its embeddings are stored
        dtype_name = source.dtype_name or str(source.weights.tensors[source.embedding_key].dtype).removeprefix("torch.")
    config.dtype = dtype_name
    config.text_config.dtype = dtype_name
    return config


def mqt_fields(source: SourceModel) -> dict:
    if source.format != "mqt":
        # A fresh query transformer with the authors' M and head count; it must be trained before use.
        return {"projector_is_trained": False}
    query = source.weights.tensors.get("model.query_abstractor.query")
    if query is None:
        raise ConversionError("The MQT source has no model.query_abstractor.query tensor.")
    # The release stores the *training* token count ("second_stage" = random m); the default here is always M.
    return {"num_queries": query.shape[0], "projector_is_trained": True}
