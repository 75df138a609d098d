"""Processor of M3-LLaVA and MQT-LLaVA: images + text in, one set of inputs that serves every visual-token count.

Each `<image>` in the text stays a single placeholder token by default; the model expands it to the count asked
for at `forward`/`generate` time (see the model's `image_placeholders`). Passing `num_visual_tokens` here expands
the placeholders in the text instead, like transformers' own LLaVA processor does with 576.
Part of the remote-code bundle: imports only transformers and its dependencies.
"""

import re
from collections.abc import Sequence


from .chat_templates import VICUNA_V1_CHAT_TEMPLATE
from .transformers_imports import BatchFeature, ProcessorMixin
from .visual_token_counts import ANY_POSITIVE_COUNT, processor_count_settings, resolve_num_visual_tokens


class MatryoshkaLlavaProcessor(ProcessorMixin):
    r"""
    Wraps a [`MatryoshkaLlavaImageProcessor`] and a tokenizer that knows `image_token` as a special token.

    Args:
        image_processor: the image processor.
        tokenizer: the tokenizer (`<image>` added as a special token).
        chat_template (`str`, *optional*): defaults to the vicuna_v1 template of LLaVA-1.5.
        image_token (`str`, defaults to `"<image>"`): the image placeholder.
        valid_num_visual_tokens (`list[int]`, *optional*): the counts the model accepts (M3's scales), or
        max_num_visual_tokens (`int`, *optional*): M, for a model accepting any count 1..M (MQT). Saved with the
            processor (`processor_count_settings(config)` gives them), so that an invalid `num_visual_tokens` is
            refused here, before any text is tokenised, as the model would refuse it.
    """

    # Sub-processors are loaded by the Auto classes from their own configs (no `*_class` attributes, which current
    # transformers deprecates; every supported release infers them from `__init__`).

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        chat_template=None,
        image_token: str = "<image>",
        valid_num_visual_tokens: list[int] | None = None,
        max_num_visual_tokens: int | None = None,
        **kwargs,
    ):
        self.image_token = image_token
        self.valid_num_visual_tokens = list(valid_num_visual_tokens) if valid_num_visual_tokens is not None else None
        self.max_num_visual_tokens = max_num_visual_tokens
        super().__init__(image_processor, tokenizer, chat_template=chat_template or VICUNA_V1_CHAT_TEMPLATE)

    @property
    def accepted_num_visual_tokens(self) -> Sequence[int] | None:
        """The model's valid counts, when they were saved with this processor."""
        if self.valid_num_visual_tokens is not None:
            return self.valid_num_visual_tokens
        if self.max_num_visual_tokens is not None:
            return range(1, self.max_num_visual_tokens + 1)
        return None

    def set_model_counts(self, config) -> None:
        """Keep the counts `config`'s model accepts, to be saved with this processor."""
        self.valid_num_visual_tokens = self.max_num_visual_tokens = None
        for name, value in processor_count_settings(config).items():
            setattr(self, name, value)

    # What a count may be when the model's counts were not saved with the processor (the model checks again).
    unknown_model_counts = ANY_POSITIVE_COUNT

    def counts_per_image(self, num_visual_tokens, num_images: int) -> list[int]:
        """One checked count per image, by the models' own rule (ValueError naming the valid values)."""
        valid = self.accepted_num_visual_tokens or self.unknown_model_counts
        return resolve_num_visual_tokens(num_visual_tokens, valid, num_images)

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
            num_visual_tokens (`int`, `list[int]` or `"auto"`, *optional*): expand each placeholder to this many
                tokens now (one value, or one per image). By default (and with `"auto"`, where the model chooses)
                placeholders stay compact and the model expands them, so one call serves every count.
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
        # "auto": the model chooses each image's count at generate time, so the placeholders stay compact.
        if num_visual_tokens is not None and not (isinstance(num_visual_tokens, str) and num_visual_tokens == "auto"):
            texts = self._expand_placeholders(texts, run_pattern, num_visual_tokens, num_images)
        data = dict(image_inputs)
        if texts:
            data.update(self.tokenizer(texts, return_tensors=return_tensors, **kwargs))
        return BatchFeature(data, tensor_type=return_tensors)

    def _expand_placeholders(self, texts: list[str], run_pattern, num_visual_tokens, num_images: int) -> list[str]:
        return self._expand_runs(texts, run_pattern, self.counts_per_image(num_visual_tokens, num_images))

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
