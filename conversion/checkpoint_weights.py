"""The inventory of a checkpoint's tensors (name, shard, shape, dtype), read from shard headers before any data."""

from pathlib import Path

from .errors import ConversionError
from .source_files import find_weight_files
from .tensor_readers import TensorInfo, open_shard


def list_examples(names, limit: int = 12) -> str:
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


class CheckpointWeights:
    """All tensors of a folder's weight shards. Opening every shard once here means a truncated or corrupt shard,
    a duplicated tensor or an index that disagrees with its shards stops the run before anything is written."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.files, index = find_weight_files(folder)
        self.tensors: dict[str, TensorInfo] = {}
        for path in self.files:
            reader = open_shard(path)
            try:
                for info in reader.infos():
                    if info.key in self.tensors:
                        raise ConversionError(
                            f"Tensor {info.key} is stored twice: in {self.tensors[info.key].file.name} and {path.name}."
                        )
                    self.tensors[info.key] = info
            finally:
                reader.close()
        if index is not None:
            self._check_index(index)

    def _check_index(self, index: dict[str, str]) -> None:
        absent = [f"{key} (in {name})" for key, name in index.items() if self.tensors.get(key) is None
                  or self.tensors[key].file.name != name]
        if absent:
            raise ConversionError(
                f"The weight index of {self.folder} lists tensors its shards do not hold (a shard is incomplete or "
                f"from another checkpoint): {list_examples(absent)}"
            )

    def keys(self) -> list[str]:
        return list(self.tensors)

    def has_prefix(self, prefix: str) -> bool:
        return any(key.startswith(prefix) for key in self.tensors)

    def load(self, keys) -> dict:
        """Load the named tensors into memory, shard by shard (for verification of small models)."""
        wanted = set(keys)
        loaded = {}
        for path in self.files:
            names = [key for key in wanted if self.tensors[key].file == path]
            if not names:
                continue
            reader = open_shard(path)
            try:
                for key in names:
                    loaded[key] = reader.get(key).clone()
            finally:
                reader.close()
        return loaded

    @property
    def largest_shard_bytes(self) -> int:
        return max(path.stat().st_size for path in self.files)
