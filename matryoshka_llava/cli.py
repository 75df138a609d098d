"""`matryoshka-llava` command line: thin subcommands over library functions that the tests also call.

Each subcommand lives next to its concern, in a module exposing `configure_parser(parser)` and `run(args) -> int`,
and optionally `defaults_from_argv(argv) -> dict` (e.g. values of a config file named on the command line, which
explicit options then override).
"""

import argparse
import gc
import importlib
import sys

SUBCOMMANDS = {
    "convert": ("matryoshka_llava.conversion.cli", "Convert a LLaVA-1.5/NeXT or released M3/MQT checkpoint."),
    "train": ("matryoshka_llava.training.cli", "Train with the M3 multi-scale or MQT random-m loss."),
    "eval": ("matryoshka_llava.evaluation.cli", "Evaluate accuracy at each visual-token count (and the oracle)."),
    "cost": ("matryoshka_llava.evaluation.cost_cli", "FLOPs, KV-cache and activation memory per visual-token count."),
    "bench": ("matryoshka_llava.evaluation.bench_cli", "Measure time-to-first-token and decode speed per visual-token count."),
    "card": ("matryoshka_llava.model_cards.cli", "Render a model card from eval results and the cost table."),
    "push": ("matryoshka_llava.model_cards.push_cli", "Validate a checkpoint folder and upload it to the Hub."),
    "demo": ("matryoshka_llava.demo.cli", "Run the shipped tiny M3 / MQT / LLaVA models and show the trade-off."),
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="matryoshka-llava", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name and not module_name.startswith(f"{error.name}."):
                raise
            continue  # a concern not built yet
        subparser = subparsers.add_parser(name, help=help_text, description=help_text)
        module.configure_parser(subparser)
        subparser.set_defaults(handler=module.run)
        if argv and argv[0] == name and hasattr(module, "defaults_from_argv"):
            subparser.set_defaults(**module.defaults_from_argv(argv[1:]))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    status = args.handler(args) or 0
    # Free what the command built (models, trainers, process groups) while the interpreter is fully alive: a
    # distributed back end's thread woken during interpreter shutdown aborts the process after the work is done.
    gc.collect()
    return status


if __name__ == "__main__":
    sys.exit(main())
