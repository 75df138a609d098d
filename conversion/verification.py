"""`--verify`: run the source model and the converted one on the same synthetic input and compare their logits.

The reference is transformers' own `LlavaForConditionalGeneration` / `LlavaNextForConditionalGeneration` for
llava-hf sources and the original LLaVA(-NeXT) computation (`original_reference`) for original-format sources, all
built from the *source* files. Checked: text only, and an image at several `num_visual_tokens` (the smallest, a
middle and the largest M3 scale; 1, sqrt(M) and M for MQT). A LLaVA-NeXT image is a non-square size cut into the
crops the *source's* pinpoints give; the converted model is told only the size, so it must find the same grid from
its own (height, width) pinpoints. A freshly initialised
MQT projector has no source counterpart, so there the reference runs the converted projector on its own vision
features and language model. Both sides run in float32 on CPU, one model in memory at a time: about 4 bytes per
parameter (some 28 GB for a 7B model) plus one shard, so verify large models on a machine with that much memory.
"""

import math
from dataclasses import dataclass, field

import torch
from transformers import LlavaForConditionalGeneration

from modeling_matryoshka_llava.visual_token_counts import valid_num_visual_tokens

from .errors import VerificationError
from .llava_hf_next_reference import LlavaHfNextReference, llava_hf_next_grid_shape
from .original_anyres import original_grid_shape, stored_pinpoints
from .original_reference import IMAGE_TOKEN_INDEX, OriginalLlavaReference, average_pool_grid
from .source_model import SourceModel

RELATIVE_TOLERANCE = 1e-3
NUM_TEXT_TOKENS = 6


@dataclass
class VerificationReport:
    reference: str
    max_abs_diff: dict[str, float] = field(default_factory=dict)  # per check ("text", "k=36", ...)
    tolerance: float = 0.0

    def summary(self) -> str:
        checks = ", ".join(f"{name}: {diff:.2e}" for name, diff in self.max_abs_diff.items())
        return f"logits match {self.reference} (max abs diff {checks}; tolerance {self.tolerance:.1e})"


def verification_counts(config) -> list[int]:
    """The smallest, a middle and the largest count the model accepts: each forward pass of a 7B model on CPU
    takes a while."""
    valid = valid_num_visual_tokens(config)
    middle = math.isqrt(valid[-1]) if isinstance(valid, range) else valid[len(valid) // 2]
    return sorted({valid[0], middle, valid[-1]})


@dataclass
class SyntheticImage:
    pixel_values: torch.Tensor  # (1, 3, S, S), or (1, crops, 3, S, S) for LLaVA-NeXT
    image_size: tuple[int, int] | None = None  # LLaVA-NeXT: the (height, width) the crops were cut from


def synthetic_inputs(config, source_vocab: int, seed: int = 0) -> tuple[list[int], list[int], torch.Tensor]:
    """Random ordinary text tokens before and after one image, and a random image of the tower's size."""
    generator = torch.Generator().manual_seed(seed)
    special = {config.image_token_id, config.text_config.pad_token_id, config.text_config.bos_token_id,
               config.text_config.eos_token_id}
    candidates = [token for token in range(min(source_vocab, 32000)) if token not in special]
    picks = torch.randint(len(candidates), (2 * NUM_TEXT_TOKENS,), generator=generator).tolist()
    text = [candidates[index] for index in picks]
    bos = [] if config.text_config.bos_token_id is None else [config.text_config.bos_token_id]
    prefix = bos + text[:NUM_TEXT_TOKENS]
    size = config.vision_config.image_size
    pixel_values = torch.randn(1, 3, size, size, generator=generator)
    return prefix, text[NUM_TEXT_TOKENS:], pixel_values


class LlavaHfReference:
    """transformers' LlavaForConditionalGeneration loaded from the llava-hf source folder."""

    def __init__(self, source: SourceModel):
        self.model = LlavaForConditionalGeneration.from_pretrained(source.folder, dtype=torch.float32).eval()
        self.config = self.model.config
        self._features = None

    @torch.no_grad()
    def logits(self, input_ids: list[int], pixel_values=None, num_visual_tokens: int = 0, projector=None):
        if IMAGE_TOKEN_INDEX not in input_ids:
            return self.model(input_ids=torch.tensor([input_ids])).logits[0]
        position = input_ids.index(IMAGE_TOKEN_INDEX)
        features = self.vision_features(pixel_values)  # the tower runs once per image, whatever the count
        full = features.shape[1]
        if projector is None and num_visual_tokens == full:  # LLaVA-1.5 exactly: transformers' own forward
            ids = input_ids[:position] + [self.config.image_token_id] * full + input_ids[position + 1 :]
            return self.model(input_ids=torch.tensor([ids]), pixel_values=pixel_values).logits[0]
        if projector is not None:
            image = projector(features, num_visual_tokens)[0]
        else:
            image = average_pool_grid(self.model.model.multi_modal_projector(features), num_visual_tokens)[0]
        embed = self.model.get_input_embeddings()
        embeds = torch.cat([embed(torch.tensor(input_ids[:position])), image, embed(torch.tensor(input_ids[position + 1 :]))])
        hidden = self.model.model.language_model(inputs_embeds=embeds[None]).last_hidden_state
        return self.model.lm_head(hidden)[0]

    @torch.no_grad()
    def vision_features(self, pixel_values):
        if self._features is None or self._features[0] is not pixel_values:
            outputs = self.model.model.vision_tower(pixel_values, output_hidden_states=True)
            features = outputs.hidden_states[self.config.vision_feature_layer]
            strategy = self.config.vision_feature_select_strategy
            self._features = (pixel_values, features[:, 1:] if strategy == "default" else features)
        return self._features[1]


def synthetic_image_size(pinpoints: list[list[int]]) -> tuple[int, int]:
    """An image shaped like a pinpoint whose transpose is not a pinpoint (if any), slightly flatter so un-padding
    removes rows: reading the pinpoints in the wrong (height, width) order then gives it another crop grid."""
    pairs = {tuple(pinpoint) for pinpoint in pinpoints}
    asymmetric = [pinpoint for pinpoint in pinpoints if (pinpoint[1], pinpoint[0]) not in pairs]
    height, width = max(asymmetric or pinpoints, key=lambda pinpoint: (max(pinpoint) / min(pinpoint), pinpoint[1]))
    return max(1, height * 9 // 10), width


def synthetic_next_image(source: SourceModel, config, generator: torch.Generator) -> SyntheticImage:
    """A random image cut into the crops the *source's* own pinpoints give it."""
    image_size = synthetic_image_size(config.image_grid_pinpoints)
    crop_size = config.vision_config.image_size
    if source.format == "llava-hf-next":
        rows, columns = llava_hf_next_grid_shape(source, image_size)
    else:
        rows, columns = original_grid_shape(image_size, stored_pinpoints(source.config), crop_size)
    crops = torch.randn(1, 1 + rows * columns, 3, crop_size, crop_size, generator=generator)
    return SyntheticImage(crops, image_size)


def verify_conversion(folder, source: SourceModel, model_class, seed: int = 0) -> VerificationReport:
    model = model_class.from_pretrained(folder, dtype=torch.float32).eval()
    config = model.config
    prefix, suffix, pixel_values = synthetic_inputs(config, source.vocab_rows, seed)
    image = SyntheticImage(pixel_values)
    if source.is_llava_next:
        image = synthetic_next_image(source, config, torch.Generator().manual_seed(seed + 1))
    counts = verification_counts(config)
    converted = {"text": run_converted(model, prefix + suffix)}
    for count in counts:
        converted[f"k={count}"] = run_converted(model, prefix + [config.image_token_id] + suffix, image, count)
    fresh_projector = getattr(config, "projector_is_trained", True) is False
    projector = model.model.multi_modal_projector if fresh_projector else None
    del model  # one model in memory at a time

    if source.format == "llava-hf":
        reference, name = LlavaHfReference(source), "transformers' LlavaForConditionalGeneration"
    elif source.format == "llava-hf-next":
        reference, name = LlavaHfNextReference(source), "transformers' LlavaNextForConditionalGeneration"
    else:
        reference = OriginalLlavaReference(source)
        name = f"the original LLaVA{'-NeXT' if source.is_llava_next else ''} computation"
    if projector is not None:
        name += " (with the converted, untrained query transformer)"
    report = VerificationReport(reference=name, tolerance=RELATIVE_TOLERANCE)
    failures = []
    for check, logits in converted.items():
        if check == "text":
            expected = reference.logits(prefix + suffix)
        else:
            count = int(check.removeprefix("k="))
            ids = prefix + [IMAGE_TOKEN_INDEX] + suffix
            if source.is_llava_next:
                expected = reference.logits(ids, image.pixel_values, count, image_size=image.image_size)
            else:
                expected = reference.logits(ids, image.pixel_values, count, projector)
        actual = logits[:, : expected.shape[-1]]
        if actual.shape != expected.shape:
            failures.append(f"{check}: shape {list(actual.shape)} vs reference {list(expected.shape)}")
            continue
        diff = (actual - expected).abs().max().item()
        report.max_abs_diff[check] = diff
        if not diff <= RELATIVE_TOLERANCE * max(1.0, expected.abs().max().item()):
            failures.append(f"{check}: max abs diff {diff:.3e}")
    if failures:
        raise VerificationError(f"The converted model does not reproduce {name}: " + "; ".join(failures))
    return report


@torch.no_grad()
def run_converted(model, input_ids: list[int], image: SyntheticImage | None = None, num_visual_tokens=None):
    kwargs = {}
    if image is not None:
        kwargs = {"pixel_values": image.pixel_values, "num_visual_tokens": num_visual_tokens}
        if image.image_size is not None:  # the grid comes from the converted config's pinpoints, not from here
            kwargs["image_sizes"] = torch.tensor([image.image_size])
    try:
        return model(input_ids=torch.tensor([input_ids]), **kwargs).logits[0]
    except ValueError as error:  # e.g. a grid that disagrees with the crops the source's pinpoints give
        hint = ""
        if image is not None and image.image_size is not None:
            hint = (f" (its image_grid_pinpoints cut the {image.image_size[0]}x{image.image_size[1]} test image "
                    "into another grid of crops than the source's do)")
        raise VerificationError(f"The converted model cannot run the source's input{hint}: {error}") from error
