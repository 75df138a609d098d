"""Task types: how a question becomes a prompt, how an answer is read from the generated text, and how it is scored.

Each task turns one generated text into a per-item record (`parsed` answer, `target`, `score` in [0, 1]) and a list
of records into metrics. Metrics are fractions in [0, 1]; the main metric of every task is the mean item score,
which is also what the oracle uses.

The standard scorers are implemented here rather than loaded with `evaluate`: `evaluate.load(...)` fetches each
metric's script from the Hub, so it fails offline, and it has no VQA accuracy, option-letter extraction or POPE
answer parsing in any case. The formulas follow the benchmarks' own evaluation code (cited per function).
"""

import re
import string
from dataclasses import dataclass

from .answer_normalization import normalize_vqa_answer, vqa_accuracy

OPTION_LETTERS = string.ascii_uppercase


@dataclass(frozen=True)
class EvalItem:
    """One benchmark question, independent of the source layout."""

    item_id: str
    images: list
    question: str
    answers: list[str]
    choices: list[str] | None = None
    hint: str | None = None
    category: str | None = None
    row: int | None = None  # the dataset row it came from, to name it in messages; None for hand-made items


def format_options(choices: list[str]) -> str:
    return "\n".join(f"{OPTION_LETTERS[i]}. {choice}" for i, choice in enumerate(choices))


# ---------------------------------------------------------------- answer parsing


def extract_option_letter(prediction: str, choices: list[str]) -> str | None:
    """The option letter a free-form answer names, as MMBench / lmms-eval read it; None when it names none.

    Tried in order: a bare letter ("B", "(b)", "B."), a letter opening the answer ("B. red"), "answer is B",
    the text of exactly one option, then a single standalone option letter anywhere.
    """
    valid = OPTION_LETTERS[: len(choices)]
    text = prediction.strip()
    bare = re.fullmatch(rf"\(?([{valid}{valid.lower()}])\)?[.:)]?", text)
    if bare:
        return bare.group(1).upper()
    patterns = (
        rf"^\(?([{valid}])[.:)]\s",
        rf"(?i:answer|option)\s*(?i:is)?\s*:?\s*\(?([{valid}])\b",
    )
    for pattern in patterns:
        match = re.search(pattern, text)
        if match:
            return match.group(1)
    normalized = normalize_vqa_answer(text)
    matching = [OPTION_LETTERS[i] for i, choice in enumerate(choices) if normalize_vqa_answer(str(choice)) == normalized]
    if len(matching) == 1:
        return matching[0]
    standalone = set(re.findall(rf"(?<![A-Za-z'])([{valid}])(?![A-Za-z'])", text))
    # In a sentence "A" is usually the article (MMBench's rule: ignore it in answers of more than three words).
    if standalone == {"A"} and len(text.split()) > 3:
        return None
    return standalone.pop() if len(standalone) == 1 else None


def parse_yes_no(prediction: str) -> str:
    """POPE's parsing (LLaVA `eval_pope.py`): first sentence, commas dropped, 'no' or 'not' as a word means no;
    anything else counts as yes."""
    text = prediction.strip()
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if any(word in ("No", "not", "no") for word in words) else "yes"


def normalize_exact_match(text: str) -> str:
    """Lower case, surrounding whitespace and punctuation removed, inner whitespace collapsed."""
    return " ".join(text.lower().split()).strip(string.punctuation + " ")


def normalize_yes_no_label(answer: str) -> str:
    label = answer.strip().lower().rstrip(".")
    if label not in ("yes", "no"):
        raise ValueError(f"A yes/no item has the reference answer {answer!r}; expected 'yes' or 'no'.")
    return label


# ---------------------------------------------------------------- tasks


class Task:
    """A task type: prompt, parsing and scoring of one item, aggregation over items."""

    name: str
    main_metric: str = "accuracy"
    default_prompt_suffix: str = ""
    default_max_new_tokens: int = 16

    def build_question(self, item: EvalItem, prompt_suffix: str | None = None) -> str:
        suffix = self.default_prompt_suffix if prompt_suffix is None else prompt_suffix
        parts = [item.hint, item.question] if item.hint else [item.question]
        return "\n".join(part.strip() for part in parts) + suffix

    def check_item(self, item: EvalItem) -> None:
        if not item.answers:
            raise ValueError(f"Item {item.item_id} has no reference answer.")

    def score(self, prediction: str, item: EvalItem) -> dict:
        """{'parsed': the answer read from the text, 'target': the reference, 'score': float in [0, 1]}."""
        raise NotImplementedError

    def aggregate(self, records: list[dict]) -> dict[str, float]:
        if not records:
            raise ValueError("No results to aggregate.")
        return {self.main_metric: sum(record["score"] for record in records) / len(records)}


class OpenVQATask(Task):
    """VQAv2 / TextVQA / VizWiz: a short free-form answer, VQA accuracy against the (usually 10) human answers."""

    name = "open_vqa"
    default_prompt_suffix = "\nAnswer the question using a single word or phrase."

    def score(self, prediction, item):
        return {
            "parsed": normalize_vqa_answer(prediction),
            "target": item.answers[0] if len(item.answers) == 1 else item.answers,
            "score": vqa_accuracy(prediction, item.answers),
        }


class MultipleChoiceTask(Task):
    """ScienceQA / MMBench / AI2D / SEED-Bench: lettered options in the prompt, the answer letter is extracted."""

    name = "multiple_choice"
    default_prompt_suffix = "\nAnswer with the option's letter from the given choices directly."
    default_max_new_tokens = 8

    def build_question(self, item, prompt_suffix=None):
        suffix = self.default_prompt_suffix if prompt_suffix is None else prompt_suffix
        parts = [item.hint, item.question] if item.hint else [item.question]
        return "\n".join(part.strip() for part in parts) + "\n" + format_options(item.choices) + suffix

    def check_item(self, item):
        super().check_item(item)
        if not item.choices or len(item.choices) < 2:
            raise ValueError(f"Multiple-choice item {item.item_id} has {len(item.choices or [])} options; need >= 2.")
        if len(item.choices) > len(OPTION_LETTERS):
            raise ValueError(f"Item {item.item_id} has {len(item.choices)} options; at most 26 can be lettered.")
        if item.answers[0] not in OPTION_LETTERS[: len(item.choices)]:
            raise ValueError(f"Item {item.item_id}: answer {item.answers[0]!r} is not one of its option letters.")

    def score(self, prediction, item):
        letter = extract_option_letter(prediction, item.choices)
        return {"parsed": letter, "target": item.answers[0], "score": float(letter == item.answers[0])}


class YesNoTask(Task):
    """POPE / MME-style yes/no questions: accuracy, and precision / recall / F1 with 'yes' as the positive class."""

    name = "yes_no"
    default_prompt_suffix = "\nAnswer the question using a single word or phrase."
    default_max_new_tokens = 8

    def check_item(self, item):
        super().check_item(item)
        normalize_yes_no_label(item.answers[0])

    def score(self, prediction, item):
        parsed = parse_yes_no(prediction)
        target = normalize_yes_no_label(item.answers[0])
        return {"parsed": parsed, "target": target, "score": float(parsed == target)}

    def aggregate(self, records):
        metrics = super().aggregate(records)
        true_pos = sum(1 for r in records if r["parsed"] == "yes" and r["target"] == "yes")
        false_pos = sum(1 for r in records if r["parsed"] == "yes" and r["target"] == "no")
        false_neg = sum(1 for r in records if r["parsed"] == "no" and r["target"] == "yes")
        precision = true_pos / (true_pos + false_pos) if true_pos + false_pos else 0.0
        recall = true_pos / (true_pos + false_neg) if true_pos + false_neg else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        yes_ratio = sum(1 for r in records if r["parsed"] == "yes") / len(records)
        return {**metrics, "precision": precision, "recall": recall, "f1": f1, "yes_ratio": yes_ratio}


class ExactMatchTask(Task):
    """Short answers (words or numbers) compared after light normalisation; any listed reference counts."""

    name = "exact_match"
    main_metric = "exact_match"

    def score(self, prediction, item):
        parsed = normalize_exact_match(prediction)
        references = {normalize_exact_match(answer) for answer in item.answers}
        return {
            "parsed": parsed,
            "target": item.answers[0] if len(item.answers) == 1 else item.answers,
            "score": float(parsed in references),
        }


TASKS: dict[str, Task] = {task.name: task for task in (OpenVQATask(), MultipleChoiceTask(), YesNoTask(), ExactMatchTask())}


def get_task(task: str | Task) -> Task:
    if isinstance(task, Task):
        return task
    if task not in TASKS:
        raise ValueError(f"Unknown task type {task!r}; expected one of {sorted(TASKS)}.")
    return TASKS[task]


def aggregate_by_category(task: Task, records: list[dict]) -> dict[str, dict[str, float]]:
    """Metrics per item category (records without a category are only counted overall)."""
    groups: dict[str, list[dict]] = {}
    for record in records:
        if record.get("category") is not None:
            groups.setdefault(str(record["category"]), []).append(record)
    return {category: task.aggregate(group) for category, group in sorted(groups.items())}
