"""`matryoshka-llava cost`: FLOPs, KV-cache bytes and activation memory per visual-token count, counted on `meta`."""

import argparse

from .count_arguments import comma_separated_counts


def _image_size(text: str) -> tuple[int, int]:
    height, sep, width = text.lower().partition("x")
    if not sep or not height.isdigit() or not width.isdigit():
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH in pixels, e.g. 672x672, got {text!r}")
    return int(height), int(width)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    from .architectures import ARCHITECTURES

    parser.add_argument("--config", default="llava-1.5-7b",
                        help=f"A named architecture ({', '.join(ARCHITECTURES)}), a checkpoint folder, a config.json "
                             "or a Hub id. Default: llava-1.5-7b.")
    parser.add_argument("--num-text-tokens", type=int, default=30, help="Text tokens in the prompt (default 30).")
    parser.add_argument("--num-visual-tokens", type=comma_separated_counts, metavar="K1,K2,...",
                        help="Visual tokens per image (per crop for LLaVA-NeXT); default: the model's scales.")
    parser.add_argument("--dtype", default="float16", help="Bytes per element for memory (default float16).")
    parser.add_argument("--image-size", type=_image_size, metavar="HxW",
                        help="LLaVA-NeXT only: the image size that picks the crop grid (default: a 2x2 grid, square).")
    parser.add_argument("--output", help="Write the cost JSON here (a .md table is written next to it).")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import torch

    from .architectures import load_architecture
    from .cost import cost_to_markdown, prefill_cost

    dtype = getattr(torch, args.dtype, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"--dtype {args.dtype!r} is not a torch dtype (e.g. float16, bfloat16, float32).")
    cost = prefill_cost(
        load_architecture(args.config), args.num_visual_tokens, args.num_text_tokens,
        dtype=dtype, image_size=args.image_size, config_name=args.config,
    )
    table = cost_to_markdown(cost)
    print(table)
    if args.output:
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(cost, indent=2) + "\n")
        output.with_suffix(".md").write_text(table)
        print(f"Wrote {output} and {output.with_suffix('.md')}")
    return 0
