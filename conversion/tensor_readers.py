"""Read one weight shard at a time, tensor by tensor: safetensors through `safe_open`, `.bin` through a
`weights_only` (and, for zip-format files, memory-mapped) `torch.load`. Only the tensors asked for are
materialised, and closing a reader releases the shard.
"""

import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .errors import ConversionError

SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}


@dataclass(frozen=True)
class TensorInfo:
    key: str
    file: Path
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def num_bytes(self) -> int:
        return tensor_bytes(self.shape, self.dtype)


def tensor_bytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    count = 1
    for size in shape:
        count *= size
    return count * dtype.itemsize


def unreadable(path: Path, error: BaseException) -> ConversionError:
    return ConversionError(
        f"Cannot read the weight shard {path} ({type(error).__name__}: {error}). The file is truncated or corrupt: "
        "download it again."
    )


class SafetensorsShardReader:
    def __init__(self, path: Path):
        self.path = path
        try:
            self._file = safe_open(str(path), framework="pt", device="cpu")
        except (SafetensorError, OSError) as error:
            raise unreadable(path, error) from error

    def infos(self) -> list[TensorInfo]:
        infos = []
        for key in self._file.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
            tensor_slice = self._file.get_slice(key)
            dtype_name = tensor_slice.get_dtype()
            if dtype_name not in SAFETENSORS_DTYPES:
                raise ConversionError(f"{self.path}: tensor {key} has unsupported dtype {dtype_name}.")
            infos.append(TensorInfo(key, self.path, tuple(tensor_slice.get_shape()), SAFETENSORS_DTYPES[dtype_name]))
        return infos

    def get(self, key: str) -> torch.Tensor:
        # A handle per tensor: the pages of the memory map a read touched are released as soon as the tensor is
        # copied out, so memory holds one tensor, not the whole shard read so far.
        try:
            with safe_open(str(self.path), framework="pt", device="cpu") as file:
                return file.get_tensor(key)
        except SafetensorError as error:
            raise unreadable(self.path, error) from error

    def close(self) -> None:
        self._file = None


class TorchBinShardReader:
    """A pickled state dict, loaded with `weights_only=True` (never arbitrary objects).

    Zip-format files (torch >= 1.6) are memory-mapped and re-mapped for each tensor, so that only the tensor being
    read stays in memory; legacy files cannot be mapped and are held whole while the shard is read.
    """

    def __init__(self, path: Path):
        self.path = path
        self._state = None
        try:
            state = self._load(mmap=True)
            self.memory_mapped = True
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise unreadable(path, error) from error
            state = self._load(mmap=False)
            self.memory_mapped = False
        self._infos = [TensorInfo(key, path, tuple(value.shape), value.dtype) for key, value in state.items()]
        if not self.memory_mapped:
            self._state = state

    def _load(self, mmap: bool) -> dict:
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True, mmap=mmap)
        except pickle.UnpicklingError as error:
            raise ConversionError(
                f"{self.path} holds objects other than tensors, which are never unpickled (weights_only=True): {error}"
            ) from error
        except (OSError, EOFError, ValueError) as error:
            raise unreadable(self.path, error) from error
        except RuntimeError as error:
            if mmap and "mmap" in str(error):
                raise
            raise unreadable(self.path, error) from error
        if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
            raise ConversionError(f"{self.path} is not a flat state dict of tensors (name -> tensor).")
        return state

    def infos(self) -> list[TensorInfo]:
        return list(self._infos)

    def get(self, key: str) -> torch.Tensor:
        if self._state is not None:
            return self._state[key]
        return self._load(mmap=True)[key].clone()  # the mapping goes with the rest of the dict

    def close(self) -> None:
        self._state = None


def open_shard(path: Path) -> SafetensorsShardReader | TorchBinShardReader:
    if path.suffix == ".safetensors":
        return SafetensorsShardReader(path)
    if path.suffix in (".bin", ".pt", ".pth"):
        return TorchBinShardReader(path)
    raise ConversionError(f"{path}: unknown weight file type (expected .safetensors or .bin).")
