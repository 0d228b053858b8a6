# make reproduce  - the main job: the paper's source net and its 150-run transfer sweep
# make test       - the test suite (unit tests and end-to-end runs on real EMNIST)
# Both install what they need into .venv first, from requirements.lock.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# EMNIST ByClass comes from $KTLIB_DATA_DIR; without it, it is downloaded into data/emnist.
export KTLIB_DATA_DIR := $(or $(KTLIB_DATA_DIR),data/emnist)

.PHONY: install data reproduce test clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

data: $(KTLIB_DATA_DIR)/emnist-byclass-mapping.txt

$(KTLIB_DATA_DIR)/emnist-byclass-mapping.txt: | install
	$(BIN)/ktlib download --dest $(KTLIB_DATA_DIR)

reproduce: install data
	$(BIN)/ktlib sweep --results-dir results/paper

test: install
	$(BIN)/python -m pytest -ra

clean:
	rm -rf $(VENV) results
