"""M3Trainer / MQTTrainer on tiny models: the losses, the m schedule, Trainer behaviour (accumulation, resume,
PEFT), and learning."""

import pytest
import torch
from instruction_data import write_colour_dataset
from tiny_models import random_images, tiny_m3, tiny_mqt, tiny_processor

from matryoshka_llava.processing import chat_prompt
from matryoshka_llava.training.data_collation import MatryoshkaLlavaDataCollator
from matryoshka_llava.training.arguments import MatryoshkaTrainingArguments
from matryoshka_llava.training.data import LazyImageDataset, load_instruction_data
from matryoshka_llava.training.run import build_trainer
from matryoshka_llava.training.trainers import draw_for_step


def arguments(tmp_path, **overrides):
    defaults = dict(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, learning_rate=1e-3, max_steps=4,
        logging_steps=1, save_strategy="no", report_to=[], seed=7, use_cpu=True, dataloader_num_workers=0,
        disable_tqdm=True,
    )
    return MatryoshkaTrainingArguments(**{**defaults, **overrides})


def trainer_for(tmp_path, method, model=None, num_records=8, **overrides):
    data = write_colour_dataset(tmp_path / "data", num_records)
    model = model or (tiny_m3() if method == "m3" else tiny_mqt())
    return build_trainer(
        None, str(data), str(tmp_path / "data" / "images"), method, arguments(tmp_path, **overrides),
        model=model.train(), processor=tiny_processor(),
    )


def colour_batch(tmp_path, size=4):
    processor = tiny_processor()
    data = load_instruction_data(write_colour_dataset(tmp_path / "batch", size), tmp_path / "batch" / "images", processor)
    dataset = LazyImageDataset(data.records, processor.image_processor)
    collator = MatryoshkaLlavaDataCollator(processor.tokenizer.pad_token_id, processor.image_token_id)
    return collator([dataset[i] for i in range(size)])


@pytest.mark.parametrize("pack_scales", [False, True])
def test_m3_loss_is_the_mean_of_per_scale_losses_with_one_vision_pass(tmp_path, pack_scales):
    model = tiny_m3()
    batch = colour_batch(tmp_path)
    calls = []
    hooks = [module.register_forward_hook(lambda module, *args: calls.append(module))
             for module in (model.model.vision_tower, model.model.language_model)]
    scales = model.config.matryoshka_scales
    output = model(**batch, multi_scale_num_visual_tokens=scales, pack_scales=pack_scales)
    # One pass of the tower; the language model once per scale, or once for all (sequences packed per sample).
    language_model_calls = 1 if pack_scales else len(scales)
    assert calls == [model.model.vision_tower] + [model.model.language_model] * language_model_calls
    for hook in hooks:
        hook.remove()
    separate = torch.stack([model(**batch, num_visual_tokens=scale).loss for scale in scales])
    assert torch.allclose(output.loss_per_num_visual_tokens, separate, atol=1e-6, rtol=0)
    assert abs(output.loss.item() - separate.mean().item()) <= 1e-6
    output.loss.backward()  # one backward through all scales
    assert model.model.multi_modal_projector.linear_1.weight.grad is not None


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_multi_scale_gradients_equal_the_sum_of_separate_passes(tmp_path, attention):
    """Packing the scales changes nothing a trainer sees: per-scale losses (fp32, 1e-5) and the gradients of their
    mean, with unevenly long samples in the batch."""
    model = tiny_m3()
    model.set_attn_implementation(attention)
    processor = tiny_processor()
    processor.tokenizer.padding_side = "right"  # as the training collator pads
    prompts = [chat_prompt(processor, question) for question in ("Colour?", "What colour is this image, please?", "Hi")]
    batch = dict(processor(images=random_images(3), text=prompts, padding=True, return_tensors="pt"))
    assert not batch["attention_mask"].all()  # padded: the samples are of different lengths
    batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    scales = model.config.matryoshka_scales
    output = model(**batch, multi_scale_num_visual_tokens=scales, pack_scales=True)
    separate = torch.stack([model(**batch, num_visual_tokens=scale).loss for scale in scales])
    torch.testing.assert_close(output.loss_per_num_visual_tokens, separate, rtol=0, atol=1e-5)
    output.loss.backward()
    packed = {name: parameter.grad.clone() for name, parameter in model.named_parameters() if parameter.grad is not None}
    model.zero_grad()
    torch.stack([model(**batch, num_visual_tokens=scale).loss for scale in scales]).mean().backward()
    for name, parameter in model.named_parameters():
        if parameter.grad is not None:
            torch.testing.assert_close(packed[name], parameter.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_m3_trainer_step_calls_the_vision_tower_once_and_logs_every_scale(tmp_path):
    trainer = trainer_for(tmp_path, "m3", max_steps=2, freeze_vision_tower=False)
    calls = []
    trainer.model.model.vision_tower.register_forward_hook(lambda *args: calls.append(1))
    trainer.train()
    assert len(calls) == 2  # one per step (batch 4 = one micro-batch), for five scales
    log = trainer.state.log_history[0]
    per_scale = [log[f"loss_{scale}_tokens"] for scale in (1, 9, 36, 144, 576)]
    assert abs(sum(per_scale) / 5 - log["loss"]) < 1e-4


def test_m3_single_random_scale_option(tmp_path):
    trainer = trainer_for(tmp_path, "m3", max_steps=6, random_scale_per_step=True)
    trainer.train()
    drawn = [entry["num_visual_tokens"] for entry in trainer.state.log_history if "num_visual_tokens" in entry]
    assert drawn == [draw_for_step([1, 9, 36, 144, 576], 7, step) for step in range(6)]


def test_mqt_m_sequence_is_reproducible_from_the_seed(tmp_path):
    def sequence(seed):
        trainer = trainer_for(tmp_path / str(seed), "mqt", max_steps=5, seed=seed)
        trainer.train()
        return [entry["num_visual_tokens"] for entry in trainer.state.log_history if "num_visual_tokens" in entry]

    first, again, other = sequence(3), sequence(3), sequence(4)
    assert first == again
    assert first != other
    assert all(m % 2 == 0 and 2 <= m <= 16 for m in first)


def trainable_parts(model) -> set[str]:
    return {name.removeprefix("model.").split(".")[0] for name, p in model.named_parameters() if p.requires_grad}


def test_mqt_stage_presets(tmp_path):
    stage1 = trainer_for(tmp_path / "s1", "mqt", stage=1)
    assert trainable_parts(stage1.model) == {"multi_modal_projector"}
    assert stage1.counts_for_step(training=True) == 16
    stage2 = trainer_for(tmp_path / "s2", "mqt", stage=2)
    assert trainable_parts(stage2.model) == {"multi_modal_projector", "language_model", "lm_head"}
    assert not stage2.model.model.multi_modal_projector.pos_embed.requires_grad  # fixed positions stay fixed


def test_gradient_accumulation_matches_the_full_batch(tmp_path):
    """Token-level scaling (num_items_in_batch): 2 x 2 accumulated equals one batch of 4, for sequences of
    different lengths."""
    def weights(**overrides):
        trainer = trainer_for(tmp_path / str(overrides), "m3", num_records=4, max_steps=1, optim="sgd", **overrides)
        trainer.train()
        return torch.cat([p.detach().flatten() for p in trainer.model.parameters()])

    full = weights(per_device_train_batch_size=4)
    accumulated = weights(per_device_train_batch_size=2, gradient_accumulation_steps=2)
    assert (full - accumulated).abs().max() < 1e-6


def test_resume_reproduces_the_uninterrupted_loss_curve(tmp_path):
    def losses(trainer):
        return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]

    common = dict(max_steps=6, per_device_train_batch_size=2, save_strategy="steps", save_steps=3)
    uninterrupted = trainer_for(tmp_path / "a", "mqt", **common)
    uninterrupted.train()
    resumed = trainer_for(tmp_path / "b", "mqt", **common)
    resumed.train()  # writes checkpoint-3 on the way
    again = trainer_for(tmp_path / "b", "mqt", **common)
    again.train(resume_from_checkpoint=str(tmp_path / "b" / "out" / "checkpoint-3"))
    assert again.state.global_step == 6 and len(losses(again)) == 6  # steps 1-3 come from the checkpoint's state
    assert losses(again) == pytest.approx(losses(uninterrupted), abs=1e-6)


def test_lora_model_trains_only_adapters(tmp_path):
    trainer = trainer_for(tmp_path, "mqt", max_steps=2, freeze_projector=True, model=None)
    from matryoshka_llava.training.run import add_lora

    model = add_lora(tiny_mqt().train(), rank=4)
    trainer = trainer_for(tmp_path / "lora", "mqt", model=model, max_steps=2, freeze_projector=True)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    changed = {name for name, p in trainer.model.named_parameters() if not torch.equal(before[name], p.detach())}
    assert changed and all("lora_" in name for name in changed)


def test_loss_goes_down_at_every_scale(tmp_path):
    trainer = trainer_for(
        tmp_path, "m3", max_steps=30, learning_rate=1e-2, lr_scheduler_type="constant", logging_steps=10, num_records=8
    )
    batch = colour_batch(tmp_path)
    model = trainer.model

    def per_scale():
        with torch.no_grad():
            return model(**batch, multi_scale_num_visual_tokens=[1, 9, 36, 144, 576]).loss_per_num_visual_tokens

    before = per_scale()
    trainer.train()
    after = per_scale()
    assert (after < 0.5 * before).all(), (before, after)
