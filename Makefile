# Two entry points, each of which sets up .venv from setup.cfg on a fresh clone:
#   make demo   -- install, then run the main job (train.py with no arguments: synthetic data,
#                  train, evaluate, export SavedModel and TFLite, plots; runs/synthetic-small/)
#   make test   -- install with test extras, then run the whole suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL ?= 2
export KERAS_BACKEND ?= tensorflow

.PHONY: demo test venv clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[serve,onnx,openvino,test]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) train.py

test: venv
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n 2 --dist loadscope --durations=25

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
