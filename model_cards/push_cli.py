"""`matryoshka-llava push DIR REPO_ID`: thin wrapper over `model_cards.push.push_checkpoint`."""

import argparse


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", metavar="DIR", help="a saved or converted checkpoint folder")
    parser.add_argument("repo_id", metavar="REPO_ID", help="Hub repo to upload to (created if missing)")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--revision", metavar="BRANCH", help="branch to commit to (created if missing)")
    parser.add_argument("--commit-message", help="message of the single upload commit")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the files and card, upload nothing")


def run(args: argparse.Namespace) -> int:
    from .push import push_checkpoint

    result = push_checkpoint(args.folder, args.repo_id, private=args.private, revision=args.revision,
                             commit_message=args.commit_message, dry_run=args.dry_run)
    print(result.describe())
    return 0
