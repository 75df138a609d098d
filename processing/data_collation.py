"""Batching tokenised examples and their images for training and scoring."""

from dataclasses import dataclass
from collections import Counter

import torch

from modeling_matryoshka_llava.image_placeholders import expand_image_placeholders, find_image_runs


@dataclass
class MatryoshkaLlavaDataCollator:
    """Pads `input_ids` / `labels`, builds the attention mask and stacks the images of a batch in order.

    Examples are dicts with `input_ids` and `labels` (lists or 1-D tensors) and `pixel_values` (a (3, H, W)
    tensor, or None for a text-only example). Placeholders stay compact by default, so the model expands them to
    the count of the training step (the M3 / MQT trainers choose it per step); with `num_visual_tokens` set they
    are expanded here instead, to that fixed count. Examples may carry `skipped` (reasons for records that were
    replaced because they could not be loaded); the batch reports them as a `Counter` under `skipped_records`.
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
        images = [example["pixel_values"] for example in examples if example.get("pixel_values") is not None]
        if images:
            batch["pixel_values"] = torch.stack([torch.as_tensor(image) for image in images])
        if self.num_visual_tokens is not None and images:
            runs = find_image_runs(batch["input_ids"], self.image_token_id)
            batch["input_ids"], batch["attention_mask"], batch["labels"] = expand_image_placeholders(
                batch["input_ids"],
                runs,
                [self.num_visual_tokens] * len(runs),
                attention_mask=batch["attention_mask"],
                labels=batch["labels"],
                pad_token_id=self.pad_token_id,
                padding_side=self.padding_side,
            )
        skipped = Counter(reason for example in examples for reason in example.get("skipped", ()))
        if skipped:
            batch["skipped_records"] = skipped
        return batch
