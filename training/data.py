"""LLaVA instruction data: records in a `datasets.Dataset`, images read lazily, assistant-only labels.

The format is LLaVA's: a JSON list (or JSONL) of `{"id": ..., "image": "relative/path.jpg", "conversations":
[{"from": "human", "value": "<image>\\nQuestion"}, {"from": "gpt", "value": "Answer"}, ...]}`; records without
`image` are text-only. Records that cannot be trained on are skipped and counted, never fatal:
at load time a missing image file, an image record without `<image>` (or `<image>` without an image), a
malformed conversation or a sequence longer than `max_length` at the largest visual-token count; at read time
an image that fails to decode (the next readable record takes its place, and the reason travels with the batch).

LLaVA-1.5 and LLaVA-NeXT images alike: an example carries whatever its image processor returns for the image
(`pixel_values`; for the anyres processor also `image_sizes` and `image_grid_shapes`, its crops varying in number).
For LLaVA-NeXT the visual-token count of an image depends on its size, which the length check reads from the
image file's header.
"""

import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
from PIL import Image, UnidentifiedImageError

from matryoshka_llava.processing import load_image

IMAGE_TOKEN = "<image>"
ROLES = {"human": "user", "gpt": "assistant"}
EXIF_ORIENTATION = 0x0112
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def read_records(path: str | os.PathLike) -> list[dict]:
    """A JSON list or a JSONL file of LLaVA records."""
    text = Path(path).read_text()
    stripped = text.lstrip()
    if stripped.startswith("["):
        records = json.loads(text)
    else:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of records or one JSON record per line.")
    return records


def to_messages(record: dict) -> list[dict]:
    """LLaVA conversations -> chat messages, `<image>` moved to the start of the first human turn (as LLaVA does)."""
    conversations = record.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        raise ValueError("no conversations")
    messages = []
    for turn, expected in zip(conversations, ["human", "gpt"] * len(conversations)):
        if not isinstance(turn, dict) or turn.get("from") != expected or not isinstance(turn.get("value"), str):
            raise ValueError("conversation is not alternating human/gpt turns")
        messages.append({"role": ROLES[expected], "content": turn["value"]})
    has_image = record.get("image") is not None
    marker_in_first = IMAGE_TOKEN in messages[0]["content"]
    if has_image and not marker_in_first:
        raise ValueError(f"image record without {IMAGE_TOKEN} in the first human turn")
    if any(IMAGE_TOKEN in message["content"] for message in messages[1 if has_image else 0 :]) or (
        not has_image and marker_in_first
    ):
        raise ValueError(f"{IMAGE_TOKEN} without an image (or in a later turn)")
    if has_image:
        question = messages[0]["content"].replace(IMAGE_TOKEN, "").strip()
        messages[0] = {"role": "user", "content": f"{IMAGE_TOKEN}\n{question}"}
    return messages


def tokenize_conversation(processor, messages: list[dict]) -> tuple[list[int], list[int]]:
    """`<s>` + the vicuna_v1 prompt, and labels that supervise only assistant tokens (answer + `</s>`)."""
    tokenizer = processor.tokenizer
    encoded = tokenizer.apply_chat_template(
        messages,
        chat_template=processor.chat_template,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    input_ids = [tokenizer.bos_token_id] + list(encoded["input_ids"])
    mask = [0] + list(encoded["assistant_masks"])
    labels = [token if supervised else -100 for token, supervised in zip(input_ids, mask)]
    return input_ids, labels


@dataclass
class InstructionData:
    """The loaded records (a `datasets.Dataset`) and how many were skipped, by reason."""

    records: datasets.Dataset
    skipped: Counter = field(default_factory=Counter)


def image_file_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(height, width) of an image file as `load_image` sees it (EXIF orientation applied), from its header alone;
    None when the header cannot be read (reading the image for training then reports it)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if image.getexif().get(EXIF_ORIENTATION, 1) in TRANSPOSING_ORIENTATIONS:
                width, height = height, width
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        return None
    return height, width


def load_instruction_data(
    path: str | os.PathLike,
    image_folder: str | os.PathLike | None,
    processor,
    max_length: int = 2048,
    max_num_visual_tokens: int = 576,
    image_tokens: Callable[[tuple[int, int]], int] | None = None,
) -> InstructionData:
    """Read and check LLaVA records; keep those that can be trained on (tokenised, image path resolved).

    An image counts `max_num_visual_tokens` towards `max_length`; with `image_tokens` ((height, width) -> tokens at
    the largest count, for LLaVA-NeXT whose count depends on the image's size) it counts what its size gives.
    """
    skipped = Counter()
    kept = []
    for index, record in enumerate(read_records(path)):
        try:
            messages = to_messages(record)
        except ValueError as error:
            skipped[str(error)] += 1
            continue
        image_path = None
        if record.get("image") is not None:
            image_path = str(Path(image_folder or ".") / record["image"])
            if not os.path.isfile(image_path):
                skipped["missing image file"] += 1
                continue
        input_ids, labels = tokenize_conversation(processor, messages)
        visual_tokens = max_num_visual_tokens if image_path else 1
        if image_path and image_tokens is not None:
            size = image_file_size(image_path)
            visual_tokens = image_tokens(size) if size is not None else 1  # unreadable: reported when read
        if len(input_ids) + visual_tokens - 1 > max_length:
            skipped[f"longer than max_length={max_length}"] += 1
            continue
        if all(label == -100 for label in labels):
            skipped["no assistant tokens to supervise"] += 1
            continue
        kept.append({"id": str(record.get("id", index)), "image": image_path, "input_ids": input_ids, "labels": labels})
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "image": datasets.Value("string"),
            "input_ids": datasets.Sequence(datasets.Value("int32")),
            "labels": datasets.Sequence(datasets.Value("int32")),
        }
    )
    return InstructionData(datasets.Dataset.from_list(kept, features=features), skipped)


class LazyImageDataset(torch.utils.data.Dataset):
    """Reads each record's image only when the example is drawn; an undecodable image is replaced by the next
    readable record (deterministically), and the reason is reported with the example as `skipped`.

    An example holds `input_ids`, `labels`, and every output of the image processor for its one image
    (`pixel_values`; LLaVA-NeXT adds `image_sizes` and `image_grid_shapes`), or `pixel_values` None without one."""

    def __init__(self, records: datasets.Dataset, image_processor):
        if len(records) == 0:
            raise ValueError("No trainable records: every record was skipped (see the skip counts).")
        self.records = records
        self.image_processor = image_processor

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        skipped = []
        for offset in range(len(self.records)):
            record = self.records[(index + offset) % len(self.records)]
            example = {"input_ids": record["input_ids"], "labels": record["labels"], "pixel_values": None}
            if record["image"] is None:
                return {**example, "skipped": skipped}
            try:
                image_inputs = self.image_processor(load_image(record["image"]), return_tensors="pt")
            except ValueError:
                skipped.append("corrupt image")
                continue
            return {**example, **{name: value[0] for name, value in image_inputs.items()}, "skipped": skipped}
        raise ValueError("No record in the dataset has a readable image.")
