# framecache: a thin layer over the `framecache` command; every target creates and reuses .venv.
# Every option of a command is also a Make variable, named like its flag in capitals
# (--max-len -> MAX_LEN=, --no-appearance -> APPEARANCE=0, --overwrite -> OVERWRITE=1), e.g.
#   make features CSV=my/labels.csv OUT=my.h5 BACKBONE=mobilenet_v2 WEIGHTS=weights.h5 VIEWS=2
#   make train FEATURES=my.h5 RUN=runs/first EPOCHS=50 TEST_FRACTION=0.1
# ARGS='--flag value ...' is passed through as it is. `framecache COMMAND --help` lists every option.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
FRAMECACHE_CMD ?= $(VENV)/bin/framecache
# FRAMECACHE_MAKE=1: the command reads the Make variables given on make's command line
# (make exports those) and names options as Make variables in its messages.
FRAMECACHE := FRAMECACHE_MAKE=1 $(FRAMECACHE_CMD)
export PYTHONUNBUFFERED := 1

CSV ?= data/demo/labels.csv
OUT ?= features.h5
FEATURES ?= $(OUT)
DEMO_DIR := data/demo

.PHONY: help setup features info merge train predict evaluate compare sweep demo demo-data test test-slow lint bench bench-gpu bench-ray clean

help:
	@echo "make demo        demo data -> CNN and pose features -> GRU beside its baseline, 6-fold subject CV (a few minutes)"
	@echo "make test        the fast tests, in parallel (make test-slow: only the tests marked slow, in order; installs Ray)"
	@echo "make features    CSV=labels.csv OUT=features.h5 [BACKBONE= WEIGHTS= VIEWS= AUGMENT= SEED= ...]"
	@echo "make info        FEATURES=features.h5 [JSON=1]"
	@echo "make merge       OUT=study.h5 CACHES='a.h5 b.h5'  caches with the same settings into one (converts schema 1)"
	@echo "make train       FEATURES=features.h5 [RUN=runs/name EPOCHS= SEED= UNITS= DROPOUT= MAX_LEN= CV= ...]"
	@echo "make predict     RUN=runs/name VIDEOS='a.mp4 b.mp4' [TOP= ENGINE=]"
	@echo "make evaluate    RUN=runs/name FEATURES=f.h5 [SPLIT=test|all|val|train REPORT=folder]  (default: the run's test videos)"
	@echo "make compare     [RUNS=runs]  table of all runs"
	@echo "make sweep       FEATURES=features.h5 [GRID=grid.json SWEEP='--units 32,64' SWEEP_OUT=folder]  (every INPUTS unless given)"
	@echo "make features    ... RAY=local WORKERS=2 | RAY=auto | RAY=ray://head:10001  stage one on a Ray cluster (installs Ray)"
	@echo "make bench-gpu   [BENCH_OUT=bench/results-gpu.json]  on a GPU: installs TensorFlow's CUDA build; the quick bench on it, with 1, 2, 4, ... decoding processes"
	@echo "make bench-ray   [WORKERS=2]  Ray's overhead against the single-machine pipeline"
	@echo "make bench       [QUICK=1 ROUNDS=3 ACCURACY=1 TRAIN_MEMORY=0 PRECISIONS=f32,bf16 CSV=your.csv BENCH_OUT=bench/results.json POSE_MODELS=folder ENGINE= WORKERS_SWEEP=1,2,4]  stage one and two in interleaved rounds, the pose backbone where its models are"
	@echo "Every option of 'framecache COMMAND --help' is a Make variable: --max-len -> MAX_LEN=, or ARGS='...'."

setup: $(STAMP)

# pip's and setuptools' chatter goes to a log, shown only when the install fails.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing framecache and its pinned dependencies into $(VENV) (log: $(VENV)/install.log)"
	@$(PY) -m pip install --quiet --upgrade pip > $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	@$(PY) -m pip install --quiet -e '.[dev]' >> $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	@touch $(STAMP)

# Ray, the [ray] extra, is installed the first time a target runs with RAY= set (and for the Ray tests).
RAY_STAMP := $(VENV)/.ray-stamp
$(RAY_STAMP): $(STAMP)
	@echo "installing Ray (framecache's [ray] extra) into $(VENV)"
	@$(PY) -m pip install --quiet -e '.[dev,ray]' >> $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	@touch $(RAY_STAMP)

features: $(STAMP) $(if $(RAY),$(RAY_STAMP))
	$(FRAMECACHE) extract --csv $(CSV) --out $(OUT) $(ARGS)

info: $(STAMP)
	$(FRAMECACHE) info $(FEATURES) $(ARGS)

# CACHES="a.h5 b.h5": caches made with the same settings, merged into OUT (a schema-1 cache is converted).
merge: $(STAMP)
	$(FRAMECACHE) merge --out $(OUT) $(ARGS) $(CACHES)

train: $(STAMP)
	$(FRAMECACHE) train --features $(FEATURES) $(ARGS)

predict: $(STAMP)
	$(FRAMECACHE) predict --run $(RUN) $(ARGS) $(VIDEOS)

evaluate: $(STAMP)
	$(FRAMECACHE) evaluate --run $(RUN) --features $(FEATURES) $(if $(REPORT),--out $(REPORT)) $(ARGS)

compare: $(STAMP)
	$(FRAMECACHE) compare $(or $(RUNS),runs)

sweep: $(STAMP)
	$(FRAMECACHE) sweep --features $(FEATURES) $(if $(GRID),--grid $(GRID)) $(if $(SWEEP_OUT),--out $(SWEEP_OUT)) $(SWEEP) $(ARGS)

# Four exercises (motion decides) and four equipment classes (appearance decides): the default model needs both.
demo-data: $(STAMP)
	$(PY) -m framecache.data.make_demo --out $(DEMO_DIR)

# The demo's features are fixed (so a rerun resumes); its training takes Make variables (make demo EPOCHS=5).
# The same videos through the pose backbone too, where MediaPipe's models can be had (from PyPI's mediapipe
# wheel, once, into ~/.cache/framecache/pose): a pose model sees how the figure moves, the CNN the equipment;
# the run models each and combines them. Cross-validation over its six subjects: each video is tested by a
# model that never saw its subject, and the figures (mean ± std over the folds, with the pooled interval)
# do not hang on one test subject.
demo: demo-data
	$(FRAMECACHE_CMD) extract --csv $(DEMO_DIR)/labels.csv --out $(DEMO_DIR)/features.h5 \
		--backbone efficientnet_lite0 --weights imagenet $(if $(QUIET),--quiet)
	$(FRAMECACHE_CMD) info $(DEMO_DIR)/features.h5
	@if $(PY) -m framecache.extract.pose.fetch > /dev/null; then \
		echo "pose: the same videos through BlazePose: it sees how the figure moves, not the equipment"; \
		$(FRAMECACHE_CMD) extract --csv $(DEMO_DIR)/labels.csv --out $(DEMO_DIR)/pose.h5 --backbone pose --views 1 --quiet && \
		$(FRAMECACHE) train --features $(DEMO_DIR)/pose.h5 $(DEMO_DIR)/features.h5 --run runs/demo --overwrite --cv 6 $(ARGS); \
	else echo "pose: skipped (MediaPipe's pose models could not be fetched; see the error above): CNN features alone"; \
		$(FRAMECACHE) train --features $(DEMO_DIR)/features.h5 --run runs/demo --overwrite --cv 6 $(ARGS); fi

# The fast suite in TEST_WORKERS processes (pytest-xdist), a test file each at a time; the slow one in order
# (its kill loops time themselves against an uninterrupted run).
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -m "not slow" -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-slow: $(RAY_STAMP)
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .

# CSV= only when given (make's own default CSV is the demo's, for features): then it is in the environment.
bench: $(STAMP)
	$(FRAMECACHE) bench --out $(or $(BENCH_OUT),bench/results.json) $(ARGS)

# The GPU check: TensorFlow's CUDA build (the [gpu] extra, installed once), then the quick bench on TensorFlow's engine
# (what auto picks on a GPU) at f32 and bf16, on 16 ten-second clips (a GPU embeds the quick bench's 4 short ones in less
# than its start-up), with 1, 2, 4, ... decoding processes up to the cores (docs/benchmarks.md, "On a GPU").
GPU_STAMP := $(VENV)/.gpu-stamp
$(GPU_STAMP): $(STAMP)
	@echo "installing TensorFlow's CUDA build (framecache's [gpu] extra) into $(VENV)"
	@$(PY) -m pip install --quiet -e '.[dev,gpu]' >> $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	@touch $(GPU_STAMP)

bench-gpu: $(GPU_STAMP)
	$(FRAMECACHE) bench --quick --engine tensorflow --clips 16 --seconds 10 --out $(or $(BENCH_OUT),bench/results-gpu.json) $(ARGS)

# Stage one on a local Ray cluster of WORKERS single-CPU actors against the single-machine pipeline, side by side.
bench-ray: $(RAY_STAMP)
	$(PY) -m framecache.bench.ray_overhead --workers $(or $(WORKERS),2) $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
