# Two commands matter: `make demo` and `make test`. Both create .venv with pip when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   := runs/demo

.PHONY: install install-gpu demo test clean browser-test gpu-check

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The GPU extra: onnxruntime-gpu replaces onnxruntime and faiss-gpu-cu12 replaces faiss-cpu
# (each pair shares one import name and must never be installed together), plus TensorRT.
install-gpu: $(STAMP)
	$(BIN)/python -m pip uninstall --yes onnxruntime onnxruntime-gpu
	$(BIN)/python -m pip install --quiet -e '.[gpu,dev]'
	$(BIN)/python -m pip uninstall --yes onnxruntime
	$(BIN)/python -m pip install --quiet --force-reinstall --no-deps onnxruntime-gpu
	$(BIN)/python -m pip uninstall --yes faiss-cpu
	$(BIN)/python -m pip install --quiet --force-reinstall --no-deps faiss-gpu-cu12

# Five pytest processes: the suite loads torch, ONNX Runtime, OpenVINO, faiss, pyarrow and Ray
# in-process, and one process holding all of their native thread pools was seen to segfault late in
# the run (never in any one of these groups); separate processes keep each group's state its own.
# Each group prints its ten slowest tests (--durations), where trimming the suite's time starts.
# One pytest process per group: tests/scoring segfaulted late in one process holding every native
# runtime (the kernel's SI_KERNEL SIGSEGV while delivering a signal during subprocess.communicate's
# poll), so its index tests run in a process of their own.
# The first three groups run in TEST_WORKERS pytest-xdist processes, a test file per process at a time
# (--dist loadfile keeps a file's module fixtures in one process), each torch at one thread
# (OMP_NUM_THREADS=1: two processes with default threads on two cores slow each other far more than
# twofold): 12.4 -> 8.5 minutes on 2 cores. The scoring groups stay serial: one file (the Ray engine)
# dominates them, and they gain nothing.
TEST_WORKERS ?= 2
PARALLEL_GROUPS := "tests/benchmarks tests/data tests/engine" \
                   "tests/evaluate tests/exporters tests/losses tests/metrics tests/models" \
                   "tests/config tests/finetune tests/study $(wildcard tests/test_*.py)"
SERIAL_GROUPS := "tests/scoring/index" \
                 "$(wildcard tests/scoring/test_*.py)"

test: $(STAMP)
	@for group in $(PARALLEL_GROUPS); do \
		echo "pytest -n $(TEST_WORKERS) $$group"; \
		OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q --durations=10 -n $(TEST_WORKERS) --dist loadfile $$group || exit $$?; \
	done
	@for group in $(SERIAL_GROUPS); do \
		echo "pytest $$group"; \
		$(BIN)/python -m pytest -q --durations=10 $$group || exit $$?; \
	done

# The whole pipeline on the built-in digits (a few minutes on 2 cores): SimSiam pretraining,
# triplet fine-tuning from it, evaluation (eval.json holds the verification threshold), ONNX
# export with its parity check, then the three scoring modes on image files written from the
# run's own test split.
demo: $(STAMP)
	rm -rf $(DEMO)
	$(BIN)/toolkit pretrain --out $(DEMO)/pretrain
	$(BIN)/toolkit finetune --loss triplet --init $(DEMO)/pretrain --out $(DEMO)/finetune
	$(BIN)/toolkit evaluate $(DEMO)/finetune
	$(BIN)/python benchmarks/make_pairs.py $(DEMO)/finetune --out $(DEMO)/pairs
	$(BIN)/toolkit export $(DEMO)/finetune --data $(DEMO)/pairs/queries
	$(BIN)/toolkit score $(DEMO)/finetune/export/encoder.onnx --pairs $(DEMO)/pairs/pairs.csv --out $(DEMO)/scores.csv
	$(BIN)/toolkit score $(DEMO)/finetune/export/encoder.onnx --query $(DEMO)/pairs/queries --gallery $(DEMO)/pairs/gallery --top-k 5 --out $(DEMO)/matches.csv
	$(BIN)/toolkit score $(DEMO)/finetune/export/encoder.onnx --support $(DEMO)/pairs/support --query $(DEMO)/pairs/queries --out $(DEMO)/predictions.csv

clean:
	rm -rf $(VENV) runs .pytest_cache

# The HTML report of `toolkit score --html` checked in a real browser: Debian's chromium, headless,
# installed when missing (as root, or through sudo). .ci/run runs this after `make test`.
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo)
browser-test: $(STAMP)
	command -v chromium >/dev/null || ($(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)
	$(BIN)/python -m pytest -q tests/scoring/test_report_html.py

# One prepared check for a machine with a GPU (< 8 min on one H100; torch + CUDA, onnx, onnxruntime):
# bf16 pretraining eager/compiled, augmentation vs bare step, finetune/evaluate/embed on CUDA, skip lines.
gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py --json benchmarks/results/gpu_check.json
