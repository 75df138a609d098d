"""vLLM plugin (entry point group `vllm.general_plugins`): registers the M3, MQT and M3-LLaVA-NeXT architectures,
so that `vllm serve FOLDER` and `LLM(FOLDER)` serve the folders this package writes, with no extra files.

The model classes are registered by name ("module:Class"): vLLM imports them only where it builds a model, never
while loading plugins. The configs and processors are registered with transformers' Auto classes (importing the
bundle), so no `--trust-remote-code` is needed either.
"""

# config.json `architectures` -> the vLLM implementation in `vllm_models`.
ARCHITECTURES = {
    "M3LlavaForConditionalGeneration": "M3LlavaForVllm",
    "MQTLlavaForConditionalGeneration": "MQTLlavaForVllm",
    "M3LlavaNextForConditionalGeneration": "M3LlavaNextForVllm",
}


def register() -> None:
    import modeling_matryoshka_llava  # noqa: F401  (registers configs, models and processors with the Auto classes)
    from vllm import ModelRegistry

    for architecture, implementation in ARCHITECTURES.items():
        ModelRegistry.register_model(architecture, f"matryoshka_llava.serving.vllm_models:{implementation}")
