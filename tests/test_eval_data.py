"""Benchmark loading: presets for the Hub layouts (on fixture files in those schemas), column mapping, errors."""

from pathlib import Path

import pytest

from matryoshka_llava.evaluation import PRESETS, build_items, column_mapping, load_eval_dataset
from matryoshka_llava.evaluation.data import apply_filters, parse_column_overrides

FIXTURES = Path(__file__).parent / "fixtures" / "eval"

# preset -> (number of items, first item's id, answers[:2], choices, hint, category)
EXPECTED = {
    "vqav2": (4, "262148000", ["red", "red"], None, None, "other"),
    "textvqa": (3, "0", ["nous les gosses", "nous les gosses"], None, None, None),
    "vizwiz": (2, "VizWiz_val_00000000.jpg", ["unanswerable", "unanswerable"], None, None, "unanswerable"),
    "pope": (6, "1", ["yes"], None, None, "adversarial"),
    "mme": (3, "0", ["Yes"], None, None, "code_reasoning"),
    "scienceqa": (3, "0", ["A"], ["West Virginia", "Louisiana", "Arizona", "Oklahoma"], None, "social science"),
    "mmbench": (3, "241", ["D"], ["oil painting", "sketch", "digital art", "photo"], None, "image_style"),
    "ai2d": (2, "0", ["A"], ["larva", "adult", "pupa", "nymph"], None, None),
    "seedbench": (2, "101669", ["A"], ["One", "Two", "Three", "Four"], None, "5"),
}


def load_preset_fixture(name: str):
    preset = PRESETS[name]
    dataset = apply_filters(load_eval_dataset(FIXTURES / f"{name}.parquet"), preset.filters)
    return build_items(dataset, preset.task, column_mapping(name))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_read_the_hub_layouts(name):
    assert set(EXPECTED) == set(PRESETS)
    count, item_id, answers, choices, hint, category = EXPECTED[name]
    items = load_preset_fixture(name)
    first = items[0]
    assert len(items) == count
    assert (first.item_id, first.answers[:2], first.choices, first.hint, first.category) == (
        item_id, answers, choices, hint, category,
    )
    assert len(first.images) == 1 and first.images[0].size == (24, 18)
    assert first.question.strip()


def test_layout_details():
    vqav2 = load_preset_fixture("vqav2")
    assert len(vqav2[1].answers) == 10 and vqav2[1].answers.count("two") == 4  # list of {answer, ...} dicts
    mmbench = load_preset_fixture("mmbench")
    assert mmbench[1].choices == ["red", "green", "blue"] and mmbench[1].hint == "The image shows a box."
    assert mmbench[2].choices == ["yes", "no"]  # empty trailing option columns dropped
    scienceqa = load_preset_fixture("scienceqa")
    assert scienceqa[1].answers == ["B"] and scienceqa[1].hint == "Tree frogs live in rain forests."  # int index
    assert scienceqa[0].hint is None  # empty hint
    assert load_preset_fixture("ai2d")[1].answers == ["C"]  # "2" as a digit string
    seed = load_preset_fixture("seedbench")
    assert [item.item_id for item in seed] == ["101669", "101670"]  # the video question is filtered out


def test_column_mapping_of_a_local_jsonl_with_relative_image_paths_and_categories():
    source = FIXTURES / "local" / "items.jsonl"
    columns = {"image": "picture", "question": "prompt", "answer": "answers", "category": "family", "id": "uid"}
    from matryoshka_llava.evaluation.data import default_image_root

    items = build_items(load_eval_dataset(source), "exact_match", column_mapping(None, columns),
                        image_root=default_image_root(source))
    assert [item.category for item in items] == ["background", "count", "background", "count"]
    assert items[1].answers == ["3", "three"] and items[1].item_id == "item-1"
    assert Path(items[1].images[0]).is_file()
    limited = build_items(load_eval_dataset(source), "exact_match", column_mapping(None, columns), limit=2,
                          image_root=default_image_root(source))
    assert len(limited) == 2


def test_column_overrides_from_the_command_line():
    assert parse_column_overrides(["answer=answers", "choices=A,B,C", "category=family"]) == {
        "answer": "answers", "choices": ("A", "B", "C"), "category": "family",
    }
    for bad in ("colour=c", "answer", "answer="):
        with pytest.raises(ValueError, match="ROLE=COLUMN"):
            parse_column_overrides([bad])
    mapping = column_mapping("mmbench", {"category": "L2-category"})
    assert mapping.category == "L2-category" and mapping.choices == ("A", "B", "C", "D")
    with pytest.raises(ValueError, match="Unknown column roles"):
        column_mapping(None, {"picture": "x"})


def test_clear_errors_for_bad_data(tmp_path):
    pope = load_eval_dataset(FIXTURES / "pope.parquet")
    with pytest.raises(ValueError, match=r"no column\(s\) \['answers'\].*'question_id'"):
        build_items(pope, "open_vqa", column_mapping(None, {"answer": "answers"}))
    with pytest.raises(ValueError, match="occurs twice"):
        build_items(pope, "yes_no", column_mapping(None, {"id": "category"}))
    with pytest.raises(ValueError, match="Row 0 .*not an option letter"):
        build_items(pope, "multiple_choice", column_mapping(None, {"choices": ("question", "category")}))
    with pytest.raises(ValueError, match="does not exist"):
        load_eval_dataset(tmp_path / "missing.parquet")
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(ValueError, match="unsupported data file type"):
        load_eval_dataset(tmp_path / "data.txt")
    with pytest.raises(ValueError, match="Could not load dataset 'lmms-lab/POPE'.*local path"):
        load_eval_dataset("lmms-lab/POPE", split="test")  # the tests run offline
    with pytest.raises(ValueError, match="Unknown preset"):
        column_mapping("gqa")
