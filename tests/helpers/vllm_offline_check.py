"""Run by tests/test_vllm_serving.py in its own interpreter (vLLM spawns its engine process, which needs a
`__main__` guard): greedy answers of a folder through `vllm.LLM`, each request alone and then all in one batch.

    python vllm_offline_check.py FOLDER REQUESTS.json ANSWERS.json MAX_TOKENS MAX_MODEL_LEN
    -> ANSWERS.json: {"alone": [[token ids], ...], "batched": [[token ids], ...], "prompt_lengths": [int, ...]}

REQUESTS.json: [{"prompt": str, "images": [path, ...], "num_visual_tokens": int or [int per image]}, ...]
"""

import json
import sys

from PIL import Image


def main() -> None:
    from vllm import LLM, SamplingParams

    folder, requests_file, answers_file = sys.argv[1], sys.argv[2], sys.argv[3]
    max_tokens, max_model_len = int(sys.argv[4]), int(sys.argv[5])
    requests = json.loads(open(requests_file).read())
    max_images = max(len(request["images"]) for request in requests)
    llm = LLM(model=folder, dtype="float32", max_model_len=max_model_len, enforce_eager=True, seed=0,
              limit_mm_per_prompt={"image": max_images})
    params = SamplingParams(temperature=0, max_tokens=max_tokens)
    prompts = [{"prompt": request["prompt"],
                "multi_modal_data": {"image": [Image.open(path).convert("RGB") for path in request["images"]]},
                "mm_processor_kwargs": {"num_visual_tokens": request["num_visual_tokens"]}} for request in requests]
    alone = [llm.generate([prompt], params, use_tqdm=False)[0] for prompt in prompts]
    batched = llm.generate(prompts, params, use_tqdm=False)
    with open(answers_file, "w") as handle:
        json.dump({"alone": [list(output.outputs[0].token_ids) for output in alone],
                   "batched": [list(output.outputs[0].token_ids) for output in batched],
                   "prompt_lengths": [len(output.prompt_token_ids) for output in alone]}, handle)


if __name__ == "__main__":
    main()
