"""Processing for Matryoshka LLaVA models: images, the chat template and the processor."""

from .chat_templates import VICUNA_V1_CHAT_TEMPLATE, VICUNA_V1_SYSTEM_PROMPT
from .image_processing_matryoshka_llava import MatryoshkaLlavaImageProcessor, load_image
from .processing_matryoshka_llava import MatryoshkaLlavaProcessor

__all__ = [
    "MatryoshkaLlavaImageProcessor",
    "MatryoshkaLlavaProcessor",
    "VICUNA_V1_CHAT_TEMPLATE",
    "VICUNA_V1_SYSTEM_PROMPT",
    "load_image",
]
