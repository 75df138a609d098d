"""What M3-LLaVA and MQT-LLaVA share: LLaVA with one token-reduction step and the `num_visual_tokens` contract.

Subclasses supply the projector and `reduce_image_features`; everything else (vision feature selection, the
placeholder rule of `image_placeholders`, merging, the language model, loss and generation) lives here once.
State-dict keys are those of transformers' `LlavaForConditionalGeneration`.

Models whose images do not all become the same grid (LLaVA-NeXT: the token count depends on each image's size and
crop grid) name their extra per-image inputs in `image_input_names` and turn them into one layout per image in
`image_layouts`; every hook that counts or lays out tokens receives those layouts (None for LLaVA-1.5).
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.llava.modeling_llava import (
    LlavaCausalLMOutputWithPast,
    LlavaModelOutputWithPast,
    LlavaPreTrainedModel,
)
from transformers.utils import ModelOutput

from .image_placeholders import check_runs_match_images, expand_image_placeholders, find_image_runs
from .visual_token_counts import resolve_num_visual_tokens


@dataclass
class MatryoshkaCausalLMOutputWithPast(LlavaCausalLMOutputWithPast):
    r"""
    loss_per_num_visual_tokens (`torch.Tensor` of shape `(num_counts,)`, *optional*):
        With `multi_scale_num_visual_tokens`: the loss at each count, normalised like `loss` (their mean).
    """

    loss_per_num_visual_tokens: torch.Tensor | None = None


class MatryoshkaLlavaPreTrainedModel(LlavaPreTrainedModel):
    def save_pretrained(self, save_directory, *args, **kwargs):
        # `save_pretrained` records only this class's own Auto entry; a checkpoint of the full model must also be
        # loadable as `AutoModel`, whose class lives in the same (already copied) modeling file.
        base_model = getattr(self, "model", self)
        if self._auto_class is not None and getattr(base_model, "_auto_class", None) == "AutoModel":
            module = type(base_model).__module__.split(".")[-1]
            auto_map = getattr(self.config, "auto_map", None) or {}
            self.config.auto_map = {**auto_map, "AutoModel": f"{module}.{type(base_model).__name__}"}
        return super().save_pretrained(save_directory, *args, **kwargs)


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
        self.post_init()

    def build_projector(self, config) -> nn.Module:
        raise NotImplementedError

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

    def encode_images(self, pixel_values: torch.Tensor, vision_feature_layer=None, vision_feature_select_strategy=None):
        """The per-image work every count shares (vision tower; M3 adds its projector): (N, patches, width)."""
        return self.get_vision_features(pixel_values, vision_feature_layer, vision_feature_select_strategy)

    def reduce_image_features(
        self, encoded_images: torch.Tensor, num_visual_tokens: list[int], image_layouts: list | None = None
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

    def expand_image_placeholders(
        self,
        input_ids: torch.Tensor,
        num_images: int,
        num_visual_tokens=None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        padding_side: str = "left",
        image_layouts: list | None = None,
    ):
        """Validate `num_visual_tokens`, then expand compact placeholders (see `image_placeholders`).

        Returns `(input_ids, attention_mask, labels, num_visual_tokens per image)`. Without an explicit count an
        image keeps the count its run length names, and a compact placeholder gets the config default.
        """
        requested = self.resolve_num_visual_tokens(num_visual_tokens, num_images)
        runs = find_image_runs(input_ids, self.config.image_token_id)
        check_runs_match_images(runs, num_images)
        layouts = image_layouts if image_layouts is not None else [None] * num_images
        if requested is None:
            requested = [
                self.config.num_visual_tokens
                if run.length == 1
                else self._count_for_run_length(run.length, index, layouts[index])
                for index, run in enumerate(runs)
            ]
        tokens_per_image = [
            self.num_image_tokens(count, index, layout)
            for index, (count, layout) in enumerate(zip(requested, layouts))
        ]
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
        return input_ids, attention_mask, labels, requested

    def _count_for_run_length(self, run_length: int, image_index: int, image_layout=None) -> int:
        for count in self.config.valid_num_visual_tokens:
            if self.num_image_tokens(count, image_index, image_layout) == run_length:
                return count
        raise ValueError(
            f"Image {image_index} has a run of {run_length} placeholder tokens, which matches no valid "
            "num_visual_tokens of this model: use a single placeholder or pass num_visual_tokens."
        )

    def get_vision_features(
        self, pixel_values: torch.Tensor, vision_feature_layer=None, vision_feature_select_strategy=None
    ) -> torch.Tensor:
        """Patch features of the selected vision layer(s), CLS dropped for the "default" strategy (as LLaVA)."""
        layer = vision_feature_layer if vision_feature_layer is not None else self.config.vision_feature_layer
        strategy = vision_feature_select_strategy or self.config.vision_feature_select_strategy
        outputs = self.vision_tower(pixel_values, output_hidden_states=True, return_dict=True)
        layers = [layer] if isinstance(layer, int) else layer
        selected = [outputs.hidden_states[index] for index in layers]
        if strategy == "default":
            selected = [hidden[:, 1:] for hidden in selected]
        return torch.cat(selected, dim=-1)

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        num_visual_tokens=None,
        vision_feature_layer=None,
        vision_feature_select_strategy=None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        """Visual tokens per image at the requested count(s): `pooler_output` is a list of (tokens, hidden) tensors.

        The vision tower and projector run once for the whole batch, whatever mix of counts it asks for. Inputs named
        in `image_input_names` (e.g. `image_sizes`) are taken from the keyword arguments.
        """
        layouts = self.image_layouts(pixel_values, **self.pop_image_inputs(kwargs))
        counts = self.resolve_num_visual_tokens(num_visual_tokens, pixel_values.shape[0])
        counts = counts or [self.config.num_visual_tokens] * pixel_values.shape[0]
        encoded = self.encode_images(
            self.vision_tower_inputs(pixel_values, layouts), vision_feature_layer, vision_feature_select_strategy
        )
        return BaseModelOutputWithPooling(
            last_hidden_state=encoded, pooler_output=self.reduce_image_features(encoded, counts, layouts)
        )

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.Tensor | None = None,
        num_visual_tokens=None,
        vision_feature_layer=None,
        vision_feature_select_strategy=None,
        image_features: list[torch.Tensor] | None = None,
        **kwargs,
    ) -> LlavaModelOutputWithPast:
        r"""
        image_features (`list[torch.Tensor]`, *optional*):
            Visual tokens already computed per image (e.g. by `get_image_features`), used instead of
            `pixel_values`; the placeholders must then already be expanded to their lengths.
        """
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        image_inputs = self.pop_image_inputs(kwargs)
        if pixel_values is not None and image_features is None:
            if input_ids is None:
                raise ValueError("Images need `input_ids` that mark where their visual tokens go.")
            expanded_ids, attention_mask, _, counts = self.expand_image_placeholders(
                input_ids,
                pixel_values.shape[0],
                num_visual_tokens,
                attention_mask,
                image_layouts=self.image_layouts(pixel_values, **image_inputs),
            )
            if expanded_ids is not input_ids and position_ids is not None:
                raise ValueError(
                    "position_ids were given for compact image placeholders; pass them for the expanded sequence "
                    "(one image token per visual token) or leave them out."
                )
            input_ids = expanded_ids
            image_features = self.get_image_features(
                pixel_values, counts, vision_feature_layer, vision_feature_select_strategy, **image_inputs
            ).pooler_output

        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        if image_features is not None:
            image_features = torch.cat(list(image_features)).to(inputs_embeds.device, inputs_embeds.dtype)
            image_mask = (input_ids == self.config.image_token_id).unsqueeze(-1).to(inputs_embeds.device)
            if int(image_mask.sum()) != image_features.shape[0]:
                raise ValueError(
                    f"{int(image_mask.sum())} image placeholder positions but {image_features.shape[0]} visual tokens."
                )
            inputs_embeds = inputs_embeds.masked_scatter(image_mask, image_features)

        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )
        return LlavaModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=image_features,
        )


class MatryoshkaLlavaForConditionalGenerationBase(MatryoshkaLlavaPreTrainedModel, GenerationMixin):
    """LLaVA's causal-LM head over a Matryoshka model, with `num_visual_tokens` in `forward` and `generate`."""

    base_model_class: type[MatryoshkaLlavaModelBase]
    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}

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
        num_visual_tokens=None,
        multi_scale_num_visual_tokens: list[int] | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> MatryoshkaCausalLMOutputWithPast:
        r"""
        num_visual_tokens (`int` or `list[int]`, *optional*):
            Visual tokens per image: one value for all images or one per image; defaults to
            `config.num_visual_tokens`. Compact placeholders (one image token per image) are expanded to it and
            `labels` are expanded with them (-100 at visual positions), so logits and labels stay aligned.
        multi_scale_num_visual_tokens (`list[int]`, *optional*):
            Training with several counts at once (M3): the vision tower and projector run once, the language model
            once per count, and `loss` is the mean of the per-count losses (`loss_per_num_visual_tokens`, in the
            order given). Needs `labels`; the returned logits are those of the last count.
        """
        image_inputs = self.model.pop_image_inputs(kwargs)
        if multi_scale_num_visual_tokens is not None:
            return self._multi_scale_forward(
                input_ids, pixel_values, attention_mask, labels, multi_scale_num_visual_tokens, image_inputs, **kwargs
            )
        if pixel_values is not None and input_ids is not None:
            input_ids, attention_mask, labels, num_visual_tokens = self.model.expand_image_placeholders(
                input_ids,
                pixel_values.shape[0],
                num_visual_tokens,
                attention_mask,
                labels,
                padding_side=self._expansion_padding_side(attention_mask, labels),
                image_layouts=self.model.image_layouts(pixel_values, **image_inputs),
            )
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            num_visual_tokens=num_visual_tokens,
            **image_inputs,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        slice_indices = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, slice_indices, :])

        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        return MatryoshkaCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=outputs.image_hidden_states,
        )

    @staticmethod
    def _expansion_padding_side(attention_mask, labels) -> str:
        """Rows that grow unevenly are re-padded on the side the batch is already padded on (left for inference)."""
        left_padded = attention_mask is not None and bool((attention_mask[:, 0] == 0).any())
        return "left" if labels is None or left_padded else "right"

    def _multi_scale_forward(
        self, input_ids, pixel_values, attention_mask, labels, counts, image_inputs=None, **kwargs
    ):
        if labels is None or input_ids is None:
            raise ValueError("multi_scale_num_visual_tokens is for training: pass input_ids and labels.")
        if not counts:
            raise ValueError("multi_scale_num_visual_tokens must hold at least one count.")
        for count in counts:
            self.model.resolve_num_visual_tokens(count, 1)
        num_images = 0 if pixel_values is None else pixel_values.shape[0]
        layouts, encoded = None, None
        if num_images:
            layouts = self.model.image_layouts(pixel_values, **(image_inputs or {}))
            encoded = self.model.encode_images(self.model.vision_tower_inputs(pixel_values, layouts))
        losses, logits = [], None
        # Without images every count sees the same sequence: one forward serves them all.
        for count in counts if num_images else counts[:1]:
            ids, mask, count_labels, per_image = self.model.expand_image_placeholders(
                input_ids, num_images, count, attention_mask, labels,
                padding_side=self._expansion_padding_side(attention_mask, labels),
                image_layouts=layouts,
            )
            features = self.model.reduce_image_features(encoded, per_image, layouts) if num_images else None
            outputs = self.model(input_ids=ids, attention_mask=mask, image_features=features, **kwargs)
            logits = self.lm_head(outputs.last_hidden_state)
            losses.append(
                self.loss_function(logits=logits, labels=count_labels, vocab_size=self.config.text_config.vocab_size, **kwargs)
            )
        loss_per_count = torch.stack(losses if num_images else losses * len(counts))
        return MatryoshkaCausalLMOutputWithPast(
            loss=loss_per_count.mean(), logits=logits, loss_per_num_visual_tokens=loss_per_count
        )

    def prepare_inputs_for_generation(self, *args, pixel_values=None, is_first_iteration=False, **kwargs):
        model_inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        # Images are merged into the cache at prefill; later steps only carry new text tokens.
        if is_first_iteration or not kwargs.get("use_cache", True):
            model_inputs["pixel_values"] = pixel_values
        else:
            model_inputs.pop("pixel_values", None)
        return model_inputs

    def generate(self, inputs: torch.Tensor | None = None, *args, num_visual_tokens=None, **kwargs):
        r"""
        `transformers.GenerationMixin.generate` plus `num_visual_tokens` (one value, or one per image).

        Compact placeholders are expanded before generation and the returned sequences start with the prompt
        exactly as it was passed, so `out[:, input_ids.shape[1]:]` is the newly generated text as for any model.
        """
        input_ids = kwargs.pop("input_ids", inputs)
        pixel_values = kwargs.get("pixel_values")
        if input_ids is None or pixel_values is None:
            if num_visual_tokens is not None:
                self.model.resolve_num_visual_tokens(num_visual_tokens, 0 if pixel_values is None else len(pixel_values))
            return super().generate(input_ids, *args, **kwargs)

        image_inputs = {name: kwargs[name] for name in self.model.image_input_names if kwargs.get(name) is not None}
        expanded_ids, attention_mask, _, counts = self.model.expand_image_placeholders(
            input_ids,
            pixel_values.shape[0],
            num_visual_tokens,
            kwargs.pop("attention_mask", None),
            image_layouts=self.model.image_layouts(pixel_values, **image_inputs),
        )
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask
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
