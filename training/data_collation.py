"""Batching tokenised examples and their images for training and scoring."""

from collections import Counter
from dataclasses import dataclass

import torch

from modeling_matryoshka_llava.anyres_layout import anyres_num_image_tokens
from modeling_matryoshka_llava.image_placeholders import expand_image_placeholders, find_image_runs
from modeling_matryoshka_llava.visual_token_counts import POSITIVE_SQUARES, check_count

# Per-image inputs of LLaVA-NeXT besides the crops: (height, width) of the image and (rows, columns) of its grid.
IMAGE_LAYOUT_NAMES = ("image_sizes", "image_grid_shapes")


@dataclass
class MatryoshkaLlavaDataCollator:
    """Pads `input_ids` / `labels`, builds the attention mask and stacks the images of a batch in order.

    Examples are dicts with `input_ids` and `labels` (lists or 1-D tensors) and `pixel_values`: a (3, H, W) tensor
    (LLaVA-1.5), a (crops, 3, H, W) tensor with the example's `image_sizes` and `image_grid_shapes` (LLaVA-NeXT; the
    number of crops varies, and the batch is zero-padded to its largest, as the anyres processor pads), or None for
    a text-only example. Placeholders stay compact by default, so the model expands them to the count of the
    training step (the M3 / MQT trainers choose it per step); with `num_visual_tokens` set they are expanded here
    instead, to that fixed count (per crop for LLaVA-NeXT, where each image's total follows from its layout).
    Examples may carry `skipped` (reasons for records that were replaced because they could not be loaded); the
    batch reports them as a `Counter` under `skipped_records`.
    """

    pad_token_id: int
    image_token_id: int
    num_visual_tokens: int | None = None
    padding_side: str = "right"
    pad_to_multiple_of: int | None = None

    def __call__(self, examples: list[dict]) -> dict:
        sequences = [torch.as_tensor(example["input_ids"], dtype=torch.long) for example in examples]
        labels = [torch.as_tensor(example["labels"], dtype=torch.long) for example in examples]
        length = max(len(sequence) for sequence in sequences)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of

        def pad(values: list[torch.Tensor], fill: int) -> torch.Tensor:
            padded = torch.full((len(values), length), fill, dtype=torch.long)
            for row, value in enumerate(values):
                if self.padding_side == "right":
                    padded[row, : len(value)] = value
                else:
                    padded[row, length - len(value) :] = value
            return padded

        batch = {
            "input_ids": pad(sequences, self.pad_token_id),
            "attention_mask": pad([torch.ones_like(sequence) for sequence in sequences], 0),
            "labels": pad(labels, -100),
        }
        with_images = [example for example in examples if example.get("pixel_values") is not None]
        if with_images:
            batch["pixel_values"] = stack_images([torch.as_tensor(example["pixel_values"]) for example in with_images])
            batch.update(stack_image_layouts(with_images))
        if self.num_visual_tokens is not None and with_images:
            runs = find_image_runs(batch["input_ids"], self.image_token_id)
            batch["input_ids"], batch["attention_mask"], batch["labels"] = expand_image_placeholders(
                batch["input_ids"],
                runs,
                self._tokens_per_image(batch, len(runs)),
                attention_mask=batch["attention_mask"],
                labels=batch["labels"],
                pad_token_id=self.pad_token_id,
                padding_side=self.padding_side,
            )
        skipped = Counter(reason for example in examples for reason in example.get("skipped", ()))
        if skipped:
            batch["skipped_records"] = skipped
        return batch

    def _tokens_per_image(self, batch: dict, num_runs: int) -> list[int]:
        if "image_grid_shapes" not in batch:
            return [self.num_visual_tokens] * num_runs
        check_count(self.num_visual_tokens, POSITIVE_SQUARES)
        return [
            anyres_num_image_tokens(tuple(size), tuple(grid), self.num_visual_tokens)
            for size, grid in zip(batch["image_sizes"].tolist(), batch["image_grid_shapes"].tolist())
        ]


def stack_images(images: list[torch.Tensor]) -> torch.Tensor:
    """(N, 3, H, W) from LLaVA-1.5 images; (N, max crops, 3, H, W) from LLaVA-NeXT crop stacks, zero-padded."""
    if any(image.ndim != images[0].ndim or image.shape[-3:] != images[0].shape[-3:] for image in images):
        shapes = sorted({tuple(image.shape) for image in images})
        raise ValueError(f"The batch mixes images of different shapes {shapes}: preprocess them with one processor.")
    if images[0].ndim != 4:
        return torch.stack(images)
    padded = images[0].new_zeros(len(images), max(image.shape[0] for image in images), *images[0].shape[1:])
    for row, image in enumerate(images):
        padded[row, : image.shape[0]] = image
    return padded


def stack_image_layouts(examples: list[dict]) -> dict:
    """`image_sizes` / `image_grid_shapes` of the examples with images, as (N, 2) tensors (absent for LLaVA-1.5)."""
    layouts = {}
    for name in IMAGE_LAYOUT_NAMES:
        values = [example.get(name) for example in examples]
        if all(value is None for value in values):
            continue
        if any(value is None for value in values):
            raise ValueError(f"Some images of the batch have {name} and others do not: preprocess them with one processor.")
        layouts[name] = torch.stack([torch.as_tensor(value, dtype=torch.long).reshape(2) for value in values])
    return layouts
