"""The two JSON files a card is filled from, checked against their schemas (the contract with the eval code).

Eval results (one benchmark): {"model", "dataset", "split", "task", "metric", "num_items", "baseline": null|str,
  "per_k": [{"num_visual_tokens", "metrics": {name: float}, "by_category": {category: {name: float}}}],
  "oracle": {"accuracy", "mean_visual_tokens"}, "plot": optional PNG path relative to the JSON file}
Cost table: {"config", "num_text_tokens", "rows": [{"num_visual_tokens", "llm_prefill_flops", "vision_flops",
  "kv_cache_bytes", "activation_bytes"}]}
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelCardError


@dataclass(frozen=True)
class TokenCountResult:
    num_visual_tokens: int
    metrics: dict[str, float]
    by_category: dict[str, dict[str, float]]


@dataclass(frozen=True)
class EvalResults:
    model: str
    dataset: str
    split: str
    task: str
    metric: str
    num_items: int
    baseline: str | None
    per_k: list[TokenCountResult]
    oracle_accuracy: float
    oracle_mean_visual_tokens: float
    plot: Path | None
    path: Path


@dataclass(frozen=True)
class CostRow:
    num_visual_tokens: int
    llm_prefill_flops: int
    vision_flops: int
    kv_cache_bytes: int
    activation_bytes: int


@dataclass(frozen=True)
class CostTable:
    config: str
    num_text_tokens: int
    rows: list[CostRow]
    path: Path


class _Reader:
    """Typed access to one JSON object; errors name the file and the field path."""

    def __init__(self, path: Path, data, where: str = ""):
        self.path, self.data, self.where = path, data, where
        if not isinstance(data, dict):
            self.fail(f"must be a JSON object, got {type(data).__name__}")

    def fail(self, message: str):
        location = f"{self.where}: " if self.where else ""
        raise ModelCardError(f"{self.path}: {location}{message}")

    def field(self, key: str, kind: str, optional: bool = False):
        where = f"{self.where}.{key}" if self.where else key
        if key not in self.data:
            if optional:
                return None
            raise ModelCardError(f"{self.path}: missing field {where!r}")
        value = self.data[key]
        if value is None and optional:
            return None
        checks = {
            "str": lambda v: isinstance(v, str) and v.strip() != "",
            "text": lambda v: isinstance(v, str),
            "int": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
            "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
            "list": lambda v: isinstance(v, list),
            "object": lambda v: isinstance(v, dict),
        }
        if not checks[kind](value):
            expected = {"int": "a non-negative integer", "number": "a finite number", "str": "a non-empty string",
                        "text": "a string"}
            raise ModelCardError(f"{self.path}: field {where!r} must be {expected.get(kind, 'a JSON ' + kind)}, got {value!r}")
        return value

    def child(self, key: str, value) -> "_Reader":
        return _Reader(self.path, value, f"{self.where}.{key}" if self.where else key)

    def numbers(self, key: str) -> dict[str, float]:
        values = self.field(key, "object")
        sub = self.child(key, values)
        return {name: float(sub.field(name, "number")) for name in values}


def read_json_file(path: Path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelCardError(f"{path}: file not found") from None
    except json.JSONDecodeError as error:
        raise ModelCardError(f"{path}: not valid JSON ({error})") from error


def load_eval_results(path: str | Path) -> EvalResults:
    path = Path(path)
    root = _Reader(path, read_json_file(path))
    metric = root.field("metric", "str")
    per_k = []
    for index, item in enumerate(root.field("per_k", "list")):
        entry = root.child(f"per_k[{index}]", item)
        count = entry.field("num_visual_tokens", "int")
        if count < 1:
            entry.fail(f"num_visual_tokens must be at least 1, got {count}")
        metrics = entry.numbers("metrics")
        if metric not in metrics:
            entry.fail(f"metrics has no {metric!r}, the file's primary metric")
        categories = entry.field("by_category", "object")
        by_category = {name: entry.child("by_category", categories).numbers(name) for name in categories}
        per_k.append(TokenCountResult(count, metrics, by_category))
    if not per_k:
        root.fail("per_k is empty: there is nothing to report")
    counts = [item.num_visual_tokens for item in per_k]
    if len(set(counts)) != len(counts):
        root.fail(f"per_k lists a num_visual_tokens twice: {counts}")
    oracle = root.child("oracle", root.field("oracle", "object"))
    plot = root.field("plot", "str", optional=True)
    plot_path = None
    if plot is not None:
        plot_path = (path.parent / plot).resolve()
        if plot_path.suffix.lower() != ".png" or not plot_path.is_file():
            root.fail(f"plot {plot!r} must name an existing PNG file relative to the JSON file")
    return EvalResults(
        model=root.field("model", "str"),
        dataset=root.field("dataset", "str"),
        split=root.field("split", "text"),
        task=root.field("task", "str"),
        metric=metric,
        num_items=root.field("num_items", "int"),
        baseline=root.field("baseline", "str", optional=True),
        per_k=sorted(per_k, key=lambda item: item.num_visual_tokens),
        oracle_accuracy=float(oracle.field("accuracy", "number")),
        oracle_mean_visual_tokens=float(oracle.field("mean_visual_tokens", "number")),
        plot=plot_path,
        path=path,
    )


def load_cost_table(path: str | Path) -> CostTable:
    path = Path(path)
    root = _Reader(path, read_json_file(path))
    rows = []
    for index, item in enumerate(root.field("rows", "list")):
        row = root.child(f"rows[{index}]", item)
        rows.append(CostRow(*(row.field(name, "int") for name in CostRow.__dataclass_fields__)))
    if not rows:
        root.fail("rows is empty: there is nothing to report")
    return CostTable(
        config=root.field("config", "str"),
        num_text_tokens=root.field("num_text_tokens", "int"),
        rows=sorted(rows, key=lambda row: row.num_visual_tokens),
        path=path,
    )
