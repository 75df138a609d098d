"""Train the `num_visual_tokens="auto"` count chooser of a trained M3 / MQT model (see the bundle's
`count_chooser`).

1. The model answers every training item at every candidate count (greedy, as `evaluate` does); each answer is
   right or wrong (score >= 0.5, the tasks' scores being in [0, 1]). The oracle of the M3 paper is the smallest
   right count; the chooser learns the whole row, which also says how sure each count is.
2. The chooser's inputs are computed once per item: the question's mean embedding and the image at the smallest
   count (what the model itself computes at `generate(num_visual_tokens="auto")`).
3. A small MLP learns P(right | question, image) for every count with a binary cross-entropy; the rest of the
   model is untouched.
4. On the validation items the threshold is set to the smallest budget whose accuracy is within
   `accuracy_margin` of the best fixed count's (the budget / accuracy knob, saved in the config).
"""

import json
import tempfile
from pathlib import Path

import torch
from torch import nn

from matryoshka_llava.evaluation.data import build_items, column_mapping
from matryoshka_llava.evaluation.runner import evaluate
from matryoshka_llava.evaluation.tasks import get_task
from matryoshka_llava.processing import chat_prompt
from modeling_matryoshka_llava.count_chooser import pick_counts

THRESHOLDS = [round(0.05 * step, 2) for step in range(1, 20)]


def per_count_correctness(model, processor, dataset, counts: list[int], task: str, columns=None,
                          batch_size: int = 32, max_new_tokens: int | None = None) -> tuple[list[str], torch.Tensor]:
    """(item ids, (items, counts) bool): whether the model answers each item right at each count."""
    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "items.jsonl"
        evaluate(model, processor, dataset, task, counts, columns=columns, batch_size=batch_size,
                 max_new_tokens=max_new_tokens, results_jsonl=log, progress=False)
        records = [json.loads(line) for line in log.read_text().splitlines()[1:]]
    score = {(record["item_id"], record["num_visual_tokens"]): record["score"] for record in records}
    item_ids = list(dict.fromkeys(record["item_id"] for record in records))
    correct = torch.tensor([[score[item_id, count] >= 0.5 for count in counts] for item_id in item_ids])
    return item_ids, correct


@torch.no_grad()
def chooser_inputs(model, processor, dataset, task: str, columns=None, batch_size: int = 32) -> dict[str, tuple]:
    """item id -> (question features, image features), as `choose_num_visual_tokens` computes them."""
    items = build_items(dataset, get_task(task), column_mapping(None, columns))
    features = {}
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        prompts = [chat_prompt(processor, item.question, len(item.images)) for item in batch]
        inputs = processor(images=[image for item in batch for image in item.images], text=prompts, padding=True,
                           padding_side="left", return_tensors="pt")
        inputs = {key: value.to(model.device) for key, value in inputs.items()}
        pixel_values = inputs["pixel_values"].to(model.dtype)
        question = model.model.question_features(inputs["input_ids"], None, inputs["attention_mask"], len(pixel_values))
        image = model.model.cheapest_image_features(pixel_values, model.model.image_layouts(pixel_values))
        for item, question_row, image_row in zip(batch, question.float(), image.float()):
            features[item.item_id] = (question_row, image_row)
    return features


def stacked(features: dict, item_ids: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.stack([features[item_id][0] for item_id in item_ids]),
            torch.stack([features[item_id][1] for item_id in item_ids]))


def calibrate_threshold(probabilities: torch.Tensor, correct: torch.Tensor, counts: list[int],
                        accuracy_margin: float) -> dict:
    """The threshold with the fewest mean tokens whose accuracy is within `accuracy_margin` (a fraction) of the best
    fixed count's, and what every threshold gives; the most accurate threshold when none is close enough."""
    fixed = correct.float().mean(0)
    best_fixed = float(fixed.max())
    sweep = []
    for threshold in THRESHOLDS:
        chosen = pick_counts(probabilities, counts, threshold)
        columns = torch.tensor([counts.index(count) for count in chosen])
        accuracy = float(correct[torch.arange(len(chosen)), columns].float().mean())
        sweep.append({"threshold": threshold, "accuracy": accuracy, "mean_visual_tokens": sum(chosen) / len(chosen)})
    close = [row for row in sweep if row["accuracy"] >= best_fixed - accuracy_margin]
    pick = min(close, key=lambda row: row["mean_visual_tokens"]) if close else max(sweep, key=lambda row: row["accuracy"])
    return {"threshold": pick["threshold"], "picked": pick, "best_fixed_accuracy": best_fixed,
            "best_fixed_count": counts[int(fixed.argmax())], "sweep": sweep}


def train_count_chooser(model, processor, train_dataset, validation_dataset, counts: list[int], *,
                        task: str = "exact_match", columns=None, hidden_size: int = 64, steps: int = 2000,
                        learning_rate: float = 3e-3, accuracy_margin: float = 0.01, batch_size: int = 32,
                        max_new_tokens: int | None = None, seed: int = 0) -> dict:
    """Give `model` a trained count chooser over `counts` (ascending), its threshold calibrated on the validation
    items; returns what was measured on the way (per-count accuracy, the threshold sweep)."""
    counts = sorted(counts)
    for count in counts:
        model.model.resolve_num_visual_tokens(count, 1)  # the model's own check: ValueError naming the valid values
    model.eval()
    data = {}
    for split, dataset in (("train", train_dataset), ("validation", validation_dataset)):
        item_ids, correct = per_count_correctness(model, processor, dataset, counts, task, columns, batch_size,
                                                  max_new_tokens)
        question, image = stacked(chooser_inputs(model, processor, dataset, task, columns, batch_size), item_ids)
        data[split] = (question, image, correct)

    model.config.count_chooser_counts = counts
    model.config.count_chooser_hidden_size = hidden_size
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.model.build_count_chooser(model.config)
    chooser = model.model.count_chooser.float().train()
    optimizer = torch.optim.AdamW(chooser.parameters(), lr=learning_rate, weight_decay=1e-4)
    question, image, correct = data["train"]
    generator = torch.Generator().manual_seed(seed)
    loss_function = nn.BCEWithLogitsLoss()
    for _ in range(steps):
        rows = torch.randint(len(correct), (min(256, len(correct)),), generator=generator)
        loss = loss_function(chooser(question[rows], image[rows]), correct[rows].float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    chooser.eval().to(model.dtype)

    question, image, correct = data["validation"]
    with torch.no_grad():
        probabilities = chooser(question.to(model.dtype), image.to(model.dtype)).float().sigmoid()
    calibration = calibrate_threshold(probabilities, correct, counts, accuracy_margin)
    model.config.count_chooser_threshold = calibration["threshold"]
    return {
        "counts": counts,
        "train_accuracy_per_count": dict(zip(counts, data["train"][2].float().mean(0).tolist())),
        "validation_accuracy_per_count": dict(zip(counts, correct.float().mean(0).tolist())),
        "calibration": calibration,
        "final_train_loss": float(loss.detach()),
    }


__all__ = ["calibrate_threshold", "per_count_correctness", "train_count_chooser"]
