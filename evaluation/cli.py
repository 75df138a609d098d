"""`matryoshka-llava eval`: accuracy at each visual-token count, the oracle, JSON + Markdown + plot.

Data parallel: `accelerate launch -m matryoshka_llava.cli eval ...` on GPUs, or
`torchrun --nproc_per_node N -m matryoshka_llava.cli eval ...` on CPU processes.
"""

import argparse

from .baselines import BASELINES
from .count_arguments import comma_separated_counts
from .data import PRESETS, parse_column_overrides
from .tasks import TASKS


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="Checkpoint folder or Hub id (M3, MQT, or a plain LLaVA with --baseline).")
    parser.add_argument("--dataset", help="Hub id, local data file (json/jsonl/csv/parquet) or folder; default: the preset's.")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="Column layout, task and prompt of a known benchmark.")
    parser.add_argument("--task", choices=sorted(TASKS), help="Task type (default: the preset's).")
    parser.add_argument("--split", help="Dataset split (default: the preset's, or the only one).")
    parser.add_argument("--dataset-config", help="Dataset configuration name on the Hub.")
    parser.add_argument("--column", action="append", default=[], metavar="ROLE=COLUMN",
                        help="Map a role (image, question, answer, choices, hint, category, id) to a column; "
                             "choices may list several columns: choices=A,B,C,D. Repeatable.")
    parser.add_argument("--num-visual-tokens", type=comma_separated_counts, metavar="K1,K2,...",
                        help="Counts to evaluate (default: M3's scales; MQT 2,4,8,...,M); `auto` adds the row of the "
                             "model's count chooser.")
    parser.add_argument("--baseline", choices=BASELINES,
                        help="Training-free token reduction for a plain LLaVA (or to replace M3's pooling).")
    parser.add_argument("--limit", type=int, help="Evaluate only the first N items.")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--fail-on-bad-image", action="store_true",
                        help="Stop at the first item whose image cannot be decoded (default: skip it, listed in the results).")
    parser.add_argument("--max-new-tokens", type=int, help="Default: the task's (16 for open answers, 8 for letters).")
    parser.add_argument("--prompt-suffix", help="Text appended to each question (default: the task's / preset's).")
    parser.add_argument("--output-dir", required=True, help="Where results.json / .md / _tradeoff.png and items.jsonl go.")
    parser.add_argument("--results-jsonl", help="Per-item results file (default: OUTPUT_DIR/items.jsonl); reruns resume.")
    parser.add_argument("--device", help="Default: this process's accelerator (GPU rank under accelerate), else CPU.")
    parser.add_argument("--dtype", default="auto", help="float32, bfloat16, float16 or auto (the checkpoint's).")
    parser.add_argument("--trust-remote-code", action="store_true")
    parser.add_argument("--no-plot", action="store_true")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .data import check_columns, column_mapping, default_image_root, get_preset, preset_for_hub_id
    from .distributed import distributed_state, end_distributed
    from .model_loading import load_eval_config, load_model_for_eval
    from .report import results_to_markdown, write_outputs
    from .runner import check_num_visual_tokens, evaluate, load_benchmark, resolve_task

    # Everything a user can get wrong is checked before any weights load: a 7B model takes a while.
    columns = parse_column_overrides(args.column) or None
    preset = args.preset or (preset_for_hub_id(args.dataset) if args.dataset else None)
    resolve_task(args.task, get_preset(preset) if preset else None)
    config = load_eval_config(args.model, args.baseline, trust_remote_code=args.trust_remote_code)
    check_num_visual_tokens(config, args.num_visual_tokens)
    dataset, dataset_name, split = load_benchmark(args.dataset, preset, args.split, args.dataset_config)
    check_columns(dataset, column_mapping(preset, columns))
    model, processor = load_model_for_eval(
        args.model, args.baseline, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code
    )
    output_dir = Path(args.output_dir)
    state = distributed_state()
    try:
        results = evaluate(
            model, processor, dataset, args.task, args.num_visual_tokens,
            preset=preset, columns=columns, split=split, dataset_name=dataset_name, limit=args.limit,
            image_root=default_image_root(args.dataset) if args.dataset else None,
            batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, prompt_suffix=args.prompt_suffix,
            results_jsonl=args.results_jsonl or output_dir / "items.jsonl", baseline=args.baseline,
            model_name=args.model, skip_bad_images=not args.fail_on_bad_image,
        )
        if state.is_main_process:
            results = write_outputs(results, output_dir, plot=not args.no_plot)
            print(results_to_markdown(results))
            print(f"Wrote {output_dir / 'results.json'}, results.md" + ("" if args.no_plot else f", {results['plot']}"))
    finally:
        end_distributed(state)
    return 0


if __name__ == "__main__":  # `torchrun -m matryoshka_llava.evaluation.cli ...`: the same command without loading the other subcommands
    import gc
    import sys

    standalone = argparse.ArgumentParser(prog="matryoshka-llava eval", description=__doc__.splitlines()[0])
    configure_parser(standalone)
    status = run(standalone.parse_args())
    gc.collect()  # as `matryoshka-llava` does: free the process group's users before interpreter shutdown
    sys.exit(status)
