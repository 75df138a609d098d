"""Load a checkpoint for evaluation: M3 / MQT folders as they are, plain LLaVA with a training-free reduction.

A plain LLaVA-1.5 checkpoint (model_type "llava") has the state-dict keys of `M3LlavaForConditionalGeneration`, so
it loads into it with an `M3LlavaConfig` whose `visual_token_reduction` is the chosen training-free baseline of the
M3 paper (Table 4): the same weights, with the visual tokens average-pooled, spatially or sequentially sampled.
"""

import os

import torch
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

from modeling_matryoshka_llava import (
    M3LlavaConfig,
    M3LlavaForConditionalGeneration,
    MatryoshkaLlavaImageProcessor,
    MatryoshkaLlavaProcessor,
)

from .baselines import BASELINES

MATRYOSHKA_MODEL_TYPES = ("m3_llava", "mqt_llava")


def check_baseline(baseline: str | None) -> None:
    if baseline is not None and baseline not in BASELINES:
        raise ValueError(f"Unknown baseline {baseline!r}; expected one of {BASELINES}.")


def _resolve_dtype(dtype) -> torch.dtype | str:
    if dtype is None or dtype == "auto":
        return "auto"
    if isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"Unknown dtype {dtype!r}; use e.g. float32, bfloat16, float16 or auto.")
    return resolved


def load_model_for_eval(
    path: str | os.PathLike,
    baseline: str | None = None,
    *,
    device: str | torch.device | None = None,
    dtype=None,
    trust_remote_code: bool = False,
):
    """(model, processor) ready for `evaluate`, in eval mode on `device` (default: this process's accelerator).

    - M3 / MQT checkpoints load as they are; `baseline` on an M3 model swaps its pooling for a sampling baseline.
    - A plain LLaVA-1.5 (model_type "llava") needs a `baseline` (average_pooling, spatial_sampling,
      sequential_sampling): its full-grid count is then exactly the original model.
    Raises ValueError for an unknown baseline, a baseline on MQT, a plain LLaVA without one, or an unreachable Hub.
    """
    from .distributed import distributed_state

    path = os.fspath(path)
    config = load_eval_config(path, baseline, trust_remote_code)
    torch_dtype = _resolve_dtype(dtype)
    if config.model_type == "llava":
        model = _plain_llava_as_m3(path, config, baseline, torch_dtype, trust_remote_code)
    else:
        overrides = {"visual_token_reduction": baseline} if baseline is not None else {}
        model = AutoModelForImageTextToText.from_pretrained(
            path, dtype=torch_dtype, trust_remote_code=trust_remote_code, **overrides
        )
    target = torch.device(device) if device is not None else distributed_state().device
    model = model.to(target).eval()
    # Recorded on the module (not the config, which a later save_pretrained would write) for `evaluate`'s results.
    model.training_free_baseline = baseline
    return model, load_processor_for_eval(path, trust_remote_code=trust_remote_code)


def load_eval_config(path: str | os.PathLike, baseline: str | None = None, trust_remote_code: bool = False):
    """The checkpoint's config, read alone (no weights), after the checks `load_model_for_eval` makes: a known
    model type, and a baseline where (and only where) one applies. Commands check counts against it before any
    model is loaded."""
    check_baseline(baseline)
    path = os.fspath(path)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as error:
        raise ValueError(
            f"Could not load a model config from {path!r} ({error}). Give a local checkpoint folder, or a Hub id "
            "while the Hub is reachable."
        ) from error
    if config.model_type == "llava":
        if baseline is None:
            raise ValueError(
                f"{path} is a plain LLaVA (model_type 'llava'), which was not trained to use fewer visual tokens: "
                f"choose a training-free baseline {BASELINES} to reduce them (its full-grid count is the original "
                "model)."
            )
    elif config.model_type in MATRYOSHKA_MODEL_TYPES:
        if baseline is not None and config.model_type != "m3_llava":
            raise ValueError(
                f"The training-free baselines reduce a grid of visual tokens; {config.model_type} models choose their "
                "tokens with learned queries instead, so `baseline` does not apply."
            )
    else:
        raise ValueError(
            f"{path} has model_type {config.model_type!r}; evaluation supports {MATRYOSHKA_MODEL_TYPES} and plain "
            "'llava' checkpoints (convert others with `matryoshka-llava convert`)."
        )
    return config


def _plain_llava_as_m3(path: str, config, baseline: str, torch_dtype, trust_remote_code: bool):
    """transformers' own loader reads the checkpoint (any of its key layouts); its tensors then move, uncopied,
    into an M3 model built on the meta device with the same config and the chosen reduction."""
    from transformers import LlavaForConditionalGeneration

    llava = LlavaForConditionalGeneration.from_pretrained(path, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    fields = {key: value for key, value in config.to_dict().items()
              if key not in ("model_type", "architectures", "auto_map", "transformers_version")}
    m3_config = M3LlavaConfig(**fields, visual_token_reduction=baseline)
    m3_config._name_or_path = config._name_or_path
    with torch.device("meta"):
        model = M3LlavaForConditionalGeneration(m3_config)
    model.load_state_dict(llava.state_dict(), strict=True, assign=True)
    for name, buffer in llava.named_buffers():  # non-persistent buffers (rotary frequencies) are not in the state dict
        module_name, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(module_name), attribute, buffer)
    model.generation_config = llava.generation_config
    return model.to(llava.dtype)


def load_processor_for_eval(path: str, trust_remote_code: bool = False) -> MatryoshkaLlavaProcessor:
    """The checkpoint's processor; a transformers `LlavaProcessor` (which expands `<image>` to a fixed 576) is
    rebuilt as a `MatryoshkaLlavaProcessor` with the same tokenizer and LLaVA-1.5's pad-to-square preprocessing."""
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    if isinstance(processor, MatryoshkaLlavaProcessor) or type(processor).__name__ == "MatryoshkaLlavaProcessor":
        return processor
    image_processor = getattr(processor, "image_processor", None)
    tokenizer = getattr(processor, "tokenizer", None) or AutoTokenizer.from_pretrained(path)
    if image_processor is None:
        raise ValueError(f"{path} has no image processor.")
    return MatryoshkaLlavaProcessor(
        image_processor=_as_pad_image_processor(image_processor),
        tokenizer=tokenizer,
        image_token=getattr(processor, "image_token", "<image>"),
    )


def _as_pad_image_processor(image_processor) -> MatryoshkaLlavaImageProcessor:
    def as_dict(size) -> dict:
        if size is None:
            return {}
        items = size.items() if hasattr(size, "items") else vars(size).items()
        return {key: value for key, value in items if value is not None}

    size = as_dict(getattr(image_processor, "size", None))
    crop = as_dict(getattr(image_processor, "crop_size", None))
    shortest = size.get("shortest_edge") or min(size.values())
    return MatryoshkaLlavaImageProcessor(
        size={"shortest_edge": shortest},
        crop_size={"height": crop.get("height", shortest), "width": crop.get("width", shortest)},
        image_mean=list(image_processor.image_mean),
        image_std=list(image_processor.image_std),
    )
