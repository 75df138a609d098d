"""Load a saved Matryoshka folder the way a user without this package would, and generate at several counts.

Run as a script in a fresh interpreter: `python remote_code_check.py FOLDER COUNTS`. The package's modules are
made unimportable first, so everything must come from the folder's remote code. Prints one JSON object.
"""

import json
import sys

for name in ("modeling_matryoshka_llava", "matryoshka_llava"):
    sys.modules[name] = None  # `import name` now raises ImportError
sys.path = [entry for entry in sys.path if entry not in ("", ".")]

import transformers
from PIL import Image
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor


def main(folder: str, counts: list[int]) -> dict:
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()
    base = AutoModel.from_pretrained(folder, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    image = Image.new("RGB", (40, 30), (200, 30, 60))
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the image?"}]}],
        add_generation_prompt=True,
    )
    inputs = processor(images=image, text=prompt, return_tensors="pt")
    answers = {}
    for count in counts:
        out = model.generate(**inputs, num_visual_tokens=count, max_new_tokens=4, do_sample=False)
        answers[count] = out[0, inputs["input_ids"].shape[1] :].tolist()
    try:
        model.generate(**inputs, num_visual_tokens=0, max_new_tokens=1)
        invalid_rejected = False
    except ValueError:
        invalid_rejected = True
    return {
        "transformers": transformers.__version__,
        "classes": [type(obj).__module__ for obj in (config, model, base, processor, processor.image_processor)],
        "answers": answers,
        "invalid_rejected": invalid_rejected,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], [int(k) for k in sys.argv[2].split(",")])))
