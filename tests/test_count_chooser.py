"""`num_visual_tokens="auto"`: the count chooser is trained on the model's own per-count correctness, saved with the
model, and used by generate, the processor and eval."""

import datasets
import pytest
import torch
from tiny_models import random_images, tiny_m3, tiny_mqt
from transformers import AutoModelForImageTextToText

from matryoshka_llava.evaluation import evaluate
from matryoshka_llava.processing import chat_prompt
from matryoshka_llava.training.count_chooser import calibrate_threshold, train_count_chooser

QUESTIONS = ["What is in the image?", "How many shapes are there?"]


def tiny_dataset(size: int, seed: int) -> datasets.Dataset:
    images = random_images(size, seed=seed)
    return datasets.Dataset.from_dict({
        "image": images,
        "question": [QUESTIONS[i % 2] for i in range(size)],
        "answer": ["red" if i % 2 else "3" for i in range(size)],
        "id": [f"{seed}-{i}" for i in range(size)],
    }, features=datasets.Features({"image": datasets.Image(), "question": datasets.Value("string"),
                                   "answer": datasets.Value("string"), "id": datasets.Value("string")}))


@pytest.fixture(scope="module", params=["m3", "mqt"])
def chosen(request, processor):
    """A tiny model with a trained chooser (it learns the tiny model's own, arbitrary, right and wrong answers)."""
    model = tiny_m3(seed=3) if request.param == "m3" else tiny_mqt(seed=3)
    counts = [1, 36, 576] if request.param == "m3" else [1, 4, 16]
    report = train_count_chooser(model, processor, tiny_dataset(12, 0), tiny_dataset(8, 1), counts, steps=60,
                                 max_new_tokens=2, batch_size=6)
    return model, counts, report


def test_training_saves_the_chooser_in_the_config_and_weights(chosen, processor, tmp_path):
    model, counts, report = chosen
    assert model.config.count_chooser_counts == counts
    assert report["calibration"]["threshold"] == model.config.count_chooser_threshold
    assert set(report["validation_accuracy_per_count"]) == set(counts)
    assert any(name.startswith("model.count_chooser.") for name in model.state_dict())
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    for name, tensor in model.model.count_chooser.state_dict().items():
        assert torch.equal(loaded.model.count_chooser.state_dict()[name], tensor), name
    inputs = processor(images=random_images(2, seed=5), text=[chat_prompt(processor, q) for q in QUESTIONS],
                       padding=True, return_tensors="pt")
    assert loaded.model.choose_num_visual_tokens(inputs["pixel_values"], inputs["input_ids"], None,
                                                 inputs["attention_mask"]) == model.model.choose_num_visual_tokens(
        inputs["pixel_values"], inputs["input_ids"], None, inputs["attention_mask"])


def test_generate_auto_equals_generating_at_the_chosen_counts(chosen, processor):
    model, counts, _ = chosen
    inputs = processor(images=random_images(2, seed=7), text=[chat_prompt(processor, q) for q in QUESTIONS],
                       padding=True, return_tensors="pt", num_visual_tokens="auto")
    assert (inputs["input_ids"] == processor.image_token_id).sum() == 2  # "auto" keeps the placeholders compact
    for threshold in (0.05, 0.95):
        picked = model.model.choose_num_visual_tokens(inputs["pixel_values"], inputs["input_ids"], None,
                                                      inputs["attention_mask"], threshold=threshold)
        assert all(count in counts for count in picked)
        auto = model.generate(**inputs, num_visual_tokens="auto", count_chooser_threshold=threshold,
                              max_new_tokens=3, do_sample=False)
        fixed = model.generate(**inputs, num_visual_tokens=picked, max_new_tokens=3, do_sample=False)
        assert auto.tolist() == fixed.tolist()


def test_eval_reports_an_auto_row_with_the_tokens_it_spent(chosen, processor):
    model, counts, _ = chosen
    results = evaluate(model, processor, tiny_dataset(6, 2), "exact_match", [counts[0], counts[-1], "auto"],
                       max_new_tokens=2, batch_size=3, progress=False)
    assert [row["num_visual_tokens"] for row in results["per_k"]] == [counts[0], counts[-1]]
    auto = results["auto"]
    assert counts[0] <= auto["mean_visual_tokens"] <= counts[-1]
    assert sum(auto["tokens_histogram"].values()) == 6 and set(auto["tokens_histogram"]) <= set(counts)
    assert 0 <= auto["metrics"][results["metric"]] <= 1


def test_auto_without_a_chooser_names_the_fix(m3_model, single_inputs):
    with pytest.raises(ValueError, match="needs a count chooser"):
        m3_model.generate(**single_inputs, num_visual_tokens="auto", max_new_tokens=1)


def test_configs_check_the_chooser_settings():
    from modeling_matryoshka_llava import M3LlavaConfig, MQTLlavaConfig

    with pytest.raises(ValueError, match="count_chooser_counts=100"):
        M3LlavaConfig(count_chooser_counts=[1, 100])
    with pytest.raises(ValueError, match="ascending"):
        MQTLlavaConfig(count_chooser_counts=[16, 4])
    with pytest.raises(ValueError, match="count_chooser_threshold"):
        M3LlavaConfig(count_chooser_counts=[1, 9], count_chooser_threshold=1.5)


def test_the_threshold_is_the_cheapest_within_the_margin_of_the_best_fixed_count():
    counts = [1, 9, 576]
    # Items 0-1 are right from 1 token, 2-3 only at 576; the chooser is sure about which is which.
    correct = torch.tensor([[1, 1, 1], [1, 1, 1], [0, 0, 1], [0, 0, 1]], dtype=torch.bool)
    probabilities = torch.tensor([[0.9, 0.9, 0.9], [0.8, 0.9, 0.9], [0.1, 0.2, 0.9], [0.2, 0.3, 0.95]])
    calibration = calibrate_threshold(probabilities, correct, counts, accuracy_margin=0.0)
    assert calibration["best_fixed_accuracy"] == 1.0 and calibration["best_fixed_count"] == 576
    assert calibration["picked"]["accuracy"] == 1.0
    assert calibration["picked"]["mean_visual_tokens"] == (1 + 1 + 576 + 576) / 4
