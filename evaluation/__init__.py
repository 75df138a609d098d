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

from matryoshka_llava.lazy_exports import lazy_exports

__getattr__ = lazy_exports(__name__, {
    "PRESETS": ".data",
    "ColumnMapping": ".data",
    "build_items": ".data",
    "column_mapping": ".data",
    "load_eval_dataset": ".data",
    "BASELINES": ".model_loading",
    "load_model_for_eval": ".model_loading",
    "load_processor_for_eval": ".model_loading",
    "oracle": ".per_item_oracle",
    "plot_tradeoff": ".report",
    "results_to_markdown": ".report",
    "write_outputs": ".report",
    "evaluate": ".runner",
    "load_benchmark": ".runner",
    "TASKS": ".tasks",
    "EvalItem": ".tasks",
    "get_task": ".tasks",
})
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
