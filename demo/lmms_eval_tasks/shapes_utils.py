"""doc_to_visual / doc_to_text / scoring of the shapes tasks; images are stored next to this file."""

from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent


def doc_to_visual(doc):
    return [Image.open(HERE / doc["image"]).convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def exact_match(doc, results):
    return {"exact_match": float(results[0].strip() == doc["answer"])}
