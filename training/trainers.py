"""`M3Trainer` (loss averaged over the nested scales) and `MQTTrainer` (one random m per step).

Both are `transformers.Trainer` in every other respect: gradient accumulation with token-level loss scaling,
checkpoints and resume, mixed precision, `accelerate launch`, PEFT models. They only choose the visual-token
count(s) of each step, pass them to the model, log the loss at each count and count skipped records.
"""

import random
from collections import Counter, defaultdict

import torch
from transformers import Trainer

from modeling_matryoshka_llava.visual_token_counts import resolve_num_visual_tokens, valid_num_visual_tokens

from .arguments import MatryoshkaTrainingArguments


def checked_choices(choices: list[int] | None, config) -> list[int] | None:
    """The counts a run trains at, each checked by the models' own rule (ValueError naming the valid values)."""
    if choices is None:
        return None
    if not choices:
        raise ValueError("num_visual_tokens_choices is empty: give at least one count.")
    valid = valid_num_visual_tokens(config)
    return resolve_num_visual_tokens(list(choices), valid, len(choices), config.num_visual_tokens)


def draw_for_step(choices, seed: int, step: int) -> int:
    """One value per optimizer step, a pure function of (seed, step): identical on every rank, across runs and
    after resuming from a checkpoint, with no RNG state to save."""
    return random.Random(seed * 1_000_003 + step).choice(list(choices))


def unwrap_peft(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def freeze_modules(model, args: MatryoshkaTrainingArguments) -> None:
    """Switch off gradients of the parts the arguments (or the MQT stage preset) keep fixed."""
    model = unwrap_peft(model)
    # LLaVA-NeXT's row-end embedding joins vision and language like the projector, and trains or rests with it.
    newline = [model.model.image_newline] if hasattr(model.model, "image_newline") else []
    parts = {
        "vision tower": (args.freeze_vision_tower, [model.model.vision_tower]),
        "projector": (args.freeze_projector, [model.model.multi_modal_projector, *newline]),
        "language model": (args.freeze_language_model, [model.model.language_model, model.lm_head]),
    }
    for frozen, modules in parts.values():
        if frozen:
            for module in modules:
                module.requires_grad_(False)
    if not any(parameter.requires_grad for parameter in model.parameters()):
        raise ValueError("Every part of the model is frozen: nothing would be trained.")


class MatryoshkaTrainer(Trainer):
    """Shared machinery; subclasses define `counts_for_step`."""

    args: MatryoshkaTrainingArguments

    def __init__(self, model=None, args: MatryoshkaTrainingArguments | None = None, *positional, **kwargs):
        if not isinstance(args, MatryoshkaTrainingArguments):
            raise TypeError("Pass a MatryoshkaTrainingArguments (TrainingArguments plus the schedule options).")
        freeze_modules(model, args)
        super().__init__(model, args, *positional, **kwargs)
        self.model_config = unwrap_peft(self.model).config
        self.skipped_records = Counter()
        self._loss_sums: dict[int, torch.Tensor] = {}
        self._loss_steps: dict[int, set[int]] = defaultdict(set)
        self.last_step_counts: int | list[int] | None = None

    def counts_for_step(self, training: bool) -> int | list[int]:
        """An int: one count for the step. A list: the loss is averaged over those counts."""
        raise NotImplementedError

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self.skipped_records.update(inputs.pop("skipped_records", None) or {})
        counts = self.counts_for_step(training=model.training)
        if model.training:
            self.last_step_counts = counts
        if isinstance(counts, list):
            inputs = {**inputs, "multi_scale_num_visual_tokens": counts, "pack_scales": self.args.pack_scales}
        else:
            inputs = {**inputs, "num_visual_tokens": counts}
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training:
            self._record_losses(counts, loss, outputs, num_items_in_batch)
        return (loss, outputs) if return_outputs else loss

    def _record_losses(self, counts, loss, outputs, num_items_in_batch) -> None:
        # Scaled exactly like the loss the Trainer logs, so `loss` is the mean of the per-count entries.
        model_loss = outputs["loss"].detach()
        per_count = outputs.get("loss_per_num_visual_tokens")
        per_count = per_count.detach() if per_count is not None else model_loss.reshape(1)
        scale = loss.detach() / model_loss if model_loss != 0 else torch.ones_like(model_loss)
        if not (self.model_accepts_loss_kwargs and num_items_in_batch is not None):
            scale = scale / self.current_gradient_accumulation_steps
        for count, value in zip(counts if isinstance(counts, list) else [counts], per_count * scale):
            self._loss_sums[count] = self._loss_sums.get(count, 0) + value
            self._loss_steps[count].add(self.state.global_step)

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs and self._loss_sums:
            counts = sorted(self._loss_sums)
            sums = self.accelerator.gather(torch.stack([self._loss_sums[count] for count in counts]).reshape(1, -1))
            for count, total in zip(counts, sums.mean(dim=0).tolist()):
                logs[f"loss_{count}_tokens"] = total / len(self._loss_steps[count])
            self._loss_sums.clear()
            self._loss_steps.clear()
            if isinstance(self.last_step_counts, int):
                logs["num_visual_tokens"] = self.last_step_counts
            if self.skipped_records:
                logs["skipped_records"] = sum(self.skipped_records.values())
        super().log(logs, *args, **kwargs)


class M3Trainer(MatryoshkaTrainer):
    """M3: each step's loss is the mean of the causal-LM losses at every scale, with the vision tower and projector
    run once and shared; or, with `random_scale_per_step`, the loss at one scale drawn per step."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.scales = checked_choices(self.args.num_visual_tokens_choices, self.model_config) or list(
            valid_num_visual_tokens(self.model_config)
        )

    def counts_for_step(self, training: bool) -> int | list[int]:
        if training and self.args.random_scale_per_step:
            return draw_for_step(self.scales, self.args.seed, self.state.global_step)
        return self.scales


class MQTTrainer(MatryoshkaTrainer):
    """MQT: one m per optimizer step, drawn uniformly from a set (default: even numbers 2..M) and shared by the
    whole batch and every rank; stage 1 trains at m = M."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        num_queries = self.model_config.num_queries
        # The paper's stage 2: m uniform over the even numbers 2..M.
        self.choices = checked_choices(self.args.num_visual_tokens_choices, self.model_config) or list(
            range(2, num_queries + 1, 2)
        )

    def counts_for_step(self, training: bool) -> int:
        if not training:
            return self.args.eval_num_visual_tokens or self.model_config.num_visual_tokens
        if self.args.stage == 1:
            return self.model_config.num_queries
        return draw_for_step(self.choices, self.args.seed, self.state.global_step)
