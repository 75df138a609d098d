"""`matryoshka-llava demo`: run the shipped tiny models (see demo/run_demo.py)."""

import argparse

from matryoshka_llava.evaluation.count_arguments import comma_separated_counts

from .shipped_models import DEFAULT_COUNTS, MODELS_DIR


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models", nargs="+", choices=sorted(DEFAULT_COUNTS), default=["m3", "mqt", "llava"],
        help="Which shipped models to run (llava = the plain baseline with training-free average pooling).",
    )
    for name, label in (("m3", "M3"), ("mqt", "MQT"), ("llava", "plain + pooling")):
        parser.add_argument(
            f"--{name}-counts", type=comma_separated_counts, help=f"Counts for {label} (default {DEFAULT_COUNTS[name]})."
        )
    parser.add_argument("--num-items", type=int, help="Test items to evaluate (default: the whole test split).")
    parser.add_argument("--output-dir", default="demo_outputs", help="Where the plot and per-item results go.")
    parser.add_argument("--models-dir", default=str(MODELS_DIR), help="Folder holding m3/, mqt/ and llava/.")


def run(args) -> int:
    from pathlib import Path

    from transformers import AutoConfig

    import modeling_matryoshka_llava  # noqa: F401  (the Matryoshka model types, registered with AutoConfig)
    from matryoshka_llava.evaluation.runner import check_num_visual_tokens

    from .run_demo import run_demo

    counts = {"m3": args.m3_counts, "mqt": args.mqt_counts, "llava": args.llava_counts}
    for name in args.models:  # every model's counts, before the first one runs for minutes
        if counts[name]:
            check_num_visual_tokens(AutoConfig.from_pretrained(Path(args.models_dir) / name), counts[name])
    run_demo(
        models=args.models, counts={name: value for name, value in counts.items() if value},
        num_items=args.num_items, output_dir=args.output_dir, models_dir=Path(args.models_dir),
    )
    return 0
