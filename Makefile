# ksent: `make all` builds every model from scratch, `make test` runs the tests.
# Both create .venv and install the project on first use.
#
# Variables: CORPORA, TOKENIZERS (word char morpheme), MIRROR (a folder or URL laid
# out like ../shared/corpora), PYTHON. Example, offline here:
#     make all CORPORA=nsmc MIRROR=../shared/corpora
#
# Stage targets re-run one stage for the selected corpora (and tokenizers):
#     download clean-text dedupe split tokenize pad train evaluate report
# `clean-text` is the pipeline's clean stage; `make clean` keeps its usual meaning:
# delete the generated data/ and artifacts/ (`make distclean` also removes .venv).
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

mirror_arg := $(if $(MIRROR),--mirror $(MIRROR))
force_arg := $(if $(FORCE),--force)
installed := $(VENV)/.installed

.PHONY: all test setup check-java download clean-text dedupe split tokenize pad train evaluate report bench clean distclean

all: setup
	@$(MAKE) --no-print-directory check-java JAVA_REQUIRED=
	@set -e; for corpus in $(CORPORA); do for tok in $(TOKENIZERS); do \
	  echo "== $$corpus / $$tok"; \
	  $(KSENT) run --corpus $$corpus --tokenizer $$tok $(mirror_arg) $(force_arg); \
	done; done
	$(KSENT) report

test: setup check-java
	$(BIN)/python -m pytest $(PYTEST_ARGS)

setup: $(installed)

# Re-installs only when pyproject.toml changes.
$(installed): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

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

download clean-text dedupe split: setup
	@set -e; for corpus in $(CORPORA); do \
	  $(KSENT) $(patsubst clean-text,clean,$@) --corpus $$corpus $(if $(filter download,$@),$(mirror_arg)) $(force_arg); \
	done

tokenize pad train evaluate: setup
	@set -e; for corpus in $(CORPORA); do for tok in $(TOKENIZERS); do \
	  $(KSENT) $@ --corpus $$corpus --tokenizer $$tok $(force_arg); \
	done; done

report: setup
	$(KSENT) report

bench: setup
	$(BIN)/python tests/benchmarks/bench_tokenize.py
	$(BIN)/python tests/benchmarks/bench_predict.py

clean:
	rm -rf data/raw data/interim data/processed artifacts/*/ artifacts/REPORT.md

distclean: clean
	rm -rf $(VENV)
