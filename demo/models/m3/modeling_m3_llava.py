"""M3-LLaVA: LLaVA-1.5 whose projected visual tokens are average-pooled to the requested count."""

import torch
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

from .configuration_m3_llava import M3LlavaConfig
from .modeling_matryoshka_base import MatryoshkaLlavaForConditionalGenerationBase, MatryoshkaLlavaModelBase
from .token_reducers import reduce_visual_tokens


class M3LlavaModel(MatryoshkaLlavaModelBase):
    config_class = M3LlavaConfig
    config: M3LlavaConfig

    def build_projector(self, config: M3LlavaConfig) -> LlavaMultiModalProjector:
        return LlavaMultiModalProjector(config)

    def encode_images(self, pixel_values: torch.Tensor, vision_feature_layer=None, vision_feature_select_strategy=None):
        # M3 pools *after* the projector, so the projector belongs to the work every count shares.
        features = super().encode_images(pixel_values, vision_feature_layer, vision_feature_select_strategy)
        return self.multi_modal_projector(features)

    def reduce_image_features(
        self, encoded_images: torch.Tensor, num_visual_tokens: list[int], image_layouts=None
    ) -> list[torch.Tensor]:
        reduced: list[torch.Tensor | None] = [None] * len(num_visual_tokens)
        for count in sorted(set(num_visual_tokens)):  # images sharing a count are pooled together
            indices = [i for i, k in enumerate(num_visual_tokens) if k == count]
            pooled = reduce_visual_tokens(encoded_images[indices], count, self.config.visual_token_reduction)
            for i, tokens in zip(indices, pooled):
                reduced[i] = tokens
        return reduced


class M3LlavaForConditionalGeneration(MatryoshkaLlavaForConditionalGenerationBase):
    config_class = M3LlavaConfig
    config: M3LlavaConfig
    base_model_class = M3LlavaModel


__all__ = ["M3LlavaForConditionalGeneration", "M3LlavaModel"]
