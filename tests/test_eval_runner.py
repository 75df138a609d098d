"""`evaluate`: batched greedy generation at every k, scoring, oracle, resume, baselines, outputs."""

import json
from pathlib import Path

import pytest
import torch
from matryoshka_llava.processing import chat_prompt
from tiny_models import llava_with_weights_of, random_images

from matryoshka_llava.evaluation import EvalItem, evaluate, load_model_for_eval, write_outputs
from modeling_matryoshka_llava.visual_token_counts import comparison_counts
from matryoshka_llava.evaluation.runner import generate_batch

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
MAX_NEW = 4


def alone(model, processor, item: EvalItem, question: str, count: int) -> str:
    inputs = processor(images=item.images, text=chat_prompt(processor, question, len(item.images)), return_tensors="pt")
    output = model.generate(**inputs, num_visual_tokens=count, max_new_tokens=MAX_NEW, do_sample=False)
    return processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def image_items(count: int, seed: int = 0, answers=("x",)) -> list[EvalItem]:
    questions = ["What is in the image?", "How many shapes are there in this picture?", "Describe it."]
    return [
        EvalItem(f"item-{i}", random_images(1, seed=seed + i), questions[i % 3], list(answers), category="ab"[i % 2])
        for i in range(count)
    ]


@pytest.mark.parametrize("kind", ["m3", "mqt"])
def test_batched_generation_at_every_count_equals_each_item_alone(kind, m3_model, mqt_model, processor):
    model = m3_model if kind == "m3" else mqt_model
    counts = [1, 576] if kind == "m3" else [2, 16]
    items = image_items(3)
    questions = [item.question for item in items]
    # Item 1 already has its first count (as after a resume): the shared batch is sliced for that count.
    per_item = [counts, counts[1:], counts]
    kwargs = {"do_sample": False, "num_beams": 1, "max_new_tokens": MAX_NEW, "pad_token_id": 3, "eos_token_id": 2}
    generated = [(row, count, text) for count, texts in generate_batch(model, processor, items, questions, per_item, kwargs)
                 for row, text, tokens in texts if tokens == count]
    assert sorted((row, count) for row, count, _ in generated) == sorted(
        (row, count) for row, item_counts in enumerate(per_item) for count in item_counts
    )
    for row, count, text in generated:
        assert text == alone(model, processor, items[row], questions[row], count), (row, count)


def test_evaluate_on_a_preset_fixture_scores_what_the_model_says(m3_model, processor):
    results = evaluate(m3_model, processor, str(FIXTURES / "pope.parquet"), preset="pope", num_visual_tokens=[1, 576],
                       batch_size=4, max_new_tokens=MAX_NEW, progress=False)
    assert (results["task"], results["metric"], results["num_items"], results["split"]) == ("yes_no", "accuracy", 6, "train")
    assert [row["num_visual_tokens"] for row in results["per_k"]] == [1, 576]
    assert set(results["per_k"][0]["metrics"]) == {"accuracy", "precision", "recall", "f1", "yes_ratio"}
    assert set(results["per_k"][0]["by_category"]) == {"adversarial", "popular", "random"}
    # POPE answers are 3 yes / 3 no, and this untrained model never says "no": POPE's parsing makes it all "yes".
    assert results["per_k"][1]["metrics"]["yes_ratio"] == 1.0 and results["per_k"][1]["metrics"]["accuracy"] == 0.5


def test_metrics_and_oracle_follow_the_references(m3_model, processor):
    items = image_items(3)
    counts = [1, 36, 576]
    said = {(item.item_id, k): alone(m3_model, processor, item, item.question, k) for item in items for k in counts}
    # Item i is answered by what the model says at counts[i] (and at any count where it says the same).
    reference_count = {item.item_id: counts[i] for i, item in enumerate(items)}
    scored = [EvalItem(item.item_id, item.images, item.question, [said[(item.item_id, reference_count[item.item_id])]],
                       category=item.category) for item in items]
    results = evaluate(m3_model, processor, scored, "exact_match", counts, batch_size=2, max_new_tokens=MAX_NEW,
                       progress=False)
    expected = {k: [said[(item.item_id, k)] == said[(item.item_id, reference_count[item.item_id])] for item in items]
                for k in counts}
    for row in results["per_k"]:
        assert row["metrics"]["exact_match"] == pytest.approx(sum(expected[row["num_visual_tokens"]]) / 3)
    smallest_right = [min(k for k in counts if expected[k][i]) for i in range(3)]
    assert results["oracle"]["accuracy"] == 1.0
    assert results["oracle"]["mean_visual_tokens"] == pytest.approx(sum(smallest_right) / 3)
    assert set(results["oracle"]["by_category"]) == {"a", "b"}


class InterruptAfter:
    """Wraps `model.generate`: counts calls and raises KeyboardInterrupt at call number `limit`."""

    def __init__(self, model, limit=None):
        self.generate, self.limit, self.calls = model.generate, limit, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.limit is not None and self.calls == self.limit:
            raise KeyboardInterrupt
        return self.generate(*args, **kwargs)


def test_an_interrupted_run_resumes_and_loses_nothing(m3_model, processor, tmp_path, monkeypatch):
    items, counts = image_items(5, seed=10), [1, 576]
    run = {"task": "exact_match", "num_visual_tokens": counts, "batch_size": 2, "max_new_tokens": MAX_NEW,
           "progress": False}
    reference = evaluate(m3_model, processor, items, **run)

    log = tmp_path / "items.jsonl"
    interrupted = InterruptAfter(m3_model, limit=4)  # batches of 2 items x 2 counts: dies in the 2nd batch
    monkeypatch.setattr(m3_model, "generate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate(m3_model, processor, items, results_jsonl=log, **run)
    saved = [json.loads(line) for line in log.read_text().splitlines()]
    assert "run" in saved[0] and len(saved) == 1 + 2 * 2 + 2  # header, batch 1 at 2 counts, batch 2 at its 1st
    with open(log, "a") as handle:
        handle.write('{"item_id": "item-12", "num_visual_to')  # a line torn by the interruption

    resumed = InterruptAfter(m3_model)
    monkeypatch.setattr(m3_model, "generate", resumed)
    results = evaluate(m3_model, processor, items, results_jsonl=log, **run)
    assert resumed.calls == 1 + 2  # batch 2 at its 2nd count, batch 3 (1 item) at both: nothing is redone
    assert results == reference
    records = [json.loads(line) for line in log.read_text().splitlines()[1:]]
    assert sorted((r["item_id"], r["num_visual_tokens"]) for r in records) == sorted(
        (item.item_id, k) for item in items for k in counts
    )

    again = InterruptAfter(m3_model)
    monkeypatch.setattr(m3_model, "generate", again)
    assert evaluate(m3_model, processor, items, results_jsonl=log, **run) == reference and again.calls == 0
    with pytest.raises(ValueError, match="different run.*max_new_tokens"):
        evaluate(m3_model, processor, items, results_jsonl=log, **{**run, "max_new_tokens": 2})


def test_default_counts_and_invalid_counts(m3_model, mqt_model, processor):
    assert comparison_counts(m3_model.config) == [1, 9, 36, 144, 576]
    assert comparison_counts(mqt_model.config) == [2, 4, 8, 16]
    with pytest.raises(ValueError, match=r"num_visual_tokens\[0\]=100 is not valid"):
        evaluate(m3_model, processor, image_items(1), "exact_match", [100], progress=False)
    with pytest.raises(ValueError, match="task type"):
        evaluate(m3_model, processor, image_items(1), None, [1], progress=False)


def save_plain_llava(m3_model, processor, folder: Path) -> Path:
    llava_with_weights_of(m3_model).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_training_free_baselines_on_a_plain_llava(m3_model, mqt_model, processor, tmp_path):
    folder = save_plain_llava(m3_model, processor, tmp_path / "llava")
    with pytest.raises(ValueError, match="plain LLaVA.*baseline"):
        load_model_for_eval(folder)
    with pytest.raises(ValueError, match="Unknown baseline"):
        load_model_for_eval(folder, "max_pooling")
    items = image_items(1)
    inputs = processor(images=items[0].images, text=chat_prompt(processor, items[0].question), return_tensors="pt")
    logits = {}
    for baseline in ("average_pooling", "spatial_sampling", "sequential_sampling"):
        model, loaded_processor = load_model_for_eval(folder, baseline, device="cpu")
        assert model.config.model_type == "m3_llava" and model.config.visual_token_reduction == baseline
        for (name, weight), (_, original) in zip(model.state_dict().items(), m3_model.state_dict().items()):
            assert torch.equal(weight, original), name
        with torch.no_grad():
            logits[baseline] = {k: model(**inputs, num_visual_tokens=k).logits for k in (9, 576)}
        if baseline == "spatial_sampling":
            results = evaluate(model, loaded_processor, items, "exact_match", [9, 576], max_new_tokens=MAX_NEW,
                               progress=False)
            assert results["baseline"] == baseline
            assert results["per_k"][1]["num_visual_tokens"] == 576
    # At the full grid every reduction is the original model; at 9 tokens they differ.
    with torch.no_grad():
        original = m3_model(**inputs, num_visual_tokens=576).logits
    assert all(torch.allclose(by_count[576], original, atol=1e-5) for by_count in logits.values())
    assert not torch.allclose(logits["average_pooling"][9], logits["spatial_sampling"][9])
    assert not torch.allclose(logits["spatial_sampling"][9], logits["sequential_sampling"][9])

    mqt_folder = tmp_path / "mqt"
    mqt_model.save_pretrained(mqt_folder)
    processor.save_pretrained(mqt_folder)
    with pytest.raises(ValueError, match="does not apply"):
        load_model_for_eval(mqt_folder, "spatial_sampling")
    model, _ = load_model_for_eval(mqt_folder, device="cpu")
    assert model.config.model_type == "mqt_llava"


def test_a_transformers_llava_processor_becomes_a_matryoshka_one(m3_model, processor, tmp_path):
    from transformers import CLIPImageProcessor, LlavaProcessor

    from matryoshka_llava.evaluation import load_processor_for_eval
    from modeling_matryoshka_llava import MatryoshkaLlavaProcessor

    folder = tmp_path / "llava-hf"
    llava_with_weights_of(m3_model).save_pretrained(folder)
    clip = CLIPImageProcessor(size={"shortest_edge": 48}, crop_size={"height": 48, "width": 48})
    LlavaProcessor(image_processor=clip, tokenizer=processor.tokenizer, patch_size=2).save_pretrained(folder)
    loaded = load_processor_for_eval(str(folder))
    assert isinstance(loaded, MatryoshkaLlavaProcessor) and loaded.image_processor.do_pad
    image = random_images(1, sizes=((40, 30),))[0]
    prompt = chat_prompt(processor, "Hi")
    assert torch.equal(loaded(images=image, text=prompt, return_tensors="pt")["pixel_values"],
                       processor(images=image, text=prompt, return_tensors="pt")["pixel_values"])


def test_outputs_follow_the_results_contract(m3_model, processor, tmp_path):
    results = evaluate(m3_model, processor, image_items(4), "exact_match", [1, 9], max_new_tokens=2, progress=False,
                       model_name="tiny-m3", dataset_name="tiny")
    written = write_outputs(results, tmp_path)
    data = json.loads((tmp_path / "results.json").read_text())
    assert data == written
    for key, kind in [("model", str), ("dataset", str), ("split", str), ("task", str), ("metric", str),
                      ("num_items", int), ("per_k", list), ("oracle", dict), ("plot", str)]:
        assert isinstance(data[key], kind), key
    assert data["baseline"] is None and data["num_items"] == 4
    for row in data["per_k"]:
        assert set(row) == {"num_visual_tokens", "metrics", "by_category"}
        assert data["metric"] in row["metrics"] and set(row["by_category"]) == {"a", "b"}
    assert set(data["oracle"]) >= {"accuracy", "mean_visual_tokens"}
    png = tmp_path / data["plot"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (tmp_path / "results.md").read_text()
    assert "| visual tokens | exact_match | exact_match [a] | exact_match [b] |" in table
    assert table.count("\n| ") == 2 + 1 + 1  # header, 2 counts, oracle


def test_a_datasets_dataset_with_a_family_column(m3_model, processor):
    import datasets

    rows = {"image": random_images(3, seed=4), "question": ["What colour?", "How many?", "Which letter?"],
            "answer": ["red", "3", "q"], "family": ["global", "counting", "global"]}
    dataset = datasets.Dataset.from_dict(rows)
    results = evaluate(m3_model, processor, dataset, "exact_match", [1, 576], columns={"category": "family"},
                       max_new_tokens=2, progress=False, dataset_name="synthetic", split="test")
    assert (results["dataset"], results["split"], results["num_items"]) == ("synthetic", "test", 3)
    assert results["categories"] == ["counting", "global"]
    for row in results["per_k"]:
        assert set(row["by_category"]) == {"counting", "global"}
    assert set(results["oracle"]["by_category"]) == {"counting", "global"}


def test_an_undecodable_image_is_skipped_listed_by_row_and_left_out_of_the_metrics(m3_model, processor, tmp_path):
    for index, image in enumerate(random_images(3, seed=7)):
        image.save(tmp_path / f"{index}.png")
    (tmp_path / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # row 1's image is corrupt
    rows = [{"image": f"{index}.png", "question": "What?", "answer": "x", "id": f"q{index}"} for index in range(3)]
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    kwargs = dict(task="exact_match", num_visual_tokens=[1, 9], columns={"id": "id"}, max_new_tokens=2, progress=False)

    results = evaluate(m3_model, processor, str(data), results_jsonl=tmp_path / "log.jsonl", **kwargs)
    assert results["num_items"] == 2
    assert [(record["row"], record["item_id"]) for record in results["skipped"]] == [(1, "q1")]
    assert "1.png" in results["skipped"][0]["error"] and "could not be decoded" in results["skipped"][0]["error"]
    logged = {json.loads(line).get("item_id") for line in (tmp_path / "log.jsonl").read_text().splitlines()}
    assert "q1" not in logged and {"q0", "q2"} <= logged  # a rerun tries the skipped item again
    write_outputs(results, tmp_path / "out", plot=False)
    assert "1 items skipped, not in the metrics" in (tmp_path / "out" / "results.md").read_text()
    assert "row 1 (id q1)" in (tmp_path / "out" / "results.md").read_text()

    with pytest.raises(ValueError, match=r"^row 1 \(id q1\): Image 0 .*could not be decoded"):
        evaluate(m3_model, processor, str(data), skip_bad_images=False, **kwargs)
