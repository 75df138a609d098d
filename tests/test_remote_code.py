"""A `save_pretrained` folder loads with only torch + transformers (`trust_remote_code=True`)."""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from matryoshka_llava.processing import chat_prompt
from PIL import Image

CHECK_SCRIPT = Path(__file__).parent / "helpers" / "remote_code_check.py"
# CI points this at an interpreter with the oldest supported transformers (and without this package).
REMOTE_PYTHON = os.environ.get("MATRYOSHKA_REMOTE_CODE_PYTHON", sys.executable)
ALLOWED_IMPORT_ROOTS = {"torch", "transformers", "numpy", "PIL"} | set(sys.stdlib_module_names)


def saved_folder(model, processor, folder: Path) -> Path:
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def bundle_imports(folder: Path) -> dict[str, set[str]]:
    imports = {}
    for path in folder.glob("*.py"):
        roots = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots.add(node.module.split(".")[0])
            elif isinstance(node, ast.ImportFrom):
                assert node.module and "." not in node.module, f"{path.name}: relative import must be flat"
                assert (folder / f"{node.module}.py").exists(), f"{path.name} imports missing .{node.module}"
        imports[path.name] = roots
    return imports


@pytest.mark.parametrize("kind", ["m3", "mqt"])
def test_folder_is_flat_self_contained_and_declares_auto_map(kind, m3_model, mqt_model, processor, tmp_path):
    model = m3_model if kind == "m3" else mqt_model
    folder = saved_folder(model, processor, tmp_path)
    imports = bundle_imports(folder)
    assert {"configuration_%s_llava.py" % kind, "modeling_%s_llava.py" % kind, "processing_matryoshka_llava.py"} <= set(imports)
    for name, roots in imports.items():
        assert roots <= ALLOWED_IMPORT_ROOTS, f"{name} imports {roots - ALLOWED_IMPORT_ROOTS}"
    config = json.loads((folder / "config.json").read_text())
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForImageTextToText"}
    processor_config = json.loads((folder / "processor_config.json").read_text())
    assert processor_config["auto_map"]["AutoProcessor"] == "processing_matryoshka_llava.MatryoshkaLlavaProcessor"


def check_remote_code(folder: Path, counts: list[int], model, processor, scratch: Path) -> dict:
    """Load `folder` in an interpreter where this package cannot be imported; its generations must equal `model`'s.
    Returns the subprocess's report."""
    env = {**os.environ, "HF_MODULES_CACHE": str(scratch / "modules"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    result = subprocess.run(
        [REMOTE_PYTHON, str(CHECK_SCRIPT), str(folder), ",".join(map(str, counts))],
        capture_output=True, text=True, cwd=scratch, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Loading is quiet on every supported release: no deprecation warnings from our classes or configs.
    noise = [line for line in result.stderr.splitlines() if re.search(r"warn|deprecat", line, re.IGNORECASE)]
    assert not noise, noise
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(module.startswith("transformers_modules.") for module in report["classes"]), report["classes"]
    assert report["invalid_rejected"]

    image = Image.new("RGB", (40, 30), (200, 30, 60))
    inputs = processor(images=image, text=chat_prompt(processor, "What is in the image?"), return_tensors="pt")
    for count in counts:
        expected = model.generate(**inputs, num_visual_tokens=count, max_new_tokens=4, do_sample=False)
        assert report["answers"][str(count)] == expected[0, inputs["input_ids"].shape[1] :].tolist(), count
    return report


@pytest.mark.parametrize("kind", ["m3", "mqt"])
def test_remote_code_loads_without_the_package(kind, m3_model, mqt_model, processor, tmp_path):
    model = m3_model if kind == "m3" else mqt_model
    folder = saved_folder(model, processor, tmp_path / "checkpoint")
    check_remote_code(folder, [576, 36, 1] if kind == "m3" else [16, 5, 1], model, processor, tmp_path)


@pytest.mark.parametrize("name", ["m3", "mqt"])
def test_shipped_demo_models_load_without_the_package(name, tmp_path):
    """The folders `make demo` runs: in the demo's own process the installed package's registered classes take
    precedence (transformers prefers explicitly registered classes), so their remote code is checked here."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder = Path(__file__).resolve().parents[1] / "demo" / "models" / name
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    full = model.config.num_queries if name == "mqt" else max(model.config.matryoshka_scales)
    check_remote_code(folder, [full, 9, 1], model, processor, tmp_path)
