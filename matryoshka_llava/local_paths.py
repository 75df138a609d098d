"""Local filesystem paths never reach a card or anything `push` uploads: they say who made a checkpoint, where, and
how their disk is laid out. Names are kept (a results file's or dataset's file name), the directories above them
are not."""

import os
from pathlib import Path

# Files above this size are weights or data, not text a path could be written into.
MAX_TEXT_FILE_BYTES = 64 * 2**20


def is_local_path(text: str) -> bool:
    """An absolute or home-relative path, or one that names something on this machine (a Hub id "owner/name"
    names nothing here)."""
    if not isinstance(text, str) or not text.strip():
        return False
    if os.path.isabs(text) or text.startswith("~"):
        return True
    return os.sep in text and os.path.exists(text)


def public_name(text: str) -> str:
    """`text`, or only its last component when it is a local path: `/home/me/data/test.jsonl` -> `test.jsonl`."""
    return Path(os.path.expanduser(text)).name if is_local_path(text) else text


def local_path_markers(folder: Path) -> list[str]:
    """The absolute paths whose appearance in a file of `folder` would leak where it lives: the folder, its parent,
    the working directory and the home directory (each at least two levels deep, so `/tmp` alone is no marker)."""
    candidates = {Path(folder).resolve(), Path(folder).resolve().parent, Path.cwd(), Path.home()}
    return sorted((str(path) for path in candidates if len(path.parts) >= 3), key=len, reverse=True)


def files_naming_local_paths(folder: Path, names: list[str]) -> list[tuple[str, str]]:
    """(file, path) for each text file of `names` (relative to `folder`) that contains one of its local paths."""
    markers = local_path_markers(folder)
    found = []
    for name in names:
        path = Path(folder) / name
        if name.endswith(".safetensors") or path.stat().st_size > MAX_TEXT_FILE_BYTES:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary (a plot): no text to leak into
        leaked = next((marker for marker in markers if marker in text), None)
        if leaked is not None:
            found.append((name, leaked))
    return found
