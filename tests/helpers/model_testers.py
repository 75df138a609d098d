"""One tester per model family, as transformers' model tests have: how to build a tiny model, its processor and
inputs, which of transformers' own classes it must agree with, and a few valid counts (the full count first)."""

from dataclasses import dataclass, field
from typing import Callable

import torch
from matryoshka_llava.processing import chat_prompt
from tiny_models import random_images, tiny_llava_kwargs, tiny_m3, tiny_mqt, tiny_processor
from tiny_next_models import tiny_m3_next, tiny_next_kwargs, tiny_next_processor
from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaNextConfig, LlavaNextForConditionalGeneration


@dataclass
class ModelTester:
    name: str
    build_model: Callable[..., torch.nn.Module]
    build_processor: Callable[[], object]
    counts: list[int]
    # transformers' own model with the same weights and keys; None for MQT, whose projector LLaVA does not have.
    reference_class: type | None = None
    reference_config: Callable[[], object] | None = None
    image_sizes: tuple = ((48, 48),)
    image_input_names: tuple[str, ...] = field(default=())

    def inputs(self, processor, num_images: int = 1, seed: int = 0, rows: list[int] | None = None, **processor_kwargs):
        """Processed prompts with one image each (compact placeholders unless `num_visual_tokens` is given);
        `rows` keeps only some of the `num_images` samples (processed on their own, as a user would)."""
        questions = ["What is in the image?", "How many shapes are there in this picture?", "Describe the picture."]
        prompts = [chat_prompt(processor, questions[i % len(questions)]) for i in range(num_images)]
        images = random_images(num_images, seed=seed, sizes=self.image_sizes)
        rows = list(range(num_images)) if rows is None else rows
        prompts, images = [prompts[row] for row in rows], [images[row] for row in rows]
        return dict(processor(images=images, text=prompts, padding=True, return_tensors="pt", **processor_kwargs))

    def reference_model(self, model) -> torch.nn.Module:
        """transformers' own class holding exactly `model`'s weights (strict: same state-dict keys)."""
        reference = self.reference_class(self.reference_config()).eval()
        reference.load_state_dict(model.state_dict(), strict=True)
        return reference


TESTERS = [
    ModelTester(
        "m3", tiny_m3, tiny_processor, [576, 36, 1],
        reference_class=LlavaForConditionalGeneration, reference_config=lambda: LlavaConfig(**tiny_llava_kwargs()),
    ),
    ModelTester("mqt", tiny_mqt, tiny_processor, [16, 5, 1]),
    ModelTester(
        "m3_next", tiny_m3_next, tiny_next_processor, [576, 9, 1],
        reference_class=LlavaNextForConditionalGeneration,
        reference_config=lambda: LlavaNextConfig(**tiny_next_kwargs()),
        image_sizes=((96, 48), (48, 48)),
        image_input_names=("image_sizes", "image_grid_shapes"),
    ),
]
