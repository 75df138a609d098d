"""Package attributes imported on first use, so that `import matryoshka_llava.<package>.cli` (and with it
`matryoshka-llava --help`) does not pay for torch and transformers."""

import importlib


def lazy_exports(package: str, exports: dict[str, str]):
    """A module `__getattr__` for `package` that imports each exported name from its submodule when first asked."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name], package), name)

    return __getattr__
