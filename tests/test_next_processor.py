"""M3-LLaVA-NeXT processing: anyres parity with transformers, exact token-count prediction (property tests), errors."""

import numpy as np
import pytest
import torch
from matryoshka_llava.processing import chat_prompt
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from tiny_models import random_images
from tiny_next_models import CROP, LONGER_PINPOINTS, NEXT_PINPOINTS, tiny_m3_next, tiny_next_processor

from modeling_matryoshka_llava.image_placeholders import find_image_runs
from modeling_matryoshka_llava.anyres_layout import AnyresImageLayout
from matryoshka_llava.processing import MatryoshkaLlavaNextImageProcessor, anyres_grid_pinpoints, anyres_num_image_tokens
from modeling_matryoshka_llava.anyres_layout import select_crop_grid

SCALES = [1, 9, 36, 144, 576]


@pytest.fixture(scope="module")
def next_model():
    return tiny_m3_next()


@pytest.fixture(scope="module")
def next_processor():
    return tiny_next_processor()


def llava_hf_processor(processor):
    """transformers' own LLaVA-NeXT processor with the same settings (its PIL image processor needs no torchvision)."""
    from transformers import LlavaNextProcessor
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": CROP}, crop_size={"height": CROP, "width": CROP}, image_grid_pinpoints=NEXT_PINPOINTS
    )
    return LlavaNextProcessor(
        image_processor=image_processor, tokenizer=processor.tokenizer, patch_size=2,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
    )


@pytest.mark.parametrize("height, width", [(48, 96), (130, 70), (31, 200), (300, 17), (97, 97), (1, 1)])
def test_anyres_preprocessing_and_full_count_match_transformers(height, width, next_processor):
    image = Image.fromarray(np.random.default_rng(height * width).integers(0, 256, (height, width, 3), dtype=np.uint8))
    reference = llava_hf_processor(next_processor)
    ours = next_processor.image_processor(image, return_tensors="pt")
    theirs = reference.image_processor(image, return_tensors="pt")
    assert ours["pixel_values"].shape == theirs["pixel_values"].shape
    assert (ours["pixel_values"] - theirs["pixel_values"]).abs().max() <= 1e-5
    assert ours["image_sizes"].tolist() == theirs["image_sizes"].tolist() == [[height, width]]
    prompt = "USER: <image>\nWhat is this? ASSISTANT:"
    expanded = next_processor(images=image, text=prompt, num_visual_tokens=576, return_tensors="pt")["input_ids"]
    assert torch.equal(expanded, reference(images=image, text=prompt, return_tensors="pt")["input_ids"])


pinpoint_sets = st.one_of(
    st.just(NEXT_PINPOINTS),
    st.just(LONGER_PINPOINTS),
    st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4)), min_size=1, max_size=5).map(
        lambda grids: [[rows * CROP, columns * CROP] for rows, columns in grids]
    ),
)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    height=st.integers(1, 3000), width=st.integers(1, 3000), count=st.sampled_from(SCALES), pinpoints=pinpoint_sets
)
def test_predicted_count_is_what_the_model_lays_out(height, width, count, pinpoints, next_model, next_processor):
    """Over image sizes, aspect ratios, grids and counts: processor arithmetic == model count == tokens produced."""
    predicted = next_processor.num_image_tokens((height, width), count, pinpoints)
    layout = AnyresImageLayout((height, width), select_crop_grid((height, width), pinpoints, CROP))
    assert next_model.model.num_image_tokens(count, 0, layout) == predicted
    crops = torch.zeros(layout.num_crops, 576, 32)
    produced = next_model.model.reduce_image_features(crops, [count], [layout])[0]
    assert produced.shape == (predicted, 32)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(height=st.integers(1, 3000), width=st.integers(1, 3000))
def test_full_count_matches_transformers_arithmetic(height, width, next_processor):
    reference = llava_hf_processor(next_processor)
    expected = reference._get_number_of_features(height, width, CROP, CROP) - 1  # minus the CLS it counts
    assert next_processor.num_image_tokens((height, width), 576) == expected


@settings(max_examples=10, deadline=None, derandomize=True)
@given(
    sizes=st.lists(st.tuples(st.integers(1, 200), st.integers(1, 200)), min_size=1, max_size=3),
    counts=st.lists(st.sampled_from(SCALES[:4]), min_size=3, max_size=3),
    longer=st.booleans(),
)
def test_processor_expansion_matches_the_model_for_mixed_counts(sizes, counts, longer, next_model, next_processor):
    """End to end on real images in one batch, with a different count per image: the processor's expanded runs
    have exactly the length of the model's visual tokens for each image."""
    counts = counts[: len(sizes)]
    images = [Image.new("RGB", (width, height), (20 * i, 90, 200)) for i, (height, width) in enumerate(sizes)]
    text = " ".join(f"Image {i}: <image>." for i in range(len(images)))
    pinpoints = LONGER_PINPOINTS if longer else None
    inputs = next_processor(
        images=images, text=text, num_visual_tokens=counts, image_grid_pinpoints=pinpoints, return_tensors="pt"
    )
    run_lengths = [run.length for run in find_image_runs(inputs["input_ids"], next_processor.image_token_id)]
    with torch.no_grad():
        features = next_model.get_image_features(
            inputs["pixel_values"],
            counts,
            image_sizes=inputs["image_sizes"],
            image_grid_shapes=inputs["image_grid_shapes"],
        ).pooler_output
    assert run_lengths == [tokens.shape[0] for tokens in features]
    assert run_lengths == [
        anyres_num_image_tokens(size, grid, count)
        for size, grid, count in zip(sizes, inputs["image_grid_shapes"].tolist(), counts)
    ]


def test_compact_and_expanded_inputs_give_the_same_logits(next_model, next_processor):
    images = random_images(2, seed=2, sizes=((60, 100), (100, 30)))
    text = chat_prompt(next_processor, "Compare them.", num_images=2)
    compact = next_processor(images=images, text=text, return_tensors="pt")
    expanded = next_processor(images=images, text=text, num_visual_tokens=[9, 36], return_tensors="pt")
    with torch.no_grad():
        from_compact = next_model(**compact, num_visual_tokens=[9, 36]).logits
        from_expanded = next_model(**expanded).logits  # counts inferred from the run lengths
    assert torch.allclose(from_compact, from_expanded, atol=1e-6)


def test_invalid_inputs_raise_clear_errors(next_processor, tmp_path):
    image = Image.new("RGB", (30, 20))
    prompt = "USER: <image>\nHi ASSISTANT:"
    for count in (0, 5, True, 2.0):
        with pytest.raises(ValueError, match="must be a positive square"):
            next_processor(images=image, text=prompt, num_visual_tokens=count)
    with pytest.raises(ValueError, match="2 values but the inputs hold 1 images"):
        next_processor(images=image, text=prompt, num_visual_tokens=[1, 9])
    with pytest.raises(ValueError, match=r"image_grid_pinpoints holds \[48, 50\]"):
        next_processor(images=image, text=prompt, image_grid_pinpoints=[[48, 50]])
    with pytest.raises(ValueError, match="image_grid_pinpoints is empty"):
        next_processor(images=image, text=prompt, image_grid_pinpoints=[])
    with pytest.raises(ValueError, match="1 `<image>` placeholders but 2 images"):
        next_processor(images=[image, image], text=prompt)
    with pytest.raises(ValueError, match="separate adjacent"):
        next_processor(images=[image, image], text="<image><image>")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="corrupt.png.*could not be decoded"):
        next_processor(images=str(corrupt), text=prompt)
    with pytest.raises(ValueError, match="crop_size"):
        MatryoshkaLlavaNextImageProcessor(crop_size={"height": 48, "width": 32})


def test_longer_grid_pinpoints_helper():
    assert anyres_grid_pinpoints(2, 3, 48) == [[48, 48], [48, 96], [48, 144], [96, 48], [96, 96], [96, 144]]
    assert len(anyres_grid_pinpoints(3, 3)) == 9 and [1008, 1008] in anyres_grid_pinpoints(3, 3)
    with pytest.raises(ValueError, match="max_rows"):
        anyres_grid_pinpoints(0, 3)


def test_default_processor_is_llava_next():
    image_processor = MatryoshkaLlavaNextImageProcessor()
    assert image_processor.image_grid_pinpoints == [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
    assert image_processor.crop_size == {"height": 336, "width": 336}
    assert image_processor.crop_grid((672, 672)) == (2, 2)


def test_processor_save_and_load_round_trip(tmp_path):
    from transformers import AutoProcessor

    processor = tiny_next_processor(pinpoints=LONGER_PINPOINTS, num_frames=4, video_grid=[2, 2])
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "MatryoshkaLlavaNextProcessor"
    assert (loaded.num_frames, loaded.video_grid, loaded.video_token) == (4, [2, 2], "<video>")
    assert loaded.image_processor.image_grid_pinpoints == LONGER_PINPOINTS
    image = Image.new("RGB", (130, 40), (1, 2, 3))
    a = processor(images=image, text="USER: <image>\nHi ASSISTANT:", return_tensors="pt")
    b = loaded(images=image, text="USER: <image>\nHi ASSISTANT:", return_tensors="pt")
    assert set(a) == set(b) == {"input_ids", "attention_mask", "pixel_values", "image_sizes", "image_grid_shapes"}
    assert all(torch.equal(a[key], b[key]) for key in a)
