"""Serving throughput per count: M3 under vLLM (k per request) next to transformers' batched `generate`, CPU.

    .venv-vllm/bin/python benchmarks/vllm_throughput.py    # ~5 minutes on 2 CPU cores; writes
                                                            # benchmarks/results/vllm_throughput.{md,json}
    .venv-vllm/bin/python benchmarks/vllm_throughput.py --family m3-next   # M3-LLaVA-NeXT, ~15 minutes;
                                                            # benchmarks/results/vllm_throughput_next.{md,json}

The model is the speed benchmark's LLaVA shape (`bench-m3`: CLIP-L's 336 px / patch 14 grid of 576 patches, a
narrower tower, a 6-layer Vicuna-layout LLM), random weights, fp32, with the demo's word-level tokenizer. Every
request has one image, the same prompt, and decodes exactly `--max-tokens` tokens (EOS ignored), so each count does
the same work apart from its visual tokens; vLLM's prefix and multimodal caches are off, so repeated rounds redo
the work as transformers does. M3-LLaVA-NeXT (`--family m3-next`) is the same shape with anyres crops; its images
are 336 x 672 (height x width), cut into a 1 x 2 grid plus the base crop, so k per crop gives k + sqrt(k) *
(2 sqrt(k) + 1) tokens (1752 at 576). Counts are interleaved within each engine (rounds of every count), so
load from other jobs hits every count alike; the two engines run one after the other (vLLM's engine process would
compete with transformers for the cores), so their ratio is less exact than the per-count speedups.
"""

import argparse
import os
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

COUNTS = [576, 144, 36, 9, 1]


FAMILIES = {  # --family -> (image (height, width), max_model_len, results file stem)
    "m3": ((336, 336), 1024, "vllm_throughput"),
    "m3-next": ((336, 672), 2048, "vllm_throughput_next"),
}


def build_model_folder(folder: Path, family: str) -> None:
    """bench-m3 (or its M3-LLaVA-NeXT twin) with random weights and the demo's tokenizer, as `save_pretrained`
    writes it."""
    from matryoshka_llava.demo.tiny_architecture import build_tiny_processor
    from matryoshka_llava.evaluation.architectures import bench_m3
    from modeling_matryoshka_llava import (
        M3LlavaForConditionalGeneration,
        M3LlavaNextConfig,
        M3LlavaNextForConditionalGeneration,
        MatryoshkaLlavaImageProcessor,
        MatryoshkaLlavaNextImageProcessor,
        MatryoshkaLlavaNextProcessor,
    )

    processor = build_tiny_processor()
    tokenizer = processor.tokenizer
    config = bench_m3()
    config.image_token_index = tokenizer.convert_tokens_to_ids("<image>")
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        setattr(config.text_config, name, getattr(tokenizer, name))
    side = config.vision_config.image_size
    crop = {"size": {"shortest_edge": side}, "crop_size": {"height": side, "width": side}}
    torch.manual_seed(0)
    if family == "m3":
        processor.image_processor = MatryoshkaLlavaImageProcessor(**crop)
        model = M3LlavaForConditionalGeneration(config)
    else:
        pinpoints = [[side, 2 * side], [2 * side, side], [2 * side, 2 * side]]
        model = M3LlavaNextForConditionalGeneration(M3LlavaNextConfig(
            vision_config=config.vision_config.to_dict(), text_config=config.text_config.to_dict(),
            image_token_index=config.image_token_index, image_grid_pinpoints=pinpoints))
        processor = MatryoshkaLlavaNextProcessor(
            image_processor=MatryoshkaLlavaNextImageProcessor(image_grid_pinpoints=pinpoints, **crop),
            tokenizer=tokenizer, chat_template=processor.chat_template)
    processor.set_model_counts(model.config)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def requests(processor, num_requests: int, image_size: tuple[int, int], seed: int = 0):
    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 256, (*image_size, 3), dtype=np.uint8)) for _ in range(num_requests)]
    from matryoshka_llava.processing import chat_prompt

    return images, chat_prompt(processor, "What colour is the background?")


def time_transformers(folder: Path, counts, num_requests: int, max_tokens: int, rounds: int, batch_size: int,
                      image_size: tuple[int, int]):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    images, prompt = requests(processor, num_requests, image_size)
    timings = {count: [] for count in counts}

    def run(count):
        for start in range(0, num_requests, batch_size):
            chunk = images[start : start + batch_size]
            inputs = processor(images=chunk, text=[prompt] * len(chunk), padding=True, return_tensors="pt")
            with torch.no_grad():
                model.generate(**inputs, num_visual_tokens=count, max_new_tokens=max_tokens,
                               min_new_tokens=max_tokens, do_sample=False)

    run(counts[-1])  # warm-up
    for _ in range(rounds):
        for count in counts:
            start = time.perf_counter()
            run(count)
            timings[count].append(time.perf_counter() - start)
    return timings


def time_vllm(folder: Path, counts, num_requests: int, max_tokens: int, rounds: int, image_size: tuple[int, int],
              max_model_len: int):
    from transformers import AutoProcessor
    from vllm import LLM, SamplingParams

    processor = AutoProcessor.from_pretrained(folder)
    images, prompt = requests(processor, num_requests, image_size)
    # Rounds repeat the same requests: without prefix caching and the multimodal processor cache, each round
    # does the whole work again, as transformers does (with them, later rounds reuse the first round's prefill).
    llm = LLM(model=str(folder), dtype="float32", max_model_len=max_model_len, seed=0,
              limit_mm_per_prompt={"image": 1},
              enable_prefix_caching=False, mm_processor_cache_gb=0)
    params = SamplingParams(temperature=0, max_tokens=max_tokens, min_tokens=max_tokens, ignore_eos=True,
                            detokenize=False)

    def batch(count_of):
        return [{"prompt": prompt, "multi_modal_data": {"image": image},
                 "mm_processor_kwargs": {"num_visual_tokens": count_of(index)}} for index, image in enumerate(images)]

    def run(prompts):
        outputs = llm.generate(prompts, params, use_tqdm=False)
        assert all(len(output.outputs[0].token_ids) == max_tokens for output in outputs)

    run(batch(lambda index: counts[-1]))  # warm-up
    timings = {count: [] for count in counts}
    timings["mixed"] = []
    for _ in range(rounds):
        for count in counts:
            start = time.perf_counter()
            run(batch(lambda index, count=count: count))
            timings[count].append(time.perf_counter() - start)
        start = time.perf_counter()
        run(batch(lambda index: counts[index % len(counts)]))  # one batch, every count in it
        timings["mixed"].append(time.perf_counter() - start)
    return timings


def prompt_lengths(folder: Path, image_size: tuple[int, int]) -> dict[str, int]:
    """Prompt tokens of one request at each count, as the processor expands them (what vLLM's prompt holds)."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(folder)
    images, prompt = requests(processor, 1, image_size)
    return {str(count): len(processor(images=images, text=prompt, num_visual_tokens=count)["input_ids"][0])
            for count in COUNTS}


def summarise(timings, num_requests: int, max_tokens: int) -> dict:
    return {str(count): {"seconds_median": statistics.median(values), "seconds_min": min(values),
                         "seconds_max": max(values), "requests_per_s": num_requests / statistics.median(values),
                         "output_tokens_per_s": num_requests * max_tokens / statistics.median(values)}
            for count, values in timings.items()}


def to_markdown(result: dict) -> str:
    vllm, hf = result["vllm"], result["transformers"]
    base_vllm, base_hf = vllm[str(COUNTS[0])]["requests_per_s"], hf[str(COUNTS[0])]["requests_per_s"]
    model = ("M3 (`bench-m3`" if result["family"] == "m3" else
             "M3-LLaVA-NeXT (`bench-m3` with anyres crops; one 336 x 672 image = base crop + 1 x 2 grid, "
             "k per crop")
    height, width = result["image_size"]
    lines = [
        f"{model}, random weights, fp32, CPU, {result['threads']} torch threads), {result['num_requests']} "
        f"requests of one {height} x {width} image, {result['max_tokens']} output tokens each; median of "
        f"{result['rounds']} rounds (min-max in brackets). Prompt tokens per request by k: "
        + ", ".join(f"{count}: {result['prompt_tokens'][str(count)]}" for count in COUNTS) + ".",
        "",
        "| visual tokens | vLLM req/s | vLLM out tok/s | vs 576 | transformers req/s | vs 576 | vLLM / transformers |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for count in COUNTS:
        v, h = vllm[str(count)], hf[str(count)]
        lines.append(
            f"| {count} | {v['requests_per_s']:.2f} ({result['num_requests'] / v['seconds_max']:.2f}-"
            f"{result['num_requests'] / v['seconds_min']:.2f}) | {v['output_tokens_per_s']:.1f} | "
            f"{v['requests_per_s'] / base_vllm:.2f}x | {h['requests_per_s']:.2f} | {h['requests_per_s'] / base_hf:.2f}x | "
            f"{v['requests_per_s'] / h['requests_per_s']:.2f}x |"
        )
    mixed = vllm["mixed"]
    lines.append(f"| mixed ({', '.join(map(str, COUNTS))} in one batch) | {mixed['requests_per_s']:.2f} | "
                 f"{mixed['output_tokens_per_s']:.1f} | | | | |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16, help="transformers' generate batch size")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--family", choices=sorted(FAMILIES), default="m3")
    parser.add_argument("--output-dir", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB of KV cache; vLLM's default 4 is more than needed
    image_size, max_model_len, stem = FAMILIES[args.family]
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "bench-m3"
        build_model_folder(folder, args.family)
        prompt_tokens = prompt_lengths(folder, image_size)
        hf = time_transformers(folder, COUNTS, args.num_requests, args.max_tokens, args.rounds, args.batch_size,
                               image_size)
        vllm = time_vllm(folder, COUNTS, args.num_requests, args.max_tokens, args.rounds, image_size, max_model_len)
    import vllm as vllm_package
    import transformers

    result = {"family": args.family, "image_size": list(image_size), "prompt_tokens": prompt_tokens,
              "num_requests": args.num_requests, "max_tokens": args.max_tokens, "rounds": args.rounds,
              "threads": args.threads, "vllm_version": vllm_package.__version__,
              "transformers_version": transformers.__version__, "torch_version": torch.__version__,
              "transformers": summarise(hf, args.num_requests, args.max_tokens),
              "vllm": summarise(vllm, args.num_requests, args.max_tokens)}
    table = to_markdown(result)
    print(table)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (output / f"{stem}.md").write_text(table)
    print(f"Wrote {output / f'{stem}.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
