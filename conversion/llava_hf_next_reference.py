"""transformers' own `LlavaNextForConditionalGeneration`, loaded from a llava-hf LLaVA-NeXT source: what `--verify`
compares its conversion with.

At the full grid the logits are those of transformers' forward, unchanged. At a smaller count (M3 pooling, which
transformers does not have) its vision tower, projector, language model and `image_newline` compute the tokens,
each crop's grid average-pooled and laid out as LLaVA-NeXT does (`original_anyres.spatial_unpad_layout`, with
transformers' un-padding).
"""

import torch
from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration

from .errors import VerificationError
from .original_anyres import spatial_unpad_layout
from .original_reference import IMAGE_TOKEN_INDEX, average_pool_grid
from .source_model import SourceModel


def llava_next_functions():
    """transformers' own LLaVA-NeXT grid and un-padding functions, deliberately (the reference must not share this
    package's `anyres_layout`). They are model internals, so imported only when a verification needs them."""
    try:
        from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape, unpad_image
    except ImportError as error:
        raise VerificationError(
            f"This transformers release no longer has LLaVA-NeXT's grid functions ({error}); convert without "
            "--verify, or verify with a transformers release from 5.18 to 5.24."
        ) from error
    return get_anyres_image_grid_shape, unpad_image


def llava_hf_next_grid_shape(source: SourceModel, image_size: tuple[int, int]) -> tuple[int, int]:
    """(rows, columns) transformers cuts an image of (height, width) into with the source config's pinpoints."""
    config = LlavaNextConfig.from_dict(source.config)
    pinpoints = [list(pinpoint) for pinpoint in config.image_grid_pinpoints]
    get_anyres_image_grid_shape, _ = llava_next_functions()
    return tuple(get_anyres_image_grid_shape(list(image_size), pinpoints, config.vision_config.image_size))


class LlavaHfNextReference:
    def __init__(self, source: SourceModel):
        self.model = LlavaNextForConditionalGeneration.from_pretrained(source.folder, dtype=torch.float32).eval()
        self.config = self.model.config
        self._features = None

    @torch.no_grad()
    def logits(self, input_ids: list[int], pixel_values=None, num_visual_tokens: int = 0, projector=None,
               image_size: tuple[int, int] | None = None) -> torch.Tensor:
        if IMAGE_TOKEN_INDEX not in input_ids:
            return self.model(input_ids=torch.tensor([input_ids])).logits[0]
        position = input_ids.index(IMAGE_TOKEN_INDEX)
        image_sizes = torch.tensor([image_size])
        vision = self.config.vision_config
        if num_visual_tokens == (vision.image_size // vision.patch_size) ** 2:  # LLaVA-NeXT exactly
            features = self.model.model.get_image_features(
                pixel_values, image_sizes, vision_feature_layer=self.config.vision_feature_layer,
                vision_feature_select_strategy=self.config.vision_feature_select_strategy,
            ).pooler_output
            count = features[0].shape[0]
            ids = input_ids[:position] + [self.config.image_token_id] * count + input_ids[position + 1 :]
            return self.model(input_ids=torch.tensor([ids]), pixel_values=pixel_values, image_sizes=image_sizes).logits[0]
        get_anyres_image_grid_shape, unpad_image = llava_next_functions()
        grid_shape = tuple(get_anyres_image_grid_shape(list(image_size), self.config.image_grid_pinpoints, vision.image_size))
        crops = pixel_values[0, : 1 + grid_shape[0] * grid_shape[1]]
        pooled = average_pool_grid(self.model.model.multi_modal_projector(self.vision_features(crops)), num_visual_tokens)
        image = spatial_unpad_layout(pooled, grid_shape, image_size, self.model.model.image_newline, unpad=unpad_image)
        embed = self.model.get_input_embeddings()
        embeds = torch.cat([embed(torch.tensor(input_ids[:position])), image, embed(torch.tensor(input_ids[position + 1 :]))])
        hidden = self.model.model.language_model(inputs_embeds=embeds[None]).last_hidden_state
        return self.model.lm_head(hidden)[0]

    @torch.no_grad()
    def vision_features(self, crops: torch.Tensor) -> torch.Tensor:
        """Selected hidden states of the crops (CLS dropped), computed once per image whatever the count."""
        if self._features is None or not torch.equal(self._features[0], crops):
            hidden_states = self.model.model.vision_tower(crops, output_hidden_states=True).hidden_states
            layers = self.config.vision_feature_layer
            layers = [layers] if isinstance(layers, int) else layers
            features = torch.cat([hidden_states[layer] for layer in layers], dim=-1)[:, 1:]
            self._features = (crops, features)
        return self._features[1]
