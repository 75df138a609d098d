"""Training M3-LLaVA-NeXT: LLaVA data with anyres images (a varying number of crops per image), the collator, the
length check, and M3Trainer steps (vision tower once per step, per-scale losses equal separate forwards)."""

import pytest
import torch
from instruction_data import write_colour_dataset
from test_trainers import arguments
from tiny_next_models import tiny_next_kwargs, tiny_next_processor

from modeling_matryoshka_llava import M3LlavaNextConfig, M3LlavaNextForConditionalGeneration
from matryoshka_llava.training.data_collation import MatryoshkaLlavaDataCollator
from matryoshka_llava.training.data import LazyImageDataset, load_instruction_data
from matryoshka_llava.training.run import build_trainer, image_token_counter

# (width, height) of the records' images in turn: crop grids 1x2, 1x3, 3x1 and 2x2 of 48 px crops.
SIZES = ((40, 32), (120, 30), (30, 110), (60, 60))


def tiny_next_model(seed: int = 0) -> M3LlavaNextForConditionalGeneration:
    """48 px crops with 8 px patches: a 6x6 grid per crop, scales [1, 9, 36], so multi-scale steps stay fast."""
    torch.manual_seed(seed)
    kwargs = tiny_next_kwargs()
    kwargs["vision_config"] = {**kwargs["vision_config"], "patch_size": 8}
    return M3LlavaNextForConditionalGeneration(M3LlavaNextConfig(**kwargs)).eval()


@pytest.fixture(scope="module")
def processor():
    return tiny_next_processor()


@pytest.fixture(scope="module")
def dataset(processor, tmp_path_factory):
    folder = tmp_path_factory.mktemp("next-data")
    data = load_instruction_data(write_colour_dataset(folder, 4, sizes=SIZES), folder / "images", processor)
    return LazyImageDataset(data.records, processor.image_processor)


def test_examples_carry_every_crop_and_the_layout_of_their_image(dataset, processor):
    crops = []
    for index, (width, height) in enumerate(SIZES):
        example = dataset[index]
        rows, columns = processor.image_processor.crop_grid((height, width))
        assert example["pixel_values"].shape == (1 + rows * columns, 3, 48, 48)
        assert example["image_sizes"].tolist() == [height, width]
        assert example["image_grid_shapes"].tolist() == [rows, columns]
        crops.append(example["pixel_values"].shape[0])
    assert len(set(crops)) > 1


def test_collator_pads_crops_and_stacks_layouts(dataset, processor):
    examples = [dataset[index] for index in range(len(SIZES))]
    collator = MatryoshkaLlavaDataCollator(processor.tokenizer.pad_token_id, processor.image_token_id)
    batch = collator(examples)
    most = max(example["pixel_values"].shape[0] for example in examples)
    assert batch["pixel_values"].shape == (len(examples), most, 3, 48, 48)
    for row, example in enumerate(examples):
        count = example["pixel_values"].shape[0]
        assert torch.equal(batch["pixel_values"][row, :count], example["pixel_values"])
        assert not batch["pixel_values"][row, count:].any()
    assert batch["image_sizes"].tolist() == [[height, width] for width, height in SIZES]
    assert batch["image_grid_shapes"].tolist() == [example["image_grid_shapes"].tolist() for example in examples]
    # A text-only example in the batch has no crops and no layout.
    text_only = {"input_ids": examples[0]["input_ids"][:5], "labels": [-100] * 5, "pixel_values": None}
    mixed = collator([text_only, *examples[:2]])
    assert mixed["pixel_values"].shape[0] == mixed["image_sizes"].shape[0] == 2


def test_fixed_count_expands_each_image_to_its_own_layout(dataset, processor):
    model = tiny_next_model()
    examples = [dataset[index] for index in range(len(SIZES))]
    compact = MatryoshkaLlavaDataCollator(processor.tokenizer.pad_token_id, processor.image_token_id)(examples)
    expanded = MatryoshkaLlavaDataCollator(processor.tokenizer.pad_token_id, processor.image_token_id, 9)(examples)
    expected = [processor.num_image_tokens((height, width), 9) for width, height in SIZES]
    assert (expanded["input_ids"] == processor.image_token_id).sum(dim=1).tolist() == expected
    assert len(set(expected)) > 1
    with torch.no_grad():
        torch.testing.assert_close(model(**expanded).loss, model(**compact, num_visual_tokens=9).loss)
    with pytest.raises(ValueError, match="num_visual_tokens=8 is not valid.*must be a positive square"):
        MatryoshkaLlavaDataCollator(processor.tokenizer.pad_token_id, processor.image_token_id, 8)(examples)


def test_length_check_counts_the_tokens_each_image_size_gives(processor, tmp_path):
    model = tiny_next_model()
    path = write_colour_dataset(tmp_path, 2, sizes=((40, 32), (120, 30)))
    count = image_token_counter(processor, model.config)
    small, wide = count((32, 40)), count((30, 120))
    assert small == processor.num_image_tokens((32, 40), 36) and wide > small
    base = load_instruction_data(path, tmp_path / "images", processor, max_length=10**6, image_tokens=count)
    text_length = len(base.records[0]["input_ids"]) - 1
    data = load_instruction_data(path, tmp_path / "images", processor, max_length=text_length + small,
                                 image_tokens=count)
    assert len(data.records) == 1 and data.skipped == {f"longer than max_length={text_length + small}": 1}


def test_multi_scale_forward_runs_the_tower_once_and_equals_separate_forwards(dataset, processor):
    model = tiny_next_model()
    batch = MatryoshkaLlavaDataCollator(processor.tokenizer.pad_token_id, processor.image_token_id)(
        [dataset[index] for index in range(len(SIZES))])
    calls = []
    hook = model.model.vision_tower.register_forward_hook(lambda *args: calls.append(1))
    output = model(**batch, multi_scale_num_visual_tokens=[1, 9, 36])
    hook.remove()
    assert len(calls) == 1
    with torch.no_grad():
        separate = torch.stack([model(**batch, num_visual_tokens=count).loss for count in (1, 9, 36)])
    torch.testing.assert_close(output.loss_per_num_visual_tokens.detach(), separate, rtol=0, atol=1e-6)
    output.loss.backward()
    assert model.model.image_newline.grad is not None and model.model.image_newline.grad.abs().sum() > 0


def test_m3_trainer_trains_m3_llava_next(tmp_path, processor):
    data = write_colour_dataset(tmp_path / "data", 4, sizes=SIZES)
    model = tiny_next_model().train()
    before = {name: value.detach().clone() for name, value in model.named_parameters()}
    trainer = build_trainer(None, str(data), str(tmp_path / "data" / "images"), "m3",
                            arguments(tmp_path, max_steps=2, freeze_vision_tower=False), model=model,
                            processor=processor)
    calls = []
    trainer.model.model.vision_tower.register_forward_hook(lambda *args: calls.append(1))
    trainer.train()
    assert len(calls) == 2  # one vision pass per step (batch of 4 = one micro-batch), for three scales
    log = trainer.state.log_history[0]
    per_scale = [log[f"loss_{scale}_tokens"] for scale in (1, 9, 36)]
    assert abs(sum(per_scale) / 3 - log["loss"]) < 1e-4
    changed = {name.split(".")[1] for name, value in model.named_parameters() if not torch.equal(before[name], value)}
    assert {"vision_tower", "multi_modal_projector", "image_newline", "language_model"} <= changed

    with pytest.raises(ValueError, match="--method mqt trains a mqt_llava model, but"):
        build_trainer(None, str(data), str(tmp_path / "data" / "images"), "mqt", arguments(tmp_path),
                      model=tiny_next_model(), processor=processor)


def test_frozen_projector_freezes_the_image_newline(tmp_path, processor):
    data = write_colour_dataset(tmp_path / "data", 4, sizes=SIZES)
    trainer = build_trainer(None, str(data), str(tmp_path / "data" / "images"), "m3",
                            arguments(tmp_path, max_steps=1, freeze_projector=True), model=tiny_next_model().train(),
                            processor=processor)
    assert not trainer.model.model.image_newline.requires_grad
    assert trainer.model.model.language_model.embed_tokens.weight.requires_grad
