"""M3-LLaVA-NeXT: parity with transformers' LLaVA-NeXT, per-crop counts, layouts, longer grids, generation, saving."""

import pytest
import torch
from matryoshka_llava.processing import chat_prompt
from tiny_models import random_images
from tiny_next_models import LONGER_PINPOINTS, llava_next_with_weights_of, tiny_m3_next, tiny_next_processor

from modeling_matryoshka_llava import M3LlavaNextConfig, M3LlavaNextForConditionalGeneration
from modeling_matryoshka_llava.anyres_layout import AnyresImageLayout

# (width, height): a 1x2 grid, a 2x2 grid with un-padding, a 3x1 grid.
SIZES = ((96, 48), (70, 130), (20, 140))


@pytest.fixture(scope="module")
def next_model():
    return tiny_m3_next()


@pytest.fixture(scope="module")
def next_processor():
    return tiny_next_processor()


def prompts_for(processor, questions):
    return [chat_prompt(processor, question) for question in questions]


def new_tokens(output, inputs):
    return output[:, inputs["input_ids"].shape[1] :]


def real_positions(logits, attention_mask, row):
    return logits[row, attention_mask[row].bool()]


def test_full_grid_equals_transformers_llava_next(next_model, next_processor):
    llava_next = llava_next_with_weights_of(next_model)  # strict load: same keys, `model.image_newline` included
    assert "model.image_newline" in next_model.state_dict()
    images = random_images(2, seed=3, sizes=SIZES[:2])
    prompts = prompts_for(next_processor, ["What is in the image?", "Describe it."])
    expanded = next_processor(images=images, text=prompts, padding=True, return_tensors="pt", num_visual_tokens=576)
    compact = next_processor(images=images, text=prompts, padding=True, return_tensors="pt")
    # Plain llava-hf-style inputs (no `image_grid_shapes`: the grid comes from the config's pinpoints).
    llava_hf_inputs = {key: expanded[key] for key in ("input_ids", "attention_mask", "pixel_values", "image_sizes")}
    with torch.no_grad():
        reference = llava_next(**llava_hf_inputs).logits
        ours_expanded = next_model(**llava_hf_inputs).logits
        ours_compact = next_model(**compact, num_visual_tokens=576).logits
    assert (reference - ours_expanded).abs().max() <= 1e-5
    # Compact rows grow by different amounts (the images differ), so compare the real (unpadded) positions.
    compact_mask = next_model.model.prepare_images(
        compact["pixel_values"], compact["input_ids"], None, 576, compact["attention_mask"],
        image_sizes=compact["image_sizes"],
    ).attention_mask
    for row in range(2):
        expected = real_positions(reference, expanded["attention_mask"], row)
        assert (expected - real_positions(ours_compact, compact_mask, row)).abs().max() <= 1e-5


def test_spec_worked_example_square_image_on_a_2x2_grid(next_model, next_processor):
    image = random_images(1, sizes=((96, 96),))[0]
    inputs = next_processor(images=image, text=chat_prompt(next_processor, "Hi"), return_tensors="pt")
    assert inputs["image_grid_shapes"].tolist() == [[2, 2]]
    layout = next_model.model.image_layouts(
        inputs["pixel_values"], inputs["image_sizes"], inputs["image_grid_shapes"]
    )[0]
    features = next_model.get_image_features(
        inputs["pixel_values"], [1], image_sizes=inputs["image_sizes"], image_grid_shapes=inputs["image_grid_shapes"]
    ).pooler_output
    assert features[0].shape == (7, 32)
    for count, expected in ((1, 7), (9, 51), (576, 2928)):
        assert next_model.model.num_image_tokens(count, 0, layout) == expected
        assert next_processor.num_image_tokens((96, 96), count) == expected


def test_layout_is_base_crop_then_pooled_rows_with_newlines(next_model):
    """Hand-built crops whose every token holds its crop index: the layout is readable token by token."""
    model = next_model.model
    layout = AnyresImageLayout(image_size=(48, 96), grid_shape=(1, 2))
    crops = torch.arange(3, dtype=torch.float32)[:, None, None].expand(3, 576, 32)
    tokens = model.reduce_image_features(crops, [4], [layout])[0]
    newline = model.image_newline
    # base crop (2x2 pooled tokens of crop 0), then one row pair of crops 1|2 per pooled row, each with a newline.
    expected = [0] * 4 + [1, 1, 2, 2, None] * 2
    assert tokens.shape[0] == len(expected) == model.num_image_tokens(4, 0, layout)
    for token, value in zip(tokens, expected):
        assert torch.equal(token, newline) if value is None else bool((token == value).all())


def test_single_crop_image_gets_one_newline(next_model):
    inputs = {
        "pixel_values": torch.randn(1, 1, 3, 48, 48),
        "image_sizes": torch.tensor([[40, 30]]),
        "image_grid_shapes": torch.tensor([[0, 0]]),
    }
    for count in (1, 36):
        tokens = next_model.get_image_features(num_visual_tokens=count, **inputs).pooler_output[0]
        assert tokens.shape[0] == count + 1
        assert torch.equal(tokens[-1], next_model.model.image_newline)


def test_every_count_runs_forward_and_generate(next_model, next_processor):
    image = random_images(1, seed=4, sizes=SIZES[2:])[0]
    inputs = next_processor(images=image, text=chat_prompt(next_processor, "What is it?"), return_tensors="pt")
    prompt_length = inputs["input_ids"].shape[1]
    assert next_model.config.valid_num_visual_tokens == [1, 9, 36, 144, 576]
    for count in next_model.config.valid_num_visual_tokens:
        expected = next_processor.num_image_tokens(inputs["image_sizes"][0].tolist(), count)
        with torch.no_grad():
            logits = next_model(**inputs, num_visual_tokens=count).logits
        assert logits.shape[1] == prompt_length - 1 + expected
        if count <= 36:
            output = next_model.generate(**inputs, num_visual_tokens=count, max_new_tokens=3, do_sample=False)
            assert output.shape == (1, prompt_length + 3)
            assert torch.equal(output[:, :prompt_length], inputs["input_ids"])


INVALID = [0, -9, 4, 9.0, True, "9", 100, 577, [9, 9]]


@pytest.mark.parametrize("value", INVALID)
def test_invalid_counts_are_rejected_before_any_compute(value, next_model, next_processor, monkeypatch):
    inputs = next_processor(images=random_images(1), text=chat_prompt(next_processor, "Hi"), return_tensors="pt")
    calls = []
    monkeypatch.setattr(next_model.model.vision_tower, "forward", lambda *a, **k: calls.append(1))
    with pytest.raises(ValueError, match=r"num_visual_tokens.*one of 1, 9, 36, 144, 576"):
        next_model(**inputs, num_visual_tokens=value)
    with pytest.raises(ValueError, match="num_visual_tokens"):
        next_model.generate(**inputs, num_visual_tokens=value, max_new_tokens=2)
    assert calls == []


def test_mixed_counts_in_a_batch_equal_each_sample_alone(next_model, next_processor):
    questions = ["What is in the image?", "How many shapes are there in this picture?"]
    images = random_images(2, seed=5, sizes=SIZES[1:])
    counts = [36, 1]
    prompts = prompts_for(next_processor, questions)
    batch = next_processor(images=images, text=prompts, padding=True, return_tensors="pt")
    batched = next_model.generate(**batch, num_visual_tokens=counts, max_new_tokens=5, do_sample=False)
    with torch.no_grad():
        batch_logits = next_model(**batch, num_visual_tokens=counts).logits
    for row, (question, image, count) in enumerate(zip(questions, images, counts)):
        alone = next_processor(images=[image], text=chat_prompt(next_processor, question), return_tensors="pt")
        single = next_model.generate(**alone, num_visual_tokens=count, max_new_tokens=5, do_sample=False)
        assert torch.equal(new_tokens(batched, batch)[row], new_tokens(single, alone)[0])
        with torch.no_grad():
            alone_logits = next_model(**alone, num_visual_tokens=count).logits[0, -1]
        assert torch.allclose(batch_logits[row, -1], alone_logits, atol=1e-5)


def test_beams_and_cache_carry_the_image_inputs(next_model, next_processor):
    images = random_images(2, seed=6, sizes=SIZES[:2])
    prompts = prompts_for(next_processor, ["Hi", "What is it?"])
    batch = next_processor(images=images, text=prompts, padding=True, return_tensors="pt")
    output = next_model.generate(
        **batch, num_visual_tokens=[9, 1], max_new_tokens=3, num_beams=2, num_return_sequences=2, do_sample=False,
        return_dict_in_generate=True,
    )
    assert output.sequences.shape[0] == 4
    prompt = batch["input_ids"]
    assert torch.equal(output.sequences[:, : prompt.shape[1]], prompt.repeat_interleave(2, dim=0))
    cached = next_model.generate(**batch, num_visual_tokens=9, max_new_tokens=4, do_sample=False)
    uncached = next_model.generate(**batch, num_visual_tokens=9, max_new_tokens=4, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)


def test_longer_grids_at_inference_follow_the_processor(next_model):
    """The processor cuts with other pinpoints (up to 3x3); the model follows `image_grid_shapes` and needs no
    re-saving: it matches a model whose config holds those pinpoints and gets plain llava-hf-style inputs."""
    processor = tiny_next_processor()
    image = random_images(1, seed=7, sizes=((150, 140),))[0]
    prompt = chat_prompt(processor, "Read the document.")
    longer = processor(images=image, text=prompt, image_grid_pinpoints=LONGER_PINPOINTS, return_tensors="pt")
    default = processor(images=image, text=prompt, return_tensors="pt")
    assert longer["image_grid_shapes"].tolist() == [[3, 3]] and longer["pixel_values"].shape[1] == 10
    assert default["image_grid_shapes"].tolist() == [[2, 2]]
    reconfigured = M3LlavaNextForConditionalGeneration(
        M3LlavaNextConfig(**{**next_model.config.to_dict(), "image_grid_pinpoints": LONGER_PINPOINTS})
    ).eval()
    reconfigured.load_state_dict(next_model.state_dict())
    plain = {key: longer[key] for key in ("input_ids", "attention_mask", "pixel_values", "image_sizes")}
    with torch.no_grad():
        ours = next_model(**longer, num_visual_tokens=144).logits
        reference = reconfigured(**plain, num_visual_tokens=144).logits
    expected_tokens = processor.num_image_tokens((140, 150), 144, LONGER_PINPOINTS)
    assert ours.shape[1] == longer["input_ids"].shape[1] - 1 + expected_tokens
    assert torch.allclose(ours, reference, atol=1e-5)
    # 3x3 grids at 144 per crop cost fewer tokens than 2x2 grids at 576 (M3 paper, Table 5).
    assert processor.num_image_tokens((140, 150), 144, LONGER_PINPOINTS) < processor.num_image_tokens((140, 150), 576)
    with pytest.raises(ValueError, match="pass the `image_grid_shapes`"):
        next_model(**plain, num_visual_tokens=144)


def test_bad_image_inputs_raise_clear_errors(next_model, next_processor):
    inputs = next_processor(images=random_images(1), text=chat_prompt(next_processor, "Hi"), return_tensors="pt")
    ids, pixels = inputs["input_ids"], inputs["pixel_values"]
    with pytest.raises(ValueError, match="image_sizes"):
        next_model(input_ids=ids, pixel_values=pixels)
    with pytest.raises(ValueError, match=r"\(num_images, num_crops, channels, height, width\)"):
        next_model(input_ids=ids, pixel_values=pixels[0], image_sizes=inputs["image_sizes"])
    with pytest.raises(ValueError, match="image_sizes must hold one"):
        next_model(input_ids=ids, pixel_values=pixels, image_sizes=torch.tensor([[48, 48], [48, 48]]))
    with pytest.raises(ValueError, match="image_grid_shapes holds"):
        next_model(**{**inputs, "image_grid_shapes": torch.tensor([[0, 2]])})
    with pytest.raises(ValueError, match="crops per image"):
        next_model(**{**inputs, "image_grid_shapes": torch.tensor([[2, 2]])})


def test_multi_scale_training_forward_runs_the_tower_once(next_model, next_processor):
    images = random_images(2, seed=8, sizes=SIZES[:2])
    prompts = [prompt + " A red square." for prompt in prompts_for(next_processor, ["What is it?", "Hi"])]
    batch = next_processor(images=images, text=prompts, padding=True, padding_side="right", return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    calls = []
    hook = next_model.model.vision_tower.register_forward_hook(lambda *args: calls.append(1))
    try:
        with torch.no_grad():
            output = next_model(**batch, labels=labels, multi_scale_num_visual_tokens=[1, 9])
    finally:
        hook.remove()
    assert calls == [1]
    with torch.no_grad():
        singles = [next_model(**batch, labels=labels, num_visual_tokens=count).loss for count in (1, 9)]
    assert torch.allclose(output.loss_per_num_visual_tokens, torch.stack(singles), atol=1e-5)


def test_save_and_load_round_trip_is_bit_exact(next_model, next_processor, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    next_model.save_pretrained(tmp_path)
    next_processor.save_pretrained(tmp_path)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    processor = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is M3LlavaNextForConditionalGeneration
    assert loaded.config.model_type == "m3_llava_next"
    for (name, a), (_, b) in zip(next_model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    inputs = processor(images=random_images(1), text=chat_prompt(processor, "Hi"), return_tensors="pt")
    with torch.no_grad():
        expected = next_model(**inputs, num_visual_tokens=9).logits
        assert torch.equal(expected, loaded(**inputs, num_visual_tokens=9).logits)


def test_config_validates_scales_and_pinpoints():
    from tiny_next_models import tiny_next_kwargs

    config = M3LlavaNextConfig(**tiny_next_kwargs())
    assert config.matryoshka_scales == [1, 9, 36, 144, 576]
    assert config.num_visual_tokens == config.image_seq_length == 576
    with pytest.raises(ValueError, match="matryoshka_scales holds 25"):
        M3LlavaNextConfig(**tiny_next_kwargs(), matryoshka_scales=[1, 25])
    with pytest.raises(ValueError, match=r"image_grid_pinpoints holds \[48, 100\]"):
        M3LlavaNextConfig(**{**tiny_next_kwargs(), "image_grid_pinpoints": [[48, 100]]})
