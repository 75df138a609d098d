"""Data parallelism under `accelerate launch` (GPUs) or `torchrun` (CPU processes, gloo), one process otherwise."""

import torch
from accelerate import PartialState
from accelerate.utils import gather_object


def distributed_state() -> PartialState:
    """This process's rank, world size and device. Without an accelerator, processes started by `torchrun` are
    joined over gloo (accelerate only does that when asked for CPU)."""
    has_accelerator = torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())
    return PartialState(cpu=not has_accelerator)


def gather_records(records: list, state: PartialState) -> list:
    """Every process's list, concatenated in rank order, on every process."""
    if state.num_processes == 1:
        return list(records)
    return gather_object(records)


def end_distributed(state: PartialState) -> None:
    """Leave the process group before the interpreter exits: a gloo group still open at exit can abort the process
    ("terminate called without an active exception") after all the work is done."""
    if state.num_processes > 1:
        state.wait_for_everyone()
    state.destroy_process_group()
