"""Cost model: FLOPs / KV cache / activations counted on the meta device, checked against hand formulas."""

import json

import pytest
import torch

from matryoshka_llava.evaluation.architectures import llava_15_7b, llava_next_7b
from matryoshka_llava.evaluation.cost import PeakMemoryTracker, llava_next_visual_tokens, prefill_cost
from matryoshka_llava.cli import main

TEXT_TOKENS = 7


def hand_flops(config, count: int, num_text_tokens: int) -> tuple[int, int]:
    """(vision, LLM prefill) FLOPs by hand: 2 per multiply-add, full (non-causal) attention, logits of one token."""
    vision, text = config.vision_config, config.text_config
    patches = (vision.image_size // vision.patch_size) ** 2
    width, inner, tokens = vision.hidden_size, vision.intermediate_size, patches + 1  # + CLS
    tower = 2 * patches * 3 * vision.patch_size**2 * width + vision.num_hidden_layers * (
        4 * 2 * tokens * width * width + 2 * 2 * tokens * tokens * width + 2 * 2 * tokens * width * inner
    )
    hidden = text.hidden_size
    # MQT: queries and values in-projections, attention, out-projection, proj; its position-only keys are computed
    # once per model and reused by every request (the cost is the steady state).
    if config.model_type == "mqt_llava":
        projector = (2 * count * width * width + 2 * patches * width * width + 2 * 2 * count * patches * width
                     + 2 * count * width * width + 2 * count * width * hidden)
    else:
        projector = 2 * patches * (width * hidden + hidden * hidden)
    length = num_text_tokens + count
    kv_width = text.num_key_value_heads * hidden // text.num_attention_heads
    llm = text.num_hidden_layers * (
        2 * 2 * length * hidden * hidden + 2 * 2 * length * hidden * kv_width + 2 * 2 * length * length * hidden
        + 3 * 2 * length * hidden * text.intermediate_size
    ) + 2 * hidden * text.vocab_size
    return tower + projector, llm


def rope_angle_matmul(config, count: int, num_text_tokens: int) -> int:
    """transformers < 5.2x computes the RoPE angles as a (head_dim / 2, 1) @ (1, length) matmul, which the counter
    sees; newer releases broadcast a multiply, which it does not. The same products either way."""
    text = config.text_config
    return 2 * (text.hidden_size // text.num_attention_heads // 2) * (num_text_tokens + count)


@pytest.mark.parametrize("kind", ["m3", "mqt"])
def test_counted_flops_and_kv_cache_match_the_hand_formula(kind, m3_model, mqt_model):
    config = (m3_model if kind == "m3" else mqt_model).config
    counts = [1, 9, 36, 144, 576] if kind == "m3" else [1, 4, 16]
    cost = prefill_cost(config, counts, TEXT_TOKENS, dtype=torch.float32)
    assert [row["num_visual_tokens"] for row in cost["rows"]] == counts
    text = config.text_config
    for row in cost["rows"]:
        vision, llm = hand_flops(config, row["num_visual_tokens"], TEXT_TOKENS)
        assert row["vision_flops"] == vision
        assert row["llm_prefill_flops"] in (llm, llm + rope_angle_matmul(config, row["num_visual_tokens"], TEXT_TOKENS))
        kv_width = text.num_key_value_heads * text.hidden_size // text.num_attention_heads
        assert row["kv_cache_bytes"] == 2 * text.num_hidden_layers * (TEXT_TOKENS + row["num_visual_tokens"]) * kv_width * 4
        assert row["activation_bytes"] > 0
    activations = [row["llm_activation_bytes"] for row in cost["rows"]]
    assert activations == sorted(activations) and activations[0] < activations[-1]
    assert cost["rows"][-1]["flops_ratio_vs_largest_k"] == 1.0 and cost["rows"][0]["flops_ratio_vs_largest_k"] > 1.0


def test_peak_memory_tracker_follows_tensor_lifetimes():
    source = torch.empty(1000)  # created before the mode: not counted
    with PeakMemoryTracker() as tracker:
        a = source * 2  # 4000 B
        view = a.view(10, 100)  # shares a's storage
        del a  # still alive through the view
        b = view + 1  # 8000 B live
        del view  # a's storage is freed
        transposed = b.view(100, 10).t()
        c = torch.cat([b, b])  # 4000 + 8000 = 12000 B live: the peak
        source.mul_(2)  # in place on an uncounted tensor
    assert tracker.peak_bytes() == 12000
    assert tracker.peak_bytes(excluding=[c]) == 8000  # b alone, or a + b
    del transposed


def test_real_7b_shapes_on_the_meta_device():
    cost = prefill_cost(llava_15_7b(), [576], 30, config_name="llava-1.5-7b")
    full = cost["rows"][0]
    vision, llm = hand_flops(llava_15_7b(), 576, 30)
    assert full["vision_flops"] == vision
    assert full["llm_prefill_flops"] in (llm, llm + rope_angle_matmul(llava_15_7b(), 576, 30))
    assert full["kv_cache_bytes"] == 2 * 32 * 606 * 4096 * 2  # fp16
    assert cost["weight_bytes"] > 13 * 2**30


def test_llava_next_token_counts_follow_spec_3():
    config = llava_next_7b()
    assert [llava_next_visual_tokens(config, k, (672, 672))[0] for k in (1, 9, 576)] == [7, 51, 2928]
    assert llava_next_visual_tokens(config, 576, (672, 672))[1] == 5  # base + 2x2 crops
    # 336x800 (h x w) fits best in 336x1008: a 1x3 grid of 24x72 tokens, un-padded to 24 x 58 (800/336 * 24 = 57.1,
    # padding (72 - 57) // 2 = 7 per side), a newline per row, after the base crop's 576.
    assert llava_next_visual_tokens(config, 576, (336, 800)) == (576 + 24 * (58 + 1), 4)


def test_cost_cli_writes_the_contract(tmp_path, m3_model, capsys):
    m3_model.config.save_pretrained(tmp_path / "tiny")
    output = tmp_path / "cost.json"
    assert main(["cost", "--config", str(tmp_path / "tiny"), "--num-text-tokens", "5", "--num-visual-tokens", "576,9",
                 "--dtype", "float32", "--output", str(output)]) == 0
    assert "| visual tokens | LLM tokens |" in capsys.readouterr().out
    cost = json.loads(output.read_text())
    assert cost["num_text_tokens"] == 5 and isinstance(cost["config"], str)
    assert [row["num_visual_tokens"] for row in cost["rows"]] == [9, 576]
    for row in cost["rows"]:
        for key in ("llm_prefill_flops", "vision_flops", "kv_cache_bytes", "activation_bytes"):
            assert isinstance(row[key], int) and row[key] > 0, key
    assert output.with_suffix(".md").exists()
    assert main(["cost", "--config", str(tmp_path / "tiny"), "--num-visual-tokens", "100"]) == 2
    assert "error: num_visual_tokens" in capsys.readouterr().err
    assert main(["cost", "--config", str(tmp_path / "missing")]) == 2
    assert "named architecture" in capsys.readouterr().err
