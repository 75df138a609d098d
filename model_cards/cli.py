"""`matryoshka-llava card DIR`: render a checkpoint folder's model card; thin wrapper over `write_model_card`."""

import argparse


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", metavar="DIR", help="a saved or converted checkpoint folder")
    parser.add_argument("--eval-results", nargs="+", default=[], metavar="JSON", help="eval command results files")
    parser.add_argument("--cost", metavar="JSON", help="cost command table")
    parser.add_argument("--repo-id", help="Hub repo the usage example loads (default: the one the existing card names)")
    parser.add_argument("--source", dest="source_checkpoint", help="where the weights come from (default: base_model)")
    parser.add_argument("--model-name", help="card title (default: the folder name)")
    parser.add_argument("--license", help="Hub license id (default: the existing card's)")
    parser.add_argument("--base-model", nargs="+", metavar="REPO_ID", help="base model repo id(s)")
    parser.add_argument("--dataset", nargs="+", dest="datasets", metavar="REPO_ID", help="training dataset repo id(s)")
    parser.add_argument("--output", help="where to write the card (default: DIR/README.md)")
    parser.add_argument("--stdout", action="store_true", help="print the card instead of writing it")


def run(args: argparse.Namespace) -> int:
    from .card_inputs import card_inputs_for_folder
    from .rendering import render_model_card, write_model_card

    inputs = card_inputs_for_folder(
        args.folder, eval_results=args.eval_results, cost=args.cost, repo_id=args.repo_id,
        source_checkpoint=args.source_checkpoint, model_name=args.model_name, license=args.license,
        base_model=args.base_model, datasets=args.datasets,
    )
    if args.stdout:
        print(render_model_card(inputs))
    else:
        print(f"Wrote {write_model_card(args.folder, inputs, args.output)}")
    return 0
