"""Named model shapes for the cost model and the speed benchmark (architecture only: no weights are involved).

The 7B shapes are those of the released checkpoints' config.json files (CLIP ViT-L/14-336 + Vicuna-7B, vocabulary
padded to 32064), so `matryoshka-llava cost` works offline; any config.json folder or Hub id works too.
"""

import copy
import os

# transformers and the bundle are imported inside the builders: the command line lists these names in its help
# without paying for them.

LLAVA_NEXT_GRID_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]


def clip_vit_large_336():
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=336,
        patch_size=14, projection_dim=768, hidden_act="quick_gelu",
    )


def vicuna_7b():
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5, pad_token_id=32001,
    )


def _llava_kwargs(vision, text) -> dict:
    return {"vision_config": vision.to_dict(), "text_config": text.to_dict(), "image_token_index": 32000}


def llava_15_7b():
    from transformers import LlavaConfig

    return LlavaConfig(**_llava_kwargs(clip_vit_large_336(), vicuna_7b()))


def m3_llava_15_7b():
    from modeling_matryoshka_llava import M3LlavaConfig

    return M3LlavaConfig(**_llava_kwargs(clip_vit_large_336(), vicuna_7b()))


def mqt_llava_7b():
    from modeling_matryoshka_llava import MQTLlavaConfig

    return MQTLlavaConfig(**_llava_kwargs(clip_vit_large_336(), vicuna_7b()), num_queries=256, query_num_heads=16)


def llava_next_7b():
    from transformers import LlavaNextConfig

    return LlavaNextConfig(**_llava_kwargs(clip_vit_large_336(), vicuna_7b()), image_grid_pinpoints=LLAVA_NEXT_GRID_PINPOINTS)


def bench_vision():
    """The speed benchmark's tower: CLIP-L's 336 px / patch 14 geometry (the real 24x24 grid), narrower and shallower
    so that the whole benchmark runs in minutes on two shared CPU cores."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=384, intermediate_size=1536, num_hidden_layers=4, num_attention_heads=6, image_size=336,
        patch_size=14, projection_dim=384, hidden_act="quick_gelu",
    )


def bench_text():
    """The speed benchmark's language model: Vicuna's layout (vocabulary included) at 3/16 of its width, 6 layers."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=32064, hidden_size=768, intermediate_size=2048, num_hidden_layers=6, num_attention_heads=12,
        num_key_value_heads=12, max_position_embeddings=4096, rms_norm_eps=1e-5, pad_token_id=32001,
        bos_token_id=1, eos_token_id=2,
    )


def bench_m3():
    from modeling_matryoshka_llava import M3LlavaConfig

    return M3LlavaConfig(**_llava_kwargs(bench_vision(), bench_text()))


def bench_mqt():
    from modeling_matryoshka_llava import MQTLlavaConfig

    return MQTLlavaConfig(**_llava_kwargs(bench_vision(), bench_text()), num_queries=256, query_num_heads=6)


ARCHITECTURES = {
    "llava-1.5-7b": llava_15_7b,
    "m3-llava-1.5-7b": m3_llava_15_7b,
    "mqt-llava-7b": mqt_llava_7b,
    "llava-next-7b": llava_next_7b,
    "bench-m3": bench_m3,
    "bench-mqt": bench_mqt,
}


def load_architecture(name_or_path: str):
    """A named shape (see `ARCHITECTURES`), or the config of a checkpoint folder / config.json / Hub id."""
    from transformers import AutoConfig

    import modeling_matryoshka_llava  # noqa: F401  (the Matryoshka model types, registered with AutoConfig)

    if name_or_path in ARCHITECTURES:
        return ARCHITECTURES[name_or_path]()
    path = os.fspath(name_or_path)
    if os.path.isfile(path) and path.endswith(".json"):
        path = os.path.dirname(path) or "."
    try:
        return copy.deepcopy(AutoConfig.from_pretrained(path))
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{name_or_path!r} is neither a named architecture ({sorted(ARCHITECTURES)}) nor a loadable config "
            f"({error})."
        ) from error
