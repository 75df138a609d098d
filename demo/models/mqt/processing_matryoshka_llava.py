"""Processor of M3-LLaVA and MQT-LLaVA: images + text in, one set of inputs that serves every visual-token count.

Each `<image>` in the text stays a single placeholder token by default; the model expands it to the count asked
for at `forward`/`generate` time (see the model's `image_placeholders`). Passing `num_visual_tokens` here expands
the placeholders in the text instead, like transformers' own LLaVA processor does with 576.
Part of the remote-code bundle: imports only transformers and its dependencies.
"""

import re
from numbers import Integral


from .chat_templates import VICUNA_V1_CHAT_TEMPLATE
from .transformers_imports import BatchFeature, ProcessorMixin


class MatryoshkaLlavaProcessor(ProcessorMixin):
    r"""
    Wraps a [`MatryoshkaLlavaImageProcessor`] and a tokenizer that knows `image_token` as a special token.

    Args:
        image_processor: the image processor.
        tokenizer: the tokenizer (`<image>` added as a special token).
        chat_template (`str`, *optional*): defaults to the vicuna_v1 template of LLaVA-1.5.
        image_token (`str`, defaults to `"<image>"`): the image placeholder.
    """

    image_processor_class = "AutoImageProcessor"
    tokenizer_class = "AutoTokenizer"

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, image_token: str = "<image>", **kwargs):
        self.image_token = image_token
        super().__init__(image_processor, tokenizer, chat_template=chat_template or VICUNA_V1_CHAT_TEMPLATE)

    @property
    def image_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(self.image_token)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values"]

    def __call__(self, images=None, text=None, num_visual_tokens=None, return_tensors=None, **kwargs) -> BatchFeature:
        r"""
        Args:
            images: PIL images, numpy arrays, torch tensors, file paths or bytes (one, a list, or a list per sample).
            text (`str` or `list[str]`): prompts holding one `image_token` per image, in order.
            num_visual_tokens (`int` or `list[int]`, *optional*): expand each placeholder to this many tokens now
                (one value, or one per image). By default placeholders stay compact and the model expands them,
                so one call serves every count.
            return_tensors: as for the tokenizer; other keyword arguments (padding, padding_side, ...) go to it.
        """
        texts = [text] if isinstance(text, str) else list(text) if text is not None else []
        image_inputs = self.image_processor(images, return_tensors=return_tensors) if images is not None else {}
        num_images = len(image_inputs["pixel_values"]) if images is not None else 0
        run_pattern = re.compile(f"(?:{re.escape(self.image_token)})+")
        num_runs = sum(len(run_pattern.findall(sample)) for sample in texts)
        if texts and num_runs != num_images:
            raise ValueError(
                f"The text holds {num_runs} `{self.image_token}` placeholders but {num_images} images were given: "
                "give one placeholder per image (separate adjacent images by at least one other character)."
            )
        if num_visual_tokens is not None:
            texts = self._expand_placeholders(texts, run_pattern, num_visual_tokens, num_images)
        data = dict(image_inputs)
        if texts:
            data.update(self.tokenizer(texts, return_tensors=return_tensors, **kwargs))
        return BatchFeature(data, tensor_type=return_tensors)

    def _expand_placeholders(self, texts: list[str], run_pattern, num_visual_tokens, num_images: int) -> list[str]:
        counts = list(num_visual_tokens) if isinstance(num_visual_tokens, (list, tuple)) else [num_visual_tokens] * num_images
        if len(counts) != num_images:
            raise ValueError(f"num_visual_tokens has {len(counts)} values for {num_images} images.")
        for count in counts:
            if isinstance(count, bool) or not isinstance(count, Integral) or count < 1:
                raise ValueError(
                    f"num_visual_tokens={count!r} is not a positive integer; the model lists its valid values "
                    "in `config.valid_num_visual_tokens`."
                )
        return self._expand_runs(texts, run_pattern, counts)

    def _expand_runs(self, texts: list[str], run_pattern, tokens_per_image: list[int]) -> list[str]:
        """Each placeholder run (in order) becomes its image's number of tokens; a longer run must already match."""
        remaining = iter(tokens_per_image)

        def expand(match: re.Match) -> str:
            count = next(remaining)
            length = len(match.group(0)) // len(self.image_token)
            if length not in (1, count):
                raise ValueError(f"A run of {length} placeholders cannot be expanded to {count} visual tokens.")
            return self.image_token * count

        return [run_pattern.sub(expand, sample) for sample in texts]


__all__ = ["MatryoshkaLlavaProcessor"]
