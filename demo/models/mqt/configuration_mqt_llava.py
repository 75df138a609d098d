"""MQT-LLaVA configuration: LLaVA-1.5 whose MLP projector is a Matryoshka query transformer."""

import math

from .count_chooser import check_count_chooser_fields
from .transformers_imports import LlavaConfig
from .visual_token_counts import check_count, is_integer


class MQTLlavaConfig(LlavaConfig):
    r"""
    Configuration of [`MQTLlavaForConditionalGeneration`] (Matryoshka Query Transformer, Hu et al. 2024): the
    projector is one cross-attention of `num_queries` learned queries over the vision features; a request uses the
    first `num_visual_tokens` of them.

    num_queries (`int`, *optional*, defaults to 256):
        M, the number of latent queries; a square, since query i carries cell i of a sqrt(M) x sqrt(M) grid.
    query_num_heads (`int`, *optional*, defaults to 16):
        Attention heads of the query transformer. Its width is the vision feature width.
    query_layer_norm_eps (`float`, *optional*, defaults to 1e-6):
        Epsilon of the query, key and value layer norms.
    image_dependent_keys (`bool`, *optional*, defaults to `False`):
        `False` reproduces the released model, whose attention keys carry position only; `True` builds keys from
        the image features plus positions (as in Qwen-VL's resampler).
    num_visual_tokens (`int`, *optional*):
        The count used when a request names none: any integer in 1..M. Defaults to M, never a random value.
    projector_is_trained (`bool`, *optional*, defaults to `True`):
        `False` for a checkpoint whose query transformer was freshly initialised (e.g. converted from plain
        LLaVA-1.5) and still needs training.
    count_chooser_counts (`list[int]`, *optional*):
        The counts `num_visual_tokens="auto"` chooses among (see `count_chooser`); None: the model has no chooser.
    count_chooser_hidden_size (`int`, *optional*, defaults to 64):
        Width of the chooser's hidden layer.
    count_chooser_threshold (`float`, *optional*, defaults to 0.5):
        "auto" takes the smallest candidate whose predicted probability of a right answer reaches it: lower spends
        fewer tokens, higher answers more questions right.

    Example:

    ```python
    >>> from modeling_matryoshka_llava import MQTLlavaConfig, MQTLlavaForConditionalGeneration
    >>> model = MQTLlavaForConditionalGeneration(MQTLlavaConfig())  # LLaVA-1.5-7B shapes, M = 256
    ```
    """

    model_type = "mqt_llava"

    num_queries: int = 256
    query_num_heads: int = 16
    query_layer_norm_eps: float = 1e-6
    image_dependent_keys: bool = False
    num_visual_tokens: int | None = None
    projector_is_trained: bool = True
    count_chooser_counts: list[int] | None = None
    count_chooser_hidden_size: int = 64
    count_chooser_threshold: float = 0.5

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if not is_integer(self.num_queries) or self.num_queries < 1 or math.isqrt(self.num_queries) ** 2 != self.num_queries:
            raise ValueError(f"num_queries must be a positive square (queries tile a grid), got {self.num_queries}.")
        if self.query_hidden_size % self.query_num_heads != 0:
            raise ValueError(
                f"The query transformer width {self.query_hidden_size} (the vision feature width) is not divisible "
                f"by query_num_heads={self.query_num_heads}."
            )
        if self.num_visual_tokens is None:
            self.num_visual_tokens = self.num_queries
        self.num_visual_tokens = check_count(self.num_visual_tokens, self.valid_num_visual_tokens)
        self.image_seq_length = self.num_queries
        check_count_chooser_fields(self)

    @property
    def query_hidden_size(self) -> int:
        """Width of the queries: the vision feature width (times the number of feature layers concatenated)."""
        num_layers = 1 if isinstance(self.vision_feature_layer, int) else len(self.vision_feature_layer)
        return self.vision_config.hidden_size * num_layers

    @property
    def valid_num_visual_tokens(self) -> range:
        return range(1, self.num_queries + 1)


__all__ = ["MQTLlavaConfig"]
