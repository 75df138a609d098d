"""`convert_checkpoint`: a LLaVA-1.5 or LLaVA-NeXT checkpoint (llava-hf or original) or a released M3 / MQT
checkpoint -> a folder that loads with `AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)`.
LLaVA-NeXT sources become M3-LLaVA-NeXT (`--to m3`); MQT exists for LLaVA-1.5 only.

Steps: resolve the source (local or Hub), inventory its tensors from shard headers, detect its format, assemble
tokenizer / config / processor, plan every output tensor and check the plan against the model's state dict, then
stream shard by shard into a temporary folder next to OUT, write the model card, optionally verify logits, and
rename into place. Optionally push the result.
"""

from dataclasses import dataclass
from pathlib import Path

import torch

from modeling_matryoshka_llava import (
    M3LlavaForConditionalGeneration,
    M3LlavaNextForConditionalGeneration,
    MQTLlavaForConditionalGeneration,
)

from .atomic_output import AtomicOutputFolder, check_output_path
from .checkpoint_weights import CheckpointWeights
from .conversion_card import write_conversion_card
from .conversion_plan import plan_conversion
from .errors import ConversionError
from .model_files import save_config_and_code
from .safetensors_writer import write_sharded_safetensors
from .source_files import read_json, resolve_checkpoint
from .source_formats import DTYPE_NAMES, check_target, resolve_source_format, target_model_name
from .source_model import describe_source
from .target_config import build_target_config
from .tokenizer_assembly import assemble_tokenizer, build_processor
from .verification import VerificationReport, verify_conversion

MODEL_CLASSES = {"m3": M3LlavaForConditionalGeneration, "mqt": MQTLlavaForConditionalGeneration}
NEXT_MODEL_CLASSES = {"m3": M3LlavaNextForConditionalGeneration}
DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}


@dataclass
class ConversionResult:
    output: Path
    source_format: str
    target: str
    target_model: str  # M3-LLaVA, M3-LLaVA-NeXT or MQT-LLaVA
    num_tensors: int
    shard_files: list[str]
    added_tokens: list[str]
    verification: VerificationReport | None = None
    pushed_to: str | None = None


def parse_dtype(dtype) -> torch.dtype | None:
    """None for "auto" (keep each tensor's stored dtype)."""
    if dtype is None or dtype == "auto":
        return None
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in DTYPES:
        return DTYPES[dtype.removeprefix("torch.")]
    raise ConversionError(f"Unsupported dtype {dtype!r}: use auto, {', '.join(DTYPES)}.")


def convert_checkpoint(
    src: str | Path,
    out: str | Path,
    to: str,
    source_format: str = "auto",
    clip: str | Path | None = None,
    dtype: str | torch.dtype = "auto",
    verify: bool = False,
    push_to_hub: str | None = None,
    force: bool = False,
    *,
    max_shard_size: int | str = "5GB",
    base_model: str | None = None,
    license: str | None = None,
    show_progress: bool = True,
) -> ConversionResult:
    """Convert `src` (a local folder or Hub repo id) into an M3-LLaVA (`to="m3"`) or MQT-LLaVA (`to="mqt"`) folder
    `out`; a LLaVA-NeXT source becomes M3-LLaVA-NeXT (`to="m3"`).

    Args:
        source_format: "auto" (detect) or one of "llava-hf", "llava", "m3", "mqt" (LLaVA-1.5) and
            "llava-hf-next", "llava-next", "m3-next" (LLaVA-NeXT).
        clip: CLIP checkpoint (folder or Hub id) for original-format sources: their vision config and image
            preprocessing, and the tower weights when the checkpoint holds none. Defaults to `mm_vision_tower`.
        dtype: "auto" keeps every tensor's stored dtype; "bfloat16" / "float16" / "float32" casts floating tensors.
        verify: compare logits with the source model (see `verification`) before the output is moved into place.
        push_to_hub: a repo id to upload the finished folder to (see `model_cards.push_checkpoint`).
        force: replace an existing `out` (only once the new one is complete).
        max_shard_size: largest output shard, e.g. "5GB".
        base_model / license: model-card metadata; default to the source's Hub id and its card's license.

    Raises:
        ConversionError (VerificationError for a failed `verify`) naming the problem; `out` is then left untouched.
    """
    if to not in MODEL_CLASSES:
        raise ConversionError(f"Unknown target {to!r}: use m3 or mqt.")
    requested_dtype = parse_dtype(dtype)
    out = Path(out)
    local_inputs = [Path(path) for path in (src, clip) if path is not None and Path(path).exists()]
    check_output_path(out, force, local_inputs)  # fail before any download or reading

    folder = resolve_checkpoint(src, "source checkpoint")
    config = read_json(folder / "config.json", f"config.json of {src}")
    weights = CheckpointWeights(folder)
    detected = resolve_source_format(source_format, config, weights.keys())
    check_target(detected, to)
    source = describe_source(str(src), folder, detected, config, weights, None if clip is None else str(clip))
    tokens = assemble_tokenizer(source)
    model_class = (NEXT_MODEL_CLASSES if source.is_llava_next else MODEL_CLASSES)[to]
    target_config = build_target_config(source, to, tokens, requested_dtype)
    plan = plan_conversion(source, to, model_class, target_config, requested_dtype)
    processor = build_processor(source, tokens.tokenizer)
    processor.set_model_counts(target_config)  # an invalid count is then refused by the processor as by the model

    protected = [folder] + ([source.clip.folder] if source.clip is not None else [])
    atomic = AtomicOutputFolder(out, force, protected)
    with atomic as staging:
        save_config_and_code(staging, model_class, target_config)
        shard_files = write_sharded_safetensors(staging, plan, max_shard_size, show_progress)
        processor.save_pretrained(staging)
        write_conversion_card(staging, source, to, out_path=str(out), repo_id=push_to_hub, base_model=base_model,
                              license=license)
        report = verify_conversion(staging, source, model_class) if verify else None
        atomic.commit()
    result = ConversionResult(out, detected, to, target_model_name(detected, to), len(plan), shard_files,
                              tokens.added_tokens, report)
    if push_to_hub:
        from matryoshka_llava.model_cards import push_checkpoint

        push_checkpoint(out, push_to_hub)
        result.pushed_to = push_to_hub
    return result
