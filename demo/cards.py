"""Model cards of the shipped tiny models, with their accuracy per family and count measured on the test split.

    python -m demo.cards          # (re)evaluate demo/models/{m3,mqt,llava} and write their README.md

`python -m demo.train_tiny_models` ends with this step, so retrained models always carry their own results.
"""

import argparse
import json
import tempfile
from pathlib import Path

import torch

from evaluation import write_outputs
from evaluation.architectures import load_architecture
from evaluation.cost import prefill_cost
from model_cards import card_inputs_for_folder, write_model_card

from .run_demo import (
    DEFAULT_COUNTS,
    MODEL_LABELS,
    MODELS_DIR,
    evaluate_on_test_split,
    load_demo_model,
    prompt,
    test_split,
)
from .shapes_benchmark import sample_scene

SOURCE = "trained from scratch on the synthetic shapes benchmark by python -m demo.train_tiny_models"
NOTE = (
    "A tiny model for the repository's demo (96 px images in 4 px patches: the 24x24 grid; a 3-layer CLIP-style "
    "tower, a 3-layer Llama of width 96 and a word-level tokenizer over the benchmark's vocabulary), not a LLaVA-1.5 "
    "checkpoint: it only answers the benchmark's four question families"
)


def text_tokens(processor) -> int:
    """Text tokens of a benchmark prompt (chat template included, the image placeholder excluded)."""
    image, rows = sample_scene(0)
    inputs = processor(images=image, text=prompt(processor, rows[0]["question"]), return_tensors="pt")
    return inputs["input_ids"].shape[1] - 1


def write_demo_cards(models_dir: Path = MODELS_DIR, names=("m3", "mqt", "llava"), num_items: int | None = None,
                     seed: int = 0) -> dict[str, dict]:
    """Evaluate each shipped model on the test split at the demo's counts and render its card; returns the results."""
    dataset = test_split(seed, num_items)
    all_results = {}
    for name in names:
        folder = Path(models_dir) / name
        model, processor = load_demo_model(name, models_dir)
        results = evaluate_on_test_split(name, model, processor, dataset, DEFAULT_COUNTS[name])
        cost = prefill_cost(
            load_architecture(folder), DEFAULT_COUNTS[name], text_tokens(processor), dtype=torch.float32,
            config_name=f"demo/models/{name}",
        )
        with tempfile.TemporaryDirectory() as scratch:
            write_outputs(results, scratch)
            (Path(scratch) / "cost.json").write_text(json.dumps(cost))
            inputs = card_inputs_for_folder(
                folder, eval_results=[Path(scratch) / "results.json"], cost=Path(scratch) / "cost.json",
                license="apache-2.0", source_checkpoint=SOURCE, conversion_note=NOTE,
                model_name=f"Tiny {MODEL_LABELS[name].split(' +')[0]} (matryoshka-llava shapes demo)",
                repo_id=f"demo/models/{name}",
            )
            write_model_card(folder, inputs)
        all_results[name] = results
    return all_results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR)
    parser.add_argument("--num-items", type=int, help="Test items (default: the whole test split).")
    args = parser.parse_args(argv)
    write_demo_cards(args.models_dir, num_items=args.num_items)


if __name__ == "__main__":
    main()
