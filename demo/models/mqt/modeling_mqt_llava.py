"""MQT-LLaVA: LLaVA-1.5 whose MLP projector is a Matryoshka query transformer; a request uses its first m queries."""

import torch

from .configuration_mqt_llava import MQTLlavaConfig
from .modeling_matryoshka_base import (
    MatryoshkaLlavaForConditionalGenerationBase,
    MatryoshkaLlavaModelBase,
    register_llava_key_mapping,
)
from .token_reducers import MatryoshkaQueryTransformer


class MQTLlavaModel(MatryoshkaLlavaModelBase):
    config_class = MQTLlavaConfig
    config: MQTLlavaConfig

    def build_projector(self, config: MQTLlavaConfig) -> MatryoshkaQueryTransformer:
        return MatryoshkaQueryTransformer.from_config(config)

    def _init_weights(self, module):
        if isinstance(module, MatryoshkaQueryTransformer):
            module.reset_parameters()
        else:
            super()._init_weights(module)

    def reduce_image_features(
        self, encoded_images: torch.Tensor, counts_per_image: list[int], image_layouts=None
    ) -> list[torch.Tensor]:
        # Queries do not interact, so one pass with the largest count serves every image's first k_i outputs.
        tokens = self.multi_modal_projector(encoded_images, max(counts_per_image))  # (N, max k, text width)
        return [image_tokens[:count] for image_tokens, count in zip(tokens, counts_per_image)]


class MQTLlavaForConditionalGeneration(MatryoshkaLlavaForConditionalGenerationBase):
    config_class = MQTLlavaConfig
    config: MQTLlavaConfig
    base_model_class = MQTLlavaModel


register_llava_key_mapping(MQTLlavaConfig.model_type, MQTLlavaModel, "llava")

__all__ = ["MQTLlavaForConditionalGeneration", "MQTLlavaModel"]
