"""Checks a checkpoint folder must pass before it is published: safetensors weights only and all present, an
`auto_map` whose modules are in the folder, a valid model card naming the repo, and a clean-process load with
`trust_remote_code` (model, config and processor from the folder's code alone, one forward pass)."""

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .card_inputs import RECORD_PATTERN
from .errors import ModelCardError, PushError
from matryoshka_llava.local_paths import files_naming_local_paths
from .rendering import RESULTS_DIR, validate_model_card

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
REQUIRED_AUTO_CLASSES = ("AutoConfig", "AutoModelForImageTextToText")
LOAD_CHECK_SCRIPT = Path(__file__).with_name("remote_load_check.py")


@dataclass
class FolderContents:
    folder: Path
    files: list[tuple[str, int]]  # path relative to the folder, size in bytes
    card: str
    left_out: list[str]  # not uploaded: results an earlier card showed, a training run's checkpoints and logs


# What `Trainer` leaves in an output folder besides the model: resumable checkpoints (optimizer state, pickled)
# and TensorBoard logs. They belong to the run, not to the published model.
TRAINING_RUN_FOLDERS = re.compile(r"^(checkpoint-\d+|runs)$")


def list_upload_files(folder: Path) -> list[tuple[str, int]]:
    """Every file of the folder except hidden ones, Python caches and a training run's checkpoints and logs."""
    files = []
    for root, directories, names in os.walk(folder):
        directories[:] = sorted(
            d for d in directories if not d.startswith(".") and d != "__pycache__"
            and not (Path(root) == folder and TRAINING_RUN_FOLDERS.match(d))
        )
        for name in sorted(names):
            if not name.startswith("."):
                path = Path(root) / name
                files.append((path.relative_to(folder).as_posix(), path.stat().st_size))
    return files


def check_weights(folder: Path, names: set[str]) -> None:
    pickled = sorted(name for name in names if name.endswith(PICKLE_SUFFIXES))
    if pickled:
        raise PushError(f"{folder} holds pickled files, which are never published: {', '.join(pickled)}. "
                        "Keep only safetensors weights.")
    index_path = folder / "model.safetensors.index.json"
    if index_path.is_file():
        shards = set(json.loads(index_path.read_text()).get("weight_map", {}).values())
        absent = sorted(shards - names)
        stray = sorted(name for name in names if name.endswith(".safetensors") and name not in shards)
        if absent or stray:
            raise PushError(f"{folder}: the weight index does not match the shards (missing: {absent or 'none'}; "
                            f"not in the index: {stray or 'none'}).")
    elif "model.safetensors" not in names:
        raise PushError(f"{folder} has no safetensors weights (model.safetensors or model.safetensors.index.json).")


def check_auto_map(folder: Path, names: set[str]) -> None:
    for file_name, auto_classes in (("config.json", REQUIRED_AUTO_CLASSES), ("processor_config.json", ("AutoProcessor",))):
        if file_name not in names:
            raise PushError(f"{folder} has no {file_name}.")
        auto_map = json.loads((folder / file_name).read_text()).get("auto_map") or {}
        absent = [name for name in auto_classes if name not in auto_map]
        if absent:
            raise PushError(f"{folder}/{file_name} has no auto_map entry for {', '.join(absent)}: the checkpoint "
                            "would not load with trust_remote_code. Save it with this package imported.")
        for reference in auto_map.values():
            for target in [reference] if isinstance(reference, str) else [r for r in reference if r]:
                module = target.split("--")[-1].rsplit(".", 1)[0]
                if f"{module}.py" not in names:
                    raise PushError(f"{folder}: auto_map names {target}, but {module}.py is not in the folder.")


def check_card(folder: Path, names: set[str], repo_id: str | None) -> str:
    if "README.md" not in names:
        raise PushError(f"{folder} has no model card (README.md): render one with `matryoshka-llava card {folder}`.")
    card = (folder / "README.md").read_text(encoding="utf-8")
    try:
        validate_model_card(card)
    except ModelCardError as error:
        raise PushError(f"{folder}/README.md: {error}") from error
    if repo_id is not None and repo_id not in card:
        raise PushError(f"The model card's usage example does not load {repo_id!r}: render it for this repo with "
                        f"`matryoshka-llava card {folder} --repo-id {repo_id}`.")
    return card


def results_files_of_card(folder: Path, card: str) -> set[str]:
    """The files under `evaluation/` that the card was rendered from (results, their plots, the cost table)."""
    match = RECORD_PATTERN.search(card)
    record = json.loads(match.group(1)) if match else {}
    referenced = {name for name in [*record.get("eval_results", []), record.get("cost")] if name}
    for name in record.get("eval_results", []):
        path = folder / name
        plot = json.loads(path.read_text()).get("plot") if path.is_file() else None
        if plot:
            referenced.add((Path(name).parent / plot).as_posix())
    return referenced


def check_no_local_paths(folder: Path, names: list[str]) -> None:
    leaks = files_naming_local_paths(folder, names)
    if leaks:
        shown = "; ".join(f"{name} contains {path}" for name, path in leaks)
        raise PushError(f"{folder}: files name local paths, which are never published ({shown}). Remove the files "
                        "or the paths (re-render the card with `matryoshka-llava card`).")


def check_remote_code_load(folder: Path, timeout: float = 3600) -> dict:
    """Load the folder in a fresh interpreter where this package cannot be imported; returns its report."""
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "HF_MODULES_CACHE": str(Path(scratch) / "modules"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
        result = subprocess.run(
            [sys.executable, str(LOAD_CHECK_SCRIPT), str(folder.resolve())],
            capture_output=True, text=True, cwd=scratch, env=env, timeout=timeout, check=False,
        )
    if result.returncode != 0:
        raise PushError(f"{folder} does not load with trust_remote_code in a clean process:\n{result.stderr[-3000:]}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    if not all(module.startswith("transformers_modules.") for module in report["classes"]):
        raise PushError(f"{folder}: some classes did not come from the folder's remote code: {report['classes']}")
    if not report["logits_finite"]:
        raise PushError(f"{folder}: the loaded model produces NaN or infinite logits.")
    return report


def validate_checkpoint_folder(folder: str | Path, repo_id: str | None = None, load_check: bool = True) -> FolderContents:
    """All checks, cheapest first. Raises PushError naming the first problem."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PushError(f"{folder} is not a folder.")
    files = list_upload_files(folder)
    names = {name for name, _ in files}
    check_weights(folder, names)
    check_auto_map(folder, names)
    card = check_card(folder, names, repo_id)
    shown = results_files_of_card(folder, card)
    left_out = [name for name, _ in files if name.startswith(f"{RESULTS_DIR}/") and name not in shown]
    left_out += sorted(f"{d.name}/" for d in folder.iterdir() if d.is_dir() and TRAINING_RUN_FOLDERS.match(d.name))
    files = [(name, size) for name, size in files if name not in left_out]
    check_no_local_paths(folder, [name for name, _ in files])
    if load_check:
        check_remote_code_load(folder)
    return FolderContents(folder, files, card, left_out)
