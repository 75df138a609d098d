"""`matryoshka-llava convert SRC OUT --to {m3,mqt}`: thin wrapper over `conversion.convert_checkpoint`.

LLaVA-NeXT sources (llava-hf-next, llava-next, m3-next) convert with `--to m3` to M3-LLaVA-NeXT."""

import argparse
import sys

from .source_formats import DTYPE_NAMES, SOURCE_FORMATS, TARGETS


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="source checkpoint: a local folder or a Hub repo id")
    parser.add_argument("out", help="output folder (must not exist unless --force)")
    parser.add_argument("--to", required=True, choices=TARGETS,
                        help="target model: m3 (M3-LLaVA, or M3-LLaVA-NeXT for a LLaVA-NeXT source) or mqt "
                        "(MQT-LLaVA, LLaVA-1.5 sources only)")
    parser.add_argument("--from", dest="source_format", default="auto", choices=("auto",) + SOURCE_FORMATS,
                        help="source format (default: detect from the files)")
    parser.add_argument("--clip", help="CLIP checkpoint for original-format sources (default: their mm_vision_tower)")
    parser.add_argument("--dtype", default="auto", choices=("auto",) + DTYPE_NAMES,
                        help="cast floating tensors (default: keep the stored dtypes)")
    parser.add_argument("--verify", action="store_true", help="compare logits with the source model before finishing")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the result (see `matryoshka-llava push`)")
    parser.add_argument("--force", action="store_true", help="replace an existing OUT once the new one is complete")
    parser.add_argument("--max-shard-size", default="5GB", help="largest output shard (default: 5GB)")
    parser.add_argument("--base-model", help="model-card base_model (default: SRC when it is a Hub repo id)")
    parser.add_argument("--license", help="model-card license (default: the source card's, else unknown)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from matryoshka_llava.model_cards.errors import PushError

    from .convert import convert_checkpoint

    try:
        result = convert_checkpoint(
            args.src, args.out, to=args.to, source_format=args.source_format, clip=args.clip, dtype=args.dtype,
            verify=args.verify, push_to_hub=args.push_to_hub, force=args.force, max_shard_size=args.max_shard_size,
            base_model=args.base_model, license=args.license, show_progress=not args.no_progress,
        )
    except PushError as error:  # the conversion itself succeeded: say how to retry only the upload
        print(f"error: the conversion into {args.out} is complete, but the upload failed: {error}\n"
              f"Retry with `matryoshka-llava push {args.out} {args.push_to_hub}`.", file=sys.stderr)
        return 2
    print(f"Converted {args.src} ({result.source_format}) to {result.target_model} in {result.output}: "
          f"{result.num_tensors} tensors in {len(result.shard_files)} shard(s).")
    if result.added_tokens:
        print(f"Added tokens: {', '.join(result.added_tokens)} (embeddings resized).")
    if result.verification is not None:
        print(f"Verified: {result.verification.summary()}.")
    if result.pushed_to:
        print(f"Pushed to https://huggingface.co/{result.pushed_to}")
    return 0
