"""Run by tests/test_vllm_serving.py in its own interpreter (vLLM spawns its engine process, which needs a
`__main__` guard): greedy answers of a folder through `vllm.LLM`, each request alone and then all in one batch.

    python vllm_offline_check.py FOLDER REQUESTS.json ANSWERS.json MAX_TOKENS
    -> ANSWERS.json: {"alone": [[token ids], ...], "batched": [[token ids], ...]}

REQUESTS.json: [{"prompt": str, "image": path, "num_visual_tokens": int}, ...]
"""

import json
import sys

from PIL import Image


def main() -> None:
    from vllm import LLM, SamplingParams

    folder, requests_file, answers_file, max_tokens = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    requests = json.loads(open(requests_file).read())
    llm = LLM(model=folder, dtype="float32", max_model_len=512, enforce_eager=True, seed=0,
              limit_mm_per_prompt={"image": 1})
    params = SamplingParams(temperature=0, max_tokens=max_tokens)
    prompts = [{"prompt": request["prompt"], "multi_modal_data": {"image": Image.open(request["image"]).convert("RGB")},
                "mm_processor_kwargs": {"num_visual_tokens": request["num_visual_tokens"]}} for request in requests]
    alone = [list(llm.generate([prompt], params, use_tqdm=False)[0].outputs[0].token_ids) for prompt in prompts]
    batched = [list(output.outputs[0].token_ids) for output in llm.generate(prompts, params, use_tqdm=False)]
    with open(answers_file, "w") as handle:
        json.dump({"alone": alone, "batched": batched}, handle)


if __name__ == "__main__":
    main()
