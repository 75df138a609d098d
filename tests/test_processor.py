"""Processor: LLaVA "pad" preprocessing, odd image formats, clear errors, the vicuna_v1 chat template."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from matryoshka_llava.processing import VICUNA_V1_SYSTEM_PROMPT, MatryoshkaLlavaImageProcessor


def reference_pad_preprocess(image: Image.Image, size: int) -> np.ndarray:
    """LLaVA-1.5 as the original code does it: expand2square with the mean colour, then CLIP resize/crop/normalise."""
    mean, std = np.array([0.48145466, 0.4578275, 0.40821073]), np.array([0.26862954, 0.26130258, 0.27577711])
    width, height = image.size
    side = max(width, height)
    square = Image.new("RGB", (side, side), tuple(int(x * 255) for x in mean))
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    resized = square.resize((size, size), Image.Resampling.BICUBIC)
    return ((np.asarray(resized, dtype=np.float32) / 255 - mean) / std).transpose(2, 0, 1).astype(np.float32)


def test_pad_preprocessing_matches_llava(processor):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (30, 70, 3), dtype=np.uint8))
    pixel_values = processor.image_processor(image, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 3, 48, 48)
    np.testing.assert_allclose(pixel_values[0].numpy(), reference_pad_preprocess(image, 48), atol=1e-5)
    # the padding band is exactly the normalised mean colour (up to the int rounding of the colour)
    assert pixel_values[0, :, 0, :].abs().max() < 0.02


def test_default_processor_is_llava_1_5():
    processor = MatryoshkaLlavaImageProcessor()
    assert processor.crop_size == {"height": 336, "width": 336}
    assert processor.pad_color == (122, 116, 104)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "RGB", "1", "F"])
def test_every_pil_mode_becomes_rgb(mode, processor):
    rgb = Image.fromarray(np.random.default_rng(1).integers(0, 256, (20, 20, 3), dtype=np.uint8))
    image = rgb.convert(mode) if mode not in ("I;16", "F") else Image.fromarray(
        (np.asarray(rgb.convert("L"), dtype=np.uint16) * 257) if mode == "I;16" else np.asarray(rgb.convert("L"), dtype=np.float32) / 255
    )
    assert image.mode == mode or (mode == "I;16" and image.mode.startswith("I;16"))
    pixel_values = processor.image_processor(image, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 3, 48, 48) and torch.isfinite(pixel_values).all()


def test_sixteen_bit_and_grey_images_keep_their_brightness(processor):
    grey = Image.fromarray(np.full((8, 8), 128, dtype=np.uint8))
    grey16 = Image.fromarray(np.full((8, 8), 128 * 257, dtype=np.uint16))
    a = processor.image_processor(grey, return_tensors="pt")["pixel_values"]
    b = processor.image_processor(grey16, return_tensors="pt")["pixel_values"]
    assert torch.allclose(a, b, atol=1e-5)


def test_transparency_is_composited_on_white(processor):
    clear = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    white = Image.new("RGB", (8, 8), (255, 255, 255))
    a = processor.image_processor(clear, return_tensors="pt")["pixel_values"]
    b = processor.image_processor(white, return_tensors="pt")["pixel_values"]
    assert torch.equal(a, b)


def test_numpy_and_torch_inputs_match_pil(processor):
    array = np.random.default_rng(2).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    from_pil = processor.image_processor(Image.fromarray(array), return_tensors="pt")["pixel_values"]
    for image in (array, array.transpose(2, 0, 1), torch.from_numpy(array).permute(2, 0, 1), array / 255.0,
                  torch.from_numpy(array).permute(2, 0, 1).float() / 255):
        assert torch.allclose(processor.image_processor(image, return_tensors="pt")["pixel_values"], from_pil, atol=1e-5)


def test_files_and_bytes_are_decoded(processor, tmp_path):
    image = Image.fromarray(np.random.default_rng(3).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    path = tmp_path / "image.png"
    image.save(path)
    expected = processor.image_processor(image, return_tensors="pt")["pixel_values"]
    assert torch.equal(processor.image_processor(str(path), return_tensors="pt")["pixel_values"], expected)
    assert torch.equal(processor.image_processor(path.read_bytes(), return_tensors="pt")["pixel_values"], expected)


def test_zero_size_and_undecodable_images_raise_clear_errors(processor, tmp_path):
    with pytest.raises(ValueError, match="zero size"):
        processor.image_processor(Image.new("RGB", (0, 5)))
    with pytest.raises(ValueError, match="zero size"):
        processor.image_processor(np.zeros((0, 4, 3), dtype=np.uint8))
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="corrupt.jpg.*could not be decoded"):
        processor.image_processor(str(corrupt))
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(buffer, format="PNG")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ValueError, match="truncated.png.*could not be decoded"):
        processor.image_processor(str(truncated))
    from PIL import ImageFile

    ImageFile.LOAD_TRUNCATED_IMAGES = True  # as lmms-eval sets it for the whole process
    try:
        with pytest.raises(ValueError, match="truncated.png.*could not be decoded"):
            processor.image_processor(str(truncated))
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    with pytest.raises(ValueError, match="unsupported type"):
        processor.image_processor(12)


def test_image_count_must_match_placeholders(processor):
    image = Image.new("RGB", (8, 8))
    with pytest.raises(ValueError, match="1 `<image>` placeholders but 2 images"):
        processor(images=[image, image], text="USER: <image>\nHi ASSISTANT:")
    with pytest.raises(ValueError, match="0 `<image>` placeholders but 1 images"):
        processor(images=[image], text="USER: Hi ASSISTANT:")


def test_one_call_serves_every_count_and_expansion_is_optional(processor):
    image = Image.new("RGB", (8, 8))
    compact = processor(images=image, text="USER: <image>\nHi ASSISTANT:", return_tensors="pt")
    image_id = processor.image_token_id
    assert (compact["input_ids"] == image_id).sum() == 1
    expanded = processor(images=image, text="USER: <image>\nHi ASSISTANT:", num_visual_tokens=36, return_tensors="pt")
    assert (expanded["input_ids"] == image_id).sum() == 36
    assert expanded["input_ids"].shape[1] == compact["input_ids"].shape[1] + 35
    with pytest.raises(ValueError, match="must be a positive integer"):
        processor(images=image, text="USER: <image>\nHi ASSISTANT:", num_visual_tokens=0)


@pytest.mark.parametrize("kind", ["m3", "mqt"])
def test_a_processor_saved_with_its_models_counts_refuses_what_the_model_refuses(kind, m3_model, mqt_model, processor,
                                                                                 tmp_path):
    from transformers import AutoProcessor

    from modeling_matryoshka_llava.visual_token_counts import processor_count_settings

    model = m3_model if kind == "m3" else mqt_model
    settings = processor_count_settings(model.config)
    type(processor)(image_processor=processor.image_processor, tokenizer=processor.tokenizer, **settings).save_pretrained(tmp_path)
    saved = AutoProcessor.from_pretrained(tmp_path)
    image = Image.new("RGB", (8, 8))
    text = "USER: <image>\nHi ASSISTANT:"
    invalid, valid = (100, 144) if kind == "m3" else (17, 16)
    with pytest.raises(ValueError, match="not valid for this model") as refused_here:
        saved(images=image, text=text, num_visual_tokens=invalid)
    inputs = saved(images=image, text=text, num_visual_tokens=valid, return_tensors="pt")
    assert (inputs["input_ids"] == saved.image_token_id).sum() == valid
    with pytest.raises(ValueError) as refused_by_model:  # the same words as the model's own check
        model.model.resolve_num_visual_tokens(invalid, 1)
    assert str(refused_here.value) == str(refused_by_model.value)


def test_chat_template_gives_the_vicuna_v1_prompt(processor):
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
        {"role": "user", "content": [{"type": "text", "text": "And its colour?"}]},
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt == (
        f"{VICUNA_V1_SYSTEM_PROMPT} USER: <image>\nWhat is this? ASSISTANT: A cat.</s>USER: And its colour? ASSISTANT:"
    )
    custom = processor.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], add_generation_prompt=True
    )
    assert custom == "Be brief. USER: Hi ASSISTANT:"


def test_processor_save_and_load_round_trip(processor, tmp_path):
    from transformers import AutoProcessor

    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "MatryoshkaLlavaProcessor"
    image = Image.new("RGB", (30, 20), (1, 2, 3))
    a = processor(images=image, text="USER: <image>\nHi ASSISTANT:", return_tensors="pt")
    b = loaded(images=image, text="USER: <image>\nHi ASSISTANT:", return_tensors="pt")
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert loaded.chat_template == processor.chat_template


def test_a_datasets_image_column_is_accepted(processor):
    import datasets

    images = [Image.new("RGB", (10, 12), (i * 40, 0, 0)) for i in range(3)]
    column = datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()}))["image"]
    from_column = processor.image_processor(column, return_tensors="pt")["pixel_values"]
    assert torch.equal(from_column, processor.image_processor(images, return_tensors="pt")["pixel_values"])
