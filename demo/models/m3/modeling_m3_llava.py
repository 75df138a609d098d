"""M3-LLaVA: LLaVA-1.5 whose projected visual tokens are average-pooled to the requested count."""

import torch

from .configuration_m3_llava import M3LlavaConfig
from .modeling_matryoshka_base import (
    MatryoshkaLlavaForConditionalGenerationBase,
    MatryoshkaLlavaModelBase,
    register_llava_key_mapping,
)
from .multimodal_projector import MatryoshkaMultiModalProjector
from .token_reducers import reduce_per_count


class M3LlavaModel(MatryoshkaLlavaModelBase):
    config_class = M3LlavaConfig
    config: M3LlavaConfig

    def build_projector(self, config: M3LlavaConfig) -> MatryoshkaMultiModalProjector:
        return MatryoshkaMultiModalProjector(config)

    def project_features(self, features: torch.Tensor) -> torch.Tensor:
        # M3 pools *after* the projector, so the projector belongs to the work every count shares.
        return self.multi_modal_projector(features)  # (N, patches, text width)

    def reduce_image_features(
        self, encoded_images: torch.Tensor, counts_per_image: list[int], image_layouts=None
    ) -> list[torch.Tensor]:
        return reduce_per_count(encoded_images, counts_per_image, self.config.visual_token_reduction)


class M3LlavaForConditionalGeneration(MatryoshkaLlavaForConditionalGenerationBase):
    config_class = M3LlavaConfig
    config: M3LlavaConfig
    base_model_class = M3LlavaModel


register_llava_key_mapping(M3LlavaConfig.model_type, M3LlavaModel, "llava")

__all__ = ["M3LlavaForConditionalGeneration", "M3LlavaModel"]
