"""Tiny LLaVA instruction datasets written to disk in the original JSON format, for the training tests."""

import json
from pathlib import Path

from PIL import Image

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}


def write_colour_dataset(folder: Path, num_records: int = 8, name: str = "data.json", sizes=((40, 32),)) -> Path:
    """Solid-colour images of the (width, height) `sizes` in turn; the assistant names the colour (a task a tiny
    model learns in a few dozen steps)."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    records = []
    names = list(COLOURS)
    for index in range(num_records):
        colour = names[index % len(names)]
        Image.new("RGB", sizes[index % len(sizes)], COLOURS[colour]).save(images / f"{index}.png")
        records.append(
            {
                "id": f"sample-{index}",
                "image": f"{index}.png",
                "conversations": [
                    {"from": "human", "value": "What colour is this image?\n<image>"},
                    {"from": "gpt", "value": colour},
                ],
            }
        )
    path = folder / name
    path.write_text(json.dumps(records))
    return path
