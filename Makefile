# Every target documents itself: `make` (or `make help`) lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= $(shell command -v python3.11 || command -v python3)
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
EXTRAS ?=
PORT ?= 5000
SORT ?= test_accuracy
# pytest-xdist workers for `make test` (TEST_WORKERS=1: one process, no xdist); tests that share
# a trained project stay in one worker (tests/conftest.py)
TEST_WORKERS ?= 2
PYTEST_PARALLEL := $(if $(filter 1,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadgroup)
TRACKING_URI := $(or $(MLFLOW_TRACKING_URI),sqlite:///$(CURDIR)/mlflow.db)

export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS := never
export DVC_NO_ANALYTICS := 1
# Stage commands in dvc.yaml call `python`: the project environment's.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export VIRTUAL_ENV := $(CURDIR)/$(VENV)

predict_model = $(if $(MODEL),--model $(MODEL),)

.PHONY: help setup weights run predict lr-find serve push pull sweep report test test-fast bench bench-train bench-backends bench-gpu bench-serve bench-leakage bench-fashion bench-recipe bench-labels bench-photos bench-transfer lint ui compare reproduce server server-stop screenshots dag clean distclean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet uv==$(UV_VERSION)

# --compile-bytecode: every module's bytecode written once here, so that no process compiles
# TensorFlow's sources again (about 16 s of each import on 2 cores when Python may not write
# bytecode itself, as under PYTHONDONTWRITEBYTECODE; 6 s with it compiled).
$(VENV)/.installed: $(UV) pyproject.toml uv.lock
	$(UV) sync --locked --compile-bytecode --python $(PYTHON) $(foreach extra,$(EXTRAS),--extra $(extra))
	@touch $@

setup: $(VENV)/.installed ## Create .venv and install the locked dependencies (GPU: EXTRAS=cuda)
	@test -d .dvc || $(BIN)/dvc init $$(git rev-parse --git-dir >/dev/null 2>&1 || echo --no-scm)
	@$(BIN)/python -m pipeline.reporting.web_assets

run: setup ## Run the whole pipeline (dvc repro) and print the test accuracy
	$(BIN)/dvc repro
	@$(BIN)/python -m pipeline.tools.summary

predict: setup ## Classify images with the trained model (IMAGES=<folder or file> [MODEL=<.keras or MLflow URI>] [OUT=predictions.csv])
	@test -n "$(IMAGES)" || { echo "usage: make predict IMAGES=<folder> [MODEL=models:/image-classifier-digits@champion]"; exit 2; }
	$(BIN)/python -m pipeline.tools.predict $(IMAGES) $(predict_model) --out $(or $(OUT),predictions.csv)

lr-find: setup ## Learning-rate range test on the split: loss against rate, a suggested rate (ARGS="--steps 100"), after the split stage
	$(BIN)/python -m pipeline.tools.lr_find $(ARGS)

serve: setup ## Serve models:/<name>@champion over HTTP on 127.0.0.1 (SERVE_PORT=5001, MODEL=<MLflow URI>)
	MLFLOW_TRACKING_URI="$(TRACKING_URI)" $(BIN)/python -m pipeline.tracking.server \
	  --host 127.0.0.1 --port $(or $(SERVE_PORT),5001) \
	  --model-uri "$(or $(MODEL),models:/$$($(BIN)/python -c 'from pipeline.params import load_params; print(load_params().registered_model)')@champion)"

push: setup ## Push data, outputs and run-cache to the DVC remote (DVC_REMOTE=<name, URL or path>)
	$(BIN)/python -m pipeline.tools.remote push

pull: setup ## Pull data, outputs and run-cache from the DVC remote (DVC_REMOTE=...); dvc repro then skips them
	$(BIN)/python -m pipeline.tools.remote pull

report: setup ## Markdown report of metrics and params against a branch, after make run (BASE=main): reports/ci/
	$(BIN)/python -m pipeline.tools.report --base "$(or $(BASE),main)"

test: lint ## Check the style and the import layers (make lint), then run the test suite (the end-to-end test runs the real dvc repro)
	$(BIN)/pytest $(PYTEST_PARALLEL)

test-fast: setup ## Run the tests that take seconds (skips those marked slow)
	$(BIN)/pytest $(PYTEST_PARALLEL) -m "not slow"

bench: setup ## Benchmark split (against split-folders) and validate on 21,564 images
	$(BIN)/python -m benchmarks.split_benchmark

bench-train: setup ## Benchmark the training input pipeline against in-memory, keras.io and Pillow feeds
	$(BIN)/python -m benchmarks.train_benchmark $(ARGS)

bench-backends: setup ## Train the default model under Keras' TensorFlow and JAX backends, side by side
	$(BIN)/python -m benchmarks.backend_benchmark

bench-gpu: setup ## The default recipe on Fashion-MNIST under Keras' JAX backend, on the device JAX finds: images/s, test accuracy (ARGS="--variant name:key=value")
	KERAS_BACKEND=jax $(BIN)/python -m benchmarks.gpu_benchmark $(ARGS)

bench-serve: setup ## Images per second through the predict CLI and over HTTP (batch 1, 64) against the compute bound
	$(BIN)/python -m benchmarks.serve_benchmark $(ARGS)

bench-leakage: setup ## The near-duplicate gate on Fashion-MNIST (or ARGS="--drawings FOLDER"): real test images confirmed, planted copies caught, look-alikes
	$(BIN)/python -m benchmarks.leakage_benchmark $(ARGS)

bench-fashion: setup ## The default pipeline on Fashion-MNIST (70,000 images): each stage's time and memory, DVC's part, accuracy against the published table (ARGS="--set train.epochs=2")
	$(BIN)/python -m benchmarks.fashion_benchmark $(ARGS)

bench-recipe: setup ## Time to accuracy on Fashion-MNIST: the default recipe, the article's, keras.io's and SVC under one budget each (ARGS="--minutes 15")
	$(BIN)/python -m benchmarks.recipe_benchmark $(ARGS)

bench-labels: setup ## The audit against planted label noise (3% flipped) on the digits and Fashion-MNIST: precision, recall, time (ARGS="--datasets digits")
	$(BIN)/python -m benchmarks.label_noise_benchmark $(ARGS)

weights: setup ## Fetch the transfer bases' ImageNet weights into the Keras cache, with Keras' published hashes (needs a network; ORIGIN=<mirror URL>)
	$(BIN)/python -m pipeline.tools.weights $(if $(ORIGIN),--origin $(ORIGIN),)

bench-photos: setup ## 600 phone photos through split, validate and predict: this code against an earlier commit, side by side (ARGS="--base REF --photos FOLDER")
	$(BIN)/python -m benchmarks.photos_benchmark $(ARGS)

bench-transfer: setup ## EfficientNet-Lite0 (ImageNet) against the CNN from scratch at 10, 30, 100 images a class (ARGS="--folder F --classes a b ...")
	$(BIN)/python -m benchmarks.transfer_benchmark $(ARGS)

lint: setup ## Check code style (ruff check, ruff format --check) and the import layers (lint-imports; pyproject.toml)
	$(BIN)/ruff check pipeline tests benchmarks scripts
	$(BIN)/ruff format --check pipeline tests benchmarks scripts
	$(BIN)/lint-imports --no-cache

ui: setup ## Open the MLflow UI on the project's runs at http://127.0.0.1:5000 (PORT=...)
	$(BIN)/mlflow ui --backend-store-uri "$(TRACKING_URI)" --host 127.0.0.1 --port $(PORT)

compare: setup ## Print the experiment's runs side by side (SORT=metric, NAME=run name prefix), write reports/compare.md
	$(BIN)/python -m pipeline.tools.compare --sort $(SORT) $(if $(NAME),--name $(NAME),)

sweep: setup ## Run a grid of params as queued DVC experiments, JOBS at a time, and rank them (SWEEP=sweeps/example.yaml JOBS=2)
	$(BIN)/python -m pipeline.tools.sweep $(or $(SWEEP),sweeps/example.yaml) --jobs $(or $(JOBS),1) --sort $(SORT)

reproduce: setup ## Redo a recorded run and diff its metrics with the original's (RUN=<run id>)
	@test -n "$(RUN)" || { echo "usage: make reproduce RUN=<MLflow run id>"; exit 2; }
	$(BIN)/python -m pipeline.tools.reproduce $(RUN)

server: setup ## Start PostgreSQL and an MLflow server on 127.0.0.1 (installs PostgreSQL if missing)
	bash scripts/tracking-server.sh start

screenshots: setup ## Screenshots of the MLflow UI comparing two runs into docs/ (RUNS="<id> <id>"; needs chromium)
	$(BIN)/python scripts/ui_screenshots.py $(RUNS)

server-stop: ## Stop the MLflow server and PostgreSQL that `make server` started
	bash scripts/tracking-server.sh stop

dag: setup ## Draw the stage graph
	@$(BIN)/dvc dag

clean: ## Remove pipeline outputs and caches (keeps .venv and the MLflow runs)
	git clean -fdX -- data models reports 2>/dev/null || rm -rf data/raw data/split models
	rm -rf .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +

distclean: clean ## Also remove the environments and the MLflow store (mlflow.db, mlartifacts)
	rm -rf $(VENV) $(TOOLS) .bench mlflow.db mlartifacts
