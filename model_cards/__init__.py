"""Model cards for M3-LLaVA / MQT-LLaVA checkpoints, and publishing checkpoint folders to the Hub."""

from matryoshka_llava.lazy_exports import lazy_exports

__getattr__ = lazy_exports(__name__, {
    "CardInputs": ".card_inputs",
    "read_folder_inputs": ".card_inputs",
    "with_overrides": ".card_inputs",
    "ModelCardError": ".errors",
    "PushError": ".errors",
    "validate_checkpoint_folder": ".folder_validation",
    "PushResult": ".push",
    "push_checkpoint": ".push",
    "render_model_card": ".rendering",
    "validate_model_card": ".rendering",
    "write_model_card": ".rendering",
    "CostTable": ".results",
    "EvalResults": ".results",
    "load_cost_table": ".results",
    "load_eval_results": ".results",
    "card_inputs_for_folder": ".card_inputs",
})

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
