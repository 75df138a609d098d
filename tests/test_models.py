"""M3 / MQT models: parity with transformers' LLaVA, the num_visual_tokens contract, generation, save/load."""

import pytest
import torch
from matryoshka_llava.processing import chat_prompt
from tiny_models import llava_with_weights_of, random_images

from modeling_matryoshka_llava import M3LlavaForConditionalGeneration, MQTLlavaForConditionalGeneration


def new_tokens(output, inputs):
    return output[:, inputs["input_ids"].shape[1] :]


def test_m3_at_full_grid_equals_transformers_llava(m3_model, processor):
    llava = llava_with_weights_of(m3_model)
    prompts = [chat_prompt(processor, "What is in the image?"), chat_prompt(processor, "Describe it.")]
    images = random_images(2, seed=3)
    expanded = processor(images=images, text=prompts, padding=True, return_tensors="pt", num_visual_tokens=576)
    compact = processor(images=images, text=prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        reference = llava(**expanded).logits
        ours_expanded = m3_model(**expanded).logits
        ours_compact = m3_model(**compact, num_visual_tokens=576).logits
    assert reference.shape == ours_compact.shape
    assert (reference - ours_expanded).abs().max() <= 1e-5
    assert (reference - ours_compact).abs().max() <= 1e-5


@pytest.mark.parametrize("kind", ["m3", "mqt"])
def test_every_valid_count_runs_forward_and_generate(kind, m3_model, mqt_model, single_inputs):
    model = m3_model if kind == "m3" else mqt_model
    counts = model.config.valid_num_visual_tokens
    prompt_length = single_inputs["input_ids"].shape[1]
    for count in counts:
        with torch.no_grad():
            logits = model(**single_inputs, num_visual_tokens=count).logits
        assert logits.shape[1] == prompt_length - 1 + count
        output = model.generate(**single_inputs, num_visual_tokens=count, max_new_tokens=3, do_sample=False)
        assert output.shape == (1, prompt_length + 3)
        assert torch.equal(output[:, :prompt_length], single_inputs["input_ids"])
    assert list(counts) == ([1, 9, 36, 144, 576] if kind == "m3" else list(range(1, 17)))


def test_counts_change_the_answer_distribution(m3_model, single_inputs):
    with torch.no_grad():
        full = m3_model(**single_inputs, num_visual_tokens=576).logits[:, -1]
        pooled = m3_model(**single_inputs, num_visual_tokens=9).logits[:, -1]
    assert not torch.allclose(full, pooled)


def test_default_is_config_value_never_random(mqt_model, single_inputs):
    with torch.no_grad():
        default = mqt_model(**single_inputs).logits
        explicit = mqt_model(**single_inputs, num_visual_tokens=mqt_model.config.num_queries).logits
    assert mqt_model.config.num_visual_tokens == mqt_model.config.num_queries
    assert torch.equal(default, explicit)


INVALID = [0, -9, 9.0, True, "9", 577, 100, 256, [9, 9]]


@pytest.mark.parametrize("kind", ["m3", "mqt"])
@pytest.mark.parametrize("value", INVALID)
def test_invalid_counts_are_rejected_before_any_compute(kind, value, m3_model, mqt_model, single_inputs, monkeypatch):
    model = m3_model if kind == "m3" else mqt_model
    calls = []
    monkeypatch.setattr(model.model.vision_tower, "forward", lambda *a, **k: calls.append(1))
    valid = "one of 1, 9, 36, 144, 576" if kind == "m3" else "any integer from 1 to 16"
    with pytest.raises(ValueError, match="num_visual_tokens") as error:
        model(**single_inputs, num_visual_tokens=value)
    assert valid in str(error.value)
    with pytest.raises(ValueError, match="num_visual_tokens"):
        model.generate(**single_inputs, num_visual_tokens=value, max_new_tokens=2)
    assert calls == []


def test_mqt_accepts_every_count_up_to_m_and_rejects_m_plus_one(mqt_model, single_inputs):
    with pytest.raises(ValueError, match="from 1 to 16"):
        mqt_model(**single_inputs, num_visual_tokens=17)


@pytest.mark.parametrize("kind", ["m3", "mqt"])
def test_mixed_counts_in_a_batch_equal_each_sample_alone(kind, m3_model, mqt_model, processor):
    model = m3_model if kind == "m3" else mqt_model
    counts = [144, 9] if kind == "m3" else [16, 3]
    questions = ["What is in the image?", "How many shapes are there in this picture?"]
    images = random_images(2, seed=5)
    batch = processor(images=images, text=[chat_prompt(processor, q) for q in questions], padding=True, return_tensors="pt")
    batched = model.generate(**batch, num_visual_tokens=counts, max_new_tokens=6, do_sample=False)
    with torch.no_grad():
        batch_logits = model(**batch, num_visual_tokens=counts).logits
    for row, (question, image, count) in enumerate(zip(questions, images, counts)):
        alone = processor(images=[image], text=chat_prompt(processor, question), return_tensors="pt")
        single = model.generate(**alone, num_visual_tokens=count, max_new_tokens=6, do_sample=False)
        assert torch.equal(new_tokens(batched, batch)[row], new_tokens(single, alone)[0])
        with torch.no_grad():
            alone_logits = model(**alone, num_visual_tokens=count).logits[0, -1]
        assert torch.allclose(batch_logits[row, -1], alone_logits, atol=1e-5)


@pytest.mark.parametrize("kind", ["m3", "mqt"])
def test_greedy_with_cache_equals_recomputing_the_sequence(kind, m3_model, mqt_model, batch_inputs):
    model = m3_model if kind == "m3" else mqt_model
    count = 36 if kind == "m3" else 4
    cached = model.generate(**batch_inputs, num_visual_tokens=count, max_new_tokens=8, do_sample=False)
    uncached = model.generate(
        **batch_inputs, num_visual_tokens=count, max_new_tokens=8, do_sample=False, use_cache=False
    )
    assert torch.equal(cached, uncached)


def test_beams_and_return_sequences(m3_model, batch_inputs):
    output = m3_model.generate(
        **batch_inputs, num_visual_tokens=9, max_new_tokens=4, num_beams=3, num_return_sequences=2,
        do_sample=False, return_dict_in_generate=True,
    )
    prompt = batch_inputs["input_ids"]
    assert output.sequences.shape[0] == 4
    assert torch.equal(output.sequences[:, : prompt.shape[1]], prompt.repeat_interleave(2, dim=0))
    mixed = m3_model.generate(**batch_inputs, num_visual_tokens=[9, 144], max_new_tokens=3, num_beams=2)
    assert mixed.shape[0] == 2


def test_left_padded_batch_matches_unpadded_samples(mqt_model, batch_inputs, processor):
    assert (batch_inputs["attention_mask"][:, 0] == 0).any(), "the fixture must exercise left padding"
    batched = mqt_model.generate(**batch_inputs, num_visual_tokens=8, max_new_tokens=5, do_sample=False)
    for row in range(2):
        keep = batch_inputs["attention_mask"][row].bool()
        alone = {
            "input_ids": batch_inputs["input_ids"][row : row + 1, keep],
            "attention_mask": batch_inputs["attention_mask"][row : row + 1, keep],
            "pixel_values": batch_inputs["pixel_values"][row : row + 1],
        }
        single = mqt_model.generate(**alone, num_visual_tokens=8, max_new_tokens=5, do_sample=False)
        assert torch.equal(new_tokens(batched, batch_inputs)[row], new_tokens(single, alone)[0])


def test_labels_stay_aligned_with_compact_placeholders(m3_model, processor):
    prompt = chat_prompt(processor, "What is in the image?") + " A red square."
    compact = processor(images=random_images(1), text=prompt, return_tensors="pt")
    expanded = processor(images=random_images(1), text=prompt, return_tensors="pt", num_visual_tokens=36)
    image_id = m3_model.config.image_token_id
    compact_labels = compact["input_ids"].masked_fill(compact["input_ids"] == image_id, -100)
    expanded_labels = expanded["input_ids"].masked_fill(expanded["input_ids"] == image_id, -100)
    with torch.no_grad():
        from_compact = m3_model(**compact, labels=compact_labels, num_visual_tokens=36)
        from_expanded = m3_model(**expanded, labels=expanded_labels)
    assert from_compact.logits.shape == from_expanded.logits.shape
    assert torch.allclose(from_compact.loss, from_expanded.loss, atol=1e-6)


def test_expanded_runs_must_match_the_count(m3_model, processor):
    expanded = processor(
        images=random_images(1), text=chat_prompt(processor, "Hi"), return_tensors="pt", num_visual_tokens=36
    )
    with torch.no_grad():
        assert m3_model(**expanded).logits.shape[1] == expanded["input_ids"].shape[1]  # 36 is inferred
    with pytest.raises(ValueError, match="36 placeholder tokens"):
        m3_model(**expanded, num_visual_tokens=9)


def test_placeholder_and_image_count_mismatch(m3_model, single_inputs):
    two_images = torch.cat([single_inputs["pixel_values"]] * 2)
    with pytest.raises(ValueError, match="1 image placeholder runs but 2 images"):
        m3_model(input_ids=single_inputs["input_ids"], pixel_values=two_images)


@pytest.mark.parametrize("kind", ["m3", "mqt"])
def test_save_and_load_round_trip_is_bit_exact(kind, m3_model, mqt_model, single_inputs, tmp_path):
    model = m3_model if kind == "m3" else mqt_model
    model.save_pretrained(tmp_path)
    cls = M3LlavaForConditionalGeneration if kind == "m3" else MQTLlavaForConditionalGeneration
    loaded = cls.from_pretrained(tmp_path).eval()
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    for key in ("model_type", "num_visual_tokens", "valid_num_visual_tokens", "image_token_id", "auto_map"):
        assert getattr(loaded.config, key) == getattr(model.config, key), key
    with torch.no_grad():
        assert torch.equal(model(**single_inputs).logits, loaded(**single_inputs).logits)


def test_mqt_fresh_init_follows_the_release(mqt_model):
    from modeling_matryoshka_llava.token_reducers import get_2d_sincos_pos_embed

    projector = mqt_model.model.multi_modal_projector
    assert torch.equal(projector.pos_embed, get_2d_sincos_pos_embed(32, 4).half().float())
    assert not projector.pos_embed.requires_grad
    assert abs(projector.query.std().item() - 0.02) < 0.01
    assert torch.equal(projector.ln_q.weight, torch.ones(32))


def test_pipeline_passes_num_visual_tokens(m3_model, processor):
    from transformers import pipeline

    pipe = pipeline("image-text-to-text", model=m3_model, processor=processor)
    messages = [{"role": "user", "content": [{"type": "image", "image": random_images(1)[0]}, {"type": "text", "text": "Hi"}]}]
    prompt = chat_prompt(processor, "Hi")
    inputs = processor(images=random_images(1), text=prompt, return_tensors="pt")
    for count in (576, 9):
        result = pipe(text=messages, generate_kwargs={"num_visual_tokens": count, "max_new_tokens": 4, "do_sample": False}, return_full_text=False)
        expected = m3_model.generate(**inputs, num_visual_tokens=count, max_new_tokens=4, do_sample=False)
        assert result[0]["generated_text"] == processor.decode(new_tokens(expected, inputs)[0], skip_special_tokens=True)
