"""Data-parallel training on 2 CPU processes (torchrun, gloo) matches one process on the same global batch."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from instruction_data import write_colour_dataset
from tiny_models import tiny_m3

SCRIPT = Path(__file__).parent / "helpers" / "distributed_train_check.py"
# Both runs see all four records in their single step; only summation order differs (fp32).
WEIGHT_TOLERANCE = 1e-6


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(data_dir, out_dir, processes, per_device_batch):
    command = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}", "--nnodes=1",
        f"--master_port={free_port()}", str(SCRIPT), str(data_dir), str(out_dir), str(per_device_batch),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    runs = {}
    for method in ("m3", "mqt"):
        counts = [json.loads((out_dir / method / f"counts-rank{rank}.json").read_text()) for rank in range(processes)]
        assert all(entry["world_size"] == processes for entry in counts)
        runs[method] = (torch.load(out_dir / method / "weights.pt"), [entry["counts"] for entry in counts])
    return runs


def test_two_processes_equal_one_process_on_the_same_global_batch(tmp_path):
    data = tmp_path / "data"
    write_colour_dataset(data, num_records=4)
    single = launch(data, tmp_path / "one", processes=1, per_device_batch=4)
    double = launch(data, tmp_path / "two", processes=2, per_device_batch=2)

    # M3, one SGD step over all four records: the same weights
    weights_one, weights_two = single["m3"][0], double["m3"][0]
    worst = max((weights_one[name] - weights_two[name]).abs().max().item() for name in weights_one)
    assert worst <= WEIGHT_TOLERANCE, worst
    initial = tiny_m3().state_dict()
    assert any(not torch.equal(weights_one[name], initial[name]) for name in weights_one)  # it did train

    # MQT: the m of every step is the same on both ranks, and the same as on one process
    (counts_one,), (rank0, rank1) = single["mqt"][1], double["mqt"][1]
    assert rank0 == rank1 == counts_one and len(counts_one) == 3
