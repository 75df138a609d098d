"""Tiny M3-LLaVA-NeXT models and processor built in code: 48 px crops, patch 2 -> the real 24x24 grid per crop,
LLaVA-NeXT's pinpoints (1x2, 2x1, 2x2, 3x1, 1x3 crops) scaled to 48 px."""

import torch
from tiny_models import IMAGE_SIZE, tiny_llava_kwargs, tiny_tokenizer
from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration

from modeling_matryoshka_llava import (
    M3LlavaNextConfig,
    M3LlavaNextForConditionalGeneration,
    MatryoshkaLlavaNextImageProcessor,
    MatryoshkaLlavaNextProcessor,
)
from matryoshka_llava.processing import anyres_grid_pinpoints

CROP = IMAGE_SIZE
NEXT_PINPOINTS = [[CROP * rows, CROP * columns] for rows, columns in ((1, 2), (2, 1), (2, 2), (3, 1), (1, 3))]
LONGER_PINPOINTS = anyres_grid_pinpoints(3, 3, CROP)


def tiny_next_processor(pinpoints=None, **processor_kwargs) -> MatryoshkaLlavaNextProcessor:
    image_processor = MatryoshkaLlavaNextImageProcessor(
        image_grid_pinpoints=pinpoints or NEXT_PINPOINTS,
        size={"shortest_edge": CROP},
        crop_size={"height": CROP, "width": CROP},
    )
    tokenizer = tiny_tokenizer()
    return MatryoshkaLlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer, **processor_kwargs)


def tiny_next_kwargs() -> dict:
    return dict(**tiny_llava_kwargs(), image_grid_pinpoints=NEXT_PINPOINTS)


def tiny_m3_next(seed: int = 0, **overrides) -> M3LlavaNextForConditionalGeneration:
    torch.manual_seed(seed)
    return M3LlavaNextForConditionalGeneration(M3LlavaNextConfig(**tiny_next_kwargs(), **overrides)).eval()


def llava_next_with_weights_of(model) -> LlavaNextForConditionalGeneration:
    """transformers' own LLaVA-NeXT holding exactly the weights of an M3-LLaVA-NeXT model (strict: same keys)."""
    llava_next = LlavaNextForConditionalGeneration(LlavaNextConfig(**tiny_next_kwargs())).eval()
    llava_next.load_state_dict(model.state_dict(), strict=True)
    return llava_next
