"""lmms-eval model plugin: `--model matryoshka_llava --model_args pretrained=PATH,num_visual_tokens=36`.

Registered through lmms-eval's `lmms_eval.models` entry point (see pyproject.toml), so any lmms-eval task runs a
Matryoshka model at a chosen visual-token count, or a plain LLaVA with a training-free `baseline`:

    lmms-eval --model matryoshka_llava \
        --model_args pretrained=PATH,num_visual_tokens=36[,baseline=average_pooling,device=cuda] \
        --batch_size 8 --tasks pope --output_path out/

Generation tasks (`generate_until`) and likelihood tasks (`loglikelihood`, `multiple_choice`) are served; the batch
size is lmms-eval's own `--batch_size N` (a number: like lmms-eval's HF models, `auto` is not supported).

This module imports lmms-eval; it is only loaded by lmms-eval itself.
"""

import torch
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from tqdm.auto import tqdm

from matryoshka_llava.processing.prompts import chat_prompt

from .distributed import distributed_state
from .model_loading import load_model_for_eval

MODEL_ID = "matryoshka_llava"


def model_manifest():
    """The entry point's payload: lmms-eval's registry resolves `--model matryoshka_llava` to the class below.

    The registry type is imported here, not at the top: lmms-eval builds its registry (and calls this function)
    while `lmms_eval.models` is first imported, so a top-level import of it from this module, imported first, would
    be circular and leave the plugin unregistered."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=f"{__name__}.MatryoshkaLlava")


def _as_bool(value) -> bool:
    return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")


def _batch_size(value, max_batch_size) -> int:
    """lmms-eval's `--batch_size` (text from its command line, an int from `simple_evaluate`) as a positive int."""
    text = str(value).strip()
    if text.startswith("auto"):
        raise ValueError(f"{MODEL_ID} does not support --batch_size {text} (nor do lmms-eval's HF models): pass a "
                         "number, e.g. --batch_size 8.")
    if max_batch_size is not None:
        raise ValueError(f"--max_batch_size only applies to --batch_size auto, which {MODEL_ID} does not support: "
                         "pass the batch size itself with --batch_size N.")
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"--batch_size must be a positive integer, got {value!r}.")
    return int(text)


class MatryoshkaLlava(lmms):
    """An M3 / MQT checkpoint (or a plain LLaVA with a training-free `baseline`) at `num_visual_tokens` per image."""

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        num_visual_tokens: int | None = None,
        baseline: str | None = None,
        device: str | None = None,
        dtype: str = "auto",
        batch_size: int | str = 1,
        max_batch_size: int | None = None,
        max_new_tokens: int = 128,
        trust_remote_code: bool = False,
        **unexpected,
    ):
        super().__init__()
        if unexpected:
            raise ValueError(
                f"Unknown model_args {sorted(unexpected)} for {MODEL_ID}; expected pretrained, num_visual_tokens, "
                "baseline, device, dtype, max_new_tokens, trust_remote_code (the batch size is --batch_size)."
            )
        batch_size = _batch_size(batch_size, max_batch_size)
        state = distributed_state()
        self._model, self.processor = load_model_for_eval(
            pretrained, baseline or None, device=device, dtype=dtype, trust_remote_code=_as_bool(trust_remote_code)
        )
        count = self._model.config.num_visual_tokens if num_visual_tokens in (None, "") else num_visual_tokens
        if isinstance(count, str) and count.strip().lstrip("-").isdigit():  # model_args arrive as text
            count = int(count)
        self.num_visual_tokens = self._model.model.resolve_num_visual_tokens(count, 1)[0]  # the models' own check
        self.batch_size_per_gpu = batch_size
        self.max_new_tokens = int(max_new_tokens)
        self._rank, self._world_size = state.process_index, state.num_processes
        self._device = self._model.device

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
        """lmms-eval's constructor from `--model_args` plus its own options (batch size, device): an option given
        both ways is named, instead of Python's "got multiple values for keyword argument"."""
        from lmms_eval.utils import simple_parse_args_string

        arguments = simple_parse_args_string(arg_string)
        options = {key: value for key, value in (additional_config or {}).items() if value is not None}
        for key in sorted(set(arguments) & set(options)):
            raise ValueError(f"{key!r} is given both in --model_args and as lmms-eval's --{key}: give it once "
                             f"(the batch size as --batch_size N).")
        return cls(**arguments, **options)

    @property
    def model(self):
        return self._model

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def device(self):
        return self._device

    def _doc(self, task: str, split: str, doc_id):
        return self.task_dict[task][split][doc_id]

    def _prompt(self, context: str, num_images: int) -> str:
        image_token = self.processor.image_token
        if image_token in context:  # the task placed its images itself
            return self.processor.apply_chat_template(
                [{"role": "user", "content": context}], add_generation_prompt=True
            )
        return chat_prompt(self.processor, context, num_images)

    def _images(self, doc_to_visual, doc) -> list:
        visuals = doc_to_visual(doc) if doc_to_visual is not None else []
        visuals = [visual for visual in (visuals or []) if visual is not None]
        if any(isinstance(visual, str) for visual in visuals):
            raise ValueError(f"{MODEL_ID} takes images; this task gives video files ({visuals[:1]}).")
        if not visuals:
            raise ValueError(f"{MODEL_ID} needs at least one image per request; this task gives none.")
        return visuals

    def _inputs(self, prompts: list[str], images: list) -> dict:
        inputs = self.processor(images=images, text=prompts, padding=True, padding_side="left", return_tensors="pt")
        return {
            "input_ids": inputs["input_ids"].to(self.device),
            "attention_mask": inputs["attention_mask"].to(self.device),
            "pixel_values": inputs["pixel_values"].to(self.device, self.model.dtype),
        }

    def generate_until(self, requests: list[Instance]) -> list[str]:
        arguments = [request.args for request in requests]
        # Longest prompts first (as lmms-eval's models do); equal generation settings share a batch.
        order = sorted(range(len(arguments)), key=lambda i: (str(sorted(arguments[i][1].items())), -len(arguments[i][0])))
        results: list[str | None] = [None] * len(arguments)
        progress = tqdm(total=len(arguments), disable=self.rank != 0, desc=f"{MODEL_ID}@{self.num_visual_tokens}")
        start = 0
        while start < len(order):
            settings = arguments[order[start]][1]
            batch = [order[start]]
            while (len(batch) < self.batch_size and start + len(batch) < len(order)
                   and arguments[order[start + len(batch)]][1] == settings):
                batch.append(order[start + len(batch)])
            start += len(batch)
            prompts, images = [], []
            for index in batch:
                context, _, doc_to_visual, doc_id, task, split = arguments[index]
                visuals = self._images(doc_to_visual, self._doc(task, split, doc_id))
                prompts.append(self._prompt(context, len(visuals)))
                images.extend(visuals)
            texts = self._generate(prompts, images, dict(settings))
            for index, text in zip(batch, texts):
                results[index] = text
            progress.update(len(batch))
        progress.close()
        return results

    def _generate(self, prompts: list[str], images: list, settings: dict) -> list[str]:
        until = settings.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        temperature = float(settings.get("temperature", 0) or 0)
        kwargs = {
            "max_new_tokens": int(settings.get("max_new_tokens", self.max_new_tokens)),
            "num_beams": int(settings.get("num_beams", 1) or 1),
            "do_sample": temperature > 0,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if temperature > 0:
            kwargs.update(temperature=temperature, top_p=settings.get("top_p") or 1.0)
        inputs = self._inputs(prompts, images)
        with torch.inference_mode():
            output = self.model.generate(**inputs, num_visual_tokens=self.num_visual_tokens, **kwargs)
        texts = self.processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        cut = []
        for text in texts:
            for stop in until:
                if stop and stop in text:
                    text = text.split(stop)[0]
            cut.append(text.strip())
        return cut

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """(loss, greedy) per request, in lmms-eval's convention (its `llava_hf` model's exactly): the mean negative
        log-likelihood of the continuation's tokens given the prompt and images (lower is more likely: lmms-eval's
        multiple-choice rule takes the choice with the lowest value), and whether greedy decoding yields it."""
        results = []
        for request in tqdm(requests, disable=self.rank != 0, desc=f"{MODEL_ID}@{self.num_visual_tokens} loglik"):
            context, target, doc_to_visual, doc_id, task, split = request.args
            doc = self._doc(task, split, doc_id)
            continuation = target if isinstance(target, str) else target(doc)
            visuals = self._images(doc_to_visual, doc)
            prompt = self._prompt(context, len(visuals))
            prompt_ids = self._inputs([prompt], visuals)["input_ids"][0]
            inputs = self._inputs([prompt + continuation], visuals)
            full_ids = inputs["input_ids"][0]
            # Tokens the prompt and prompt + continuation share; the rest is the continuation (a tokenizer may
            # merge across the boundary, e.g. "ASSISTANT:" + " A").
            shared = 0
            while shared < min(len(prompt_ids), len(full_ids)) and prompt_ids[shared] == full_ids[shared]:
                shared += 1
            if shared == len(full_ids):
                raise ValueError(f"The continuation {continuation!r} adds no tokens to the prompt.")
            labels = inputs["input_ids"].clone()
            labels[:, :shared] = -100  # the model expands them with the images (-100 at visual positions)
            with torch.inference_mode():
                output = self.model(**inputs, labels=labels, num_visual_tokens=self.num_visual_tokens)
            # The continuation is the text tail, so its positions are the same before and after image expansion.
            num_continuation = len(full_ids) - shared
            greedy = output.logits[0, -num_continuation - 1 : -1].argmax(-1)
            results.append((float(output.loss.item()), bool((greedy == full_ids[shared:]).all())))
        return results

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError(f"{MODEL_ID} does not implement lmms-eval's multi-round generation.")
