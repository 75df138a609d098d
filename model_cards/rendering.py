"""Render a model card from `CardInputs` with the templates next to this file, and validate card metadata.

The YAML front matter comes from `huggingface_hub.ModelCardData` and is parsed back with `ModelCard`. The results
files a card is filled from are stored with the checkpoint (`evaluation/`), their plots embedded by relative path,
and the card records its other inputs in an HTML comment, so it can be rendered again from the folder alone.
"""

import json
import re
import shutil
from pathlib import Path

import jinja2
import yaml
from huggingface_hub import ModelCard, ModelCardData

from matryoshka_llava.formatting import bytes_unit, count_noun, flops_unit, percent

from .card_inputs import TEMPLATES, CardInputs, example_count
from .errors import ModelCardError
from matryoshka_llava.local_paths import public_name
from .results import CostTable, EvalResults

TEMPLATE_DIR = Path(__file__).with_name("templates")
# Results files (and plots) are stored with the checkpoint: the card links them and can be rendered again.
RESULTS_DIR = "evaluation"
COST_FILE = f"{RESULTS_DIR}/cost.json"
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
LICENSE_ID = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")
REQUIRED_METADATA = {"library_name": "transformers", "pipeline_tag": "image-text-to-text"}


def card_metadata(inputs: CardInputs) -> ModelCardData:
    family = {"mqt-llava": ["mqt"], "llava-baseline": ["training-free-baseline"]}.get(inputs.kind, ["m3"])
    tags = ["matryoshka", *family, "llava", "vision-language", "image-text-to-text"]
    if inputs.kind == "m3-llava-next":
        tags.append("llava-next")
    return ModelCardData(
        license=inputs.license,
        library_name="transformers",
        pipeline_tag="image-text-to-text",
        base_model=inputs.base_model or None,
        datasets=inputs.datasets or None,
        language=["en"],
        tags=tags,
    )


def results_slug(result: EvalResults) -> str:
    """A file name for one benchmark's results: dataset, split and baseline (the eval command names every file
    `results.json`)."""
    parts = [public_name(result.dataset), result.split, result.baseline or ""]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(part for part in parts if part)).strip("-.") or "results"


def stored_results_name(result: EvalResults) -> str:
    return f"{RESULTS_DIR}/{results_slug(result)}.json"


def stored_plot_name(result: EvalResults) -> str:
    return f"{RESULTS_DIR}/{results_slug(result)}{result.plot.suffix.lower()}"


def record_comment(inputs: CardInputs) -> str:
    record = {
        "source_checkpoint": inputs.source_checkpoint,
        "conversion_note": inputs.conversion_note,
        "model_name": inputs.model_name,
        "repo_id": inputs.repo_id,
        "results_note": inputs.results_note,
        "eval_results": [stored_results_name(result) for result in inputs.eval_results],
        "cost": COST_FILE if inputs.cost else None,
    }
    return f"<!-- matryoshka-llava card inputs: {json.dumps(record)} -->"


def evaluation_table(result: EvalResults) -> dict:
    metric_names = [result.metric] + sorted({name for item in result.per_k for name in item.metrics} - {result.metric})
    counts = [item.num_visual_tokens for item in result.per_k]
    categories = sorted({name for item in result.per_k for name in item.by_category})

    def category_value(item, category):
        value = item.by_category.get(category, {}).get(result.metric)
        return "–" if value is None else percent(value)

    return {
        "dataset": public_name(result.dataset),
        "split": result.split,
        "num_items": result.num_items,
        "task": result.task,
        "metric": result.metric,
        "baseline": result.baseline,
        "metric_names": metric_names,
        "counts": counts,
        "rows": [
            {"num_visual_tokens": item.num_visual_tokens,
             "cells": [percent(item.metrics[name]) if name in item.metrics else "–" for name in metric_names]}
            for item in result.per_k
        ],
        "category_rows": [
            {"category": category, "cells": [category_value(item, category) for item in result.per_k]}
            for category in categories
        ],
        "oracle_accuracy": percent(result.oracle_accuracy),
        "oracle_visual_tokens": count_noun(result.oracle_mean_visual_tokens, "visual token"),
        "plot": stored_plot_name(result) if result.plot else None,
    }


def cost_table(cost: CostTable) -> dict:
    unit, scale = flops_unit(value for row in cost.rows for value in (row.llm_prefill_flops, row.vision_flops))
    memory_unit, memory_scale = bytes_unit(value for row in cost.rows for value in (row.kv_cache_bytes, row.activation_bytes))
    return {
        "config": public_name(cost.config),
        "num_text_tokens": cost.num_text_tokens,
        "flops_unit": unit,
        "memory_unit": memory_unit,
        "rows": [
            {
                "num_visual_tokens": row.num_visual_tokens,
                "llm_prefill": f"{row.llm_prefill_flops / scale:.3f}",
                "vision": f"{row.vision_flops / scale:.3f}",
                "kv_cache": f"{row.kv_cache_bytes / memory_scale:.1f}",
                "activations": f"{row.activation_bytes / memory_scale:.1f}",
            }
            for row in cost.rows
        ],
    }


def render_model_card(inputs: CardInputs) -> str:
    """The card's Markdown (YAML front matter included). Raises ModelCardError for a missing required field."""
    inputs.check_complete()
    names = [stored_results_name(result) for result in inputs.eval_results]
    if len(set(names)) != len(names):
        raise ModelCardError(f"Two results files are for the same dataset, split and baseline: {names}")
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    text = environment.get_template(TEMPLATES[inputs.kind]).render(
        card_data=card_metadata(inputs).to_yaml(),
        record=record_comment(inputs),
        model_name=inputs.model_name,
        repo_id=inputs.repo_id,
        source_checkpoint=inputs.source_checkpoint,
        conversion_note=inputs.conversion_note,
        license=inputs.license,
        projector_is_trained=inputs.projector_is_trained,
        valid_k_text=inputs.valid_text,
        default_k=inputs.default_num_visual_tokens,
        example_k=example_count(inputs),
        full_k=max(inputs.valid_num_visual_tokens),
        grid_side=inputs.grid_side,
        num_queries=inputs.num_queries,
        chat_template=inputs.chat_template.strip(),
        evaluations=[evaluation_table(result) for result in inputs.eval_results],
        results_note=inputs.results_note,
        cost=cost_table(inputs.cost) if inputs.cost else None,
    )
    text = re.sub(r"\n{3,}", "\n\n", text)
    validate_model_card(text)
    return text


def validate_model_card(text: str) -> ModelCard:
    """Parse the card as the Hub library does and check the metadata this project's cards must carry."""
    try:
        card = ModelCard(text, ignore_metadata_errors=False)
    except (ValueError, yaml.YAMLError) as error:
        raise ModelCardError(f"The model card's YAML front matter is invalid: {error}") from error
    metadata = card.data.to_dict()
    problems = []
    for key, value in REQUIRED_METADATA.items():
        if metadata.get(key) != value:
            problems.append(f"{key} must be {value!r} (got {metadata.get(key)!r})")
    license_id = metadata.get("license")
    if not isinstance(license_id, str) or not LICENSE_ID.match(license_id):
        problems.append(f"license must be a Hub license id (got {license_id!r})")
    elif license_id == "other" and not (metadata.get("license_name") and metadata.get("license_link")):
        problems.append("license 'other' needs license_name and license_link")
    if "matryoshka" not in (metadata.get("tags") or []):
        problems.append("tags must include 'matryoshka'")
    for key in ("base_model", "datasets"):
        for value in ([metadata[key]] if isinstance(metadata.get(key), str) else metadata.get(key) or []):
            if not isinstance(value, str) or not REPO_ID.match(value):
                problems.append(f"{key} entries must be Hub repo ids (owner/name), got {value!r}")
    if problems:
        raise ModelCardError("The model card's metadata is invalid: " + "; ".join(problems) + ".")
    try:
        ModelCardData(**metadata)  # the library's own consistency checks (e.g. eval results need a model name)
    except (ValueError, TypeError) as error:
        raise ModelCardError(f"The model card's metadata is invalid: {error}") from error
    return card


def write_model_card(folder: str | Path, inputs: CardInputs, output: str | Path | None = None) -> Path:
    """Render the card into `output` (default `folder/README.md`); store the results files and plots it links in
    `folder/evaluation/`."""
    folder = Path(folder)
    text = render_model_card(inputs)
    for result in inputs.eval_results:
        destination = folder / stored_results_name(result)
        if destination.resolve() == result.path.resolve():
            continue  # already stored by an earlier rendering
        destination.parent.mkdir(parents=True, exist_ok=True)
        data = json.loads(result.path.read_text(encoding="utf-8"))
        # The eval command records the model and dataset as given: often local paths, which are never published.
        data["model"], data["dataset"] = inputs.repo_id, public_name(data["dataset"])
        if result.plot is not None:
            shutil.copyfile(result.plot, folder / stored_plot_name(result))
            data["plot"] = Path(stored_plot_name(result)).name  # relative to the stored JSON
        destination.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    if inputs.cost is not None and (folder / COST_FILE).resolve() != inputs.cost.path.resolve():
        (folder / RESULTS_DIR).mkdir(exist_ok=True)
        data = json.loads(inputs.cost.path.read_text(encoding="utf-8"))
        data["config"] = public_name(data["config"])
        (folder / COST_FILE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    output = Path(output) if output is not None else folder / "README.md"
    output.write_text(text, encoding="utf-8")
    return output
