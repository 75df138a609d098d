"""Conversion of LLaVA-NeXT checkpoints (llava-hf, current and legacy layouts; the original format of the M3
release) to M3-LLaVA-NeXT: detection, outputs, the (width, height) pinpoints of the original format, logits of the
result loaded with trust_remote_code in a clean process against independent references, and clear errors."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from logit_checks import where_logits_differ
from next_checkpoints import (
    LLAVA_HF_CHAT_TEMPLATE,
    LLAVA_HF_PINPOINTS,
    ORIGINAL_PINPOINTS_WIDTH_HEIGHT,
    write_llava_hf_next_checkpoint,
    write_original_next_checkpoint,
)
from original_checkpoints import write_clip_checkpoint
from original_llava_next_reference import (
    IMAGE_TOKEN_INDEX,
    ReferenceLlavaNext,
    llava_hf_image_processor,
    llava_hf_next_reference_logits,
)
from PIL import Image
from safetensors import safe_open
from transformers import AutoTokenizer, LlavaNextForConditionalGeneration

from matryoshka_llava.conversion import ConversionError, convert_checkpoint, detect_source_format
from matryoshka_llava.conversion.checkpoint_weights import CheckpointWeights
from matryoshka_llava.cli import main as cli_main

CHECK_SCRIPT = Path(__file__).parent / "helpers" / "converted_next_logits_check.py"
REMOTE_PYTHON = os.environ.get("MATRYOSHKA_REMOTE_CODE_PYTHON", sys.executable)
SOURCE_FORMATS = {"llava_hf_next": "llava-hf-next", "llava_hf_next_legacy": "llava-hf-next", "m3_next": "m3-next"}
# (height, width) -> counts checked: wide and tall, neither the aspect ratio of a pinpoint, so un-padding removes
# rows or columns.
IMAGES = {(30, 110): [576, 1], (100, 41): [36]}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("next-sources")
    return {
        "clip": write_clip_checkpoint(root / "clip-vit"),
        "llava_hf_next": write_llava_hf_next_checkpoint(root / "llava-hf-next", layout="current"),
        "llava_hf_next_legacy": write_llava_hf_next_checkpoint(root / "llava-hf-next-legacy", layout="legacy",
                                                               dtype=torch.bfloat16, num_shards=1),
        "m3_next": write_original_next_checkpoint(root / "m3-next", "m3", dtype=torch.float16),
    }


@pytest.fixture(scope="module")
def converted(sources, tmp_path_factory):
    root = tmp_path_factory.mktemp("next-converted")
    return {
        name: convert_checkpoint(sources[name], root / name, to="m3", verify=True, max_shard_size="200KB",
                                 clip=sources["clip"] if name == "m3_next" else None, show_progress=False)
        for name in SOURCE_FORMATS
    }


def copy_source(sources, name, tmp_path) -> Path:
    return Path(shutil.copytree(sources[name], tmp_path / name))


def edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_next_sources_are_told_apart_from_llava_1_5(sources, tmp_path):
    for name, expected in SOURCE_FORMATS.items():
        config = json.loads((sources[name] / "config.json").read_text())
        assert detect_source_format(config, CheckpointWeights(sources[name]).keys()) == expected
    plain = json.loads((sources["m3_next"] / "config.json").read_text())
    del plain["matryoshka_vis_token_scale"]
    assert detect_source_format(plain, CheckpointWeights(sources["m3_next"]).keys()) == "llava-next"
    # The same original keys without the anyres settings and image_newline are LLaVA-1.5.
    keys = [key for key in CheckpointWeights(sources["m3_next"]).tensors if key != "model.image_newline"]
    flat = {**plain, "image_aspect_ratio": "pad", "mm_patch_merge_type": "flat", "image_grid_pinpoints": None}
    assert detect_source_format(flat, keys) == "llava"


def test_converted_folders_are_complete_m3_llava_next_checkpoints(sources, converted):
    for name, result in converted.items():
        folder = result.output
        assert result.source_format == SOURCE_FORMATS[name] and result.target_model == "M3-LLaVA-NeXT"
        assert set(result.verification.max_abs_diff) == {"text", "k=1", "k=36", "k=576"}
        names = {path.name for path in folder.iterdir()}
        assert not any(entry.endswith((".bin", ".pt", ".pth")) for entry in names)
        assert {"modeling_m3_llava_next.py", "processing_matryoshka_llava_next.py", "video_collage.py",
                "image_processing_matryoshka_llava_next.py", "chat_template.jinja", "generation_config.json"} <= names
        config = json.loads((folder / "config.json").read_text())
        assert config["model_type"] == "m3_llava_next" and config["matryoshka_scales"] == [1, 9, 36, 144, 576]
        assert config["auto_map"]["AutoModelForImageTextToText"] == (
            "modeling_m3_llava_next.M3LlavaNextForConditionalGeneration")
        processor_config = json.loads((folder / "processor_config.json").read_text())
        assert processor_config["auto_map"]["AutoProcessor"] == (
            "processing_matryoshka_llava_next.MatryoshkaLlavaNextProcessor")
        preprocessor = processor_config["image_processor"]
        assert preprocessor["image_grid_pinpoints"] == config["image_grid_pinpoints"]
        assert preprocessor["crop_size"] == {"height": 48, "width": 48}
        card = (folder / "README.md").read_text()
        assert "**M3-LLaVA-NeXT**" in card and f"Source checkpoint: `{sources[name].name}`" in card
        assert str(sources[name].parent) not in card
        assert not list(folder.parent.glob(f".{folder.name}.partial-*"))
    # llava-hf pinpoints are (height, width) already; the original format's (width, height) pairs are swapped.
    assert json.loads((converted["llava_hf_next"].output / "config.json").read_text())["image_grid_pinpoints"] == (
        LLAVA_HF_PINPOINTS)
    original = json.loads((converted["m3_next"].output / "config.json").read_text())
    assert original["image_grid_pinpoints"] == [[height, width] for width, height in ORIGINAL_PINPOINTS_WIDTH_HEIGHT]
    assert len(converted["m3_next"].shard_files) > 1


def stored(folder: Path, name: str) -> torch.Tensor:
    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), "pt") as file:
            if name in file.keys():  # noqa: SIM118 (a safetensors handle)
                return file.get_tensor(name)
    raise KeyError(name)


def test_tokens_newline_dtype_and_chat_template(sources, converted):
    release = converted["m3_next"].output
    assert converted["m3_next"].added_tokens == ["<image>", "<pad>"]
    tokenizer = AutoTokenizer.from_pretrained(release)
    assert tokenizer.convert_tokens_to_ids("<image>") == 300 and tokenizer.pad_token_id == 301
    assert json.loads((release / "config.json").read_text())["text_config"]["vocab_size"] == 320
    newline = CheckpointWeights(sources["m3_next"]).load(["model.image_newline"])["model.image_newline"]
    assert newline.dtype == torch.float16 and torch.equal(stored(release, "model.image_newline"), newline)
    assert stored(converted["llava_hf_next_legacy"].output, "model.image_newline").dtype == torch.bfloat16
    # llava-hf LLaVA-NeXT keeps the chat template it ships; the original format gets vicuna_v1.
    assert (converted["llava_hf_next"].output / "chat_template.jinja").read_text() == LLAVA_HF_CHAT_TEMPLATE
    assert (release / "chat_template.jinja").read_text().startswith("{%- macro render")


def test_converted_models_load_as_remote_code_and_match_the_references(sources, converted, tmp_path):
    """A clean interpreter (package unimportable) processes each image with the converted folder's processor and
    runs its model at several k; the references preprocess the same image their own way (original anyres with
    (width, height) pinpoints; transformers' LlavaNextImageProcessorPil) and compute the source model."""
    rng = np.random.default_rng(0)
    images = []
    for index, (height, width) in enumerate(IMAGES):
        path = tmp_path / f"image-{index}.png"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        images.append(path)
    # The legacy layout converts to the same model (its --verify against transformers ran in the fixture).
    checked = {name: converted[name] for name in ("llava_hf_next", "m3_next")}
    spec = [{"folder": str(result.output), "images": [str(path) for path in images], "counts": list(IMAGES.values())}
            for result in checked.values()]
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    result = subprocess.run([REMOTE_PYTHON, str(CHECK_SCRIPT), str(tmp_path / "spec.json"), str(tmp_path / "out.pt")],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = torch.load(tmp_path / "out.pt")

    grids = {}
    for name, conversion in checked.items():
        entry = report[str(conversion.output)]
        assert all(module.startswith("transformers_modules.") for module in entry["modules"]), entry["modules"]
        if name == "m3_next":
            reference = ReferenceLlavaNext(sources[name], sources["clip"])
            assert entry["prompt"].startswith("A chat between a curious user")
        else:
            reference = LlavaNextForConditionalGeneration.from_pretrained(sources[name], dtype=torch.float32).eval()
            image_processor = llava_hf_image_processor(sources[name])
            assert entry["prompt"].startswith("USER: <image>\n")
        for path, outputs in zip(images, entry["images"]):
            image = Image.open(path).convert("RGB")
            ids = [IMAGE_TOKEN_INDEX if token == entry["image_token_id"] else token for token in outputs["input_ids"]]
            assert ids.count(IMAGE_TOKEN_INDEX) == 1
            assert outputs["image_sizes"] == [list(image.size[::-1])]
            grids[name, image.size] = tuple(outputs["image_grid_shapes"][0])
            for count, logits in outputs["logits"].items():
                assert logits.shape[0] == len(ids) - 1 + outputs["predicted_tokens"][count]
                if name == "m3_next":
                    expected = reference.logits(ids, image, count)
                else:
                    expected = llava_hf_next_reference_logits(reference, image_processor, ids, image, count)
                # Across processes: at most 3.8e-6 in repeated runs (see test_conversion.py).
                torch.testing.assert_close(logits[:, : expected.shape[1]], expected, rtol=1e-5, atol=1e-5,
                                           msg=lambda message, name=name, count=count, got=logits, want=expected:
                                           f"{name} k={count}: {message}\n"
                                           f"{where_logits_differ(got[:, : want.shape[1]], want)}")
    # Wide pinpoints only in the original release, tall ones only in the llava-hf source.
    assert grids["m3_next", (110, 30)] == (1, 3) and grids["m3_next", (41, 100)] == (2, 2)
    assert grids["llava_hf_next", (110, 30)] == (2, 2) and grids["llava_hf_next", (41, 100)] == (3, 1)


def test_mqt_target_and_mismatched_formats_are_refused(sources, tmp_path):
    for name in ("llava_hf_next", "m3_next"):
        with pytest.raises(ConversionError, match="MQT-LLaVA is LLaVA-1.5 only: convert it with --to m3"):
            convert_checkpoint(sources[name], tmp_path / "out", to="mqt", clip=sources["clip"] if name == "m3_next"
                               else None, show_progress=False)
    with pytest.raises(ConversionError, match="--from llava-hf was given, but the source looks like a llava-hf-next"):
        convert_checkpoint(sources["llava_hf_next"], tmp_path / "out", to="m3", source_format="llava-hf",
                           show_progress=False)
    with pytest.raises(ConversionError, match="--from m3 was given, but the source looks like a m3-next"):
        convert_checkpoint(sources["m3_next"], tmp_path / "out", to="m3", source_format="m3", clip=sources["clip"],
                           show_progress=False)
    assert not (tmp_path / "out").exists()


def test_released_m3_next_can_be_converted_as_plain_llava_next_from_the_cli(sources, tmp_path, capsys):
    out = tmp_path / "plain"
    code = cli_main(["convert", str(sources["m3_next"]), str(out), "--to", "m3", "--from", "llava-next",
                     "--clip", str(sources["clip"]), "--no-progress"])
    assert code == 0
    assert "(llava-next) to M3-LLaVA-NeXT" in capsys.readouterr().out
    assert "the original LLaVA-NeXT format" in (out / "README.md").read_text()


def rewrite_newline(folder: Path, value) -> None:
    """Replace (or with None remove) `model.image_newline` in its shard and fix the index to match."""
    from safetensors.torch import load_file, save_file

    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    shard = folder / index["weight_map"]["model.image_newline"]
    state = load_file(shard)
    if value is None:
        del state["model.image_newline"]
        del index["weight_map"]["model.image_newline"]
    else:
        state["model.image_newline"] = value
    save_file(state, shard, metadata={"format": "pt"})
    index_path.write_text(json.dumps(index))


@pytest.mark.parametrize("edit, message", [
    (None, r"missing \(1\): model\.image_newline"),
    (torch.zeros(40, dtype=torch.float16),
     r"wrong shape \(1\): model\.image_newline -> model\.image_newline: \[40\], expected \[48\]"),
])
def test_missing_or_misshaped_image_newline_is_listed(sources, tmp_path, edit, message):
    source = copy_source(sources, "m3_next", tmp_path)
    rewrite_newline(source, edit)
    with pytest.raises(ConversionError, match=message):
        convert_checkpoint(source, tmp_path / "out", to="m3", clip=sources["clip"], show_progress=False)
    assert not (tmp_path / "out").exists()


def test_unexpected_tensor_of_a_llava_hf_next_source_is_listed(sources, tmp_path):
    from safetensors.torch import save_file

    source = copy_source(sources, "llava_hf_next_legacy", tmp_path)
    save_file({"image_newline_extra.weight": torch.zeros(2)}, source / "extra.safetensors")
    index_path = source / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["image_newline_extra.weight"] = "extra.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(ConversionError, match=r"unexpected \(1\): image_newline_extra\.weight"):
        convert_checkpoint(source, tmp_path / "out", to="m3", show_progress=False)


def test_unsupported_or_inconsistent_next_settings_are_named(sources, tmp_path):
    original = copy_source(sources, "m3_next", tmp_path)
    config_path = original / "config.json"
    config = json.loads(config_path.read_text())

    def refused(source, match, **kwargs):
        with pytest.raises(ConversionError, match=match):
            convert_checkpoint(source, tmp_path / "out", to="m3", show_progress=False, **kwargs)

    edit_json(config_path, mm_patch_merge_type="flat")
    refused(original, "mm_patch_merge_type='flat'.*spatial_unpad", clip=sources["clip"])
    edit_json(config_path, mm_patch_merge_type="spatial_unpad", image_grid_pinpoints=[[96, 50]])
    refused(original, r"image_grid_pinpoints holds \[50, 96\].*multiples of the crop size 48", clip=sources["clip"])
    edit_json(config_path, image_grid_pinpoints="(1x1),...,(3x3)")
    refused(original, "range form", clip=sources["clip"])
    edit_json(config_path, image_grid_pinpoints=None)
    refused(original, "needs image_grid_pinpoints", clip=sources["clip"])
    config_path.write_text(json.dumps(config))

    llava_hf = copy_source(sources, "llava_hf_next_legacy", tmp_path)
    edit_json(llava_hf / "preprocessor_config.json", image_grid_pinpoints=[[96, 96]])
    refused(llava_hf, "config.json and image processor config disagree on image_grid_pinpoints")
    edit_json(llava_hf / "config.json", model_type="llava_next_video")
    refused(llava_hf, "video and OneVision variants are not")
    edit_json(llava_hf / "config.json", model_type="llava_next", vision_feature_select_strategy="full")
    refused(llava_hf, "keeps the CLS token")


def test_original_next_source_without_its_tower_is_refused(sources, tmp_path):
    source = write_original_next_checkpoint(tmp_path / "no-tower", "llava", num_shards=1)
    from safetensors.torch import load_file, save_file

    shard = next(source.glob("model-*.safetensors"))
    state = {key: value for key, value in load_file(shard).items() if not key.startswith("model.vision_tower.")}
    save_file(state, shard, metadata={"format": "pt"})
    (source / "model.safetensors.index.json").write_text(json.dumps({"weight_map": dict.fromkeys(state, shard.name)}))
    with pytest.raises(ConversionError, match="LLaVA-NeXT fine-tunes its CLIP tower"):
        convert_checkpoint(source, tmp_path / "out", to="m3", clip=sources["clip"], show_progress=False)
