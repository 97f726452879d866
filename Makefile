# `make` shows what each target does. Every UPPERCASE variable below can also be set in the
# environment: `BASE_IMAGE=my/tf:2.21 DATA_DIR=$PWD/data make up` does what it says.
SHELL := /bin/bash
.DEFAULT_GOAL := help

TF_VERSION := 2.21.0
BASE_IMAGE ?=# default: tensorflow/tensorflow:$(TF_VERSION)-gpu (see docker-compose.yml)
BUILD_CA_BUNDLE ?=# an extra CA bundle (PEM) for pip during the build, for TLS-inspecting proxies
DATA_DIR ?=# a host folder with offline data, mounted read-only at /data; trains from it
TRAIN_ARGS ?=# flags for python -m app, e.g. TRAIN_ARGS='--epochs 3'
TB_PORT ?= 6006
TB_HOST ?= 127.0.0.1
BENCH_ARGS ?= --repeat 3# flags for python -m app.bench, e.g. BENCH_ARGS='--epochs 2 --repeat 1'
PYTHON ?= python3

# compose reads these; it runs both containers as the calling user, so ./logs stays theirs.
export BASE_IMAGE BUILD_CA_BUNDLE DATA_DIR TB_PORT TB_HOST CUDA_WHEELS
export HOST_UID := $(shell id -u)
export HOST_GID := $(shell id -g)

IMAGE := mnist-tensorboard/trainer:$(TF_VERSION)
VENV := .venv
# With DATA_DIR set, train from it unless TRAIN_ARGS already names --data.
RUN_ARGS = $(TRAIN_ARGS) $(if $(DATA_DIR),$(if $(findstring --data,$(TRAIN_ARGS)),,--data /data))
# The GPU reservation only where Docker can really give a GPU to a container: on other hosts it
# would make compose fail, so probe with the built image.
GPU_PROBE = docker run --rm --gpus all --entrypoint true $(IMAGE) >/dev/null 2>&1
COMPOSE = docker compose -f docker-compose.yml $(shell $(GPU_PROBE) && echo -f docker-compose.gpu.yml)

.PHONY: help up down train tensorboard logs gpu-check build test test-slow e2e bench lint clean

help: ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-z0-9-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "Variables: BASE_IMAGE BUILD_CA_BUNDLE DATA_DIR TRAIN_ARGS TB_PORT TB_HOST (see README.md)"

up: build tensorboard ## build if needed, start TensorBoard, then train one run in the foreground
	@$(GPU_PROBE) && echo "GPU: Docker can use this host's NVIDIA GPU; the trainer reserves it" \
	  || echo "GPU: none usable by Docker here (no NVIDIA GPU or container toolkit): training on CPU"
	$(COMPOSE) run --rm trainer $(RUN_ARGS)
	@echo "TensorBoard keeps running at http://localhost:$(TB_PORT) (make down stops it)"

build: ## build the trainer image (also used by the TensorBoard container)
	@mkdir -p logs/fit
	docker compose build trainer

train: logs/fit ## train one more run (flags in TRAIN_ARGS); TensorBoard picks it up by itself
	$(COMPOSE) run --rm trainer $(RUN_ARGS)

tensorboard: logs/fit ## start TensorBoard in the background and print its address
	$(COMPOSE) up -d tensorboard
	@echo "TensorBoard: http://localhost:$(TB_PORT)"

logs/fit:
	@mkdir -p $@

logs: ## follow TensorBoard's output
	docker compose logs -f tensorboard

down: ## stop and remove the containers; runs in ./logs and the dataset cache stay
	docker compose down --remove-orphans

gpu-check: build ## print what TensorFlow inside the trainer image sees (GPUs, CUDA, cuDNN)
	@$(GPU_PROBE) || echo "Docker cannot give this host's GPU to containers (NVIDIA container toolkit missing?)"
	$(COMPOSE) run --rm --entrypoint python3 trainer -m app.devices

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $@

test: $(VENV)/.installed ## run the test suite (makes .venv first: tensorflow-cpu, tensorboard, pytest)
	$(VENV)/bin/pytest

test-slow: $(VENV)/.installed ## the slow tests: three kills in one run, a full disk, gzip bombs
	$(VENV)/bin/pytest -m slow

e2e: $(VENV)/.installed ## the container stack end to end: real Docker, compose, make and Chromium
	$(VENV)/bin/pytest -m e2e -p no:cacheprovider tests/e2e

bench: $(VENV)/.installed ## the original configuration against the project's: speed, accuracy, memory
	$(VENV)/bin/python -m app.bench $(BENCH_ARGS)

lint: $(VENV)/.installed ## ruff for Python, hadolint for the Dockerfile
	$(VENV)/bin/ruff check .
	$(VENV)/bin/hadolint Dockerfile

clean: ## remove .venv and caches (never ./logs: your runs are yours to delete)
	rm -rf $(VENV) .pytest_cache .ruff_cache artifacts
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
