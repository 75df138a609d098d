"""A synthetic VQA benchmark whose question families need increasingly fine visual detail.

Each 144x144 image has a coloured background, coloured shapes (circle, square, triangle) and four small white
boxes, one per quadrant, each holding a letter drawn with 3 px strokes (a 5x7 glyph, 15x21 px). The tiny models
cut it into 12 px patches, a 12x12 grid of visual tokens: M3's 9 tokens are its 3x3 regions of 48 px, 36 tokens
its 6x6 cells of 24 px (the slots scenes are laid out on), 144 tokens every patch.

| family     | question                                   | answer               | detail needed                       |
|------------|--------------------------------------------|----------------------|-------------------------------------|
| global     | What colour is the background?             | a colour             | 1 token (the image average)         |
| layout     | Where is the {shape}?                      | one of 9 regions     | 9 tokens (one per 48 px region)     |
| counting   | How many {shape}s are there?               | 1 .. 4               | the shapes told apart               |
| reading    | What letter is in the {quadrant} box?      | a letter             | fine: four small glyphs told apart  |

Every scene holds all four boxes, so no average of the image can say which letter is in which box.
Everything is a pure function of the seed: `build_shapes_benchmark(seed)` gives the same splits every time.
"""

import random

import datasets
from PIL import Image, ImageDraw

IMAGE_SIZE = 144
SLOT = 24  # scenes are laid out on a 6x6 grid of slots
REGION = 48  # the 3x3 regions layout questions name
FAMILIES = ("global", "layout", "counting", "reading")  # coarse to fine
BACKGROUNDS = {
    "gray": (128, 128, 128), "purple": (120, 50, 160), "orange": (240, 140, 20),
    "pink": (240, 150, 190), "cyan": (40, 200, 210), "brown": (120, 75, 35),
}
SHAPE_COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 50, 220), "yellow": (235, 225, 40)}
SHAPES = ("circle", "square", "triangle")
SHAPE_SIZE = 18
REGIONS = ("top left", "top", "top right", "left", "middle", "right", "bottom left", "bottom", "bottom right")
QUADRANTS = ("top left", "top right", "bottom left", "bottom right")
STROKE = 3  # pixels per glyph bit: a 5x7 glyph is 15x21 px, about 1.3 x 1.8 of the 12 px patches
BOX_MARGIN = 1  # white around the glyph: the box (17x23 px) fits a 24 px slot
BOX_WIDTH, BOX_HEIGHT = 5 * STROKE + 2 * BOX_MARGIN, 7 * STROKE + 2 * BOX_MARGIN
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
# Accuracy of guessing uniformly among a family's answers (the families occur equally often).
CHANCE = {"global": 1 / len(BACKGROUNDS), "layout": 1 / len(REGIONS), "counting": 1 / 4, "reading": 1 / len(GLYPHS)}
CHANCE["overall"] = sum(CHANCE.values()) / len(CHANCE)
SPLIT_SIZES = {"train": 24000, "validation": 800, "test": 800}
# How `evaluate` reads the splits (the family is the category accuracy is broken down by).
EVAL_COLUMNS = {"image": "image", "question": "question", "answer": "answer", "category": "family", "id": "id"}


def vocabulary() -> list[str]:
    """Every word a question or answer can use (the tiny tokenizer is built from it)."""
    words = ["What", "colour", "is", "the", "background", "?", "Where", "How", "many", "are", "there", "letter",
             "in", "box"]
    # Plurals are words of their own (the word-level tokenizer does not split "circles" into "circle" + "s").
    words += list(BACKGROUNDS) + list(SHAPES) + [f"{shape}s" for shape in SHAPES] + list(GLYPHS)
    words += ["top", "bottom", "left", "right", "middle", "1", "2", "3", "4"]
    return words


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], colour) -> None:
    left, top, right, bottom = box
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle((left + 1, top + 1, right - 1, bottom - 1), fill=colour)
    else:
        draw.polygon([((left + right) // 2, top), (right, bottom), (left, bottom)], fill=colour)


def slot_region(slot: int) -> str:
    """The 3x3 region (48 px, 2x2 slots) a slot of the 6x6 grid lies in."""
    row, column = divmod(slot, 6)
    return REGIONS[(row // 2) * 3 + column // 2]


def choose_box_slots(rng: random.Random) -> list[int]:
    """One slot per quadrant (each quadrant is 3x3 slots) for the four letter boxes, in QUADRANTS order."""
    slots = []
    for quadrant in range(4):
        row, column = divmod(quadrant, 2)
        within = rng.randrange(9)
        slots.append((row * 3 + within // 3) * 6 + column * 3 + within % 3)
    return slots


def render_scene(rng: random.Random, shapes: list[str], shape_slots: list[int], box_slots: list[int]):
    """One image: the shapes in their slots (random colours and jitter), a letter box in each of `box_slots` (one
    per quadrant, random letters), and its facts.

    The facts include `kind_map` / `letter_map`, pixel-level labels (0 = background; 1..3 = the SHAPES, 4 = a
    letter box; letter index + 1 inside a box) used to pretrain the tiny vision tower.
    """
    background = rng.choice(list(BACKGROUNDS))
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUNDS[background])
    kind_map = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    letter_map = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    draw, draw_kind, draw_letter = ImageDraw.Draw(image), ImageDraw.Draw(kind_map), ImageDraw.Draw(letter_map)
    placed = []
    for shape, slot in zip(shapes, shape_slots):
        row, column = divmod(slot, 6)
        left = column * SLOT + rng.randint(0, SLOT - SHAPE_SIZE - 1)
        top = row * SLOT + rng.randint(0, SLOT - SHAPE_SIZE - 1)
        box = (left, top, left + SHAPE_SIZE, top + SHAPE_SIZE)
        draw_shape(draw, shape, box, SHAPE_COLOURS[rng.choice(list(SHAPE_COLOURS))])
        draw_shape(draw_kind, shape, box, SHAPES.index(shape) + 1)
        placed.append({"shape": shape, "region": slot_region(slot)})
    letters = {}
    for quadrant, slot in zip(QUADRANTS, box_slots):
        letter = letters[quadrant] = rng.choice(list(GLYPHS))
        row, column = divmod(slot, 6)
        left = column * SLOT + rng.randint(0, SLOT - BOX_WIDTH)
        top = row * SLOT + rng.randint(0, SLOT - BOX_HEIGHT)
        box = (left, top, left + BOX_WIDTH - 1, top + BOX_HEIGHT - 1)
        draw.rectangle(box, fill=(255, 255, 255))
        draw_kind.rectangle(box, fill=len(SHAPES) + 1)
        draw_letter.rectangle(box, fill=list(GLYPHS).index(letter) + 1)
        for y, bits in enumerate(GLYPHS[letter]):
            for x, bit in enumerate(bits):
                if bit == "1":
                    corner = (left + BOX_MARGIN + STROKE * x, top + BOX_MARGIN + STROKE * y)
                    draw.rectangle((*corner, corner[0] + STROKE - 1, corner[1] + STROKE - 1), fill=(0, 0, 0))
    facts = {"background": background, "shapes": placed, "letters": letters, "kind_map": kind_map,
             "letter_map": letter_map}
    return image, facts


def compose(rng: random.Random, family: str) -> tuple[list[str], str | None, int | None]:
    """The shapes of a scene for a family (balanced answers) and, for layout and counting, the asked shape."""
    target, count = rng.choice(SHAPES), None
    others = [shape for shape in SHAPES if shape != target]
    if family == "counting":
        count = rng.randint(1, 4)
        shapes = [target] * count + [rng.choice(others) for _ in range(rng.randint(0, 3))]
    elif family == "layout":  # the asked shape is the only one of its kind
        shapes = [target] + [rng.choice(others) for _ in range(rng.randint(1, 4))]
    else:
        shapes, target = [rng.choice(SHAPES) for _ in range(rng.randint(2, 6))], None
    return shapes, target, count


def make_item(rng: random.Random, family: str, with_facts: bool = False):
    """A scene composed for the family: (image, question, answer), or (image, facts)."""
    shapes, target, count = compose(rng, family)
    box_slots = choose_box_slots(rng)
    free = [slot for slot in range(36) if slot not in box_slots]
    image, facts = render_scene(rng, shapes, rng.sample(free, k=len(shapes)), box_slots)
    if with_facts:
        return image, facts
    if family == "global":
        return image, "What colour is the background?", facts["background"]
    if family == "reading":
        quadrant = rng.choice(QUADRANTS)
        return image, f"What letter is in the {quadrant} box?", facts["letters"][quadrant]
    if family == "layout":
        region = next(item["region"] for item in facts["shapes"] if item["shape"] == target)
        return image, f"Where is the {target}?", region
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
    """One scene and one question per family about it: the same image needs a different number of visual tokens
    for each question (for showing a model's answers side by side)."""
    rng = random.Random(seed)
    shapes = ["triangle", "square", "square", "square", "circle", "circle"]
    box_slots = choose_box_slots(rng)
    free = [slot for slot in range(36) if slot not in box_slots]
    image, facts = render_scene(rng, shapes, rng.sample(free, k=len(shapes)), box_slots)
    triangle = next(item["region"] for item in facts["shapes"] if item["shape"] == "triangle")
    questions = [
        ("global", "What colour is the background?", facts["background"]),
        ("layout", "Where is the triangle?", triangle),
        ("counting", "How many squares are there?", "3"),
        ("reading", "What letter is in the top right box?", facts["letters"]["top right"]),
    ]
    return image, [{"family": family, "question": question, "answer": answer} for family, question, answer in questions]
