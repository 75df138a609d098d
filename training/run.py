"""Build a trainer from a checkpoint folder and LLaVA instruction data: what `matryoshka-llava train` calls."""

import logging

from transformers import AutoModelForImageTextToText, AutoProcessor

import modeling_matryoshka_llava  # noqa: F401  (registers the model types with the Auto classes)
from modeling_matryoshka_llava.visual_token_counts import valid_num_visual_tokens

from .arguments import MatryoshkaTrainingArguments
from .data import LazyImageDataset, load_instruction_data
from .data_collation import MatryoshkaLlavaDataCollator
from .trainers import M3Trainer, MQTTrainer

logger = logging.getLogger(__name__)

# The model types each method trains: M3 on LLaVA-1.5 and on LLaVA-NeXT, MQT on LLaVA-1.5.
TRAINERS = {"m3": (M3Trainer, ("m3_llava", "m3_llava_next")), "mqt": (MQTTrainer, ("mqt_llava",))}


def method_for_model(model_path: str) -> str:
    """The loss a checkpoint trains with, from its config: "m3" for M3-LLaVA(-NeXT), "mqt" for MQT-LLaVA."""
    from transformers import AutoConfig

    model_type = AutoConfig.from_pretrained(model_path).model_type
    for method, (_, model_types) in TRAINERS.items():
        if model_type in model_types:
            return method
    raise ValueError(
        f"{model_path} is a {model_type!r} model, which neither loss trains: convert it first "
        "(`matryoshka-llava convert SRC OUT --to m3|mqt`)."
    )


def max_num_visual_tokens(config) -> int:
    return max(valid_num_visual_tokens(config))


def image_token_counter(processor, config):
    """(height, width) -> visual tokens of such an image at the largest count, when that depends on the image
    (LLaVA-NeXT: count per crop times its grid, un-padded, plus newlines); None when every image gets the count."""
    count_for_size = getattr(processor, "num_image_tokens", None)
    if count_for_size is None:
        return None
    largest = max_num_visual_tokens(config)
    return lambda image_size: count_for_size(image_size, largest)


def add_lora(model, rank: int, alpha: int | None = None, train_projector: bool = False):
    """LoRA on the language model's attention and MLP projections; the projector trains fully if asked (as in
    LLaVA's LoRA recipe), the vision tower stays as it is."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as error:
        raise ImportError("LoRA training needs `peft`: pip install peft") from error
    targets = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha or 2 * rank,
        target_modules=targets,
        lora_dropout=0.0,
        modules_to_save=["multi_modal_projector"] if train_projector else None,
    )
    return get_peft_model(model, config)


def build_trainer(
    model_path: str,
    data: str,
    images: str | None,
    method: str,
    args: MatryoshkaTrainingArguments,
    eval_data: str | None = None,
    max_length: int = 2048,
    lora_rank: int | None = None,
    model=None,
    processor=None,
):
    """A ready-to-`train()` M3Trainer / MQTTrainer; skipped records are logged with their reasons."""
    if method not in TRAINERS:
        raise ValueError(f"method must be one of {sorted(TRAINERS)}, got {method!r}.")
    trainer_class, model_types = TRAINERS[method]
    model = model if model is not None else AutoModelForImageTextToText.from_pretrained(model_path)
    processor = processor if processor is not None else AutoProcessor.from_pretrained(model_path)
    if model.config.model_type not in model_types:
        trained = " or a ".join(f"{name} model" for name in model_types)
        raise ValueError(
            f"--method {method} trains a {trained}, but {model_path} is {model.config.model_type!r}: convert it "
            f"first (matryoshka-llava convert ... --to {method})."
        )
    longest = max_num_visual_tokens(model.config)
    image_tokens = image_token_counter(processor, model.config)
    train = load_instruction_data(data, images, processor, max_length, longest, image_tokens)
    for reason, count in sorted(train.skipped.items()):
        logger.warning("Skipped %d training records: %s", count, reason)
    eval_dataset = None
    if eval_data:
        evaluation = load_instruction_data(eval_data, images, processor, max_length, longest, image_tokens)
        eval_dataset = LazyImageDataset(evaluation.records, processor.image_processor)
    if lora_rank:
        model = add_lora(model, lora_rank, train_projector=not args.freeze_projector)
    collator = MatryoshkaLlavaDataCollator(
        pad_token_id=processor.tokenizer.pad_token_id, image_token_id=model.config.image_token_id
    )
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=LazyImageDataset(train.records, processor.image_processor),
        eval_dataset=eval_dataset,
        data_collator=collator,
        processing_class=processor,
    )
    trainer.skipped_records.update(train.skipped)
    return trainer


def release_data_parallel_wrapper(trainer) -> None:
    """Drop the trainer's data-parallel wrapper (and the accelerator's prepared objects) and collect it now.

    DDP's reducer holds the process group: when it is freed only after the group has been destroyed, the gloo
    group's destructor runs from the garbage collector and can deadlock there (seen under torchrun on CPU). Freed
    first, the group is destroyed where torch expects it, by `destroy_process_group`."""
    trainer.model_wrapped = trainer.model
    trainer.accelerator.free_memory()  # clears its prepared models, optimizers, dataloaders; collects garbage


def end_training(trainer) -> None:
    """After `trainer.train()`: release the data-parallel wrapper, then leave the process group, so that no gloo
    thread is left to abort the process at interpreter exit."""
    release_data_parallel_wrapper(trainer)
    trainer.accelerator.end_training()
