"""LLaVA instruction data: the exact supervision mask, lazy images, bad records skipped and counted."""

import json

import torch
from tiny_models import tiny_processor

from matryoshka_llava.training.data_collation import MatryoshkaLlavaDataCollator
from matryoshka_llava.training.data import LazyImageDataset, load_instruction_data, to_messages, tokenize_conversation


def test_two_turn_example_supervises_exactly_the_assistant_tokens(capsys):
    processor = tiny_processor()
    record = {
        "image": "cat.png",
        "conversations": [
            {"from": "human", "value": "What is this?\n<image>"},
            {"from": "gpt", "value": "A red square."},
            {"from": "human", "value": "How many?"},
            {"from": "gpt", "value": "Three."},
        ],
    }
    input_ids, labels = tokenize_conversation(processor, to_messages(record))
    tokens = processor.tokenizer.convert_ids_to_tokens(input_ids)
    shown = "".join(f"[{token}]" if label != -100 else token for token, label in zip(tokens, labels))
    print(shown)  # supervised tokens in brackets
    assert processor.tokenizer.decode(input_ids) == (
        "<s>A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the user's questions. USER: <image>\nWhat is this? ASSISTANT: A red "
        "square.</s>USER: How many? ASSISTANT: Three.</s>"
    )
    supervised = [input_ids[i] for i, label in enumerate(labels) if label != -100]
    assert processor.tokenizer.decode(supervised) == " A red square.</s>Three.</s>"
    assert shown.endswith("ASSISTANT:Ġ[T][h][re][e][.][</s>]")
    assert all(label in (-100, token) for label, token in zip(labels, input_ids))
    assert labels[tokens.index("<image>")] == -100
    assert "[</s>]USER:" in capsys.readouterr().out


def write(tmp_path, records):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(record) for record in records))
    return path


def image_record(image, question="Q?\n<image>", answer="yes"):
    return {"image": image, "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]}


def test_bad_records_are_skipped_with_reasons(tmp_path):
    from PIL import Image

    processor = tiny_processor()
    (tmp_path / "ok.png").write_bytes(b"")
    Image.new("RGB", (10, 10)).save(tmp_path / "ok.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG not really")
    records = [
        image_record("ok.png"),
        image_record("missing.png"),
        image_record("ok.png", question="No marker here"),
        {"conversations": [{"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "a"}]},
        {"conversations": [{"from": "gpt", "value": "wrong order"}]},
        image_record("ok.png", answer="word " * 400),
        {"conversations": [{"from": "human", "value": "text only"}, {"from": "gpt", "value": "fine"}]},
        image_record("corrupt.png"),
    ]
    data = load_instruction_data(write(tmp_path, records), tmp_path, processor, max_length=800, max_num_visual_tokens=576)
    assert data.skipped == {
        "missing image file": 1,
        "image record without <image> in the first human turn": 1,
        "<image> without an image (or in a later turn)": 1,
        "conversation is not alternating human/gpt turns": 1,
        "longer than max_length=800": 1,
    }
    assert len(data.records) == 3  # ok, text-only, corrupt (caught when read)
    dataset = LazyImageDataset(data.records, processor.image_processor)
    corrupt_index = data.records["image"].index(str(tmp_path / "corrupt.png"))
    replacement = dataset[corrupt_index]
    assert replacement["skipped"] == ["corrupt image"]
    assert replacement["pixel_values"] is not None or replacement["input_ids"] == data.records[0]["input_ids"]
    collator = MatryoshkaLlavaDataCollator(processor.tokenizer.pad_token_id, processor.image_token_id)
    batch = collator([dataset[i] for i in range(len(dataset))])
    assert batch["skipped_records"] == {"corrupt image": 1}
    assert batch["pixel_values"].shape[0] == (batch["input_ids"] == processor.image_token_id).sum()


def test_collator_pads_and_can_expand_to_a_fixed_count(tmp_path):
    processor = tiny_processor()
    from instruction_data import write_colour_dataset

    data = load_instruction_data(write_colour_dataset(tmp_path, 3), tmp_path / "images", processor)
    dataset = LazyImageDataset(data.records, processor.image_processor)
    examples = [dataset[i] for i in range(3)]
    compact = MatryoshkaLlavaDataCollator(processor.tokenizer.pad_token_id, processor.image_token_id)(examples)
    expanded = MatryoshkaLlavaDataCollator(processor.tokenizer.pad_token_id, processor.image_token_id, 36)(examples)
    assert compact["pixel_values"].shape == (3, 3, 48, 48)
    assert (compact["input_ids"] == processor.image_token_id).sum(dim=1).tolist() == [1, 1, 1]
    assert (expanded["input_ids"] == processor.image_token_id).sum(dim=1).tolist() == [36, 36, 36]
    assert torch.equal(compact["labels"][compact["labels"] != -100], expanded["labels"][expanded["labels"] != -100])
    assert (compact["attention_mask"].sum(1) == torch.tensor([len(e["input_ids"]) for e in examples])).all()
