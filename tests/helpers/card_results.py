"""Eval results and cost tables in the exact schemas of the eval / cost commands, for card tests."""

import json
from pathlib import Path

from PIL import Image


def write_eval_results(folder: Path, counts=(1, 9, 36, 144, 576), name: str = "mmbench", with_plot: bool = True,
                       **overrides) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    per_k = [
        {
            "num_visual_tokens": count,
            "metrics": {"accuracy": round(0.5 + 0.03 * index, 4), "invalid_answer_rate": 0.01 * (5 - index)},
            "by_category": {"ocr": {"accuracy": round(0.4 + 0.05 * index, 4)},
                            "counting": {"accuracy": round(0.3 + 0.02 * index, 4)}},
        }
        for index, count in enumerate(counts)
    ]
    data = {
        "model": "tiny-m3", "dataset": "lmms-lab/MMBench", "split": "dev", "task": "multiple_choice",
        "metric": "accuracy", "num_items": 4329, "baseline": None, "per_k": per_k,
        "oracle": {"accuracy": 0.7123, "mean_visual_tokens": 12.5},
    }
    if with_plot:
        Image.new("RGB", (8, 6), (0, 90, 200)).save(folder / f"{name}-plot.png")
        data["plot"] = f"{name}-plot.png"
    data.update(overrides)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


def write_cost_table(folder: Path, counts=(1, 9, 36, 144, 576)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {"num_visual_tokens": count, "llm_prefill_flops": 13_400_000_000 * (count + 30),
         "vision_flops": 349_000_000_000, "kv_cache_bytes": 524_288 * (count + 30),
         "activation_bytes": 1_048_576 * (count + 30)}
        for count in counts
    ]
    path = folder / "cost.json"
    path.write_text(json.dumps({"config": "llava-v1.5-7b", "num_text_tokens": 30, "rows": rows}))
    return path
