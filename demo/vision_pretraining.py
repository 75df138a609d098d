"""Pretraining of the tiny vision tower, the stand-in for LLaVA's pretrained CLIP.

LLaVA never trains its vision tower from nothing: it starts from CLIP. A ViT trained from random weights only
through the language model's answers sits on a long plateau (the answer can only teach features once attention
finds the right tokens, and attention only finds them once features are telling), so the tiny tower first learns
dense patch labels of the synthetic scenes (what kind of thing each patch shows, which letter a box holds, and
where the patch is: its row and column, as CLIP's features also say where things are) with linear heads that are
then thrown away. No question, answer or token reduction is involved: every model built
on the tower (plain, M3, MQT) starts from the same pretrained features, as LLaVA-1.5, M3 and MQT all start from CLIP.
"""

import random
import time

import numpy as np
import torch
from torch import nn

from .shapes_benchmark import FAMILIES, GLYPHS, IMAGE_SIZE, SHAPES, make_item
from .tiny_architecture import PATCH_SIZE


def patch_labels(label_map, patch_size: int = PATCH_SIZE) -> np.ndarray:
    """Pixel labels -> one label per patch (the largest id present, so a patch touching an object is that object)."""
    array = np.asarray(label_map)
    side = array.shape[0] // patch_size
    return array.reshape(side, patch_size, side, patch_size).max(axis=(1, 3)).reshape(-1)


class PatchLabelHeads(nn.Module):
    def __init__(self, hidden_size: int, grid_side: int):
        super().__init__()
        self.kind = nn.Linear(hidden_size, len(SHAPES) + 2)
        self.letter = nn.Linear(hidden_size, len(GLYPHS) + 1)
        self.row = nn.Linear(hidden_size, grid_side)
        self.column = nn.Linear(hidden_size, grid_side)
        self.grid_side = grid_side

    def losses(self, features: torch.Tensor, kinds: torch.Tensor, letters: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(kind, letter, position) losses of (batch, patches, hidden) features."""
        kind_loss = nn.functional.cross_entropy(self.kind(features).flatten(0, 1), kinds.flatten())
        letter_logits = self.letter(features).flatten(0, 1)
        inside_box = letters.flatten() > 0  # which letter only matters where there is a box
        letter_loss = nn.functional.cross_entropy(letter_logits[inside_box], letters.flatten()[inside_box])
        cells = torch.arange(features.shape[1], device=features.device).expand(features.shape[0], -1).flatten()
        rows, columns = cells // self.grid_side, cells % self.grid_side
        position_loss = nn.functional.cross_entropy(self.row(features).flatten(0, 1), rows) + nn.functional.cross_entropy(
            self.column(features).flatten(0, 1), columns
        )
        return kind_loss, letter_loss, position_loss


def scene_batch(rng: random.Random, image_processor, batch_size: int):
    images, kinds, letters = [], [], []
    for _ in range(batch_size):
        image, facts = make_item(rng, rng.choice(FAMILIES), with_facts=True)
        images.append(image)
        kinds.append(patch_labels(facts["kind_map"]))
        letters.append(patch_labels(facts["letter_map"]))
    pixel_values = image_processor(images, return_tensors="pt")["pixel_values"]
    return pixel_values, torch.tensor(np.stack(kinds), dtype=torch.long), torch.tensor(np.stack(letters), dtype=torch.long)


def pretrain_vision_tower(model, image_processor, steps: int = 600, batch_size: int = 32, learning_rate: float = 2e-3,
                          seed: int = 0, log_every: int = 100) -> float:
    """Train `model.model.vision_tower` (in place) on dense patch labels; returns minutes spent."""
    torch.manual_seed(seed)
    rng = random.Random(seed + 12345)  # a stream of fresh scenes, apart from the benchmark's splits
    heads = PatchLabelHeads(model.config.vision_config.hidden_size, IMAGE_SIZE // PATCH_SIZE)
    tower = model.model.vision_tower.train()
    parameters = list(tower.parameters()) + list(heads.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps, pct_start=0.05)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        pixel_values, kinds, letters = scene_batch(rng, image_processor, batch_size)
        features = model.model.get_vision_features(pixel_values)
        kind_loss, letter_loss, position_loss = heads.losses(features, kinds, letters)
        (kind_loss + letter_loss + position_loss).backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % log_every == 0 or step == steps:
            print(f"[vision pretraining] step {step}/{steps} kind loss {kind_loss.item():.3f} "
                  f"letter loss {letter_loss.item():.3f} position loss {position_loss.item():.3f}", flush=True)
    return (time.perf_counter() - start) / 60
