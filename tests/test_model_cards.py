"""Model cards: templates render valid Hub metadata, are filled from real results files only, and refuse gaps."""

import json
import shutil

import pytest
from card_results import write_cost_table, write_eval_results
from huggingface_hub import ModelCard

from matryoshka_llava.cli import main as cli_main
from matryoshka_llava.model_cards import (
    CardInputs,
    ModelCardError,
    card_inputs_for_folder,
    load_cost_table,
    load_eval_results,
    render_model_card,
    validate_model_card,
    write_model_card,
)

pytest_plugins = ["conversion_fixtures"]  # tiny sources of every format, converted once per session

CHAT_TEMPLATE = "{{ messages[0]['content'] }} ASSISTANT:"
KIND_COUNTS = {"m3-llava": [1, 9, 36, 144, 576], "m3-llava-next": [1, 9, 36, 144, 576], "mqt-llava": range(1, 257)}


def complete_inputs(kind: str, **fields) -> CardInputs:
    values = {
        "kind": kind, "model_name": "tiny", "repo_id": "me/tiny", "source_checkpoint": "mucai/llava-v1.5-7b-m3",
        "license": "apache-2.0", "chat_template": CHAT_TEMPLATE, "valid_num_visual_tokens": KIND_COUNTS[kind],
        "default_num_visual_tokens": KIND_COUNTS[kind][-1], "grid_side": 24, "num_queries": 256,
        "base_model": ["mucai/llava-v1.5-7b-m3"], "datasets": ["liuhaotian/LLaVA-Instruct-150K"],
    }
    values.update(fields)
    return CardInputs(**values)


@pytest.mark.parametrize("kind", sorted(KIND_COUNTS))
def test_each_template_renders_hub_metadata_and_the_results(kind, tmp_path):
    counts = [1, 16, 256] if kind == "mqt-llava" else [1, 36, 576]
    inputs = complete_inputs(kind, eval_results=[load_eval_results(write_eval_results(tmp_path, counts))],
                             cost=load_cost_table(write_cost_table(tmp_path, counts)))
    text = render_model_card(inputs)
    card = ModelCard(text, ignore_metadata_errors=False)
    metadata = card.data.to_dict()
    assert metadata["library_name"] == "transformers" and metadata["pipeline_tag"] == "image-text-to-text"
    assert metadata["license"] == "apache-2.0" and metadata["base_model"] == ["mucai/llava-v1.5-7b-m3"]
    assert metadata["datasets"] == ["liuhaotian/LLaVA-Instruct-150K"]
    assert "matryoshka" in metadata["tags"] and ("mqt" if kind == "mqt-llava" else "m3") in metadata["tags"]
    body = card.text
    assert "arXiv:2405.17430" in body and "arXiv:2405.19315" in body  # both papers cited
    assert 'from_pretrained(repo, trust_remote_code=True, revision=revision' in body and '"me/tiny"' in body
    assert "num_visual_tokens=" in body and CHAT_TEMPLATE in body
    valid = "any integer from 1 to 256" if kind == "mqt-llava" else "one of 1, 9, 36, 144, 576"
    assert valid in body
    # numbers come from the files, formatted but not invented
    assert "| visual tokens | accuracy | invalid_answer_rate |" in body
    assert "Metrics in %." in body and f"| {counts[1]} | 53.0 | 4.0 |" in body  # percent, as `eval` prints
    assert "accuracy 71.2% with 12.5 visual tokens on average" in body
    assert "![lmms-lab/MMBench: accuracy against visual tokens](evaluation/lmms-lab-MMBench-dev.png)" in body
    assert "| ocr | 40.0 | 45.0 | 50.0 |" in body
    prefill_tflops = 13_400_000_000 * (counts[2] + 30) / 1e12
    assert f"| {counts[2]} | {prefill_tflops:.3f} | 0.349 | {524_288 * (counts[2] + 30) / 2**20:.1f} |" in body
    assert "Not evaluated yet" not in body and "Not computed yet" not in body
    if kind == "m3-llava-next":
        assert "tokens per crop" in body and "llava-next" in metadata["tags"]


def test_converted_folder_card_without_results_says_so(converted):
    folder = converted["llava_no_tower", "mqt"].output
    text = (folder / "README.md").read_text()
    validate_model_card(text)
    assert "Not evaluated yet" in text and "Not computed yet" in text
    assert "| 1 |" not in text  # no invented numbers
    assert "Untrained projector" in text and "`config.projector_is_trained` is `false`" in text
    release = (converted["mqt_release", "mqt"].output / "README.md").read_text()
    assert "Untrained projector" not in release and "released MQT format" in release


def test_missing_required_fields_are_refused_with_the_fix():
    with pytest.raises(ModelCardError, match=r"missing: source_checkpoint: --source .*license: --license"):
        render_model_card(complete_inputs("m3-llava", source_checkpoint=None, license=""))
    with pytest.raises(ModelCardError, match="chat_template"):
        render_model_card(complete_inputs("mqt-llava", chat_template=None))
    with pytest.raises(ModelCardError, match="Unknown model kind"):
        inputs = complete_inputs("m3-llava")
        inputs.kind = "llava"
        render_model_card(inputs)


def test_results_at_counts_the_model_does_not_accept_are_refused(tmp_path):
    results = load_eval_results(write_eval_results(tmp_path, counts=[1, 100, 576]))
    with pytest.raises(ModelCardError, match=r"num_visual_tokens \[100\].*one of 1, 9, 36, 144, 576"):
        render_model_card(complete_inputs("m3-llava", eval_results=[results]))


@pytest.mark.parametrize("override, message", [
    ({"per_k": []}, "per_k is empty"),
    ({"metric": "f1"}, r"per_k\[0\]: metrics has no 'f1'"),
    ({"num_items": True}, "field 'num_items' must be a non-negative integer"),
    ({"oracle": {"accuracy": 0.5}}, "missing field 'oracle.mean_visual_tokens'"),
    ({"plot": "missing.png"}, "plot 'missing.png' must name an existing PNG"),
    ({"per_k": [{"num_visual_tokens": 0, "metrics": {"accuracy": 1.0}, "by_category": {}}]}, "at least 1"),
    ({"per_k": [{"num_visual_tokens": 1, "metrics": {"accuracy": "high"}, "by_category": {}}]},
     r"per_k\[0\]\.metrics\.accuracy' must be a finite number"),
    ({"baseline": 3}, "field 'baseline' must be a non-empty string"),
])
def test_eval_results_schema_errors_name_the_field(override, message, tmp_path):
    path = write_eval_results(tmp_path, **override)
    with pytest.raises(ModelCardError, match=message):
        load_eval_results(path)


def test_cost_schema_errors_and_bad_json_name_the_file(tmp_path):
    path = write_cost_table(tmp_path)
    data = json.loads(path.read_text())
    data["rows"][1]["kv_cache_bytes"] = -1
    path.write_text(json.dumps(data))
    with pytest.raises(ModelCardError, match=r"cost\.json: field 'rows\[1\]\.kv_cache_bytes'"):
        load_cost_table(path)
    path.write_text("{not json")
    with pytest.raises(ModelCardError, match="not valid JSON"):
        load_cost_table(path)


@pytest.mark.parametrize("edit, message", [
    (lambda meta: meta.update(license="Apache 2.0"), "license must be a Hub license id"),
    (lambda meta: meta.update(tags=["llava"]), "tags must include 'matryoshka'"),
    (lambda meta: meta.update(pipeline_tag="text-generation"), "pipeline_tag must be 'image-text-to-text'"),
    (lambda meta: meta.update(base_model="./local/folder"), "base_model entries must be Hub repo ids"),
    (lambda meta: meta.update(license="other"), "needs license_name and license_link"),
])
def test_invalid_metadata_is_refused(edit, message):
    card = ModelCard(render_model_card(complete_inputs("m3-llava")))
    metadata = card.data.to_dict()
    edit(metadata)
    card.data = type(card.data)(**metadata)
    with pytest.raises(ModelCardError, match=message):
        validate_model_card(str(card))
    with pytest.raises(ModelCardError, match="YAML front matter is invalid"):
        validate_model_card("---\nlicense: [unclosed\n---\n# x\n")


def test_card_cli_stores_results_and_renders_again_from_the_folder(converted, tmp_path):
    folder = tmp_path / "checkpoint"
    shutil.copytree(converted["m3_release", "m3"].output, folder)
    results_dir = tmp_path / "results"
    eval_path, cost_path = write_eval_results(results_dir), write_cost_table(results_dir)
    code = cli_main(["card", str(folder), "--eval-results", str(eval_path), "--cost", str(cost_path),
                     "--repo-id", "me/m3-tiny", "--license", "llama2"])
    assert code == 0
    stored = folder / "evaluation" / "lmms-lab-MMBench-dev.json"
    assert json.loads(stored.read_text())["plot"] == "lmms-lab-MMBench-dev.png"
    assert (folder / "evaluation" / "lmms-lab-MMBench-dev.png").is_file() and (folder / "evaluation" / "cost.json").is_file()
    first = (folder / "README.md").read_text()
    shutil.rmtree(results_dir)  # the folder alone is enough from now on

    assert cli_main(["card", str(folder), "--repo-id", "me/other"]) == 0
    again = (folder / "README.md").read_text()
    assert again == first.replace("me/m3-tiny", "me/other")  # source, note, license and results all kept
    inputs = card_inputs_for_folder(folder)
    assert inputs.license == "llama2" and inputs.eval_results[0].per_k[-1].num_visual_tokens == 576
    assert inputs.repo_id == "me/other"  # kept for the next rendering
    assert "released M3 format" in again and f"Source checkpoint: `{inputs.source_checkpoint}`" in again


def test_card_cli_reports_missing_fields(converted, tmp_path, capsys):
    folder = tmp_path / "checkpoint"
    shutil.copytree(converted["llava_hf", "m3"].output, folder)
    (folder / "README.md").unlink()
    assert cli_main(["card", str(folder)]) == 2
    assert "source_checkpoint: --source" in capsys.readouterr().err
    assert cli_main(["card", str(folder), "--source", "llava-hf/llava-1.5-7b-hf", "--license", "llama2",
                     "--repo-id", "me/m3-tiny", "--stdout"]) == 0
    assert "Source checkpoint: `llava-hf/llava-1.5-7b-hf`" in capsys.readouterr().out
    assert not (folder / "README.md").exists()


def test_write_model_card_to_another_file(tmp_path):
    inputs = complete_inputs("mqt-llava", num_queries=256)
    output = write_model_card(tmp_path, inputs, tmp_path / "preview.md")
    assert output.read_text().startswith("---\n") and not (tmp_path / "README.md").exists()


def test_cards_are_filled_from_what_the_eval_and_cost_commands_write(m3_model, processor, tmp_path, monkeypatch):
    """The contract with the evaluation code: its results JSON (and plot) and cost JSON render as they are."""
    from pathlib import Path

    from PIL import Image

    import matryoshka_llava.evaluation.report as report
    from matryoshka_llava.evaluation import evaluate, write_outputs
    from matryoshka_llava.evaluation.cost import prefill_cost
    from matryoshka_llava.formatting import flops_unit, percent

    # The plot file itself is matplotlib's business (slow to import); its name and place are write_outputs'.
    monkeypatch.setattr(report, "plot_tradeoff", lambda results, path, **kwargs: Image.new("RGB", (4, 4)).save(path))
    pope = Path(__file__).parent / "fixtures" / "eval" / "pope.parquet"
    results = evaluate(m3_model, processor, str(pope), preset="pope", num_visual_tokens=[1, 9], batch_size=6,
                       max_new_tokens=2, progress=False)
    write_outputs(results, tmp_path / "pope", plot=True)
    (tmp_path / "cost.json").write_text(json.dumps(prefill_cost(m3_model.config, [1, 36], 30, config_name="tiny")))
    eval_results = load_eval_results(tmp_path / "pope" / "results.json")
    cost = load_cost_table(tmp_path / "cost.json")
    text = render_model_card(complete_inputs("m3-llava", eval_results=[eval_results], cost=cost))
    rows = {item.num_visual_tokens: item.metrics["accuracy"] for item in eval_results.per_k}
    assert sorted(rows) == [1, 9] and f"| 9 | {percent(rows[9])} |" in text
    assert "](evaluation/" in text and eval_results.plot is not None
    # A tiny model's FLOPs in a unit that shows them (in TFLOPs they would all read 0.000).
    unit, scale = flops_unit([row.llm_prefill_flops for row in cost.rows] + [row.vision_flops for row in cost.rows])
    largest = max(row.llm_prefill_flops for row in cost.rows) / scale
    assert unit != "TFLOPs" and 1 <= largest < 1000
    assert f"LLM prefill ({unit})" in text and f"| 36 | {cost.rows[1].llm_prefill_flops / scale:.3f} |" in text


def test_cost_table_of_a_large_model_is_in_tflops(tmp_path):
    cost = load_cost_table(write_cost_table(tmp_path))
    text = render_model_card(complete_inputs("m3-llava", cost=cost))
    assert "LLM prefill (TFLOPs)" in text and f"| 576 | {13.4e9 * 606 / 1e12:.3f} |" in text


def test_m3_llava_next_folder_gets_the_next_card(tmp_path):
    from tiny_next_models import tiny_m3_next, tiny_next_processor

    tiny_m3_next().save_pretrained(tmp_path)
    tiny_next_processor().save_pretrained(tmp_path)
    inputs = card_inputs_for_folder(tmp_path, source_checkpoint="mucai/llava-next-vicuna-7b-m3", license="apache-2.0",
                                    repo_id="me/m3-next")
    assert inputs.kind == "m3-llava-next" and inputs.valid_num_visual_tokens == [1, 9, 36, 144, 576]
    text = render_model_card(inputs)
    assert "M3-LLaVA-NeXT" in text and "counts tokens per crop" in text and "one of 1, 9, 36, 144, 576" in text


def test_plain_llava_folder_gets_the_training_free_baseline_card(m3_model, processor, tmp_path):
    from tiny_models import llava_with_weights_of

    folder = tmp_path / "plain"
    llava_with_weights_of(m3_model).save_pretrained(folder)
    processor.save_pretrained(folder)
    results = write_eval_results(tmp_path / "results", [1, 9, 36, 144, 576], baseline="average_pooling")
    inputs = card_inputs_for_folder(folder, eval_results=[results], source_checkpoint="trained in code",
                                    license="apache-2.0", repo_id="me/plain")
    assert inputs.kind == "llava-baseline" and inputs.valid_num_visual_tokens == [1, 9, 36, 144, 576]
    card = ModelCard(render_model_card(inputs), ignore_metadata_errors=False)
    assert "training-free-baseline" in card.data.to_dict()["tags"]
    assert 'load_model_for_eval("me/plain", baseline="average_pooling"' in card.text
    assert "training-free baseline `average_pooling`" in card.text and "| 9 | 53.0 | 4.0 |" in card.text
