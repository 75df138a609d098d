"""Retrain the shipped tiny models from scratch, on CPU, with the project's own trainers.

    python -m matryoshka_llava.demo.train_tiny_models            # all three into demo/models/ with their cards (time: see README)

The recipe follows the papers at toy scale, every weight starting from random initialisation:
0. the vision tower is pretrained on dense patch labels (`demo.vision_pretraining`), standing in for the CLIP
   that LLaVA, M3 and MQT all start from;
1. plain LLaVA: projector + language model trained on the shapes benchmark at full tokens only (`M3Trainer` with
   the single scale 144, the tiny grid's full count; tower frozen as in LLaVA-1.5), saved as a standard `llava`
   checkpoint;
2. M3: the plain model fine-tuned with the loss averaged over 1/9/36/144 (as M3 fine-tunes LLaVA-1.5);
3. MQT: the plain model's vision tower and language model with a fresh query transformer: stage 1 trains only
   the query transformer at m = M, stage 2 the query transformer + language model with one random m per step
   from the counts the demo reports (vision tower frozen), as in MQT-LLaVA;
4. M3 and MQT each get the `num_visual_tokens="auto"` count chooser, trained on their own answers.
Each stage is deterministic for a given seed (single process, fixed data order).
"""

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
from transformers import LlavaConfig, LlavaForConditionalGeneration

from modeling_matryoshka_llava import (
    M3LlavaConfig,
    M3LlavaForConditionalGeneration,
    MQTLlavaConfig,
    MQTLlavaForConditionalGeneration,
)
from matryoshka_llava.training.arguments import MatryoshkaTrainingArguments
from matryoshka_llava.training.run import build_trainer

from .shapes_benchmark import EVAL_COLUMNS, IMAGE_SIZE, build_shapes_benchmark
from .tiny_architecture import (
    NUM_QUERIES,
    PATCH_SIZE,
    build_tiny_processor,
    init_vision_positions,
    tiny_llava_config_kwargs,
)
from .vision_pretraining import pretrain_vision_tower

DEFAULT_OUTPUT = Path(__file__).parent / "models"
VISION_PRETRAINING_STEPS = 600
FULL_GRID = (IMAGE_SIZE // PATCH_SIZE) ** 2  # 144: the plain model's tokens, M3's largest scale
M3_COUNTS = [1, 9, 36, 144]
# MQT draws one m per step from these (M = 64 queries); the demo reports it at M3's counts below M, and M.
MQT_COUNTS = [1, 2, 4, 9, 16, 25, 36, 49, 64]
MQT_REPORTED = [1, 9, 36, 64]
STAGES = {
    # name: (method, steps, learning rate, extra training arguments)
    "plain": ("m3", 6000, 1e-3, {"num_visual_tokens_choices": [FULL_GRID]}),
    "m3": ("m3", 3000, 5e-4, {}),
    "mqt_stage1": ("mqt", 3000, 1e-3, {"stage": 1}),
    "mqt_stage2": ("mqt", 12000, 5e-4, {"stage": 2, "num_visual_tokens_choices": MQT_COUNTS}),
}
# The count chooser of `num_visual_tokens="auto"`: trained on the model's own right and wrong answers on this many
# training items at each candidate count, its threshold set on the validation split.
CHOOSER_TRAIN_ITEMS = 4000


def write_llava_records(split, folder: Path) -> Path:
    """The benchmark's training split in LLaVA's instruction format (JSON + image files)."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    records = []
    for row in split:
        name = f"{row['id']}.png"
        row["image"].save(images / name)
        records.append(
            {
                "id": row["id"],
                "image": name,
                "conversations": [
                    {"from": "human", "value": f"<image>\n{row['question']}"},
                    {"from": "gpt", "value": row["answer"]},
                ],
            }
        )
    path = folder / "train.json"
    path.write_text(json.dumps(records))
    return path


def train_stage(name: str, model, processor, data: Path, work: Path, seed: int, steps_scale: float, batch_size: int):
    """Train one stage; its result is kept under `work/<name>/final`, so a rerun with the same `--work-dir` after an
    interruption picks up from the last finished stage instead of starting over."""
    finished = work / name / "final"
    if (finished / "config.json").exists():
        print(f"[{name}] already trained in {finished}, reusing it", flush=True)
        return type(model).from_pretrained(finished), 0.0
    method, steps, learning_rate, extra = STAGES[name]
    args = MatryoshkaTrainingArguments(
        output_dir=str(work / name), per_device_train_batch_size=batch_size,
        max_steps=max(1, round(steps * steps_scale)), learning_rate=learning_rate, lr_scheduler_type="cosine",
        warmup_steps=0.05, weight_decay=0.0, logging_steps=50, save_strategy="no", report_to=[], seed=seed,
        data_seed=seed, use_cpu=True, dataloader_num_workers=0, disable_tqdm=False, **extra,
    )
    images = str(data.parent / "images")
    trainer = build_trainer(None, str(data), images, method, args, model=model, processor=processor)
    start = time.perf_counter()
    trainer.train()
    minutes = (time.perf_counter() - start) / 60
    print(f"[{name}] {args.max_steps} steps in {minutes:.1f} min", flush=True)
    save(trainer.model, processor, finished)
    return trainer.model, minutes


def report_validation(name: str, model, processor, split, counts, num_items: int = 200) -> dict:
    """Validation accuracy per family at a few counts (the test split stays untouched until the demo)."""
    from matryoshka_llava.evaluation import evaluate

    results = evaluate(
        model.eval(), processor, split.select(range(min(num_items, len(split)))), task="exact_match",
        num_visual_tokens=counts,
        columns=EVAL_COLUMNS,
        batch_size=50, max_new_tokens=4, progress=False,
    )
    metric = results["metric"]
    for row in results["per_k"]:
        families = ", ".join(f"{family} {100 * m[metric]:.0f}" for family, m in sorted(row["by_category"].items()))
        print(f"[{name}] validation k={row['num_visual_tokens']}: overall {100 * row['metrics'][metric]:.1f}% "
              f"({families})", flush=True)
    model.train()
    return results


def transfer(source, target) -> None:
    """Copy every weight the two models share by name and shape (vision tower, language model, head, ...)."""
    target_state = target.state_dict()
    shared = {k: v for k, v in source.state_dict().items() if k in target_state and v.shape == target_state[k].shape}
    target.load_state_dict(shared, strict=False)


def save(model, processor, folder: Path) -> None:
    """Write to a sibling temp folder and rename, so an interrupted save never leaves a half-written model."""
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    processor.set_model_counts(model.config)  # the processor refuses the counts the model refuses
    model.save_pretrained(partial)
    processor.save_pretrained(partial)
    if folder.exists():
        shutil.rmtree(folder)
    partial.rename(folder)


def train_all(output: Path, seed: int = 0, steps_scale: float = 1.0, batch_size: int = 16, work: Path | None = None,
              split_sizes: dict[str, int] | None = None) -> dict[str, float]:
    """Every stage in order; returns the minutes each took. `split_sizes` shrinks the benchmark (tests only)."""
    torch.manual_seed(seed)
    work = Path(work or tempfile.mkdtemp(prefix="matryoshka-demo-"))
    processor = build_tiny_processor()
    kwargs = tiny_llava_config_kwargs(processor.tokenizer)
    benchmark = build_shapes_benchmark(seed, split_sizes)
    data = write_llava_records(benchmark["train"], work / "data")
    validation = benchmark["validation"]
    timings = {}

    torch.manual_seed(seed)
    plain = M3LlavaForConditionalGeneration(M3LlavaConfig(**kwargs, matryoshka_scales=[FULL_GRID]))
    init_vision_positions(plain)
    pretrained = work / "vision_pretraining" / "final"
    if (pretrained / "config.json").exists():
        plain, timings["vision_pretraining"] = M3LlavaForConditionalGeneration.from_pretrained(pretrained), 0.0
    else:
        timings["vision_pretraining"] = pretrain_vision_tower(
            plain, processor.image_processor, steps=max(1, round(VISION_PRETRAINING_STEPS * steps_scale)), seed=seed
        )
        save(plain, processor, pretrained)
    plain, timings["plain"] = train_stage("plain", plain, processor, data, work, seed, steps_scale, batch_size)
    llava = LlavaForConditionalGeneration(LlavaConfig(**kwargs))
    llava.load_state_dict(plain.state_dict())
    save(llava, processor, output / "llava")
    report_validation("plain", plain, processor, validation, [FULL_GRID])

    m3 = M3LlavaForConditionalGeneration(M3LlavaConfig(**kwargs))
    transfer(plain, m3)
    m3, timings["m3"] = train_stage("m3", m3, processor, data, work, seed, steps_scale, batch_size)
    report_validation("m3", m3, processor, validation, M3_COUNTS)
    timings["m3_chooser"] = add_count_chooser("m3", m3, processor, benchmark, M3_COUNTS, work, seed, steps_scale)
    save(m3, processor, output / "m3")

    torch.manual_seed(seed)
    mqt = MQTLlavaForConditionalGeneration(MQTLlavaConfig(**kwargs, num_queries=NUM_QUERIES, query_num_heads=3))
    transfer(plain, mqt)
    mqt, timings["mqt_stage1"] = train_stage("mqt_stage1", mqt, processor, data, work, seed, steps_scale, batch_size)
    mqt, timings["mqt_stage2"] = train_stage("mqt_stage2", mqt, processor, data, work, seed, steps_scale, batch_size)
    report_validation("mqt", mqt, processor, validation, MQT_REPORTED)
    timings["mqt_chooser"] = add_count_chooser("mqt", mqt, processor, benchmark, MQT_REPORTED, work, seed, steps_scale)
    save(mqt, processor, output / "mqt")
    return timings


def add_count_chooser(name: str, model, processor, benchmark, counts, work: Path, seed: int, steps_scale: float):
    """Train the model's `num_visual_tokens="auto"` chooser on training items, its threshold set on validation
    (kept in `work/<name>_chooser`, like a stage); returns minutes spent."""
    finished = work / f"{name}_chooser" / "final"
    if (finished / "config.json").exists():
        trained = type(model).from_pretrained(finished)
        model.config.count_chooser_counts = trained.config.count_chooser_counts
        model.config.count_chooser_threshold = trained.config.count_chooser_threshold
        model.config.count_chooser_hidden_size = trained.config.count_chooser_hidden_size
        model.model.build_count_chooser(model.config)
        model.model.count_chooser.load_state_dict(trained.model.count_chooser.state_dict())
        print(f"[{name} chooser] already trained in {finished}, reusing it", flush=True)
        return 0.0
    from matryoshka_llava.training.count_chooser import train_count_chooser

    start = time.perf_counter()
    train = benchmark["train"]
    train = train.select(range(min(len(train), max(8, round(CHOOSER_TRAIN_ITEMS * steps_scale)))))
    report = train_count_chooser(
        model.eval(), processor, train, benchmark["validation"], counts, columns=EVAL_COLUMNS,
        steps=max(1, round(2000 * steps_scale)), batch_size=50, max_new_tokens=4, seed=seed,
    )
    picked = report["calibration"]["picked"]
    print(f"[{name} chooser] validation: accuracy {100 * picked['accuracy']:.1f}% at {picked['mean_visual_tokens']:.1f} "
          f"tokens on average (threshold {picked['threshold']}); best fixed count "
          f"{report['calibration']['best_fixed_count']}: {100 * report['calibration']['best_fixed_accuracy']:.1f}%",
          flush=True)
    save(model, processor, finished)
    return (time.perf_counter() - start) / 60


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps-scale", type=float, default=1.0, help="Multiply every stage's steps (quick tries).")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--work-dir", type=Path, help="Training images and finished stages (default: a temp folder); reusing the same "
        "folder after an interruption resumes from the last finished stage.",
    )
    args = parser.parse_args(argv)
    timings = train_all(args.output, args.seed, args.steps_scale, args.batch_size, args.work_dir)
    print("minutes per stage:", {name: round(value, 1) for name, value in timings.items()})
    # Each model's card carries its own test-split results (the test split is only ever used here and in `demo`).
    from .cards import write_demo_cards

    write_demo_cards(args.output, seed=args.seed)


if __name__ == "__main__":
    main()
