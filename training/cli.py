"""`matryoshka-llava train`: build the M3 / MQT trainer from a folder and LLaVA data, train, save."""

import dataclasses
import logging

import yaml
from transformers import HfArgumentParser

from .arguments import MatryoshkaTrainingArguments

COMMAND_OPTIONS = ("model", "data", "images", "method", "eval_data", "max_length", "lora_rank")


def configure_parser(parser) -> None:
    parser.add_argument("--model", required=True, help="Checkpoint folder (or Hub id) of an M3 or MQT model.")
    parser.add_argument("--data", required=True, help="LLaVA instruction data: JSON list or JSONL.")
    parser.add_argument("--images", help="Folder the records' `image` paths are relative to.")
    parser.add_argument("--method", choices=["m3", "mqt"],
                        help="Multi-scale (M3) or random-m (MQT); default: a --recipe's, else what the model's config is.")
    parser.add_argument("--eval-data", dest="eval_data", help="Optional evaluation records in the same format.")
    parser.add_argument("--max-length", dest="max_length", type=int, default=2048, help="Longest sequence kept.")
    parser.add_argument("--lora-rank", dest="lora_rank", type=int, help="Train LoRA adapters of this rank (peft).")
    parser.add_argument("--recipe", help="YAML of training arguments (see recipes/); command-line values win.")


def parent_parsers() -> list:
    """Every TrainingArguments option (transformers') and the Matryoshka schedule's, as transformers' own
    `HfArgumentParser` defines them, inherited by the `train` parser."""
    return [HfArgumentParser(MatryoshkaTrainingArguments, add_help=False)]


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
    """The command's own options (the method defaulting to the one the model's config implies), and the training
    arguments."""
    from .run import method_for_model

    known = {field.name for field in dataclasses.fields(MatryoshkaTrainingArguments) if field.init}
    command = {key: getattr(args, key) for key in COMMAND_OPTIONS}
    if command["method"] is None:
        command["method"] = method_for_model(command["model"])
    if command["method"] not in ("m3", "mqt"):
        raise ValueError(f"--method must be m3 or mqt (or left out: the model's config says), got {command['method']!r}.")
    return command, MatryoshkaTrainingArguments(**{key: getattr(args, key) for key in known})


def write_training_arguments_as_json(training_args, output_dir: str) -> None:
    """Replace the pickled `training_args.bin` that `Trainer.save_model` writes by `training_args.json`: a folder
    meant to be published holds no pickle (which `push` rightly refuses), and JSON says the same to a reader.
    Paths (output_dir, logging_dir, run_name, which defaults to output_dir) keep only their last component."""
    import json
    import os

    from matryoshka_llava.local_paths import public_name

    arguments = json.loads(training_args.to_json_string())
    arguments = {key: public_name(value) if isinstance(value, str) else value for key, value in arguments.items()}
    with open(os.path.join(output_dir, "training_args.json"), "w") as handle:
        handle.write(json.dumps(arguments, indent=2, sort_keys=True) + "\n")
    pickled = os.path.join(output_dir, "training_args.bin")
    if os.path.exists(pickled):
        os.remove(pickled)


def run(args) -> int:
    from .run import build_trainer, end_training

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    command, training_args = split_options(args)
    trainer = build_trainer(
        command["model"], command["data"], command["images"], command["method"], training_args,
        eval_data=command["eval_data"], max_length=command["max_length"], lora_rank=command["lora_rank"],
    )
    try:
        trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_model()
        if trainer.is_world_process_zero():
            write_training_arguments_as_json(training_args, training_args.output_dir)
    finally:
        end_training(trainer)
    if trainer.skipped_records:
        print(f"Skipped records: {dict(trainer.skipped_records)}")
    print(f"Saved the trained model and processor to {training_args.output_dir}")
    return 0
