"""What M3-LLaVA and MQT-LLaVA share: LLaVA with one token-reduction step and the `num_visual_tokens` contract.

Subclasses supply the projector and `reduce_image_features`; everything else (vision feature selection, the
placeholder rule of `image_placeholders`, merging, the language model, loss and generation) lives here once.
State-dict keys are those of transformers' `LlavaForConditionalGeneration`, and its checkpoint key mapping is
registered for the Matryoshka model types, so every folder LLaVA writes loads.

Models whose images do not all become the same grid (LLaVA-NeXT: the token count depends on each image's size and
crop grid) name their extra per-image inputs in `image_input_names` and turn them into one layout per image in
`image_layouts`; every hook that counts or lays out tokens receives those layouts (None for LLaVA-1.5).
"""

from dataclasses import dataclass

import torch
from torch import nn

from .count_chooser import VisualTokenCountChooser, pick_counts
from .image_placeholders import ImageRun, check_runs_match_images, expand_image_placeholders, find_image_runs
from .modeling_matryoshka_outputs import MatryoshkaCausalLMOutputWithPast, MatryoshkaModelOutputWithPast
from .transformers_imports import (
    CACHE_NAME,
    AutoModel,
    GenerationMixin,
    ModelOutput,
    PreTrainedModel,
    get_checkpoint_conversion_mapping,
    register_checkpoint_conversion_mapping,
)
from .visual_token_counts import resolve_num_visual_tokens


def register_llava_key_mapping(model_type: str, base_model_class: type, llava_model_type: str) -> None:
    """Load a Matryoshka model type with transformers' own key mapping of the LLaVA model it extends.

    `llava_model_type` is "llava" or "llava_next"; the base model gets the mapping of LLaVA's base model class.
    Registered again on every import (remote code may be imported from several folders), replacing the last.
    """
    llava_base_class = {"llava": "LlavaModel", "llava_next": "LlavaNextModel"}[llava_model_type]
    for name, source in ((model_type, llava_model_type), (base_model_class.__name__, llava_base_class)):
        mapping = get_checkpoint_conversion_mapping(source)
        if mapping is not None:  # a release without a legacy layout for LLaVA has nothing to map
            register_checkpoint_conversion_mapping(name, mapping, overwrite=True)


def merge_cache_arguments(cache, past_key_values):
    """One cache from the two names transformers has used for it (`cache` from 5.24, `past_key_values` before)."""
    if cache is not None and past_key_values is not None:
        raise ValueError("Pass the KV cache once, as `cache` or as `past_key_values`, not both.")
    return cache if cache is not None else past_key_values


def as_tuple_unless_return_dict(model: PreTrainedModel, output: ModelOutput, return_dict: bool | None):
    """`return_dict=False` (or `config.return_dict=False`) gives `output.to_tuple()`, as transformers' models do."""
    if return_dict is None:
        return_dict = getattr(model.config, "return_dict", True)
    return output if return_dict else output.to_tuple()


@dataclass
class PreparedImages:
    """The text side of a multimodal call, worked out once: placeholders expanded to each image's token count."""

    input_ids: torch.Tensor | None
    attention_mask: torch.Tensor | None
    labels: torch.Tensor | None
    counts_per_image: list[int]
    image_layouts: list | None


@dataclass
class PackedScales:
    """Every count's sequence of a sample in one row, for one language-model pass over all counts.

    `labels_per_scale[i]` keeps only count i's labels (and never one that would be predicted across two counts'
    sequences); `unpack` gives a per-token tensor of one count back in that count's own (batch, seq) layout.
    """

    input_ids: torch.Tensor  # (batch, packed length)
    position_ids: torch.Tensor  # (batch, packed length), restarting at 0 for each count's sequence
    image_features: list[torch.Tensor]  # in placeholder order of the packed rows
    labels_per_scale: list[torch.Tensor]  # (batch, packed length) each
    placements: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, int]]]  # per count: rows, packed
    # positions, own positions of its real tokens, and its own (batch, seq) shape

    def unpack(self, values: torch.Tensor, scale: int) -> torch.Tensor:
        rows, packed_positions, own_positions, shape = self.placements[scale]
        out = values.new_zeros(*shape, *values.shape[2:])
        out[rows, own_positions] = values[rows, packed_positions]
        return out


def pack_scale_sequences(scales, image_token_id: int, pad_token_id: int) -> PackedScales:
    """`scales`: per count, (`PreparedImages`, per-image features). Real tokens (attention mask 1) of each count are
    concatenated row by row; rows are right-padded, the padding a sequence of its own that nothing attends to."""
    batch = scales[0][0].input_ids.shape[0]
    row_ids, row_positions, row_labels = [[] for _ in range(batch)], [[] for _ in range(batch)], [[] for _ in range(batch)]
    row_features = [[] for _ in range(batch)]
    spans = []  # per count: per row, (packed start, own positions)
    for index, (prepared, features) in enumerate(scales):
        ids, mask, labels = prepared.input_ids, prepared.attention_mask, prepared.labels
        keep = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask.bool()
        image_rows = [run.row for run in find_image_runs(ids, image_token_id)]
        for image_row, image_features in zip(image_rows, features):
            row_features[image_row].append(image_features)
        row_spans = []
        for row in range(batch):
            own = keep[row].nonzero().squeeze(-1)
            start = sum(part.shape[0] for part in row_ids[row])
            row_ids[row].append(ids[row, own])
            row_positions[row].append(torch.arange(own.shape[0], device=ids.device))
            scale_labels = labels[row, own].clone()
            scale_labels[0] = -100  # its first token is never predicted from the previous count's sequence
            row_labels[row].append((index, scale_labels))
            row_spans.append((start, own))
        spans.append(row_spans)
    length = max(sum(part.shape[0] for part in parts) for parts in row_ids)
    device = scales[0][0].input_ids.device
    input_ids = torch.full((batch, length), pad_token_id, dtype=scales[0][0].input_ids.dtype, device=device)
    position_ids = torch.zeros((batch, length), dtype=torch.long, device=device)
    labels_per_scale = [torch.full((batch, length), -100, dtype=torch.long, device=device) for _ in scales]
    for row in range(batch):
        ids = torch.cat(row_ids[row])
        input_ids[row, : ids.shape[0]] = ids
        position_ids[row, : ids.shape[0]] = torch.cat(row_positions[row])
        position_ids[row, ids.shape[0] :] = torch.arange(length - ids.shape[0], device=device)
        start = 0
        for index, scale_labels in row_labels[row]:
            labels_per_scale[index][row, start : start + scale_labels.shape[0]] = scale_labels
            start += scale_labels.shape[0]
    placements = []
    for (prepared, _), row_spans in zip(scales, spans):
        rows = torch.cat([torch.full_like(own, row) for row, (_, own) in enumerate(row_spans)])
        packed_positions = torch.cat([start + torch.arange(own.shape[0], device=device) for start, own in row_spans])
        own_positions = torch.cat([own for _, own in row_spans])
        placements.append((rows, packed_positions, own_positions, tuple(prepared.input_ids.shape)))
    features = [image_features for row in row_features for image_features in row]
    return PackedScales(input_ids, position_ids, features, labels_per_scale, placements)


class MatryoshkaLlavaPreTrainedModel(PreTrainedModel):
    """The capabilities transformers' LLaVA declares (attention back ends, compile, gradient checkpointing)."""

    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _skip_keys_device_placement = ["past_key_values", "cache"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True

    @classmethod
    def is_custom_code(cls) -> bool:
        """False: these classes follow transformers' own modeling conventions (weights initialised with
        `transformers.initialization`, parameters tied through `_tied_weights_keys`, key mappings registered), so
        none of the allowances transformers makes for other custom code applies. One of them would otherwise mark
        every module without direct parameters (e.g. CLIP's attention) as initialised, leaving missing vision-tower
        weights at the wrong initialisation instead of the vision config's own."""
        return False

    def save_pretrained(self, save_directory, *args, save_original_format: bool = False, **kwargs):
        r"""
        As `PreTrainedModel.save_pretrained`, but weights are written with the model's own key names by default:
        the LLaVA key mapping registered for loading would otherwise be reversed into LLaVA's legacy layout, which
        no Matryoshka checkpoint ever had and which `Trainer`'s resume (a plain `load_state_dict`) cannot read.
        """
        # `save_pretrained` records only this class's own Auto entry; a checkpoint of the full model must also be
        # loadable as `AutoModel`, whose class lives in the same (already copied) modeling file.
        base_model = getattr(self, "model", self)
        if self._auto_class is not None and getattr(base_model, "_auto_class", None) == "AutoModel":
            module = type(base_model).__module__.split(".")[-1]
            auto_map = getattr(self.config, "auto_map", None) or {}
            self.config.auto_map = {**auto_map, "AutoModel": f"{module}.{type(base_model).__name__}"}
        return super().save_pretrained(save_directory, *args, save_original_format=save_original_format, **kwargs)


class MatryoshkaLlavaModelBase(MatryoshkaLlavaPreTrainedModel):
    """Vision tower -> projector -> token reduction to k per image -> merged into the language model's input."""

    # Inputs besides `pixel_values` that describe each image (LLaVA-NeXT: `image_sizes`, `image_grid_shapes`).
    # Forward and generate hand them to `image_layouts`; they never reach the language model.
    image_input_names: tuple[str, ...] = ()

    def __init__(self, config):
        super().__init__(config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.multi_modal_projector = self.build_projector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.build_count_chooser(config)
        self.post_init()

    def build_projector(self, config) -> nn.Module:
        raise NotImplementedError

    def build_count_chooser(self, config) -> None:
        """The `num_visual_tokens="auto"` chooser, when the config names its candidate counts."""
        if getattr(config, "count_chooser_counts", None):
            width = config.text_config.hidden_size
            self.count_chooser = VisualTokenCountChooser(
                width, config.count_chooser_hidden_size, len(config.count_chooser_counts)
            )

    def image_layouts(self, pixel_values: torch.Tensor, **image_inputs) -> list | None:
        """One layout per image: what, besides the count, decides how many tokens it becomes and where they go.

        None when every image becomes the same grid (LLaVA-1.5). Raises ValueError on inconsistent inputs.
        """
        return None

    def pop_image_inputs(self, kwargs: dict) -> dict:
        """Remove this model's `image_input_names` from `kwargs` and return them."""
        return {name: kwargs.pop(name) for name in self.image_input_names if name in kwargs}

    def vision_tower_inputs(self, pixel_values: torch.Tensor, image_layouts: list | None) -> torch.Tensor:
        """The (num_crops, channels, height, width) batch the vision tower encodes: the images themselves here."""
        return pixel_values

    def project_features(self, features: torch.Tensor) -> torch.Tensor:
        """The part of the projection every count shares (M3 pools after its projector; MQT projects per count)."""
        return features

    def reduce_image_features(
        self, encoded_images: torch.Tensor, counts_per_image: list[int], image_layouts: list | None = None
    ) -> list[torch.Tensor]:
        """`encode_images` output -> one (tokens_i, text width) tensor per image."""
        raise NotImplementedError

    def num_image_tokens(self, num_visual_tokens: int, image_index: int, image_layout=None) -> int:
        """How many placeholder positions an image fills at a given `num_visual_tokens`."""
        return num_visual_tokens

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    def resolve_num_visual_tokens(self, num_visual_tokens, num_images: int) -> list[int] | None:
        """The single check of a requested count against this model's valid values (raises ValueError)."""
        return resolve_num_visual_tokens(
            num_visual_tokens, self.config.valid_num_visual_tokens, num_images, self.config.num_visual_tokens
        )

    # -- the text side: placeholders -------------------------------------------------------------------------

    def prepare_images(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        num_visual_tokens: int | list[int] | torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        padding_side: str = "left",
        image_layouts: list | None = None,
        **image_inputs,
    ) -> PreparedImages:
        """Validate `num_visual_tokens`, find each image's placeholders and expand compact ones (once per call).

        Without an explicit count an image keeps the count its run length names, and a compact placeholder (a run
        of one `input_ids` token) gets the config default. With `inputs_embeds` the placeholders must already be
        expanded, as in transformers' LLaVA: they are the positions holding the image token's embedding.
        """
        num_images = pixel_values.shape[0]
        if image_layouts is None:
            image_layouts = self.image_layouts(pixel_values, **image_inputs)
        if isinstance(num_visual_tokens, str) and num_visual_tokens == "auto":
            num_visual_tokens = self.choose_num_visual_tokens(
                pixel_values, input_ids, inputs_embeds, attention_mask, image_layouts=image_layouts
            )
        requested = self.resolve_num_visual_tokens(num_visual_tokens, num_images)
        layouts = image_layouts if image_layouts is not None else [None] * num_images
        if input_ids is None:
            runs = find_image_runs(self.placeholder_mask(None, inputs_embeds).long(), 1)
            check_runs_match_images(runs, num_images)
            counts = requested or [self._count_for_run_length(run, i, layouts[i]) for i, run in enumerate(runs)]
            self._check_expanded_runs(runs, counts, layouts)
            return PreparedImages(None, attention_mask, labels, counts, image_layouts)

        runs = find_image_runs(input_ids, self.config.image_token_id)
        check_runs_match_images(runs, num_images)
        if requested is None:
            requested = [
                self.config.num_visual_tokens if run.length == 1 else self._count_for_run_length(run, i, layouts[i])
                for i, run in enumerate(runs)
            ]
        tokens_per_image = [self.num_image_tokens(count, i, layout) for i, (count, layout) in enumerate(zip(requested, layouts))]
        pad_token_id = self.config.text_config.pad_token_id
        input_ids, attention_mask, labels = expand_image_placeholders(
            input_ids,
            runs,
            tokens_per_image,
            attention_mask=attention_mask,
            labels=labels,
            pad_token_id=pad_token_id if pad_token_id is not None else 0,
            padding_side=padding_side,
        )
        return PreparedImages(input_ids, attention_mask, labels, requested, image_layouts)

    @torch.no_grad()
    def choose_num_visual_tokens(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        threshold: float | None = None,
        image_layouts: list | None = None,
        **image_inputs,
    ) -> list[int]:
        """What `num_visual_tokens="auto"` uses: one count per image, chosen by the count chooser from the question
        (the text after the image) and the image at the smallest count. See `count_chooser`."""
        if not hasattr(self, "count_chooser"):
            raise ValueError(
                'num_visual_tokens="auto" needs a count chooser, which this model has none of: pass a count, or train '
                "one with matryoshka_llava.training.count_chooser.train_count_chooser."
            )
        if image_layouts is None:
            image_layouts = self.image_layouts(pixel_values, **image_inputs)
        question = self.question_features(input_ids, inputs_embeds, attention_mask, pixel_values.shape[0])
        image = self.cheapest_image_features(pixel_values, image_layouts)
        logits = self.count_chooser(question.to(image.dtype), image)  # (images, candidates)
        threshold = self.config.count_chooser_threshold if threshold is None else threshold
        return pick_counts(logits.float().sigmoid(), self.config.count_chooser_counts, threshold)

    def cheapest_image_features(self, pixel_values: torch.Tensor, image_layouts: list | None) -> torch.Tensor:
        """(images, text width): each image's visual tokens at the smallest count, averaged."""
        encoded = self.encode_images(self.vision_tower_inputs(pixel_values, image_layouts))
        smallest = min(self.config.valid_num_visual_tokens)
        tokens = self.reduce_image_features(encoded, [smallest] * pixel_values.shape[0], image_layouts)
        return torch.stack([image_tokens.mean(0) for image_tokens in tokens])

    def question_features(self, input_ids, inputs_embeds, attention_mask, num_images: int) -> torch.Tensor:
        """(images, text width): the mean embedding of the text after each image up to the next image (its
        question and the assistant cue), padding left out."""
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        is_image = self.placeholder_mask(input_ids, inputs_embeds)
        runs = find_image_runs(is_image.long(), 1)
        check_runs_match_images(runs, num_images)
        keep = torch.ones_like(is_image) if attention_mask is None or attention_mask.ndim != 2 else attention_mask.bool()
        features = []
        for index, run in enumerate(runs):
            following = runs[index + 1].start if index + 1 < len(runs) and runs[index + 1].row == run.row else None
            span = slice(run.start + run.length, following)
            text = inputs_embeds[run.row, span][keep[run.row, span] & ~is_image[run.row, span]]
            if text.shape[0] == 0:  # an image at the very end: its whole row is the context
                text = inputs_embeds[run.row][keep[run.row] & ~is_image[run.row]]
            features.append(text.mean(0))
        return torch.stack(features)

    def placeholder_mask(self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """(batch, seq) bool: where visual tokens go (with only `inputs_embeds`: the image token's embedding)."""
        if input_ids is not None:
            return input_ids == self.config.image_token_id
        image_token = torch.tensor(self.config.image_token_id, dtype=torch.long, device=inputs_embeds.device)
        return (inputs_embeds == self.get_input_embeddings()(image_token)).all(-1)

    def _count_for_run_length(self, run: ImageRun, image_index: int, image_layout=None) -> int:
        for count in self.config.valid_num_visual_tokens:
            if self.num_image_tokens(count, image_index, image_layout) == run.length:
                return count
        raise ValueError(
            f"Image {image_index} has a run of {run.length} placeholder tokens, which matches no valid "
            "num_visual_tokens of this model: use a single placeholder or pass num_visual_tokens."
        )

    def _check_expanded_runs(self, runs: list[ImageRun], counts: list[int], layouts: list) -> None:
        for index, (run, count, layout) in enumerate(zip(runs, counts, layouts)):
            expected = self.num_image_tokens(count, index, layout)
            if run.length != expected:
                raise ValueError(
                    f"Image {index} fills {run.length} positions of `inputs_embeds` but num_visual_tokens={count} "
                    f"gives it {expected} visual tokens: with `inputs_embeds`, placeholders must already be expanded."
                )

    # -- the image side: features -----------------------------------------------------------------------------

    def select_vision_features(self, vision_outputs, vision_feature_layer=None, vision_feature_select_strategy=None):
        """Patch features of the selected vision layer(s), CLS dropped for the "default" strategy (as LLaVA)."""
        layer = vision_feature_layer if vision_feature_layer is not None else self.config.vision_feature_layer
        strategy = vision_feature_select_strategy or self.config.vision_feature_select_strategy
        layers = [layer] if isinstance(layer, int) else layer
        selected = [vision_outputs.hidden_states[index] for index in layers]
        if strategy == "default":
            selected = [hidden[:, 1:] for hidden in selected]
        return torch.cat(selected, dim=-1)  # (crops, patches, vision width * layers)

    def get_vision_features(
        self, pixel_values: torch.Tensor, vision_feature_layer=None, vision_feature_select_strategy=None
    ) -> torch.Tensor:
        """(crops, channels, height, width) -> (crops, patches, vision width): the tower's selected features."""
        vision_outputs = self.vision_tower(pixel_values, output_hidden_states=True, return_dict=True)
        return self.select_vision_features(vision_outputs, vision_feature_layer, vision_feature_select_strategy)

    def encode_images(self, pixel_values: torch.Tensor, vision_feature_layer=None, vision_feature_select_strategy=None):
        """The per-image work every count shares: vision tower, feature selection, shared projection."""
        features = self.get_vision_features(pixel_values, vision_feature_layer, vision_feature_select_strategy)
        return self.project_features(features)

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        num_visual_tokens: int | list[int] | None = None,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        image_layouts: list | None = None,
        **image_inputs,
    ):
        """The vision tower's output with `pooler_output` replaced by the visual tokens of each image (a list of
        (tokens_i, text width) tensors at the requested counts), as transformers' LLaVA returns it.

        The vision tower and projector run once for the whole batch, whatever mix of counts it asks for. The tower's
        hidden states are always computed (features come from an inner layer); `output_attentions` asks it for its
        attentions. Inputs named in `image_input_names` (e.g. `image_sizes`) are taken from the keyword arguments.
        """
        if image_layouts is None:
            image_layouts = self.image_layouts(pixel_values, **image_inputs)
        counts = self.resolve_num_visual_tokens(num_visual_tokens, pixel_values.shape[0])
        counts = counts or [self.config.num_visual_tokens] * pixel_values.shape[0]
        tower_kwargs = {"output_attentions": output_attentions} if output_attentions is not None else {}
        vision_outputs = self.vision_tower(
            self.vision_tower_inputs(pixel_values, image_layouts), output_hidden_states=True, return_dict=True,
            **tower_kwargs,
        )
        features = self.select_vision_features(vision_outputs, vision_feature_layer, vision_feature_select_strategy)
        vision_outputs.pooler_output = self.reduce_image_features(self.project_features(features), counts, image_layouts)
        return as_tuple_unless_return_dict(self, vision_outputs, return_dict)

    # -- the merge site ----------------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.Tensor | None = None,
        num_visual_tokens: int | list[int] | None = None,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        image_features: list[torch.Tensor] | None = None,
        cache=None,
        return_dict: bool | None = None,
        prepared_images: PreparedImages | None = None,
        **kwargs,
    ):
        r"""
        num_visual_tokens (`int` or `list[int]`, *optional*):
            Visual tokens per image (one value for all images or one per image); defaults to the count each image's
            placeholder run names, and `config.num_visual_tokens` for compact (single-token) placeholders.
        image_features (`list[torch.Tensor]`, *optional*):
            Visual tokens already computed per image (e.g. by `get_image_features`), used instead of
            `pixel_values`; the placeholders must then already be expanded to their lengths.
        cache / past_key_values (`Cache`, *optional*): the KV cache, under either name.
        prepared_images (`PreparedImages`, *optional*):
            What `prepare_images` returned for these inputs, when the caller already worked it out.
        """
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        cache = merge_cache_arguments(cache, past_key_values)
        image_inputs = self.pop_image_inputs(kwargs)
        if pixel_values is not None and image_features is None:
            if prepared_images is None:
                prepared_images = self.prepare_images(
                    pixel_values, input_ids, inputs_embeds, num_visual_tokens, attention_mask, **image_inputs
                )
            if input_ids is not None and prepared_images.input_ids is not input_ids:
                if position_ids is not None:
                    raise ValueError(
                        "position_ids were given for compact image placeholders; pass them for the expanded sequence "
                        "(one image token per visual token) or leave them out."
                    )
                input_ids, attention_mask = prepared_images.input_ids, prepared_images.attention_mask
            image_features = self.get_image_features(
                pixel_values,
                prepared_images.counts_per_image,
                vision_feature_layer,
                vision_feature_select_strategy,
                return_dict=True,
                image_layouts=prepared_images.image_layouts,
            ).pooler_output

        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)  # (batch, seq, text width)
        if image_features is not None:
            image_features = torch.cat(list(image_features)).to(inputs_embeds.device, inputs_embeds.dtype)
            image_mask = self.placeholder_mask(input_ids, inputs_embeds)  # (batch, seq)
            # Placeholders laid out by `prepare_images` hold exactly the features' tokens (checked there, on the
            # host, once per call); only features the caller brings are counted here, as counting syncs the device.
            if prepared_images is None and int(image_mask.sum()) != image_features.shape[0]:
                raise ValueError(
                    f"{int(image_mask.sum())} image placeholder positions but {image_features.shape[0]} visual tokens."
                )
            inputs_embeds = inputs_embeds.masked_scatter(image_mask.unsqueeze(-1), image_features)

        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            return_dict=True,
            **{CACHE_NAME: cache},
            **kwargs,
        )
        output = MatryoshkaModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=image_features,
            **{CACHE_NAME: outputs.get(CACHE_NAME)},
        )
        return as_tuple_unless_return_dict(self, output, return_dict)


class MatryoshkaLlavaForConditionalGenerationBase(MatryoshkaLlavaPreTrainedModel, GenerationMixin):
    """LLaVA's causal-LM head over a Matryoshka model, with `num_visual_tokens` in `forward` and `generate`."""

    base_model_class: type[MatryoshkaLlavaModelBase]
    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}

    def __init__(self, config):
        super().__init__(config)
        self.model = self.base_model_class(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def get_image_features(self, pixel_values: torch.Tensor, num_visual_tokens=None, **kwargs):
        return self.model.get_image_features(pixel_values, num_visual_tokens, **kwargs)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        num_visual_tokens: int | list[int] | torch.Tensor | None = None,
        multi_scale_num_visual_tokens: list[int] | None = None,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        cache=None,
        return_dict: bool | None = None,
        pack_scales: bool = False,
        **kwargs,
    ):
        r"""
        num_visual_tokens (`int` or `list[int]`, *optional*):
            Visual tokens per image: one value for all images or one per image; defaults to
            `config.num_visual_tokens`. Compact placeholders (one image token per image) are expanded to it and
            `labels` are expanded with them (-100 at visual positions), so logits and labels stay aligned.
        multi_scale_num_visual_tokens (`list[int]`, *optional*):
            Training with several counts at once (M3): the vision tower and projector run once, the language model
            once per count, and `loss` is the mean of the per-count losses (`loss_per_num_visual_tokens`, in the
            order given). Needs `labels`; the returned logits are those of the last count.
        pack_scales (`bool`, *optional*, defaults to `False`):
            With `multi_scale_num_visual_tokens`: run the language model once over all counts, each sample's count
            sequences packed into one row (positions restart per count; transformers' packed-sequence masks keep
            them apart), instead of once per count. The losses are the same; which is faster depends on the
            device and attention kernel: on CPU with SDPA the packed step measured slower (its attention spans the
            whole packed row), see `benchmarks/m3_training_step.py`.
        cache / past_key_values (`Cache`, *optional*): the KV cache, under either name.
        """
        cache = merge_cache_arguments(cache, past_key_values)
        image_inputs = self.model.pop_image_inputs(kwargs)
        if multi_scale_num_visual_tokens is not None:
            output = self._multi_scale_forward(
                input_ids, pixel_values, attention_mask, labels, multi_scale_num_visual_tokens, image_inputs,
                pack_scales=pack_scales, **kwargs
            )
            return as_tuple_unless_return_dict(self, output, return_dict)
        prepared = None
        if pixel_values is not None and (input_ids is not None or inputs_embeds is not None):
            prepared = self.model.prepare_images(
                pixel_values,
                input_ids,
                inputs_embeds,
                num_visual_tokens,
                attention_mask,
                labels,
                padding_side=self._expansion_padding_side(attention_mask, labels),
                **image_inputs,
            )
            if input_ids is not None:
                input_ids, attention_mask, labels = prepared.input_ids, prepared.attention_mask, prepared.labels
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            vision_feature_layer=vision_feature_layer,
            vision_feature_select_strategy=vision_feature_select_strategy,
            prepared_images=prepared,
            return_dict=True,
            **image_inputs,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state  # (batch, seq, text width)
        slice_indices = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, slice_indices, :])  # (batch, kept positions, vocab)

        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        output = MatryoshkaCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=outputs.image_hidden_states,
            **{CACHE_NAME: outputs.get(CACHE_NAME)},
        )
        return as_tuple_unless_return_dict(self, output, return_dict)

    def enable_fast_path(self, **compile_kwargs) -> "MatryoshkaLlavaForConditionalGenerationBase":
        """Compile the prefill's heavy parts and decode with a static cache; every count keeps working.

        The vision tower and the language model are compiled with `torch.compile` (`compile_kwargs`, e.g.
        `mode="reduce-overhead"` for CUDA graphs on a GPU); each count is its own sequence length, so each compiles
        once, on first use. Placeholder expansion and count checks stay eager: they run once per request, on the
        host. Generation uses `cache_implementation="static"`, with which transformers compiles decoding where it
        supports it. Returns the model.
        """
        self.model.vision_tower.compile(**compile_kwargs)
        self.model.language_model.compile(**compile_kwargs)
        self.generation_config.cache_implementation = "static"
        return self

    @staticmethod
    def _expansion_padding_side(attention_mask, labels) -> str:
        """Rows that grow unevenly are re-padded on the side the batch is already padded on (left for inference)."""
        left_padded = attention_mask is not None and attention_mask.ndim == 2 and bool((attention_mask[:, 0] == 0).any())
        return "left" if labels is None or left_padded else "right"

    def _multi_scale_forward(
        self, input_ids, pixel_values, attention_mask, labels, counts, image_inputs=None, pack_scales=False, **kwargs
    ):
        if labels is None or input_ids is None:
            raise ValueError("multi_scale_num_visual_tokens is for training: pass input_ids and labels.")
        if not counts:
            raise ValueError("multi_scale_num_visual_tokens must hold at least one count.")
        for count in counts:
            self.model.resolve_num_visual_tokens(count, 1)
        vocab_size = self.config.text_config.vocab_size
        if pixel_values is None or pixel_values.shape[0] == 0:  # every count sees the same text: one forward
            outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **kwargs)
            logits = self.lm_head(outputs.last_hidden_state)
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=vocab_size, **kwargs)
            return MatryoshkaCausalLMOutputWithPast(
                loss=loss, logits=logits, loss_per_num_visual_tokens=torch.stack([loss] * len(counts))
            )
        # The vision tower and projector run once; each count's sequence is laid out, then the language model runs
        # once per count, or once for all counts with each sample's sequences packed into one row (positions
        # restart per count, so attention stays within each count's sequence).
        layouts = self.model.image_layouts(pixel_values, **(image_inputs or {}))
        encoded = self.model.encode_images(self.model.vision_tower_inputs(pixel_values, layouts))
        padding_side = self._expansion_padding_side(attention_mask, labels)
        scales = []
        for count in counts:
            prepared = self.model.prepare_images(
                pixel_values, input_ids, None, count, attention_mask, labels, padding_side=padding_side,
                image_layouts=layouts,
            )
            features = self.model.reduce_image_features(encoded, prepared.counts_per_image, layouts)
            scales.append((prepared, features))
        if not pack_scales:
            losses = []
            for prepared, features in scales:
                outputs = self.model(input_ids=prepared.input_ids, attention_mask=prepared.attention_mask,
                                     image_features=features, prepared_images=prepared, return_dict=True, **kwargs)
                logits = self.lm_head(outputs.last_hidden_state)
                losses.append(self.loss_function(logits=logits, labels=prepared.labels, vocab_size=vocab_size, **kwargs))
            loss_per_count = torch.stack(losses)
            return MatryoshkaCausalLMOutputWithPast(
                loss=loss_per_count.mean(), logits=logits, loss_per_num_visual_tokens=loss_per_count
            )
        pad_token_id = self.config.text_config.pad_token_id
        packed = pack_scale_sequences(scales, self.config.image_token_id, pad_token_id if pad_token_id is not None else 0)
        outputs = self.model(
            input_ids=packed.input_ids, position_ids=packed.position_ids, image_features=packed.image_features,
            use_cache=False, return_dict=True, **kwargs,
        )
        logits = self.lm_head(outputs.last_hidden_state)  # (batch, packed length, vocab)
        loss_per_count = torch.stack([
            self.loss_function(logits=logits, labels=scale_labels, vocab_size=vocab_size, **kwargs)
            for scale_labels in packed.labels_per_scale
        ])
        return MatryoshkaCausalLMOutputWithPast(
            loss=loss_per_count.mean(), logits=packed.unpack(logits, -1), loss_per_num_visual_tokens=loss_per_count
        )

    def prepare_inputs_for_generation(
        self, input_ids, *args, inputs_embeds=None, pixel_values=None, is_first_iteration=False, **kwargs
    ):
        model_inputs = super().prepare_inputs_for_generation(
            input_ids, *args, inputs_embeds=inputs_embeds, is_first_iteration=is_first_iteration, **kwargs
        )
        # Images are merged into the cache at prefill; later steps only carry new text tokens. A call continuing
        # from a returned cache may pass the images again: they are needed only if their placeholders are not cached.
        model_inputs.pop("pixel_values", None)
        if pixel_values is not None and (is_first_iteration or not kwargs.get("use_cache", True)):
            ids = model_inputs.get("input_ids")
            if ids is None or bool((ids == self.config.image_token_id).any()):
                model_inputs["pixel_values"] = pixel_values
        return model_inputs

    def generate(
        self, inputs: torch.Tensor | None = None, *args, num_visual_tokens=None, count_chooser_threshold=None, **kwargs
    ):
        r"""
        `transformers.GenerationMixin.generate` plus `num_visual_tokens`: one value, one per image, or `"auto"`
        (the model's count chooser picks one per image; `count_chooser_threshold` overrides its config value).

        Compact placeholders are expanded before generation and the returned sequences start with the prompt
        exactly as it was passed, so `out[:, input_ids.shape[1]:]` is the newly generated text as for any model.
        """
        input_ids = kwargs.pop("input_ids", inputs)
        pixel_values = kwargs.get("pixel_values")
        if input_ids is None or pixel_values is None:
            if num_visual_tokens is not None:
                num_images = 0 if pixel_values is None else len(pixel_values)
                self.model.resolve_num_visual_tokens(num_visual_tokens, num_images)
                if pixel_values is not None:  # images given as `inputs_embeds` placeholders: checked at prefill
                    kwargs["num_visual_tokens"] = num_visual_tokens
            return super().generate(input_ids, *args, **kwargs)

        image_inputs = {name: kwargs[name] for name in self.model.image_input_names if kwargs.get(name) is not None}
        attention_mask = kwargs.pop("attention_mask", None)
        if isinstance(num_visual_tokens, str) and num_visual_tokens == "auto":
            num_visual_tokens = self.model.choose_num_visual_tokens(
                pixel_values, input_ids, None, attention_mask, count_chooser_threshold, **image_inputs
            )
        prepared = self.model.prepare_images(
            pixel_values, input_ids, None, num_visual_tokens, attention_mask, **image_inputs
        )
        expanded_ids, counts = prepared.input_ids, prepared.counts_per_image
        if prepared.attention_mask is not None:
            kwargs["attention_mask"] = prepared.attention_mask
        # One count rides along as an int; a mix as a per-image tensor, which generation expands with the images.
        kwargs["num_visual_tokens"] = counts[0] if len(set(counts)) == 1 else torch.tensor(counts)
        output = super().generate(expanded_ids, *args, **kwargs)
        if expanded_ids is input_ids:
            return output

        sequences = output.sequences if isinstance(output, ModelOutput) else output
        rows_per_prompt = sequences.shape[0] // input_ids.shape[0]
        prompt = input_ids.to(sequences.device).repeat_interleave(rows_per_prompt, dim=0)
        sequences = torch.cat([prompt, sequences[:, expanded_ids.shape[1] :]], dim=1)
        if isinstance(output, ModelOutput):
            output.sequences = sequences
            return output
        return sequences
