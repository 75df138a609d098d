"""Speed benchmark: time-to-first-token, vision time and decode speed per k for M3 and MQT against transformers'
plain `LlavaForConditionalGeneration` at the full grid, set side by side with the cost model's FLOPs.

Fairness: the three models share the vision tower and language model weights (M3 and plain LLaVA are identical
at the full grid); every repetition measures every (model, k) once, in an order rotated each repetition so no
configuration always runs first or last; after a warm-up pass, statistics are medians over repetitions, and the
Matryoshka overhead is the median of per-repetition paired ratios (M3 and plain LLaVA measured back to back).
The benchmark times, it does not assert: no timing is hard-coded anywhere.
"""

import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from transformers import LlavaConfig, LlavaForConditionalGeneration

from matryoshka_llava.formatting import human_count

from modeling_matryoshka_llava import M3LlavaForConditionalGeneration, MQTLlavaForConditionalGeneration
from modeling_matryoshka_llava.visual_token_counts import comparison_counts

from .cost import prefill_cost
from .report import save_figure


def build_bench_models(m3_config, mqt_config, *, seed: int = 0, dtype: torch.dtype = torch.float32, device="cpu"):
    """(plain LLaVA, M3, MQT) with random weights; the tower and LLM are the same tensors values in all three."""
    torch.manual_seed(seed)
    m3 = M3LlavaForConditionalGeneration(m3_config)
    llava_config = LlavaConfig(
        vision_config=m3_config.vision_config.to_dict(), text_config=m3_config.text_config.to_dict(),
        image_token_index=m3_config.image_token_id, vision_feature_layer=m3_config.vision_feature_layer,
        vision_feature_select_strategy=m3_config.vision_feature_select_strategy,
        image_seq_length=m3_config.image_seq_length,
    )
    llava = LlavaForConditionalGeneration(llava_config)
    llava.load_state_dict(m3.state_dict(), strict=True)
    mqt = MQTLlavaForConditionalGeneration(mqt_config)
    shared = {key: value for key, value in m3.state_dict().items() if "multi_modal_projector" not in key}
    missing, unexpected = mqt.load_state_dict(shared, strict=False)
    if unexpected or any("multi_modal_projector" not in key for key in missing):
        raise ValueError("The MQT config's tower / language model do not match the M3 config's.")
    return tuple(model.to(device=device, dtype=dtype).eval() for model in (llava, m3, mqt))


def bench_inputs(config, num_text_tokens: int, *, seed: int = 0, dtype=torch.float32, device="cpu",
                 batch_size: int = 1) -> dict:
    """One image and a prompt of `num_text_tokens` text tokens around one compact `<image>` placeholder, the same
    prompt with the placeholder expanded to the full grid (what plain LLaVA takes), and a text-only prompt whose
    prefixes time the plain language model at any sequence length; each repeated `batch_size` times (the serving
    view: that many requests in one batch)."""
    if num_text_tokens < 2:
        raise ValueError("num_text_tokens must be >= 2 (a token before and after the image).")
    generator = torch.Generator().manual_seed(seed)
    text = config.text_config
    special = {config.image_token_id, text.pad_token_id, text.bos_token_id, text.eos_token_id}
    ordinary = torch.tensor([i for i in range(min(text.vocab_size, config.image_token_id)) if i not in special])
    tokens = ordinary[torch.randint(len(ordinary), (num_text_tokens,), generator=generator)]
    before, after = tokens[: num_text_tokens // 3], tokens[num_text_tokens // 3 :]
    image = torch.tensor([config.image_token_id])
    full = config.image_seq_length
    vision = config.vision_config
    longest = num_text_tokens + full
    text_only = ordinary[torch.randint(len(ordinary), (longest,), generator=generator)]
    pixel_values = torch.randn(1, 3, vision.image_size, vision.image_size, generator=generator).to(device, dtype)
    return {
        "text_only_ids": text_only.repeat(batch_size, 1).to(device),  # prompts of any length up to text + full grid
        "compact_ids": torch.cat([before, image, after]).repeat(batch_size, 1).to(device),
        "expanded_ids": torch.cat([before, image.repeat(full), after]).repeat(batch_size, 1).to(device),
        "pixel_values": pixel_values.repeat(batch_size, 1, 1, 1),
    }


def enable_llava_fast_path(llava, **compile_kwargs):
    """transformers' plain LLaVA on the same fast path as ours: `enable_fast_path` only touches what LLaVA has too
    (`model.vision_tower`, `model.language_model`, `generation_config`), so it is applied as it is."""
    return M3LlavaForConditionalGeneration.enable_fast_path(llava, **compile_kwargs)


def measure_device_rates(device="cpu", dtype=torch.float32, repeats: int = 5) -> dict:
    """What the roofline floors divide by, measured on the device at the start of the run: memory copy bandwidth
    (bytes read + written per second, a 64 MiB tensor) and dense matmul rate (FLOP/s, 2048 x 2048 in `dtype`);
    the best of `repeats` each."""
    element = torch.empty(0, dtype=dtype).element_size()
    source = torch.empty((64 << 20) // element, dtype=dtype, device=device).normal_()
    target = torch.empty_like(source)
    a = torch.randn(2048, 2048, dtype=dtype, device=device)
    b = torch.randn(2048, 2048, dtype=dtype, device=device)
    copy, matmul = [], []
    for _ in range(repeats + 1):  # the first of each is a warm-up
        copy.append(_timed(lambda: target.copy_(source), device, time.perf_counter))
        matmul.append(_timed(lambda: a @ b, device, time.perf_counter))
    return {"copy_bytes_per_s": 2 * source.numel() * element / min(copy[1:]),
            "matmul_flops_per_s": 2 * 2048**3 / min(matmul[1:])}


def _synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


FAST = "+fast"  # the suffix of a model on its fast path (compiled, static cache)

CLOCKS = {
    # Wall-clock time: what a user waits for; on a machine shared with other jobs it also counts their time slices.
    "wall": time.perf_counter,
    # CPU time of this process: the work done, unaffected by being descheduled (meaningful with one torch thread).
    "cpu": time.process_time,
}


def _timed(function, device, clock) -> float:
    _synchronize(device)
    start = clock()
    with torch.inference_mode():
        function()
    _synchronize(device)
    return clock() - start


class _TokenClock:
    """A logits processor that only records when each token's logits are ready (the forward pass just ended)."""

    def __init__(self, device, clock):
        self.device, self.clock, self.stamps = device, clock, []

    def __call__(self, input_ids, scores):
        _synchronize(self.device)
        self.stamps.append(self.clock())
        return scores


def _measure(model, kind: str, count: int, inputs: dict, decode_tokens: int, device, clock) -> dict:
    """One generation of 1 + decode_tokens tokens: seconds to the first token's logits and per decoded token; and
    the seconds of the vision side alone (tower, projector, reduction)."""
    from transformers import LogitsProcessorList

    if kind == "llava":
        generate_inputs = {"input_ids": inputs["expanded_ids"], "pixel_values": inputs["pixel_values"]}
        config = model.config

        def vision():
            model.model.get_image_features(
                inputs["pixel_values"], vision_feature_layer=config.vision_feature_layer,
                vision_feature_select_strategy=config.vision_feature_select_strategy,
            )
    else:
        generate_inputs = {"input_ids": inputs["compact_ids"], "pixel_values": inputs["pixel_values"],
                           "num_visual_tokens": count}

        def vision():
            model.model.get_image_features(inputs["pixel_values"], num_visual_tokens=count)

    stamps = _TokenClock(device, clock)
    new_tokens = 1 + decode_tokens
    _synchronize(device)
    start = clock()
    with torch.inference_mode():
        model.generate(**generate_inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                       num_beams=1, pad_token_id=model.config.text_config.pad_token_id,
                       logits_processor=LogitsProcessorList([stamps]))
    if len(stamps.stamps) != new_tokens:
        raise RuntimeError(f"Expected {new_tokens} generation steps, timed {len(stamps.stamps)}.")
    return {
        "ttft": stamps.stamps[0] - start,
        "decode_per_token": (stamps.stamps[-1] - stamps.stamps[0]) / decode_tokens,
        "vision": _timed(vision, device, clock),
    }


def _measure_plain_llm(llava, input_ids: torch.Tensor, device, clock) -> dict:
    """TTFT of transformers' plain LLaVA on a text-only prompt: its language model alone at that length."""
    from transformers import LogitsProcessorList

    stamps = _TokenClock(device, clock)
    _synchronize(device)
    start = clock()
    with torch.inference_mode():
        llava.generate(input_ids=input_ids, max_new_tokens=1, do_sample=False, num_beams=1,
                       pad_token_id=llava.config.text_config.pad_token_id, logits_processor=LogitsProcessorList([stamps]))
    return {"ttft": stamps.stamps[0] - start}


def run_speed_benchmark(
    m3_config,
    mqt_config,
    *,
    m3_counts: list[int] | None = None,
    mqt_counts: list[int] | None = None,
    num_text_tokens: int = 32,
    decode_tokens: int = 8,
    repeats: int = 10,
    warmup: int = 1,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    shape_name: str = "custom",
    clock: str | None = None,
    progress: bool = True,
    batch_size: int = 1,
    fast_path: bool = False,
) -> dict:
    """Measure every (model, k), `repeats` times interleaved; return raw times, medians and the comparisons.

    clock: "wall" or "cpu" (process CPU time); default "cpu" on CPU with one torch thread (robust on a shared
    machine: time slices given to other jobs are not counted), else "wall".
    batch_size: requests per batch (the same image and prompt); rows then also give images per second.
    fast_path: also measure every model on its fast path (`enable_fast_path`: compiled, static cache), next to
    eager, interleaved with it; the warm-up pass compiles each count.
    Each row carries its roofline floor: (weights + KV cache bytes) / measured copy bandwidth and FLOPs / measured
    matmul rate, whichever is larger, and measured TTFT / floor.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1.")
    if repeats < 1 or decode_tokens < 1:
        raise ValueError("repeats and decode_tokens must be >= 1.")
    if clock is None:
        clock = "cpu" if torch.device(device).type == "cpu" and torch.get_num_threads() == 1 else "wall"
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {sorted(CLOCKS)}, got {clock!r}.")
    rates = measure_device_rates(device, dtype)
    llava, m3, mqt = build_bench_models(m3_config, mqt_config, dtype=dtype, device=device)
    full = m3_config.image_seq_length
    m3_counts = sorted(set(m3_counts or comparison_counts(m3_config)), reverse=True)
    mqt_full = mqt_config.num_queries
    mqt_counts = sorted(set(mqt_counts or [mqt_full] + [k for k in m3_counts if k < mqt_full]), reverse=True)
    m3.model.resolve_num_visual_tokens(m3_counts, len(m3_counts))
    mqt.model.resolve_num_visual_tokens(mqt_counts, len(mqt_counts))
    inputs = bench_inputs(m3_config, num_text_tokens, dtype=dtype, device=device, batch_size=batch_size)

    configurations = [("llava", full)] + [("m3", k) for k in m3_counts] + [("mqt", k) for k in mqt_counts]
    models = {"llava": llava, "m3": m3, "mqt": mqt, "plain_llm": llava}
    if fast_path:
        fast = build_bench_models(m3_config, mqt_config, dtype=dtype, device=device)
        models.update({"llava" + FAST: enable_llava_fast_path(fast[0]), "m3" + FAST: fast[1].enable_fast_path(),
                       "mqt" + FAST: fast[2].enable_fast_path()})
        configurations += [(kind + FAST, count) for kind, count in configurations]
    # References: the plain language model at each sequence length the configurations give it.
    lengths = sorted({num_text_tokens + count for _, count in configurations})
    configurations += [("plain_llm", length) for length in lengths]
    samples = {configuration: [] for configuration in configurations}
    from tqdm.auto import tqdm

    total = (warmup + repeats) * len(configurations)
    with tqdm(total=total, desc="bench", unit="run", disable=not progress) as bar:
        for repetition in range(warmup + repeats):
            shift = repetition % len(configurations)
            for kind, count in configurations[shift:] + configurations[:shift]:
                if kind == "plain_llm":
                    measured = _measure_plain_llm(llava, inputs["text_only_ids"][:, :count], device, CLOCKS[clock])
                else:
                    measured = _measure(models[kind], base_kind(kind), count, inputs, decode_tokens, device,
                                        CLOCKS[clock])
                if repetition >= warmup:
                    samples[(kind, count)].append({**measured, "repetition": repetition - warmup})
                bar.update(1)

    cost_m3 = prefill_cost(m3_config, m3_counts, num_text_tokens, dtype=dtype, config_name="m3")
    cost_mqt = prefill_cost(mqt_config, mqt_counts, num_text_tokens, dtype=dtype, config_name="mqt")
    flops = {("m3", row["num_visual_tokens"]): row for row in cost_m3["rows"]}
    flops.update({("mqt", row["num_visual_tokens"]): row for row in cost_mqt["rows"]})
    flops[("llava", full)] = flops[("m3", full)]
    full_of = {"llava": full, "m3": max(m3_counts), "mqt": max(mqt_counts)}
    weight_bytes = {kind: sum(p.numel() * p.element_size() for p in models[kind].parameters()) for kind in full_of}

    plain_llm = {length: statistics.median(run["ttft"] for run in samples[("plain_llm", length)]) for length in lengths}
    rows = []
    for kind, count in configurations:
        if kind == "plain_llm":
            continue
        runs = samples[(kind, count)]
        ttft = statistics.median(run["ttft"] for run in runs)
        vision = statistics.median(run["vision"] for run in runs)
        decode = statistics.median(run["decode_per_token"] for run in runs)
        cost = flops[(base_kind(kind), count)]
        # The prefill cannot beat reading the weights and writing the KV cache once, nor its FLOPs at the measured
        # matmul rate (the batch multiplies FLOPs and KV bytes, not the weights).
        bytes_moved = weight_bytes[base_kind(kind)] + batch_size * cost["kv_cache_bytes"]
        floor = max(bytes_moved / rates["copy_bytes_per_s"], batch_size * cost["total_flops"] / rates["matmul_flops_per_s"])
        rows.append({"model": kind, "num_visual_tokens": count, "ttft_s": ttft, "vision_s": vision,
                     "fast_path": kind.endswith(FAST), "images_per_s": batch_size / ttft,
                     "floor_s": floor, "ttft_over_floor": ttft / floor,
                     # per repetition (vision and TTFT measured back to back), not a ratio of two medians
                     "vision_share": statistics.median(run["vision"] / run["ttft"] for run in runs), "llm_prefill_s": ttft - vision, "decode_tokens_per_s": 1.0 / decode,
                     "ttft_iqr_s": _iqr([run["ttft"] for run in runs]), "total_flops": cost["total_flops"],
                     "llm_prefill_flops": cost["llm_prefill_flops"], "vision_flops": cost["vision_flops"],
                     "plain_llm_ttft_s": plain_llm[num_text_tokens + count],
                     # ~1.0 when the whole TTFT is the vision side plus what the plain LLM needs at that length.
                     "ttft_over_components": ttft / (vision + plain_llm[num_text_tokens + count])})
    by_key = {(row["model"], row["num_visual_tokens"]): row for row in rows}
    for row in rows:
        reference = by_key[(row["model"], full_of[base_kind(row["model"])])]
        row["speedup_vs_full"] = reference["ttft_s"] / row["ttft_s"]
        row["flops_ratio_vs_full"] = reference["total_flops"] / row["total_flops"]
        row["speedup_over_flops_ratio"] = row["speedup_vs_full"] / row["flops_ratio_vs_full"]
        llava_row = by_key[("llava" + (FAST if row["fast_path"] else ""), full)]
        row["speedup_vs_plain_llava"] = llava_row["ttft_s"] / row["ttft_s"]

    paired = _paired_ratios(samples[("m3", full)], samples[("llava", full)])
    if fast_path:
        paired["fast_path"] = _paired_ratios(samples[("m3" + FAST, full)], samples[("llava" + FAST, full)])
    return {
        "shape": shape_name,
        "device": _describe_device(device),
        "dtype": str(dtype).replace("torch.", ""),
        "torch_threads": torch.get_num_threads(),
        "clock": clock,
        "num_text_tokens": num_text_tokens,
        "decode_tokens": decode_tokens,
        "batch_size": batch_size,
        "fast_path": fast_path,
        "device_rates": rates,
        "repeats": repeats,
        "warmup": warmup,
        "parameters": {kind: sum(p.numel() for p in models[kind].parameters()) for kind in ("llava", "m3", "mqt")},
        "weight_bytes": weight_bytes,
        "plain_llm_ttft_s": {str(length): seconds for length, seconds in plain_llm.items()},
        "rows": rows,
        "overhead_at_full": paired,
        "samples": {f"{kind}@{count}": runs for (kind, count), runs in samples.items()},
        "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
    }


def base_kind(kind: str) -> str:
    return kind.removesuffix(FAST)


def _iqr(values: list[float]) -> float:
    if len(values) < 4:
        return max(values) - min(values)
    quartiles = statistics.quantiles(values, n=4)
    return quartiles[2] - quartiles[0]


def _paired_ratios(ours: list[dict], plain: list[dict]) -> dict:
    """Matryoshka path vs plain LLaVA at the full grid: medians of per-repetition ratios minus 1."""
    ttft = [a["ttft"] / b["ttft"] for a, b in zip(ours, plain)]
    decode = [a["decode_per_token"] / b["decode_per_token"] for a, b in zip(ours, plain)]
    return {
        "ttft_overhead": statistics.median(ttft) - 1,
        "ttft_overhead_iqr": _iqr(ttft),
        "decode_time_overhead": statistics.median(decode) - 1,
        "decode_time_overhead_iqr": _iqr(decode),
    }


def _describe_device(device) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} logical cores)"


_NAMES = {"llava": "plain LLaVA", "m3": "M3", "mqt": "MQT"}


def model_label(kind: str) -> str:
    return _NAMES[base_kind(kind)] + (" (fast path)" if kind.endswith(FAST) else "")


UNSTABLE = "unstable"  # marks a measurement whose spread (IQR) exceeds its median
SHARE_NOISE = "timed alone"  # marks a vision time that exceeded the whole TTFT it is part of


def bench_to_markdown(result: dict) -> str:
    overhead = result["overhead_at_full"]
    params = result["parameters"]
    rates = result["device_rates"]
    full = next(row["num_visual_tokens"] for row in result["rows"] if row["model"] == "llava")
    lines = [
        (f"Speed benchmark, shape `{result['shape']}` (plain LLaVA / M3 {human_count(params['m3'])} parameters, MQT "
        f"{human_count(params['mqt'])}) on {result['device']}, {result['dtype']}, {result['torch_threads']} torch "
        f"threads; 1 image + {result['num_text_tokens']} text tokens, {result['decode_tokens']} decoded tokens. "
        f"Clock: {'process CPU time' if result['clock'] == 'cpu' else 'wall time'}. "
        f"{result['repeats']} repetitions after {result['warmup']} warm-up, all configurations interleaved (order "
        "rotated each repetition); medians. Speedup: TTFT at the model's full count / TTFT at k; FLOPs ratio: "
        "the cost model's (vision + LLM prefill) FLOPs at full / at k. Plain LLM at same length: transformers' "
        "plain LLaVA's TTFT on a text-only prompt as long as the model's LLM input (text + visual tokens), so "
        "TTFT / (vision + plain LLM) isolates what the Matryoshka path itself costs (1.00 = nothing). TTFT and "
        "decode speed are timed inside one generate call (a logits processor stamps each step)."),
        "",
        (f"Batch: {result['batch_size']} requests per call (images/s = batch / TTFT). Roofline floor of a prefill: "
         "the larger of (weights + KV-cache bytes) / copy bandwidth and FLOPs / matmul rate, both measured on this "
         f"device at the start of the run ({rates['copy_bytes_per_s'] / 1e9:.1f} GB/s, "
         f"{rates['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s); TTFT / floor = 1 is as fast as the device allows."
         + (" Fast path: `enable_fast_path()` (compiled vision tower and language model, static cache), plain "
            "LLaVA likewise." if result["fast_path"] else "")),
        "",
        ("| model | visual tokens | TTFT ms (IQR) | images/s | floor ms | TTFT / floor | vision ms (share) | "
         "plain LLM at same length ms | TTFT / (vision + plain LLM) | decode tok/s | speedup vs full | FLOPs ratio | "
         f"speedup / FLOPs ratio | speedup vs plain LLaVA@{full} |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    unstable = [row for row in result["rows"] if row["ttft_iqr_s"] > row["ttft_s"]]
    noisy_share = [row for row in result["rows"] if row["vision_share"] > 1]
    for row in result["rows"]:
        ttft_flag = f" {UNSTABLE}" if row in unstable else ""
        share = f"{100 * row['vision_share']:.0f}%" + (f", {SHARE_NOISE}" if row in noisy_share else "")
        lines.append(
            f"| {model_label(row['model'])} | {row['num_visual_tokens']} | {1e3 * row['ttft_s']:.1f} "
            f"({1e3 * row['ttft_iqr_s']:.1f}){ttft_flag} | {row['images_per_s']:.1f} | {1e3 * row['floor_s']:.1f} | "
            f"{row['ttft_over_floor']:.1f} | {1e3 * row['vision_s']:.1f} ({share}) | "
            f"{1e3 * row['plain_llm_ttft_s']:.1f} | {row['ttft_over_components']:.2f} | "
            f"{row['decode_tokens_per_s']:.1f} | {row['speedup_vs_full']:.2f}x | {row['flops_ratio_vs_full']:.2f}x | "
            f"{row['speedup_over_flops_ratio']:.2f} | {row['speedup_vs_plain_llava']:.2f}x |"
        )
    lines += [
        "",
        (f"Matryoshka-path overhead at full tokens (M3@{result['rows'][0]['num_visual_tokens']} vs plain LLaVA, median "
        f"of paired per-repetition ratios): TTFT {100 * overhead['ttft_overhead']:+.2f}% (IQR "
        f"{100 * overhead['ttft_overhead_iqr']:.2f} points), decode time per token "
        f"{100 * overhead['decode_time_overhead']:+.2f}% (IQR {100 * overhead['decode_time_overhead_iqr']:.2f} points). "
        "Targets: overhead <= 2%, speedup / FLOPs ratio >= 0.9."),
    ]
    if "fast_path" in overhead:
        fast = overhead["fast_path"]
        lines += ["", (f"On the fast path: TTFT {100 * fast['ttft_overhead']:+.2f}% (IQR "
                       f"{100 * fast['ttft_overhead_iqr']:.2f} points), decode time per token "
                       f"{100 * fast['decode_time_overhead']:+.2f}%.")]
    if unstable:
        lines += ["", (f"`{UNSTABLE}`: {len(unstable)} TTFT measurements spread (IQR) more than their median; other "
                       "jobs shared the machine. Their ratios are not to be trusted: rerun with more --repeats, or with "
                       "--threads 1 (process CPU time).")]
    if noisy_share:
        lines += ["", (f"`{SHARE_NOISE}`: the vision side, timed on its own right after the generation, took longer "
                       "than the whole TTFT it is part of (caches were cold, or the machine busier): at this model "
                       "size read it as 'nearly all of the TTFT'.")]
    return "\n".join(lines) + "\n"


def plot_bench(result: dict, path: str | os.PathLike) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    kinds = [("m3", "o"), ("mqt", "s"), ("llava", "*")]
    if result.get("fast_path"):
        kinds += [(kind + FAST, marker) for kind, marker in kinds]
    for kind, marker in kinds:
        rows = [row for row in result["rows"] if row["model"] == kind]
        counts = [row["num_visual_tokens"] for row in rows]
        line = left.plot(counts, [1e3 * row["ttft_s"] for row in rows], marker=marker, markersize=10 if kind == "llava" else 6,
                         linestyle="-" if len(rows) > 1 else "none", label=f"{model_label(kind)} TTFT")[0]
        if len(rows) > 1:
            full = max(rows, key=lambda row: row["num_visual_tokens"])
            left.plot(counts, [1e3 * full["ttft_s"] / row["flops_ratio_vs_full"] for row in rows], linestyle=":",
                      color=line.get_color(), label=f"{model_label(kind)} FLOPs-proportional")
            left.plot(counts, [1e3 * (row["vision_s"] + row["plain_llm_ttft_s"]) for row in rows], linestyle="--",
                      color=line.get_color(), alpha=0.6, label=f"{model_label(kind)} vision + plain LLM")
            right.plot(counts, [row["speedup_over_flops_ratio"] for row in rows], marker=marker, label=model_label(kind))
    left.set(xscale="log", xlabel="visual tokens (log scale)", ylabel="time to first token (ms)", title="TTFT")
    right.axhline(0.9, color="grey", linestyle="--", label="target 0.9")
    right.set(xscale="log", xlabel="visual tokens (log scale)", ylabel="speedup / FLOPs ratio",
              title="measured speedup relative to the FLOPs prediction")
    counts = sorted({row["num_visual_tokens"] for row in result["rows"]})
    for axis in (left, right):
        axis.set_xticks(counts, [str(count) for count in counts])
        axis.minorticks_off()
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(f"Speed per visual-token count ({result['device']})")
    return save_figure(figure, path)


def write_bench_outputs(result: dict, output_dir: str | os.PathLike, stem: str = "speed") -> dict[str, Path]:
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": output_dir / f"{stem}.json", "markdown": output_dir / f"{stem}.md", "plot": output_dir / f"{stem}.png"}
    paths["json"].write_text(json.dumps(result, indent=2) + "\n")
    paths["markdown"].write_text(bench_to_markdown(result))
    plot_bench(result, paths["plot"])
    return paths
