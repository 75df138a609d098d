"""Where a checkpoint's files are: a local folder, or a Hub repo fetched with huggingface_hub."""

import json
import re
from pathlib import Path

from .errors import ConversionError

WEIGHT_INDEX_NAMES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
SINGLE_WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")
# Everything a conversion reads besides the weights (configs, tokenizer, card).
METADATA_PATTERNS = ["*.json", "*.model", "*.txt", "*.jinja", "tokenizer*", "README.md"]
REPO_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def looks_like_repo_id(name: str) -> bool:
    return bool(REPO_ID_PATTERN.match(name)) and ".." not in name and not name.endswith(".")


def resolve_checkpoint(source: str | Path, what: str = "checkpoint") -> Path:
    """A local folder as is; anything else that looks like a Hub repo id is downloaded (config, tokenizer, weights)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ConversionError(f"The {what} {source} is a file: pass the folder holding config.json and the weights.")
    if not looks_like_repo_id(str(source)):
        raise ConversionError(f"The {what} {source!r} is neither an existing folder nor a Hub repo id (owner/name).")
    return download_from_hub(str(source), what)


def download_from_hub(repo_id: str, what: str) -> Path:
    from huggingface_hub import HfApi, constants, snapshot_download

    if constants.HF_HUB_OFFLINE:
        try:  # an earlier download may be cached
            return Path(snapshot_download(repo_id, local_files_only=True))
        except Exception as error:
            raise ConversionError(
                f"The {what} {repo_id!r} is not a local folder, and the Hub is offline (HF_HUB_OFFLINE is set) with no "
                f"cached copy ({type(error).__name__}). Download it where the Hub is reachable "
                f"(`hf download {repo_id} --local-dir DIR`) and pass DIR."
            ) from error
    try:
        files = HfApi().list_repo_files(repo_id)
        # Prefer safetensors; fetch pickled .bin shards only when a repo has nothing else.
        has_safetensors = any(name.endswith(".safetensors") for name in files)
        weights = ["*.safetensors"] if has_safetensors else ["pytorch_model*.bin"]
        return Path(snapshot_download(repo_id, allow_patterns=METADATA_PATTERNS + weights))
    except Exception as error:  # network, authentication, missing repo: all end the conversion the same way
        raise ConversionError(
            f"Could not download the {what} {repo_id!r} from the Hub ({type(error).__name__}: {error}). Check the repo "
            "id, your network and your token (`hf auth login`), or pass a local folder."
        ) from error


def read_json(path: Path, what: str | None = None) -> dict:
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except FileNotFoundError:
        raise ConversionError(f"{what or path.name} not found: {path}") from None
    except json.JSONDecodeError as error:
        raise ConversionError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise ConversionError(f"{path} must hold a JSON object, got {type(data).__name__}.")
    return data


def find_weight_files(folder: Path) -> tuple[list[Path], dict[str, str] | None]:
    """The weight shards of a checkpoint folder in index order, and the index's key -> file map (None without one).

    Looks for a safetensors index, a .bin index, `model.safetensors`, then `pytorch_model.bin`, as transformers does.
    """
    for index_name in WEIGHT_INDEX_NAMES:
        index_path = folder / index_name
        if index_path.is_file():
            weight_map = read_json(index_path).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise ConversionError(f"{index_path} has no `weight_map` listing the tensors of each shard.")
            files = [folder / name for name in dict.fromkeys(weight_map.values())]
            absent = [path.name for path in files if not path.is_file()]
            if absent:
                raise ConversionError(f"{index_path} lists shards that are not in {folder}: {', '.join(absent)}.")
            return files, weight_map
    for name in SINGLE_WEIGHT_NAMES:
        if (folder / name).is_file():
            return [folder / name], None
    present = sorted(path.name for path in folder.iterdir() if path.suffix in (".bin", ".safetensors", ".pt", ".pth"))
    raise ConversionError(
        f"No model weights in {folder}: expected {' or '.join(WEIGHT_INDEX_NAMES + SINGLE_WEIGHT_NAMES)}"
        + (f" (found only {', '.join(present)})." if present else ".")
    )
