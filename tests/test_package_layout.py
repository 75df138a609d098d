"""How the package is laid out once installed: two top-level names, no import cycle between its parts, and the
remote-code bundle is exactly one folder whose files are what `save_pretrained` writes next to the weights."""

import ast
import importlib.metadata
import re
from collections import defaultdict
from pathlib import Path

import pytest
from tiny_next_models import tiny_m3_next, tiny_next_processor

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "modeling_matryoshka_llava"
# Repository folder -> installed package name.
PACKAGES = {
    "modeling_matryoshka_llava": "modeling_matryoshka_llava",
    "matryoshka_llava": "matryoshka_llava",
    "processing": "matryoshka_llava.processing",
    "conversion": "matryoshka_llava.conversion",
    "model_cards": "matryoshka_llava.model_cards",
    "training": "matryoshka_llava.training",
    "evaluation": "matryoshka_llava.evaluation",
    "demo": "matryoshka_llava.demo",
}
GENERIC_NAMES = {"processing", "conversion", "model_cards", "training", "evaluation", "demo", "matryoshka_llava_cli"}


def package_sources(folder: str) -> list[Path]:
    return [path for path in (ROOT / folder).rglob("*.py") if "models" not in path.relative_to(ROOT / folder).parts]


def imported_modules(path: Path) -> list[str]:
    modules = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules.append(node.module)
    return modules


def import_graph() -> dict[str, set[str]]:
    """Installed package -> the other packages of this distribution it imports."""
    names = sorted(PACKAGES.values(), key=len, reverse=True)  # the longest name that prefixes an import wins
    graph = defaultdict(set)
    for folder, package in PACKAGES.items():
        for path in package_sources(folder):
            if folder == "matryoshka_llava" and path.parent != ROOT / folder:
                continue
            for module in imported_modules(path):
                target = next((name for name in names if module == name or module.startswith(name + ".")), None)
                if target is not None and target != package:
                    graph[package].add(target)
    return graph


def test_the_installed_distribution_has_two_top_level_names():
    top_level = importlib.metadata.distribution("matryoshka-llava").read_text("top_level.txt").split()
    assert sorted(top_level) == ["matryoshka_llava", "modeling_matryoshka_llava"]
    entry_points = importlib.metadata.distribution("matryoshka-llava").entry_points
    targets = {entry.group: entry.value for entry in entry_points}
    assert targets["console_scripts"] == "matryoshka_llava.cli:main"
    assert targets["lmms_eval.models"] == "matryoshka_llava.evaluation.lmms_eval_plugin:model_manifest"


@pytest.mark.parametrize("folder", sorted(PACKAGES))
def test_nothing_imports_the_repository_folders_by_their_generic_names(folder):
    for path in package_sources(folder):
        generic = {module.split(".")[0] for module in imported_modules(path)} & GENERIC_NAMES
        assert not generic, f"{path.relative_to(ROOT)} imports {generic}: use matryoshka_llava.<name>"


def test_the_packages_import_each_other_without_a_cycle():
    graph = import_graph()
    assert not graph["modeling_matryoshka_llava"], "the bundle imports nothing of the package"

    def reachable(start: str) -> set[str]:
        seen, stack = set(), list(graph[start])
        while stack:
            node = stack.pop()
            if node not in seen:
                seen.add(node)
                stack.extend(graph[node])
        return seen

    cycles = [package for package in PACKAGES.values() if package in reachable(package)]
    assert not cycles, f"import cycles through {cycles}: {dict(graph)}"


def test_the_bundle_folder_is_exactly_what_save_pretrained_writes(m3_model, mqt_model, processor, tmp_path):
    written = set()
    for index, (model, model_processor) in enumerate(
        [(m3_model, processor), (mqt_model, processor), (tiny_m3_next(), tiny_next_processor())]
    ):
        folder = tmp_path / str(index)
        model.save_pretrained(folder)
        model_processor.save_pretrained(folder)
        for path in folder.glob("*.py"):
            assert path.read_bytes() == (BUNDLE / path.name).read_bytes(), path.name
            written.add(path.name)
    bundle = {path.name for path in BUNDLE.glob("*.py")} - {"__init__.py"}  # the package's registration only
    assert written == bundle, f"never shipped: {sorted(bundle - written)}"


@pytest.mark.parametrize("path", sorted(BUNDLE.glob("*.py")), ids=lambda path: path.name)
def test_shipped_files_cite_only_what_a_reader_can_find(path):
    """The bundle travels to the Hub without this repository's documents: no references to them."""
    text = path.read_text()
    assert not re.search(r"\bSPEC\b|\bissue \d+|\.\./shared", text), path.name


@pytest.mark.parametrize("package", ["conversion", "evaluation", "model_cards", "training", "processing", "demo"])
def test_no_exported_name_is_also_a_submodule(package):
    """Importing a submodule sets the package attribute of its name: an export of that name (imported lazily) would
    turn into the module once anything imported the submodule."""
    import pkgutil

    module = importlib.import_module(f"matryoshka_llava.{package}")
    submodules = {info.name for info in pkgutil.iter_modules(module.__path__)}
    assert not submodules & set(getattr(module, "__all__", [])), submodules & set(module.__all__)
