"""Speed benchmark plumbing on tiny shapes: fair model set-up, the measured grid, the comparison table. Times are
recorded, never asserted."""

import json

import torch

from matryoshka_llava.cli import main
from matryoshka_llava.evaluation.bench import bench_inputs, bench_to_markdown, build_bench_models, run_speed_benchmark
from matryoshka_llava.formatting import human_count


def test_benchmarked_models_share_weights_and_agree_at_the_full_grid(m3_model, mqt_model):
    llava, m3, mqt = build_bench_models(m3_model.config, mqt_model.config)
    inputs = bench_inputs(m3.config, 12)
    assert inputs["expanded_ids"].shape[1] == 12 + 576 and inputs["compact_ids"].shape[1] == 12 + 1
    with torch.no_grad():
        plain = llava(input_ids=inputs["expanded_ids"], pixel_values=inputs["pixel_values"]).logits
        ours = m3(input_ids=inputs["compact_ids"], pixel_values=inputs["pixel_values"], num_visual_tokens=576).logits
    assert torch.allclose(plain, ours, atol=1e-5)
    shared = [key for key in m3.state_dict() if "multi_modal_projector" not in key]
    assert all(torch.equal(m3.state_dict()[key], mqt.state_dict()[key]) for key in shared)


def test_benchmark_measures_every_configuration_and_compares_with_the_cost_model(m3_model, mqt_model):
    result = run_speed_benchmark(m3_model.config, mqt_model.config, m3_counts=[576, 9], mqt_counts=[16, 4],
                                 num_text_tokens=8, decode_tokens=2, repeats=2, warmup=0, progress=False)
    keys = [(row["model"], row["num_visual_tokens"]) for row in result["rows"]]
    assert keys == [("llava", 576), ("m3", 576), ("m3", 9), ("mqt", 16), ("mqt", 4)]
    assert all(len(runs) == 2 for runs in result["samples"].values())
    # Every repetition ran each configuration once; the order rotated between repetitions.
    assert [run["repetition"] for run in result["samples"]["m3@9"]] == [0, 1]
    rows = {key: row for key, row in zip(keys, result["rows"])}
    for row in result["rows"]:
        assert row["ttft_s"] > 0 and row["vision_s"] > 0 and row["decode_tokens_per_s"] > 0
        assert row["speedup_over_flops_ratio"] == row["speedup_vs_full"] / row["flops_ratio_vs_full"]
        assert row["ttft_over_components"] == row["ttft_s"] / (row["vision_s"] + row["plain_llm_ttft_s"])
    # The plain-LLM references ran at every LLM input length: 8 text tokens + each count.
    assert sorted(int(length) for length in result["plain_llm_ttft_s"]) == [8 + 4, 8 + 9, 8 + 16, 8 + 576]
    assert rows[("m3", 576)]["flops_ratio_vs_full"] == 1.0 and rows[("m3", 9)]["flops_ratio_vs_full"] > 1.0
    assert rows[("llava", 576)]["total_flops"] == rows[("m3", 576)]["total_flops"]
    assert set(result["overhead_at_full"]) == {"ttft_overhead", "ttft_overhead_iqr", "decode_time_overhead",
                                               "decode_time_overhead_iqr"}
    # Measurements that cannot be trusted say so in the table.
    table = bench_to_markdown(result)
    assert "plain LLaVA@576" in table and f"M3 {human_count(result['parameters']['m3'])} parameters" in table
    steady = [{**row, "ttft_iqr_s": 0.0, "vision_share": 0.5} for row in result["rows"]]
    steady[2] = {**steady[2], "ttft_iqr_s": 2 * steady[2]["ttft_s"], "vision_share": 1.3}
    table = bench_to_markdown({**result, "rows": steady})
    assert "unstable |" in table and "1 TTFT measurements spread (IQR) more than their median" in table
    assert "(130%, timed alone)" in table and "took longer than the whole TTFT" in table


def test_bench_cli_writes_table_json_and_plot(m3_model, mqt_model, tmp_path, capsys):
    m3_model.config.save_pretrained(tmp_path / "m3")
    mqt_model.config.save_pretrained(tmp_path / "mqt")
    assert main(["bench", "--m3-config", str(tmp_path / "m3"), "--mqt-config", str(tmp_path / "mqt"),
                 "--m3-counts", "576,36", "--mqt-counts", "16", "--num-text-tokens", "6", "--decode-tokens", "1",
                 "--repeats", "1", "--warmup", "0", "--output-dir", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "| model | visual tokens | TTFT ms (IQR) |" in printed and "Matryoshka-path overhead" in printed
    assert json.loads((tmp_path / "out" / "speed.json").read_text())["repeats"] == 1
    assert (tmp_path / "out" / "speed.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "out" / "speed.md").read_text() in printed


def test_batch_fast_path_and_roofline_rows(m3_model, mqt_model):
    """--batch-size gives images/s of that many requests per call; --compile adds every model on its fast path,
    interleaved with eager; each row carries its roofline floor from rates measured at the start of the run."""
    result = run_speed_benchmark(m3_model.config, mqt_model.config, m3_counts=[576, 1], mqt_counts=[4],
                                 num_text_tokens=6, decode_tokens=1, repeats=1, warmup=1, progress=False,
                                 batch_size=3, fast_path=True)
    keys = [(row["model"], row["num_visual_tokens"]) for row in result["rows"]]
    eager = [("llava", 576), ("m3", 576), ("m3", 1), ("mqt", 4)]
    assert keys == eager + [(kind + "+fast", count) for kind, count in eager]
    rates = result["device_rates"]
    assert rates["copy_bytes_per_s"] > 0 and rates["matmul_flops_per_s"] > 0
    for row in result["rows"]:
        assert row["fast_path"] == row["model"].endswith("+fast")
        assert row["images_per_s"] == 3 / row["ttft_s"]
        kv = 2 * m3_model.config.text_config.num_hidden_layers * (6 + row["num_visual_tokens"])  # per request
        assert row["floor_s"] >= 3 * kv / rates["copy_bytes_per_s"]
        assert row["ttft_over_floor"] == row["ttft_s"] / row["floor_s"]
    fast_rows = {row["model"]: row for row in result["rows"] if row["num_visual_tokens"] == 576}
    assert fast_rows["m3+fast"]["speedup_vs_plain_llava"] == fast_rows["llava+fast"]["ttft_s"] / fast_rows["m3+fast"]["ttft_s"]
    assert "fast_path" in result["overhead_at_full"]
    table = bench_to_markdown(result)
    assert "M3 (fast path) | 1 |" in table and "GFLOP/s" in table and "On the fast path: TTFT" in table
