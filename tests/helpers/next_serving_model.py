"""An M3-LLaVA-NeXT folder for the serving tests, built from the shipped demo M3 model: its tower, projector and
language model (trained, so greedy answers are decided by clear margins, not by float noise), a seeded
`image_newline`, and LLaVA-NeXT's 1x2, 2x1 and 2x2 grids of the demo's 144 px crops. What it answers is beside the
point; that vLLM and transformers answer the same is the point."""

from pathlib import Path

import torch
from transformers import AutoProcessor

from modeling_matryoshka_llava import (
    M3LlavaForConditionalGeneration,
    M3LlavaNextConfig,
    M3LlavaNextForConditionalGeneration,
    MatryoshkaLlavaNextImageProcessor,
    MatryoshkaLlavaNextProcessor,
)

DEMO_M3 = Path(__file__).resolve().parents[2] / "demo" / "models" / "m3"
GRIDS = ((1, 2), (2, 1), (2, 2))  # (rows, columns) of crops


def build_next_serving_model(folder: Path, seed: int = 0) -> Path:
    """Write the M3-LLaVA-NeXT model and processor to `folder`; returns it."""
    m3 = M3LlavaForConditionalGeneration.from_pretrained(DEMO_M3)
    m3_processor = AutoProcessor.from_pretrained(DEMO_M3)
    crop = m3.config.vision_config.image_size
    pinpoints = [[rows * crop, columns * crop] for rows, columns in GRIDS]
    config = M3LlavaNextConfig(
        vision_config=m3.config.vision_config.to_dict(),
        text_config=m3.config.text_config.to_dict(),
        image_token_index=m3.config.image_token_index,
        projector_hidden_act=m3.config.projector_hidden_act,
        vision_feature_layer=m3.config.vision_feature_layer,
        vision_feature_select_strategy=m3.config.vision_feature_select_strategy,
        multimodal_projector_bias=m3.config.multimodal_projector_bias,
        tie_word_embeddings=m3.config.tie_word_embeddings,
        image_grid_pinpoints=pinpoints,
        matryoshka_scales=m3.config.matryoshka_scales,
        num_visual_tokens=m3.config.num_visual_tokens,
    )
    torch.manual_seed(seed)
    model = M3LlavaNextForConditionalGeneration(config).eval()
    weights = {name: value for name, value in m3.state_dict().items() if not name.startswith("model.count_chooser.")}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert missing == ["model.image_newline"] and not unexpected, (missing, unexpected)
    image_processor = MatryoshkaLlavaNextImageProcessor(
        image_grid_pinpoints=pinpoints, size={"shortest_edge": crop}, crop_size={"height": crop, "width": crop}
    )
    processor = MatryoshkaLlavaNextProcessor(
        image_processor=image_processor, tokenizer=m3_processor.tokenizer, chat_template=m3_processor.chat_template,
        valid_num_visual_tokens=config.matryoshka_scales,
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
