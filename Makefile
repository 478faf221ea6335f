# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench install clean chaos

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/agentlab demo

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m benchmarks.foundation
	$(BIN)/python -m benchmarks.delegation
	$(BIN)/python -m benchmarks.dashboard

# The fault suite: 10,000 tasks to agent processes while agents and nats-server are
# SIGKILLed; prints the figures (a 1,000-task version runs inside `make test`).
chaos: $(STAMP)
	$(BIN)/python -m agentlab.chaos --tasks 10000

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build dist
