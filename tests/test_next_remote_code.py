"""An M3-LLaVA-NeXT `save_pretrained` folder loads with only torch + transformers (`trust_remote_code=True`)."""

import json
import sys

from test_remote_code import check_remote_code, saved_folder
from tiny_next_models import tiny_m3_next, tiny_next_processor
from transformers.dynamic_module_utils import get_imports, get_relative_imports

# PyAV is imported inside a try block (video files only), which transformers does not require to be installed.
ALLOWED_IMPORT_ROOTS = {"torch", "transformers", "numpy", "PIL"} | set(sys.stdlib_module_names)


def test_folder_is_flat_self_contained_and_declares_auto_map(tmp_path):
    folder = saved_folder(tiny_m3_next(), tiny_next_processor(), tmp_path)
    files = {path.name for path in folder.glob("*.py")}
    assert {
        "configuration_m3_llava_next.py", "modeling_m3_llava_next.py", "processing_matryoshka_llava_next.py",
        "image_processing_matryoshka_llava_next.py", "video_collage.py",
    } <= files
    for name in files:
        assert set(get_imports(folder / name)) <= ALLOWED_IMPORT_ROOTS, name
        assert {f"{module}.py" for module in get_relative_imports(folder / name)} <= files, name
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_m3_llava_next.M3LlavaNextConfig",
        "AutoModel": "modeling_m3_llava_next.M3LlavaNextModel",
        "AutoModelForImageTextToText": "modeling_m3_llava_next.M3LlavaNextForConditionalGeneration",
    }
    processor_config = json.loads((folder / "processor_config.json").read_text())
    processor_class = processor_config["auto_map"]["AutoProcessor"]
    assert processor_class == "processing_matryoshka_llava_next.MatryoshkaLlavaNextProcessor"


def test_remote_code_loads_without_the_package(tmp_path):
    model, processor = tiny_m3_next(), tiny_next_processor()
    folder = saved_folder(model, processor, tmp_path / "checkpoint")
    report = check_remote_code(folder, [576, 1], model, processor, tmp_path)
    assert report["classes"][-1].endswith("image_processing_matryoshka_llava_next")
