"""The `eval` CLI, in one process and data-parallel over two CPU processes (torchrun + gloo through accelerate's
PartialState, the code path `accelerate launch` takes on GPUs): identical results."""

import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest

from matryoshka_llava.cli import main

ROOT = Path(__file__).resolve().parents[1]
POPE = Path(__file__).parent / "fixtures" / "eval" / "pope.parquet"


def eval_args(model_folder: Path, output_dir: Path) -> list[str]:
    return [str(model_folder), "--dataset", str(POPE), "--preset", "pope", "--num-visual-tokens", "1,576",
            "--batch-size", "2", "--max-new-tokens", "3", "--no-plot", "--output-dir", str(output_dir)]


@pytest.fixture
def model_folder(m3_model, processor, tmp_path) -> Path:
    folder = tmp_path / "tiny-m3"
    m3_model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def records(output_dir: Path) -> list[dict]:
    lines = (output_dir / "items.jsonl").read_text().splitlines()
    return sorted((json.loads(line) for line in lines[1:]), key=lambda r: (r["item_id"], r["num_visual_tokens"]))


def test_two_processes_give_the_results_of_one(model_folder, tmp_path, capsys):
    single = tmp_path / "single"
    assert main(["eval", *eval_args(model_folder, single)]) == 0
    printed = capsys.readouterr().out
    assert "| visual tokens | accuracy | precision | recall | f1 | yes_ratio |" in printed
    assert {path.name for path in single.iterdir()} == {"items.jsonl", "results.json", "results.md"}

    parallel = tmp_path / "parallel"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    # Batches of 2 of the 6 items: rank 0 gets batches 0 and 2, rank 1 batch 1.
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "matryoshka_llava.evaluation.cli", *eval_args(model_folder, parallel)]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("| visual tokens |") == 1  # only the main process reports

    assert json.loads((parallel / "results.json").read_text()) == json.loads((single / "results.json").read_text())
    assert records(parallel) == records(single)
    assert len(records(single)) == 6 * 2


def test_cli_errors_are_clear(model_folder, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["eval", str(model_folder), "--num-visual-tokens", "1,x", "--output-dir", str(tmp_path)])
    assert main(["eval", str(model_folder), "--dataset", str(POPE), "--preset", "pope", "--num-visual-tokens", "100",
                 "--output-dir", str(tmp_path)]) == 2
    assert re.search("error: num_visual_tokens.*100", capsys.readouterr().err)
