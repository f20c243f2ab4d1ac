# Two entry points, each of which sets up .venv from setup.cfg on a fresh clone:
#   make demo   -- install, then run the main job (train.py with no arguments: synthetic data,
#                  train, evaluate, export SavedModel and TFLite, plots; runs/synthetic-small/)
#   make test   -- install with test extras, then run the whole suite
#   make docs   -- install, then build the documentation site into docs/_build/html (warnings fail it)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL ?= 2
export KERAS_BACKEND ?= tensorflow

.PHONY: demo test venv docs clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[serve,onnx,openvino,docs,test]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) train.py

test: venv
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n 2 --dist loadscope --durations=25

docs: venv
	$(VENV)/bin/sphinx-build -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
