# `make test` runs every test: the hook's cargo tests and the chart's pytest suite.
.PHONY: test test-hook test-chart bootstrap bench image

test: test-hook test-chart

bootstrap:
	tests/bootstrap.sh

test-hook:
	cargo test --workspace --locked

test-chart: bootstrap
	.venv/bin/pytest tests/chart -q

# Benchmarks: convergence time, reaction time, binary size and peak RSS; writes BENCHMARKS.md.
bench:
	cargo build --release --locked -p immudb-hook
	cargo run --release --locked -p immudb-double --bin converge-bench -- target/release/immudb-hook > BENCHMARKS.md
	cat BENCHMARKS.md

image:
	docker build -t immudb-hook:dev .
