"""Run by tests/test_vllm_serving.py in its own interpreter (vLLM spawns its engine process, which needs a
`__main__` guard): greedy answers of a folder through `vllm.LLM`, each request alone and then all in one batch.

    python vllm_offline_check.py FOLDER REQUESTS.json ANSWERS.json MAX_TOKENS MAX_MODEL_LEN
    -> ANSWERS.json: {"alone": [[token ids], ...], "batched": [[token ids], ...], "prompt_lengths": [int, ...],
                      "errors": [str, ...]}

REQUESTS.json: {"requests": [{"prompt": str, "images": [path, ...], "mm_processor_kwargs": {...}}, ...],
                "invalid": [same, each expected to be refused; their error messages are returned]}
"""

import json
import sys

from PIL import Image


def main() -> None:
    from vllm import LLM, SamplingParams

    folder, requests_file, answers_file = sys.argv[1], sys.argv[2], sys.argv[3]
    max_tokens, max_model_len = int(sys.argv[4]), int(sys.argv[5])
    given = json.loads(open(requests_file).read())
    requests, invalid = given["requests"], given.get("invalid", [])
    max_images = max(len(request["images"]) for request in requests)
    llm = LLM(model=folder, dtype="float32", max_model_len=max_model_len, enforce_eager=True, seed=0,
              limit_mm_per_prompt={"image": max_images})
    params = SamplingParams(temperature=0, max_tokens=max_tokens)

    def prompt(request):
        return {"prompt": request["prompt"],
                "multi_modal_data": {"image": [Image.open(path).convert("RGB") for path in request["images"]]},
                "mm_processor_kwargs": request["mm_processor_kwargs"]}

    prompts = [prompt(request) for request in requests]
    alone = [llm.generate([prompt], params, use_tqdm=False)[0] for prompt in prompts]
    errors = []
    for request in invalid:
        try:
            llm.generate([prompt(request)], params, use_tqdm=False)
            errors.append(None)
        except ValueError as error:
            errors.append(str(error))
    batched = llm.generate(prompts, params, use_tqdm=False)  # the engine still serves after refusing
    with open(answers_file, "w") as handle:
        json.dump({"alone": [list(output.outputs[0].token_ids) for output in alone],
                   "batched": [list(output.outputs[0].token_ids) for output in batched],
                   "prompt_lengths": [len(output.prompt_token_ids) for output in alone],
                   "errors": errors}, handle)


if __name__ == "__main__":
    main()
