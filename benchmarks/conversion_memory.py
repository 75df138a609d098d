"""Peak memory of `matryoshka-llava convert` on a synthetic multi-GB sharded checkpoint.

Builds an original-format LLaVA-1.5 checkpoint (the heaviest path: CLIP tower inside, `<image>` / `<pad>` added,
embeddings resized with new rows drawn from their statistics) of --size-gb in --shard-gb safetensors shards, then
converts it to M3-LLaVA in a fresh process and reports that process's peak RSS (VmHWM) as

    peak RSS = fixed overhead + ratio x largest input shard

where the fixed overhead is the process's RSS just before the conversion starts (Python, torch, transformers and
this package imported). Target: ratio <= 1.5.

    python benchmarks/conversion_memory.py --size-gb 4 --shard-gb 1

The synthetic checkpoint and the converted copy live in a temporary folder (under --workdir) deleted at the end.
"""

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GIB = 2**30
HIDDEN, INTERMEDIATE, VOCAB = 2048, 5632, 32000
VISION = {"image_size": 336, "patch_size": 14, "hidden_size": 1024, "intermediate_size": 4096,
          "num_hidden_layers": 4, "num_attention_heads": 16}


def rss_bytes(field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of this process, from /proc."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def layer_shapes(index: int) -> dict:
    prefix = f"model.layers.{index}."
    shapes = {f"{prefix}self_attn.{name}.weight": (HIDDEN, HIDDEN) for name in ("q_proj", "k_proj", "v_proj", "o_proj")}
    shapes.update({f"{prefix}mlp.gate_proj.weight": (INTERMEDIATE, HIDDEN), f"{prefix}mlp.up_proj.weight": (INTERMEDIATE, HIDDEN),
                   f"{prefix}mlp.down_proj.weight": (HIDDEN, INTERMEDIATE)})
    shapes.update({f"{prefix}input_layernorm.weight": (HIDDEN,), f"{prefix}post_attention_layernorm.weight": (HIDDEN,)})
    return shapes


def vision_shapes() -> dict:
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel

    with torch.device("meta"):
        tower = CLIPVisionModel(CLIPVisionConfig(**VISION))
    return {f"model.vision_tower.vision_tower.vision_model.{name.removeprefix('vision_model.')}": tuple(value.shape)
            for name, value in tower.state_dict().items()}


def build_checkpoint(folder: Path, size_bytes: int, shard_bytes: int, fmt: str = "safetensors") -> tuple[int, int]:
    """Write the synthetic checkpoint; returns (number of shards, largest shard in bytes)."""
    import torch
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPVisionConfig, PreTrainedTokenizerFast

    folder.mkdir(parents=True)
    per_layer = sum(math.prod(shape) for shape in layer_shapes(0).values()) * 2
    fixed = (2 * VOCAB * HIDDEN + HIDDEN) * 2 + sum(math.prod(s) for s in vision_shapes().values()) * 2
    num_layers = max(1, round((size_bytes - fixed) / per_layer))
    shapes = {"model.embed_tokens.weight": (VOCAB, HIDDEN)}
    for index in range(num_layers):
        shapes.update(layer_shapes(index))
    shapes.update({"model.norm.weight": (HIDDEN,), "lm_head.weight": (VOCAB, HIDDEN),
                   "model.mm_projector.0.weight": (HIDDEN, VISION["hidden_size"]), "model.mm_projector.0.bias": (HIDDEN,),
                   "model.mm_projector.2.weight": (HIDDEN, HIDDEN), "model.mm_projector.2.bias": (HIDDEN,)})
    shapes.update(vision_shapes())

    generator = torch.Generator().manual_seed(0)
    block = (torch.randn(2**24, generator=generator) * 0.02).half()  # reused: drawing GBs of noise is slow
    shards, current, current_bytes, weight_map = [], {}, 0, {}

    stem, suffix = ("model", "safetensors") if fmt == "safetensors" else ("pytorch_model", "bin")

    def flush():
        nonlocal current, current_bytes
        name = f"{stem}-{len(shards) + 1:05d}-of-XXXXX.{suffix}"
        if fmt == "safetensors":
            save_file(current, folder / name, metadata={"format": "pt"})
        else:
            torch.save(current, folder / name)
        shards.append(name)
        weight_map.update(dict.fromkeys(current, name))
        current, current_bytes = {}, 0

    for name, shape in shapes.items():
        count = math.prod(shape)
        if name == "model.embed_tokens.weight":
            tensor = torch.randn(shape, generator=generator).half()
        elif len(shape) == 1:
            tensor = torch.ones(shape, dtype=torch.float16)
        else:
            tensor = block.repeat(math.ceil(count / block.numel()))[:count].reshape(shape).clone()  # own storage
        if current and current_bytes + 2 * count > shard_bytes:
            flush()
        current[name] = tensor
        current_bytes += 2 * count
    flush()
    final = [name.replace("XXXXX", f"{len(shards):05d}") for name in shards]
    for old, new in zip(shards, final):
        (folder / old).rename(folder / new)
    weight_map = {key: final[shards.index(value)] for key, value in weight_map.items()}
    (folder / f"{stem}.{suffix}.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))

    config = {"architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava_llama", "hidden_size": HIDDEN,
              "intermediate_size": INTERMEDIATE, "num_attention_heads": 16, "num_key_value_heads": 16,
              "num_hidden_layers": num_layers, "vocab_size": VOCAB, "rms_norm_eps": 1e-5, "max_position_embeddings": 4096,
              "torch_dtype": "float16", "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
              "mm_vision_tower": "openai/clip-vit-large-patch14-336", "mm_hidden_size": VISION["hidden_size"],
              "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
              "image_aspect_ratio": "pad", "mm_use_im_start_end": False, "mm_use_im_patch_token": False}
    (folder / "config.json").write_text(json.dumps(config))
    # A byte-level tokenizer with exactly VOCAB entries, like Vicuna's 32000 (so <image> and <pad> are new rows).
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for symbol in sorted(alphabet):
        vocab[symbol] = len(vocab)
    while len(vocab) < VOCAB:
        vocab[f"Ġtok{len(vocab)}"] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                        pad_token="<unk>")
    tokenizer.add_special_tokens({"bos_token": "<s>"})
    tokenizer.save_pretrained(folder)
    clip = folder.parent / "clip"
    clip.mkdir()
    (clip / "config.json").write_text(json.dumps(CLIPVisionConfig(**VISION).to_dict()))
    (clip / "preprocessor_config.json").write_text(json.dumps({"size": 336, "crop_size": 336, "resample": 3}))
    return len(final), max((folder / name).stat().st_size for name in final)


def measure_child(source: str, output: str, clip: str) -> None:
    """Runs in the fresh process: imports first, then the conversion; prints RSS figures as JSON."""
    from matryoshka_llava.conversion import convert_checkpoint

    before = rss_bytes("VmRSS")
    started = time.time()
    result = convert_checkpoint(source, output, to="m3", clip=clip, show_progress=False)
    print(json.dumps({"rss_before": before, "peak_rss": rss_bytes("VmHWM"), "seconds": time.time() - started,
                      "tensors": result.num_tensors, "output_shards": len(result.shard_files)}))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=4.0, help="checkpoint size in GiB (default 4)")
    parser.add_argument("--shard-gb", type=float, default=1.0, help="input shard size in GiB (default 1)")
    parser.add_argument("--format", choices=("safetensors", "bin"), default="safetensors",
                        help="input shard format (default safetensors; bin = pickled, loaded weights_only + mmap)")
    parser.add_argument("--workdir", default=tempfile.gettempdir(), help="where the temporary folder goes")
    parser.add_argument("--child", nargs=3, metavar=("SRC", "OUT", "CLIP"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        measure_child(*args.child)
        return 0

    root = Path(tempfile.mkdtemp(prefix="conversion-memory-", dir=args.workdir))
    try:
        print(f"Writing a synthetic {args.size_gb:g} GiB checkpoint in {args.shard_gb:g} GiB {args.format} shards "
              f"to {root} ...")
        num_shards, largest = build_checkpoint(root / "source", int(args.size_gb * GIB), int(args.shard_gb * GIB),
                                               args.format)
        total = sum(path.stat().st_size for path in (root / "source").glob(f"*.{args.format}"))
        child = subprocess.run([sys.executable, __file__, "--child", str(root / "source"), str(root / "converted"),
                                str(root / "clip")], capture_output=True, text=True, check=False)
        if child.returncode != 0:
            print(child.stderr[-3000:], file=sys.stderr)
            return 1
        report = json.loads(child.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(root, ignore_errors=True)

    overhead, peak = report["rss_before"], report["peak_rss"]
    ratio = (peak - overhead) / largest
    print(f"input: {total / GIB:.2f} GiB in {num_shards} shards, largest shard {largest / GIB:.3f} GiB")
    print(f"converted {report['tensors']} tensors into {report['output_shards']} shards in {report['seconds']:.1f} s")
    print(f"fixed overhead (RSS before converting): {overhead / GIB:.3f} GiB")
    print(f"peak RSS: {peak / GIB:.3f} GiB = {overhead / GIB:.3f} GiB + {ratio:.2f} x largest input shard")
    print(f"peak RSS / largest input shard: {peak / largest:.2f} (including the fixed overhead)")
    print(f"target: (peak RSS - fixed overhead) / largest input shard <= 1.5 -> {'met' if ratio <= 1.5 else 'NOT met'}")
    return 0 if ratio <= 1.5 else 2


if __name__ == "__main__":
    sys.exit(main())
