"""Shared fixtures of the conversion, card and push tests: tiny sources of every format, converted once per session.

Test modules load them with `pytest_plugins = ["conversion_fixtures"]`.
"""

import pytest
import torch
from original_checkpoints import (
    CASES,
    SOURCE_FORMATS,
    write_clip_checkpoint,
    write_llava_hf_checkpoint,
    write_original_checkpoint,
)


def build_sources(root):
    return {
        "clip": write_clip_checkpoint(root / "clip-vit"),
        "llava_hf": write_llava_hf_checkpoint(root / "llava-hf", layout="current", dtype=torch.float32),
        "llava_hf_legacy": write_llava_hf_checkpoint(root / "llava-hf-legacy", layout="legacy", dtype=torch.bfloat16),
        "llava": write_original_checkpoint(root / "llava", "llava", with_tower=True, fmt="bin", dtype=torch.float16),
        "llava_no_tower": write_original_checkpoint(root / "llava-no-tower", "llava", with_tower=False, num_shards=3),
        "m3_release": write_original_checkpoint(root / "m3", "m3", with_tower=True, dtype=torch.float16),
        "mqt_release": write_original_checkpoint(root / "mqt", "mqt", with_tower=False, dtype=torch.bfloat16),
    }


@pytest.fixture(scope="session")
def sources(tmp_path_factory):
    return build_sources(tmp_path_factory.mktemp("sources"))


@pytest.fixture(scope="session")
def converted(sources, tmp_path_factory):
    """(source, target) -> ConversionResult of a verified conversion; small shards so outputs are sharded too."""
    from matryoshka_llava.conversion import convert_checkpoint

    root = tmp_path_factory.mktemp("converted")
    results = {}
    for name, target in CASES:
        clip = None if SOURCE_FORMATS[name] == "llava-hf" else sources["clip"]
        results[name, target] = convert_checkpoint(
            sources[name], root / f"{name}-{target}", to=target, clip=clip, verify=True,
            max_shard_size="200KB", show_progress=False,
        )
    return results
