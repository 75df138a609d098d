"""Conversion refuses bad input with an error naming the problem, and never leaves a partial OUT behind."""

import json

import pytest
import torch
from original_checkpoints import write_clip_checkpoint, write_llava_hf_checkpoint, write_original_checkpoint
from safetensors.torch import load_file, save_file

from matryoshka_llava.conversion import ConversionError, VerificationError, convert_checkpoint


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip_checkpoint(tmp_path_factory.mktemp("clip") / "clip")


@pytest.fixture
def llava(tmp_path):
    return write_original_checkpoint(tmp_path / "llava", "llava", with_tower=True)


def convert(src, out, **kwargs):
    kwargs.setdefault("to", "m3")
    return convert_checkpoint(src, out, show_progress=False, **kwargs)


def leftovers(parent):
    return sorted(path.name for path in parent.iterdir() if path.name.startswith("."))


def rewrite_shard(folder, edit):
    """Apply `edit(state)` to the shard holding the projector and fix the index to match."""
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    shard = folder / index["weight_map"]["model.mm_projector.0.weight"]
    state = load_file(shard)
    edit(state)
    save_file(state, shard, metadata={"format": "pt"})
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if v != shard.name or k in state}
    index["weight_map"].update(dict.fromkeys(state, shard.name))
    index_path.write_text(json.dumps(index))


def test_truncated_safetensors_shard_is_named(llava, clip, tmp_path):
    shard = sorted(llava.glob("model-*.safetensors"))[1]
    shard.write_bytes(shard.read_bytes()[:-1000])
    with pytest.raises(ConversionError, match=rf"{shard.name}.*truncated or corrupt"):
        convert(llava, tmp_path / "out", clip=clip)
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path)


def test_truncated_bin_shard_is_named(tmp_path, clip):
    source = write_original_checkpoint(tmp_path / "llava-bin", "llava", fmt="bin")
    shard = min(source.glob("pytorch_model-*.bin"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(ConversionError, match=rf"{shard.name}.*truncated or corrupt"):
        convert(source, tmp_path / "out", clip=clip)
    assert not (tmp_path / "out").exists()


def test_pickle_with_objects_other_than_tensors_is_refused(tmp_path, clip):
    source = write_original_checkpoint(tmp_path / "llava-bin", "llava", fmt="bin", num_shards=1)
    shard = next(source.glob("pytorch_model-*.bin"))
    state = torch.load(shard, weights_only=True)
    state["optimizer_step"] = 3
    torch.save(state, shard)
    with pytest.raises(ConversionError, match="not a flat state dict of tensors"):
        convert(source, tmp_path / "out", clip=clip)


def test_missing_tensor_is_listed(llava, clip, tmp_path):
    rewrite_shard(llava, lambda state: state.pop("model.mm_projector.2.bias"))
    with pytest.raises(ConversionError, match=r"missing \(1\): model\.multi_modal_projector\.linear_2\.bias"):
        convert(llava, tmp_path / "out", clip=clip)
    assert not (tmp_path / "out").exists()


def test_index_listing_a_tensor_its_shard_lacks_is_refused(llava, clip, tmp_path):
    index_path = llava / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["model.layers.9.mlp.up_proj.weight"] = next(iter(index["weight_map"].values()))
    index_path.write_text(json.dumps(index))
    with pytest.raises(ConversionError, match=r"shards do not hold.*model\.layers\.9\.mlp\.up_proj\.weight"):
        convert(llava, tmp_path / "out", clip=clip)


def test_wrong_shape_is_listed_with_both_shapes(llava, clip, tmp_path):
    def widen(state):
        state["model.mm_projector.2.weight"] = torch.zeros(48, 50, dtype=torch.float16)

    rewrite_shard(llava, widen)
    with pytest.raises(ConversionError, match=r"wrong shape \(1\): model\.mm_projector\.2\.weight -> "
                                              r"model\.multi_modal_projector\.linear_2\.weight: \[48, 50\], expected \[48, 48\]"):
        convert(llava, tmp_path / "out", clip=clip)


def test_unexpected_tensors_are_listed(llava, clip, tmp_path):
    def add(state):
        state["model.mm_projector.4.weight"] = torch.zeros(2, dtype=torch.float16)
        state["model.some_adapter.weight"] = torch.zeros(2, dtype=torch.float16)

    rewrite_shard(llava, add)
    with pytest.raises(ConversionError, match=r"unexpected \(2\): model\.mm_projector\.4\.weight, model\.some_adapter"):
        convert(llava, tmp_path / "out", clip=clip)


@pytest.mark.parametrize("interruption", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_interrupted_run_leaves_no_output(llava, clip, tmp_path, monkeypatch, interruption):
    import matryoshka_llava.conversion.safetensors_writer as writer

    written = []
    real_write = writer.write_tensor_bytes

    def write_then_fail(file, tensor):
        if len(written) == 20:
            raise interruption
        written.append(tensor.shape)
        real_write(file, tensor)

    monkeypatch.setattr(writer, "write_tensor_bytes", write_then_fail)
    with pytest.raises(type(interruption)):
        convert(llava, tmp_path / "out", clip=clip, max_shard_size="50KB")
    assert len(written) == 20
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path)


def test_existing_output_needs_force_and_is_replaced_only_when_complete(llava, clip, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    with pytest.raises(ConversionError, match="already exists: pass --force"):
        convert(llava, out, clip=clip)
    assert (out / "keep.txt").read_text() == "old"

    import matryoshka_llava.conversion.safetensors_writer as writer

    def fail(*args):
        raise RuntimeError("interrupted")

    with monkeypatch.context() as patch:
        patch.setattr(writer, "write_tensor_bytes", fail)
        with pytest.raises(RuntimeError):
            convert(llava, out, clip=clip, force=True)
    assert (out / "keep.txt").read_text() == "old"  # a failed forced run keeps the old output

    convert(llava, out, clip=clip, force=True)
    assert not (out / "keep.txt").exists() and (out / "config.json").is_file()
    assert not leftovers(tmp_path)


def test_output_inside_or_equal_to_the_source_is_refused(llava, clip):
    with pytest.raises(ConversionError, match="would overwrite the input"):
        convert(llava, llava, clip=clip, force=True)
    with pytest.raises(ConversionError, match="would overwrite the input"):
        convert(llava, llava.parent, clip=clip, force=True)


def test_failed_verification_leaves_no_output(llava, clip, tmp_path, monkeypatch):
    from matryoshka_llava.conversion.conversion_plan import PlannedTensor

    real_produce = PlannedTensor.produce

    def corrupt(self, reader):
        tensor = real_produce(self, reader)
        return tensor.flip(0) if self.name == "model.multi_modal_projector.linear_1.weight" else tensor

    monkeypatch.setattr(PlannedTensor, "produce", corrupt)
    with pytest.raises(VerificationError, match=r"original LLaVA computation: k=1: max abs diff"):
        convert(llava, tmp_path / "out", clip=clip, verify=True)
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path)


def test_released_m3_without_its_tower_is_refused(tmp_path, clip):
    source = write_original_checkpoint(tmp_path / "m3", "m3", with_tower=False, num_shards=1)
    with pytest.raises(ConversionError, match="never taken from stock CLIP"):
        convert(source, tmp_path / "out", clip=clip)


def test_incompatible_target_and_format_are_refused(tmp_path, clip):
    mqt = write_original_checkpoint(tmp_path / "mqt", "mqt", with_tower=False, num_shards=1)
    with pytest.raises(ConversionError, match="converts to --to mqt only"):
        convert(mqt, tmp_path / "out", clip=clip, to="m3")
    with pytest.raises(ConversionError, match="looks like a mqt checkpoint"):
        convert(mqt, tmp_path / "out", clip=clip, to="mqt", source_format="llava-hf")
    hf = write_llava_hf_checkpoint(tmp_path / "hf", num_shards=1)
    with pytest.raises(ConversionError, match="--clip applies to original-format sources"):
        convert(hf, tmp_path / "out", clip=clip)


def test_half_llava_next_and_converted_sources_are_refused(tmp_path, clip):
    source = write_original_checkpoint(tmp_path / "next", "llava", num_shards=1)
    config = json.loads((source / "config.json").read_text())
    # anyres without LLaVA-NeXT's spatial_unpad merge (tests/test_next_conversion.py converts real NeXT sources)
    (source / "config.json").write_text(json.dumps({**config, "image_aspect_ratio": "anyres"}))
    with pytest.raises(ConversionError, match="Unsupported LLaVA-NeXT settings.*mm_patch_merge_type='flat'"):
        convert(source, tmp_path / "out", clip=clip)
    for model_type in ("m3_llava", "m3_llava_next"):
        (source / "config.json").write_text(json.dumps({**config, "model_type": model_type}))
        with pytest.raises(ConversionError, match="already a matryoshka-llava checkpoint"):
            convert(source, tmp_path / "out", clip=clip)


def test_folder_without_weights_is_named(tmp_path, clip):
    source = write_original_checkpoint(tmp_path / "src", "llava", num_shards=1)
    for path in source.glob("model*"):
        path.unlink()
    (source / "mm_projector.bin").write_bytes(b"")
    with pytest.raises(ConversionError, match=r"No model weights in .*found only mm_projector\.bin"):
        convert(source, tmp_path / "out", clip=clip)
