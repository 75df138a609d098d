"""Write planned tensors as sharded safetensors, one tensor in memory at a time.

Each shard's header is written first (names, dtypes and shapes are known from the plan), then the tensors are
produced and appended one by one, so memory holds the current tensor and the current input shard's reader, never
a whole output shard. File names and the index follow transformers (`model-00001-of-00003.safetensors`,
`model.safetensors.index.json`; a single shard is `model.safetensors`).
"""

import json
import struct
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .conversion_plan import PlannedTensor
from .errors import ConversionError
from .tensor_readers import open_shard, tensor_bytes

DTYPE_NAMES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
}
SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"


def parse_size(size: int | str) -> int:
    """Bytes from an int or a string like "5GB" / "500MB" / "2GiB" (as transformers' `max_shard_size`)."""
    if isinstance(size, int):
        return size
    units = {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "KB": 10**3, "MB": 10**6, "GB": 10**9, "B": 1}
    text = size.strip().upper()
    for unit, factor in units.items():
        if text.endswith(unit) and text[: -len(unit)].strip().replace(".", "", 1).isdigit():
            return int(float(text[: -len(unit)]) * factor)
    raise ConversionError(f"Cannot read the shard size {size!r}: use e.g. 5GB, 500MB or a number of bytes.")


def split_into_shards(plan: list[PlannedTensor], max_shard_bytes: int) -> list[list[PlannedTensor]]:
    shards, current, current_bytes = [], [], 0
    for item in plan:
        size = tensor_bytes(item.shape, item.dtype)
        if current and current_bytes + size > max_shard_bytes:
            shards.append(current)
            current, current_bytes = [], 0
        current.append(item)
        current_bytes += size
    if current:
        shards.append(current)
    return shards


class SourceReaders:
    """Keeps the input shard being read open and closes it once the plan moves on to another one."""

    def __init__(self):
        self.path, self.reader = None, None

    def get(self, path: Path | None):
        if path is None:
            return None
        if path != self.path:
            self.close()
            self.reader, self.path = open_shard(path), path
        return self.reader

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
        self.path, self.reader = None, None


def write_safetensors_shard(path: Path, items: list[PlannedTensor], readers: SourceReaders, progress) -> None:
    header, offset = {}, 0
    for item in items:
        size = tensor_bytes(item.shape, item.dtype)
        header[item.name] = {"dtype": DTYPE_NAMES[item.dtype], "shape": list(item.shape), "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = {"format": "pt"}
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)  # the data buffer starts 8-byte aligned
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(header_bytes)))
        file.write(header_bytes)
        for item in items:
            tensor = item.produce(readers.get(item.file))
            if tuple(tensor.shape) != item.shape or tensor.dtype != item.dtype:
                raise ConversionError(
                    f"{item.name} came out as {list(tensor.shape)} {tensor.dtype}, planned {list(item.shape)} {item.dtype}."
                )
            write_tensor_bytes(file, tensor)
            progress.update(1)


def write_tensor_bytes(file, tensor: torch.Tensor) -> None:
    if tensor.numel() == 0:
        return
    # A byte view of the contiguous tensor: written without another copy of the data.
    file.write(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().data)


def write_sharded_safetensors(folder: Path, plan: list[PlannedTensor], max_shard_size: int | str = "5GB",
                              show_progress: bool = True) -> list[str]:
    """Write the plan into `folder`; returns the shard file names."""
    if sys.byteorder != "little":
        raise ConversionError("safetensors files are little-endian; converting on a big-endian machine is unsupported.")
    unsupported = sorted({str(item.dtype) for item in plan if item.dtype not in DTYPE_NAMES})
    if unsupported:
        raise ConversionError(f"Cannot store dtypes {', '.join(unsupported)} in safetensors.")
    shards = split_into_shards(plan, parse_size(max_shard_size))
    names = (
        [SAFE_WEIGHTS_NAME]
        if len(shards) == 1
        else [f"model-{index:05d}-of-{len(shards):05d}.safetensors" for index in range(1, len(shards) + 1)]
    )
    readers = SourceReaders()
    try:
        with tqdm(total=len(plan), unit="tensor", desc="Converting", disable=not show_progress) as progress:
            for name, items in zip(names, shards):
                progress.set_postfix_str(name)
                write_safetensors_shard(folder / name, items, readers, progress)
    finally:
        readers.close()
    if len(shards) > 1:
        index = {
            "metadata": {"total_size": sum(tensor_bytes(item.shape, item.dtype) for item in plan)},
            "weight_map": {item.name: name for name, items in zip(names, shards) for item in items},
        }
        (folder / SAFE_WEIGHTS_INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return names
