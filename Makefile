# Every Python target first makes sure the virtual environment exists and is current.
# Point it at your own environment with `make <target> VENV= PYTHON=python` (installs nothing).

BOOTSTRAP_PYTHON ?= python3
VENV ?= .venv
# The dataset's layout for `make synthetic` and `make shards`: ssv2, ssv1, k400, hmdb51 or tsm-list.
DATASET ?= ssv2
DATA_ROOT ?= database
SHARDS ?= $(DATA_ROOT)/shards
RUNS ?= runs
FRAMES ?= 16
FFN_FRAMES ?= 4 8 16
EVAL_FRAMES ?= 2 4 6 8 10 12 14 16
VIDEOS_PER_CLASS ?= 200
SEEDS ?= 0
CKPTS ?=
CKPT ?=
VIDEO ?=
LABELS ?=
WORKERS ?=
PYTEST_ARGS ?=
SYNTH_ARGS ?=
SHARD_ARGS ?=
VERIFY_ARGS ?=
TRAIN_ARGS ?=
EVAL_ARGS ?=
PREDICT_ARGS ?=
BENCH_ARGS ?=
PRETRAIN_ARGS ?=
GPU_ARGS ?=
MUTATION_MODULES ?=
MUTATION_ARGS ?=

REQUIREMENTS := requirements.txt
REQ_HASH := $(shell cat $(REQUIREMENTS) | cksum | cut -d' ' -f1)
MAKE_START := $(shell date +%s)

ifeq ($(strip $(VENV)),)
PYTHON ?= python3
SETUP :=
else
PYTHON ?= $(VENV)/bin/python
SETUP := $(VENV)/.installed-$(REQ_HASH)
endif

WORKERS_FLAG := $(if $(strip $(WORKERS)),--workers $(WORKERS),)
MUTATION_FLAG := $(if $(strip $(MUTATION_MODULES)),--modules $(MUTATION_MODULES),)
# predict: FRAMES when given on the command line or in the environment, else 4 8 16.
PREDICT_FRAMES := $(if $(filter command line environment,$(origin FRAMES)),$(FRAMES),4 8 16)
LABELS_FLAG := $(if $(strip $(LABELS)),--labels $(LABELS),)

.PHONY: help setup test demo demo-archs ablations mechanism pretrain synthetic shards verify-shards train-tsm train-ffn eval predict bench \
	gpu-check mutation slurm-check clean distclean

help:
	@echo "make demo | demo-archs | ablations | mechanism | test | pretrain | synthetic | shards | verify-shards | train-tsm |" \
		"train-ffn | eval | predict | bench | gpu-check | mutation | slurm-check | clean"
	@echo "variables: VENV=$(VENV) PYTHON=$(PYTHON) DATASET=$(DATASET) DATA_ROOT=$(DATA_ROOT) SHARDS=$(SHARDS) RUNS=$(RUNS)"

# The stamp is keyed to the content of requirements.txt: a second run installs nothing.
$(VENV)/.installed-%: $(REQUIREMENTS)
	@test -x $(VENV)/bin/python || $(BOOTSTRAP_PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -r $(REQUIREMENTS)
	@rm -f $(VENV)/.installed-*
	@touch $@

setup: $(SETUP)

test: $(SETUP)
	$(PYTHON) -m pytest $(PYTEST_ARGS)

synthetic: $(SETUP)
	$(PYTHON) -m preprocess.synthetic --dataset $(DATASET) --root $(DATA_ROOT) --videos-per-class $(VIDEOS_PER_CLASS) \
		$(SYNTH_ARGS)

shards: $(SETUP)
	$(PYTHON) -m preprocess.make_shards --dataset $(DATASET) --data-root $(DATA_ROOT) --out $(SHARDS) $(WORKERS_FLAG) \
		$(SHARD_ARGS)

verify-shards: $(SETUP)
	$(PYTHON) -m preprocess.verify_shards --shards $(SHARDS) $(VERIFY_ARGS)

train-tsm: $(SETUP)
	$(PYTHON) train.py --mode vanilla --frames $(FRAMES) --shards $(SHARDS) --output $(RUNS)/tsm$(FRAMES) $(TRAIN_ARGS)

train-ffn: $(SETUP)
	$(PYTHON) train.py --mode ffn --frames $(FFN_FRAMES) --shards $(SHARDS) --output $(RUNS)/ffn $(TRAIN_ARGS)

eval: $(SETUP)
	@test -n "$(strip $(CKPTS))" || { echo 'make eval: set CKPTS="path/to/a.pt path/to/b.pt"'; exit 2; }
	$(PYTHON) evaluate.py --checkpoints $(CKPTS) --frames $(EVAL_FRAMES) --shards $(SHARDS) --output $(RUNS)/eval $(EVAL_ARGS)

# Top-5 classes, FFN branch and latency per video: make predict CKPT=runs/ffn/best.pt VIDEO="a.webm b.mp4".
predict: $(SETUP)
	@test -n "$(strip $(CKPT))" -a -n "$(strip $(VIDEO))" || \
		{ echo 'make predict: set CKPT=path/to/best.pt VIDEO="a.webm b.mp4" (FRAMES="4 8 16", LABELS=labels.json)'; exit 2; }
	$(PYTHON) predict.py --checkpoint $(CKPT) --video $(VIDEO) --frames $(PREDICT_FRAMES) $(LABELS_FLAG) $(PREDICT_ARGS)

demo: $(SETUP)
	$(PYTHON) scripts/demo.py --runs $(RUNS)/demo --seeds $(SEEDS) --started-at $(MAKE_START) $(WORKERS_FLAG)

# The official README's architecture table on the demo's data: vanilla, separated (ST) and FFN models of TSM, TEA,
# SlowFast and UniFormer (reuses a finished `make demo`: data, shards, backbone and the TSM runs).
demo-archs: $(SETUP)
	$(PYTHON) scripts/demo.py --runs $(RUNS)/demo --seeds $(SEEDS) --archs --started-at $(MAKE_START) $(WORKERS_FLAG)

# The paper's ablation rows of TSM-FFN on the demo's data and pretrained backbone (reuses a finished `make demo`).
ablations: $(SETUP)
	$(PYTHON) scripts/demo.py --runs $(RUNS)/demo --seeds $(SEEDS) --study ablations $(WORKERS_FLAG)

# The comparisons of docs/reproduction.md: random start, lambda 0 / 0.5 / 1, 20 against 40 epochs.
mechanism: $(SETUP)
	$(PYTHON) scripts/demo.py --runs $(RUNS)/demo --seeds $(SEEDS) --study mechanism $(WORKERS_FLAG)

# The demo backbone's single-image pretraining alone (cached under RUNS/pretrain by its settings).
pretrain: $(SETUP)
	$(PYTHON) pretrain.py --output-root $(RUNS)/pretrain $(PRETRAIN_ARGS)

bench: $(SETUP)
	$(PYTHON) -m benchmarks.run_all --out $(RUNS)/bench $(BENCH_ARGS)

# The CUDA paths in one run (about 4 min on one H100 / H200); without CUDA, or with GPU_ARGS=--smoke, a toy-size run.
gpu-check: $(SETUP)
	$(PYTHON) -m benchmarks.gpu_check --out $(RUNS)/gpu/gpu_check.json $(GPU_ARGS)

# Mutation testing of the modules that decide results (slow, not part of `make test`; docs/testing.md):
# RUNS/mutation/report.md and report.json. MUTATION_MODULES="engine/schedule.py model/losses.py" picks modules.
mutation: $(SETUP)
	nice -n 19 $(PYTHON) scripts/mutation.py --out $(RUNS)/mutation $(MUTATION_FLAG) $(MUTATION_ARGS)

# The SLURM scripts of scripts/slurm/ end to end on a one-host cluster with two emulated nodes (as root; installs
# SLURM and munge with apt-get when missing, else prints what is missing and "skipped"; about 3 min on 2 cores).
slurm-check: $(SETUP)
	$(PYTHON) scripts/slurm/check.py --work $(RUNS)/slurm-check

# Never touches DATA_ROOT or SHARDS.
clean:
	rm -rf $(RUNS) .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
