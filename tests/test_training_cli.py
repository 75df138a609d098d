"""`matryoshka-llava train` end to end on a tiny folder, and the shipped recipes parse into valid arguments."""

from pathlib import Path

import pytest
from instruction_data import write_colour_dataset
from tiny_models import tiny_mqt, tiny_processor
from transformers import AutoModelForImageTextToText

from matryoshka_llava.cli import build_parser, main
from matryoshka_llava.training.cli import split_options

RECIPES = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.name)
def test_recipes_are_valid_training_arguments(recipe, tmp_path):
    argv = ["train", "--model", "m", "--data", "d.json", "--method", "m3", "--recipe", str(recipe),
            "--output_dir", str(tmp_path), "--bf16", "false", "--tf32", "false", "--use_cpu"]
    command, parsed = split_options(build_parser(argv).parse_args(argv))
    assert parsed.output_dir == str(tmp_path) and not parsed.bf16  # the command line wins over the recipe
    assert command["max_length"] == 2048
    if "stage1" in recipe.name:
        assert parsed.stage == 1 and parsed.learning_rate == 1e-3
    if "stage2" in recipe.name:
        assert parsed.stage == 2 and parsed.num_train_epochs == 2 and parsed.freeze_vision_tower
    if "m3" in recipe.name:
        assert parsed.num_visual_tokens_choices == [1, 9, 36, 144, 576]


def test_train_command_writes_a_loadable_model(tmp_path, capsys):
    folder = tmp_path / "model"
    tiny_mqt().save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    data = write_colour_dataset(tmp_path / "data", 4)
    out = tmp_path / "trained"
    code = main(
        ["train", "--model", str(folder), "--data", str(data), "--images", str(tmp_path / "data" / "images"),
         "--method", "mqt", "--stage", "2", "--output_dir", str(out), "--max_steps", "2",
         "--per_device_train_batch_size", "2", "--report_to", "none", "--use_cpu", "--save_strategy", "no"]
    )
    assert code == 0
    trained = AutoModelForImageTextToText.from_pretrained(out)
    original = AutoModelForImageTextToText.from_pretrained(folder)
    assert type(trained).__name__ == "MQTLlavaForConditionalGeneration"
    changed = [n for n, p in trained.state_dict().items() if not p.equal(original.state_dict()[n])]
    assert changed and not any("vision_tower" in n for n in changed)
    assert (out / "processor_config.json").exists() and (out / "modeling_mqt_llava.py").exists()


def test_wrong_method_for_the_checkpoint_is_refused(tmp_path, capsys):
    folder = tmp_path / "model"
    tiny_mqt().save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    data = write_colour_dataset(tmp_path / "data", 2)
    assert main(["train", "--model", str(folder), "--data", str(data), "--method", "m3",
                 "--output_dir", str(tmp_path / "o")]) == 2
    assert "error: --method m3 trains a m3_llava model" in capsys.readouterr().err
