"""Model cards of the shipped tiny models, with their accuracy per family and count measured on the test split.

    python -m matryoshka_llava.demo.cards          # (re)evaluate demo/models/{m3,mqt,llava} and write their README.md

`python -m matryoshka_llava.demo.train_tiny_models` ends with this step, so retrained models always carry their own results.
"""

import argparse
import json
import tempfile
from pathlib import Path

import torch

from matryoshka_llava.evaluation import write_outputs
from matryoshka_llava.evaluation.architectures import load_architecture
from matryoshka_llava.evaluation.cost import prefill_cost
from matryoshka_llava.model_cards import card_inputs_for_folder, write_model_card

from matryoshka_llava.processing.prompts import chat_prompt

from .run_demo import (
    DEFAULT_COUNTS,
    MODEL_LABELS,
    MODELS_DIR,
    evaluate_on_test_split,
    load_demo_model,
    test_split,
)
from .shapes_benchmark import FAMILIES, sample_scene

SOURCE = "trained from scratch on the synthetic shapes benchmark by python -m matryoshka_llava.demo.train_tiny_models"
NOTE = (
    "A tiny model for the repository's demo (144 px images in 12 px patches: a 12x12 grid of visual tokens; a "
    "3-layer CLIP-style tower, a 4-layer Llama of width 128 and a word-level tokenizer over the benchmark's "
    "vocabulary), not a LLaVA-1.5 checkpoint: it only answers the benchmark's four question families"
)


def text_tokens(processor) -> int:
    """Text tokens of a benchmark prompt (chat template included, the image placeholder excluded)."""
    image, rows = sample_scene(0)
    inputs = processor(images=image, text=chat_prompt(processor, rows[0]["question"]), return_tensors="pt")
    return inputs["input_ids"].shape[1] - 1


def accuracy(results: dict, count: int, family: str | None = None) -> float:
    """Percent correct at one count, overall or for one family."""
    row = next(row for row in results["per_k"] if row["num_visual_tokens"] == count)
    value = row["by_category"][family] if family else row["metrics"]
    return 100 * value[results["metric"]]


def full_count(name: str) -> int:
    """The largest fixed count the demo shows a model at (its full tokens)."""
    return max(count for count in DEFAULT_COUNTS[name] if isinstance(count, int))


def target_summary(name: str, results: dict[str, dict]) -> str:
    """The demo's targets (README) for this model, checked against its measured results."""
    own, full = results[name], full_count(name)
    checks = [(f">= 85% overall at {full} tokens", accuracy(own, full) >= 85, f"{accuracy(own, full):.1f}%")]
    if name == "llava":
        return "Demo target on this test split: " + format_checks(checks)
    if name == "m3":
        lowest = min(FAMILIES, key=lambda family: accuracy(own, full, family))
        checks.append((f"every family >= 70% at {full} tokens", accuracy(own, full, lowest) >= 70,
                       f"lowest {lowest} {accuracy(own, full, lowest):.1f}%"))
    coarse, fine = FAMILIES[0], FAMILIES[-1]
    coarse_1, coarse_full = accuracy(own, 1, coarse), accuracy(own, full, coarse)
    fine_1, fine_full = accuracy(own, 1, fine), accuracy(own, full, fine)
    checks += [
        (f"{coarse} at 1 token within 3 points of full", coarse_full - coarse_1 <= 3, f"{coarse_1:.1f} vs {coarse_full:.1f}"),
        (f"{fine} at full >= 40 points above 1 token", fine_full - fine_1 >= 40, f"{fine_full:.1f} vs {fine_1:.1f}"),
    ]
    if name == "m3" and "llava" in results:
        for count in (9, 36):
            mine, pooled = accuracy(own, count), accuracy(results["llava"], count)
            checks.append((f"beats the plain model with average pooling by >= 10 points at {count} tokens",
                           mine - pooled >= 10, f"{mine:.1f} vs {pooled:.1f}"))
    auto = own.get("auto")
    if auto:
        best = max(own["per_k"], key=lambda row: (row["metrics"][own["metric"]], -row["num_visual_tokens"]))
        best_k, best_accuracy = best["num_visual_tokens"], 100 * best["metrics"][own["metric"]]
        auto_accuracy, tokens = 100 * auto["metrics"][own["metric"]], auto["mean_visual_tokens"]
        oracle = own["oracle"]
        checks.append((
            f'"auto" within 2 points of the best fixed count ({best_k}) with <= 40% of its tokens',
            best_accuracy - auto_accuracy <= 2 and tokens <= 0.4 * best_k,
            f"{auto_accuracy:.1f}% at {tokens:.1f} tokens vs {best_accuracy:.1f}% at {best_k}; oracle "
            f"{100 * oracle['accuracy']:.1f}% at {oracle['mean_visual_tokens']:.1f}",
        ))
    return "Demo targets on this test split: " + format_checks(checks)


def format_checks(checks) -> str:
    return "; ".join(f"{what}: {figures} ({'met' if met else 'missed'})" for what, met, figures in checks)


def write_demo_cards(models_dir: Path = MODELS_DIR, names=("m3", "mqt", "llava"), num_items: int | None = None,
                     seed: int = 0) -> dict[str, dict]:
    """Evaluate each shipped model on the test split at the demo's counts and render its card (with the demo's
    targets checked against the results); returns the results."""
    dataset = test_split(seed, num_items)
    all_results, costs = {}, {}
    for name in names:
        folder = Path(models_dir) / name
        model, processor = load_demo_model(name, models_dir)
        all_results[name] = evaluate_on_test_split(name, model, processor, dataset, DEFAULT_COUNTS[name])
        costs[name] = prefill_cost(
            load_architecture(folder), [count for count in DEFAULT_COUNTS[name] if isinstance(count, int)],
            text_tokens(processor), dtype=torch.float32,
            config_name=f"demo/models/{name}",
        )
    for name in names:
        folder = Path(models_dir) / name
        with tempfile.TemporaryDirectory() as scratch:
            write_outputs(all_results[name], scratch)
            (Path(scratch) / "cost.json").write_text(json.dumps(costs[name]))
            inputs = card_inputs_for_folder(
                folder, eval_results=[Path(scratch) / "results.json"], cost=Path(scratch) / "cost.json",
                license="apache-2.0", source_checkpoint=SOURCE,
                conversion_note=f"{NOTE}.", results_note=f"{target_summary(name, all_results)}.",
                model_name=f"Tiny {MODEL_LABELS[name].split(' +')[0]} (matryoshka-llava shapes demo)",
                repo_id=f"demo/models/{name}",
            )
            write_model_card(folder, inputs)
    return all_results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR)
    parser.add_argument("--num-items", type=int, help="Test items (default: the whole test split).")
    args = parser.parse_args(argv)
    write_demo_cards(args.models_dir, num_items=args.num_items)


if __name__ == "__main__":
    main()
