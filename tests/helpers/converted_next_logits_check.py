"""Load converted M3-LLaVA-NeXT folders as a user without this package would: process images with the folder's
processor and compute logits at several visual-token counts per crop.

Run in a fresh interpreter: `python converted_next_logits_check.py SPEC.json OUT.pt`. SPEC lists
{"folder", "images" (PNG paths), "counts" (a list of counts per image)} entries. This package's modules are made unimportable first, so
everything comes from each folder's remote code.
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
        prompt = processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}],
            add_generation_prompt=True,
        )
        per_image = []
        for path, counts in zip(entry["images"], entry["counts"]):
            image = Image.open(path).convert("RGB")
            inputs = processor(images=image, text=prompt, return_tensors="pt")
            with torch.no_grad():
                logits = {count: model(**inputs, num_visual_tokens=count).logits[0] for count in counts}
            per_image.append({
                "input_ids": inputs["input_ids"][0].tolist(),
                "image_sizes": inputs["image_sizes"].tolist(),
                "image_grid_shapes": inputs["image_grid_shapes"].tolist(),
                "predicted_tokens": {count: processor.num_image_tokens(image.size[::-1], count)
                                     for count in counts},
                "logits": logits,
            })
        results[entry["folder"]] = {
            "images": per_image,
            "prompt": prompt,
            "image_token_id": model.config.image_token_id,
            "modules": [type(obj).__module__ for obj in (model, processor, processor.image_processor)],
        }
    torch.save(results, out_path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
