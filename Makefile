# `make` shows what each target does. `make setup` (which up, train, tensorboard and gpu-check run
# first) writes .env, from which plain `docker compose` takes the same settings as make.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Compose's settings, each given in the environment, on make's command line
# (`make up DATA_DIR=$PWD/data`) or as a line of your own in .env; defaults in docker-compose.yml:
#   BASE_IMAGE        the image to build on (default: the official tensorflow/tensorflow GPU image
#                     of the Dockerfile's TF_VERSION, the one place the TensorFlow version is written)
#   CUDA_WHEELS       1 builds the CUDA/cuDNN wheels (about 3 GB) into the image, 0 skips them
#                     (default: 1 where make setup finds a GPU that Docker can use, else 0)
#   BUILD_CA_BUNDLE   an extra CA bundle (PEM) for pip during the build, for TLS-inspecting proxies
#   DATA_DIR          a host folder with offline data, mounted read-only at /data (default ./data);
#                     given to make, make up/train also add --data /data
#   TB_HOST, TB_PORT  where TensorBoard is published (default 127.0.0.1 and 6006); TensorBoard has no
#                     authentication, so make setup refuses a TB_HOST beyond this machine unless
#   EXPOSE_UNAUTHENTICATED is tensorboard (docs/containers.md#tensorboard-has-no-authentication)
#   TRAINER_MEMORY    each training container's memory limit (default 8g; docs/containers.md#limits)
#   TRAINER_CPUS      and its CPU cap (default 0: none, at half the other containers' CPU priority)
#   TENSORBOARD_MEMORY, TENSORBOARD_CPUS   TensorBoard's (default 2g, 1)
#   SERVING_MEMORY, SERVING_CPUS           make serve: TensorFlow Serving's (default 1g, 1)
#   GPUS              GPUs the trainer reserves where Docker can give them: a number or all (default 1)
#   WORKERS           make multiworker: worker containers besides the chief (default 1)
#   MULTIWORKER_RUN   make multiworker: the run they train, continued if it exists (default multiworker)
#   SWEEP             make sweep: the sweep file, a path in the container: sweeps/NAME.yaml (./sweeps
#                     is mounted) or /data/... (default sweeps/default.yaml)
#   SWEEPERS          make sweep: sweeper containers sharing the sweep (default 2)
#   SWEEP_STORAGE     make sweep: the study in PostgreSQL, e.g. postgresql://sweeps@postgres/sweeps (the
#                     postgres profile's server, which make sweep then starts; default: the journal file)
#   SWEEP_DB_PORT     the postgres profile's port on 127.0.0.1 (default 5432)
#   POSTGRES_IMAGE, POSTGRES_MEMORY, POSTGRES_CPUS   its image and limits (default postgres:17.7, 1g, 1)
#   NOTEBOOK_PORT     make notebook: JupyterLab's port on 127.0.0.1 (default 8888)
#   JUPYTER_TOKEN     make notebook: its token (default: a random one, written into .env once)
#   SERVING_PORT      make serve: TensorFlow Serving's REST port on 127.0.0.1 (default 8501)
#   SERVING_IMAGE     make serve: the TensorFlow Serving image (default tensorflow/serving:2.20.0)
#   SWEEP_NAME        make dashboard: the sweep whose study it shows (default default)
#   DASHBOARD_PORT    make dashboard: Optuna Dashboard's port on 127.0.0.1 (default 8080)
# make passes on only those that are set and not empty: an empty value would hide the line in .env
# or the Dockerfile's default (an empty BASE_IMAGE fails the build: "base name should not be blank").
COMPOSE_SETTINGS := BASE_IMAGE CUDA_WHEELS BUILD_CA_BUNDLE DATA_DIR TB_HOST TB_PORT GPUS WORKERS \
	MULTIWORKER_RUN SWEEP SWEEPERS NOTEBOOK_PORT JUPYTER_TOKEN SERVING_PORT SERVING_IMAGE \
	EXPOSE_UNAUTHENTICATED TRAINER_MEMORY TRAINER_CPUS TENSORBOARD_MEMORY TENSORBOARD_CPUS SERVING_MEMORY \
	SERVING_CPUS SWEEP_STORAGE SWEEP_DB_PORT POSTGRES_IMAGE POSTGRES_MEMORY POSTGRES_CPUS \
	SWEEP_NAME DASHBOARD_PORT DASHBOARD_MEMORY DASHBOARD_CPUS
$(foreach v,$(COMPOSE_SETTINGS),$(if $($(v)),$(eval export $(v)),$(eval unexport $(v))))

TRAIN_ARGS ?=# flags for python -m app, e.g. TRAIN_ARGS='--epochs 3'
MULTIWORKER_ARGS ?=# more flags for every member of make multiworker, e.g. MULTIWORKER_ARGS='--epochs 3'
SWEEP_ARGS ?=# more flags for every sweeper of make sweep, e.g. SWEEP_ARGS='--epochs 2 --trials 4'
BENCH_ARGS ?= --repeat 3# flags for python -m tools.bench, e.g. BENCH_ARGS='--epochs 2 --repeat 1'
BENCH_SWEEP_ARGS ?=# flags for python -m tools.sweep_bench, e.g. BENCH_SWEEP_ARGS='--precision float32'
BENCH_PICTURES_ARGS ?=# flags for python -m tools.pictures_bench, e.g. BENCH_PICTURES_ARGS='--repeat 1'
BENCH_TB_ARGS ?=# flags for python -m tools.tensorboard_bench, e.g. BENCH_TB_ARGS='--variant before'
PREDICT_ARGS ?=# more flags for make predict, e.g. PREDICT_ARGS='--top 3 --json'
PROFILE_ARGS ?=# flags for python -m tools.step_profile, e.g. PROFILE_ARGS='--precision float32'
PYTHON ?= python3

# Who the containers run as: the user calling make, so ./logs stays theirs. make setup writes the
# same into .env for plain compose; exported here, they also serve make's own compose calls that
# need no .env (build, logs, down).
export HOST_UID := $(shell id -u)
export HOST_GID := $(shell id -g)

# docker-compose.yml's image. No version in its name: the Dockerfile's TF_VERSION is the only place
# the TensorFlow version is written, and a version bump must not leave make probing a stale tag.
IMAGE := mnist-tensorboard/trainer
# The image it is built on (the Dockerfile's default, read from there, unless BASE_IMAGE says), and
# whether the build takes the CUDA wheels (see build).
BASE = $(or $(BASE_IMAGE),tensorflow/tensorflow:$(shell sed -n 's/^ARG TF_VERSION=//p' Dockerfile)-gpu)
WHEELS = $(or $(CUDA_WHEELS),$(shell sed -n 's/^CUDA_WHEELS=//p' .env 2>/dev/null | tail -n 1),$(if \
	$(shell grep -s '^COMPOSE_FILE=.*gpu' .env),1,0))
VENV := .venv
# With DATA_DIR set, train from it unless TRAIN_ARGS already names --data.
# --data is looked for as a word, alone or as --data=PATH: --dataset is another flag.
with_data = $(strip $(1) $(if $(DATA_DIR),$(if $(filter --data --data=%,$(1)),,--data /data)))
RUN_ARGS = $(call with_data,$(TRAIN_ARGS))
# The same for make multiworker, whose flags reach the containers as MULTIWORKER_ARGS (set only when
# there are any, so that a line in .env holds otherwise), and for make sweep and SWEEP_ARGS.
MW_ARGS = $(call with_data,$(MULTIWORKER_ARGS))
SW_ARGS = $(call with_data,$(SWEEP_ARGS))
# Passed to the sweepers only when there are any (below), so that a line in .env holds otherwise.
unexport SWEEP_ARGS
# TensorBoard's address as Compose really published it (TB_HOST, TB_PORT from wherever they came):
# 127.0.0.1 as localhost; every interface (0.0.0.0, opted in) as this host's name, saying so; any other
# address beyond this machine as it is, also saying that it has no authentication.
TB_URL = docker compose port tensorboard 6006 | sed -E 's%^127\.0\.0\.1:%localhost:%; t done; \
	/^(127\.|\[::1\]:)/b done; s%^(0\.0\.0\.0|\[::\]):%'"$$(uname -n)"':%; t all; \
	s%$$% (without authentication)%; b done; \
	:all; s%$$% (every interface of this host, without authentication)%; :done; s%^%http://%'

.PHONY: help setup up down train multiworker sweep notebook predict publish serve dashboard tensorboard logs gpu-check build venv lock test test-integration test-slow e2e bench bench-sweep bench-pictures bench-tensorboard bench-tensorboard-memory profile fashion-mnist lint clean

help: ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-z0-9-]+:.*## / {printf "  make %-17s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "Settings (also in .env): $(COMPOSE_SETTINGS) MULTIWORKER_ARGS SWEEP_ARGS" | fold -s -w 100
	@echo "and for make alone: TRAIN_ARGS, RUN PICTURES MODEL PREDICT_ARGS"

# One GPU probe per make run, in this one recipe, before the build: docker/write-env writes .env
# (COMPOSE_FILE names the GPU file only where Docker can really give a container a GPU) and keeps
# the user's own lines; the build then takes the CUDA wheels only where there is a GPU to use.
setup: ## write .env (your user id; whether Docker can give the trainer a GPU), then build if needed
	@mkdir -p logs/fit models
	@docker/write-env $(IMAGE) $(BASE)
	@$(MAKE) --no-print-directory build

up: setup tensorboard ## build if needed, write .env, start TensorBoard, train one run in the foreground
	docker compose run --rm trainer $(RUN_ARGS)
	@echo "TensorBoard keeps running at $$($(TB_URL)) (make down stops it)"

# -f: the build needs no GPU file. CUDA_WHEELS: as given (environment, make's command line, a line
# of your own in .env), else 1 only where make setup found a GPU that Docker can use.
build: ## build the trainer image (also TensorBoard's); the CUDA wheels only where setup found a GPU
	CUDA_WHEELS=$(WHEELS) docker compose -f docker-compose.yml build trainer

train: setup ## train one more run (flags in TRAIN_ARGS); TensorBoard picks it up by itself
	docker compose run --rm trainer $(RUN_ARGS)

# The multiworker profile (docs/compose-multiworker.md): compose up of the chief and the workers only,
# attached, fresh containers, then one line on how they all ended (docker/up-and-check says how).
multiworker: setup tensorboard ## train run MULTIWORKER_RUN on a chief and WORKERS worker containers (default 1)
	@$(if $(MW_ARGS),MULTIWORKER_ARGS='$(MW_ARGS)') docker/up-and-check multiworker \
	  "After a crash, the same command continues the run from its last checkpoint" \
	  "TensorBoard: $$($(TB_URL))" multiworker chief worker

# The sweep profile (docs/containers.md#sweeps-in-containers): SWEEPERS sweeper containers share the
# study of SWEEP, run as multiworker's are; docker/sweep then names the summary.json they wrote. With
# SWEEP_STORAGE naming the postgres service, docker/sweep starts the postgres profile first.
sweep: setup tensorboard ## run sweep SWEEP (default sweeps/default.yaml) on SWEEPERS containers (default 2)
	@$(if $(SW_ARGS),SWEEP_ARGS='$(SW_ARGS)') docker/sweep "TensorBoard: $$($(TB_URL))"

# The notebook profile (docs/notebook.md), through docker/notebook. The token: JUPYTER_TOKEN from the
# environment, else .env's, else a new random one appended to .env (a line of the user's own, which
# make setup keeps).
notebook: setup ## start JupyterLab in a container (the same ./logs) and print its address with the token
	@CUDA_WHEELS=$(WHEELS) docker/notebook

# The exported model at work (docs/serving.md): its answers for pictures, published as the next version
# of a served model in ./models, and served by TensorFlow Serving. RUN names a run in ./logs/fit.
predict: setup ## the exported model's answers: RUN=<run> PICTURES=<path in the container> (default /data)
	@test -n "$(RUN)" || { echo "error: give RUN=<a run's name in logs/fit>" >&2; exit 2; }
	docker compose run --rm --entrypoint python3 trainer -m app.predict $(RUN) "$(or $(PICTURES),/data)" $(PREDICT_ARGS)

publish: setup ## publish run RUN as the next version of model MODEL (default: model) in ./models
	@test -n "$(RUN)" || { echo "error: give RUN=<a run's name in logs/fit>" >&2; exit 2; }
	docker compose run --rm -v ./models:/app/models --entrypoint python3 trainer -m app.publish $(RUN) \
	  --models /app/models --name $(or $(MODEL),model)

serve: setup ## serve the newest published version of model MODEL with TensorFlow Serving on 127.0.0.1:8501
	$(if $(MODEL),SERVING_MODEL=$(MODEL)) docker compose --profile serve up -d serving
	@echo "TensorFlow Serving: http://127.0.0.1:$${SERVING_PORT:-8501}/v1/models/$(or $(MODEL),model) (docs/serving.md)"

# The dashboard profile (docs/sweeps.md#the-study-at-a-glance), through docker/dashboard: the study of sweep
# SWEEP_NAME, or SWEEP_STORAGE's database, read-only.
dashboard: setup ## Optuna Dashboard on sweep SWEEP_NAME's study (default: default) on 127.0.0.1:8080
	@docker/dashboard

tensorboard: setup ## start TensorBoard in the background and print its address
	docker compose up -d tensorboard
	@echo "TensorBoard: $$($(TB_URL))"

logs: ## follow TensorBoard's output
	docker compose logs -f tensorboard

# --profile '*': the containers of every profile too (a trainer left by compose up, the multiworker ones).
down: ## stop and remove the containers; runs in ./logs and the dataset cache stay
	docker compose --profile '*' down --remove-orphans

gpu-check: setup ## print what TensorFlow inside the trainer image sees (GPUs, CUDA, cuDNN)
	docker compose run --rm --entrypoint python3 trainer -m app.scale.devices

# From the lock files, every file checked against its hash (requirements-dev.txt holds requirements.txt's
# pins too). They are for Python 3.11, the images' (make lock writes them with .venv's Python).
$(VENV)/.installed: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --require-hashes -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed ## make .venv, the environment python -m app runs in without Docker: .venv/bin/python -m app

# The lock files requirements*.txt (docs/development.md, "Updating dependencies"): pip-compile writes each
# from its .in file with a hash for every file of every package, keeping the pins it already has unless
# LOCK_ARGS says otherwise (--upgrade, or --upgrade-package NAME). In this order: the later .in files pin
# what they share with the earlier locks the same (-c). The images' two locks on TensorFlow leave it out,
# and setuptools and pip with it (--unsafe-package): the base image brings them. Only PyPI counts: pip's
# configuration files and PIP_*INDEX*/FIND_LINKS are ignored, so that no other index's files get in.
PIP_COMPILE = env -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL -u PIP_FIND_LINKS -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null \
	$(VENV)/bin/pip-compile --quiet --generate-hashes --strip-extras $(LOCK_ARGS)
ON_TENSORFLOW := --unsafe-package=tensorflow --unsafe-package=setuptools --unsafe-package=pip

lock: $(VENV)/.installed ## write the lock files requirements*.txt from requirements*.in (LOCK_ARGS=--upgrade: newest)
	for f in requirements requirements-cuda; do $(PIP_COMPILE) $(ON_TENSORFLOW) -o $$f.txt $$f.in || exit; done
	for f in requirements-notebook requirements-dev; do $(PIP_COMPILE) --allow-unsafe -o $$f.txt $$f.in || exit; done

# The three tiers (docs/development.md#tests); --durations shows where the time goes on every run.
test: $(VENV)/.installed ## the fast tests, no training (under 2 minutes; makes .venv first)
	$(VENV)/bin/pytest --durations=15 tests/unit

test-integration: $(VENV)/.installed ## real training on tiny data: runs, resume, TensorBoard, sweeps, notebook
	$(VENV)/bin/pytest --durations=15 tests/integration

test-slow: $(VENV)/.installed ## the slow tests: three kills in one run, a full disk (as root), gzip bombs
	$(VENV)/bin/pytest --durations=15 -m slow tests/unit tests/integration

# As root (CI), the machine is prepared first: packages, Docker, Compose, Chromium, the e2e user and
# the stand-in base image (tests/e2e/setup_machine.sh, quick when all is there). Anyone else needs
# Docker, Compose v2 and Chromium already; the tests say what is missing.
e2e: $(VENV)/.installed ## the container stack end to end: real Docker, compose, make and Chromium
	@if [ "$$(id -u)" = 0 ]; then tests/e2e/setup_machine.sh; fi
	$(VENV)/bin/pytest --durations=15 -m e2e -p no:cacheprovider tests/e2e

# The full-size default data of bench and profile: Fashion-MNIST from Debian's dataset-fashion-mnist
# (60,000 + 10,000 images in MNIST's format), installed when missing and make runs as root.
fashion-mnist:
	@test -d /usr/share/datasets/fashion-mnist || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || \
	  { export DEBIAN_FRONTEND=noninteractive; apt-get update -q && apt-get install -y -q dataset-fashion-mnist; }

bench: $(VENV)/.installed fashion-mnist ## the original configuration against the project's on 60,000 images: speed, accuracy, memory
	$(VENV)/bin/python -m tools.bench $(BENCH_ARGS)

bench-sweep: $(VENV)/.installed fashion-mnist ## the same sweep trials with and without pruning, on one sweeper and two
	$(VENV)/bin/python -m tools.sweep_bench $(BENCH_SWEEP_ARGS)

bench-pictures: $(VENV)/.installed fashion-mnist ## a folder of 70,000 PNG files against the same images as IDX files
	$(VENV)/bin/python -m tools.pictures_bench $(BENCH_PICTURES_ARGS)

bench-tensorboard: $(VENV)/.installed ## TensorBoard's Scalars and HParams requests with 500 trials, for 1, 10 and 50 users
	$(VENV)/bin/python -m tools.tensorboard_bench $(BENCH_TB_ARGS)

bench-tensorboard-memory: $(VENV)/.installed ## TensorBoard's memory under 20,000 distinct requests and a 5 MB body, against its bound
	$(VENV)/bin/python -m tools.tensorboard_bench --memory

profile: $(VENV)/.installed fashion-mnist ## one training epoch op by op: where the time goes, GFLOP/s against this CPU's peak
	$(VENV)/bin/python -m tools.step_profile $(PROFILE_ARGS)

# The hooks of .pre-commit-config.yaml, run by .venv's pinned pre-commit on every file git tracks:
# ruff, hadolint, the workflow, Dependabot and Compose files against their schemas, zizmor. The same
# hooks run on `git commit` once `.venv/bin/pre-commit install` is done (docs/development.md).
lint: $(VENV)/.installed ## the pre-commit hooks: ruff, hadolint, schema checks, zizmor
	$(VENV)/bin/pre-commit run --all-files

clean: ## remove .venv, caches and artifacts/ (the benchmarks' and e2e tests' output); never ./logs or .env
	rm -rf $(VENV) .pytest_cache .ruff_cache artifacts
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
