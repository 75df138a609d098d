"""The outputs of the Matryoshka models: their own `ModelOutput` dataclasses, never another model's classes.

Field order and meaning follow transformers' LLaVA outputs, so tuple indexing (`return_dict=False`) and attribute
access read the same. The cache field carries the name the running transformers' `generate` uses (`CACHE_NAME`:
`cache` from 5.24, `past_key_values` before; from 5.24 `ModelOutput` also answers `past_key_values`), which is
why the classes are built with `dataclasses.make_dataclass` instead of a class statement.

Part of the remote-code bundle: imports only torch, transformers and the standard library.
"""

import dataclasses

import torch

from .transformers_imports import CACHE_NAME, Cache, ModelOutput


def _output_class(name: str, doc: str, fields: list[tuple[str, object]]) -> type[ModelOutput]:
    """A `ModelOutput` dataclass whose fields all default to None (ModelOutput drops None fields from tuples)."""
    return dataclasses.make_dataclass(
        name,
        [(field, annotation, dataclasses.field(default=None)) for field, annotation in fields],
        bases=(ModelOutput,),
        namespace={"__doc__": doc, "__module__": __name__},
    )


MatryoshkaModelOutputWithPast = _output_class(
    "MatryoshkaModelOutputWithPast",
    """Output of the Matryoshka base models (vision tower + projector + token reduction + language model).

    last_hidden_state (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`):
        The language model's last hidden states.
    cache / past_key_values (`Cache`, *optional*): the KV cache, under the name the running transformers uses.
    hidden_states, attentions (`tuple(torch.FloatTensor)`, *optional*): as any transformers decoder returns them.
    image_hidden_states (`torch.FloatTensor` of shape `(num_visual_tokens_total, hidden_size)`, *optional*):
        The visual tokens merged into the sequence, every image's in order, at the requested counts.
    """,
    [
        ("last_hidden_state", torch.FloatTensor | None),
        (CACHE_NAME, Cache | None),
        ("hidden_states", tuple[torch.FloatTensor, ...] | None),
        ("attentions", tuple[torch.FloatTensor, ...] | None),
        ("image_hidden_states", torch.FloatTensor | None),
    ],
)

MatryoshkaCausalLMOutputWithPast = _output_class(
    "MatryoshkaCausalLMOutputWithPast",
    """Output of the Matryoshka models with a language-modelling head.

    loss (`torch.FloatTensor` of shape `(1,)`, *optional*): the causal-LM loss when `labels` are given (with
        `multi_scale_num_visual_tokens`, the mean of the per-count losses).
    logits (`torch.FloatTensor` of shape `(batch_size, sequence_length, vocab_size)`): next-token scores.
    cache / past_key_values (`Cache`, *optional*): the KV cache, under the name the running transformers uses.
    hidden_states, attentions (`tuple(torch.FloatTensor)`, *optional*): as any transformers decoder returns them.
    image_hidden_states (`torch.FloatTensor` of shape `(num_visual_tokens_total, hidden_size)`, *optional*):
        The visual tokens merged into the sequence, every image's in order, at the requested counts.
    loss_per_num_visual_tokens (`torch.FloatTensor` of shape `(num_counts,)`, *optional*):
        With `multi_scale_num_visual_tokens`: the loss at each count, in the order given.
    """,
    [
        ("loss", torch.FloatTensor | None),
        ("logits", torch.FloatTensor | None),
        (CACHE_NAME, Cache | None),
        ("hidden_states", tuple[torch.FloatTensor, ...] | None),
        ("attentions", tuple[torch.FloatTensor, ...] | None),
        ("image_hidden_states", torch.FloatTensor | None),
        ("loss_per_num_visual_tokens", torch.FloatTensor | None),
    ],
)

__all__ = ["MatryoshkaCausalLMOutputWithPast", "MatryoshkaModelOutputWithPast"]
