# `make test` runs every test: the hook's cargo tests and the chart's pytest suite.
.PHONY: test test-hook test-chart bootstrap bench image

test: test-hook test-chart

bootstrap:
	tests/bootstrap.sh

test-hook:
	cargo test --workspace --locked

test-chart: bootstrap
	.venv/bin/pytest tests/chart -q

# Benchmarks: convergence time, reaction time, binary size and peak RSS; backup and restore
# throughput and the backup's peak RSS on a 1 GiB database; failover, and the write pause of a
# planned restart of the primary with and without failover; a replica's freshness after a quiet
# period (about 7 minutes: it waits through quiet periods of up to 5 minutes); writes BENCHMARKS.md.
# The hook is built exactly as the Dockerfile builds it: static, stripped, for the host platform.
HOST := $(shell rustc -vV | sed -n 's/^host: //p')
STATIC_HOOK := target/$(HOST)/release/immudb-hook

bench:
	RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target $(HOST) -p immudb-hook
	cargo build --release --locked -p immudb-double --bin converge-bench --bin backup-bench --bin agent-bench --bin failover-bench --bin switchover-bench --bin fresh-bench
	# Run the benches directly: `cargo run` execs them in place, so their getrusage(RUSAGE_CHILDREN)
	# would count the compilers cargo ran as well as the hook.
	target/release/converge-bench $(STATIC_HOOK) > BENCHMARKS.md
	target/release/backup-bench $(STATIC_HOOK) >> BENCHMARKS.md
	target/release/agent-bench $(STATIC_HOOK) >> BENCHMARKS.md
	target/release/failover-bench $(STATIC_HOOK) >> BENCHMARKS.md
	target/release/switchover-bench $(STATIC_HOOK) >> BENCHMARKS.md
	target/release/fresh-bench $(STATIC_HOOK) >> BENCHMARKS.md
	cat BENCHMARKS.md

image:
	docker build -t immudb-hook:dev .
