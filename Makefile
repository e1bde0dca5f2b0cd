# The two commands a new machine needs (as root, Debian 12):
#   make demo   build berth, build a busybox image, run the pods in examples/
#   make test   install what the tests need, then fmt, clippy and every test
.PHONY: demo test deps check build release bench schemas clean

CARGO ?= cargo

deps:
	scripts/install-deps.sh

check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

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

# Benchmarks against podman and containerd (root; installs them; minutes).
bench: release
	scripts/install-deps.sh --bench
	bench/bench.py

schemas: build
	target/debug/berth schema --out schemas

clean:
	$(CARGO) clean
