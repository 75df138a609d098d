"""Load converted folders as a user without this package would and compute logits at several visual-token counts.

Run in a fresh interpreter: `python converted_logits_check.py SPEC.json OUT.pt`. SPEC lists
{"folder", "input_ids", "counts", "pixel_values"} entries (input_ids with one image token; pixel_values a .pt file).
This package's modules are made unimportable first, so everything comes from each folder's remote code.
"""

import json
import sys

for name in ("modeling_matryoshka_llava", "matryoshka_llava"):
    sys.modules[name] = None  # `import name` now raises ImportError
sys.path = [entry for entry in sys.path if entry not in ("", ".")]

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor


def main(spec_path: str, out_path: str) -> None:
    results = {}
    with open(spec_path) as spec:
        entries = json.load(spec)
    for entry in entries:
        model = AutoModelForImageTextToText.from_pretrained(entry["folder"], trust_remote_code=True, dtype=torch.float32)
        processor = AutoProcessor.from_pretrained(entry["folder"], trust_remote_code=True)
        pixel_values = torch.load(entry["pixel_values"])
        ids = torch.tensor([entry["input_ids"]])
        with torch.no_grad():
            logits = {count: model(input_ids=ids, pixel_values=pixel_values, num_visual_tokens=count).logits[0]
                      for count in entry["counts"]}
        prompt = processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}], add_generation_prompt=True)
        processed = processor(images=Image.new("RGB", (30, 20), (10, 200, 30)), text=prompt, return_tensors="pt")
        results[entry["folder"]] = {
            "logits": logits,
            "modules": [type(obj).__module__ for obj in (model, processor)],
            "image_token_count": int((processed["input_ids"] == model.config.image_token_id).sum()),
            "pixel_values_shape": list(processed["pixel_values"].shape),
            "prompt": prompt,
        }
    torch.save(results, out_path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
