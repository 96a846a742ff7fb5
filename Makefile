# The two commands: `make demo` (the main CPU job) and `make test` (the test suite).
# Both set everything up on a fresh machine first (idempotent, fast when done).
VENV := .venv
NP ?= 2
ARGS ?=

.PHONY: setup demo test

setup:
	@bash launch/setup.sh

demo: setup
	$(VENV)/bin/mpirun -n $(NP) $(VENV)/bin/essa-train --config launch/configs/demo-cpu.yaml $(ARGS)

test: setup
	$(VENV)/bin/python -m pytest -q tests
