"""The remote-code bundle takes from transformers only what `transformers_imports.py` lists: public, documented
names, each with the reason it is stable. Remote code runs on the user's transformers, so anything else is a
future breakage (transformers 5.24 broke every forward of a bundle that built LLaVA's own output classes)."""

import ast
from pathlib import Path

import pytest

BUNDLE = Path(__file__).resolve().parents[1] / "modeling_matryoshka_llava"
SURFACE = BUNDLE / "transformers_imports.py"
# Module paths the list may import from: the top-level package and two documented utility modules.
ALLOWED_MODULES = {"transformers", "transformers.utils", "transformers.conversion_mapping"}


def transformers_imports(tree: ast.AST) -> list[tuple[int, str, str]]:
    """(line, module, name) of every import of transformers anywhere in a module (functions included)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, "") for alias in node.names if alias.name.split(".")[0] == "transformers"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module.split(".")[0] == "transformers":
            found += [(node.lineno, node.module, alias.name) for alias in node.names]
    return found


@pytest.mark.parametrize("path", sorted(BUNDLE.glob("*.py")), ids=lambda path: path.name)
def test_only_the_surface_module_imports_transformers(path):
    if path == SURFACE:
        return
    imports = transformers_imports(ast.parse(path.read_text()))
    assert not imports, f"{path.name} imports {imports}: add the name to transformers_imports.py (with why it is stable)"


def test_the_surface_lists_public_documented_names_each_with_its_reason():
    source = SURFACE.read_text()
    lines = source.splitlines()
    imports = transformers_imports(ast.parse(source))
    assert imports
    for line, module, name in imports:
        assert module in ALLOWED_MODULES, f"line {line}: {module} is not a public top-level or documented module"
        assert name and not name.startswith("_"), f"line {line}: private name {name!r}"
        assert ".models." not in module, f"line {line}: {module} is a model-specific internal"
    # Every import statement is introduced by a comment saying why the name is stable.
    statements = [node for node in ast.parse(source).body if isinstance(node, ast.ImportFrom) and node.level == 0]
    for node in statements:
        if node.module.split(".")[0] == "transformers":
            assert lines[node.lineno - 2].lstrip().startswith("#"), f"line {node.lineno}: no reason given above it"


def test_the_surface_imports_on_this_transformers_release():
    import transformers
    from packaging.version import Version

    from modeling_matryoshka_llava import transformers_imports as surface

    for name in surface.__all__:
        assert getattr(surface, name) is not None, name
    # 5.24 renamed the generation cache keyword; the bundle must follow whichever release runs it.
    generation_name = "cache" if Version(transformers.__version__) >= Version("5.24") else "past_key_values"
    assert surface.CACHE_NAME == generation_name


def test_saved_folders_carry_the_surface_module(m3_model, processor, tmp_path):
    m3_model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "transformers_imports.py").read_bytes() == SURFACE.read_bytes()
    for path in tmp_path.glob("*.py"):
        if path.name != SURFACE.name:
            assert not transformers_imports(ast.parse(path.read_text())), path.name
