"""`evaluate`: every item generated greedily at every visual-token count, scored, with the oracle.

Each batch of items is processed once (one processor call: compact `<image>` placeholders serve every count) and
generated at each count. Batches are dealt round-robin to the processes of a data-parallel run; a batch's contents
do not depend on the number of processes, so results are identical to one process. Item results are appended to a
JSONL as they come; a rerun with the same file skips what it holds.
"""

import dataclasses
import json
import logging
import os
from pathlib import Path

import torch
from tqdm.auto import tqdm

from matryoshka_llava.processing.prompts import chat_prompt
from modeling_matryoshka_llava.image_processing_matryoshka_llava import load_image
from modeling_matryoshka_llava.visual_token_counts import (
    comparison_counts,
    resolve_num_visual_tokens,
    valid_num_visual_tokens,
)

from .data import (
    apply_filters,
    build_items,
    column_mapping,
    default_image_root,
    get_preset,
    load_eval_dataset,
    preset_for_hub_id,
)
from .distributed import distributed_state, gather_records
from .per_item_oracle import oracle
from .tasks import TASKS, EvalItem, aggregate_by_category, get_task

logger = logging.getLogger(__name__)


AUTO = "auto"  # the row of `num_visual_tokens="auto"`: the model's count chooser picks the count per item


def check_num_visual_tokens(config, counts) -> list:
    """Sorted, de-duplicated counts, each validated by the models' own rule (ValueError naming the valid values);
    "auto" (last) when asked for and the model has a count chooser. Needs only the config: commands check the
    counts before loading any weights."""
    if counts is None:
        return comparison_counts(config)
    counts = list(counts)
    if not counts:
        raise ValueError("num_visual_tokens is empty: give at least one count.")
    auto = AUTO in counts
    counts = [count for count in counts if count != AUTO]
    if auto and not getattr(config, "count_chooser_counts", None):
        raise ValueError('num_visual_tokens "auto" needs a model with a count chooser (this one has none).')
    resolve_num_visual_tokens(counts, valid_num_visual_tokens(config), len(counts))
    return sorted(set(counts)) + ([AUTO] if auto else [])


def greedy_generation_kwargs(model, processor, max_new_tokens: int) -> dict:
    tokenizer = processor.tokenizer
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos_token_id = model.generation_config.eos_token_id
    return {
        "do_sample": False,
        "num_beams": 1,
        "max_new_tokens": max_new_tokens,
        "pad_token_id": pad_token_id,
        "eos_token_id": eos_token_id if eos_token_id is not None else tokenizer.eos_token_id,
    }


# ---------------------------------------------------------------- the per-item JSONL


class ResultsLog:
    """Append-only JSONL: one header line naming the run, then one line per (item, count).

    Processes append whole lines with single `os.write` calls on an O_APPEND descriptor, so lines of different
    processes never interleave. A line cut short by an interruption is dropped on resume (and regenerated).
    """

    def __init__(self, path: str | os.PathLike, header: dict):
        self.path = Path(path)
        self.header = header

    def prepare(self) -> None:
        """Main process only: create the file with its header, or check the header and trim a torn last line."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists() or self.path.stat().st_size == 0:
            self._append([{"run": self.header}])
            return
        with open(self.path, "rb+") as handle:
            data = handle.read()
            if not data.endswith(b"\n"):
                handle.truncate(data.rfind(b"\n") + 1)
        first = self.path.read_text().split("\n", 1)[0]
        if not first:  # only a torn header was there
            self._append([{"run": self.header}])
            return
        try:
            header = json.loads(first).get("run")
        except (json.JSONDecodeError, AttributeError):
            header = None
        if header is None:
            raise ValueError(f"{self.path} is not a results file of `evaluate` (its first line is no run header).")
        if header != self.header:
            changed = {key: (header.get(key), value) for key, value in self.header.items() if header.get(key) != value}
            raise ValueError(
                f"{self.path} holds results of a different run (differs in {changed}, as (file, now)); use another "
                "file or delete it."
            )

    def load(self) -> dict[tuple[str, int], dict]:
        done, torn = {}, 0
        if not self.path.exists():
            return done
        for line in self.path.read_text().splitlines()[1:]:
            try:
                record = json.loads(line)
                done[(record["item_id"], record["num_visual_tokens"])] = record
            except (json.JSONDecodeError, KeyError, TypeError):
                torn += 1
        if torn:
            logger.warning("%s: skipped %d unreadable line(s); those results are regenerated.", self.path, torn)
        return done

    def append(self, records: list[dict]) -> None:
        self._append(records)

    def _append(self, records: list[dict]) -> None:
        data = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records).encode()
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, data)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


# ---------------------------------------------------------------- evaluation


def _select_rows(inputs: dict, rows: list[int], images_per_row: list[int]) -> dict:
    """The sub-batch of some rows, left padding that no row needs any more removed."""
    starts = [sum(images_per_row[:row]) for row in range(len(images_per_row))]
    image_rows = [starts[row] + offset for row in rows for offset in range(images_per_row[row])]
    selected = {
        "input_ids": inputs["input_ids"][rows],
        "attention_mask": inputs["attention_mask"][rows],
        "pixel_values": inputs["pixel_values"][image_rows],
    }
    keep_from = int((selected["attention_mask"].sum(0) > 0).nonzero()[0])
    selected["input_ids"] = selected["input_ids"][:, keep_from:]
    selected["attention_mask"] = selected["attention_mask"][:, keep_from:]
    return selected


def item_label(item: EvalItem) -> str:
    """How messages name an item: its dataset row and id (not its position in a batch)."""
    return f"row {item.row} (id {item.item_id})" if item.row is not None else f"item {item.item_id}"


def decode_images(items: list[EvalItem], skip_bad_images: bool) -> tuple[list[EvalItem], list[dict]]:
    """The items with their images decoded, and a record for each item left out because an image of it could not
    be read (missing file, corrupt or odd data). With `skip_bad_images=False` the first such item is an error."""
    decoded, skipped = [], []
    for item in items:
        try:
            images = [load_image(image, index) for index, image in enumerate(item.images)]
        except ValueError as error:
            if not skip_bad_images:
                raise ValueError(f"{item_label(item)}: {error}") from error
            skipped.append({"item_id": item.item_id, "row": item.row, "error": str(error)})
            continue
        decoded.append(dataclasses.replace(item, images=images))
    return decoded, skipped


def generate_batch(model, processor, items: list[EvalItem], questions: list[str], counts_per_item: list[list],
                   generation_kwargs: dict):
    """Generate each item at each of its counts, the items processed once. Yields, count by count (ascending, then
    "auto"), `(count, [(row, text, visual tokens used), ...])` so that results can be saved as soon as they exist."""
    prompts = [chat_prompt(processor, question, len(item.images)) for item, question in zip(items, questions)]
    images = [image for item in items for image in item.images]
    inputs = processor(images=images, text=prompts, padding=True, padding_side="left", return_tensors="pt")
    images_per_row = [len(item.images) for item in items]
    wanted = {count for counts in counts_per_item for count in counts}
    for count in sorted(wanted - {AUTO}) + ([AUTO] if AUTO in wanted else []):
        rows = [row for row, counts in enumerate(counts_per_item) if count in counts]
        batch = inputs if len(rows) == len(items) else _select_rows(inputs, rows, images_per_row)
        batch = {
            "input_ids": batch["input_ids"].to(model.device),
            "attention_mask": batch["attention_mask"].to(model.device),
            "pixel_values": batch["pixel_values"].to(model.device, model.dtype),
        }
        with torch.inference_mode():
            per_image = (
                model.model.choose_num_visual_tokens(batch["pixel_values"], batch["input_ids"], None,
                                                     batch["attention_mask"])
                if count == AUTO else [count] * len(batch["pixel_values"])
            )
            generated = model.generate(**batch, num_visual_tokens=per_image, **generation_kwargs)
        texts = processor.batch_decode(generated[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        offsets = [sum(images_per_row[previous] for previous in rows[:index]) for index in range(len(rows))]
        used = [sum(per_image[offset : offset + images_per_row[row]]) for offset, row in zip(offsets, rows)]
        yield count, [(row, text.strip(), tokens) for row, text, tokens in zip(rows, texts, used)]


def load_benchmark(dataset=None, preset: str | None = None, split: str | None = None, dataset_config=None):
    """(datasets.Dataset, name, split) of a Hub id, local file / folder or `datasets.Dataset`; without a dataset,
    the preset's Hub dataset with its usual split and configuration."""
    preset_spec = get_preset(preset) if preset else None
    if dataset is None:
        if preset_spec is None:
            raise ValueError("Give a dataset (Hub id, local file or datasets.Dataset) or a preset.")
        dataset = preset_spec.hub_id
    if preset_spec is not None and dataset == preset_spec.hub_id:
        split, dataset_config = split or preset_spec.split, dataset_config or preset_spec.config
    loaded = load_eval_dataset(dataset, split=split, config=dataset_config)
    name = str(dataset) if isinstance(dataset, (str, os.PathLike)) else _dataset_label(dataset)
    return loaded, name, split or (str(loaded.split) if getattr(loaded, "split", None) else None)


def evaluate(
    model,
    processor,
    dataset,
    task: str | None = None,
    num_visual_tokens=None,
    *,
    preset: str | None = None,
    columns=None,
    split: str | None = None,
    dataset_config: str | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    prompt_suffix: str | None = None,
    results_jsonl: str | os.PathLike | None = None,
    baseline: str | None = None,
    model_name: str | None = None,
    dataset_name: str | None = None,
    image_root: str | None = None,
    skip_bad_images: bool = True,
    progress: bool = True,
) -> dict:
    """Evaluate `model` on `dataset` at every count in `num_visual_tokens` (default: the model's usual counts).

    dataset: a `datasets.Dataset`, a list of `EvalItem`s, a Hub id or a local data file / folder (loaded with
        `split` and `dataset_config`), or None with a `preset` (its Hub dataset).
    task: "open_vqa", "multiple_choice", "yes_no" or "exact_match" (default: the preset's).
    preset / columns: the column layout; `columns` ({"role": "column"}) overrides single roles of the preset.
    results_jsonl: per-item results are appended here as they come; rerunning with the same file resumes.
    baseline: the training-free reduction in use (recorded in the results); by default the one
        `load_model_for_eval` applied, or the model config's when it is a sampling reduction.
    skip_bad_images: items with an image that cannot be decoded are left out of the metrics and listed under
        "skipped" (row, id, reason), as training skips such records; False makes the first one an error.

    Returns the results dict (same on every process): per-count metrics overall and per category, the oracle.
    """
    state = distributed_state()
    preset_name = preset or (preset_for_hub_id(dataset) if isinstance(dataset, str) else None)
    preset_spec = get_preset(preset_name) if preset_name else None
    task = resolve_task(task, preset_spec)
    if prompt_suffix is None and preset_spec is not None:
        prompt_suffix = preset_spec.prompt_suffix
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    max_new_tokens = max_new_tokens or task.default_max_new_tokens
    counts = check_num_visual_tokens(model.config, num_visual_tokens)
    items, source_name, split = load_items(
        dataset, task, preset_name, preset_spec, columns, split, dataset_config, limit, image_root, dataset_name
    )
    header = {
        "model": model_name or getattr(model.config, "_name_or_path", None) or type(model).__name__,
        "dataset": source_name, "split": split, "task": task.name, "baseline": baseline_in_use(model, baseline),
        "max_new_tokens": max_new_tokens, "prompt_suffix": prompt_suffix,
    }
    log, done = open_results_log(results_jsonl, header, state)
    new_records, skipped = generate_pending(
        model, processor, items, counts, done, task, prompt_suffix, batch_size,
        greedy_generation_kwargs(model, processor, max_new_tokens), log, state, progress, skip_bad_images,
    )
    for record in gather_records(new_records, state):
        done[(record["item_id"], record["num_visual_tokens"])] = record
    skipped = gather_records(skipped, state)
    if skipped:
        logger.warning("Skipped %d of %d items whose image could not be decoded, e.g. %s: %s", len(skipped),
                       len(items), f"row {skipped[0]['row']} (id {skipped[0]['item_id']})", skipped[0]["error"])
    return summarize(done, items, counts, task, header, preset_name, skipped)


def baseline_in_use(model, baseline: str | None) -> str | None:
    """The training-free reduction the results are for: the caller's, the one `load_model_for_eval` applied, or
    the config's when it is a sampling reduction."""
    if baseline is None:
        baseline = getattr(model, "training_free_baseline", None)
    if baseline is None and getattr(model.config, "visual_token_reduction", "average_pooling") != "average_pooling":
        baseline = model.config.visual_token_reduction
    return baseline


def load_items(dataset, task, preset_name, preset_spec, columns, split, dataset_config, limit, image_root,
               dataset_name) -> tuple[list[EvalItem], str, str]:
    """(items, dataset name, split) of an `EvalItem` list or a benchmark (Hub id, file, folder, `datasets.Dataset`)."""
    if isinstance(dataset, list) and all(isinstance(item, EvalItem) for item in dataset):
        items = dataset[:limit] if limit else list(dataset)
        for item in items:
            task.check_item(item)
        return items, dataset_name or "items", split or "all"
    loaded, source_name, split = load_benchmark(dataset, preset_name, split, dataset_config)
    if preset_spec is not None and preset_spec.filters:
        loaded = apply_filters(loaded, preset_spec.filters)
    mapping = column_mapping(preset_spec, columns)
    items = build_items(loaded, task, mapping, limit=limit, image_root=image_root or default_image_root(dataset))
    return items, dataset_name or source_name, split or "all"


def open_results_log(results_jsonl, header: dict, state) -> tuple["ResultsLog | None", dict]:
    """The per-item results file (prepared by the main process) and the records it already holds (a resumed run)."""
    if results_jsonl is None:
        return None, {}
    log = ResultsLog(results_jsonl, header)
    if state.is_main_process:
        log.prepare()
    state.wait_for_everyone()
    return log, log.load()


def generate_pending(model, processor, items, counts, done, task, prompt_suffix, batch_size, generation_kwargs,
                     log, state, progress: bool, skip_bad_images: bool = True) -> tuple[list[dict], list[dict]]:
    """Generate and score every (item, count) not in `done`, this process's share of the batches; each batch's
    records are appended to the log as they come. Returns (records, skipped items). Skipped items are not logged:
    a rerun tries them again (the image may have been fixed)."""
    pending = [(item, [k for k in counts if (item.item_id, k) not in done]) for item in items]
    pending = [(item, missing) for item, missing in pending if missing]
    batches = [pending[start : start + batch_size] for start in range(0, len(pending), batch_size)]
    my_batches = batches[state.process_index :: state.num_processes]
    new_records, skipped = [], []
    total = sum(len(missing) for batch in my_batches for _, missing in batch)
    with tqdm(total=total, desc=f"eval {task.name}", unit="answer", disable=not (progress and state.is_main_process)) as bar:
        for batch in my_batches:
            batch_items, bad = decode_images([item for item, _ in batch], skip_bad_images)
            skipped.extend(bad)
            bar.update(sum(len(missing) for item, missing in batch if item.item_id in {b["item_id"] for b in bad}))
            if not batch_items:
                continue
            missing_by_id = {item.item_id: missing for item, missing in batch}
            questions = [task.build_question(item, prompt_suffix) for item in batch_items]
            missing = [missing_by_id[item.item_id] for item in batch_items]
            for count, texts in generate_batch(model, processor, batch_items, questions, missing, generation_kwargs):
                records = [
                    {"item_id": batch_items[row].item_id, "num_visual_tokens": count, "visual_tokens_used": tokens,
                     "category": batch_items[row].category, "prediction": text, **task.score(text, batch_items[row])}
                    for row, text, tokens in texts
                ]
                if log is not None:
                    log.append(records)
                new_records.extend(records)
                bar.update(len(records))
    return new_records, skipped


def summarize(done: dict, items: list[EvalItem], counts: list[int], task, header: dict, preset_name=None,
              skipped: list[dict] = ()) -> dict:
    """Results dict from the per-(item, count) records of these items, less the skipped ones."""
    skipped_ids = {record["item_id"] for record in skipped}
    items = [item for item in items if item.item_id not in skipped_ids]
    if not items:
        raise ValueError(f"No item could be evaluated: the images of all {len(skipped)} items could not be decoded, "
                         f"e.g. {skipped[0]['error']}")
    missing = [(item.item_id, k) for item in items for k in counts if (item.item_id, k) not in done]
    if missing:
        raise RuntimeError(f"{len(missing)} results are missing after evaluation, e.g. {missing[:3]}.")

    fixed = [count for count in counts if count != AUTO]
    per_k = []
    for count in fixed:
        records = [done[(item.item_id, count)] for item in items]
        per_k.append({
            "num_visual_tokens": count,
            "metrics": task.aggregate(records),
            "by_category": aggregate_by_category(task, records),
        })
    scores = {item.item_id: {k: done[(item.item_id, k)]["score"] for k in fixed} for item in items}
    categories = {item.item_id: item.category for item in items}
    auto = None
    if AUTO in counts:
        records = [done[(item.item_id, AUTO)] for item in items]
        auto = {"metrics": task.aggregate(records), "by_category": aggregate_by_category(task, records),
                **tokens_used(records)}
    return {
        "model": header["model"],
        "dataset": header["dataset"],
        "split": header["split"],
        "task": task.name,
        "metric": task.main_metric,
        "num_items": len(items),
        "skipped": sorted(skipped, key=lambda record: (record["row"] is None, record["row"] or 0, record["item_id"])),
        "baseline": header["baseline"],
        "per_k": per_k,
        "oracle": oracle(scores, categories if any(categories.values()) else None),
        "auto": auto,
        "num_visual_tokens": fixed,
        "preset": preset_name,
        "generation": {"max_new_tokens": header["max_new_tokens"], "prompt_suffix": header["prompt_suffix"],
                       "do_sample": False, "num_beams": 1},
        "categories": sorted({item.category for item in items if item.category is not None}),
    }


def tokens_used(records: list[dict]) -> dict:
    """Mean visual tokens the "auto" row spent, overall and per category, and how often each count was chosen."""
    def mean(group):
        return sum(record["visual_tokens_used"] for record in group) / len(group)

    by_category = {}
    for record in records:
        if record.get("category") is not None:
            by_category.setdefault(str(record["category"]), []).append(record)
    histogram = {}
    for record in records:
        histogram[record["visual_tokens_used"]] = histogram.get(record["visual_tokens_used"], 0) + 1
    return {"mean_visual_tokens": mean(records),
            "mean_visual_tokens_by_category": {category: mean(group) for category, group in sorted(by_category.items())},
            "tokens_histogram": dict(sorted(histogram.items()))}


def _dataset_label(dataset) -> str:
    info = getattr(dataset, "info", None)
    return getattr(info, "dataset_name", None) or type(dataset).__name__


def resolve_task(task: str | None, preset_spec=None):
    """The task to score with: the one named, else the preset's; ValueError when neither says."""
    name = task or (preset_spec.task if preset_spec else None)
    if name is None:
        raise ValueError(
            f"Give a task type ({', '.join(TASKS)}) with --task, or a --preset that implies one."
        )
    return get_task(name)
