"""Two lmms-eval tasks over test items of the shapes benchmark, for running the shipped models under lmms-eval
offline (`--include_path demo/lmms_eval_tasks`): open answers (`generate_until`) and four-option multiple choice.

    python -m matryoshka_llava.demo.lmms_eval_task demo/lmms_eval_tasks    # (re)writes the shipped folder
"""

import argparse
import json
import random
import textwrap
from pathlib import Path

from .shapes_benchmark import generate_split

OPEN_TASK = "matryoshka_shapes_open"
CHOICE_TASK = "matryoshka_shapes_choice"
SEED = 123  # its own stream: not the demo's train / validation / test items
NUM_OPTIONS = 4

UTILS = '''\
"""doc_to_visual / doc_to_text / scoring of the shapes tasks; images are stored next to this file."""

from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent


def doc_to_visual(doc):
    return [Image.open(HERE / doc["image"]).convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def exact_match(doc, results):
    return {"exact_match": float(results[0].strip() == doc["answer"])}
'''


def task_yaml(task: str, data_file: str, body: str) -> str:
    return f"task: {task}\n" + textwrap.dedent(f"""\
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: {data_file}
        test_split: test
        doc_to_visual: !function shapes_utils.doc_to_visual
        doc_to_text: !function shapes_utils.doc_to_text
        """) + textwrap.dedent(body)


def lmms_eval_items(num_items: int) -> list[tuple[dict, object]]:
    """(row, image) per item: question, answer, family and four options (the answer and three other answers of
    its family, in a seeded order)."""
    dataset = generate_split(SEED, max(200, num_items))
    answers_of: dict[str, set] = {}
    for row in dataset:
        answers_of.setdefault(row["family"], set()).add(row["answer"])
    items = []
    for index in range(num_items):
        row = dataset[index]
        others = sorted(answers_of[row["family"]] - {row["answer"]})
        rng = random.Random(index)
        choices = rng.sample(others, min(NUM_OPTIONS - 1, len(others))) + [row["answer"]]
        rng.shuffle(choices)
        items.append(({"image": f"images/{index}.png", "question": row["question"], "answer": row["answer"],
                       "family": row["family"], "choices": choices, "target": choices.index(row["answer"])},
                      row["image"]))
    return items


def write_lmms_eval_tasks(folder: str | Path, num_items: int = 16, data_file: str | None = None) -> Path:
    """Write the two task YAMLs, their utils module, `items.jsonl` and the images into `folder`.

    data_file: how the YAMLs name `items.jsonl` (lmms-eval reads it relative to the working directory); default
        its absolute path.
    """
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for row, image in lmms_eval_items(num_items):
        image.save(folder / row["image"])
        rows.append(row)
    (folder / "items.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    data_file = data_file or str((folder / "items.jsonl").resolve())
    (folder / "shapes_open.yaml").write_text(task_yaml(OPEN_TASK, data_file, """\
        output_type: generate_until
        doc_to_target: answer
        generation_kwargs:
          max_new_tokens: 6
          temperature: 0
          do_sample: false
        process_results: !function shapes_utils.exact_match
        metric_list:
          - metric: exact_match
            aggregation: mean
            higher_is_better: true
        """))
    (folder / "shapes_choice.yaml").write_text(task_yaml(CHOICE_TASK, data_file, """\
        output_type: multiple_choice
        doc_to_choice: choices
        doc_to_target: target
        metric_list:
          - metric: acc
            aggregation: mean
            higher_is_better: true
        """))
    (folder / "shapes_utils.py").write_text(UTILS)
    return folder


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--num-items", type=int, default=16)
    args = parser.parse_args(argv)
    # The shipped folder names its data relative to the repository root, where the README's command runs.
    write_lmms_eval_tasks(args.folder, args.num_items, data_file=f"{args.folder.as_posix().rstrip('/')}/items.jsonl")


if __name__ == "__main__":
    main()
