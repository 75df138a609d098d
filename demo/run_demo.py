"""`matryoshka-llava demo`: the shipped tiny models, loaded through the Auto classes, show the accuracy / token trade-off.

For each model it prints the answers to one question per family about a sample image at every count, the
accuracy per family at every count on the benchmark's test split (M3, MQT, and the plain model with
training-free average pooling), the per-item oracle, and the prefill latency per count measured in the same run;
it writes the plot of accuracy vs visual tokens per family. Scoring is `evaluation.evaluate` (exact match).
"""

import random
import statistics
import time
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from matryoshka_llava.evaluation import evaluate, load_model_for_eval, plot_tradeoff
from matryoshka_llava.processing.prompts import chat_prompt

from .shapes_benchmark import CHANCE, EVAL_COLUMNS, FAMILIES, SPLIT_SIZES, generate_split, make_item, sample_scene
from .shipped_models import DEFAULT_COUNTS, MODEL_LABELS, MODELS_DIR

TEST_SPLIT_SEED_OFFSET = 2  # build_shapes_benchmark's stream for "test"


def load_demo_model(name: str, models_dir: Path = MODELS_DIR):
    """M3 / MQT through the Auto classes with `trust_remote_code=True`, as a user without this package loads them (in
    this process the package's registered classes, the same code, take precedence: transformers prefers explicitly
    registered classes; tests/test_remote_code.py loads these folders without the package). The plain LLaVA comes
    with training-free average pooling."""
    folder = models_dir / name
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"No shipped model at {folder}: run `python -m matryoshka_llava.demo.train_tiny_models` to build it.")
    if name == "llava":
        model, processor = load_model_for_eval(folder, baseline="average_pooling", trust_remote_code=True, device="cpu")
        return model, processor
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()
    return model, AutoProcessor.from_pretrained(folder, trust_remote_code=True)


def test_split(seed: int, num_items: int | None):
    size = SPLIT_SIZES["test"] if num_items is None else min(num_items, SPLIT_SIZES["test"])
    # generate_split is a pure function of (seed, size) prefix-wise: the first n items equal a larger split's.
    return generate_split(seed * 1000 + TEST_SPLIT_SEED_OFFSET, size)


def evaluate_on_test_split(name: str, model, processor, dataset, counts, batch_size: int = 50, results_jsonl=None):
    """Exact-match accuracy per family at every count (the project's `evaluate`), greedy, as in the model cards."""
    results = evaluate(
        model, processor, dataset, task="exact_match", num_visual_tokens=counts,
        columns=EVAL_COLUMNS,
        batch_size=batch_size, max_new_tokens=4, model_name=MODEL_LABELS[name], dataset_name="shapes-benchmark",
        results_jsonl=results_jsonl,
    )
    return {**results, "split": "test"}


def sample_answers(model, processor, counts, seed: int) -> list[dict]:
    """One scene, a question per family about it, and the answers at every count."""
    image, rows = sample_scene(seed)
    texts = [chat_prompt(processor, row["question"]) for row in rows]
    inputs = processor(images=[image] * len(rows), text=texts, padding=True, return_tensors="pt")
    for count in counts:
        with torch.no_grad():
            output = model.generate(**inputs, num_visual_tokens=count, max_new_tokens=4, do_sample=False)
        answers = processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        for row, answer in zip(rows, answers):
            row[count] = answer.strip()
    return rows


def prefill_latency_ms(model, processor, counts, repeats: int = 15) -> dict[int, dict[str, float]]:
    """Wall time of one prefill (a single prompt, batch 1) at each fixed count, counts interleaved so that load on
    the machine hits every count alike: the median and the interquartile range in ms."""
    image, question, _ = make_item(random.Random(0), "global")
    inputs = processor(images=image, text=chat_prompt(processor, question), return_tensors="pt")
    counts = [count for count in counts if isinstance(count, int)]
    timings = {count: [] for count in counts}
    with torch.no_grad():
        for count in counts:  # warm-up
            model(**inputs, num_visual_tokens=count)
        for _ in range(repeats):
            for count in counts:
                start = time.perf_counter()
                model(**inputs, num_visual_tokens=count, logits_to_keep=1)
                timings[count].append(1000 * (time.perf_counter() - start))
    spread = {}
    for count, values in timings.items():
        low, median, high = statistics.quantiles(values, n=4)
        spread[count] = {"median": median, "q1": low, "q3": high}
    return spread


def latency_is_signal(latency: dict[int, dict[str, float]]) -> bool:
    """Whether the fewest and most tokens' prefill times are told apart: their interquartile ranges do not overlap."""
    if len(latency) < 2:
        return False
    fewest, most = latency[min(latency)], latency[max(latency)]
    return fewest["q3"] < most["q1"] or most["q3"] < fewest["q1"]


def run_demo(
    models=("m3", "mqt", "llava"),
    counts: dict[str, list[int]] | None = None,
    num_items: int | None = None,
    output_dir: str | Path = "demo_outputs",
    models_dir: Path = MODELS_DIR,
    seed: int = 0,
    batch_size: int = 50,
) -> dict:
    """Run everything and print it; returns {model: {"results", "latency_ms", "sample"}} and the plot path."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    dataset = test_split(seed, num_items)
    report = {}
    for name in models:
        model, processor = load_demo_model(name, models_dir)
        model_counts = (counts or {}).get(name) or DEFAULT_COUNTS[name]
        label = MODEL_LABELS[name]
        print(f"\n=== {label}  ({models_dir / name})")
        sample = sample_answers(model, processor, model_counts, seed)
        print_sample(sample, model_counts)
        items = output_dir / f"{name}_items.jsonl"
        items.unlink(missing_ok=True)  # a demo run measures afresh rather than resuming an earlier run's answers
        results = evaluate_on_test_split(name, model, processor, dataset, model_counts, batch_size, items)
        latency = prefill_latency_ms(model, processor, model_counts)
        print_accuracy(results, latency)
        report[name] = {"results": results, "latency_ms": latency, "sample": sample}
    plot = plot_tradeoff(
        [entry["results"] for entry in report.values()], output_dir / "accuracy_vs_tokens.png", by_category=True,
        labels=[MODEL_LABELS[name] for name in report], title="Shapes benchmark: accuracy vs visual tokens per family",
        categories=FAMILIES, chance=CHANCE,
    )
    print(f"\nPlot: {plot}")
    report["plot"] = plot
    return report


def print_sample(rows: list[dict], counts: list[int]) -> None:
    print("Sample image, one question per family (answers per number of visual tokens):")
    width = max(len(row["question"]) for row in rows) + 2
    header = f"  {'question':<{width}}{'truth':<13}" + "".join(f"{count:>13}" for count in counts)
    print(header)
    for row in rows:
        cells = "".join(f"{row[count][:12]:>13}" for count in counts)
        print(f"  {row['question']:<{width}}{row['answer']:<13}{cells}")


def print_accuracy(results: dict, latency: dict[int, dict[str, float]]) -> None:
    families = [family for family in FAMILIES if family in (results.get("categories") or FAMILIES)]
    metric = results["metric"]
    timed = latency_is_signal(latency)
    print(f"Accuracy on {results['num_items']} test items (%), families coarse to fine"
          + (", prefill latency (ms, batch 1, median and interquartile range):" if timed else ":"))
    print(f"  {'tokens':>9}" + "".join(f"{family:>10}" for family in families) + f"{'overall':>10}"
          + (f"{'prefill':>22}" if timed else ""))

    def line(label, by_family, overall, extra=""):
        print(f"  {label:>9}" + "".join(f"{by_family(family):>10}" for family in families) + f"{overall:>10}" + extra)

    for row in results["per_k"]:
        count, cells = row["num_visual_tokens"], row["by_category"]
        extra = ""
        if timed:
            value = latency[count]
            extra = f"{value['median']:>10.1f} ({value['q1']:.1f}-{value['q3']:.1f})"
        line(str(count), lambda family: f"{100 * cells[family][metric]:.1f}", f"{100 * row['metrics'][metric]:.1f}", extra)
    auto = results.get("auto")
    if auto:
        line("auto", lambda family: f"{100 * auto['by_category'][family][metric]:.1f}",
             f"{100 * auto['metrics'][metric]:.1f}")
        tokens = auto["mean_visual_tokens_by_category"]
        line("  tokens", lambda family: f"{tokens[family]:.1f}", f"{auto['mean_visual_tokens']:.1f}",
             "   (mean visual tokens auto chose)")
    oracle = results["oracle"]
    by_family = oracle.get("by_category", {})
    line("oracle", lambda family: f"{100 * by_family[family]['accuracy']:.1f}", f"{100 * oracle['accuracy']:.1f}")
    line("  tokens", lambda family: f"{by_family[family]['mean_visual_tokens']:.1f}",
         f"{oracle['mean_visual_tokens']:.1f}", "   (smallest count that answers each item)")
    line("chance", lambda family: f"{100 * CHANCE[family]:.1f}", f"{100 * CHANCE['overall']:.1f}")
    if not timed:
        fewest, most = min(latency), max(latency)
        print(f"  prefill latency not shown: at this model size {fewest} and {most} tokens take "
              f"{latency[fewest]['median']:.1f} and {latency[most]['median']:.1f} ms (batch 1), within each other's "
              "run-to-run spread; `matryoshka-llava bench` measures real model sizes")
