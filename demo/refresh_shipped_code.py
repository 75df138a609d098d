"""Bring the shipped demo folders' remote code up to date with the package, weights unchanged.

Every folder in `demo/models/` carries copies of the bundle's files, as `save_pretrained` writes them; after a
change to the bundle they must be refreshed, or users of the folders run stale code (a test checks it). Each
folder is loaded, saved again into a scratch folder, and its code and configuration files are replaced by the new
ones (files the bundle no longer has are removed); weights, tokenizer, card and evaluation results stay as they are.

    python -m matryoshka_llava.demo.refresh_shipped_code
"""

import shutil
import tempfile
from pathlib import Path

from transformers import AutoModelForImageTextToText, AutoProcessor

import modeling_matryoshka_llava  # noqa: F401  (registers the Matryoshka model types)
from matryoshka_llava.demo.run_demo import MODELS_DIR

# What a re-save may change: the code, and the JSON files that name it (auto_map) or record the writer's version.
REFRESHED_FILES = ("config.json", "processor_config.json", "chat_template.jinja", "generation_config.json")


def saved_code_and_config(folder: Path, scratch: Path) -> Path:
    """`folder` loaded and saved again into `scratch` (model and processor, as `train_tiny_models` saves them)."""
    model = AutoModelForImageTextToText.from_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder)
    processor.set_model_counts(model.config)  # as train_tiny_models saves it
    model.save_pretrained(scratch)
    processor.save_pretrained(scratch)
    return scratch


def refresh_folder(folder: Path) -> list[str]:
    """Replace `folder`'s code and configuration by a fresh save's; returns the names written or removed."""
    with tempfile.TemporaryDirectory() as scratch:
        fresh = saved_code_and_config(folder, Path(scratch))
        changed = []
        for stale in sorted(set(path.name for path in folder.glob("*.py")) - set(path.name for path in fresh.glob("*.py"))):
            (folder / stale).unlink()
            changed.append(f"-{stale}")
        for source in sorted([*fresh.glob("*.py"), *(fresh / name for name in REFRESHED_FILES)]):
            target = folder / source.name
            if source.exists() and (not target.exists() or target.read_bytes() != source.read_bytes()):
                shutil.copyfile(source, target)
                changed.append(source.name)
    return changed


def main() -> None:
    for folder in sorted(path for path in MODELS_DIR.iterdir() if (path / "config.json").is_file()):
        changed = refresh_folder(folder)
        print(f"{folder.name}: {', '.join(changed) if changed else 'up to date'}")


if __name__ == "__main__":
    main()
