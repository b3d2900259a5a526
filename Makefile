# framecache: every target creates and reuses .venv on first use.
# Variables pass through to the command-line tools, e.g.
#   make features CSV=my/labels.csv OUT=my.h5 BACKBONE=mobilenet_v2 WEIGHTS=weights.h5 VIEWS=2
#   make train FEATURES=my.h5 RUN=runs/first EPOCHS=50

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

CSV ?= data/demo/labels.csv
OUT ?= features.h5
FEATURES ?= $(OUT)
DEMO_DIR := data/demo

# Stage one options, passed only when set.
EXTRACT_ARGS = --csv $(CSV) --out $(OUT) \
	$(if $(BACKBONE),--backbone $(BACKBONE)) $(if $(WEIGHTS),--weights $(WEIGHTS)) \
	$(if $(ENGINE),--engine $(ENGINE)) $(if $(VIEWS),--views $(VIEWS)) \
	$(if $(AUGMENT),--augment $(AUGMENT)) $(if $(SEED),--seed $(SEED)) \
	$(if $(FRAME_STEP),--frame-step $(FRAME_STEP)) $(if $(FPS),--fps $(FPS)) \
	$(if $(BATCH_SIZE),--batch-size $(BATCH_SIZE)) $(if $(WORKERS),--workers $(WORKERS)) \
	$(if $(DECODER),--decoder $(DECODER)) $(if $(OVERWRITE),--overwrite) $(if $(QUIET),--quiet)

# Stage two options, passed only when set.
TRAIN_ARGS = --features $(FEATURES) $(if $(RUN),--run $(RUN)) \
	$(if $(EPOCHS),--epochs $(EPOCHS)) $(if $(SEED),--seed $(SEED)) \
	$(if $(UNITS),--units $(UNITS)) $(if $(LAYERS),--layers $(LAYERS)) \
	$(if $(DROPOUT),--dropout $(DROPOUT)) $(if $(MAX_LEN),--max-len $(MAX_LEN)) \
	$(if $(BALANCE),--balance $(BALANCE)) $(if $(CV),--cv $(CV)) $(if $(QUIET),--quiet) \
	$(if $(OVERWRITE),--overwrite) $(if $(BIDIRECTIONAL),--bidirectional) $(if $(PATIENCE),--patience $(PATIENCE)) \
	$(if $(POOLING),--pooling $(POOLING)) $(if $(LEARNING_RATE),--learning-rate $(LEARNING_RATE)) \
	$(if $(IGNORE_SPLIT),--ignore-split) $(if $(TRAIN_FRAME_STEP),--frame-step $(TRAIN_FRAME_STEP))

.PHONY: help setup features info train predict evaluate compare sweep demo demo-data test test-slow lint bench clean

help:
	@echo "make demo        demo data -> features -> GRU -> summary (offline, a few minutes)"
	@echo "make test        the test suite (make test-slow: the slow tests too)"
	@echo "make features    CSV=labels.csv OUT=features.h5 [BACKBONE= WEIGHTS= VIEWS= AUGMENT= SEED= ...]"
	@echo "make info        FEATURES=features.h5 [JSON=1]"
	@echo "make train       FEATURES=features.h5 [RUN=runs/name EPOCHS= SEED= UNITS= DROPOUT= MAX_LEN= CV=]"
	@echo "make predict     RUN=runs/name VIDEOS='a.mp4 b.mp4'"
	@echo "make evaluate    RUN=runs/name FEATURES=other.h5"
	@echo "make compare     table of all runs under runs/"
	@echo "make sweep       FEATURES=features.h5 [GRID=grid.json]"
	@echo "make bench       [CSV=your.csv BENCH_OUT=bench/results.json]  stage one and two measured side by side"

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

features: $(STAMP)
	$(PY) -m extract $(EXTRACT_ARGS)

info: $(STAMP)
	$(PY) -m extract.info $(FEATURES) $(if $(JSON),--json)

train: $(STAMP)
	$(PY) -m train $(TRAIN_ARGS)

predict: $(STAMP)
	$(PY) -m train.predict --run $(RUN) $(if $(ENGINE),--engine $(ENGINE)) $(VIDEOS)

evaluate: $(STAMP)
	$(PY) -m train.evaluate --run $(RUN) --features $(FEATURES)

compare: $(STAMP)
	$(PY) -m train.compare $(or $(RUNS),runs)

sweep: $(STAMP)
	$(PY) -m train.sweep --features $(FEATURES) $(if $(GRID),--grid $(GRID)) $(SWEEP)

demo-data: $(STAMP)
	$(PY) -m data.make_demo --out $(DEMO_DIR)

demo: demo-data
	$(PY) -m extract --csv $(DEMO_DIR)/labels.csv --out $(DEMO_DIR)/features.h5 \
		--backbone efficientnet_lite0 --weights imagenet $(if $(QUIET),--quiet)
	$(PY) -m extract.info $(DEMO_DIR)/features.h5
	$(PY) -m train --features $(DEMO_DIR)/features.h5 --run runs/demo $(if $(SEED),--seed $(SEED)) $(if $(QUIET),--quiet)

test: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .

# CSV= only when given (make's own default CSV is the demo's, for features).
bench: BENCH_CSV = $(if $(filter command line environment,$(origin CSV)),$(CSV))
bench: $(STAMP)
	$(PY) -m bench $(if $(BENCH_CSV),--csv $(BENCH_CSV)) --out $(or $(BENCH_OUT),bench/results.json)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
