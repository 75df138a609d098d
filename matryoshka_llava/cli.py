"""`matryoshka-llava` command line: thin subcommands over library functions that the tests also call.

Each subcommand lives next to its concern, in a module exposing `configure_parser(parser)` and `run(args) -> int`,
and optionally `defaults_from_argv(argv) -> dict` (e.g. values of a config file named on the command line, which
explicit options then override) and `parent_parsers()` (parsers whose options it inherits). The modules import torch and transformers only inside `run` (`train` needs
transformers for its TrainingArguments options), so `--help` and argument errors answer at once. A user error (a
missing file, an invalid count, a malformed checkpoint) ends the command with one `error:` line and exit status
2; set MATRYOSHKA_LLAVA_DEBUG=1 for the traceback.
"""

import argparse
import gc
import importlib
import os
import sys

from matryoshka_llava.errors import UserError

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
# What a user can get wrong: invalid values, missing or unreadable files, a checkpoint that cannot be converted or
# published. Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, OSError, UserError)
EXIT_USER_ERROR = 2


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="matryoshka-llava", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        # Only the subcommand being run configures its options (a train parser lists every TrainingArguments).
        module = importlib.import_module(module_name) if argv and argv[0] == name else None
        parents = module.parent_parsers() if hasattr(module, "parent_parsers") else []
        subparser = subparsers.add_parser(name, help=help_text, description=help_text, parents=parents)
        subparser.set_defaults(module_name=module_name, subparser=subparser)
        if module is not None:
            module.configure_parser(subparser)
            subparser.set_defaults(handler=module.run)
            if hasattr(module, "defaults_from_argv"):
                subparser.set_defaults(**module.defaults_from_argv(argv[1:]))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = bool(os.environ.get("MATRYOSHKA_LLAVA_DEBUG"))
    try:
        parser = build_parser(argv)
        args, extra = parser.parse_known_args(argv)
        if extra:  # an unknown flag: the subcommand's own usage says what it takes
            args.subparser.error(f"unrecognized arguments: {' '.join(extra)}")
        status = args.handler(args) or 0
    except USER_ERRORS as error:
        if debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    # Free what the command built (models, trainers, process groups) while the interpreter is fully alive: a
    # distributed back end's thread woken during interpreter shutdown aborts the process after the work is done.
    gc.collect()
    return status


if __name__ == "__main__":
    sys.exit(main())
