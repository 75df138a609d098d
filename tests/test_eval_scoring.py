"""Standard scoring of the task types (VQA accuracy, option letters, POPE yes/no, exact match) and the oracle."""

import pytest

from matryoshka_llava.evaluation import EvalItem, get_task, oracle
from matryoshka_llava.evaluation.answer_normalization import normalize_vqa_answer, vqa_accuracy
from matryoshka_llava.evaluation.tasks import extract_option_letter, parse_yes_no


@pytest.mark.parametrize(
    "answer, normalized",
    [
        ("Two dogs.", "2 dogs"),
        ("The red one", "red 1"),
        ("dont know", "don't know"),
        ("yes!", "yes"),
        ("1,000", "1000"),
        ("3.5 meters", "3.5 meters"),
        ("black and-white", "black and white"),
        ("  Zero\n", "0"),
    ],
)
def test_vqa_normalization_follows_the_official_script(answer, normalized):
    assert normalize_vqa_answer(answer) == normalized


def test_vqa_accuracy_averages_the_ten_leave_one_out_subsets():
    humans = ["red"] * 7 + ["dark red"] * 3
    assert vqa_accuracy("Red.", humans) == 1.0
    # Leaving out one of the 3 "dark red" annotators leaves 2 matches (2/3); leaving out a "red" one leaves 3 (1).
    assert vqa_accuracy("dark red", humans) == pytest.approx((7 * 1 + 3 * 2 / 3) / 10)
    assert vqa_accuracy("cat", ["cat"] * 2 + ["dog"] * 8) == pytest.approx((2 * (1 / 3) + 8 * (2 / 3)) / 10)
    assert vqa_accuracy("blue", humans) == 0.0
    assert vqa_accuracy("Two", ["2"]) == 1.0  # a single reference: normalised exact match
    with pytest.raises(ValueError, match="at least one reference"):
        vqa_accuracy("x", [])


@pytest.mark.parametrize(
    "prediction, letter",
    [
        ("B", "B"),
        ("(C)", "C"),
        ("b.", "B"),
        ("B. green", "B"),
        ("The answer is D.", "D"),
        ("Answer: C", "C"),
        ("green", "B"),
        ("I would pick C here", "C"),
        ("A dog is sitting on the grass", None),
        ("", None),
        ("E", None),
        ("red or green", None),
    ],
)
def test_option_letter_extraction(prediction, letter):
    assert extract_option_letter(prediction, ["red", "green", "blue", "yellow"]) == letter


@pytest.mark.parametrize(
    "prediction, label",
    [("Yes, there is a dog.", "yes"), ("No.", "no"), ("There is not a dog", "no"), ("no", "no"),
     ("I can see one. No other", "yes"), ("maybe", "yes")],
)
def test_yes_no_parsing_is_popes(prediction, label):
    assert parse_yes_no(prediction) == label


def test_yes_no_metrics_take_yes_as_positive():
    task = get_task("yes_no")

    def item(answer):
        return EvalItem("i", [None], "q", [answer])

    pairs = [("Yes", "yes"), ("yes", "yes"), ("No", "yes"), ("Yes", "no"), ("No", "no"), ("No", "no")]
    records = [task.score(prediction, item(answer)) for prediction, answer in pairs]
    metrics = task.aggregate(records)
    # TP 2, FN 1, FP 1, TN 2
    assert metrics == pytest.approx(
        {"accuracy": 4 / 6, "precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "yes_ratio": 3 / 6}
    )
    with pytest.raises(ValueError, match="expected 'yes' or 'no'"):
        task.check_item(item("maybe"))


def test_exact_match_normalises_lightly_and_accepts_any_reference():
    task = get_task("exact_match")
    item = EvalItem("i", [None], "How many?", ["3", "three"])
    assert task.score(" Three. ", item)["score"] == 1.0
    assert task.score("3 shapes", item)["score"] == 0.0
    assert task.main_metric == "exact_match"
    assert task.aggregate([{"score": 1.0}, {"score": 0.0}]) == {"exact_match": 0.5}


def test_multiple_choice_prompt_and_checks():
    task = get_task("multiple_choice")
    item = EvalItem("i", [None], "Which colour?", ["B"], choices=["red", "green"], hint="Look closely.")
    question = task.build_question(item)
    assert question == "Look closely.\nWhich colour?\nA. red\nB. green\nAnswer with the option's letter from the given choices directly."
    assert task.score("B", item)["score"] == 1.0
    with pytest.raises(ValueError, match="not one of its option letters"):
        task.check_item(EvalItem("i", [None], "q", ["C"], choices=["red", "green"]))
    with pytest.raises(ValueError, match="Unknown task type"):
        get_task("captioning")


def test_oracle_takes_the_smallest_count_reaching_the_best_score():
    scores = {
        "right_from_9": {1: 0.0, 9: 1.0, 36: 1.0},
        "right_everywhere": {1: 1.0, 9: 1.0, 36: 1.0},
        "always_wrong": {1: 0.0, 9: 0.0, 36: 0.0},  # counts at the smallest count, as wrong
        "graded": {1: 0.3, 9: 0.6, 36: 0.6},
    }
    categories = {"right_from_9": "fine", "right_everywhere": "global", "always_wrong": "fine", "graded": "fine"}
    result = oracle(scores, categories)
    assert result["accuracy"] == pytest.approx((1 + 1 + 0 + 0.6) / 4)
    assert result["mean_visual_tokens"] == pytest.approx((9 + 1 + 1 + 9) / 4)
    assert result["tokens_histogram"] == {"1": 2, "9": 2}
    assert result["by_category"]["global"] == {"accuracy": 1.0, "mean_visual_tokens": 1.0, "tokens_histogram": {"1": 1}}
    assert result["by_category"]["fine"]["accuracy"] == pytest.approx(1.6 / 3)
    with pytest.raises(ValueError, match="same counts"):
        oracle({"a": {1: 1.0, 9: 0.0}, "b": {1: 1.0}})
