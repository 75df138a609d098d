"""train -> eval -> cost -> card -> push --dry-run on a tiny model, as a user runs them: no hand edits between the
commands, and no local path in anything that would be uploaded."""

import json

from instruction_data import write_colour_dataset
from tiny_models import tiny_mqt, tiny_processor

from matryoshka_llava.cli import main

REPO = "someone/tiny-mqt"


def write_eval_dataset(folder, name: str, num_items: int = 2):
    """A local jsonl of the colour images (which `eval` records by its path)."""
    data = write_colour_dataset(folder, num_items)
    records = json.loads(data.read_text())
    rows = [{"image": f"images/{record['image']}", "question": "What colour is this image?",
             "answer": record["conversations"][1]["value"]} for record in records]
    path = folder / name
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_train_card_push_needs_no_hand_edits_and_uploads_no_local_path(tmp_path, capsys):
    base = tmp_path / "base"
    tiny_mqt().save_pretrained(base)
    tiny_processor().save_pretrained(base)
    data = write_colour_dataset(tmp_path / "train", 4)
    out = tmp_path / "trained"
    assert main(["train", "--model", str(base), "--data", str(data), "--images", str(tmp_path / "train" / "images"),
                 "--output_dir", str(out), "--max_steps", "2", "--save_steps", "1", "--per_device_train_batch_size",
                 "2", "--report_to", "none", "--use_cpu"]) == 0  # no --method: the config says MQT
    assert (out / "training_args.json").is_file() and not (out / "training_args.bin").exists()
    assert json.loads((out / "training_args.json").read_text())["output_dir"] == "trained"
    assert any(path.name.startswith("checkpoint-") for path in out.iterdir())  # resumable checkpoints, pickled

    first = write_eval_dataset(tmp_path / "eval", "first.jsonl")
    second = write_eval_dataset(tmp_path / "eval", "second.jsonl")
    for dataset in (first, second):
        assert main(["eval", str(out), "--dataset", str(dataset), "--task", "exact_match", "--num-visual-tokens",
                     "1,4", "--output-dir", str(tmp_path / dataset.stem), "--no-plot"]) == 0
    assert main(["cost", "--config", str(out), "--num-visual-tokens", "1,4", "--output",
                 str(tmp_path / "cost.json")]) == 0
    # `eval` and `cost` record the model and dataset as given: local paths.
    assert str(out) in (tmp_path / "first" / "results.json").read_text()

    card = ["card", str(out), "--cost", str(tmp_path / "cost.json"), "--repo-id", REPO, "--source", "someone/base",
            "--license", "apache-2.0"]
    assert main([*card, "--eval-results", str(tmp_path / "first" / "results.json")]) == 0
    assert main([*card, "--eval-results", str(tmp_path / "second" / "results.json")]) == 0  # replaces `first`
    capsys.readouterr()

    assert main(["push", str(out), REPO, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    uploaded = [line.split()[0] for line in printed.splitlines() if line.startswith("  ") and "bytes)" in line]
    assert "training_args.json" in uploaded and "README.md" in uploaded and "evaluation/cost.json" in uploaded
    assert [name for name in uploaded if name.startswith("evaluation/") and name.endswith(".json")] == [
        "evaluation/cost.json", "evaluation/second.jsonl-train.json"]
    assert "evaluation/first.jsonl-train.json" in printed.split("Left out")[1] and "checkpoint-" in printed
    assert not any(name.startswith("checkpoint-") for name in uploaded)
    for name in uploaded:
        text = (out / name).read_bytes().decode("utf-8", errors="ignore")
        for part in (str(tmp_path), tmp_path.name, tmp_path.parent.name):
            assert part not in text, (name, part)
    readme = (out / "README.md").read_text()
    assert f'"{REPO}"' in readme and "second.jsonl" in readme and "first.jsonl" not in readme


def test_push_refuses_a_file_that_names_a_local_path(tmp_path, capsys):
    folder = tmp_path / "model"
    tiny_mqt().save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    assert main(["card", str(folder), "--repo-id", REPO, "--source", "someone/base", "--license", "apache-2.0"]) == 0
    (folder / "notes.json").write_text(json.dumps({"made_from": str(folder)}))
    capsys.readouterr()
    assert main(["push", str(folder), REPO, "--dry-run"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "notes.json contains" in error and "never published" in error
