# The two commands a new machine needs (as root, Debian 12):
#   make demo   build berth, build a busybox image, run the pods in examples/
#   make test   install what the tests need, then fmt, clippy and every test
.PHONY: demo test deps check build release bench schemas clean fuzz chaos

CARGO ?= cargo

deps:
	scripts/install-deps.sh

check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	python3 bench/readme.py --check

build:
	$(CARGO) build --workspace --bins

# The release build links berth-shim statically: one shim runs per container,
# and without libc.so's shared pages it stays under 1 MB RSS.
release:
	$(CARGO) build --release --workspace --bins
	$(CARGO) rustc --release -p berth-shim --bin berth-shim -- -C target-feature=+crt-static

test: deps check build
	$(CARGO) nextest run --workspace --profile ci

demo: deps
	scripts/demo.sh

# Crash consistency and chaos, the full runs (root; under 30 minutes):
# the agent and the CLI are killed at every point where berth makes state
# durable (BERTH_TEST_CRASH_AT=N, debug builds only), and the state they
# leave and the state the next start recovers are checked; then the chaos
# scenarios (tests/tests/chaos_*.rs): kill -9 of the agent at random
# moments during pod churn, registry faults through a proxy, a full disk
# under --root, a runtime that fails at random. `make test` runs a short
# version of each. Two tests run at a time, each test's tables printed as
# it ends; a chaos run prints its seed (BERTH_CHAOS_SEED=N replays it).
chaos: deps build
	BERTH_CHAOS=full $(CARGO) nextest run -p berth-e2e --profile chaos \
		-E 'binary(crash_consistency) | binary(/^chaos_/)'

# Benchmarks against podman and containerd (root; installs them; about 25
# minutes): writes bench/RESULTS.md and README.md's performance table.
bench: release
	scripts/install-deps.sh --bench
	bench/bench.py

# Fuzz the parsers hostile input reaches (nightly and cargo-fuzz): each
# target runs FUZZ_SECONDS from its committed corpus fuzz/corpus/TARGET,
# one after the other at low priority; new inputs land in the corpus, which
# is then minimised back (cargo fuzz cmin). A crash stops here, with the
# input in fuzz/artifacts/TARGET. No sanitizer: the targets are safe Rust,
# where a panic or an overflow (debug assertions are on) is the bug, and
# uninstrumented code runs several times faster. A 10 s input is a hang, a
# 1 GiB one a leak. Inputs are cut at FUZZ_MAX_LEN bytes (real manifests
# are a few KiB; deep nesting takes a few hundred bytes), which keeps the
# fuzzer fast and the committed corpus small.
FUZZ_SECONDS ?= 150
FUZZ_TARGETS ?= manifest hosts_toml reference unpack_layer
FUZZ_FLAGS ?= --sanitizer none --debug-assertions
FUZZ_MAX_LEN ?= 8192

fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd fuzz && for target in $(FUZZ_TARGETS); do \
		mkdir -p corpus/$$target && \
		TMPDIR=/dev/shm nice -n 10 $(CARGO) +nightly fuzz run $(FUZZ_FLAGS) $$target corpus/$$target -- \
			-max_total_time=$(FUZZ_SECONDS) -max_len=$(FUZZ_MAX_LEN) \
			-timeout=10 -rss_limit_mb=1024 -print_final_stats=1 && \
		nice -n 10 $(CARGO) +nightly fuzz cmin $(FUZZ_FLAGS) $$target corpus/$$target -- \
			-set_cover_merge=1 -max_len=$(FUZZ_MAX_LEN) \
		|| exit 1; \
	done

schemas: build
	target/debug/berth schema --out schemas

clean:
	$(CARGO) clean
