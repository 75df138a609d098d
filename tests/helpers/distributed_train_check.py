"""One training run, launched with torchrun by test_distributed_training.py (1 or 2 CPU processes, gloo).

Usage: distributed_train_check.py DATA_DIR OUT_DIR PER_DEVICE_BATCH
Trains M3 for one step and MQT for three; writes the final weights (rank 0) and every rank's visual-token count
per step, per method.
"""

import gc
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from tiny_models import tiny_m3, tiny_mqt, tiny_processor

from matryoshka_llava.training.arguments import MatryoshkaTrainingArguments
from matryoshka_llava.training.run import build_trainer, release_data_parallel_wrapper


def train(data_dir: str, out_dir: str, method: str, per_device_batch: int, steps: int) -> None:
    out_dir = os.path.join(out_dir, method)
    args = MatryoshkaTrainingArguments(
        output_dir=out_dir, per_device_train_batch_size=per_device_batch, max_steps=steps, optim="sgd",
        learning_rate=0.5, lr_scheduler_type="constant", logging_steps=1, save_strategy="no", report_to=[],
        seed=11, use_cpu=True, disable_tqdm=True, ddp_backend="gloo",
    )
    model = (tiny_m3() if method == "m3" else tiny_mqt()).train()
    trainer = build_trainer(
        None, os.path.join(data_dir, "data.json"), os.path.join(data_dir, "images"), method, args,
        model=model, processor=tiny_processor(),
    )
    counts = []
    original = trainer.counts_for_step

    def recording(training):
        value = original(training)
        counts.append(value)
        return value

    trainer.counts_for_step = recording
    trainer.train()
    rank = trainer.args.process_index
    with open(os.path.join(out_dir, f"counts-rank{rank}.json"), "w") as handle:
        json.dump({"counts": counts, "world_size": trainer.args.world_size}, handle)
    if rank == 0:
        torch.save({k: v.detach().clone() for k, v in trainer.model.state_dict().items()}, os.path.join(out_dir, "weights.pt"))
    release_data_parallel_wrapper(trainer)  # the next method trains in the same process group


if __name__ == "__main__":
    torch.set_num_threads(1)
    for method, steps in (("m3", 1), ("mqt", 3)):
        train(sys.argv[1], sys.argv[2], method, int(sys.argv[3]), steps)
    # As `matryoshka-llava train` does (`end_training`): the wrappers are gone, now leave the gloo group while the
    # interpreter is alive (a gloo thread woken during interpreter shutdown aborts the process).
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    gc.collect()
