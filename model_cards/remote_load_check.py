"""Load a checkpoint folder as a user without this package would, and run one forward pass.

Run in a fresh interpreter: `python remote_load_check.py FOLDER`. This package's modules are made unimportable
first, so the model, config and processor must all come from the folder's remote code. Prints one JSON line.
"""

import json
import sys

for name in ("modeling_matryoshka_llava", "matryoshka_llava"):
    sys.modules[name] = None  # `import name` now raises ImportError
sys.path = [entry for entry in sys.path if entry not in ("", ".")]

import torch
from PIL import Image
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor


def main(folder: str) -> dict:
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True, dtype="auto").eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the image?"}]}],
        add_generation_prompt=True,
    )
    inputs = processor(images=Image.new("RGB", (64, 48), (200, 30, 60)), text=prompt, return_tensors="pt")
    count = min(config.valid_num_visual_tokens)
    with torch.no_grad():
        logits = model(**inputs, num_visual_tokens=count).logits
    return {
        "classes": [type(obj).__module__ for obj in (config, model, processor, processor.image_processor)],
        "num_visual_tokens": count,
        "logits_shape": list(logits.shape),
        "logits_finite": bool(torch.isfinite(logits).all()),
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
