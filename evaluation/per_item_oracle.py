"""The oracle of the M3 paper (Cai et al. 2024): per item, the smallest visual-token count that answers it correctly.

An item wrong at every count counts at the smallest count, as wrong. With graded scores (VQA accuracy) "correct"
generalises to "reaches the item's best score over all counts", which is the same rule for 0/1 scores.
"""

from collections import Counter


def oracle(scores: dict[str, dict[int, float]], categories: dict[str, str | None] | None = None) -> dict:
    """Oracle accuracy and mean tokens from per-item scores {item_id: {num_visual_tokens: score}}.

    Every item must be scored at the same counts. Returns {"accuracy", "mean_visual_tokens", "tokens_histogram"
    (items per chosen count), "by_category" (the same per category when `categories` names them)}.
    """
    if not scores:
        raise ValueError("The oracle needs at least one scored item.")
    counts = None
    chosen: dict[str, tuple[int, float]] = {}
    for item_id, per_count in scores.items():
        if counts is None:
            counts = sorted(per_count)
        if sorted(per_count) != counts:
            raise ValueError(
                f"Item {item_id} was scored at {sorted(per_count)} visual tokens but others at {counts}: the oracle "
                "compares every item at the same counts."
            )
        best = max(per_count.values())
        smallest = min(count for count in counts if per_count[count] == best)
        chosen[item_id] = (smallest, best)
    result = _summary(chosen.values())
    if categories:
        groups: dict[str, list[tuple[int, float]]] = {}
        for item_id, choice in chosen.items():
            if categories.get(item_id) is not None:
                groups.setdefault(str(categories[item_id]), []).append(choice)
        result["by_category"] = {category: _summary(group) for category, group in sorted(groups.items())}
    else:
        result["by_category"] = {}
    return result


def _summary(choices) -> dict:
    choices = list(choices)
    return {
        "accuracy": sum(score for _, score in choices) / len(choices),
        "mean_visual_tokens": sum(count for count, _ in choices) / len(choices),
        "tokens_histogram": {str(count): number for count, number in sorted(Counter(c for c, _ in choices).items())},
    }
