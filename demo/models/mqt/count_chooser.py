"""`num_visual_tokens="auto"`: a small learned chooser that picks the count per request.

The M3 paper's oracle (for each item the smallest count that answers it) needs far fewer tokens than any fixed
count, and the paper leaves a predictor of it as future work. This one looks at what the model computes anyway
before choosing: the question (the mean of its token embeddings) and the image's cheapest representation (its
visual tokens at the smallest count, averaged). From both it predicts, for every candidate count, the
probability that the model answers correctly with it, and the request gets the smallest count whose
probability reaches `count_chooser_threshold` (the budget / accuracy knob: lower spends fewer tokens), or the
most probable one when none does. It is trained on the per-count correctness of training items
(`matryoshka_llava.training.count_chooser`) and saved with the model: its settings in the config, its weights
as `model.count_chooser.*`.

Part of the remote-code bundle: imports only torch and the standard library.
"""

import torch
from torch import nn

from .visual_token_counts import check_count, valid_num_visual_tokens


class VisualTokenCountChooser(nn.Module):
    """(question features, image features), each (N, width) -> (N, candidate counts) logits of answering right."""

    def __init__(self, input_size: int, hidden_size: int, num_counts: int):
        super().__init__()
        self.norm = nn.LayerNorm(2 * input_size)
        self.hidden = nn.Linear(2 * input_size, hidden_size)
        self.act = nn.GELU()
        self.output = nn.Linear(hidden_size, num_counts)

    def forward(self, question_features: torch.Tensor, image_features: torch.Tensor) -> torch.Tensor:
        features = self.norm(torch.cat([question_features, image_features], dim=-1))  # (N, 2 * width)
        return self.output(self.act(self.hidden(features)))  # (N, candidate counts)


def check_count_chooser_fields(config) -> None:
    """The chooser's settings of a config: candidate counts the model accepts (ascending, distinct), a threshold in
    (0, 1]. No candidates means no chooser."""
    if config.count_chooser_counts is None:
        return
    valid = valid_num_visual_tokens(config)
    counts = [check_count(count, valid, "count_chooser_counts") for count in config.count_chooser_counts]
    if not counts or counts != sorted(set(counts)):
        raise ValueError(f"count_chooser_counts must be distinct counts in ascending order, got {counts}.")
    config.count_chooser_counts = counts
    threshold = config.count_chooser_threshold
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        raise ValueError(f"count_chooser_threshold must be a probability in (0, 1], got {threshold!r}.")


def pick_counts(probabilities: torch.Tensor, counts: list[int], threshold: float) -> list[int]:
    """Per row, the smallest count whose probability of a right answer reaches `threshold`, else the most
    probable count. `probabilities` is (N, len(counts)), `counts` ascending."""
    choices = []
    for row in probabilities.tolist():
        reaching = [count for count, probability in zip(counts, row) if probability >= threshold]
        choices.append(reaching[0] if reaching else counts[max(range(len(row)), key=row.__getitem__)])
    return choices


__all__ = ["VisualTokenCountChooser", "check_count_chooser_fields", "pick_counts"]
