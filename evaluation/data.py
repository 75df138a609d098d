"""Benchmark data: loading (Hub or local files), presets for the common Hub layouts, column mapping to `EvalItem`s."""

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from .tasks import OPTION_LETTERS, EvalItem, get_task

COLUMN_ROLES = ("image", "question", "answer", "choices", "hint", "category", "id")
LOCAL_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".arrow": "arrow"}


@dataclass(frozen=True)
class ColumnMapping:
    """Which dataset column plays which role. `choices` is one column holding a list, or several columns holding one
    option each (MMBench's A..D); `id` defaults to the row index; `category` groups metrics (e.g. a `family`)."""

    image: str = "image"
    question: str = "question"
    answer: str = "answer"
    choices: str | tuple[str, ...] | None = None
    hint: str | None = None
    category: str | None = None
    id: str | None = None

    def columns(self) -> list[str]:
        named = [self.image, self.question, self.answer, self.hint, self.category, self.id]
        choices = [self.choices] if isinstance(self.choices, str) else list(self.choices or [])
        return [column for column in named + choices if column is not None]


@dataclass(frozen=True)
class Preset:
    """A benchmark's usual Hub layout: where it lives, its task type, columns and evaluation prompt."""

    hub_id: str
    task: str
    split: str
    columns: ColumnMapping
    config: str | None = None
    prompt_suffix: str | None = None
    filters: dict = field(default_factory=dict)
    note: str = ""


_VQA_SUFFIX = "\nAnswer the question using a single word or phrase."

PRESETS: dict[str, Preset] = {
    "vqav2": Preset(
        "lmms-lab/VQAv2", "open_vqa", "validation",
        ColumnMapping(answer="answers", id="question_id", category="answer_type"),
    ),
    "textvqa": Preset("lmms-lab/textvqa", "open_vqa", "validation", ColumnMapping(answer="answers", id="question_id")),
    "vizwiz": Preset(
        "lmms-lab/VizWiz-VQA", "open_vqa", "val", ColumnMapping(answer="answers", id="question_id", category="category"),
        prompt_suffix="\nWhen the provided information is insufficient, respond with 'Unanswerable'." + _VQA_SUFFIX,
    ),
    "pope": Preset("lmms-lab/POPE", "yes_no", "test", ColumnMapping(id="question_id", category="category")),
    "mme": Preset(
        "lmms-lab/MME", "yes_no", "test", ColumnMapping(category="category"),
        note="standard yes/no metrics; MME's own score (acc + acc+ per image pair) is not computed",
    ),
    "scienceqa": Preset(
        "lmms-lab/ScienceQA", "multiple_choice", "test",
        ColumnMapping(choices="choices", hint="hint", category="subject"), config="ScienceQA-IMG",
    ),
    "mmbench": Preset(
        "lmms-lab/MMBench", "multiple_choice", "dev",
        ColumnMapping(choices=("A", "B", "C", "D"), hint="hint", category="category", id="index"), config="en",
        note="single-pass accuracy; MMBench's CircularEval (options rotated) is not applied",
    ),
    "ai2d": Preset("lmms-lab/ai2d", "multiple_choice", "test", ColumnMapping(choices="options")),
    "seedbench": Preset(
        "lmms-lab/SEED-Bench", "multiple_choice", "test",
        ColumnMapping(choices=("choice_a", "choice_b", "choice_c", "choice_d"), id="question_id",
                      category="question_type_id"),
        filters={"data_type": "image"},
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; expected one of {sorted(PRESETS)}.")
    return PRESETS[name]


def preset_for_hub_id(dataset_name: str) -> str | None:
    for name, preset in PRESETS.items():
        if preset.hub_id.lower() == str(dataset_name).lower():
            return name
    return None


def parse_column_overrides(pairs: Sequence[str]) -> dict:
    """["answer=answers", "choices=A,B,C,D"] -> {"answer": "answers", "choices": ("A", "B", "C", "D")}."""
    overrides = {}
    for pair in pairs:
        role, sep, column = pair.partition("=")
        role = role.strip()
        if not sep or role not in COLUMN_ROLES or not column.strip():
            raise ValueError(f"Column mapping {pair!r} must be ROLE=COLUMN with ROLE one of {COLUMN_ROLES}.")
        columns = tuple(part.strip() for part in column.split(","))
        overrides[role] = columns if role == "choices" and len(columns) > 1 else columns[0]
    return overrides


def column_mapping(preset: str | Preset | None = None, columns: Mapping | ColumnMapping | None = None) -> ColumnMapping:
    """A preset's mapping (or the defaults) with `columns` overriding single roles."""
    base = get_preset(preset).columns if isinstance(preset, str) else preset.columns if preset else ColumnMapping()
    if columns is None:
        return base
    if isinstance(columns, ColumnMapping):
        return columns
    unknown = set(columns) - set(COLUMN_ROLES)
    if unknown:
        raise ValueError(f"Unknown column roles {sorted(unknown)}; expected some of {COLUMN_ROLES}.")
    values = {role: tuple(value) if role == "choices" and isinstance(value, list) else value for role, value in columns.items()}
    return replace(base, **values)


# ---------------------------------------------------------------- loading


def load_eval_dataset(source, split: str | None = None, config: str | None = None):
    """A `datasets.Dataset` from a Hub id, a local data file (json/jsonl/csv/parquet/arrow), a folder of such files
    or a `save_to_disk` folder. Raises ValueError naming the problem (missing split, Hub unreachable, ...)."""
    import datasets

    if isinstance(source, datasets.Dataset):
        return source
    if isinstance(source, datasets.DatasetDict):
        return _pick_split(source, split, "the given DatasetDict")
    path = Path(os.fspath(source)).expanduser()
    if path.is_file():
        builder = LOCAL_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(f"{path}: unsupported data file type; expected one of {sorted(LOCAL_BUILDERS)}.")
        return datasets.load_dataset(builder, data_files=str(path), split="train")
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            loaded = datasets.load_from_disk(str(path))
            return loaded if isinstance(loaded, datasets.Dataset) else _pick_split(loaded, split, str(path))
        return _pick_split(datasets.load_dataset(str(path), config), split, str(path))
    if path.suffix.lower() in LOCAL_BUILDERS or str(source).startswith((".", "/", "~")):
        raise ValueError(f"Dataset file {path} does not exist.")
    try:
        loaded = datasets.load_dataset(str(source), config, split=split)
    except (ConnectionError, OSError) as error:
        raise ValueError(
            f"Could not load dataset {source!r} from the Hugging Face Hub ({error}). Without network access, "
            "download it elsewhere (`datasets.load_dataset(...).save_to_disk(DIR)` or its parquet files) and pass "
            "the local path instead."
        ) from error
    return loaded if isinstance(loaded, datasets.Dataset) else _pick_split(loaded, split, str(source))


def _pick_split(dataset_dict, split: str | None, where: str):
    if split is None:
        if len(dataset_dict) == 1:
            return next(iter(dataset_dict.values()))
        raise ValueError(f"{where} has splits {sorted(dataset_dict)}; choose one with `split`.")
    if split not in dataset_dict:
        raise ValueError(f"{where} has no split {split!r}; it has {sorted(dataset_dict)}.")
    return dataset_dict[split]


# ---------------------------------------------------------------- rows -> items


def check_columns(dataset, mapping: ColumnMapping) -> None:
    available = list(dataset.column_names)
    missing = [column for column in mapping.columns() if column not in available]
    if missing:
        raise ValueError(
            f"The dataset has no column(s) {missing}. Its columns are {available}; map them with "
            "`columns={'role': 'column'}` (CLI: --column ROLE=COLUMN), roles " + ", ".join(COLUMN_ROLES) + "."
        )


def apply_filters(dataset, filters: Mapping):
    for column, value in filters.items():
        if column in dataset.column_names:
            dataset = dataset.filter(lambda row, c=column, v=value: row[c] == v)
    return dataset


def build_items(
    dataset, task, mapping: ColumnMapping, limit: int | None = None, image_root: str | os.PathLike | None = None
) -> list[EvalItem]:
    """Rows -> checked `EvalItem`s (the first `limit` rows). Raises ValueError naming the offending row."""
    task = get_task(task)
    check_columns(dataset, mapping)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be a positive number of items, got {limit}.")
        dataset = dataset.select(range(min(limit, len(dataset))))
    items, seen = [], set()
    for index, row in enumerate(dataset):
        item_id = str(row[mapping.id]) if mapping.id else str(index)
        if item_id in seen:
            raise ValueError(f"Item id {item_id!r} (column {mapping.id!r}) occurs twice; ids must be unique.")
        seen.add(item_id)
        try:
            item = _row_to_item(row, item_id, task.name, mapping, image_root, index)
            task.check_item(item)
        except ValueError as error:
            raise ValueError(f"Row {index} (id {item_id}): {error}") from error
        items.append(item)
    if not items:
        raise ValueError("The dataset holds no items to evaluate.")
    return items


def _row_to_item(row: Mapping, item_id: str, task_name: str, mapping: ColumnMapping, image_root,
                 index: int) -> EvalItem:
    choices = _choices(row, mapping.choices) if mapping.choices else None
    answers = _answers(row[mapping.answer], task_name, choices)
    hint = row[mapping.hint] if mapping.hint else None
    category = row[mapping.category] if mapping.category else None
    return EvalItem(
        item_id=item_id,
        images=_images(row[mapping.image], image_root),
        question=str(row[mapping.question]),
        answers=answers,
        choices=choices,
        hint=str(hint) if _present(hint) and str(hint).strip() else None,
        category=str(category) if _present(category) else None,
        row=index,
    )


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and str(value) != "nan"


def _choices(row: Mapping, spec) -> list[str]:
    if isinstance(spec, str):
        values = row[spec]
        if isinstance(values, str):
            raise ValueError(f"Column {spec!r} holds a string; a single choices column must hold a list of options.")
        values = list(values)
    else:
        values = [row[column] for column in spec]
    # Benchmarks with fewer options than columns (MMBench) leave the trailing ones empty.
    while values and not (_present(values[-1]) and str(values[-1]).strip()):
        values.pop()
    if any(not (_present(value) and str(value).strip()) for value in values):
        raise ValueError(f"An option in the middle of {values} is empty.")
    return [str(value) for value in values]


def _answers(value, task_name: str, choices: list[str] | None) -> list[str]:
    if task_name == "multiple_choice":
        return [_answer_letter(value, choices or [])]
    if isinstance(value, Mapping):
        value = [value]
    if isinstance(value, (list, tuple)):
        answers = [str(entry["answer"]) if isinstance(entry, Mapping) else str(entry) for entry in value]
    elif _present(value):
        answers = [str(value)]
    else:
        answers = []
    return [answer for answer in answers if answer.strip()]


def _answer_letter(value, choices: list[str]) -> str:
    """A multiple-choice answer given as a letter, a 0-based index (int or digit string) or the option text."""
    letters = OPTION_LETTERS[: len(choices)]
    if isinstance(value, bool):
        raise ValueError(f"Answer {value!r} is not an option letter, index or option text.")
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        index = int(value)
        if not 0 <= index < len(choices):
            raise ValueError(f"Answer index {index} is out of range for {len(choices)} options.")
        return letters[index]
    text = str(value).strip()
    if len(text) == 1 and text.upper() in letters:
        return text.upper()
    if text in choices:
        return letters[choices.index(text)]
    raise ValueError(f"Answer {value!r} is not an option letter ({letters}), a 0-based index or one of {choices}.")


def _images(value, image_root) -> list:
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    images = []
    for entry in values:
        if isinstance(entry, Mapping):  # an undecoded `datasets.Image`: {"bytes": ..., "path": ...}
            entry = entry.get("bytes") or entry.get("path")
        if isinstance(entry, str) and image_root is not None and not os.path.isabs(entry):
            entry = os.path.join(image_root, entry)
        if isinstance(entry, (bytes, bytearray)):
            entry = bytes(entry)
        if entry is None:
            raise ValueError("The image is missing.")
        images.append(entry)
    if not images:
        raise ValueError("The item has no image.")
    return images


def default_image_root(source) -> str | None:
    """Relative image paths in a local data file are resolved against the file's folder."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(os.fspath(source)).expanduser()
        if path.is_file():
            return str(path.parent)
        if path.is_dir():
            return str(path)
    return None


__all__ = [
    "PRESETS",
    "ColumnMapping",
    "Preset",
    "build_items",
    "column_mapping",
    "get_preset",
    "load_eval_dataset",
    "parse_column_overrides",
]
