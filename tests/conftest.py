import os
import sys

# Tests never reach the Hub; code that would download must fail fast instead of hanging on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Test helpers (tiny models, fixtures, scripts run in clean interpreters) live in tests/helpers.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "helpers"))

import pytest
import torch
from tiny_models import random_images, tiny_m3, tiny_mqt, tiny_processor

from matryoshka_llava.processing import chat_prompt

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def processor():
    return tiny_processor()


@pytest.fixture(scope="session")
def m3_model():
    return tiny_m3()


@pytest.fixture(scope="session")
def mqt_model():
    return tiny_mqt()


@pytest.fixture(params=["m3", "mqt"])
def model(request, m3_model, mqt_model):
    return m3_model if request.param == "m3" else mqt_model


@pytest.fixture
def single_inputs(processor):
    prompt = chat_prompt(processor, "What is in the image?")
    return processor(images=random_images(1), text=prompt, return_tensors="pt")


@pytest.fixture
def batch_inputs(processor):
    prompts = [chat_prompt(processor, "What is in the image?"), chat_prompt(processor, "How many shapes?")]
    return processor(images=random_images(2, seed=1), text=prompts, padding=True, return_tensors="pt")
