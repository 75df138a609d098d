"""The tiny models' shapes: a CLIP-style tower on 96 px images with 4 px patches (the real 24x24 grid), a small
Llama, and a word-level tokenizer over the benchmark's vocabulary plus the vicuna_v1 prompt."""

import re

from transformers import CLIPVisionConfig, LlamaConfig

from modeling_matryoshka_llava import MatryoshkaLlavaImageProcessor, MatryoshkaLlavaProcessor
from matryoshka_llava.processing import VICUNA_V1_SYSTEM_PROMPT
from matryoshka_llava.demo.tokenizer_building import build_word_level_tokenizer

from .shapes_benchmark import IMAGE_SIZE, vocabulary

PATCH_SIZE = 4
# MQT's M: 16x16 queries over the 24x24 grid, the same ratio as the released 256 queries over CLIP's 576 patches.
NUM_QUERIES = 256


def build_tiny_processor() -> MatryoshkaLlavaProcessor:
    prompt_words = re.findall(r"\w+|[^\w\s]+", VICUNA_V1_SYSTEM_PROMPT + " USER: ASSISTANT:")
    tokenizer = build_word_level_tokenizer(prompt_words + vocabulary())
    image_processor = MatryoshkaLlavaImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    return MatryoshkaLlavaProcessor(image_processor=image_processor, tokenizer=tokenizer)


def tiny_llava_config_kwargs(tokenizer) -> dict:
    """Sub-configs and token ids shared by the plain, M3 and MQT tiny models."""
    vision = CLIPVisionConfig(
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, projection_dim=64,
    )
    text = LlamaConfig(
        vocab_size=-(-len(tokenizer) // 8) * 8, hidden_size=96, intermediate_size=192, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return {
        "vision_config": vision.to_dict(),
        "text_config": text.to_dict(),
        "image_token_index": tokenizer.convert_tokens_to_ids("<image>"),
        # Trained from scratch, the tower's last layer is ours to use (LLaVA's -2 skips CLIP's contrastive head).
        "vision_feature_layer": -1,
    }


def init_vision_positions(model) -> None:
    """Start the tower's learned position embeddings at 2D sin-cos values: a locality prior that a ViT trained
    from scratch on a few thousand images otherwise takes long to discover."""
    import torch

    from modeling_matryoshka_llava.token_reducers import get_2d_sincos_pos_embed

    tower = model.model.vision_tower
    embeddings = getattr(tower, "vision_model", tower).embeddings
    weight = embeddings.position_embedding.weight
    side = IMAGE_SIZE // PATCH_SIZE
    with torch.no_grad():
        weight[1:] = get_2d_sincos_pos_embed(weight.shape[1], side).to(weight.dtype)
        weight[0] = 0
