"""LLaVA's two-layer MLP projector from vision features to language-model embeddings, owned by the bundle.

Same parameters and names as transformers' LLaVA / LLaVA-NeXT projector (`linear_1`, `act`, `linear_2`), so their
checkpoints load unchanged; written here because that class is a model-specific internal of transformers.
Part of the remote-code bundle: imports only torch.
"""

from torch import nn

# The activations LLaVA-family checkpoints use, as the torch modules that compute exactly what transformers'
# activation of the same name computes.
PROJECTOR_ACTIVATIONS = {
    "gelu": lambda: nn.GELU(),
    "gelu_pytorch_tanh": lambda: nn.GELU(approximate="tanh"),
    "relu": lambda: nn.ReLU(),
    "silu": lambda: nn.SiLU(),
}


class MatryoshkaMultiModalProjector(nn.Module):
    """(N, patches, vision width x feature layers) -> (N, patches, text width): Linear, activation, Linear."""

    def __init__(self, config):
        super().__init__()
        if config.projector_hidden_act not in PROJECTOR_ACTIVATIONS:
            raise ValueError(
                f"projector_hidden_act={config.projector_hidden_act!r} is not supported; use one of "
                f"{sorted(PROJECTOR_ACTIVATIONS)}."
            )
        num_feature_layers = 1 if isinstance(config.vision_feature_layer, int) else len(config.vision_feature_layer)
        vision_width = config.vision_config.hidden_size * num_feature_layers
        text_width = config.text_config.hidden_size
        self.linear_1 = nn.Linear(vision_width, text_width, bias=config.multimodal_projector_bias)
        self.act = PROJECTOR_ACTIVATIONS[config.projector_hidden_act]()
        self.linear_2 = nn.Linear(text_width, text_width, bias=config.multimodal_projector_bias)

    def forward(self, image_features):
        return self.linear_2(self.act(self.linear_1(image_features)))


__all__ = ["MatryoshkaMultiModalProjector"]
