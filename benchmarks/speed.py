"""Speed benchmark of this repository: M3 and MQT at each k vs transformers' plain LLaVA at 576, on CPU.

    python benchmarks/speed.py            # ~4 minutes on 2 CPU cores; writes benchmarks/results/speed.{md,json,png}

The model is LLaVA-shaped (`evaluation.architectures.bench_m3` / `bench_mqt`: CLIP-L's 336 px / patch 14 grid of
576 patches, a narrower 4-layer tower, a 6-layer Vicuna-layout LLM with the 32064-token vocabulary), random
weights. `matryoshka-llava bench --help` runs the same benchmark on any other shape (e.g. the 7B ones on a GPU).

One torch thread and the process CPU-time clock by default: on two cores shared with other jobs, two OpenMP threads
spin at every barrier while the other is descheduled (decode was 4-8x slower and erratic in trials here), and wall
time counts the other jobs' time slices (interquartile ranges larger than the medians in a trial at load 6). With one
thread, CPU time measures our work; `--clock wall` measures wall time instead.
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from matryoshka_llava.evaluation.architectures import bench_m3, bench_mqt
from matryoshka_llava.evaluation.bench import bench_to_markdown, run_speed_benchmark, write_bench_outputs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--decode-tokens", type=int, default=8)
    parser.add_argument("--clock", choices=["wall", "cpu"], default=None)
    parser.add_argument("--num-text-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--compile", action="store_true", help="Also the fast path (compiled, static cache).")
    parser.add_argument("--stem", default="speed", help="Output file names: STEM.md / .json / .png.")
    parser.add_argument("--output-dir", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = run_speed_benchmark(
        bench_m3(), bench_mqt(), num_text_tokens=args.num_text_tokens, decode_tokens=args.decode_tokens,
        repeats=args.repeats, shape_name="bench-m3 / bench-mqt", clock=args.clock, batch_size=args.batch_size,
        fast_path=args.compile,
    )
    print(bench_to_markdown(result))
    paths = write_bench_outputs(result, args.output_dir, stem=args.stem)
    print("Wrote " + ", ".join(str(path) for path in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
