"""matryoshka-llava: M3-LLaVA(-NeXT) and MQT-LLaVA as transformers models with a per-request `num_visual_tokens`.

Importing the package registers the model types `m3_llava`, `m3_llava_next` and `mqt_llava` with transformers'
Auto classes (so
`trust_remote_code` is not needed while it is installed) and marks the classes for remote code, so that
`save_pretrained` writes a folder that loads with only torch + transformers.
"""

from .configuration_m3_llava import M3LlavaConfig
from .configuration_m3_llava_next import M3LlavaNextConfig
from .configuration_mqt_llava import MQTLlavaConfig
from .modeling_m3_llava import M3LlavaForConditionalGeneration, M3LlavaModel
from .modeling_m3_llava_next import M3LlavaNextForConditionalGeneration, M3LlavaNextModel
from .modeling_mqt_llava import MQTLlavaForConditionalGeneration, MQTLlavaModel
from .image_processing_matryoshka_llava import MatryoshkaLlavaImageProcessor
from .image_processing_matryoshka_llava_next import MatryoshkaLlavaNextImageProcessor
from .processing_matryoshka_llava import MatryoshkaLlavaProcessor
from .processing_matryoshka_llava_next import MatryoshkaLlavaNextProcessor
from .transformers_imports import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageTextToText,
    AutoProcessor,
)


def _register() -> None:
    llava_processing = (MatryoshkaLlavaImageProcessor, MatryoshkaLlavaProcessor)
    next_processing = (MatryoshkaLlavaNextImageProcessor, MatryoshkaLlavaNextProcessor)
    for config_class, base_model, model, (image_processor, processor) in (
        (M3LlavaConfig, M3LlavaModel, M3LlavaForConditionalGeneration, llava_processing),
        (MQTLlavaConfig, MQTLlavaModel, MQTLlavaForConditionalGeneration, llava_processing),
        (M3LlavaNextConfig, M3LlavaNextModel, M3LlavaNextForConditionalGeneration, next_processing),
    ):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, base_model, exist_ok=True)
        AutoModelForImageTextToText.register(config_class, model, exist_ok=True)
        AutoImageProcessor.register(config_class, slow_image_processor_class=image_processor, exist_ok=True)
        AutoProcessor.register(config_class, processor, exist_ok=True)
        config_class.register_for_auto_class("AutoConfig")
        base_model.register_for_auto_class("AutoModel")
        model.register_for_auto_class("AutoModelForImageTextToText")
    for image_processor in (MatryoshkaLlavaImageProcessor, MatryoshkaLlavaNextImageProcessor):
        image_processor.register_for_auto_class("AutoImageProcessor")
    for processor in (MatryoshkaLlavaProcessor, MatryoshkaLlavaNextProcessor):
        processor.register_for_auto_class("AutoProcessor")


_register()

__all__ = [
    "M3LlavaConfig",
    "M3LlavaForConditionalGeneration",
    "M3LlavaModel",
    "M3LlavaNextConfig",
    "M3LlavaNextForConditionalGeneration",
    "M3LlavaNextModel",
    "MQTLlavaConfig",
    "MQTLlavaForConditionalGeneration",
    "MQTLlavaModel",
    "MatryoshkaLlavaImageProcessor",
    "MatryoshkaLlavaNextImageProcessor",
    "MatryoshkaLlavaNextProcessor",
    "MatryoshkaLlavaProcessor",
]
