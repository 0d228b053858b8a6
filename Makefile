# make book       - the book from the committed record: the notebooks run with papermill on a copy of it in
#                   _build/, computing only what it lacks, then the Jupyter Book into _build/html
# make reproduce  - every run computed again from scratch into _build/ (hours on 2 cores), the book from it,
#                   and a table per results file: runs equal to the record, within tolerance, or different
# make record     - for maintainers: make book, then its notebooks and runs become the committed ones
# make test       - unit tests, then nbval re-executes the committed notebooks and compares their checks
# make unit       - the unit tests alone (11 minutes on an AMD EPYC Zen 4, 17 on an Intel Xeon: 2 cores)
# make html       - only the book build, from the notebooks as committed
# make bench      - benchmarks/bench.py: the plain path against the engine, the kernels layer by layer, the
#                   study's cost per recipe, and the study on a Dask cluster; every % of peak is of the cores'
#                   fused-multiply-add peak, measured in the same run
# make plain-record - the plain path's record of the grid, which the sweep notebook compares the engine with
# make install    - the .venv alone (every target above makes it first)
# Each installs what it needs into .venv first, from requirements.lock.
# Options: PROFILE=smoke (the same pipeline in seconds), SEED=<int>, ENGINE=batched (no C compiler needed)
#          or plain; CLUSTER=local:N or tcp://HOST:PORT (the runs on Dask workers; not part of the
#          experiment); `ktlib publish` names the record's directory (ktlib.record.layout.record_path).
#          PUBLISH=--new-experiment lets make record replace the record with another experiment's build (made by
#          make reproduce: then RUN_DIR=$PWD/_build/reproduce/<profile>-<engine>); PUBLISH=--partial, with fewer runs.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROFILE ?= paper
SEED ?= 0
ENGINE ?= native
CLUSTER ?=
PUBLISH ?=
comma := ,
# The notebooks, in the book's order, as the table of contents lists them (ktlib.analysis.glue.NOTEBOOKS names the
# same; tests/test_glue.py keeps them so).
NOTEBOOKS := $(shell sed -n 's|^ *- file: notebooks/||p' _toc.yml)
# EMNIST ByClass comes from $KTLIB_DATA_DIR; without it, it is downloaded into data/emnist. A relative path
# is taken from this directory, where make was typed: ktlib reads it from the launch directory ($PWD), which
# papermill and nbval pass on to kernels they start in notebooks/.
export KTLIB_DATA_DIR := $(or $(KTLIB_DATA_DIR),data/emnist)
# This build's runs, under _build/ only: `make book` starts them from the committed record (ktlib seed) and
# resumes, so it computes only what the record lacks; `make reproduce` computes every run again. Only
# `make record` writes results/ and notebooks/, which are committed.
RUN_DIR := $(CURDIR)/_build/results/$(PROFILE)-$(ENGINE)
REPRODUCE_DIR := $(CURDIR)/_build/reproduce/$(PROFILE)-$(ENGINE)
NBVAL_DIR := $(CURDIR)/_build/nbval
# the executed notebooks; and the book's sources with them, which jupyter-book builds
SCRATCH := $(CURDIR)/_build/executed
SITE := $(CURDIR)/_build/site
MATHJAX := book/_static/mathjax
# the README's figure: the sweep notebook's Figure 2, as make record committed it
README_FIGURE := book/_static/fig2.png

.PHONY: help install data mathjax html book reproduce record test unit plain-record bench clean
.DEFAULT_GOAL := help

# `make` alone prints this file's header: the targets and options
help:
	@sed -n '1,/^$$/s/^# \{0,1\}//p' $(firstword $(MAKEFILE_LIST))

install: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

data: $(KTLIB_DATA_DIR)/emnist-byclass-mapping.txt

$(KTLIB_DATA_DIR)/emnist-byclass-mapping.txt: | install
	$(BIN)/ktlib download --dest $(KTLIB_DATA_DIR)

# MathJax 3 from npm, pinned by book/package-lock.json, served from the book itself: no CDN.
mathjax: $(MATHJAX)/tex-chtml.js

$(MATHJAX)/tex-chtml.js: book/package.json book/package-lock.json
	npm ci --prefix book --no-audit --no-fund --loglevel=error
	rm -rf $(MATHJAX) && mkdir -p $(MATHJAX)/output/chtml
	cp book/node_modules/mathjax/es5/tex-chtml.js $(MATHJAX)/
	cp -r book/node_modules/mathjax/es5/output/chtml/fonts $(MATHJAX)/output/chtml/

# $(call execute,RESULTS_DIR): every notebook with papermill, on that results directory, into $(SCRATCH); papermill's
# injected parameters then folded into each notebook's one parameters cell, the values it ran with
define execute
	rm -rf $(SCRATCH) && mkdir -p $(SCRATCH)
	@for nb in $(NOTEBOOKS); do \
	  echo "== notebooks/$$nb.ipynb ($(PROFILE), $(ENGINE)$(if $(CLUSTER),$(comma) on $(CLUSTER)))"; \
	  KTLIB_RESULTS_DIR=$(1) $(BIN)/papermill --cwd notebooks --log-output --no-progress-bar \
	    notebooks/$$nb.ipynb $(SCRATCH)/$$nb.ipynb -p profile $(PROFILE) -p seed $(SEED) -p engine $(ENGINE) \
	    $(if $(CLUSTER),-p cluster $(CLUSTER)) \
	    || { echo "notebooks/$$nb.ipynb failed: its output is in $(SCRATCH)/$$nb.ipynb"; exit 1; }; \
	done
	@! grep -l '"output_type": "error"' $(SCRATCH)/*.ipynb || { echo "a notebook above holds an error"; exit 1; }
	$(BIN)/python -m ktlib.analysis.page --fold $(SCRATCH)/*.ipynb
endef

# $(call site): the book from the executed notebooks, into _build/html, the Claims page's tables written from the
# claims registry (ktlib.analysis.claims; warnings are errors)
define site
	rm -rf $(SITE) && mkdir -p $(SITE)/book $(SITE)/notebooks
	cp _config.yml _toc.yml $(SITE)/ && cp -r book/*.md book/references.bib book/_static $(SITE)/book/
	$(BIN)/python -m ktlib.analysis.page $(SITE)/book/_generated
	cp $(SCRATCH)/*.ipynb $(SITE)/notebooks/
	$(BIN)/jupyter-book build -W --keep-going $(SITE) --path-output $(CURDIR)
	@echo "the book is in _build/html/index.html"
endef

book: install data mathjax
	$(BIN)/ktlib seed $(RUN_DIR) --profile $(PROFILE) --engine $(ENGINE) --seed $(SEED)
	$(call execute,$(RUN_DIR))
	$(call site)

reproduce: install data mathjax
	$(call execute,$(REPRODUCE_DIR))
	$(call site)
	$(BIN)/ktlib compare $(REPRODUCE_DIR)

# For maintainers: this build's notebooks and runs (make book's: the record, and whatever it lacked, computed
# now) become the committed ones. For a record computed from scratch, RUN_DIR=$(REPRODUCE_DIR) after make reproduce.
# The record first: a publish that refuses the build leaves the committed notebooks as they were too.
record: book
	$(BIN)/ktlib publish $(RUN_DIR) $(PUBLISH)
	for nb in $(NOTEBOOKS); do cp $(SCRATCH)/$$nb.ipynb notebooks/$$nb.ipynb || exit 1; done
	$(BIN)/python -c "import sys, pathlib; from ktlib.analysis.plots import glued_png; \
	  pathlib.Path(sys.argv[3]).write_bytes(glued_png(*sys.argv[1:3]))" notebooks/02_sweep.ipynb fig2 $(README_FIGURE)

# The plain path's record of the same grid (about 15 minutes on 2 cores), which the sweep notebook compares
# the engine with; committed as results/<profile>-plain/.
plain-record: install data
	$(BIN)/ktlib sweep --engine plain --profile $(PROFILE) --seed $(SEED) --no-progress \
	  --results-dir $(CURDIR)/_build/results/$(PROFILE)-plain
	$(BIN)/ktlib publish $(CURDIR)/_build/results/$(PROFILE)-plain $(PUBLISH)

# The plain path against the engine on the paper's 150 runs (about 17 minutes; seconds, ratios, GFLOP/s), the
# native kernels' time layer by layer (under a minute), then each recipe's rate on one class split at a fixed
# number of epochs and the study projected from it, on 2 threads and on 16 and 64 Dask workers (about 5
# minutes), then that split on a Dask LocalCluster of 1 and 2 worker processes and the study projected onto 16
# and 64 (the split three times over).
bench: install data
	$(BIN)/python benchmarks/bench.py
	$(BIN)/python benchmarks/bench.py --layers
	$(BIN)/python benchmarks/bench.py --study
	$(BIN)/python benchmarks/bench.py --cluster

# The book from the notebooks as they are stored: warnings are errors, and so is a stored error output.
html: install mathjax
	@! grep -l '"output_type": "error"' notebooks/*.ipynb || { echo "a notebook above holds an error"; exit 1; }
	$(BIN)/jupyter-book build -W --keep-going .
	@echo "the book is in _build/html/index.html"

unit: install
	$(BIN)/python -m pytest -ra tests

# nbval re-executes every notebook. Of the studies, these runs are recomputed (part:split, or part:order in the
# breadth study, and after a colon the training-set sizes k, else all): the study notebook trains them again and its
# checks compare them with the committed record. The other runs are taken from the record, and their source nets
# trained again and checked against it. The whole study would not fit in CI's time: its split 0 alone takes about half
# an hour on 2 cores.
# The subset is the paper's split at k = 1, where the book states most of its headline numbers: every part of the
# study. Its runs at k = 40 are read from the record (the core recipes' would add about 3 minutes, the probes' 8, and
# CI has 25 minutes in all); the sweep notebook (02) recomputes the paper's recipe at every k, k = 40 included. Of the
# breadth study (notebooks/08_breadth), the first order's runs at k = 1 in the rule series and on the grid's smallest
# diagonal (5x400 to 39x51: its other cells are read from the record, for CI's 25 minutes), with the n=0 runs there,
# which every source shares, and the rule series' source nets of that order of 5, 10 and 20 classes (the 39-class one
# takes about half a minute: read from the record) and the grid's 39x51 net (trained for a number of steps), trained
# again. The k=100 part has no k=1.
# Of the partial study (notebooks/09_partial), the first split's runs at k = 1 at C5, every chooser (the choosers of
# one m train as one group, and a run's numbers depend on its group), and that sweep's maps' scores at every k; C3's
# runs, which cost more, are read from the record. Of the selection study (notebooks/10_selection), the first
# selection's source net of the first draw, trained again, and its runs at k = 1 with the draw's n=0 runs there.
BREADTH_CELLS := 5x400 10x200 20x100
NBVAL_RECOMPUTED := baseline:0:1 probes:0:1 budget:0:1 one-of-n:0:1 patience-steps:0:1 reseeded:0:1 \
  $(foreach m,5 10 20,classes-$(m):0:1:source) classes-39:0:1 $(foreach c,$(BREADTH_CELLS),steps-$(c):0:1) steps-39x51:0:1:source \
  partial-C5:0:1 spanning-pixels:0:1:source

# lint-imports: the modules' layers (pyproject.toml) hold, with no import cycle; --durations: CI's log says where its
# minutes go
test: html
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -ra --durations=10 tests
	$(BIN)/python tests/nbval_results.py $(NBVAL_DIR) $(NBVAL_RECOMPUTED)
	KTLIB_RESULTS_DIR=$(NBVAL_DIR) $(BIN)/python -m pytest -ra --durations=10 -p no:cacheprovider --nbval-lax \
	  --nbval-current-env --nbval-cell-timeout=3600 --nbval-sanitize-with notebooks/nbval-sanitize.cfg notebooks

clean:
	rm -rf $(VENV) _build book/node_modules $(MATHJAX)
