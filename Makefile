# Two commands matter: `make demo` and `make test`. Both create .venv with pip when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   := runs/demo

.PHONY: install install-gpu demo test clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The GPU extra: onnxruntime-gpu replaces onnxruntime (they share one import name and must
# never be installed together), plus TensorRT from NVIDIA's index.
install-gpu: $(STAMP)
	$(BIN)/python -m pip uninstall --yes onnxruntime onnxruntime-gpu
	$(BIN)/python -m pip install --quiet -e '.[gpu,dev]'
	$(BIN)/python -m pip uninstall --yes onnxruntime
	$(BIN)/python -m pip install --quiet --force-reinstall --no-deps onnxruntime-gpu

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	rm -rf $(DEMO)
	$(BIN)/toolkit pretrain --out $(DEMO)/pretrain

clean:
	rm -rf $(VENV) runs .pytest_cache
