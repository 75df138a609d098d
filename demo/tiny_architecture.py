"""The tiny models' shapes: a 3-layer CLIP-style tower on 144 px images in 12 px patches (a 12x12 grid of visual
tokens: M3's scales 144 / 36 / 9 / 1), a 4-layer Llama of width 128 with 32-dimensional heads (what vLLM's CPU
attention accepts), and a word-level tokenizer over the benchmark's vocabulary plus the vicuna_v1 prompt."""

import re

from transformers import CLIPVisionConfig, LlamaConfig

from modeling_matryoshka_llava import MatryoshkaLlavaImageProcessor, MatryoshkaLlavaProcessor
from matryoshka_llava.processing import VICUNA_V1_SYSTEM_PROMPT
from matryoshka_llava.demo.tokenizer_building import build_word_level_tokenizer

from .shapes_benchmark import IMAGE_SIZE, vocabulary

PATCH_SIZE = 12
# MQT's M: 8x8 queries over the 12x12 grid, close to the released 256 queries over CLIP's 24x24 patches.
NUM_QUERIES = 64


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
        image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, hidden_size=96, intermediate_size=192, num_hidden_layers=3,
        num_attention_heads=3, projection_dim=96,
    )
    text = LlamaConfig(
        vocab_size=-(-len(tokenizer) // 8) * 8, hidden_size=128, intermediate_size=256, num_hidden_layers=4,
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
