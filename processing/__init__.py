"""Processing for Matryoshka LLaVA models: images, videos, the chat template and the processors."""

from .chat_templates import VICUNA_V1_CHAT_TEMPLATE, VICUNA_V1_SYSTEM_PROMPT
from .image_processing_matryoshka_llava import MatryoshkaLlavaImageProcessor, load_image
from .image_processing_matryoshka_llava_next import (
    LLAVA_NEXT_GRID_PINPOINTS,
    MatryoshkaLlavaNextImageProcessor,
    anyres_grid_pinpoints,
    anyres_num_image_tokens,
)
from .processing_matryoshka_llava import MatryoshkaLlavaProcessor
from .processing_matryoshka_llava_next import MatryoshkaLlavaNextProcessor
from .video_collage import read_video_frames, video_to_collage

__all__ = [
    "LLAVA_NEXT_GRID_PINPOINTS",
    "VICUNA_V1_CHAT_TEMPLATE",
    "VICUNA_V1_SYSTEM_PROMPT",
    "MatryoshkaLlavaImageProcessor",
    "MatryoshkaLlavaNextImageProcessor",
    "MatryoshkaLlavaNextProcessor",
    "MatryoshkaLlavaProcessor",
    "anyres_grid_pinpoints",
    "anyres_num_image_tokens",
    "load_image",
    "read_video_frames",
    "video_to_collage",
]
