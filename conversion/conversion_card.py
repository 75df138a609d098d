"""The model card written into every converted folder: names the source, says what the conversion did, and leaves
evaluation and cost "not evaluated yet" (render again with `matryoshka-llava card` once results exist)."""

import re
from pathlib import Path

from matryoshka_llava.local_paths import public_name
from matryoshka_llava.model_cards import card_inputs_for_folder, write_model_card
from matryoshka_llava.model_cards.card_inputs import LLAVA_1_5_DATASETS

from .source_model import SourceModel

FORMAT_NAMES = {
    "llava-hf": "the transformers (llava-hf) LLaVA-1.5 format",
    "llava": "the original LLaVA-1.5 format",
    "m3": "the authors' released M3 format",
    "mqt": "the authors' released MQT format",
    "llava-hf-next": "the transformers (llava-hf) LLaVA-NeXT format",
    "llava-next": "the original LLaVA-NeXT format",
    "m3-next": "the authors' released M3 LLaVA-NeXT format",
}
HUB_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def source_repo_id(source: SourceModel) -> str | None:
    """The source's Hub id when it was given as one (a local path is not a valid `base_model`)."""
    name = source.name
    return name if HUB_REPO_ID.match(name) and not Path(name).exists() else None


def write_conversion_card(folder: Path, source: SourceModel, target: str, out_path: str, repo_id: str | None,
                          base_model: str | None, license: str | None) -> Path:
    note = f"Converted from {FORMAT_NAMES[source.format]} with `matryoshka-llava convert`, without training"
    if target == "mqt" and source.format != "mqt":
        note += "; the query transformer is new and untrained"
    base = base_model or source_repo_id(source)
    # LLaVA-NeXT's training mix has no single Hub dataset to name: only what the source card lists.
    default_datasets = [] if source.is_llava_next else LLAVA_1_5_DATASETS
    datasets = [name for name in (source.card_metadata.get("datasets") or default_datasets)
                if isinstance(name, str) and HUB_REPO_ID.match(name)]
    inputs = card_inputs_for_folder(
        folder,
        model_name=Path(out_path).name,
        # Never a local path in a card: without a repo id the example loads the folder by its name.
        repo_id=repo_id or Path(out_path).name,
        source_checkpoint=public_name(source.name),
        conversion_note=note + ".",
        license=license or source.card_metadata.get("license") or "unknown",
        base_model=[base] if base else [],
        datasets=datasets,
    )
    return write_model_card(folder, inputs)
