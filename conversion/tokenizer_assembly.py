"""Tokenizer and processor of the converted model: `<image>` and `<pad>` added as the llava-hf conversion does,
left padding for batched generation, the vicuna_v1 chat template of LLaVA-1.5 and both Matryoshka releases (a
llava-hf LLaVA-NeXT source keeps the chat template it ships). LLaVA-NeXT sources get the anyres processor."""

from dataclasses import dataclass

from transformers import AddedToken, AutoTokenizer

from modeling_matryoshka_llava import (
    MatryoshkaLlavaImageProcessor,
    MatryoshkaLlavaNextImageProcessor,
    MatryoshkaLlavaNextProcessor,
    MatryoshkaLlavaProcessor,
)

from .errors import ConversionError
from .source_model import SourceModel

IMAGE_TOKEN = "<image>"
PAD_TOKEN = "<pad>"
# New embedding rows are padded to a multiple of 64, as in transformers' LLaVA conversion (faster matmuls).
VOCAB_MULTIPLE = 64


@dataclass
class TokenizerPlan:
    tokenizer: object
    added_tokens: list[str]
    vocab_size: int  # rows of the converted embedding matrices
    image_token_index: int


def assemble_tokenizer(source: SourceModel) -> TokenizerPlan:
    try:
        # The language model's config tells AutoTokenizer the family (the source config's model_type may be LLaVA's).
        tokenizer = AutoTokenizer.from_pretrained(source.folder, config=source.text_config)
    except (OSError, ValueError, ImportError) as error:
        raise ConversionError(f"Cannot load the tokenizer of {source.name}: {error}") from error
    before = len(tokenizer)
    added = []
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
        added.append(IMAGE_TOKEN)
    # Original LLaVA pads with <unk>; a distinct pad token keeps padding out of the model's vocabulary of words.
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.unk_token:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
        if len(tokenizer) > before + len(added):
            added.append(PAD_TOKEN)
    tokenizer.padding_side = "left"
    image_token_index = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if source.image_token_index is not None and source.image_token_index != image_token_index:
        raise ConversionError(
            f"The source config says the image token is id {source.image_token_index}, but its tokenizer maps "
            f"{IMAGE_TOKEN} to {image_token_index}."
        )
    rows = source.vocab_rows
    needed = len(tokenizer)
    vocab_size = rows if needed <= rows else -(-needed // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    return TokenizerPlan(tokenizer, added, vocab_size, image_token_index)


def build_processor(source: SourceModel, tokenizer) -> MatryoshkaLlavaProcessor:
    if source.is_llava_next:
        try:
            image_processor = MatryoshkaLlavaNextImageProcessor(**source.image_processor_kwargs)
        except ValueError as error:
            raise ConversionError(f"The source's image preprocessing does not fit LLaVA-NeXT: {error}") from error
    else:
        image_processor = MatryoshkaLlavaImageProcessor(**source.image_processor_kwargs)
    crop = image_processor.crop_size
    image_size = source.vision_config.image_size
    if (crop["height"], crop["width"]) != (image_size, image_size):
        raise ConversionError(
            f"The image preprocessing crops to {crop['height']}x{crop['width']} but the vision tower expects "
            f"{image_size}x{image_size}: the CLIP checkpoint does not match the model."
        )
    if source.is_llava_next:
        return MatryoshkaLlavaNextProcessor(
            image_processor=image_processor, tokenizer=tokenizer, chat_template=source.chat_template
        )
    return MatryoshkaLlavaProcessor(image_processor=image_processor, tokenizer=tokenizer)
