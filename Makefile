# layerlab front door. `make run` sets up a venv and runs the default study; `make test` runs the tests.
VENV    ?= .venv
PY      := $(VENV)/bin/python
CORES   ?= 2
CONFIG  ?=
# SLURM=1 also installs the SLURM executor plugin (.[slurm]): off by default, as Snakemake imports every installed
# plugin at start-up and this one queries the cluster (`scontrol show config`, up to 10 s) when it does
SLURM   ?=
EXTRAS  := $(if $(filter 1,$(SLURM)),dev-slurm,dev)
SNAKE   := $(VENV)/bin/snakemake -c$(CORES) $(if $(CONFIG),--configfile $(CONFIG))
comma   := ,
STUDY    = $(shell sed -n 's/^study: *//p' $(or $(CONFIG),config/config.yaml))

.PHONY: setup run report claims test lint bench clean

$(VENV)/.installed-$(EXTRAS): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -e ".[$(subst -,$(comma),$(EXTRAS))]"
	touch $@

setup: $(VENV)/.installed-$(EXTRAS)

run: setup            ## default study (or CONFIG=config/studies/<study>.yaml), then its HTML report
	$(SNAKE)
	$(SNAKE) --report results/$(STUDY)/report.html

QUICK   := config/config.yaml $(filter-out %_paper.yaml,$(wildcard config/studies/*.yaml))

claims: setup         ## every quick study's datasets, then each study and its report (finished cells reused), then one table of all claims and results/claims.html
	@# every dataset first, its output shown only if it fails: a missing one stops the run before hours of training
	@for c in $(QUICK); do out=$$($(VENV)/bin/snakemake -c$(CORES) --configfile $$c --until dataset dataset_plugin 2>&1) \
	  || { echo "$$out"; echo "make claims: stopped before any training: $$c (above)"; exit 1; }; done
	@for c in $(QUICK); do s=$$(sed -n 's/^study: *//p' $$c); \
	  $(VENV)/bin/snakemake -c$(CORES) --configfile $$c || exit 1; \
	  $(VENV)/bin/snakemake -c$(CORES) --configfile $$c --report results/$$s/report.html || exit 1; done
	@$(PY) -m layerlab.claims --html results/claims.html $(foreach c,$(QUICK),results/$(shell sed -n 's/^study: *//p' $(c)))

test: setup lint
	$(PY) -m pytest

lint: setup           ## ruff, and the type checker on the package (its config: pyproject.toml [tool.mypy])
	$(VENV)/bin/ruff check src scripts tests bench
	$(VENV)/bin/mypy

bench: setup
	$(PY) bench/train_speed.py

clean:
	rm -rf results .snakemake
