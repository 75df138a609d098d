"""What a model card says, gathered from a checkpoint folder (config, chat template, existing card) plus the
caller's values, with every required field checked before anything is rendered."""

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml
from transformers import AutoConfig, LlavaConfig

from modeling_matryoshka_llava import M3LlavaConfig, M3LlavaNextConfig, MQTLlavaConfig
from modeling_matryoshka_llava.visual_token_counts import (
    default_num_visual_tokens,
    describe_valid,
    patch_grid_side,
    valid_num_visual_tokens,
)

from .errors import ModelCardError
from .results import CostTable, EvalResults, load_cost_table, load_eval_results

# A rendered card records its non-metadata inputs in an HTML comment (invisible on the Hub), so that it can be
# rendered again, e.g. for another repo id, from the folder alone.
RECORD_PATTERN = re.compile(r"<!-- matryoshka-llava card inputs: (\{.*?\}) -->")
KINDS = ("m3-llava", "m3-llava-next", "mqt-llava", "llava-baseline")
TEMPLATES = {
    "m3-llava": "m3_llava.md",
    "m3-llava-next": "m3_llava_next.md",
    "mqt-llava": "mqt_llava.md",
    "llava-baseline": "llava_baseline.md",
}
# The instruction data of LLaVA-1.5, which M3 and MQT were also trained on.
LLAVA_1_5_DATASETS = ["liuhaotian/LLaVA-Pretrain", "liuhaotian/LLaVA-Instruct-150K"]
# How to supply each required field from the command line.
FIELD_HINTS = {
    "model_name": "--model-name",
    "repo_id": "--repo-id (the Hub repo the usage example loads)",
    "source_checkpoint": "--source (where the weights come from)",
    "license": "--license (a Hub license id such as apache-2.0, llama2, or unknown)",
    "chat_template": "a chat_template.jinja in the folder (save the processor)",
}


@dataclass
class CardInputs:
    kind: str | None = None
    model_name: str | None = None
    repo_id: str | None = None
    source_checkpoint: str | None = None
    license: str | None = None
    chat_template: str | None = None
    valid_num_visual_tokens: Sequence[int] = field(default_factory=list)  # M3: the scales; MQT: range(1, M + 1)
    default_num_visual_tokens: int | None = None
    grid_side: int | None = None
    num_queries: int | None = None
    projector_is_trained: bool = True
    conversion_note: str | None = None  # about the weights: kept until replaced
    results_note: str | None = None  # about the results (e.g. targets they meet): dropped with them
    base_model: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    eval_results: list[EvalResults] = field(default_factory=list)
    cost: CostTable | None = None

    def check_complete(self) -> None:
        required = ["kind", "model_name", "repo_id", "source_checkpoint", "license", "chat_template",
                    "default_num_visual_tokens"]
        missing = [name for name in required if getattr(self, name) in (None, "")]
        if not self.valid_num_visual_tokens:
            missing.append("valid_num_visual_tokens")
        if missing:
            hints = "; ".join(f"{name}: {FIELD_HINTS[name]}" if name in FIELD_HINTS else name for name in missing)
            raise ModelCardError(f"Cannot render the model card, required field(s) missing: {hints}.")
        if self.kind not in KINDS:
            raise ModelCardError(f"Unknown model kind {self.kind!r}: expected one of {', '.join(KINDS)}.")
        for result in self.eval_results:
            invalid = [item.num_visual_tokens for item in result.per_k if not self.accepts(item.num_visual_tokens)]
            if invalid:
                raise ModelCardError(
                    f"{result.path}: results for num_visual_tokens {invalid}, which this model does not accept "
                    f"({self.valid_text}). Are these results for another model?"
                )

    def accepts(self, count: int) -> bool:
        return count in self.valid_num_visual_tokens

    @property
    def valid_text(self) -> str:
        return describe_valid(self.valid_num_visual_tokens)


# Each card template and the config class it describes (subclasses first: M3 and MQT configs are LLaVA configs).
KIND_OF_CONFIG = (
    (M3LlavaNextConfig, "m3-llava-next"),
    (M3LlavaConfig, "m3-llava"),
    (MQTLlavaConfig, "mqt-llava"),
    (LlavaConfig, "llava-baseline"),  # a plain LLaVA, reduced only by the training-free baselines
)


def read_folder_inputs(folder: Path) -> CardInputs:
    """Kind, valid counts, chat template and the existing card's metadata of a saved checkpoint folder. The counts
    are the loaded config's own (`visual_token_counts`), never re-derived from the JSON."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelCardError(f"{folder} has no config.json: is it a saved checkpoint folder?")
    try:
        config = AutoConfig.from_pretrained(folder)
    except (ValueError, KeyError, OSError) as error:
        raise ModelCardError(f"{config_path} cannot be read as a model config: {error}") from error
    kind = next((kind for config_class, kind in KIND_OF_CONFIG if isinstance(config, config_class)), None)
    if kind is None:
        raise ModelCardError(
            f"{config_path}: model_type {config.model_type!r} is not an M3-LLaVA, MQT-LLaVA or plain LLaVA model."
        )
    inputs = CardInputs(kind=kind, model_name=folder.resolve().name, chat_template=read_chat_template(folder))
    inputs.grid_side = patch_grid_side(config.vision_config)
    inputs.valid_num_visual_tokens = valid_num_visual_tokens(config)
    inputs.default_num_visual_tokens = default_num_visual_tokens(config)
    if isinstance(config, MQTLlavaConfig):
        inputs.num_queries = config.num_queries
        inputs.projector_is_trained = config.projector_is_trained
    metadata, recorded = read_existing_card(folder)
    inputs.license = metadata.get("license")
    inputs.base_model = as_list(metadata.get("base_model"))
    inputs.datasets = as_list(metadata.get("datasets"))
    inputs.source_checkpoint = recorded.get("source_checkpoint") or (inputs.base_model[0] if inputs.base_model else None)
    inputs.conversion_note = recorded.get("conversion_note")
    inputs.results_note = recorded.get("results_note")
    inputs.model_name = recorded.get("model_name") or inputs.model_name
    inputs.repo_id = recorded.get("repo_id")  # never the folder's path: that would publish where it lives
    # Results files stored with the checkpoint by an earlier rendering.
    inputs.eval_results = [load_eval_results(folder / name) for name in recorded.get("eval_results", [])]
    inputs.cost = load_cost_table(folder / recorded["cost"]) if recorded.get("cost") else None
    return inputs


def read_chat_template(folder: Path) -> str | None:
    template_file = folder / "chat_template.jinja"
    if template_file.is_file():
        return template_file.read_text()
    for name in ("chat_template.json", "processor_config.json", "tokenizer_config.json"):
        path = folder / name
        if path.is_file():
            template = json.loads(path.read_text()).get("chat_template")
            if isinstance(template, str):
                return template
    return None


def read_existing_card(folder: Path) -> tuple[dict, dict]:
    """The YAML metadata of the folder's README.md and the inputs an earlier rendering recorded in it."""
    readme = folder / "README.md"
    if not readme.is_file():
        return {}, {}
    from huggingface_hub import ModelCard

    try:
        card = ModelCard.load(readme)
    except (ValueError, yaml.YAMLError) as error:
        raise ModelCardError(f"{readme} has invalid YAML metadata: {error}") from error
    match = RECORD_PATTERN.search(card.text)
    recorded = json.loads(match.group(1)) if match else {}
    return card.data.to_dict(), recorded if isinstance(recorded, dict) else {}


def as_list(value) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def with_overrides(inputs: CardInputs, **overrides) -> CardInputs:
    """Caller values win over what the folder says; None means "not given"."""
    names = {item.name for item in fields(CardInputs)}
    unknown = set(overrides) - names
    if unknown:
        raise TypeError(f"Unknown card fields: {', '.join(sorted(unknown))}")
    for name, value in overrides.items():
        if value is not None:
            setattr(inputs, name, value)
    return inputs


def example_count(inputs: CardInputs) -> int:
    """A count to show in the usage example: a mid-sized valid one (M3's middle scale, MQT's sqrt(M))."""
    valid = inputs.valid_num_visual_tokens
    if isinstance(valid, range):
        return max(1, math.isqrt(valid[-1]))
    return valid[len(valid) // 2]


def card_inputs_for_folder(folder, eval_results=(), cost=None, **fields) -> CardInputs:
    """Card inputs of a checkpoint folder: its config and existing card, then the caller's fields and results files
    (given results replace those an earlier rendering stored, and the note about them; without any, the stored ones
    are kept)."""
    inputs = read_folder_inputs(folder)
    if eval_results:
        inputs.eval_results = [load_eval_results(path) for path in eval_results]
        inputs.results_note = None
    inputs = with_overrides(inputs, **fields)
    if cost is not None:
        inputs.cost = load_cost_table(cost)
    return inputs
