"""M3 training step: vision tower + projector once and shared by all scales, vs the released code's naive loop of
one full forward per scale (tower included). Prints both step times, measured side by side, and their ratio.

The model keeps LLaVA-1.5-7B's balance between vision tower and language model: the tower's forward FLOPs per
image are ~4% of the language model's forward over (576 visual + text) tokens, as for CLIP ViT-L/336 vs
Vicuna-7B, at a size that trains on a CPU. The tower is frozen, as in the M3 recipe.

    python benchmarks/m3_training_step.py [--repeats 5] [--batch-size 4] [--text-tokens 96]
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


def naive_step(model, batch, scales):
    loss = sum(model(**batch, num_visual_tokens=scale).loss for scale in scales) / len(scales)
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
    times = {"shared (M3Trainer)": [], "naive loop (released code)": []}
    tower_calls = {}
    steps = {"shared (M3Trainer)": shared_step, "naive loop (released code)": naive_step}
    for name, step in steps.items():  # warm-up
        step(model, batch, scales)
        model.zero_grad(set_to_none=True)
    for _ in range(args.repeats):  # interleaved, so both see the same machine state
        for name, step in steps.items():
            calls["n"] = 0
            start = time.perf_counter()
            step(model, batch, scales)
            times[name].append(time.perf_counter() - start)
            tower_calls[name] = calls["n"]
            model.zero_grad(set_to_none=True)
    print(f"M3 training step, scales {scales}, batch {args.batch_size}, {args.text_tokens} text tokens, "
          f"{torch.get_num_threads()} threads, {args.repeats} interleaved repeats (median)")
    print(f"vision tower forward / language-model forward at 576 tokens (FLOPs): {share:.1%}")
    print(f"{'mode':<28}{'step s':>10}{'tower calls':>13}")
    for name, values in times.items():
        print(f"{name:<28}{statistics.median(values):>10.3f}{tower_calls[name]:>13}")
    ratio = statistics.median(times["naive loop (released code)"]) / statistics.median(times["shared (M3Trainer)"])
    print(f"speedup of the shared step over the naive loop: {ratio:.2f}x")


if __name__ == "__main__":
    main()
