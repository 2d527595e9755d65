# The two entry points of the README.  Everything runs from .venv; system packages are
# installed by scripts/install-system-deps.sh when missing (Debian, as root).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test lint typecheck docs pytest system-deps bench-parse bench-dispatch bench-send bench-compare \
	bench-connect bench-messages bench-resume bench-memory bench-memory-10k bench-scram bench-floods \
	bench-adversarial bench-table clean

test: system-deps $(VENV)/.installed lint typecheck docs pytest

# The node at work: a local Prosody, an echo node and a visitor exchanging messages.
run: system-deps $(VENV)/.installed
	$(BIN)/python examples/demo.py

system-deps:
	scripts/install-system-deps.sh

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,docs,bench]'
	touch $@

lint: $(VENV)/.installed
	$(BIN)/ruff check txxmppnode tests twisted benchmarks docs examples
	$(BIN)/ruff format --check txxmppnode tests twisted benchmarks docs examples

typecheck: $(VENV)/.installed
	$(BIN)/mypy

docs: $(VENV)/.installed
	$(BIN)/sphinx-build -E -W --keep-going -q -b html docs docs/_build/html

pytest: $(VENV)/.installed
	$(BIN)/pytest

bench-parse: $(VENV)/.installed
	$(BIN)/python benchmarks/parse.py

# Input shaped against the parser: cost per KiB by size, and memory (a fresh process per run).
bench-adversarial: $(VENV)/.installed
	$(BIN)/python benchmarks/adversarial.py

bench-dispatch: $(VENV)/.installed
	$(BIN)/python benchmarks/dispatch.py

bench-send: $(VENV)/.installed
	$(BIN)/python benchmarks/send.py

# Receive and send paths in one table: lxml floor, twisted.words, slixmpp, txxmppnode.
bench-compare: $(VENV)/.installed
	$(BIN)/python benchmarks/compare.py

# Against a local Prosody: txxmppnode, twisted.words, slixmpp; AIOXMPP_PYTHON=... adds aioxmpp
# (see benchmarks/connect.py).
bench-connect: system-deps $(VENV)/.installed
	$(BIN)/python benchmarks/connect.py

# Against a local Prosody: resumption after a cut, and CPU per 1,000 messages (txxmppnode only).
bench-resume: system-deps $(VENV)/.installed
	$(BIN)/python benchmarks/resume.py

# Against a local Prosody: client CPU per 1,000 messages A -> B, txxmppnode, twisted.words and
# slixmpp side by side; PROFILE=FILE adds a cProfile of one txxmppnode round.
bench-messages: system-deps $(VENV)/.installed
	$(BIN)/python benchmarks/messages.py $(if $(PROFILE),--profile $(PROFILE))

bench-memory: system-deps $(VENV)/.installed
	$(BIN)/python benchmarks/memory.py

# The issue's table in one run: compare, connect, messages and memory with modest defaults,
# every figure beside twisted.words and slixmpp with its goal (see benchmarks/table.py).
bench-table: system-deps $(VENV)/.installed
	$(BIN)/python benchmarks/table.py

# 10,000 idle streams in one process against one Prosody (file descriptor limits raised).
bench-memory-10k: system-deps $(VENV)/.installed
	$(BIN)/python benchmarks/memory.py --clients 10000

# In-process SCRAM server: the reactor's stall while one connection derives its key.
bench-scram: $(VENV)/.installed
	$(BIN)/python benchmarks/scram_stall.py

# Hostile servers on 127.0.0.1: the client's memory under floods (before/after: see the script).
bench-floods: $(VENV)/.installed
	$(BIN)/python benchmarks/floods.py

clean:
	rm -rf $(VENV) docs/_build build *.egg-info
