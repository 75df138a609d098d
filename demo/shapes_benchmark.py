"""A synthetic VQA benchmark whose question families need increasingly fine visual detail.

Each 96x96 image is a coloured background with a 4x4 layout of 24 px slots: a few coloured shapes (circle,
square, triangle) and one small white box holding a letter drawn with 2 px strokes (a 5x7 glyph, 10x14 px). With
the tiny models' 4 px patches a slot is 6x6 visual tokens at full resolution, and one token holds the whole image
after global pooling.

| family     | question                                   | answer            | detail needed            |
|------------|--------------------------------------------|-------------------|--------------------------|
| global     | What colour is the background?             | a colour          | 1 token (image average)  |
| layout     | Where is the {shape}?                      | top left, ...     | coarse: which quadrant   |
| counting   | How many {shape}s are there?               | 1 .. 4            | every shape, told apart  |
| reading    | What letter is in the box?                 | a letter          | fine: a 5x7 glyph        |

Everything is a pure function of the seed: `build_shapes_benchmark(seed)` gives the same splits every time.
"""

import random

import datasets
from PIL import Image, ImageDraw

IMAGE_SIZE = 96
SLOT = 24
SHAPE_SIZE = 16
STROKE = 2  # pixels per glyph bit
FAMILIES = ("global", "layout", "counting", "reading")
BACKGROUNDS = {
    "gray": (128, 128, 128), "purple": (120, 50, 160), "orange": (240, 140, 20),
    "pink": (240, 150, 190), "cyan": (40, 200, 210), "brown": (120, 75, 35),
}
SHAPE_COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 50, 220), "yellow": (235, 225, 40)}
SHAPES = ("circle", "square", "triangle")
QUADRANTS = ("top left", "top right", "bottom left", "bottom right")
GLYPHS = {  # 5x7 bitmaps, one string per row
    "A": ["01110", "10001", "10001", "11111", "10001", "10001", "10001"],
    "C": ["01111", "10000", "10000", "10000", "10000", "10000", "01111"],
    "E": ["11111", "10000", "10000", "11110", "10000", "10000", "11111"],
    "H": ["10001", "10001", "10001", "11111", "10001", "10001", "10001"],
    "K": ["10001", "10010", "10100", "11000", "10100", "10010", "10001"],
    "L": ["10000", "10000", "10000", "10000", "10000", "10000", "11111"],
    "P": ["11110", "10001", "10001", "11110", "10000", "10000", "10000"],
    "T": ["11111", "00100", "00100", "00100", "00100", "00100", "00100"],
    "U": ["10001", "10001", "10001", "10001", "10001", "10001", "01110"],
    "X": ["10001", "10001", "01010", "00100", "01010", "10001", "10001"],
}
SPLIT_SIZES = {"train": 24000, "validation": 800, "test": 800}
# How `evaluation.evaluate` reads the splits (the family is the category accuracy is broken down by).
EVAL_COLUMNS = {"image": "image", "question": "question", "answer": "answer", "category": "family", "id": "id"}


def vocabulary() -> list[str]:
    """Every word a question or answer can use (the tiny tokenizer is built from it)."""
    words = ["What", "colour", "is", "the", "background", "?", "Where", "How", "many", "are", "there", "letter",
             "in", "box"]
    # Plurals are words of their own (the word-level tokenizer does not split "circles" into "circle" + "s").
    words += list(BACKGROUNDS) + list(SHAPE_COLOURS) + list(SHAPES) + [f"{shape}s" for shape in SHAPES] + list(GLYPHS)
    words += ["top", "bottom", "left", "right", "1", "2", "3", "4"]
    return words


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], colour) -> None:
    left, top, right, bottom = box
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle((left + 1, top + 1, right - 1, bottom - 1), fill=colour)
    else:
        draw.polygon([((left + right) // 2, top), (right, bottom), (left, bottom)], fill=colour)


def render_scene(rng: random.Random, shapes: list[str]) -> tuple[Image.Image, dict]:
    """One image with the given shapes (random colours, free slots) and a letter box, and its facts.

    The facts include `kind_map` / `letter_map`, pixel-level labels (0 = background; 1..3 = the SHAPES, 4 = the
    letter box; letter index + 1 inside the box) used to pretrain the tiny vision tower.
    """
    background = rng.choice(list(BACKGROUNDS))
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUNDS[background])
    kind_map = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    letter_map = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    draw, draw_kind = ImageDraw.Draw(image), ImageDraw.Draw(kind_map)
    slots = rng.sample(range(16), k=len(shapes) + 1)
    letter_slot, placed = slots[0], []
    for shape, slot in zip(shapes, slots[1:]):
        row, column = divmod(slot, 4)
        colour = rng.choice(list(SHAPE_COLOURS))
        left, top = column * SLOT + 2 + rng.randint(0, 4), row * SLOT + 2 + rng.randint(0, 4)
        box = (left, top, left + SHAPE_SIZE, top + SHAPE_SIZE)
        draw_shape(draw, shape, box, SHAPE_COLOURS[colour])
        draw_shape(draw_kind, shape, box, SHAPES.index(shape) + 1)
        placed.append({"shape": shape, "quadrant": QUADRANTS[(row // 2) * 2 + column // 2]})
    letter = rng.choice(list(GLYPHS))
    row, column = divmod(letter_slot, 4)
    left, top = column * SLOT + 1 + rng.randint(0, 2), row * SLOT + 1 + rng.randint(0, 2)
    box = (left, top, left + 5 * STROKE + 5, top + 7 * STROKE + 5)  # the glyph with a 3 px white margin
    draw.rectangle(box, fill=(255, 255, 255))
    draw_kind.rectangle(box, fill=len(SHAPES) + 1)
    ImageDraw.Draw(letter_map).rectangle(box, fill=list(GLYPHS).index(letter) + 1)
    for y, bits in enumerate(GLYPHS[letter]):
        for x, bit in enumerate(bits):
            if bit == "1":
                corner = (left + 3 + STROKE * x, top + 3 + STROKE * y)
                draw.rectangle((*corner, corner[0] + STROKE - 1, corner[1] + STROKE - 1), fill=(0, 0, 0))
    facts = {"background": background, "shapes": placed, "letter": letter, "kind_map": kind_map,
             "letter_map": letter_map}
    return image, facts


def make_item(rng: random.Random, family: str, with_facts: bool = False):
    """A scene composed for the family (balanced answers): (image, question, answer), or (image, facts)."""
    if family == "counting":
        target, count = rng.choice(SHAPES), rng.randint(1, 4)
        others = [shape for shape in SHAPES if shape != target]
        shapes = [target] * count + [rng.choice(others) for _ in range(rng.randint(0, 3))]
    elif family == "layout":
        target = rng.choice(SHAPES)
        others = [shape for shape in SHAPES if shape != target]
        shapes = [target] + [rng.choice(others) for _ in range(rng.randint(1, 3))]
    else:
        shapes = [rng.choice(SHAPES) for _ in range(rng.randint(2, 5))]
    rng.shuffle(shapes)
    image, facts = render_scene(rng, shapes)
    if with_facts:
        return image, facts
    if family == "global":
        return image, "What colour is the background?", facts["background"]
    if family == "reading":
        return image, "What letter is in the box?", facts["letter"]
    if family == "layout":
        quadrant = next(item["quadrant"] for item in facts["shapes"] if item["shape"] == target)
        return image, f"Where is the {target}?", quadrant
    return image, f"How many {target}s are there?", str(count)


def generate_split(seed: int, size: int) -> datasets.Dataset:
    """`size` items, the four families in turn, each a fresh scene."""
    rng = random.Random(seed)
    rows = {"id": [], "image": [], "question": [], "answer": [], "family": []}
    for index in range(size):
        family = FAMILIES[index % len(FAMILIES)]
        image, question, answer = make_item(rng, family)
        for name, value in zip(rows, (f"{seed}-{index}", image, question, answer, family)):
            rows[name].append(value)
    features = datasets.Features(
        {name: datasets.Image() if name == "image" else datasets.Value("string") for name in rows}
    )
    return datasets.Dataset.from_dict(rows, features=features)


def build_shapes_benchmark(seed: int = 0, sizes: dict[str, int] | None = None) -> datasets.DatasetDict:
    """Train / validation / test splits; each split has its own seed stream, so sizes do not shift other splits."""
    sizes = {**SPLIT_SIZES, **(sizes or {})}
    return datasets.DatasetDict(
        {split: generate_split(seed * 1000 + offset, sizes[split]) for offset, split in enumerate(sizes)}
    )


def sample_scene(seed: int = 0) -> tuple[Image.Image, list[dict]]:
    """One scene and one question per family about it (for showing a model's answers side by side)."""
    rng = random.Random(seed)
    shapes = ["circle", "circle", "triangle", "square", "square", "square"]
    rng.shuffle(shapes)
    image, facts = render_scene(rng, shapes)
    triangle = next(item["quadrant"] for item in facts["shapes"] if item["shape"] == "triangle")
    questions = [
        ("global", "What colour is the background?", facts["background"]),
        ("layout", "Where is the triangle?", triangle),
        ("counting", "How many squares are there?", "3"),
        ("reading", "What letter is in the box?", facts["letter"]),
    ]
    return image, [{"family": family, "question": question, "answer": answer} for family, question, answer in questions]
