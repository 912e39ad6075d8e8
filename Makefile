# Nexus — entry points. The recipes are thin; the work is in scripts/.
#   make run    build and serve on embedded defaults (http://127.0.0.1:8080)
#   make test   install and start what the tests need, then every check CI runs
#   make bench  load tests and benchmarks; rewrites docs/benchmarks.md

SHELL := /bin/bash

.PHONY: run test bench build lint doc layering services services-stop

run:
	@scripts/build-deps.sh
	cargo build --release -p nexus
	cargo run --release -p nexus -- serve

test:
	@scripts/test.sh

bench:
	@scripts/bench.sh

build:
	@scripts/build-deps.sh
	cargo build --release -p nexus

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

doc:
	RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

layering:
	@python3 scripts/check-layering.py

services:
	@scripts/services.sh start

services-stop:
	@scripts/services.sh stop
