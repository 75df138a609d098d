"""Everything the remote-code bundle takes from transformers, in one place, with why it is stable.

These files run on the *user's* transformers, not on the release this package was tested with, so they use only
names transformers documents as public API. Every other file of the bundle imports transformers through this
module (tests/test_transformers_surface.py fails otherwise, and on any private or model-specific name here).
What changed across releases is adapted here too, once: `CACHE_NAME`.

Part of the remote-code bundle: imports only transformers and the standard library.
"""

import inspect

# Auto classes (docs: "Auto Classes"): build the vision tower and language model from their configs, and register
# the Matryoshka model types with the Auto API.
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageTextToText,
    AutoProcessor,
)

# Configuration classes (docs: the LLaVA and LLaVA-NeXT model pages): the Matryoshka configs extend them, so their
# fields, defaults and sub-configs are exactly LLaVA's.
from transformers import LlavaConfig, LlavaNextConfig

# Base classes of every model (docs: "Models", "Generation"): loading, saving, attention implementations,
# gradient checkpointing, tensor-parallel plans and `generate` come from them.
from transformers import GenerationMixin, PreTrainedModel

# The cache base class (docs: "Caching"), for type hints of the cache argument and output.
from transformers import Cache

# The base of every model output (docs: "Model outputs"); the bundle defines its own output dataclasses on it.
from transformers.utils import ModelOutput

# Weight initialisation that leaves loaded weights alone (transformers' own models and its modeling linter require
# it in `_init_weights`; torch.nn.init would overwrite weights already loaded from a checkpoint).
from transformers import initialization

# Processing base classes (docs: "Processors", "Image Processor", "Feature Extractor").
from transformers import BaseImageProcessor, BatchFeature, ProcessorMixin

# transformers' own checkpoint key mappings (docs: "Dynamic weight loading"): the Matryoshka model types reuse
# LLaVA's and LLaVA-NeXT's, so folders written by `LlavaForConditionalGeneration.save_pretrained`, in today's
# layout or a legacy one, load completely, and the next layout change is absorbed by transformers.
from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping


def _generation_cache_name() -> str:
    """The keyword under which `generate` passes the KV cache to `forward` and reads it back from the outputs.

    transformers 5.24 renamed it from `past_key_values` to `cache` (outputs then map `past_key_values` to `cache`
    with a deprecation warning). Read from `GenerationMixin`'s own signature, so any release is served.
    """
    parameters = inspect.signature(GenerationMixin.prepare_inputs_for_generation).parameters
    return "cache" if "cache" in parameters else "past_key_values"


CACHE_NAME = _generation_cache_name()

__all__ = [
    "CACHE_NAME",
    "AutoConfig",
    "AutoImageProcessor",
    "AutoModel",
    "AutoModelForImageTextToText",
    "AutoProcessor",
    "BaseImageProcessor",
    "BatchFeature",
    "Cache",
    "GenerationMixin",
    "LlavaConfig",
    "LlavaNextConfig",
    "ModelOutput",
    "PreTrainedModel",
    "ProcessorMixin",
    "get_checkpoint_conversion_mapping",
    "initialization",
    "register_checkpoint_conversion_mapping",
]
