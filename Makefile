# Kizuna: `make run` sets everything up and runs the bot; `make test` sets up and runs the tests.
.PHONY: setup run test lint bench

setup:
	@./scripts/setup.sh

run: setup
	@.venv/bin/kizuna run

test: setup
	@.venv/bin/python -m pytest -q

lint: setup
	@.venv/bin/ruff check .

bench: setup
	@.venv/bin/python -m bench.ingest_bench
