# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Exact versions of every package the test environment installs (`make constraints` refreshes
# it). `make install CONSTRAINTS=` resolves afresh instead, e.g. on a Python the pins do not fit.
CONSTRAINTS ?= constraints.txt
PIN := $(if $(CONSTRAINTS),-c $(CONSTRAINTS))

# pytest-xdist: one worker per core. --dist loadfile hands out whole files, so the tests of a
# file that share a module-scoped server (org_server, test_subjects.py's, ...) run on one
# worker; each worker has its own session `lab` (tests/conftest.py).
JOBS ?= auto
XDIST := -n $(JOBS) --dist loadfile
# Markers: see pyproject.toml and tests/conftest.py.
FAST := not browser and not chaos and not notebooks
PYTEST_ARGS ?=

.PHONY: demo test test-fast lint bench install constraints clean chaos chaos-cluster asyncapi-parser docs

# The distribution was called `agentlab` until it became agentlab-nats: an older .venv has
# that one installed, and it is uninstalled before the new one goes in.
$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(PIN) --upgrade pip
	$(BIN)/python -m pip uninstall --quiet --yes agentlab 2>/dev/null || true
	$(BIN)/python -m pip install --quiet $(PIN) -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# tests/test_asyncapi.py validates docs/asyncapi.json with the official AsyncAPI parser, the
# npm package @asyncapi/parser at the version tests/js/package-lock.json pins (node and npm).
PARSER := tests/js/node_modules/.installed
# Without npm (a learner's machine) that one test skips; CI installs node and npm first.
$(PARSER): tests/js/package.json tests/js/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	    npm ci --prefix tests/js --ignore-scripts --no-audit --no-fund && touch $(PARSER); \
	else \
	    echo "npm not found: tests/test_asyncapi.py skips the AsyncAPI parser check" \
	         "(apt-get install nodejs npm)"; \
	fi

asyncapi-parser: $(PARSER)

# The browser agent widget's front end (agentlab/widgets/assets/browser_agent.js) is built from
# js/browser-agent; tests/test_browser_agent.py checks the committed bundle is what its lock file
# builds. Without npm those checks skip. After editing the JS: npm run build --prefix js/browser-agent
BUNDLER := js/browser-agent/node_modules/.installed
$(BUNDLER): js/browser-agent/package.json js/browser-agent/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	    npm ci --prefix js/browser-agent --ignore-scripts --no-audit --no-fund && touch $(BUNDLER); \
	else \
	    echo "npm not found: tests/test_browser_agent.py skips the bundle checks" \
	         "(apt-get install nodejs npm)"; \
	fi

demo: $(STAMP)
	$(BIN)/agentlab demo

# Static checks that `test` and `test-fast` run first (all three in the [test] extra, pinned
# by constraints.txt): ruff (pyproject's [tool.ruff]), mypy on the package ([tool.mypy]) and
# the layer contracts of docs/architecture.md ([tool.importlinter]).
lint: $(STAMP)
	$(BIN)/ruff check agentlab tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

# Everything: unit, integration, browser, chaos and notebooks (about 8 minutes on one core).
test: $(STAMP) lint $(PARSER) $(BUNDLER)
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

# Everything but the browser, the chaos suite and the notebooks: under 3 minutes on 2 cores.
test-fast: $(STAMP) lint $(PARSER) $(BUNDLER)
	$(BIN)/python -m pytest $(XDIST) -m "$(FAST)" $(PYTEST_ARGS)

# Refresh constraints.txt: a fresh venv, an unpinned install of '.[test]', pip freeze.
constraints:
	set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -m pip install --quiet --upgrade pip; \
	"$$tmp/venv/bin/python" -m pip install --quiet -e '.[test]'; \
	{ echo "# Exact versions of every package the test environment installs, agentlab itself"; \
	  echo "# excepted: make install, make test and .ci/run use them through"; \
	  echo "# \`pip install -c constraints.txt -e '.[test]'\`. Written by \`make constraints\`"; \
	  echo "# (a fresh venv, an unpinned install, pip freeze) with Python" \
	       "$$("$$tmp/venv/bin/python" -c 'import platform; print(platform.python_version())')."; \
	  "$$tmp/venv/bin/python" -m pip freeze --all --exclude-editable; } > "$$tmp/constraints.txt"; \
	mv "$$tmp/constraints.txt" $(or $(CONSTRAINTS),constraints.txt)
	@echo "$(or $(CONSTRAINTS),constraints.txt) refreshed; make install uses it"

# The course site in site/: every course notebook executed (an embedded server each), each
# live view's final snapshot kept in its output, MkDocs Material over them, the README and
# docs/ (docs/tools/build.py; a few minutes). The committed notebooks stay without outputs.
# tests/test_docs.py builds it the same way and reads every lesson page in Chromium.
docs: $(STAMP)
	$(BIN)/python docs/tools/build.py --site site

bench: $(STAMP)
	$(BIN)/python -m benchmarks.foundation
	$(BIN)/python -m benchmarks.delegation
	$(BIN)/python -m benchmarks.tracing
	$(BIN)/python -m benchmarks.dashboard
	$(BIN)/python -m benchmarks.scaling
	$(BIN)/python -m benchmarks.consumers

# The fault suite: 10,000 tasks to agent processes while agents and nats-server are
# SIGKILLed; prints the figures (a 1,000-task version runs inside `make test`).
chaos: $(STAMP)
	$(BIN)/python -m agentlab.chaos --tasks 10000 --agent-pauses 2 --server-pauses 1

# The same on a local 3-node cluster: pauses of an agent and of the AGENT_TASKS leader, a
# partition of the leader (network namespaces: needs root, else that row says why it was
# skipped), and 20 leader kills with the distribution of their recoveries.
chaos-cluster: $(STAMP)
	$(BIN)/python -m agentlab.chaos --cluster --tasks 10000 --agent-pauses 2 --server-pauses 1 \
		--partitions 1 --leader-kills 20

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build dist site tests/js/node_modules js/browser-agent/node_modules
