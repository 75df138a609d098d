"""Processing for Matryoshka LLaVA models: images and text in, model inputs out.

The processors, image processors, chat template and video collage travel with every checkpoint, so they live in
the remote-code bundle (`modeling_matryoshka_llava`); they are re-exported here next to what never travels:
`chat_prompt`, the one place the package's tools turn a question and its images into a prompt.
"""

from modeling_matryoshka_llava.anyres_layout import (
    LLAVA_NEXT_GRID_PINPOINTS,
    anyres_grid_pinpoints,
    anyres_num_image_tokens,
)
from modeling_matryoshka_llava.chat_templates import VICUNA_V1_CHAT_TEMPLATE, VICUNA_V1_SYSTEM_PROMPT
from modeling_matryoshka_llava.image_processing_matryoshka_llava import MatryoshkaLlavaImageProcessor, load_image
from modeling_matryoshka_llava.image_processing_matryoshka_llava_next import MatryoshkaLlavaNextImageProcessor
from modeling_matryoshka_llava.processing_matryoshka_llava import MatryoshkaLlavaProcessor
from modeling_matryoshka_llava.processing_matryoshka_llava_next import MatryoshkaLlavaNextProcessor
from modeling_matryoshka_llava.video_collage import read_video_frames, video_to_collage

from .prompts import chat_prompt

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
    "chat_prompt",
    "load_image",
    "read_video_frames",
    "video_to_collage",
]
