"""The placeholder rule that lets one processed prompt serve every visual-token count.

Each contiguous run of image tokens in `input_ids` stands for one image, in (row, position) order, which is the
order of the images in `pixel_values`. A run of length 1 is a compact placeholder: the model expands it to the
number of tokens the image produces at the requested count. A longer run must already have exactly that length,
so inputs expanded by transformers' own LLaVA processor keep working.

Part of the remote-code bundle: imports only torch and the standard library.
"""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ImageRun:
    row: int
    start: int
    length: int


def find_image_runs(input_ids: torch.Tensor, image_token_id: int) -> list[ImageRun]:
    """The runs of `image_token_id` in a (batch, seq) tensor, row by row, left to right."""
    is_image = (input_ids == image_token_id).to(torch.int8)
    # A run starts where the mask rises and ends where it falls; pad with zeros so edges count.
    edges = torch.diff(torch.nn.functional.pad(is_image, (1, 1)), dim=1)
    starts = (edges == 1).nonzero().tolist()
    ends = (edges == -1).nonzero().tolist()
    return [ImageRun(row, start, end - start) for (row, start), (_, end) in zip(starts, ends)]


def check_runs_match_images(runs: list[ImageRun], num_images: int) -> None:
    if len(runs) != num_images:
        raise ValueError(
            f"The text holds {len(runs)} image placeholder runs but {num_images} images were given. Each image needs "
            "one `<image>` token (or a run of exactly its number of visual tokens), separated from the next image "
            "by at least one other token."
        )


def expand_image_placeholders(
    input_ids: torch.Tensor,
    runs: list[ImageRun],
    tokens_per_image: list[int],
    *,
    attention_mask: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    pad_token_id: int = 0,
    padding_side: str = "left",
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Repeat each compact placeholder to its image's token count; rows that grow unevenly are re-padded.

    Labels at visual positions become -100. Returns `input_ids`, `attention_mask` and `labels` (None where not
    given, except that an attention mask is created when re-padding makes one necessary).
    """
    for index, (run, num_tokens) in enumerate(zip(runs, tokens_per_image)):
        if run.length not in (1, num_tokens):
            raise ValueError(
                f"Image {index} has a run of {run.length} placeholder tokens but produces {num_tokens} visual "
                f"tokens: give it a single placeholder (expanded automatically) or exactly {num_tokens}."
            )
    is_visual = torch.zeros_like(input_ids, dtype=torch.bool)
    for run in runs:
        is_visual[run.row, run.start : run.start + run.length] = True
    if labels is not None:
        labels = labels.masked_fill(is_visual, -100)
    if all(run.length == num_tokens for run, num_tokens in zip(runs, tokens_per_image)):
        return input_ids, attention_mask, labels

    repeats = torch.ones_like(input_ids)
    for run, num_tokens in zip(runs, tokens_per_image):
        if run.length == 1:
            repeats[run.row, run.start] = num_tokens

    rows = []
    for row in range(input_ids.shape[0]):
        fields = [input_ids[row], torch.ones_like(input_ids[row]) if attention_mask is None else attention_mask[row]]
        if labels is not None:
            fields.append(labels[row])
        rows.append([field.repeat_interleave(repeats[row]) for field in fields])

    length = max(row[0].shape[0] for row in rows)
    fill_values = [pad_token_id, 0, -100]

    def pad(field: torch.Tensor, value: int) -> torch.Tensor:
        padding = field.new_full((length - field.shape[0],), value)
        return torch.cat([padding, field] if padding_side == "left" else [field, padding])

    stacked = [torch.stack([pad(row[i], fill_values[i]) for row in rows]) for i in range(len(rows[0]))]
    new_ids, new_mask = stacked[0], stacked[1]
    if attention_mask is None and bool(new_mask.all()):
        new_mask = None
    return new_ids, new_mask, stacked[2] if labels is not None else None
