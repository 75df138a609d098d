"""M3 training step: vision tower + projector once and the language model once per scale (the default), or once
for all scales (`pack_scales=True`: each sample's scale sequences packed in one row), vs the released code's naive
loop of one full forward per scale (tower included), and vs a single-scale (576) step. Prints the step times, measured side by side, and their ratios, among them the
issue's target: 5-scale step / (token ratio x single-scale step), where the token ratio is the language model's
tokens over all scales / at 576 alone (what the extra scales cannot avoid computing).

The model keeps LLaVA-1.5-7B's balance between vision tower and language model: the tower's forward FLOPs per
image are ~4% of the language model's forward over (576 visual + text) tokens, as for CLIP ViT-L/336 vs
Vicuna-7B, at a size that trains on a CPU. The tower is frozen, as in the M3 recipe.

    python benchmarks/m3_training_step.py [--repeats 5] [--batch-size 4] [--text-tokens 96]
    # writes benchmarks/results/m3_training_step.md
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import CLIPVisionConfig, LlamaConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from modeling_matryoshka_llava import M3LlavaConfig, M3LlavaForConditionalGeneration


def build_model() -> M3LlavaForConditionalGeneration:
    vision = CLIPVisionConfig(
        image_size=336, patch_size=14, hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
        num_attention_heads=4,
    )
    text = LlamaConfig(
        vocab_size=4096, hidden_size=768, intermediate_size=2048, num_hidden_layers=8, num_attention_heads=12,
        num_key_value_heads=12, max_position_embeddings=2048,
    )
    config = M3LlavaConfig(vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_index=4095)
    torch.manual_seed(0)
    model = M3LlavaForConditionalGeneration(config)
    model.model.vision_tower.requires_grad_(False)
    return model.train()


def make_batch(config, batch_size: int, text_tokens: int) -> dict:
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, 4000, (batch_size, text_tokens), generator=generator)
    input_ids[:, 8] = config.image_token_id  # one compact placeholder per sample
    labels = input_ids.clone()
    labels[:, : text_tokens // 2] = -100
    pixel_values = torch.randn(batch_size, 3, 336, 336, generator=generator)
    return {"input_ids": input_ids, "labels": labels, "pixel_values": pixel_values}


def shared_step(model, batch, scales):
    loss = model(**batch, multi_scale_num_visual_tokens=scales).loss
    loss.backward()
    return loss


def packed_step(model, batch, scales):
    loss = model(**batch, multi_scale_num_visual_tokens=scales, pack_scales=True).loss
    loss.backward()
    return loss


def naive_step(model, batch, scales):
    loss = sum(model(**batch, num_visual_tokens=scale).loss for scale in scales) / len(scales)
    loss.backward()
    return loss


def single_scale_step(model, batch, scales):
    loss = model(**batch, num_visual_tokens=max(scales)).loss
    loss.backward()
    return loss


def flops_share(model, batch) -> float:
    """Forward FLOPs of the tower over those of one language-model forward at 576 tokens (counted, not guessed)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as vision:
        model.model.encode_images(batch["pixel_values"][:1])
    with torch.no_grad(), FlopCounterMode(display=False) as full:
        model(**{key: value[:1] for key, value in batch.items()}, num_visual_tokens=576)
    return vision.get_total_flops() / (full.get_total_flops() - vision.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--text-tokens", type=int, default=96)
    args = parser.parse_args()
    model = build_model()
    scales = model.config.matryoshka_scales
    batch = make_batch(model.config, args.batch_size, args.text_tokens)
    share = flops_share(model, batch)
    calls = {"n": 0}
    model.model.vision_tower.register_forward_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    steps = {"tower once, LM per scale (default)": shared_step, "tower once, LM once, packed (--pack_scales)": packed_step,
             "naive loop (released code)": naive_step, f"single scale ({max(scales)})": single_scale_step}
    times = {name: [] for name in steps}
    tower_calls = {}
    for name, step in steps.items():  # warm-up
        step(model, batch, scales)
        model.zero_grad(set_to_none=True)
    for _ in range(args.repeats):  # interleaved, so every mode sees the same machine state
        for name, step in steps.items():
            calls["n"] = 0
            start = time.perf_counter()
            step(model, batch, scales)
            times[name].append(time.perf_counter() - start)
            tower_calls[name] = calls["n"]
            model.zero_grad(set_to_none=True)
    median = {name: statistics.median(values) for name, values in times.items()}
    per_scale, packed, naive, single = (median[name] for name in steps)
    token_ratio = sum(args.text_tokens - 1 + scale for scale in scales) / (args.text_tokens - 1 + max(scales))
    lines = [
        f"M3 training step, scales {scales}, batch {args.batch_size}, {args.text_tokens} text tokens, "
        f"{torch.get_num_threads()} threads, {args.repeats} interleaved repeats (median), CPU",
        f"vision tower forward / language-model forward at 576 tokens (FLOPs): {share:.1%}",
        "",
        "| mode | step s | tower calls |",
        "|---|---:|---:|",
        *[f"| {name} | {median[name]:.3f} | {tower_calls[name]} |" for name in steps],
        "",
        f"naive loop / default step: {naive / per_scale:.2f}x; naive loop / packed step: {naive / packed:.2f}x",
        f"token ratio (all scales / {max(scales)} alone): {token_ratio:.2f}x; step / (token ratio x single-scale "
        f"step), target <= 1.1: default {per_scale / (token_ratio * single):.2f}, packed "
        f"{packed / (token_ratio * single):.2f}",
    ]
    print("\n".join(lines))
    output = Path(__file__).parent / "results" / "m3_training_step.md"
    output.write_text("\n".join(lines) + "\n")
    print(f"Wrote {output}")


if __name__ == "__main__":
    main()
