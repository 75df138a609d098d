"""`matryoshka-llava bench`: TTFT, vision share and decode speed per k, M3 / MQT vs plain LLaVA, vs the cost model."""

import argparse

from .count_arguments import comma_separated_counts


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--m3-config", default="bench-m3",
                        help="Architecture of the M3 / plain LLaVA models: a named one (bench-m3, m3-llava-1.5-7b, "
                             "llava-1.5-7b, ...), a checkpoint folder or config.json. Weights are random: speed only.")
    parser.add_argument("--mqt-config", default="bench-mqt", help="Architecture of the MQT model (same tower and LLM).")
    parser.add_argument("--m3-counts", type=comma_separated_counts, help="Default: the M3 scales.")
    parser.add_argument("--mqt-counts", type=comma_separated_counts, help="Default: M and the M3 scales below it.")
    parser.add_argument("--num-text-tokens", type=int, default=32)
    parser.add_argument("--decode-tokens", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=10, help="Interleaved repetitions (after --warmup).")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's).")
    parser.add_argument("--clock", choices=["wall", "cpu"],
                        help="wall time, or process CPU time (default on CPU with --threads 1: a shared machine's "
                             "other jobs then do not count).")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="Requests per batch (the serving view: images/s per k); default 1 (latency).")
    parser.add_argument("--compile", action="store_true",
                        help="Also measure every model on its fast path (enable_fast_path: torch.compile + static "
                             "cache), next to eager in the same run; compiling each count takes a while.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--output-dir", help="Write speed.json / speed.md / speed.png here.")


def run(args: argparse.Namespace) -> int:
    import torch

    from .architectures import load_architecture
    from .bench import bench_to_markdown, run_speed_benchmark, write_bench_outputs

    if args.threads:
        torch.set_num_threads(args.threads)
    from modeling_matryoshka_llava.visual_token_counts import resolve_num_visual_tokens, valid_num_visual_tokens

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}.")
    dtype = getattr(torch, args.dtype, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"--dtype {args.dtype!r} is not a torch dtype (e.g. float16, bfloat16, float32).")
    m3_config = load_architecture(args.m3_config)
    if getattr(m3_config, "model_type", None) == "llava":
        from modeling_matryoshka_llava import M3LlavaConfig

        m3_config = M3LlavaConfig(**m3_config.to_dict())
    mqt_config = load_architecture(args.mqt_config)
    for config, counts in ((m3_config, args.m3_counts), (mqt_config, args.mqt_counts)):
        if counts:  # checked before any model is built
            resolve_num_visual_tokens(counts, valid_num_visual_tokens(config), len(counts))
    result = run_speed_benchmark(
        m3_config, mqt_config, m3_counts=args.m3_counts, mqt_counts=args.mqt_counts,
        num_text_tokens=args.num_text_tokens, decode_tokens=args.decode_tokens, repeats=args.repeats,
        warmup=args.warmup, dtype=dtype, device=args.device, shape_name=f"{args.m3_config} / {args.mqt_config}",
        clock=args.clock, batch_size=args.batch_size, fast_path=args.compile,
    )
    print(bench_to_markdown(result))
    if args.output_dir:
        paths = write_bench_outputs(result, args.output_dir)
        print("Wrote " + ", ".join(str(path) for path in paths.values()))
    return 0
