"""Evaluation of the accuracy / visual-token trade-off, the cost model and speed benchmarks.

Python API (the CLI subcommands `eval`, `cost` and `bench` are thin wrappers over it):

```python
from matryoshka_llava.evaluation import evaluate, load_model_for_eval, write_outputs

model, processor = load_model_for_eval("path/to/m3-checkpoint")          # or a plain LLaVA with baseline=...
results = evaluate(model, processor, "pope.parquet", task="yes_no", num_visual_tokens=[1, 9, 36, 144, 576],
                   preset="pope", results_jsonl="out/items.jsonl")
write_outputs(results, "out")                                            # results.json / .md / _tradeoff.png
```
"""

from .data import PRESETS, ColumnMapping, build_items, column_mapping, load_eval_dataset
from .model_loading import BASELINES, load_model_for_eval, load_processor_for_eval
from .oracle import oracle
from .report import plot_tradeoff, results_to_markdown, write_outputs
from .runner import evaluate, load_benchmark
from .tasks import TASKS, EvalItem, get_task

__all__ = [
    "BASELINES",
    "PRESETS",
    "TASKS",
    "ColumnMapping",
    "EvalItem",
    "build_items",
    "column_mapping",
    "evaluate",
    "get_task",
    "load_benchmark",
    "load_eval_dataset",
    "load_model_for_eval",
    "load_processor_for_eval",
    "oracle",
    "plot_tradeoff",
    "results_to_markdown",
    "write_outputs",
]
