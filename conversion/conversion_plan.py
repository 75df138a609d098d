"""The list of tensors the converted checkpoint will hold, where each comes from, and the check that it is
exactly the model's state dict: any missing, unexpected or mis-shaped tensor stops the run with the full list."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import LlavaConfig, LlavaNextConfig

from modeling_matryoshka_llava.token_reducers import MatryoshkaQueryTransformer

from .checkpoint_weights import list_examples
from .embedding_rows import EmbeddingRowSampler, append_rows
from .errors import ConversionError
from .key_mapping import map_clip_keys, map_llava_hf_keys, map_original_keys
from .source_formats import LLAVA_HF_FORMATS, target_model_name
from .source_model import SourceModel
from .tensor_readers import open_shard

INPUT_EMBEDDINGS = "model.language_model.embed_tokens.weight"
OUTPUT_EMBEDDINGS = "lm_head.weight"


@dataclass
class PlannedTensor:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    file: Path | None = None  # the shard it is read from; None for a tensor created here
    source_key: str | None = None
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    value: torch.Tensor | None = None  # a tensor created here

    def produce(self, reader) -> torch.Tensor:
        tensor = self.value if self.file is None else reader.get(self.source_key)
        if self.transform is not None:
            tensor = self.transform(tensor)
        return tensor.to(self.dtype)


def expected_tensors(model_class, config) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the model's state dict, from a meta-device instance (no memory, no initialisation)."""
    with torch.device("meta"):
        model = model_class(config)
    shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    if model.get_output_embeddings().weight is model.get_input_embeddings().weight:
        shapes.pop(OUTPUT_EMBEDDINGS, None)  # tied: saved once, as transformers does
    return shapes


def fresh_query_transformer(config, seed: int = 0) -> dict[str, torch.Tensor]:
    """An MQT projector initialised as the authors do (`MatryoshkaQueryTransformer.reset_parameters`), seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = MatryoshkaQueryTransformer.from_config(config)
    return {f"model.multi_modal_projector.{name}": value.detach() for name, value in module.state_dict().items()}


def mapped_source_tensors(source: SourceModel, target: str) -> tuple[list, list[str]]:
    """(target name, TensorInfo) for every source tensor the target keeps, and the source names nothing covers."""
    if source.format in LLAVA_HF_FORMATS:
        source_config = (LlavaNextConfig if source.is_llava_next else LlavaConfig).from_dict(source.config)
        main = map_llava_hf_keys(source.weights.keys(), source_config, target, llava_next=source.is_llava_next)
    else:
        main = map_original_keys(source.weights.keys(), source.format, target, source.vision_config)
    tensors = [(name, source.weights.tensors[key]) for name, key in main.targets.items()]
    unexpected = list(main.unexpected)
    if source.clip_weights is not None:
        clip = map_clip_keys(source.clip_weights.keys(), source.vision_config)
        unexpected += [f"{key} (in the CLIP checkpoint)" for key in clip.unexpected]
        tensors += [(name, source.clip_weights.tensors[key]) for name, key in clip.targets.items()]
    return tensors, unexpected


def plan_conversion(source: SourceModel, target: str, model_class, config, dtype: torch.dtype | None) -> list[PlannedTensor]:
    """Every output tensor with its origin and output dtype (`dtype` None keeps the stored ones), in streaming
    order. Raises ConversionError listing all missing, unexpected and mis-shaped tensors."""
    expected = expected_tensors(model_class, config)
    tensors, unexpected = mapped_source_tensors(source, target)
    if OUTPUT_EMBEDDINGS not in expected:  # tied to the input embeddings
        tensors = [item for item in tensors if item[0] != OUTPUT_EMBEDDINGS]
    sampler = EmbeddingRowSampler(lambda: read_tensor(source.weights.tensors[source.embedding_key]))

    plan, misshaped, provided = [], [], set()
    for name, info in tensors:
        provided.add(name)
        if name not in expected:
            unexpected.append(f"{info.key} (-> {name}, not a parameter of the model)")
            continue
        shape, transform = info.shape, None
        if name in (INPUT_EMBEDDINGS, OUTPUT_EMBEDDINGS) and len(shape) == 2 and shape[0] < expected[name][0]:
            transform = row_appender(name, expected[name][0], sampler)
            shape = (expected[name][0], shape[1])
        if shape != expected[name]:
            misshaped.append(f"{info.key} -> {name}: {list(info.shape)}, expected {list(expected[name])}")
            continue
        out_dtype = dtype if dtype is not None and info.dtype.is_floating_point else info.dtype
        plan.append(PlannedTensor(name, shape, out_dtype, info.file, info.key, transform))
    if target == "mqt" and source.format != "mqt":
        default_dtype = source.weights.tensors[source.embedding_key].dtype
        for name, value in fresh_query_transformer(config).items():
            provided.add(name)
            plan.append(PlannedTensor(name, tuple(value.shape), dtype or default_dtype, value=value))

    missing = sorted(set(expected) - provided)
    problems = [f"{kind} ({len(names)}): {list_examples(names)}"
                for kind, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)) if names]
    if problems:
        raise ConversionError(
            f"The {source.format} source {source.name} does not match a {target_model_name(source.format, target)} "
            "model with its config. "
            "Tensors " + "; ".join(problems)
        )
    return order_for_streaming(plan, [source.weights.files, source.clip_weights.files if source.clip_weights else []])


def row_appender(name: str, total_rows: int, sampler: EmbeddingRowSampler):
    stream = 0 if name == INPUT_EMBEDDINGS else 1

    def transform(matrix: torch.Tensor) -> torch.Tensor:
        if name == INPUT_EMBEDDINGS:
            sampler.observe(matrix)
        return append_rows(matrix, total_rows, sampler, stream)

    return transform


def read_tensor(info) -> torch.Tensor:
    reader = open_shard(info.file)
    try:
        return reader.get(info.key).clone()
    finally:
        reader.close()


def order_for_streaming(plan: list[PlannedTensor], file_groups: list[list[Path]]) -> list[PlannedTensor]:
    """Shard by shard in the source's order (each input shard is opened once), created tensors last. Within a shard,
    wider dtypes first, so every tensor starts at an offset aligned to its element size."""
    file_order = {path: index for index, path in enumerate(path for group in file_groups for path in group)}
    position = {id(item): index for index, item in enumerate(plan)}
    return sorted(
        plan,
        key=lambda item: (
            len(file_order) if item.file is None else file_order[item.file],
            -item.dtype.itemsize,
            position[id(item)],
        ),
    )
