"""Tiny M3 / MQT / LLaVA models and a processor built in code: 48 px images, patch 2 -> the real 24x24 grid."""

import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from modeling_matryoshka_llava import (
    M3LlavaConfig,
    M3LlavaForConditionalGeneration,
    MatryoshkaLlavaImageProcessor,
    MatryoshkaLlavaProcessor,
    MQTLlavaConfig,
    MQTLlavaForConditionalGeneration,
)
from matryoshka_llava.processing import VICUNA_V1_SYSTEM_PROMPT
from matryoshka_llava.demo.tokenizer_building import build_byte_level_tokenizer

IMAGE_SIZE = 48
CORPUS = [
    VICUNA_V1_SYSTEM_PROMPT,
    "USER: What is in the image? ASSISTANT: A red square on a blue background.",
    "USER: How many shapes are there? ASSISTANT: There are three shapes.",
    "USER: Describe the picture in detail. ASSISTANT: A small green circle sits in the top left corner.",
]


def tiny_tokenizer():
    return build_byte_level_tokenizer(CORPUS, vocab_size=300)


def tiny_processor():
    image_processor = MatryoshkaLlavaImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    return MatryoshkaLlavaProcessor(image_processor=image_processor, tokenizer=tiny_tokenizer())


def tiny_llava_kwargs(tokenizer=None) -> dict:
    tokenizer = tokenizer or tiny_tokenizer()
    vision = CLIPVisionConfig(
        image_size=IMAGE_SIZE, patch_size=2, hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, projection_dim=32,
    )
    text = LlamaConfig(
        vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return dict(
        vision_config=vision.to_dict(), text_config=text.to_dict(),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )


def tiny_m3(seed: int = 0, **overrides) -> M3LlavaForConditionalGeneration:
    torch.manual_seed(seed)
    return M3LlavaForConditionalGeneration(M3LlavaConfig(**tiny_llava_kwargs(), **overrides)).eval()


def tiny_mqt(seed: int = 0, **overrides) -> MQTLlavaForConditionalGeneration:
    torch.manual_seed(seed)
    config = MQTLlavaConfig(**tiny_llava_kwargs(), num_queries=16, query_num_heads=4, **overrides)
    return MQTLlavaForConditionalGeneration(config).eval()


def llava_with_weights_of(model) -> LlavaForConditionalGeneration:
    """transformers' own LLaVA holding exactly the weights of an M3 model."""
    config = LlavaConfig(**tiny_llava_kwargs())
    llava = LlavaForConditionalGeneration(config).eval()
    llava.load_state_dict(model.state_dict(), strict=True)
    return llava


def random_images(count: int, seed: int = 0, sizes=((48, 48),)):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (sizes[i % len(sizes)][1], sizes[i % len(sizes)][0], 3), dtype=np.uint8))
        for i in range(count)
    ]
