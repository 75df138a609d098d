"""`matryoshka-llava train`: build the M3 / MQT trainer from a folder and LLaVA data, train, save."""

import dataclasses
import logging
from typing import get_type_hints

import yaml
from transformers import HfArgumentParser

from .arguments import MatryoshkaTrainingArguments

COMMAND_OPTIONS = ("model", "data", "images", "method", "eval_data", "max_length", "lora_rank")


def configure_parser(parser) -> None:
    parser.add_argument("--model", required=True, help="Checkpoint folder (or Hub id) of an M3 or MQT model.")
    parser.add_argument("--data", required=True, help="LLaVA instruction data: JSON list or JSONL.")
    parser.add_argument("--images", help="Folder the records' `image` paths are relative to.")
    parser.add_argument("--method", choices=["m3", "mqt"], help="Multi-scale (M3) or random-m (MQT); or from --recipe.")
    parser.add_argument("--eval-data", dest="eval_data", help="Optional evaluation records in the same format.")
    parser.add_argument("--max-length", dest="max_length", type=int, default=2048, help="Longest sequence kept.")
    parser.add_argument("--lora-rank", dest="lora_rank", type=int, help="Train LoRA adapters of this rank (peft).")
    parser.add_argument("--recipe", help="YAML of training arguments (see recipes/); command-line values win.")
    group = parser.add_argument_group("TrainingArguments (transformers) and the Matryoshka schedule")
    type_hints = get_type_hints(MatryoshkaTrainingArguments)
    for field in dataclasses.fields(MatryoshkaTrainingArguments):
        if field.init:
            field.type = type_hints[field.name]
            HfArgumentParser._parse_dataclass_field(group, field)


def defaults_from_argv(argv: list[str]) -> dict:
    """The recipe named by `--recipe` becomes the defaults, so explicit options on the command line win."""
    recipe_path = next(
        (value for flag, value in zip(argv, argv[1:]) if flag == "--recipe"),
        next((arg.split("=", 1)[1] for arg in argv if arg.startswith("--recipe=")), None),
    )
    if recipe_path is None:
        return {}
    with open(recipe_path) as handle:
        recipe = yaml.safe_load(handle) or {}
    known = {field.name for field in dataclasses.fields(MatryoshkaTrainingArguments) if field.init}
    unknown = sorted(set(recipe) - known - set(COMMAND_OPTIONS))
    if unknown:
        raise ValueError(f"{recipe_path}: unknown keys {unknown}.")
    return recipe


def split_options(args) -> tuple[dict, MatryoshkaTrainingArguments]:
    """The command's own options, and the training arguments."""
    known = {field.name for field in dataclasses.fields(MatryoshkaTrainingArguments) if field.init}
    command = {key: getattr(args, key) for key in COMMAND_OPTIONS}
    if command["method"] not in ("m3", "mqt"):
        raise ValueError("Choose the loss with --method m3|mqt (or a --recipe that sets `method`).")
    return command, MatryoshkaTrainingArguments(**{key: getattr(args, key) for key in known})


def run(args) -> int:
    from .run import build_trainer

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    command, training_args = split_options(args)
    trainer = build_trainer(
        command["model"], command["data"], command["images"], command["method"], training_args,
        eval_data=command["eval_data"], max_length=command["max_length"], lora_rank=command["lora_rank"],
    )
    try:
        trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_model()
    finally:
        # Leave the process group before exit: an open gloo group can abort the process after the work is done.
        trainer.accelerator.end_training()
    if trainer.skipped_records:
        print(f"Skipped records: {dict(trainer.skipped_records)}")
    print(f"Saved the trained model and processor to {training_args.output_dir}")
    return 0
