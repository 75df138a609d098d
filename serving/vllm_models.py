"""M3-LLaVA, MQT-LLaVA and M3-LLaVA-NeXT on vLLM's multimodal model interface, `num_visual_tokens` per request.

A request picks its count through vLLM's processor options, as any model's: `mm_processor_kwargs=
{"num_visual_tokens": 9}` (one count for every image of the request, or a list with one per image); without it the
model's default count. The count decides how many placeholder tokens the prompt update writes for each image, and
travels with the image's processed inputs to `embed_multimodal`, so requests with different counts share a batch.
vLLM keys its processor and encoder caches on the request's processor options, so one count's features are never
served to another.

Built as vLLM builds LLaVA-1.5 (its CLIP tower, a tensor-parallel projector, its registered language model, the
same weight-name mapping) with the two Matryoshka reductions from the bundle: M3 average-pools the projected grid,
MQT runs its query transformer in place of the projector and keeps the first k queries' outputs. vLLM's own LLaVA
module is not imported: it imports transformers' Pixtral image processor, which needs torchvision, and a CPU
install of vLLM works without it. Imported only by vLLM (see `vllm_plugin`).
"""

import re
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn
from transformers import LlavaConfig, LlavaNextConfig
from vllm.model_executor.layers.activation import get_act_fn
from vllm.model_executor.layers.linear import ColumnParallelLinear, RowParallelLinear
from vllm.model_executor.models.clip import CLIPVisionModel
from vllm.model_executor.models.interfaces import SupportsMultiModal, SupportsPP
from vllm.model_executor.models.utils import (
    AutoWeightsLoader,
    WeightsMapper,
    get_layer_index,
    init_vllm_registered_model,
    maybe_prefix,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFieldConfig, MultiModalKwargsItems
from vllm.multimodal.parse import ImageSize, MultiModalDataItems
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    PromptReplacement,
    PromptUpdate,
)

from modeling_matryoshka_llava.anyres_layout import AnyresImageLayout
from modeling_matryoshka_llava.modeling_m3_llava_next import pool_and_lay_out_crops
from modeling_matryoshka_llava.token_reducers import MatryoshkaQueryTransformer, reduce_per_count
from modeling_matryoshka_llava.visual_token_counts import (
    default_num_visual_tokens,
    describe_valid,
    resolve_num_visual_tokens,
    valid_num_visual_tokens,
)

COUNT_OPTION = "num_visual_tokens"  # the `mm_processor_kwargs` key, as in `generate(num_visual_tokens=...)`
# Weights of the checkpoint that serving does not use: `num_visual_tokens="auto"`'s chooser (see `counts_per_image`).
UNSERVED_WEIGHTS = ["model.count_chooser."]
# Processor options that decide how many tokens an image may take: vLLM profiles memory for the most an image can
# take with the folder's processor, so a request must not raise it (longer anyres grids).
FIXED_AT_STARTUP = ["image_grid_pinpoints"]


class MatryoshkaProcessingInfo(BaseProcessingInfo):
    """What vLLM needs to know about a Matryoshka checkpoint's inputs: its counts and its HF processor."""

    image_layout_fields: tuple[str, ...] = ()  # what the processor returns per image besides its pixels

    def get_hf_config(self) -> LlavaConfig:
        return self.ctx.get_hf_config(LlavaConfig)  # M3 and MQT configs are LLaVA configs

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"image": None}

    def get_image_size_with_most_features(self) -> ImageSize:
        side = self.get_hf_config().vision_config.image_size  # every image is resized to the tower's input
        return ImageSize(width=side, height=side)

    def get_hf_processor(self, **kwargs: object):
        # The count is an option of the request, not of the processor: transformers' processor never sees it.
        kwargs.pop(COUNT_OPTION, None)
        return self.ctx.get_hf_processor(**kwargs)

    @property
    def valid_counts(self) -> Sequence[int]:
        return valid_num_visual_tokens(self.get_hf_config())

    @property
    def largest_count(self) -> int:
        return max(self.valid_counts)

    def counts_per_image(self, mm_kwargs: Mapping[str, object], num_images: int) -> list[int]:
        """One checked count per image from a request's processor options (the model's default when absent);
        ValueError naming the valid values otherwise."""
        requested = mm_kwargs.get(COUNT_OPTION)
        if requested is None:
            requested = default_num_visual_tokens(self.get_hf_config())
        if requested == "auto":
            # The placeholder count must be known before the model runs; the chooser needs the model.
            raise ValueError(f'{COUNT_OPTION}="auto" is not supported when serving with vLLM: give a count, '
                             f"{describe_valid(self.valid_counts)}.")
        return resolve_num_visual_tokens(requested, self.valid_counts, num_images)

    def get_mm_max_tokens_per_item(self, seq_len: int, mm_counts: Mapping[str, int]) -> Mapping[str, int]:
        return {"image": self.largest_count}

    def num_placeholders(self, image_inputs: Mapping[str, torch.Tensor]) -> int:
        """Placeholder tokens of one processed image (its `embed_multimodal` output length): its count."""
        return int(image_inputs[COUNT_OPTION])


class M3NextProcessingInfo(MatryoshkaProcessingInfo):
    """M3-LLaVA-NeXT: an image's token count follows its size and crop grid as well as its count per crop."""

    image_layout_fields = ("image_sizes", "image_grid_shapes")

    def get_hf_config(self) -> LlavaNextConfig:
        return self.ctx.get_hf_config(LlavaNextConfig)

    def largest_image_layout(self) -> AnyresImageLayout:
        """The processor's pinpoint with the most tokens at the largest count: an image of that size fills its grid
        with nothing un-padded, and every other image has at most as many tokens as the grid it is cut into."""
        image_processor = self.get_hf_processor().image_processor
        layouts = [AnyresImageLayout((height, width), image_processor.crop_grid((height, width)))
                   for height, width in image_processor.image_grid_pinpoints]
        return max(layouts, key=lambda layout: layout.num_tokens(self.largest_count))

    def get_image_size_with_most_features(self) -> ImageSize:
        height, width = self.largest_image_layout().image_size
        return ImageSize(width=width, height=height)

    def get_mm_max_tokens_per_item(self, seq_len: int, mm_counts: Mapping[str, int]) -> Mapping[str, int]:
        return {"image": self.largest_image_layout().num_tokens(self.largest_count)}

    def num_placeholders(self, image_inputs: Mapping[str, torch.Tensor]) -> int:
        # The grid the processor really cut the image into, as the model lays it out (`anyres_layout`).
        return image_layout(image_inputs["image_sizes"], image_inputs["image_grid_shapes"]).num_tokens(
            int(image_inputs[COUNT_OPTION]))


def image_layout(image_size, grid_shape) -> AnyresImageLayout:
    """An image's (height, width) and crop (rows, columns), from the processor's tensors."""
    return AnyresImageLayout(tuple(int(side) for side in image_size), tuple(int(side) for side in grid_shape))


class MatryoshkaDummyInputsBuilder(BaseDummyInputsBuilder[MatryoshkaProcessingInfo]):
    """Profiling inputs: one placeholder per image, images of the tower's size (the processor runs them at the
    largest count)."""

    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return self.info.get_hf_processor().image_token * mm_counts.get("image", 0)

    def get_dummy_mm_data(self, seq_len: int, mm_counts: Mapping[str, int], mm_options):
        size = self.info.get_image_size_with_most_features()
        return {"image": self._get_dummy_images(width=size.width, height=size.height,
                                                num_images=mm_counts.get("image", 0),
                                                overrides=mm_options.get("image") if mm_options else None)}


class MatryoshkaMultiModalProcessor(BaseMultiModalProcessor[MatryoshkaProcessingInfo]):
    def apply(self, inputs, timing_ctx):
        # An invalid count is the request's error: name the valid values before any image is processed.
        self.info.counts_per_image(inputs.hf_processor_mm_kwargs, inputs.mm_data_items.get_all_counts().get("image", 0))
        for option in FIXED_AT_STARTUP:
            if option in inputs.hf_processor_mm_kwargs:
                raise ValueError(f"{option} cannot be set per request when serving with vLLM: the server reserves "
                                 "memory for the folder's own; set it in the folder's processor_config.json.")
        return super().apply(inputs, timing_ctx)

    def get_dummy_inputs(self, seq_len, mm_counts, mm_options):
        # Memory is profiled at the largest count, the most placeholder tokens a request can ask for.
        inputs = super().get_dummy_inputs(seq_len, mm_counts, mm_options)
        inputs.hf_processor_mm_kwargs = {**inputs.hf_processor_mm_kwargs, COUNT_OPTION: self.info.largest_count}
        return inputs

    def _postprocess_prompt(self, prompt: list[int]) -> list[int]:
        # The models are trained on prompts that start with BOS, as the processor's tokenisation writes them; vLLM's
        # chat endpoint tokenises the rendered chat template without special tokens, so the BOS is added here.
        tokenizer = self.info.get_tokenizer()
        bos = tokenizer.bos_token_id
        adds_bos = bos is not None and tokenizer.encode("a")[:1] == [bos]
        return [bos, *prompt] if adds_bos and prompt[:1] != [bos] else prompt

    def _call_hf_processor(self, hf_data: Mapping[str, object], hf_kwargs: Mapping[str, object]):
        kwargs = {key: value for key, value in hf_kwargs.items() if key != COUNT_OPTION}
        return super()._call_hf_processor(hf_data, kwargs)

    def _postprocess_hf_mm_data(self, mm_inputs, hf_processor_mm_kwargs, processed_data):
        # Each image carries its count to `embed_multimodal` (and into the cache entry of its features).
        if "pixel_values" in processed_data:
            num_images = len(processed_data["pixel_values"])
            counts = self.info.counts_per_image(hf_processor_mm_kwargs, num_images)
            processed_data[COUNT_OPTION] = torch.tensor(counts, dtype=torch.long)
        return processed_data

    def _get_mm_fields_config(self, hf_inputs, hf_processor_mm_kwargs) -> Mapping[str, MultiModalFieldConfig]:
        # One entry per image for every field the processor returns: pixel values, and for NeXT each image's size
        # and crop grid (its crops are zero-padded to its request's largest image; the model encodes only its own).
        fields = {"pixel_values": MultiModalFieldConfig.batched("image")}
        for name in (*self.info.image_layout_fields, COUNT_OPTION):
            fields[name] = MultiModalFieldConfig.batched("image", keep_on_cpu=True)
        return fields

    def _get_prompt_updates(
        self,
        mm_items: MultiModalDataItems,
        hf_processor_mm_kwargs: Mapping[str, object],
        out_mm_kwargs: MultiModalKwargsItems,
    ) -> Sequence[PromptUpdate]:
        image_token_id = self.info.get_hf_config().image_token_index

        def replacement(item_index: int) -> list[int]:
            image_inputs = {name: field.data for name, field in out_mm_kwargs["image"][item_index].items()}
            return [image_token_id] * self.info.num_placeholders(image_inputs)

        return [PromptReplacement(modality="image", target=[image_token_id], replacement=replacement)]


class LlavaProjector(nn.Module):
    """LLaVA's two-layer MLP projector, tensor parallel (`linear_1` column-, `linear_2` row-parallel)."""

    def __init__(self, config: LlavaConfig, prefix: str = ""):
        super().__init__()
        text_width = config.text_config.hidden_size
        self.linear_1 = ColumnParallelLinear(config.vision_config.hidden_size, text_width,
                                             bias=config.multimodal_projector_bias, prefix=f"{prefix}.linear_1")
        self.act = get_act_fn(config.projector_hidden_act)
        self.linear_2 = RowParallelLinear(text_width, text_width, bias=config.multimodal_projector_bias,
                                          prefix=f"{prefix}.linear_2")

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.linear_1(features)
        hidden, _ = self.linear_2(self.act(hidden))
        return hidden


class _MatryoshkaLlavaForVllm(nn.Module, SupportsMultiModal, SupportsPP):
    """LLaVA-1.5 in vLLM (CLIP tower, projector, language model) with a per-image count of visual tokens."""

    packed_modules_mapping = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}
    # The checkpoint's names -> this module's. Our checkpoints store the tower's modules directly under
    # `model.vision_tower.` (as current transformers' LLaVA does); vLLM's CLIP nests them under `vision_model.`;
    # a tower saved in CLIP's own layout (`vision_model.` already there) maps the same.
    hf_to_vllm_mapper = WeightsMapper(
        orig_to_new_regex={re.compile(r"^model\.vision_tower\.(vision_model\.)?"): "vision_tower.vision_model."},
        orig_to_new_prefix={
            "model.language_model.": "language_model.model.",
            "model.multi_modal_projector.": "multi_modal_projector.",
            "model.image_newline": "image_newline",  # LLaVA-NeXT's row separator
            "lm_head.": "language_model.lm_head.",
        },
    )
    has_image_newline = False

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("image"):
            return "<image>"
        raise ValueError("Only images are supported.")

    def build_projector(self, config, prefix: str) -> nn.Module:
        return LlavaProjector(config, prefix)

    def __init__(self, *, vllm_config, prefix: str = "") -> None:
        super().__init__()
        config = vllm_config.model_config.hf_config
        self.config = config
        self.configure_mm_token_handling(vocab_size=config.text_config.vocab_size,
                                         mm_token_ids=[config.image_token_index])
        with self._mark_tower_model(vllm_config, "image"):
            # Built up to the layer whose features are used (LLaVA's -2 leaves the last layer out).
            num_layers = get_layer_index(config.vision_feature_layer, config.vision_config.num_hidden_layers)
            self.vision_tower = CLIPVisionModel(config.vision_config, num_hidden_layers_override=num_layers,
                                                require_post_norm=False, prefix=maybe_prefix(prefix, "vision_tower"))
            self.multi_modal_projector = self.build_projector(config, maybe_prefix(prefix, "multi_modal_projector"))
            if self.has_image_newline:
                self.image_newline = nn.Parameter(torch.empty(config.text_config.hidden_size))
        with self._mark_language_model(vllm_config):
            self.language_model = init_vllm_registered_model(vllm_config=vllm_config, hf_config=config.text_config,
                                                             prefix=maybe_prefix(prefix, "language_model"))
        self.make_empty_intermediate_tensors = self.language_model.make_empty_intermediate_tensors

    def reduce_image_features(self, features: torch.Tensor, counts: list[int]) -> list[torch.Tensor]:
        """(N, patches, vision width) tower features -> per image (count, text width)."""
        raise NotImplementedError

    def embed_multimodal(self, **kwargs: object):
        pixel_values = kwargs.get("pixel_values")
        if pixel_values is None:
            return []
        if isinstance(pixel_values, (list, tuple)):
            pixel_values = torch.stack(list(pixel_values))
        counts = [int(count) for count in kwargs[COUNT_OPTION]]
        features = self.vision_tower(  # (N, patches, vision width)
            pixel_values, feature_select_strategy=self.config.vision_feature_select_strategy
        )
        return self.reduce_image_features(features, counts)

    def forward(self, input_ids, positions, intermediate_tensors=None, inputs_embeds=None, **kwargs: object):
        if intermediate_tensors is not None:
            inputs_embeds = None
        return self.language_model.model(input_ids, positions, intermediate_tensors, inputs_embeds=inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.language_model.compute_logits(hidden_states)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        served = ((name, weight) for name, weight in weights if not name.startswith(tuple(UNSERVED_WEIGHTS)))
        return AutoWeightsLoader(self).load_weights(served, mapper=self.hf_to_vllm_mapper)


@MULTIMODAL_REGISTRY.register_processor(
    MatryoshkaMultiModalProcessor, info=MatryoshkaProcessingInfo, dummy_inputs=MatryoshkaDummyInputsBuilder
)
class M3LlavaForVllm(_MatryoshkaLlavaForVllm):
    """M3: the projected grid average-pooled to each image's count (the bundle's pooling, so outputs match)."""

    def reduce_image_features(self, features: torch.Tensor, counts: list[int]) -> list[torch.Tensor]:
        projected = self.multi_modal_projector(features)  # (N, patches, text width): shared by every count
        return reduce_per_count(projected, counts, self.config.visual_token_reduction)


@MULTIMODAL_REGISTRY.register_processor(
    MatryoshkaMultiModalProcessor, info=MatryoshkaProcessingInfo, dummy_inputs=MatryoshkaDummyInputsBuilder
)
class MQTLlavaForVllm(_MatryoshkaLlavaForVllm):
    """MQT: the query transformer replaces the projector; each image keeps its first `count` query outputs."""

    def build_projector(self, config, prefix: str) -> nn.Module:
        # Replicated on every tensor-parallel rank: one attention layer, small next to the language model.
        return MatryoshkaQueryTransformer.from_config(config)

    def reduce_image_features(self, features: torch.Tensor, counts: list[int]) -> list[torch.Tensor]:
        # Queries do not interact: one pass with the largest count serves every image's first k outputs.
        tokens = self.multi_modal_projector(features, max(counts))  # (N, max count, text width)
        return [image_tokens[:count] for image_tokens, count in zip(tokens, counts)]


@MULTIMODAL_REGISTRY.register_processor(
    MatryoshkaMultiModalProcessor, info=M3NextProcessingInfo, dummy_inputs=MatryoshkaDummyInputsBuilder
)
class M3LlavaNextForVllm(_MatryoshkaLlavaForVllm):
    """M3-LLaVA-NeXT: every crop's projected grid pooled to the image's count, then laid out as LLaVA-NeXT does
    (base crop, un-padded grid rows, one `image_newline` per row) by the bundle's own `pool_and_lay_out_crops`."""

    has_image_newline = True

    def embed_multimodal(self, **kwargs: object):
        pixel_values = kwargs.get("pixel_values")  # per image (crops, 3, side, side), or all stacked when equal
        if pixel_values is None:
            return []
        layouts = [image_layout(size, grid) for size, grid in zip(kwargs["image_sizes"], kwargs["image_grid_shapes"])]
        counts = [int(count) for count in kwargs[COUNT_OPTION]]
        # An image's crops are zero-padded to its request's largest image: only its own are encoded.
        crops = torch.cat([image_crops[: layout.num_crops] for image_crops, layout in zip(pixel_values, layouts)])
        features = self.vision_tower(  # (all crops, patches, vision width)
            crops, feature_select_strategy=self.config.vision_feature_select_strategy
        )
        projected = self.multi_modal_projector(features)  # (all crops, patches, text width)
        reduction = self.config.visual_token_reduction
        return pool_and_lay_out_crops(projected, counts, layouts, self.image_newline, reduction)
