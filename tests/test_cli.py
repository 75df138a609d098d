"""The command line: user errors are one `error:` line and exit status 2, found before any model loads; unknown
flags show the subcommand's usage; `--help` answers without torch or transformers."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from instruction_data import write_colour_dataset

from matryoshka_llava.cli import main

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo" / "models"


def user_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2, argv
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith("error: ") and "Traceback" not in "\n".join(err), err
    return err[-1]


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fails the test if any model weights load: user errors must be found first."""
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", classmethod(refuse))


def test_eval_user_errors_are_one_line_before_any_model_loads(capsys, tmp_path, no_model_loading):
    data = tmp_path / "items.jsonl"
    data.write_text(json.dumps({"image": "missing.png", "question": "q", "answer": "a"}) + "\n")
    m3 = str(DEMO / "m3")
    assert "does not exist" in user_error(capsys, ["eval", m3, "--dataset", str(tmp_path / "none.jsonl"), "--task",
                                              "exact_match", "--output-dir", str(tmp_path)]).lower()
    assert "--task" in user_error(capsys, ["eval", m3, "--dataset", str(data), "--output-dir", str(tmp_path)])
    assert "num_visual_tokens" in user_error(capsys, ["eval", m3, "--dataset", str(data), "--task", "exact_match",
                                                      "--num-visual-tokens", "1,100", "--output-dir", str(tmp_path)])
    message = user_error(capsys, ["eval", m3, "--dataset", str(data), "--task", "exact_match", "--column",
                                  "question=prompt", "--output-dir", str(tmp_path)])
    assert "prompt" in message and "columns" in message


def test_demo_checks_every_models_counts_before_running_any(capsys, no_model_loading):
    num_queries = json.loads((DEMO / "mqt" / "config.json").read_text())["num_queries"]
    message = user_error(capsys, ["demo", "--mqt-counts", f"1,{num_queries + 1}"])
    assert str(num_queries + 1) in message and f"1 to {num_queries}" in message


def test_train_without_method_takes_it_from_the_config(tmp_path, capsys):
    from tiny_models import tiny_mqt, tiny_processor

    from matryoshka_llava.cli import build_parser
    from matryoshka_llava.training.cli import split_options

    folder = tmp_path / "model"
    tiny_mqt().save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    argv = ["train", "--model", str(folder), "--data", "d.json", "--output_dir", str(tmp_path / "out"), "--use_cpu"]
    command, _ = split_options(build_parser(argv).parse_args(argv))
    assert command["method"] == "mqt"
    data = write_colour_dataset(tmp_path / "data", 2)
    missing = user_error(capsys, ["train", "--model", str(tmp_path / "none"), "--data", str(data),
                                  "--output_dir", str(tmp_path / "o")])
    assert "none" in missing


def test_cost_and_bench_user_errors(capsys):
    assert "dtype" in user_error(capsys, ["cost", "--dtype", "float13"])
    assert "num_visual_tokens" in user_error(capsys, ["bench", "--m3-counts", "2"])
    assert "--batch-size must be >= 1, got 0" in user_error(capsys, ["bench", "--batch-size", "0"])


def test_an_unknown_flag_shows_the_subcommands_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "model", "--output-dir", "o", "--no-such-flag"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: matryoshka-llava eval" in err and "--no-such-flag" in err


@pytest.mark.parametrize("command", [[], ["eval"], ["convert"], ["cost"], ["bench"], ["card"], ["push"], ["demo"]])
def test_help_imports_neither_torch_nor_transformers(command):
    code = ("import sys\nfrom matryoshka_llava.cli import main\ntry:\n    main([*sys.argv[1:], '--help'])\n"
            "except SystemExit:\n    pass\nprint(sorted({'torch', 'transformers'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code, *command], capture_output=True, text=True, timeout=60,
                            cwd=ROOT, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout[-500:]


def test_eval_skips_an_undecodable_image_unless_told_to_fail(capsys, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    data = tmp_path / "items.jsonl"
    data.write_text(json.dumps({"image": "bad.png", "question": "q", "answer": "a"}) + "\n")
    argv = ["eval", str(DEMO / "m3"), "--dataset", str(data), "--task", "exact_match", "--num-visual-tokens", "1",
            "--output-dir", str(tmp_path / "out"), "--no-plot"]
    message = user_error(capsys, [*argv, "--fail-on-bad-image"])
    assert message.startswith("error: row 0 (id 0): Image 0") and "bad.png" in message
    message = user_error(capsys, argv)  # skipped, and then nothing is left to evaluate
    assert "No item could be evaluated" in message


def test_the_command_lines_baselines_are_the_bundles_reductions():
    from matryoshka_llava.evaluation.baselines import BASELINES
    from modeling_matryoshka_llava.token_reducers import VISUAL_TOKEN_REDUCTIONS

    assert BASELINES == VISUAL_TOKEN_REDUCTIONS
