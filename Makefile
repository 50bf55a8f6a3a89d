# ksent: `make all` builds every model from scratch, `make test` runs the linter and the tests.
# Both create .venv and install the project on first use, with the exact versions pinned
# in requirements.lock (`make lock` re-resolves that file from pyproject.toml).
#
# Variables: CORPORA, TOKENIZERS (word char morpheme; `morpheme:kiwi` names a morpheme
# backend, e.g. TOKENIZERS="word char morpheme morpheme:kiwi"), MIRROR (a folder or URL laid
# out like ../shared/corpora), JOBS (how many tokenizations `make all` pretrains and trains at
# once, default 2; 1: one after another), SCHEDULER (a Dask scheduler address: the data
# stages run on that cluster instead of this machine), DATA_DIR and ARTIFACTS_DIR (where the
# generated data and the models go, default data/ and artifacts/ here: give absolute paths to keep a
# private corpus outside the clone), THRESHOLD (every model's decision-threshold rule: accuracy, the
# default, or balanced for imbalanced labels), INIT_FROM (where each network starts: none, auto or a bundle folder,
# see below), RUN_ARGS (more `ksent run` options, e.g. RUN_ARGS="--epochs 4"),
# PYTHON. From another folder: `make -C path/to/ksent all ...`. Examples, offline here:
#     make all CORPORA=nsmc MIRROR=../shared/corpora
#     make -C ~/ksent all CORPORA=my_shop DATA_DIR=$PWD/data ARTIFACTS_DIR=$PWD/artifacts KSENT_CORPORA=$PWD/corpora
#
# Stage targets re-run one stage for the selected corpora (and tokenizers), one target per stage
# registered in pipeline/graph.py (`make stages` lists them by scope). `clean-text` is the pipeline's clean
# stage; `make clean` keeps its usual meaning: delete the generated $(DATA_DIR) and $(ARTIFACTS_DIR)
# (`make distclean` also removes .venv). The run order of `make all` is `ksent run`'s, which
# derives it from what each stage reads; what reads every corpus's bundles (router, student, domains, report)
# runs once, after the last bundle (`ksent run --defer-shared`, then `ksent domains`). With two corpora or more
# the student is one network for all of them (`ksent student`, taught by the router), not one per corpus.
# Stages skip themselves when up to date (see each output folder's *.manifest.json);
# FORCE=1 re-runs them.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
KSENT := $(BIN)/ksent
CORPORA ?= nsmc naver_shopping
TOKENIZERS ?= word char morpheme
MIRROR ?=
FORCE ?=
PYTEST_ARGS ?=
# the test files spread over the cores (pytest-xdist; a file's tests share one worker and its fixtures);
# PYTEST_ARGS="-n 0" runs them in one process
PYTEST_WORKERS ?= -n auto --maxprocesses 4 --dist loadfile
LOCK := requirements.lock
UV_VERSION ?= 0.13.9
UPGRADE ?=

SCHEDULER ?=
# every ksent command that has --scheduler reads KSENT_SCHEDULER
ifneq ($(SCHEDULER),)
export KSENT_SCHEDULER := $(SCHEDULER)
endif
# every ksent command's --data-dir and --artifacts-dir default to KSENT_DATA_DIR and KSENT_ARTIFACTS_DIR
DATA_DIR ?= data
ARTIFACTS_DIR ?= artifacts
export KSENT_DATA_DIR := $(DATA_DIR)
export KSENT_ARTIFACTS_DIR := $(ARTIFACTS_DIR)
RUN_ARGS ?=
# the decision threshold rule of every model `make all` makes (ksent's --threshold: accuracy, balanced or a number)
THRESHOLD ?=
threshold_arg := $(if $(THRESHOLD),--threshold $(THRESHOLD))
# where every network starts (ksent's --init-from): auto (the default: the best bundle of its tokenization of a
# corpus with more labelled reviews, e.g. NSMC's for your export; none there: its pretrained vectors), none, or a
# bundle folder
INIT_FROM ?=
init_arg := $(if $(INIT_FROM),--init-from $(INIT_FROM))

mirror_arg := $(if $(MIRROR),--mirror $(MIRROR))
# `make all` builds each tokenization as a lane: its data stages and word vectors for every corpus (`ksent run
# --until pretrain`), then its trainings, corpus after corpus in the training order (the most labelled first: a
# smaller corpus's network starts from the larger one's of that tokenization). JOBS lanes run at a time, the char
# lane first (the longest training: the longest sequences), then morpheme (its pretrain also segments the
# unlabeled reviews with MeCab, the longest pretrain). The lanes of one corpus share its data stages: the first runs
# them, the others wait for its folder lock and skip them. pretrain's word2vec runs on one thread (for
# reproducible vectors); side by side, a lane's TensorFlow runs on one thread too (TF_NUM_INTRAOP_THREADS=1): an
# LSTM training gains little from a second thread (its threads meet at every time step), and two trainings of two
# threads each on two cores slowed both 2-3x (measured), while two of one thread each finish ~1.4x sooner than one
# after another - with the same networks to the byte (TensorFlow's results do not depend on its thread count here;
# tests/test_own_data.py checks JOBS=1 against JOBS=2). Lanes side by side print plain lines (a pipe, not the
# terminal), so that they do not overwrite each other's progress line. FORCE=1 runs everything one after another.
# ("morpheme:kiwi" is lane/morpheme+kiwi: make targets cannot hold a colon.)
JOBS ?= 2
lane_toks := $(filter char%,$(TOKENIZERS)) $(filter morpheme%,$(TOKENIZERS)) $(filter-out char% morpheme%,$(TOKENIZERS))
LANES := $(foreach tok,$(lane_toks),lane/$(subst :,+,$(tok)))
side_by_side := $(and $(word 2,$(LANES)),$(filter-out 1,$(JOBS)))
lane_threads := $(if $(side_by_side),TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1)
lane_output := $(if $(side_by_side),| cat)
# lanes at a time, for `ksent plan`'s estimates (FORCE=1 runs one loop)
plan_jobs := $(if $(and $(side_by_side),$(if $(FORCE),,1)),$(JOBS),1)
# the corpora, the most labelled train split first (corpora not split yet last); assigned before a loop uses it,
# so that set -e stops the recipe if it fails (a failing $(...) in a for list would not)
training_order = $(KSENT) plan $(addprefix --corpus ,$(CORPORA)) --training-order
# shell snippet: the ksent tokenizer options of $$tok ("morpheme:kiwi" -> --tokenizer morpheme --backend kiwi)
tok_args = --tokenizer $${tok%%:*} $$(case $$tok in *:*) echo --backend $${tok\#*:};; esac)
force_arg := $(if $(FORCE),--force)
installed := $(VENV)/.installed
uv := $(VENV)/uv/bin/uv
# shell snippet: uv $(UV_VERSION) in $(VENV)/uv, installed by pip where it is missing or another version
ensure_uv = $(uv) --version 2>/dev/null | grep -qF "uv $(UV_VERSION) " || \
  $(BIN)/python -m pip install --quiet --upgrade --target $(VENV)/uv "uv==$(UV_VERSION)"

# The stage targets, by scope, from the registry (pipeline/graph.py imports nothing outside the standard library
# and ksent at that point, so the system Python reads it before .venv exists).
stages_of = $(shell $(PYTHON) -c 'import pipeline.graph as g; print(*g.names("$(1)"))' 2>/dev/null)
CORPUS_STAGES := $(patsubst clean,clean-text,$(call stages_of,corpus))
TOKENIZATION_STAGES := $(call stages_of,tokenization)
BUNDLE_STAGES := $(call stages_of,bundles)
CORPORA_STAGES := $(call stages_of,corpora)
ARTIFACT_STAGES := $(call stages_of,artifacts)

.PHONY: all test lint setup lock check-java stages status bench clean distclean \
	$(CORPUS_STAGES) $(TOKENIZATION_STAGES) $(BUNDLE_STAGES) $(CORPORA_STAGES) $(ARTIFACT_STAGES)

# every stage `make all` runs prints where the whole build is: stage n of N, time since it began, what is left by
# the times the stages took last time (`ksent plan` lists them first; pipeline/core/build_progress.py)
all: export KSENT_BUILD_PROGRESS = $(abspath $(DATA_DIR))/.make-all-progress.json
all: setup
	@$(MAKE) --no-print-directory check-java JAVA_REQUIRED=
	@$(KSENT) plan $(addprefix --corpus ,$(CORPORA)) $(addprefix --tokenizer ,$(TOKENIZERS)) $(force_arg) \
	  --jobs $(plan_jobs) --progress-file $$KSENT_BUILD_PROGRESS
	@$(if $(FORCE),,$(MAKE) --no-print-directory -j$(JOBS) $(LANES))
	@# FORCE=1: one after another, the corpus with the most labels first (as in a lane, below)
	@$(if $(FORCE),set -e; order=$$($(training_order)); for corpus in $$order; do for tok in $(TOKENIZERS); do \
	  echo "== $$corpus / $$tok"; \
	  $(KSENT) run --corpus $$corpus $(tok_args) $(mirror_arg) $(force_arg) $(threshold_arg) $(init_arg) --defer-shared \
	    $(RUN_ARGS); \
	done; done)
	@# one corpus: its student (distill); several: one student of them all, taught by the router (`ksent domains`)
	@$(if $(word 2,$(TOKENIZERS)),$(MAKE) --no-print-directory ensemble $(if $(word 2,$(CORPORA)),,distill) BUNDLE_ARGS=--defer-shared,echo "(one tokenizer: no ensemble, no distill)")
	@# what reads every corpus's bundles, once, after the last one: router, student, domains, report
	@$(KSENT) domains $(force_arg)
	@echo; $(KSENT) summary

test: setup lint check-java
	$(BIN)/python -m pytest $(PYTEST_WORKERS) $(PYTEST_ARGS)

# ruff, configured in pyproject.toml ([tool.ruff]); `.venv/bin/ruff check --fix pipeline tests` fixes most findings.
lint: setup
	$(BIN)/ruff check --output-format concise pipeline tests

setup: $(installed)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Installs pip, every dependency (dev tools included) at the versions pinned in the lock
# file, then ksent itself without resolving anything. Re-runs when either file changes.
# The dependencies go in with uv (pinned, in .venv/uv): 150 s -> 75 s here, bytecode
# compiled as pip does. uv does not read pip's configuration (pip.conf, PIP_INDEX_URL: use
# UV_INDEX_URL), so where it cannot install them pip does, as before.
# `pip check` catches a lock file that no longer satisfies pyproject.toml.
$(installed): $(LOCK) pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet "$$(grep -m1 -o '^pip==[^ ;]*' $(LOCK))"
	@$(ensure_uv) || true
	@$(uv) pip install --quiet --python $(BIN)/python --compile-bytecode -r $(LOCK) || { \
	  echo "(uv could not install $(LOCK): pip installs it)"; $(BIN)/python -m pip install --quiet -r $(LOCK); }
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@$(BIN)/python -m pip check || { echo "$(LOCK) does not satisfy pyproject.toml: run \`make lock\`"; exit 1; }
	@touch $@

# For maintainers: re-resolve the lock file after changing dependencies in pyproject.toml.
# Pins already in the file are kept where pyproject.toml still allows them; UPGRADE=1 moves
# every pin to the newest release allowed. One universal file: environment markers pick the
# versions for Python 3.10+ (requires-python) on Linux and macOS. pip itself is pinned too.
lock: | $(BIN)/python
	@$(ensure_uv)
	echo pip | $(uv) pip compile pyproject.toml - --extra dev --extra serve --universal --python-version 3.10 \
	  $(if $(UPGRADE),--upgrade) --python $(BIN)/python --no-python-downloads \
	  --custom-compile-command "make lock" -o $(LOCK) >/dev/null

# konlpy's Okt needs a JVM; JPype >= 1.6 needs Java >= 9.
JAVA_REQUIRED ?= 1
check-java:
	@v=$$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\)\.\{0,1\}\([0-9]*\).*/\1 \2/p' | head -1); \
	major=$${v%% *}; [ "$$major" = 1 ] && major=$${v##* }; \
	if [ -z "$$major" ] || [ "$$major" -lt 9 ]; then \
	  echo "Java >= 9 not found (found: $${major:-none}). The Okt morpheme analyzer (konlpy) needs a JDK:"; \
	  echo "  Debian/Ubuntu: sudo apt-get install -y default-jdk-headless"; \
	  echo "  macOS:         brew install openjdk   (then follow brew's note to link it)"; \
	  if [ -n "$(JAVA_REQUIRED)" ]; then exit 1; else echo "(continuing: only --backend okt needs it)"; fi; \
	fi

stages:
	@echo "corpus: $(CORPUS_STAGES)"; echo "tokenization: $(TOKENIZATION_STAGES)"; \
	  echo "bundles: $(BUNDLE_STAGES)"; echo "corpora: $(CORPORA_STAGES)"; echo "artifacts: $(ARTIFACT_STAGES)"

$(CORPUS_STAGES) $(BUNDLE_STAGES): setup
	@set -e; for corpus in $(CORPORA); do \
	  $(KSENT) $(patsubst clean-text,clean,$@) --corpus $$corpus $(if $(filter download,$@),$(mirror_arg)) $(force_arg) \
	    $(if $(filter $@,$(BUNDLE_STAGES)),$(threshold_arg) $(BUNDLE_ARGS)); \
	done

# one tokenization: its word vectors of every corpus (which splits them), then its trainings in the training order
lane/%: setup
	@set -eo pipefail; tok=$(subst +,:,$*); for corpus in $(CORPORA); do \
	  echo "== $$corpus / $$tok, up to pretrain"; \
	  PYTHONUNBUFFERED=1 $(KSENT) run --corpus $$corpus $(tok_args) $(mirror_arg) --until pretrain $(RUN_ARGS) \
	    $(lane_output); \
	done; \
	order=$$($(training_order)); for corpus in $$order; do \
	  echo "== $$corpus / $$tok"; \
	  $(lane_threads) PYTHONUNBUFFERED=1 $(KSENT) run --corpus $$corpus $(tok_args) $(mirror_arg) $(threshold_arg) \
	    $(init_arg) --defer-shared $(RUN_ARGS) $(lane_output); \
	done

$(TOKENIZATION_STAGES): setup
	@set -e; for corpus in $(CORPORA); do for tok in $(TOKENIZERS); do \
	  $(KSENT) $@ --corpus $$corpus $(tok_args) $(force_arg) $(if $(filter pad train,$@),$(init_arg)); \
	done; done

$(CORPORA_STAGES) $(ARTIFACT_STAGES): setup
	$(KSENT) $@

# What `make all` would re-run, and why (stale inputs or parameters), without running it.
status: setup
	@set -e; for corpus in $(CORPORA); do for tok in $(TOKENIZERS); do \
	  $(KSENT) status --corpus $$corpus $(tok_args); \
	done; done

BENCH_MODEL ?= $(ARTIFACTS_DIR)/nsmc-morpheme-mecab
bench: setup
	$(BIN)/python tests/benchmarks/bench_tokenize.py
	$(BIN)/python tests/benchmarks/bench_predict.py --model $(BENCH_MODEL)
	$(BIN)/python tests/benchmarks/bench_serve.py --model $(BENCH_MODEL)

clean:
	rm -rf $(DATA_DIR)/raw $(DATA_DIR)/interim $(DATA_DIR)/processed $(ARTIFACTS_DIR)/*/ \
	  $(addprefix $(ARTIFACTS_DIR)/,REPORT.md report.manifest.json domains.json domains.manifest.json .*.lock \
	  .*.lock.owner) $(dir $(ARTIFACTS_DIR)).$(notdir $(ARTIFACTS_DIR)).lock $(dir $(ARTIFACTS_DIR)).$(notdir $(ARTIFACTS_DIR)).lock.owner

distclean: clean
	rm -rf $(VENV)
