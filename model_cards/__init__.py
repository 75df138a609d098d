"""Model cards for M3-LLaVA / MQT-LLaVA checkpoints, and publishing checkpoint folders to the Hub."""

from .card_inputs import CardInputs, read_folder_inputs, with_overrides
from .errors import ModelCardError, PushError
from .folder_validation import validate_checkpoint_folder
from .push import PushResult, push_checkpoint
from .rendering import render_model_card, validate_model_card, write_model_card
from .results import CostTable, EvalResults, load_cost_table, load_eval_results


def card_inputs_for_folder(folder, eval_results=(), cost=None, **fields) -> CardInputs:
    """Card inputs of a checkpoint folder: its config and existing card, then the caller's fields and results files
    (given results replace those an earlier rendering stored; without any, the stored ones are kept)."""
    inputs = with_overrides(read_folder_inputs(folder), **fields)
    if eval_results:
        inputs.eval_results = [load_eval_results(path) for path in eval_results]
    if cost is not None:
        inputs.cost = load_cost_table(cost)
    return inputs


__all__ = [
    "CardInputs",
    "CostTable",
    "EvalResults",
    "ModelCardError",
    "PushError",
    "PushResult",
    "card_inputs_for_folder",
    "load_cost_table",
    "load_eval_results",
    "push_checkpoint",
    "read_folder_inputs",
    "render_model_card",
    "validate_checkpoint_folder",
    "validate_model_card",
    "write_model_card",
]
