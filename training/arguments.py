"""Training arguments: `transformers.TrainingArguments` plus what the Matryoshka losses need."""

from dataclasses import dataclass, field

from transformers import TrainingArguments


@dataclass
class MatryoshkaTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the visual-token schedule and the freezing switches of the M3 / MQT recipes."""

    num_visual_tokens_choices: list[int] | None = field(
        default=None,
        metadata={
            "help": "Counts the schedule draws from. M3: the scales averaged each step (default: the model's "
            "matryoshka_scales). MQT: the set one m per step is drawn from (default: even numbers 2..M)."
        },
    )
    random_scale_per_step: bool = field(
        default=False,
        metadata={"help": "M3 only: train one scale drawn at random per step instead of the mean over all scales."},
    )
    pack_scales: bool = field(
        default=False,
        metadata={"help": "M3: run the language model once per step over all scales, each sample's scale sequences "
                  "packed into one row, instead of once per scale (same losses; on CPU the packed step measured "
                  "slower, see benchmarks/m3_training_step.py)."},
    )
    stage: int | None = field(
        default=None,
        metadata={
            "help": "MQT recipe presets. 1: train only the query transformer at m = M. 2: train language model + "
            "query transformer with random m, vision tower frozen. Unset: use the freeze_* switches as given."
        },
    )
    freeze_vision_tower: bool = field(default=True, metadata={"help": "Keep the vision tower's weights fixed."})
    freeze_projector: bool = field(default=False, metadata={"help": "Keep the projector / query transformer fixed."})
    freeze_language_model: bool = field(default=False, metadata={"help": "Keep the language model (and head) fixed."})
    eval_num_visual_tokens: int | None = field(
        default=None,
        metadata={"help": "MQT evaluation count (default: the model's num_visual_tokens). M3 evaluates all scales."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.stage not in (None, 1, 2):
            raise ValueError(f"stage must be 1 or 2 (MQT recipe stages), got {self.stage}.")
        if self.stage == 1:
            self.freeze_vision_tower, self.freeze_projector, self.freeze_language_model = True, False, True
        elif self.stage == 2:
            self.freeze_vision_tower, self.freeze_projector, self.freeze_language_model = True, False, False
