"""config.json (with `auto_map`), generation_config.json and the remote-code files of a converted checkpoint:
exactly what `save_pretrained` writes for these models, without materialising any weights."""

from pathlib import Path

import torch
from transformers.dynamic_module_utils import custom_object_save


def save_config_and_code(folder: Path, model_class, config) -> None:
    with torch.device("meta"):
        model = model_class(config)
    # The full model's Auto entry, then the base model's (as MatryoshkaLlavaPreTrainedModel.save_pretrained adds it),
    # then config.save_pretrained adds AutoConfig; each call also copies the modules the class needs.
    custom_object_save(model, folder, config=config)
    custom_object_save(model.model, folder, config=config)
    config.architectures = [model_class.__name__]
    config.save_pretrained(folder)
    model.generation_config.save_pretrained(folder)
